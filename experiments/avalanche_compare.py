r"""An independent implementation check: Avalanche's DER++ and ER-ACE on the exact stream of `ser train`'s plain
`derpp` / `er_ace` runs (issue #11 item 4), final class-IL accuracy side by side.

Avalanche (avalanche-lib 0.6.0, Carta et al., JMLR 2023) lives in its own venv and is never a dependency of `ser`;
this script imports it only inside the functions that train, so the main venv can import and test the helpers:

    python3 -m venv /tmp/avenv && /tmp/avenv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/avenv/bin/pip install avalanche-lib h5py pyyaml && /tmp/avenv/bin/pip install -e . --no-deps
    OMP_NUM_THREADS=1 /tmp/avenv/bin/python -m experiments.avalanche_compare --seeds 0,1,2 \
        --out experiments/results/avalanche/

CPU only, one torch thread (as the grid's runs), 3-5 minutes of training per (method, seed) on this 2-core machine
while the grid runs. Each run writes `OUT/runs/{method}[+{variant}]_s{seed}.json`; the table
`OUT/avalanche_compare.{json,md}` is rebuilt from every run file there, so seeds can be added later (`--seeds 1,2`)
and `--table-only` rebuilds it without training.

Matched exactly (read from the ser run's `params.yaml` / `run.json` and checked at start):
- data: `data/synth.h5` (fingerprint checked against the ser run), 5 tasks x 4 classes, task = label // 4 (class
  order 0..19); each task's training rows in ser's stream order (`ClassIncrementalScenario.stream_order`:
  `default_rng([seed, task, 0])` permutation of the task's rows in file order), fed with `shuffle=False` and checked
  batch by batch by a plugin; batches of 8 (75 steps per task), one epoch; test rows in file order;
- inputs: uint8 images normalised by ser's own `Normalizer` (ImageNet mean / std), no augmentation;
- network: ser's `resnet18_reduced` module itself, 20-way head, from the seeded random initialisation `ser train`
  builds with `train.classifier_init=random` (`continual.seeds.seed_run(seed)`, then `build_backbone`, as
  `ContinualTrainer` does);
- optimiser: SGD lr 0.01, momentum 0, weight decay 0, never reset (Avalanche keeps the optimiser across experiences;
  plain SGD has no state to reset anyway); replay minibatch 8, buffer 500; DER++ alpha 0.1, beta 0.5;
- evaluation: after each task, eval mode, class-IL = argmax over the classes seen so far and task-IL = argmax in the
  task's block, per task in percent; final class-IL = mean over the 5 tasks of the last row (as
  `ser_cli.metrics.continual.final_avg_acc`). Avalanche's own `Top1_Acc_Stream` (argmax over all 20 logits, pooled
  over the 600 test images) is recorded as well; after the last task it is the same number (every class is seen,
  every task has 120 test images).

What differs: Avalanche's methods, as `avalanche.training.DER` and `avalanche.training.ER_ACE` implement them.
DER++ (`DER(alpha=0.1, beta=0.5)`, training/supervised/der.py):
- buffer policy: `ClassBalancedBufferWithLogits`, updated only in `after_training_exp` with the whole task: a
  uniform random subset of each class (`ReservoirSamplingBuffer` = keep the top-k of one `torch.rand` weight per
  sample), 500 // (classes seen) per class (125 after task 0, 62-63 after task 1, ..., 25 after task 4). ser: one
  reservoir over the stream, updated every step. So Avalanche never replays during task 0 (only the stream CE), and
  during task t replays tasks < t only; ser replays from the second step of task 0 on, current-task samples included;
- stored logits: computed once per task after it ends, by the model in eval mode (BatchNorm running statistics)
  over the whole task; ser stores the train-mode stream logits of the step the sample was seen, before its update;
- replay batch: ONE draw of 8 per step, used for both the MSE and the CE term; ser (and Mammoth) takes two
  independent draws. Draws come from a cycled `DataLoader(shuffle=True, drop_last=True)` over the buffer (each
  sample once per pass); ser draws 8 distinct samples uniformly each time;
- forward: replay and stream concatenated into one forward of 16, so BatchNorm normalises with the statistics of
  the mixed batch and its running statistics move once per step; ser runs three forwards of 8 (stream, draw 1,
  draw 2), each with its own batch statistics, three running-statistic updates per step;
- loss: CE(stream) + alpha * MSE(replay logits, stored logits) + beta * CE(replay): the same terms and weights.
ER-ACE (`ER_ACE`, training/supervised/er_ace.py; `ACECriterion`, training/regularization.py):
- buffer policy: `ClassBalancedBuffer`, updated in `before_training_exp` with the WHOLE coming task (the docstring:
  "adapted to non-online scenario"), so during task t >= 1 the buffer already holds a class-balanced share
  (500 // (4 (t + 1)) per class) of every task up to t, the current one included, including images not yet seen
  in the stream; ser's reservoir holds only images already streamed;
- loss from task 1 on: `(CE(replay) + CE(stream logits restricted to the classes present in the batch)) / 2`. ser:
  `CE(masked stream) + CE(replay)`, no 1/2 (twice the gradient at the same lr), and its mask (Mammoth's rule) also
  keeps every class >= the largest label seen so far, i.e. the current task's absent classes and all future classes
  stay in the softmax denominator; Avalanche's mask drops them. Task 0: plain stream CE in both;
- replay draws: cycled shuffled `DataLoader` over the buffer (each sample once per pass) vs uniform draws; both run
  the replay batch in its own forward after the stream forward.

Ablation of the ER-ACE differences (`--variants`, ER-ACE only): Avalanche's `ER_ACE` with some of ser's choices
swapped in, each a name of `ACE_SWAPS` (`sum`, `ser_mask`, `reservoir`, joined with `+`; `avalanche` = unchanged),
plus `buffer_after_task` (Avalanche's own buffer filled after each task instead of before it), to find which
difference moves the result (findings: `experiments/results/avalanche/findings.md`):

    OMP_NUM_THREADS=1 /tmp/avenv/bin/python -m experiments.avalanche_compare --methods er_ace \
        --variants sum+ser_mask+reservoir,sum,ser_mask,reservoir,buffer_after_task --out experiments/results/avalanche/

Neither implementation is changed; `--table-only` only reads.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy import stats
from torch import Tensor, nn

from ser_cli.continual.seeds import seed_run
from ser_cli.models.normalize import Normalizer
from ser_cli.models.registry import build_backbone

METHODS = {"derpp": "DER++", "er_ace": "ER-ACE"}
RUNS_DIR = Path("experiments/out/protocol/runs")  # ser's runs: `{method}_rand_s{seed}` (read only)


@dataclass(frozen=True)
class Protocol:
    """The settings of the ser run both implementations share (from its `params.yaml`)."""

    backbone: str
    n_tasks: int
    classes_per_task: int
    epochs: int
    batch_size: int
    minibatch_size: int
    buffer_size: int
    lr: float
    momentum: float
    weight_decay: float
    alpha: float
    beta: float

    @property
    def n_classes(self) -> int:
        return self.n_tasks * self.classes_per_task


# ------------------------------------------------------------------------------------------------ the ser side


def ser_run(runs_dir: Path, method: str, seed: int) -> Path:
    """The folder of ser's plain run with a random classifier start."""
    return runs_dir / f"{method}_rand_s{seed}"


