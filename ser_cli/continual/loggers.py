"""Training curves for the loggers researchers already use: TensorBoard and DVCLive (`train.loggers`).

`TrainLoggers(names, folder)` sends each step's losses (`train/NAME`, x = global step) and each task's end
(`eval/class_il`, `eval/task_il`: average accuracy over the tasks seen, x = step; `eval/task`: the 1-based task
number) to every chosen logger: TensorBoard event files in `FOLDER/tensorboard/` (`tensorboard --logdir FOLDER`)
and a DVCLive folder `FOLDER/dvclive/` (`plots/metrics/**.tsv`, `metrics.json` and its own `dvc.yaml`, so that
`dvc plots show FOLDER/dvclive/plots/metrics` and `dvc metrics show` read it; the repository's `dvc.yaml` is never
rewritten). With no names (the default) nothing is imported and every call returns at once, so the demo pays
nothing. The packages are optional: `pip install 'ser[loggers]'`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ser_cli.runtime.errors import UserError

LOGGERS = ("tensorboard", "dvclive")
PACKAGES = {"tensorboard": "tensorboard", "dvclive": "dvclive"}  # logger -> the package it needs


class TrainLoggers:
    """The chosen loggers of one run, written to as training goes (use as a context manager, or call `close`)."""

    def __init__(self, names: list[str] | tuple[str, ...], folder: Path | str, resume: bool = False) -> None:
        """Open each logger under `folder`.

        Args:
            names: Any of `LOGGERS`; empty for none.
            folder: The run folder the loggers write into.
            resume: Continue the curves of an interrupted run (DVCLive appends instead of starting over).

        Raises:
            UserError: an unknown name, or a logger whose package is not installed.
        """
        check_loggers(names)
        folder = Path(folder)
        self._tensorboard: Any = None
        self._dvclive: Any = None
        if "tensorboard" in names:
            from torch.utils.tensorboard import SummaryWriter  # imported only when chosen: it is slow to import

            self._tensorboard = SummaryWriter(log_dir=str(folder / "tensorboard"))
        if "dvclive" in names:
            from dvclive import Live

            live_dir = folder / "dvclive"
            # its own dvc.yaml: by default DVCLive would add plots to the repository's pipeline file
            self._dvclive = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False,
                                 dvcyaml=str(live_dir / "dvc.yaml"))

    @property
    def active(self) -> bool:
        """Whether any logger is on."""
        return self._tensorboard is not None or self._dvclive is not None

    def step(self, step: int, losses: dict[str, float]) -> None:
        """One training step's losses (detached floats), at global step `step` (1-based)."""
        self._scalars({f"train/{k}": v for k, v in losses.items()}, step)

    def task_end(self, task: int, step: int, class_il: float, task_il: float) -> None:
        """A task's end: the average class-IL and task-IL accuracy (%) over the tasks seen, task numbered from 1."""
        self._scalars({"eval/class_il": class_il, "eval/task_il": task_il, "eval/task": float(task)}, step)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        if self._tensorboard is not None:
            for name, value in values.items():
                self._tensorboard.add_scalar(name, value, step)
        if self._dvclive is not None:
            self._dvclive.step = step
            for name, value in values.items():
                self._dvclive.log_metric(name, value)
            self._dvclive.make_summary()

    def close(self) -> None:
        """Flush and close every logger (DVCLive also writes its `dvc.yaml`)."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._dvclive is not None:
            self._dvclive.end()  # also writes its dvc.yaml
            self._dvclive = None

    def __enter__(self) -> TrainLoggers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_loggers(names: list[str] | tuple[str, ...]) -> None:
    """UserError for an unknown logger name or one whose package is missing (before any training starts)."""
    for name in names:
        if name not in LOGGERS:
            raise UserError(f"train.loggers: unknown logger {name!r}; choose from {', '.join(LOGGERS)} "
                            "(or [] for none)")
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"train.loggers: {name} needs the {PACKAGES[name]} package: pip install 'ser[loggers]' "
                            f"(or drop {name} from train.loggers)")
