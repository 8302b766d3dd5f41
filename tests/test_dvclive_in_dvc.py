"""With `train.loggers: [dvclive]`, DVC sees a run's DVCLive curves without any entry in the root `dvc.yaml`: DVC
collects every `dvc.yaml` of the repository that git does not ignore, DVCLive's own `RUN/dvclive/dvc.yaml` included,
so `dvc exp show` lists its summary per experiment and `dvc plots show` its curves. Real DVC, in a temporary git
repository whose one stage logs through `TrainLoggers` as `ser train` does (no training: seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
# the stage: what `ser train --set 'train.loggers=[dvclive]'` writes into its run folder, scaled by params.yaml's lr
LOG = f"""
import json, sys
from pathlib import Path
sys.path.insert(0, {str(ROOT)!r})
from ser_cli.continual.loggers import TrainLoggers
lr = float(sys.argv[1])
out = Path("runs/x")
out.mkdir(parents=True, exist_ok=True)
with TrainLoggers(["dvclive"], out) as log:
    log.step(1, {{"loss": 2 * lr}})
    log.step(2, {{"loss": lr}})
    log.task_end(1, 2, class_il=50 * lr, task_il=80.0)
(out / "metrics.json").write_text(json.dumps({{"steps": 2}}))
"""
PIPELINE = {"stages": {"train": {
    "cmd": f"{sys.executable} log.py ${{lr}}", "deps": ["log.py"], "params": ["lr"],
    "outs": [{"runs/x/metrics.json": {"cache": False}}]}}}


def test_dvc_exp_show_and_plots_show_read_the_dvclive_folder_of_a_run(tmp_path: Path) -> None:
    pytest.importorskip("dvclive")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVCLIVE_LOGLEVEL": "ERROR", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(DVC), "init", "-q")
    (tmp_path / "log.py").write_text(LOG)
    (tmp_path / "params.yaml").write_text("lr: 1.0\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(PIPELINE))
    run("git", "add", "-A")
    run("git", "commit", "-q", "-m", "baseline")

    run(str(DVC), "exp", "run", "-S", "lr=2.0", "-n", "double")
    exps = {exp["name"]: exp["data"]["metrics"]
            for row in json.loads(run(str(DVC), "exp", "show", "--json").stdout)
            for exp_group in row.get("experiments") or [] for exp in exp_group["revs"]}
    summary = exps["double"]["runs/x/dvclive/metrics.json"]["data"]
    assert summary["eval"] == {"class_il": 100.0, "task_il": 80.0, "task": 1.0} and summary["step"] == 2

    plots = json.loads(run(str(DVC), "plots", "show", "--json").stdout)["data"]
    assert {"runs/x/dvclive/plots/metrics/train/loss.tsv", "runs/x/dvclive/plots/metrics/eval/class_il.tsv"} <= set(
        plots)