def read_protocol(run: Path, method: str, seed: int) -> tuple[Protocol, str]:
    """The shared settings and the data fingerprint of a ser run, checked to be the plain random-start run."""
    info = json.loads((run / "run.json").read_text())
    train = yaml.safe_load((run / "params.yaml").read_text())["train"]
    expected = {"method": method, "ser": False, "seed": seed, "classifier_init": "random"}
    found = {k: info[k] for k in expected}
    if found != expected or train["precision"] not in ("auto", "fp32"):
        raise SystemExit(f"{run}: expected a plain fp32 run {expected}, found {found}")
    if train["epochs"] != 1:
        raise SystemExit(f"{run}: train.epochs={train['epochs']}; this comparison streams each task once")
    return Protocol(**{f: train[f] for f in Protocol.__dataclass_fields__}), info["data_fingerprint"]


def ser_result(run: Path) -> dict[str, Any]:
    """ser's final class-IL / task-IL accuracy, its class-IL matrix and training time."""
    metrics = json.loads((run / "metrics.json").read_text())
    matrix = json.loads((run / "accuracy_matrix.json").read_text())
    return {"class_il": metrics["class_il_final_avg_acc"], "task_il": metrics["task_il_final_avg_acc"],
            "class_il_matrix": matrix["class_il"], "train_seconds": metrics["train_seconds"]}


