"""Stage `train`: online class-incremental learning with a replay method, optionally with SER (`ser train`).

Wires the HDF5 scenario, the pretrained saliency network and the continual library together; owns the run folder:
`checkpoint.pt` while running (every `train.checkpoint_every` steps and at each task end; a rerun of the same
command resumes from it bit-exactly), then `model.pt`, `accuracy_matrix.json`, `metrics.json`, `run.json`,
`train_log.csv`, `avg_accuracy.png` and the resolved `params.yaml`.
"""

from __future__ import annotations

import csv
import io
import json
import resource
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser_cli.config import Params
from ser_cli.config_loader import params_to_yaml
from ser_cli.continual.loggers import TrainLoggers, check_loggers
from ser_cli.continual.loop import ContinualTrainer, StepHook
from ser_cli.continual.run_records import ProgressEvent
from ser_cli.continual.settings import TrainSettings
from ser_cli.data.maps import MapsFile
from ser_cli.data.scenario import ClassIncrementalScenario
from ser_cli.data.store import DataFile
from ser_cli.metrics.continual import SCENARIOS, continual_metrics
from ser_cli.metrics.headline import TRAIN, headline, write_headline
from ser_cli.models.registry import build_backbone
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.models.torchvision_backbones import load_torchvision_weights
from ser_cli.plots.continual import chance_levels, plot_avg_accuracy
from ser_cli.runs.run_identity import RunIdentity, check_run_folder, is_legacy_run_folder
from ser_cli.runs.run_io import config_hash, save_run_model
from ser_cli.runs.saliency_model import load_saliency_model
from ser_cli.runtime.atomic import write_json_atomic, write_text_atomic
from ser_cli.runtime.checkpoint import load_resumable, save_checkpoint
from ser_cli.runtime.clock import TrainingClock
from ser_cli.runtime.device import host_facts, resolve_device
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.hashing import file_sha256
from ser_cli.runtime.interrupt import Interrupted, stop_requests
from ser_cli.runtime.output_folder import check_disjoint, check_owned_folder, mark_owned_folder
from ser_cli.runtime.output_lock import locks_outputs
from ser_cli.runtime.progress import log, progress_bar
from ser_cli.runtime.provenance import code_version, executor_info, machine_facts
from ser_cli.saliency.encoder_init import backbone_weights, classification_weights
from ser_cli.saliency.targets import check_not_self_made, start_cc, target_source

CHECKPOINT = "checkpoint.pt"
COMMAND = "ser train"
DIAGNOSTIC = "mod_"  # modulation diagnostics in the log (`Learner.pop_diagnostics`), summarised in metrics.json


