"""The end-to-end part of the train-step benchmark: the real `ser train` on a small data file, loading included.

`ser train` has no step limit, so the data file fixes the number of steps: two tasks of `classes_per_task` classes,
task 0 holding `warmup` batches (they also put samples in the buffer, so task 1 replays: ER-ACE replays from the
second task on) and task 1 holding `steps + 1` batches. The stage logs the cumulative training clock after every
step (`train_log.csv`, `seconds`); the steady rate is taken over task 1's rows from its first step on, so it holds
`steps` intervals of loading + step + logging and nothing of the start-up, the evaluation after task 0 or the
first loader start of task 1. The images are smooth noise (`benchmarks.common.smooth_image`) with blob maps, stored
as `ser data` stores them by default (raw uint8); the saliency branch of SER starts from a freshly initialised
`ser pretrain-saliency` checkpoint (speed does not depend on the weights); diagnostics are off, as in the step
measurement. The buffer is not full here; a step's work does not depend on how full it is once a draw is possible.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import blob_map, smooth_image
from benchmarks.train_step_worker import StepConfig
from ser_cli.config import TrainConfig
from ser_cli.data.writer import StoreWriter
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint

N_TASKS = 2


def write_data(path: Path, cfg: StepConfig) -> Path:
    """A data file with maps: `warmup` batches of task 0, `steps + 1` of task 1, one test image per class."""
    rng = np.random.default_rng(0)
    cpt, b = cfg.classes_per_task, cfg.batch_size
    train_labels = np.concatenate([np.arange(cfg.warmup * b) % cpt, cpt + np.arange((cfg.steps + 1) * b) % cpt])
    splits = {"train": train_labels, "test": np.arange(N_TASKS * cpt)}
    writer = StoreWriter(
        path,
        height=cfg.height,
        width=cfg.width,
        class_names=[f"c{i}" for i in range(N_TASKS * cpt)],
        provenance={"benchmark": "train_step end to end"},
    )
    for split, labels in splits.items():
        n = len(labels)
        images = np.stack([smooth_image(rng, cfg.height, cfg.width) for _ in range(n)])  # (n, H, W, 3)
        maps = np.stack([blob_map(rng, cfg.height, cfg.width) for _ in range(n)])  # (n, H, W)
        writer.create_split(split, n, with_maps=True)
        writer.write_rows(split, np.arange(n), images, labels, maps)
    return writer.finalize()


def command(cfg: StepConfig, data: Path, out: Path, model: Path | None) -> list[str]:
    """The `ser train` command line for this configuration."""
    sets = {
        "backbone": cfg.backbone,
        "n_tasks": N_TASKS,
        "classes_per_task": cfg.classes_per_task,
        "batch_size": cfg.batch_size,
        "minibatch_size": cfg.minibatch_size,
        "buffer_size": cfg.buffer_size,
        "diagnostics_every": 0,
        "classifier_init": "random",
        **({"memory_format": cfg.memory_format} if cfg.memory_format != "auto" else {}),
        **({"compile": "true"} if cfg.compile else {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "ser_cli",
        "-q",
        *([] if cfg.memory_tuning else ["--no-memory-tuning"]),
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--method",
        cfg.method,
        "--ser" if cfg.ser else "--no-ser",
        "--device",
        cfg.device,
        "--seed",
        "0",
    ]
    for key, value in sets.items():
        cmd += ["--set", f"train.{key}={value}"]
    return cmd + (["--saliency-model", str(model)] if model is not None else [])


def steady_seconds_per_step(log: Path) -> tuple[float, int]:
    """(seconds per step, intervals) over task 1's rows of a `train_log.csv`."""
    with open(log, newline="") as f:
        seconds = [float(row["seconds"]) for row in csv.DictReader(f) if row["task"] == "1"]
    return (seconds[-1] - seconds[0]) / (len(seconds) - 1), len(seconds) - 1


def end_to_end(cfg: StepConfig, step_seconds: float | None) -> dict[str, Any]:
    """Run `ser train` for this configuration; its steady s/step beside the step-only median `step_seconds`."""
    with tempfile.TemporaryDirectory(prefix="ser-bench-train-step-") as tmp:
        root = Path(tmp)
        data = write_data(root / "data.h5", cfg)
        model = None
        if cfg.ser:
            model = root / "saliency.pt"
            torch.manual_seed(0)
            save_saliency_checkpoint(model, SaliencyNet(cfg.backbone).eval(), "0" * 64, {"benchmark": True})
        env = {**os.environ, "SER_QUIET": "1"}
        if cfg.threads:
            env["OMP_NUM_THREADS"] = str(cfg.threads)
        start = time.perf_counter()
        done = subprocess.run(
            command(cfg, data, root / "run", model), cwd=root, env=env, capture_output=True, text=True, check=False
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
        per_step, intervals = steady_seconds_per_step(root / "run" / "train_log.csv")
        metrics = json.loads((root / "run" / "metrics.json").read_text())
    return {
        "seconds_per_step": per_step,
        "steps_per_s": 1 / per_step,
        "intervals": intervals,
        "step_only_steps_per_s": 1 / step_seconds if step_seconds else None,
        "ratio_to_step_only": per_step / step_seconds if step_seconds else None,
        "overall_seconds_per_step": metrics["train_seconds"] / metrics["steps"],
        "steps": metrics["steps"],
        "peak_memory_bytes": metrics["peak_memory_bytes"],
        "wall_seconds": wall,
        "workers": TrainConfig.model_fields["workers"].default,  # `ser train`'s default, not overridden
    }
