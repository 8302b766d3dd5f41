"""The whole DVC pipeline with tiny parameters, in a temporary copy of the repository: every declared output and
metric exists after `dvc repro`, and a second `dvc repro` has nothing to do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "data": {"synth": {"height": 24, "width": 36, "n_classes": 4, "train_per_class": 4, "test_per_class": 2}},
    "saliency": {"epochs": 1, "batch_size": 4, "precise_bn_batches": 2},
    "train": {"n_tasks": 2, "classes_per_task": 2, "buffer_size": 8, "batch_size": 4, "minibatch_size": 4},
    "evaluate": {"epsilons": ["2/255"], "pgd_steps": 2, "attack_images": 8, "batch_size": 8},
}


def _merge(base: dict, extra: dict) -> dict:
    return {k: _merge(base[k], v) if isinstance(v, dict) else v for k, v in extra.items()} | {
        k: v for k, v in base.items() if k not in extra}


def _declared_outputs(dvc_yaml: dict) -> list[str]:
    """Every out, metric and plot path of every stage, with the train/evaluate matrices expanded."""
    paths = []
    for stage in dvc_yaml["stages"].values():
        items = [{}]
        if "matrix" in stage:
            items = [{"method": m, "variant": v} for m in stage["matrix"]["method"] for v in stage["matrix"]["variant"]]
        for item in items:
            for kind in ("outs", "metrics", "plots"):
                for entry in stage.get(kind, []):
                    path = entry if isinstance(entry, str) else next(iter(entry))
                    for key, value in item.items():
                        path = path.replace(f"${{item.{key}}}", value)
                    paths.append(path)
    return paths


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
           "OMP_NUM_THREADS": "1", "SER_QUIET": "1"}
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_dvc_repro_runs_everything_then_is_up_to_date(tmp_path: Path) -> None:
    for name in ("ser_cli", "stages", ".dvc"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    params = _merge(yaml.safe_load((REPO / "params.yaml").read_text()), TINY)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)

    first = _dvc(tmp_path, "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    missing = [p for p in _declared_outputs(yaml.safe_load((REPO / "dvc.yaml").read_text()))
               if not (tmp_path / p).exists()]
    assert not missing, missing
    metrics = json.loads((tmp_path / "evals" / "derpp_ser" / "metrics.json").read_text())
    assert "class_il_final_avg_acc" in metrics and "pgd_acc_eps_2" in metrics
    assert (tmp_path / "report" / "report.md").is_file()

    second = _dvc(tmp_path, "repro")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Data and pipelines are up to date" in second.stdout + second.stderr