@locks_outputs("out", torchrun=False)
def run(params: Params, data: Path, maps: Path | None, out: Path, device: str = "auto",
        start: str = "resume", step_hooks: Sequence[StepHook] = ()) -> dict[str, float]:
    """Train (or resume) the run in `out`; returns the flat metrics.

    Args:
        start: `resume` (continue a checkpoint of the same inputs; a finished run of the same inputs is left as it
            is), `restart` (discard this run's checkpoint and start from zero) or `overwrite` (also replace a
            finished run of other inputs or settings).
        step_hooks: Given to the `ContinualTrainer` (`ser_cli.continual.loop.StepHook`): called before every step.
    """
    out = Path(out)
    check_disjoint({"--out": out}, {"--data": data, "--maps": maps,
                                    "train.saliency_checkpoint": params.train.saliency_checkpoint,
                                    "train.backbone_weights": params.train.backbone_weights})
    check_owned_folder(out, COMMAND, is_legacy_run_folder)  # --overwrite replaces runs, never a user's files
    dev = resolve_device(device)
    settings = params.train.settings(params.evaluate.class_il_logits)
    check_loggers(params.train.loggers)
    data_file = DataFile(data)
    maps_file = _check_maps(maps, data_file, settings)
    saliency_net, saliency_sha = _saliency_net(params, settings)
    targets = _targets(params, settings, maps_file, saliency_sha)
    init_weights, init_sha = _classifier_weights(params, settings, saliency_net)
    identity = RunIdentity(config_hash(settings), settings.seed, data_file.fingerprint,
                           maps_file.identity() if maps_file else None, saliency_sha, init_sha)
    if check_run_folder(out, identity, start) == "complete":
        log(f"{out}: already complete for these inputs and settings, nothing to do")
        return json.loads((out / "metrics.json").read_text())
    if targets is not None:
        targets["start_cc"] = round(start_cc(saliency_net, data_file, maps, dev), 6)
        log(f"SER targets: {targets['label']} ({targets['kind']}); the branch's CC against them before training: "
            f"{targets['start_cc']:.3f}")
    scenario = ClassIncrementalScenario(data, maps, settings.n_tasks, settings.classes_per_task,
                                        settings.batch_size, settings.seed, workers=params.train.workers)
    log_rows: list[dict[str, Any]] = []
    clock = TrainingClock()
    trainer = ContinualTrainer(settings, scenario, dev, saliency_net if settings.ser else None,
                               checkpoint=lambda state: _save_checkpoint(out, state, log_rows, clock.total(),
                                                                         identity),
                               classifier_weights=init_weights, step_hooks=step_hooks)
    _resume(out, trainer, log_rows, clock, identity, restart=start != "resume")
    mark_owned_folder(out, COMMAND)  # only now: a refused run leaves no empty folder behind
    resumed = trainer.position.step > 0
    with progress_bar() as bar, TrainLoggers(params.train.loggers, out, resume=resumed) as loggers:
        total = sum(settings.epochs * scenario.n_batches(p.tasks) for p in trainer.phases)
        task = bar.add_task(f"train {settings.method}{'+ser' if settings.ser else ''}", total=total,
                            completed=trainer.position.step, info="")
        trainer.progress = _progress_handler(bar, task, log_rows, clock, loggers, settings.n_tasks)
        with stop_requests() as trainer.should_stop:
            try:
                result = trainer.run()
            except Interrupted as stop:
                raise Interrupted(f"{stop}; checkpoint written to {out / CHECKPOINT}; rerun the same command to "
                                  "resume") from None
    provenance = {"data": str(data), "data_fingerprint": data_file.fingerprint, "maps": str(maps) if maps else None,
                  "maps_model_sha256": maps_file.model_sha256 if maps_file else None,
                  "maps_method": maps_file.method if maps_file else None,
                  "saliency_checkpoint_sha256": saliency_sha, "init_checkpoint_sha256": init_sha,
                  "targets": targets, "host": host_facts(dev), "code": code_version(),
                  "machine": machine_facts(), "executor": executor_info()}
    save_run_model(out / "model.pt", trainer.learner, settings, data_file.class_names, provenance)
    metrics = {**_metrics(result, clock.total(), dev), **diagnostics_summary(log_rows)}
    _write_outputs(out, params, settings, result, metrics, log_rows, provenance, identity)
    (out / CHECKPOINT).unlink(missing_ok=True)  # the run is complete: model.pt is the artefact now
    return metrics


def _check_maps(maps: Path | None, data_file: DataFile, settings: TrainSettings) -> MapsFile | None:
    if maps is None:
        if settings.ser and not data_file.has_maps:
            raise UserError(f"{data_file.path}: has no saliency maps; SER needs --maps MAPS.h5 from `ser precompute`")
        return None
    maps_file = MapsFile(maps)
    maps_file.check_matches(data_file)
    return maps_file


def _targets(params: Params, settings: TrainSettings, maps_file: MapsFile | None,
             saliency_sha: str | None) -> dict[str, Any] | None:
    """SER's target source (None without SER), refused when made by the branch's own starting weights."""
    if not settings.ser:
        return None
    source = target_source(maps_file, saliency_sha)
    check_not_self_made(source, maps_file.path if maps_file else None, params.train.saliency_checkpoint,
                        params.train.allow_self_targets)
    return {**source.to_dict(), "label": source.label()}


