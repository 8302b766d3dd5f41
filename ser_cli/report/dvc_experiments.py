"""Evaluation folders out of DVC experiments, for `ser compare --exps`: no checkout, no `dvc` import, plain git.

A DVC experiment (`dvc exp run`, queued or not) is a git commit under `refs/exps/<2>/<38>/<name>` that holds the
pipeline's git-tracked outputs, among them the `cache: false` files of each `ser evaluate` stage: `metrics.json`,
`run.json` and `plots/*.csv` (what `ser compare` reads). `extract_evaluations` copies those files of every
experiment (or of the named ones) into `DEST/<experiment>/<eval folder>/`, so a sweep of many experiments is
compared like any set of evaluation folders: seeds grouped, mean +- std, paired SER differences.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path, PurePosixPath

from ser_cli.runtime.errors import UserError

EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/(?P<name>[^/]+)$")
EVAL_FILES = ("metrics.json", "run.json", "plots/avg_accuracy.csv", "plots/robustness.csv")


def _git(repo: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("--exps: git is not installed") from None
    if done.returncode != 0:
        raise UserError(f"--exps: git {' '.join(args[:2])} failed in {repo}: {done.stderr.strip().splitlines()[-1:]}")
    return done.stdout


def experiment_refs(repo: Path) -> dict[str, str]:
    """{experiment name: ref} of the DVC experiments in the git repository `repo`."""
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
    return {m["name"]: ref for ref in refs if (m := EXP_REF.match(ref))}


def _eval_folders(repo: Path, ref: str) -> list[PurePosixPath]:
    """Folders of `ref`'s tree that hold both a metrics.json and a run.json (evaluations)."""
    files = {PurePosixPath(p) for p in _git(repo, "ls-tree", "-r", "--name-only", ref).splitlines()}
    return sorted(p.parent for p in files if p.name == "metrics.json" and p.parent / "run.json" in files)


def extract_evaluations(repo: Path, dest: Path, names: list[str] | None = None) -> list[Path]:
    """Copy the evaluation files of DVC experiments into `dest`; returns the evaluation folders written.

    Args:
        repo: A folder inside the git repository that holds the experiments.
        dest: Where `<experiment>/<eval folder path>/` are created.
        names: Experiment names to take (default: all).

    Raises:
        UserError: no experiments, an unknown name, or experiments without an evaluation folder.
    """
    refs = experiment_refs(repo)
    if not refs:
        raise UserError(f"--exps: no DVC experiments in {repo} (run some with `ser sweep` + `dvc queue start`)")
    unknown = sorted(set(names or []) - set(refs))
    if unknown:
        raise UserError(f"--exps: no experiment named {', '.join(unknown)} (there are: {', '.join(sorted(refs))})")
    folders = []
    for name in sorted(names or refs):
        for folder in _eval_folders(repo, refs[name]):
            target = dest / name / Path(*folder.parts)
            for file in EVAL_FILES:
                content = subprocess.run(["git", "-C", str(repo), "show", f"{refs[name]}:{folder / file}"],
                                         capture_output=True, check=False)
                if content.returncode == 0:
                    (target / file).parent.mkdir(parents=True, exist_ok=True)
                    (target / file).write_bytes(content.stdout)
            folders.append(target)
    if not folders:
        raise UserError("--exps: the experiments hold no evaluation (metrics.json + run.json tracked by git: "
                        "declare them `cache: false` in dvc.yaml)")
    return folders
