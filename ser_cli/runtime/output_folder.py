"""Output folders that never destroy what a user owns, and the path checks every command makes first.

A command that writes a folder OUT stages its files in `OUT.partial/` (a folder this invocation creates, marked by
`.ser-staging`), then moves them into OUT one by one and writes `OUT/.ser-output.json` last: the command, an
identity hash of its configuration and inputs, and the files it wrote. That manifest is how a later invocation
tells the cases apart:

- OUT missing, or holding only empty folders: write it;
- a finished output of the same command and identity: nothing to do (like DVC);
- a finished output of another identity: refused unless `overwrite`; then only the files the manifest lists are
  replaced, anything else in OUT stays;
- a manifest whose files are partly gone (DVC removes a stage's outs before rerunning it): ours, rewritten;
- anything else (a folder holding files `ser` did not write, a file): refused, whatever the flags.

`check_disjoint` refuses an output that is, contains or lies inside one of the command's inputs, so that no
`--out` typo overwrites a model, a data file or a source image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ser_cli.runtime.atomic import write_json_atomic
from ser_cli.runtime.errors import UserError

MANIFEST = ".ser-output.json"
STAGING_MARK = ".ser-staging"
State = Literal["fresh", "complete", "replace"]


def check_disjoint(outputs: dict[str, Path | None], inputs: dict[str, Path | None]) -> None:
    """Refuse (one line) an output that is, contains or lies inside an input, or two outputs that collide.

    Args:
        outputs: Option name -> output path (None: not given).
        inputs: Option name -> input path (None: not given).
    """
    outs = {name: Path(p).resolve() for name, p in outputs.items() if p is not None}
    ins = {name: Path(p).resolve() for name, p in inputs.items() if p is not None}
    for out_name, out in outs.items():
        for in_name, src in ins.items():
            relation = _relation(out, src)
            if relation:
                raise UserError(f"{out_name} {outputs[out_name]}: {relation} the input {in_name} {inputs[in_name]}; "
                                "choose an output path outside the inputs")
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _relation(outs[a], outs[b]):
                raise UserError(f"{a} {outputs[a]} and {b} {outputs[b]}: the same path or one inside the other")


def _relation(out: Path, src: Path) -> str | None:
    if out == src:
        return "is"
    if src.is_relative_to(out):
        return "contains"
    if out.is_relative_to(src):
        return "lies inside"
    return None


def identity_hash(parts: dict[str, Any]) -> str:
    """A short stable hash of a command's configuration and input identities (JSON-serialisable values)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class OutputFolder:
    """The folder `out` that `command` writes for inputs and settings summarised by `identity`."""

    out: Path
    command: str
    identity: str
    overwrite: bool = False

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        self.staging = Path(f"{self.out}.partial")

    def state(self) -> State:
        """What a run of the command would do to `out`; raises UserError when it would destroy something."""
        if not self.out.exists():
            return "fresh"
        if not self.out.is_dir():
            raise UserError(f"--out {self.out}: exists and is not a folder")
        manifest = read_manifest(self.out)
        if manifest is None:
            if _only_empty_folders(self.out):
                return "fresh"
            raise UserError(f"--out {self.out}: exists and holds files that `{self.command}` did not write; "
                            "choose a new folder or empty it")
        if manifest.get("command") != self.command:
            raise UserError(f"--out {self.out}: holds the output of `{manifest.get('command')}`, not of "
                            f"`{self.command}`; choose another folder")
        complete = all((self.out / f).is_file() for f in manifest.get("files", []))
        if complete and manifest.get("identity") == self.identity:
            return "complete"
        if complete and not self.overwrite:
            raise UserError(f"--out {self.out}: holds a finished `{self.command}` output of other inputs or settings; "
                            "pass --overwrite to replace it, or choose another folder")
        return "replace"

    def start(self) -> Path:
        """A fresh staging folder `OUT.partial/` (a stale one of ours is cleared; anything else is refused)."""
        if self.staging.exists():
            if not (self.staging / STAGING_MARK).is_file():
                raise UserError(f"{self.staging}: exists and was not created by ser; move it away")
            shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True)
        (self.staging / STAGING_MARK).write_text(self.command + "\n")
        return self.staging

    def commit(self) -> Path:
        """Move the staged files into `out`, replacing only files of a previous manifest, then write the manifest."""
        self.out.mkdir(parents=True, exist_ok=True)
        old = read_manifest(self.out) or {}
        (self.out / MANIFEST).unlink(missing_ok=True)  # from here until the end, `out` is not a finished output
        staged = sorted(p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*")
                        if p.is_file() and p.name != STAGING_MARK)
        for name in old.get("files", []):
            if name not in staged:
                (self.out / name).unlink(missing_ok=True)  # ours from the previous run, no longer produced
        for name in staged:
            target = self.out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staging / name, target)
        shutil.rmtree(self.staging)
        write_json_atomic(self.out / MANIFEST, {"command": self.command, "identity": self.identity, "files": staged})
        return self.out

    def abandon(self) -> None:
        """Remove this invocation's staging folder after a failure (never anything else)."""
        if (self.staging / STAGING_MARK).is_file():
            shutil.rmtree(self.staging, ignore_errors=True)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The manifest of a folder written through `OutputFolder`, or None."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _only_empty_folders(folder: Path) -> bool:
    return all(p.is_dir() for p in folder.rglob("*"))