def _classifier_weights(params: Params, settings: TrainSettings,
                        saliency_net: SaliencyNet | None) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The backbone tensors the classifier starts from, checked against it, and the sha256 of their file."""
    if settings.classifier_init == "random":
        return None, None
    template = build_backbone(settings.backbone, settings.n_classes)
    if params.train.backbone_weights:
        path = Path(params.train.backbone_weights)
        load_torchvision_weights(template, path, "train.backbone_weights")
        return backbone_weights(template, template.state_dict(), f"train.backbone_weights {path}"), file_sha256(path)
    if settings.classifier_init == "saliency":
        source = f"train.classifier_init=saliency: {params.train.saliency_checkpoint}"
        return backbone_weights(template, saliency_net.encoder.state_dict(), source), None  # sha: the saliency's
    path = Path(params.train.classifier_init)
    weights = classification_weights(path, "train.classifier_init")
    return backbone_weights(template, weights, f"train.classifier_init {path}"), file_sha256(path)


def _saliency_net(params: Params, settings: TrainSettings) -> tuple[SaliencyNet | None, str | None]:
    """The pretrained saliency network SER starts from, or whose encoder the classifier starts from."""
    if not settings.ser and settings.classifier_init != "saliency":
        return None, None
    path = params.train.saliency_checkpoint
    need = "SER" if settings.ser else "train.classifier_init=saliency"
    if path is None:
        raise UserError(f"train.saliency_checkpoint: {need} needs the model.pt of `ser pretrain-saliency` "
                        "(--set train.saliency_checkpoint=PATH)")
    if not Path(path).is_file():
        hint = "" if settings.ser else " (or --set train.classifier_init=random)"
        raise UserError(f"train.saliency_checkpoint: {path} not found; run `ser pretrain-saliency` first or point "
                        f"it at its model.pt{hint}")
    net = load_saliency_model(Path(path), need_network=True).net
    if net.config()["backbone"] != settings.backbone:
        # also guards classifier_init=saliency: the encoder must be the classifier's architecture
        raise UserError(f"{path}: saliency network was pretrained with backbone {net.config()['backbone']!r}, "
                        f"but train.backbone is {settings.backbone!r}; pretrain with saliency.backbone="
                        f"{settings.backbone}")
    return net, file_sha256(Path(path))


def _save_checkpoint(out: Path, state: dict[str, Any], log_rows: list[dict[str, Any]], seconds: float,
                     identity: RunIdentity) -> None:
    save_checkpoint(out / CHECKPOINT, {"trainer": state, "log": log_rows, "seconds": seconds,
                                       "identity": identity.to_dict()})


def _resume(out: Path, trainer: ContinualTrainer, log_rows: list[dict[str, Any]], clock: TrainingClock,
            identity: RunIdentity, restart: bool) -> None:
    path = out / CHECKPOINT
    saved = load_resumable(path, identity.to_dict(), ("trainer", "log", "seconds"), restart)
    if saved is None:
        return
    trainer.load_state_dict(saved["trainer"])
    log_rows.extend(row for row in saved["log"] if row["step"] <= trainer.position.step)
    clock.before = float(saved["seconds"])
    log(f"resuming {out} from step {trainer.position.step}")


def _progress_handler(bar, task, log_rows: list[dict[str, Any]], clock: TrainingClock,
                      loggers: TrainLoggers | None = None, n_tasks: int = 0):
    """The loop's progress callback: the log rows, the bar (tasks numbered from 1, as in the figures), one line
    per task end with class-IL and task-IL, and the chosen loggers."""
    def handle(event: ProgressEvent) -> None:
        if event.kind == "step":
            log_rows.append({"step": event.step, "task": event.task, "epoch": event.epoch,
                             **{k: round(v, 6) for k, v in event.losses.items()},
                             "seconds": round(clock.total(), 3)})
            losses = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items() if not k.startswith(DIAGNOSTIC))
            bar.update(task, advance=1, info=f"task {event.task + 1} {losses}")
            if loggers is not None and loggers.active:
                loggers.step(event.step, event.losses)
        else:
            class_il, task_il = _seen_mean(event.class_il), _seen_mean(event.task_il)
            log(task_end_line(event.task, n_tasks, class_il, task_il))
            if loggers is not None and loggers.active:
                loggers.task_end(event.task + 1, event.step, class_il, task_il)

    return handle


def _seen_mean(row: list[float]) -> float:
    seen = [a for a in row if a == a]  # NaN: a task not seen yet
    return sum(seen) / len(seen) if seen else float("nan")


def task_end_line(task: int, n_tasks: int, class_il: float, task_il: float) -> str:
    """The console line after a task (`task` 0-based as the loop counts, shown from 1 as the figures number them);
    average accuracies over the tasks seen, class-IL first as Mammoth prints them."""
    of = f"/{n_tasks}" if n_tasks else ""
    return f"after task {task + 1}{of}: average accuracy class-IL {class_il:.1f}%, task-IL {task_il:.1f}%"


def _curves_and_metrics(result) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Average accuracy after each task and the flat continual metrics (a `joint` run has its last row only)."""
    metrics, curves = continual_metrics({k: np.array(getattr(result, k), dtype=float) for k in SCENARIOS})
    return curves, metrics


