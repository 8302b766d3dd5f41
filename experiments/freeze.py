"""Freeze the committed code for an experiment grid: `python -m experiments.freeze [--dest DIR]`.

A grid must run from one code version from its first run to its last, while development goes on in the checkout.
This exports `HEAD` (`git archive`: tracked files only, nothing uncommitted) into `DEST/<short commit>/` and writes
the commit into its `SER_COMMIT`, which `ser_cli.runtime.provenance.code_version` records in every run made from
it. Run grids from inside the export, with it first on the import path:

    python -m experiments.freeze                       # prints the export's folder, e.g. ../ser-grids/1a2b3c4
    cd ../ser-grids/1a2b3c4 &&
      PYTHONPATH=$PWD python -m ser_cli sweep experiments/grids/e1.yaml --executor local --jobs 2

Uncommitted changes in the checkout never reach the export (it is `HEAD` alone); the command says when there are
some, since the grid will not run them.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
from pathlib import Path

from ser_cli.runtime.provenance import CODE_PATHS, EXPORT_MARK, ROOT


def _git(*args: str) -> bytes:
    return subprocess.run(["git", "-C", str(ROOT), *args], check=True, capture_output=True).stdout


def freeze(dest: Path) -> Path:
    """Export HEAD into `dest/<short commit>` (once; an existing export of the same commit is reused)."""
    if _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS).strip():
        print("note: the checkout has uncommitted code changes; the export holds HEAD without them", file=sys.stderr)
    commit = _git("rev-parse", "HEAD").decode().strip()
    folder = dest / commit[:7]
    if not (folder / EXPORT_MARK).is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tarfile.open(fileobj=io.BytesIO(_git("archive", "--format=tar", commit))).extractall(folder, filter="data")
        (folder / EXPORT_MARK).write_text(commit + "\n")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT.parent / "ser-grids", help="where exports go")
    args = parser.parse_args(argv)
    print(freeze(args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
