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

The manifest is data, not a list of commands: an entry that is absolute, climbs out with `..` or resolves outside
OUT through a symlink is refused before anything is deleted or moved. Commands that write in place rather than
through a staging folder (`ser train`, `ser pretrain-saliency`) claim their folder with the same manifest
(`check_owned_folder`, `mark_owned_folder`), and single-file outputs are replaced only when they hold ser's own
output of the same kind (`check_output_file`).

`check_disjoint` refuses an output that is, contains or lies inside one of the command's inputs, so that no
`--out` typo overwrites a model, a data file or a source image.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
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
    outs = {name: resolve_path(name, Path(p)) for name, p in outputs.items() if p is not None}
    ins = {name: resolve_path(name, Path(p)) for name, p in inputs.items() if p is not None}
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


def resolve_path(name: str, path: Path) -> Path:
    """`path.resolve()`; a symbolic-link loop on the way (resolve raises RuntimeError, stat ELOOP) is one line
    naming the option `name` and the path as given."""
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):
        raise symlink_loop(name, path) from None


def symlink_loop(name: str, path: Path) -> UserError:
    """The one line for a path that runs into a loop of symbolic links (`ln -s loop loop; --out loop/run`)."""
    return UserError(f"{name} {path}: symlink loop (too many levels of symbolic links); point it at a real file "
                     "or folder")


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
        complete = all((self.out / f).is_file() for f in manifest_files(self.out, manifest))
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
        old = read_manifest(self.out)
        staged = sorted(p.relative_to(self.staging).as_posix() for p in self.staging.rglob("*")
                        if p.is_file() and p.name != STAGING_MARK)
        old_files = manifest_files(self.out, old) if old else []
        _inside(self.out, staged)  # a symlinked subfolder of OUT must not carry a staged file elsewhere
        (self.out / MANIFEST).unlink(missing_ok=True)  # from here until the end, `out` is not a finished output
        for name in old_files:
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


def manifest_files(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The manifest's file names, each checked to name a path inside `folder` (UserError otherwise, before any
    file is touched): a crafted manifest listing `/victim` or `../victim` must not make ser delete it."""
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, str) and f for f in files):
        raise UserError(f"{Path(folder) / MANIFEST}: damaged manifest ('files' is not a list of names); "
                        "move the folder away")
    _inside(folder, files)
    return files


def _inside(folder: Path, names: list[str]) -> None:
    root = Path(folder).resolve()
    for name in names:
        rel = Path(name)
        target = (root / rel).resolve()  # follows symlinks, so a link pointing out is caught too
        if rel.is_absolute() or ".." in rel.parts or target == root or not target.is_relative_to(root):
            raise UserError(f"{Path(folder) / MANIFEST}: lists {name!r}, which lies outside {folder}; refusing to "
                            "touch it (was the manifest edited?)")


def check_owned_folder(out: Path, command: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """Refuse (one line) a folder `command` writes in place unless it is missing, holds only empty folders, or is
    ours: its manifest names `command`, or (folders made before manifests) `legacy(out)` recognises its files.
    `--overwrite` never widens this: it replaces ser's output, never a user's files."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    manifest = read_manifest(out)
    if manifest is not None:
        if manifest.get("command") != command:
            raise UserError(f"--out {out}: holds the output of `{manifest.get('command')}`, not of `{command}`; "
                            "choose another folder")
        return
    if _only_empty_folders(out) or (legacy is not None and legacy(out)):
        return
    raise UserError(f"--out {out}: exists and holds files that `{command}` did not write; choose a new folder or "
                    "empty it")


def mark_owned_folder(out: Path, command: str) -> None:
    """Create `out` if needed and claim it for `command` (a manifest without files) before writing into it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if read_manifest(out) is None:
        write_json_atomic(out / MANIFEST, {"command": command, "files": []})


def check_output_file(path: Path | None, option: str, owned: Callable[[Path], bool], what: str) -> bool:
    """Whether the output file `path` exists (and may be replaced: `owned(path)` says it holds ser's `what`).

    Raises:
        UserError: it is a folder, device, FIFO or socket, or a file ser did not write (whatever the flags).
    """
    if path is None or not Path(path).exists():
        return False
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a directory; give a file name, e.g. {path / 'out.h5'}")
    if not path.is_file():
        raise UserError(f"{option} {path}: exists and is not a regular file (a device, FIFO or socket); "
                        "choose another path")
    if not owned(path):
        raise UserError(f"{option} {path}: exists and is not {what} written by ser; choose another name or move "
                        "it away")
    return True


def has_log_header(path: Path, prefix: str) -> bool:
    """Whether the CSV log at `path` starts with the columns a ser command writes (`prefix`)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(prefix)
    except (OSError, UnicodeDecodeError):
        return False


def _only_empty_folders(folder: Path) -> bool:
    return all(p.is_dir() for p in folder.rglob("*"))
