"""Avalanche's side: its DER++ and ER-ACE built with the ser run's hyperparameters, the ER-ACE ablation that swaps
ser's choices into Avalanche's method, and the training loop that counts accuracy as ser does. Avalanche is imported
only inside these functions, so the main venv (without it) can import the module."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from experiments.avalanche.ser_side import Protocol, TaskData, accuracy_row, initial_model, task_data


def build_strategy(method: str, variant: frozenset[str], model: nn.Module, proto: Protocol, seed: int,
                   plugins: list, evaluator: Any) -> Any:
    """Avalanche's DER (beta > 0: DER++) or ER_ACE with the ser run's hyperparameters; for ER-ACE, `variant`
    names the choices of ser's ER-ACE swapped in (`ACE_SWAPS`; empty: Avalanche's method unchanged)."""
    from avalanche.training import DER, ER_ACE

    optimizer = torch.optim.SGD(model.parameters(), lr=proto.lr, momentum=proto.momentum,
                                weight_decay=proto.weight_decay)
    common = dict(model=model, optimizer=optimizer, mem_size=proto.buffer_size, batch_size_mem=proto.minibatch_size,
                  train_mb_size=proto.batch_size, train_epochs=proto.epochs, eval_mb_size=64, device="cpu",
                  plugins=plugins, evaluator=evaluator)
    if method == "derpp":
        if variant:
            raise SystemExit(f"--variants: {'+'.join(sorted(variant))} exists for er_ace only")
        return DER(alpha=proto.alpha, beta=proto.beta, **common)
    if not variant:
        return ER_ACE(**common)
    return er_ace_with_ser_choices(ER_ACE)(variant, proto.n_classes, seed, **common)



# ---------------------------------------------------------------------- ER-ACE ablation: ser's choices swapped in

ACE_SWAPS = {
    "sum": "loss CE(stream) + CE(replay), as ser, instead of Avalanche's mean of the two",
    "ser_mask": "stream CE over present classes + classes >= the largest seen label (ser / Mammoth), instead of "
                "present classes only",
    "reservoir": "a reservoir over the stream, offered each batch after its step, uniform draws of distinct "
                 "samples from task 1 on (ser), instead of the class-balanced buffer of whole tasks, current included",
    "buffer_after_task": "not a ser choice but the step between: Avalanche's class-balanced buffer updated after "
                         "each task (past tasks only, as Avalanche's DER) instead of before it",
}


def parse_variant(name: str) -> frozenset[str]:
    """`avalanche` (nothing swapped) or `+`-joined names of `ACE_SWAPS`."""
    swaps = frozenset() if name == "avalanche" else frozenset(name.split("+"))
    unknown = sorted(swaps - set(ACE_SWAPS))
    if unknown:
        raise SystemExit(f"--variants: {unknown[0]!r} is not 'avalanche' or one of {', '.join(ACE_SWAPS)}")
    if {"reservoir", "buffer_after_task"} <= swaps:
        raise SystemExit(f"--variants: {name!r} names two buffers; pick reservoir or buffer_after_task")
    return swaps


def variant_name(variant: frozenset[str]) -> str:
    return "+".join(sorted(variant)) if variant else "avalanche"


class AceLoss:
    """Avalanche's `ACECriterion` with the `sum` / `ser_mask` swaps; without them, numerically Avalanche's loss."""

    def __init__(self, variant: frozenset[str], n_classes: int) -> None:
        self.variant = variant
        self.seen = torch.zeros(n_classes, dtype=torch.bool)

    def __call__(self, out_in: Tensor, y_in: Tensor, out_buf: Tensor, y_buf: Tensor) -> Tensor:
        from ser_cli.continual.methods.er_ace import ace_mask  # ser's rule itself: the swap under test

        self.seen[y_in] = True
        present = torch.zeros_like(self.seen).index_fill_(0, y_in, True)  # (K,)
        keep = ace_mask(self.seen, y_in) if "ser_mask" in self.variant else present
        stream = F.cross_entropy(out_in.masked_fill(~keep, torch.finfo(out_in.dtype).min), y_in)
        replay = F.cross_entropy(out_buf, y_buf)
        return stream + replay if "sum" in self.variant else (stream + replay) / 2


class StreamReservoir:
    """Reservoir sampling over every stream sample (Vitter's algorithm R), uniform draws without replacement."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity, self.seen = capacity, 0
        self.x: Tensor | None = None
        self.y = torch.zeros(capacity, dtype=torch.int64)
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, x: Tensor, y: Tensor) -> None:
        if self.x is None:
            self.x = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype)
        for xi, yi in zip(x, y, strict=True):
            slot = self.seen if self.seen < self.capacity else int(
                torch.randint(self.seen + 1, (1,), generator=self.generator))
            if slot < self.capacity:
                self.x[slot], self.y[slot] = xi, yi
            self.seen += 1

    def draws(self, n: int) -> Any:
        """An endless generator of (x, y, task) replay batches, each from the buffer's state when drawn."""
        while True:
            index = torch.randperm(min(self.seen, self.capacity), generator=self.generator)[:n]
            yield self.x[index], self.y[index], torch.zeros_like(index)


