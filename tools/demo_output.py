"""`make demo`'s filter of `dvc repro`'s standard output: the pipeline's own lines pass, DVC's advice does not.

Dropped: DVC's closing "To track the changes with git, run: git add ..." / "To enable auto staging" blocks and its
"Use `dvc push` ..." line (the demo's outputs are DVC's to cache, not the user's to commit or push), and the table the
`compare` stage prints, because `make demo` prints `report/table.txt` (the table and how to read it) once, last.
Reads line by line and flushes each, so the pipeline's progress shows as it happens:

    dvc repro | python -m tools.demo_output
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator

ADVICE_STARTS = ("To track the changes with git, run:", "To enable auto staging, run:")
ADVICE_LINES = ("Use `dvc push` to send your updates to remote storage.",)
COMPARE_COMMAND = "> ser compare"
# what DVC prints after a stage's own output: the compare stage's table ends at the first of these
STAGE_BOUNDARIES = ("Running stage ", "Updating lock file", "Stage '", "ERROR", "WARNING")


def demo_lines(lines: Iterable[str]) -> Iterator[str]:
    """The lines of `dvc repro`'s output that the demo shows (each without its newline); blank lines only between
    lines that are shown."""
    blanks = 0
    for line in _kept(raw.rstrip("\n") for raw in lines):
        if line == "":
            blanks += 1
            continue
        yield from [""] * blanks
        blanks = 0
        yield line


def _kept(lines: Iterable[str]) -> Iterator[str]:
    in_advice = in_table = False
    for line in lines:
        if line.startswith(ADVICE_STARTS):
            in_advice = True  # the block: its title, a blank line, one indented command
            continue
        if in_advice:
            in_advice = line == "" or line.startswith(("\t", " "))
            if in_advice:
                continue
        if in_table:
            in_table = not line.startswith(STAGE_BOUNDARIES)
            if in_table:
                continue
        in_table = line.startswith(COMPARE_COMMAND)
        if line not in ADVICE_LINES:
            yield line


def main() -> None:
    """Filter stdin to stdout."""
    for line in demo_lines(sys.stdin):
        print(line, flush=True)


if __name__ == "__main__":
    main()
