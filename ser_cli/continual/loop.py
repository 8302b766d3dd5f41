"""The continual-training loop: tasks in sequence, named hooks, evaluation after each task, exact resume.

Skeleton (Avalanche-style hooks; SER, Bellitto et al., NeurIPS 2024, method.md sections 4-5):

    for each task t:        method.before_task(t)
        for each epoch:     for each batch: method.observe(batch)    # saliency step, classifier step, buffer add
                            (checkpoint every `checkpoint_every` steps)
        method.after_task(t)
        evaluate on the test sets of tasks 0..t  -> row t of the class-IL / task-IL (/ saliency) matrices
        checkpoint

The `joint` method replaces the task sequence by one phase over all tasks' data (see `methods/joint.py`).
`step_hooks` are called before every step with the trainer and the batch (`StepHook`): a place to look at the
learner step by step (gradient probes, custom logging) without copying the loop; each step is `train_step`, public.
The loop prints nothing: it reports through the optional `progress(event)` callback and hands its whole state to
the optional `checkpoint(state)` callback. `state_dict()` holds both networks, both optimisers, the buffer with its
counters and generator, the python / numpy / torch RNG states, the position in the stream and the matrices so far;
a run restored with `load_state_dict()` continues bit-exactly (on CPU) as if never interrupted. The order of each
task's batches depends only on (seed, task, epoch) (`TaskStream`), and data loading is kept from touching the
training RNGs, so a resumed run asks the stream for the same loader from the first batch not yet consumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

import torch

from ser_cli.continual.evaluation import SALIENCY_METRICS, evaluate_task
from ser_cli.continual.learner import Learner, build_learner
from ser_cli.continual.methods import Method, StreamBatch, build_method, method_class
from ser_cli.continual.run_records import ContinualResult, Phase, Position, ProgressEvent, task_phases
from ser_cli.continual.seeds import seed_run
from ser_cli.continual.settings import TrainSettings
from ser_cli.continual.stream import Batch, TaskStream
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.checkpoint import first_nonfinite
from ser_cli.runtime.errors import RunFailure, UserError
from ser_cli.runtime.interrupt import Interrupted
from ser_cli.runtime.rng import capture_rng_state, restore_rng_state, rng_preserved, upgrade_legacy_rng_state

# Called before every training step with the trainer and the batch it is about to train on; a hook must not change
# the training RNGs or the networks if the run is to stay what `ser train` makes.
StepHook = Callable[["ContinualTrainer", Batch], None]

STATE_FORMAT = "ser-continual-state"
STATE_VERSION = 2  # 2: RNG states in the `runtime.rng` format (1 is upgraded on load)
# Settings that may differ between a checkpoint and the run resuming it (`memory_format` and `compile` as the device
# may: a run checkpointed on one machine can finish on another, and kernels are chosen for the machine).
RESUMABLE_CHANGES = ("checkpoint_every", "diagnostics_every", "activation_checkpointing", "memory_format", "compile")


class ContinualTrainer:
    """Trains one learner with one method over a task stream."""

    def __init__(
        self,
        settings: TrainSettings,
        stream: TaskStream,
        device: torch.device | str = "cpu",
        saliency_net: SaliencyNet | None = None,
        progress: Callable[[ProgressEvent], None] | None = None,
        checkpoint: Callable[[dict[str, Any]], None] | None = None,
        classifier_weights: dict[str, torch.Tensor] | None = None,
        step_hooks: Iterable[StepHook] = (),
    ) -> None:
        """Seed everything from `settings.seed`, then build the networks, the method and its buffer.

        Args:
            settings: The run's hyperparameters.
            stream: The tasks' data (`TaskStream`).
            device: Training device.
            saliency_net: Pretrained saliency network for SER (None: an untrained one).
            progress: Called with a `ProgressEvent` after each step and each task.
            checkpoint: Called with `state_dict()` every `checkpoint_every` steps and after each task. The dict
                shares storage with the live networks: serialise it (e.g. `torch.save`) before returning.
            classifier_weights: Backbone tensors (no head) the classifier starts from (`settings.classifier_init`
                other than `random`); the head keeps its seeded random initialisation.
            step_hooks: Called before every step (`StepHook`); more may be appended to `self.step_hooks`.

        Raises:
            UserError: the stream does not match `settings`, or an invalid name / combination in `settings`.
        """
        _check_stream(settings, stream)
        self.settings, self.stream = settings, stream
        self.progress, self.checkpoint = progress, checkpoint
        self.step_hooks: list[StepHook] = list(step_hooks)
        self.should_stop: Callable[[], bool] = lambda: False  # polled after each step (Ctrl-C: `stop_requests`)
        seed_run(settings.seed)  # the networks' weights: unrelated to any network built after manual_seed(seed)
        self.learner: Learner = build_learner(settings, device, saliency_net, classifier_weights)
        self.method: Method = build_method(settings.method, self.learner, settings, tuple(stream.image_shape))
        self.phases = task_phases(method_class(settings.method).schedule, settings.n_tasks)
        self.position = Position()
        # The global RNGs are shared by every trainer of the process: each keeps its own state between runs.
        self._rng = capture_rng_state()
        self._running = False
        self._checkpointed_step: int | None = None
        nan_matrix = [[math.nan] * settings.n_tasks for _ in range(settings.n_tasks)]
        self.matrices: dict[str, list[list[float]]] = {"class_il": nan_matrix, "task_il": _copy(nan_matrix)}
        if self.learner.ser:
            self.matrices.update({f"saliency_{m}": _copy(nan_matrix) for m in SALIENCY_METRICS})

    # ------------------------------------------------------------------------------------------------ the loop

    def run(self) -> ContinualResult:
        """Train (from the current position, so also after `load_state_dict`) to the end of the stream.

        Raises:
            RunFailure: a loss became NaN or infinite; the message names the step, the loss and the last checkpoint.
                Checkpoints are only taken after steps whose losses were finite, so the last one written is the
                last good state; the poisoned state is never handed to `checkpoint`.
        """
        restore_rng_state(self._rng)
        self._running = True
        try:
            while self.position.phase < len(self.phases):
                self._run_phase(self.phases[self.position.phase])
        finally:
            self._running = False
            self._rng = capture_rng_state()
        return self.result()

    def _run_phase(self, phase: Phase) -> None:
        pos = self.position
        if pos.epoch == 0 and pos.batch == 0:
            self.method.before_task(phase.task)
        self.learner.train(True)
        while pos.epoch < self.settings.epochs:
            for batch in self._train_batches(phase, pos.epoch, skip=pos.batch):
                losses = self._step(batch, phase)
                self._report(ProgressEvent("step", phase.task, pos.epoch, pos.batch, pos.step, losses))
                if self.settings.checkpoint_every and pos.step % self.settings.checkpoint_every == 0:
                    self._checkpoint()
                if self.should_stop():
                    self._checkpoint()
                    # tasks are numbered from 1 wherever they are printed (the figures and ser train do so)
                    raise Interrupted(f"interrupted after step {pos.step} (task {phase.task + 1})")
            pos.epoch, pos.batch = pos.epoch + 1, 0
        self.method.after_task(phase.task)
        self._check_weights(phase)
        self._evaluate(phase.row)
        pos.phase, pos.epoch, pos.batch = pos.phase + 1, 0, 0
        row = phase.row
        end = ProgressEvent("task_end", phase.task, epoch=self.settings.epochs - 1, batch=0, step=pos.step)
        end.class_il, end.task_il = list(self.matrices["class_il"][row]), list(self.matrices["task_il"][row])
        self._report(end)
        self._checkpoint()

    def _step(self, batch: Batch, phase: Phase) -> dict[str, float]:
        for hook in self.step_hooks:
            hook(self, batch)
        images, maps, labels, _ = batch
        every = self.settings.diagnostics_every
        diagnose = bool(every) and self.learner.ser and (self.position.step + 1) % every == 0
        values = train_step(self.method, self.learner, images, maps, labels, diagnose)
        self.position.batch += 1
        self.position.step += 1
        bad = [name for name, v in values.items() if not math.isfinite(v)]
        if bad:
            pos = self.position
            raise RunFailure(
                f"non-finite loss {bad[0]}={values[bad[0]]} at step {pos.step} (task {phase.task + 1}, "
                f"epoch {pos.epoch}, batch {pos.batch}); {self._last_good()}"
            )
        return values

    def _check_weights(self, phase: Phase) -> None:
        """RunFailure when a weight went NaN or inf although every loss stayed finite (once per task: one pass over
        the weights, so the poisoned state is never checkpointed)."""
        bad = first_nonfinite(self.learner.state_dict())
        if bad is not None:
            raise RunFailure(f"non-finite weight {bad} at the end of task {phase.task + 1} "
                             f"(step {self.position.step}); {self._last_good()}")

    def _train_batches(self, phase: Phase, epoch: int, skip: int) -> Iterator[Batch]:
        # `skip` batches were consumed before the checkpoint this run resumed from.
        return _isolated(self.stream.train_loader(list(phase.tasks), epoch, start_batch=skip))

    def _evaluate(self, row: int) -> None:
        cpt = self.settings.classes_per_task
        n_logits = (row + 1) * cpt if self.settings.class_il_logits == "seen" else None  # seen classes: contiguous
        self.learner.train(False)
        for task in range(row + 1):
            scores = evaluate_task(self.learner, _isolated(self.stream.test_loader(task)), task, cpt, n_logits)
            self.matrices["class_il"][row][task] = scores.class_il
            self.matrices["task_il"][row][task] = scores.task_il
            for metric, value in scores.saliency.items():
                self.matrices[f"saliency_{metric}"][row][task] = value
        self.learner.train(True)

    def _report(self, event: ProgressEvent) -> None:
        if self.progress is not None:
            self.progress(event)

    def _checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self.state_dict())
            self._checkpointed_step = self.position.step

    def _last_good(self) -> str:
        if self._checkpointed_step is None:
            return "no checkpoint was written before it"
        return f"the last good state is the checkpoint of step {self._checkpointed_step}"

    def result(self) -> ContinualResult:
        """The matrices so far, the step count and the buffer size."""
        saliency = {m: _copy(self.matrices[f"saliency_{m}"]) for m in SALIENCY_METRICS if self.learner.ser}
        buffer = self.method.buffer
        return ContinualResult(
            class_il=_copy(self.matrices["class_il"]),
            task_il=_copy(self.matrices["task_il"]),
            saliency=saliency,
            class_il_logits=self.settings.class_il_logits,
            steps=self.position.step,
            buffer_nbytes=buffer.nbytes if buffer is not None else 0,
        )

    # ------------------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run exactly (tensors shared with the live objects)."""
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "settings": self.settings.to_dict(),
            "position": asdict(self.position),
            "learner": self.learner.state_dict(),
            "method": self.method.state_dict(),
            "matrices": _copy(self.matrices),
            "rng": capture_rng_state() if self._running else self._rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` of a run with the same settings (`checkpoint_every` may differ).

        Raises:
            UserError: not a continual-training state, or one from a run with other settings.
        """
        if state.get("format") != STATE_FORMAT or state.get("version") not in (1, STATE_VERSION):
            raise UserError(f"not a {STATE_FORMAT} v{STATE_VERSION} checkpoint (format {state.get('format')!r})")
        _check_same_settings(state["settings"], self.settings.to_dict())
        self.learner.load_state_dict(state["learner"])
        self.method.load_state_dict(state["method"])
        self.position = Position(**state["position"])
        self.matrices = _copy(state["matrices"])
        self._rng = state["rng"] if state["version"] == STATE_VERSION else upgrade_legacy_rng_state(state["rng"])
        self._checkpointed_step = self.position.step  # the state just loaded is a good one


def train_step(method: Method, learner: Learner, images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor,
               diagnose: bool = False) -> dict[str, float]:
    """One online step of `ser train` on a loader batch, the public step that `ContinualTrainer` runs for every batch
    (and the train-step benchmark times): uint8 images (B, 3, H, W), maps (B, H, W) summing to 1, labels (B,) on any
    device -> the method's losses (and SER's modulation diagnostics when `diagnose`) as floats.

    One host synchronisation per step, for the caller's NaN check and progress report together.
    """
    device = learner.normalize.device
    maps = maps.to(device, torch.float32) if learner.ser else maps
    learner.diagnose = diagnose
    losses = method.observe(StreamBatch(images.to(device), maps, labels.to(device)))
    losses.update(learner.pop_diagnostics())
    return dict(zip(losses, torch.stack([v.float() for v in losses.values()]).tolist(), strict=True))


def _check_stream(settings: TrainSettings, stream: TaskStream) -> None:
    if stream.n_tasks != settings.n_tasks:
        raise UserError(f"train.n_tasks is {settings.n_tasks} but the data has {stream.n_tasks} tasks")
    for task in range(stream.n_tasks):
        classes = stream.task_classes(task)
        if len(classes) != settings.classes_per_task or classes.step != 1:
            raise UserError(
                f"train.classes_per_task is {settings.classes_per_task} but task {task} has classes {classes}"
            )
        if classes.start < 0 or classes.stop > settings.n_classes:
            raise UserError(f"task {task} has classes {classes} outside 0..{settings.n_classes - 1}")


def _check_same_settings(saved: dict[str, Any], current: dict[str, Any]) -> None:
    # A key the checkpoint lacks is a setting added since it was written: the run had its default.
    saved = {k: saved.get(k, TrainSettings.model_fields[k].default) for k in current}
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved[k] != current[k]]
    if changed:
        diffs = ", ".join(f"{k}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        raise UserError(f"checkpoint was written with other train settings ({diffs}); resume with the same ones")


def _isolated(loader: Iterable[Batch]) -> Iterator[Batch]:
    """Iterate `loader` without letting it advance the python, numpy or torch CPU generators of the training."""
    with rng_preserved():
        iterator = iter(loader)
    while True:
        with rng_preserved():
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def _copy(value: Any) -> Any:
    """Deep copy of nested lists / dicts of floats."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
