"""experiments/per_task.py: accuracy right after learning each task and at the end, per configuration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.per_task import main, per_task

ROOT = Path(__file__).resolve().parents[1]


def write_matrix(folder: Path, rows: dict[tuple[int, int], float]) -> None:
    (folder / "plots").mkdir(parents=True)
    lines = ["after_task,task,class_il,task_il"] + [f"{a},{t},{v},{v + 50}" for (a, t), v in rows.items()]
    (folder / "plots" / "accuracy_matrix.csv").write_text("\n".join(lines) + "\n")


def test_just_learned_is_the_diagonal_and_final_the_last_row_averaged_over_seeds(tmp_path: Path) -> None:
    # two tasks, two seeds: the diagonal (1,1), (2,2) and the last row (2,1), (2,2)
    write_matrix(tmp_path / "er_s0", {(1, 1): 80.0, (2, 1): 10.0, (2, 2): 70.0})
    write_matrix(tmp_path / "er_s1", {(1, 1): 60.0, (2, 1): 30.0, (2, 2): 90.0})
    (tmp_path / "report").mkdir()  # not NAME_sSEED: skipped
    table = per_task(tmp_path)
    assert table == {"er": {"n": 2, "just_learned": [70.0, 80.0], "final": [20.0, 80.0]}}
    assert per_task(tmp_path, "task_il")["er"]["final"] == [70.0, 130.0]


def test_the_table_and_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_matrix(tmp_path / "er_s0", {(1, 1): 80.0, (2, 1): 10.0, (2, 2): 70.0})
    main([str(tmp_path)])
    assert "| er | 1 | 75.0 | 10.0 | 70.0 | 40.0 |" in capsys.readouterr().out
    main([str(tmp_path), "--json"])
    assert json.loads(capsys.readouterr().out)["er"]["final"] == [10.0, 70.0]
    done = subprocess.run([sys.executable, "-m", "experiments.per_task", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().endswith("nope: no such folder of evaluations")


def test_a_malformed_or_incomplete_matrix_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bad" / "er_s0" / "plots").mkdir(parents=True)
    (tmp_path / "bad" / "er_s0" / "plots" / "accuracy_matrix.csv").write_text("a,b\n1,2\n")
    write_matrix(tmp_path / "short" / "er_s0", {(1, 1): 80.0, (2, 1): 10.0, (2, 2): 70.0})
    write_matrix(tmp_path / "short" / "er_s1", {(1, 1): 80.0, (2, 2): 70.0})  # task 1 missing at the end
    for folder, message in (("bad", "accuracy_matrix.csv: not an accuracy matrix"),
                            ("short", "of er do not all cover tasks 1-2")):
        done = subprocess.run([sys.executable, "-m", "experiments.per_task", str(tmp_path / folder)], cwd=ROOT,
                              capture_output=True, text=True)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