def _metrics(result, seconds: float, device: torch.device) -> dict[str, float]:
    metrics = _curves_and_metrics(result)[1]
    for name, matrix in result.saliency.items():
        last = [v for v in matrix[-1] if v == v]
        metrics[f"saliency_{name}"] = sum(last) / len(last)
    metrics.update(train_seconds=round(seconds, 3), buffer_bytes=result.buffer_nbytes, steps=result.steps,
                   peak_memory_bytes=_peak_memory(device))
    return metrics


def diagnostics_summary(log_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the run of each modulation diagnostic and of the saliency branch's KLD on the stream."""
    columns = sorted({k for row in log_rows for k in row if k.startswith(DIAGNOSTIC) or k == "saliency_kld"})
    summary = {}
    for column in columns:
        values = [float(row[column]) for row in log_rows if row.get(column, "") != ""]
        name = "stream_saliency_kld" if column == "saliency_kld" else column
        summary[f"{name}_mean"] = round(float(np.mean(values)), 6)
    return summary


def _peak_memory(device: torch.device) -> int:
    """Peak GPU memory allocated on CUDA, peak resident set size of the process on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _write_outputs(out: Path, params: Params, settings: TrainSettings, result, metrics: dict[str, float],
                   log_rows: list[dict[str, Any]], provenance: dict[str, Any], identity: RunIdentity) -> None:
    write_json_atomic(out / "accuracy_matrix.json", {"class_il": result.class_il, "task_il": result.task_il,
                                                     "class_il_logits": result.class_il_logits,
                                                     "saliency": result.saliency})
    write_json_atomic(out / "metrics.json", metrics)
    write_headline(out / "metrics.json", headline(metrics, TRAIN))  # what `dvc metrics show` prints
    write_json_atomic(out / "run.json", {"config_hash": config_hash(settings), "method": settings.method,
                                         "ser": settings.ser, "seed": settings.seed,
                                         "classifier_init": settings.classifier_init,
                                         "stream_taps": settings.stream_taps, **provenance,
                                         "identity": identity.to_dict()})
    write_text_atomic(out / "params.yaml", params_to_yaml(params))
    write_text_atomic(out / "train_log.csv", _csv(log_rows))
    chance = chance_levels(settings.n_tasks, settings.classes_per_task, settings.class_il_logits == "seen")
    plot_avg_accuracy(out / "avg_accuracy.png", _curves_and_metrics(result)[0], chance)


def _csv(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