# ------------------------------------------------------------------------------------- data, split, weights


def stream_rows(labels: np.ndarray, classes_per_task: int, task: int, seed: int) -> np.ndarray:
    """Training rows of `task` in ser's stream order for epoch 0 (`ClassIncrementalScenario.stream_order`)."""
    rows = np.flatnonzero(labels // classes_per_task == task)  # file order
    return rows[np.random.default_rng([seed, task, 0]).permutation(len(rows))]


def eval_rows(labels: np.ndarray, classes_per_task: int, task: int) -> np.ndarray:
    """Test rows of `task` in file order (`ClassIncrementalScenario.task_rows`)."""
    return np.flatnonzero(labels // classes_per_task == task)


def read_split(path: Path, split: str) -> tuple[Tensor, np.ndarray]:
    """All images uint8 (N, 3, H, W) and labels (N,) of a raw-storage data file's split."""
    with h5py.File(path, "r", locking=False) as h5:
        if h5.attrs.get("storage", "raw") != "raw":
            raise SystemExit(f"{path}: PNG-encoded storage; this script reads raw files only")
        images = torch.from_numpy(h5[split]["images"][:]).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        return images, h5[split]["labels"][:]


def data_fingerprint(path: Path) -> str:
    with h5py.File(path, "r", locking=False) as h5:
        return str(h5.attrs["fingerprint"])


def initial_model(backbone: str, n_classes: int, seed: int) -> nn.Module:
    """The classifier `ser train` starts from with `classifier_init=random` (seed first, then build)."""
    seed_run(seed)
    return build_backbone(backbone, n_classes)


# ---------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def accuracy_row(model: nn.Module, tests: list[tuple[Tensor, Tensor]], row: int, classes_per_task: int,
                 batch_size: int = 64) -> tuple[list[float], list[float]]:
    """Class-IL and task-IL accuracy (percent) on tasks 0..row after training task `row`, counted independently.

    Args:
        tests: Per task, normalised test images (N, 3, H, W) and labels (N,).

    Returns:
        (class-IL, task-IL) lists of row + 1 accuracies: argmax over the (row + 1) * classes_per_task seen classes,
        and argmax within the label's own block of classes_per_task logits.
    """
    was_training = model.training
    model.eval()
    class_il, task_il = [], []
    for task in range(row + 1):
        x, y = tests[task]
        logits = torch.cat([model(chunk) for chunk in x.split(batch_size)])  # (N, n_classes)
        seen = logits[:, : (row + 1) * classes_per_task].argmax(1)
        block = slice(task * classes_per_task, (task + 1) * classes_per_task)
        own = logits[:, block].argmax(1) + task * classes_per_task
        class_il.append(100.0 * (seen == y).double().mean().item())
        task_il.append(100.0 * (own == y).double().mean().item())
    model.train(was_training)
    return class_il, task_il


# -------------------------------------------------------------------------------------------- the Avalanche side


@dataclass
class TaskData:
    """One task: normalised training images in stream order, their labels, and the task's test set."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor


def task_data(data: Path, proto: Protocol, seed: int) -> list[TaskData]:
    """Every task of the scenario, normalised with ser's `Normalizer` on the CPU."""
    normalize = Normalizer("cpu")
    (train_img, train_lab), (test_img, test_lab) = read_split(data, "train"), read_split(data, "test")
    tasks = []
    for t in range(proto.n_tasks):
        tr, te = stream_rows(train_lab, proto.classes_per_task, t, seed), eval_rows(test_lab, proto.classes_per_task, t)
        tasks.append(TaskData(normalize(train_img[tr]), torch.from_numpy(train_lab[tr]),
                              normalize(test_img[te]), torch.from_numpy(test_lab[te])))
    return tasks


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


# ------------------------------------------------------------------------------------------------- the table


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean (None for one value)."""
    mean, std = mean_std(values)
    if std is None:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * std / np.sqrt(len(values))
    return mean - half, mean + half


def fmt(mean: float, std: float | None, sign: str = "") -> str:
    return f"{mean:{sign}.2f}" if std is None else f"{mean:{sign}.2f} ± {std:.2f}"


def config_key(record: dict[str, Any]) -> str:
    """`derpp`, `er_ace`, or `er_ace+SWAPS` for an ablation variant."""
    variant = record.get("variant", "avalanche")
    return record["method"] if variant == "avalanche" else f"{record['method']}+{variant}"


def config_label(key: str) -> str:
    method, _, swaps = key.partition("+")
    return METHODS[method] if not swaps else f"{METHODS[method]} (Avalanche's, swapped: {swaps.replace('+', ' + ')})"


def _order(key: str) -> tuple[int, int, str]:
    method, _, swaps = key.partition("+")
    return list(METHODS).index(method), swaps.count("+") + bool(swaps), swaps


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per configuration: mean ± sample std over seeds of both implementations, the paired difference with its 95 %
    t-interval, and for an ablation variant its paired difference from Avalanche's unchanged method."""
    out: dict[str, Any] = {}
    by_key = {(config_key(r), r["seed"]): r for r in records}
    for key in sorted({k for k, _ in by_key}, key=_order):
        recs = sorted((r for (k, _), r in by_key.items() if k == key), key=lambda r: r["seed"])
        ava = [r["avalanche"]["class_il"] for r in recs]
        ser = [r["ser"]["class_il"] for r in recs]
        diff = [a - s for a, s in zip(ava, ser, strict=True)]
        out[key] = {"seeds": [r["seed"] for r in recs], "avalanche": mean_std(ava), "ser": mean_std(ser),
                    "avalanche_minus_ser": mean_std(diff), "avalanche_minus_ser_ci95": t_interval(diff)}
        base = [by_key.get((recs[0]["method"], r["seed"])) for r in recs]
        if key != recs[0]["method"] and all(base):
            shift = [r["avalanche"]["class_il"] - b["avalanche"]["class_il"] for r, b in zip(recs, base, strict=True)]
            out[key].update(minus_unchanged=mean_std(shift), minus_unchanged_ci95=t_interval(shift))
    return out


def markdown(records: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The per-seed table and the mean ± sample std table."""
    lines = ["Final class-IL accuracy (%), argmax over all 20 classes after task 5, mean over the 5 tasks; task-IL "
             "likewise; training seconds on one thread of a shared 2-core CPU.", "",
             "| configuration | seed | Avalanche | ser | Avalanche - ser | Avalanche task-IL | ser task-IL | "
             "Avalanche s | ser s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (_order(config_key(r)), r["seed"])):
        a, s = r["avalanche"], r["ser"]
        lines.append(f"| {config_label(config_key(r))} | {r['seed']} | {a['class_il']:.2f} | {s['class_il']:.2f} | "
                     f"{a['class_il'] - s['class_il']:+.2f} | {a['task_il']:.2f} | {s['task_il']:.2f} | "
                     f"{a['train_seconds']:.0f} | {s['train_seconds']:.0f} |")
    lines += ["", "Mean ± sample std over seeds; paired differences (same seed) with their 95 % t-interval; for an "
              "ablation variant also its difference from Avalanche's unchanged method.", "",
              "| configuration | seeds | Avalanche | ser | Avalanche - ser | 95 % interval | variant - unchanged | "
              "95 % interval |", "|---|---|---|---|---|---|---|---|"]
    for key, m in summary.items():
        shift = fmt(*m["minus_unchanged"], sign="+") if "minus_unchanged" in m else ""
        lines.append(f"| {config_label(key)} | {len(m['seeds'])} | {fmt(*m['avalanche'])} | {fmt(*m['ser'])} | "
                     f"{fmt(*m['avalanche_minus_ser'], sign='+')} | {_interval(m['avalanche_minus_ser_ci95'])} | "
                     f"{shift} | {_interval(m.get('minus_unchanged_ci95'))} |")
    return "\n".join(lines) + "\n"


def _interval(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"[{ci[0]:+.2f}, {ci[1]:+.2f}]"


def write_table(out: Path) -> str:
    """Rebuild `avalanche_compare.{json,md}` from every run file in `out/runs/`; returns the markdown."""
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*.json"))]
    summary = summarize(records)
    (out / "avalanche_compare.json").write_text(json.dumps({"runs": records, "summary": summary}, indent=2) + "\n")
    text = markdown(records, summary)
    (out / "avalanche_compare.md").write_text(text)
    return text


# -------------------------------------------------------------------------------------------------- main


def compare_one(method: str, variant: frozenset[str], seed: int, data: Path, runs_dir: Path, out: Path,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train Avalanche's `method` (with `variant`'s swaps) and `seed` against ser's run of the same seed; write and
    return the record."""
    run = ser_run(runs_dir, method, seed)
    proto, fingerprint = read_protocol(run, method, seed)
    if data_fingerprint(data) != fingerprint:
        raise SystemExit(f"{data}: not the data file {run} was trained on (fingerprint differs)")
    record = {"method": method, "variant": variant_name(variant), "seed": seed, "protocol": asdict(proto),
              "ser_run": str(run)}
    key = config_key(record)
    log(f"{key} seed {seed}: training {config_label(key)} ...")
    record.update(avalanche=run_avalanche(method, variant, seed, data, proto), ser=ser_result(run))
    (out / "runs").mkdir(parents=True, exist_ok=True)
    (out / "runs" / f"{key}_s{seed}.json").write_text(json.dumps(record, indent=2) + "\n")
    a, s = record["avalanche"], record["ser"]
    log(f"{key} seed {seed}: Avalanche {a['class_il']:.2f} (its own stream accuracy "
        f"{a['avalanche_stream_acc']:.2f}), ser {s['class_il']:.2f}, {a['train_seconds']:.0f} s")
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--methods", default="derpp,er_ace", help="comma-separated: derpp, er_ace")
    parser.add_argument("--variants", default="avalanche",
                        help="comma-separated: avalanche (unchanged) or +-joined ER-ACE swaps: " + ", ".join(ACE_SWAPS))
    parser.add_argument("--data", type=Path, default=Path("data/synth.h5"))
    parser.add_argument("--runs", type=Path, default=RUNS_DIR, help="ser's protocol runs (read only)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/avalanche"))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the grid's runs use 1)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from OUT/runs/")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods, variants = args.methods.split(","), [parse_variant(v) for v in args.variants.split(",")]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"--methods: {unknown[0]!r} is not one of {', '.join(METHODS)}")
    if not args.table_only:
        for seed in (int(s) for s in args.seeds.split(",")):
            for method in methods:
                for variant in variants:
                    compare_one(method, variant, seed, args.data, args.runs, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    print(write_table(args.out), end="")


if __name__ == "__main__":
    main()