def er_ace_with_ser_choices(er_ace: type) -> type:
    """Avalanche's ER_ACE with some of ser's choices swapped in (`ACE_SWAPS`), for the ablation of the gap."""
    from avalanche.training.utils import cycle
    from torch.utils.data import DataLoader

    class ErAceWithSerChoices(er_ace):
        def __init__(self, variant: frozenset[str], n_classes: int, seed: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ace_criterion = AceLoss(variant, n_classes)
            self.reservoir = StreamReservoir(self.mem_size, seed) if "reservoir" in variant else None
            self.after_task = "buffer_after_task" in variant

        def _before_training_exp(self, **kwargs: Any) -> None:
            if self.reservoir is None and not self.after_task:
                super()._before_training_exp(**kwargs)
                return
            super(er_ace, self)._before_training_exp(**kwargs)  # the template's set-up, no class-balanced update
            self.replay_loader = None
            if self.experience.current_experience > 0 and self.reservoir is not None:
                self.replay_loader = self.reservoir.draws(self.batch_size_mem)
            elif self.experience.current_experience > 0:  # as ER_ACE, from the buffer of the past tasks only
                loader = DataLoader(self.storage_policy.buffer, batch_size=self.batch_size_mem, shuffle=True,
                                    drop_last=True)
                self.replay_loader = cycle(loader)

        def _after_training_exp(self, **kwargs: Any) -> None:
            if self.after_task:
                self.storage_policy.update(self, **kwargs)
            super()._after_training_exp(**kwargs)

        def _after_training_iteration(self, **kwargs: Any) -> None:
            if self.reservoir is not None:  # after the update, as ser's step 5
                self.reservoir.add(self.mb_x.detach(), self.mb_y)
            super()._after_training_iteration(**kwargs)

    return ErAceWithSerChoices


def stream_check_plugin(tasks: list[TaskData], batch_size: int) -> Any:
    """A plugin that asserts every stream minibatch is ser's batch (same images, same labels, same order)."""
    from avalanche.core import SupervisedPlugin

    class StreamCheck(SupervisedPlugin):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0

        def before_training_exp(self, strategy: Any, **kwargs: Any) -> None:
            self.step = 0

        def before_training_iteration(self, strategy: Any, **kwargs: Any) -> None:
            # Called before DER prepends its replay batch: mb_x is the stream batch alone.
            t, lo = strategy.experience.current_experience, self.step * batch_size
            x, y = tasks[t].train_x[lo:lo + batch_size], tasks[t].train_y[lo:lo + batch_size]
            if not (torch.equal(strategy.mb_x, x) and torch.equal(strategy.mb_y, y)):
                raise RuntimeError(f"task {t} step {self.step}: Avalanche's stream batch is not ser's")
            self.step += 1

    return StreamCheck()


def run_avalanche(method: str, variant: frozenset[str], seed: int, data: Path, proto: Protocol) -> dict[str, Any]:
    """Train Avalanche's method over the tasks; accuracy matrices (counted here) and Avalanche's own final number."""
    from avalanche.benchmarks.scenarios import benchmark_from_datasets
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset as tensor_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin

    tasks = task_data(data, proto, seed)
    bench = benchmark_from_datasets(
        train=[tensor_dataset(t.train_x, t.train_y, task_labels=0) for t in tasks],
        test=[tensor_dataset(t.test_x, t.test_y, task_labels=0) for t in tasks])
    model = initial_model(proto.backbone, proto.n_classes, seed)  # seeds every RNG Avalanche then draws from
    evaluator = EvaluationPlugin(accuracy_metrics(stream=True), loggers=[])
    plugins = [stream_check_plugin(tasks, proto.batch_size)]
    strategy = build_strategy(method, variant, model, proto, seed, plugins, evaluator)
    tests = [(t.test_x, t.test_y) for t in tasks]
    rows: dict[str, list[list[float]]] = {"class_il": [], "task_il": []}
    start = time.perf_counter()
    for row, experience in enumerate(bench.train_stream):
        strategy.train(experience, shuffle=False, eval_streams=[])
        class_il, task_il = accuracy_row(model, tests, row, proto.classes_per_task)
        rows["class_il"].append(class_il)
        rows["task_il"].append(task_il)
    seconds = time.perf_counter() - start
    last = strategy.eval(bench.test_stream)
    stream_acc = next(v for k, v in last.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))
    return {"class_il": float(np.mean(rows["class_il"][-1])), "task_il": float(np.mean(rows["task_il"][-1])),
            "avalanche_stream_acc": 100.0 * stream_acc, "class_il_matrix": rows["class_il"],
            "task_il_matrix": rows["task_il"], "train_seconds": seconds}

