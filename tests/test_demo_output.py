"""`make demo` ends cleanly: DVC's advice and the compare stage's table are filtered out of `dvc repro`'s output
(a transcript DVC 3 printed), the filter keeps DVC's exit status under pipefail, and the Makefile uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tools.demo_output import demo_lines

ROOT = Path(__file__).resolve().parents[1]
TRANSCRIPT = """Running stage 'train':
> ser train --data data/synth.h5 --out runs/derpp_ser
runs/derpp_ser
Updating lock file 'dvc.lock'

Running stage 'compare':
> ser compare evals/derpp_no-ser evals/derpp_ser --out report
  ser compare (mean ± std over seeds)
run        n  class-IL acc
derpp      1         20.00
chance     -          5.00
How to read this table (accuracies in %, averaged over the tasks after the last one):
report
Updating lock file 'dvc.lock'

To track the changes with git, run:

\tgit add .gitignore dvc.lock

To enable auto staging, run:

\tdvc config core.autostage true
Use `dvc push` to send your updates to remote storage.
"""


def test_advice_and_the_stage_table_are_left_out() -> None:
    assert list(demo_lines(TRANSCRIPT.splitlines(keepends=True))) == [
        "Running stage 'train':",
        "> ser train --data data/synth.h5 --out runs/derpp_ser",
        "runs/derpp_ser",
        "Updating lock file 'dvc.lock'",
        "",
        "Running stage 'compare':",
        "> ser compare evals/derpp_no-ser evals/derpp_ser --out report",
        "Updating lock file 'dvc.lock'",
    ]


def test_an_up_to_date_pipeline_passes_as_it_is() -> None:
    lines = ["Stage 'train' didn't change, skipping", "Data and pipelines are up to date."]
    assert list(demo_lines(lines)) == lines


def test_a_failing_dvc_keeps_its_exit_status() -> None:
    done = subprocess.run(["bash", "-o", "pipefail", "-c",
                           f"(printf 'ERROR: failed to reproduce train\\n'; exit 3) | {sys.executable} -m "
                           "tools.demo_output"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 3 and done.stdout == "ERROR: failed to reproduce train\n"


def test_make_demo_filters_dvc_and_prints_the_table_once() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "bash -o pipefail -c '$(VENV)/bin/dvc repro | $(PY) -m tools.demo_output'" in recipe
    assert recipe.count("report/table.txt") == 1
