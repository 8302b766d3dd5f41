"""`dvc metrics show` stays readable: the pipeline declares each stage's headline (a few short-named numbers) as its
metric, the full flat `metrics.json` beside it as a cache-less out, and the whole demo's table fits 100 columns."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from ser_cli.metrics.headline import CONTINUAL, SALIENCY, evaluation_headline, headline, headline_path, is_headline_file
from ser_cli.runs.run_identity import is_legacy_run_folder

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
WIDTH = 100
# the widest values a stage writes: percentages with five decimals shown, a CC
ACCURACY = 100 / 3


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _paths(entries: list) -> dict[str, dict]:
    return {next(iter(e)) if isinstance(e, dict) else e: (next(iter(e.values())) if isinstance(e, dict) else {})
            for e in entries}


def _expand(path: str, stage: dict) -> list[str]:
    if "matrix" not in stage:
        return [path]
    return [path.replace("${item.method}", m).replace("${item.variant}", v)
            for m in stage["matrix"]["method"] for v in stage["matrix"]["variant"]]


def test_every_declared_metric_is_the_headline_of_a_cacheless_full_metrics_out() -> None:
    declared = 0
    for name, stage in _stages().items():
        outs, metrics = _paths(stage.get("outs", [])), _paths(stage.get("metrics", []))
        for path, options in metrics.items():
            full = [out for out in outs if str(headline_path(Path(out))) == path]
            assert len(full) == 1, f"{name}: {path} is not the headline of one of its outs"
            assert outs[full[0]].get("cache") is False and options.get("cache") is False, name
            declared += 1
    assert declared == 4  # pretrain_saliency, precompute, train, evaluate


def test_the_headline_is_the_full_value_under_a_short_name() -> None:
    metrics = {"class_il_final_avg_acc": 17.5, "task_il_final_avg_acc": 65.8, "class_il_forgetting": 54.8,
               "clean_acc": 19.0, "pgd_acc_eps_2": 4.0, "pgd_acc_eps_0.5": 15.0, "pgd_acc_eps_8": 0.0,
               "fgsm_acc_eps_0.5": 16.0, "saliency_cc": 0.98}
    assert headline(metrics, CONTINUAL) == {"class_il": 17.5, "task_il": 65.8, "forgetting": 54.8}
    assert evaluation_headline(metrics) == {"class_il": 17.5, "task_il": 65.8, "forgetting": 54.8, "clean": 19.0,
                                            "pgd_eps0.5": 15.0}  # PGD at the smallest epsilon
    assert evaluation_headline({"class_il_final_avg_acc": 1.0}) == {"class_il": 1.0}  # no attack: left out
    assert headline_path(Path("runs/x/metrics.json")) == Path("runs/x/headline.json")
    assert headline_path(Path("metrics/precompute.json")) == Path("metrics/precompute.headline.json")


def test_a_headline_file_is_recognised_as_ser_output(tmp_path: Path) -> None:
    (tmp_path / "h.json").write_text(json.dumps({"cc": 0.6}))
    (tmp_path / "user.json").write_text(json.dumps({"notes": "mine"}))
    assert is_headline_file(tmp_path / "h.json") and not is_headline_file(tmp_path / "user.json")
    run = tmp_path / "run"  # what DVC leaves of a train run before rerunning it: its cache-less outs
    run.mkdir()
    for name in ("metrics.json", "headline.json"):
        (run / name).write_text("{}")
    (run / "train_log.csv").write_text("step,task,epoch,loss\n")
    assert is_legacy_run_folder(run)


def _headline_of(path: str) -> dict[str, float]:
    """The widest headline the stage writing `path` produces."""
    if path.startswith(("runs/", "evals/")):
        full = {key: ACCURACY for key in CONTINUAL.values()} | {"clean_acc": ACCURACY, "pgd_acc_eps_1": ACCURACY}
        return evaluation_headline(full) if path.startswith("evals/") else headline(full, CONTINUAL)
    return {name: 0.123456789 for name in SALIENCY}


def test_dvc_metrics_show_of_the_demo_fits_100_columns(tmp_path: Path) -> None:
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "COLUMNS": str(WIDTH)}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    for stage in _stages().values():
        for path in _paths(stage.get("metrics", [])):
            for concrete in _expand(path, stage):
                (tmp_path / concrete).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / concrete).write_text(json.dumps(_headline_of(concrete)))
    table = run(str(DVC), "metrics", "show").stdout.splitlines()
    assert len(table) == 1 + 2 + 4 + 4  # header, saliency and precompute, 4 runs, 4 evaluations
    assert max(len(line.rstrip()) for line in table) <= WIDTH, "\n".join(table)
