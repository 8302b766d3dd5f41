"""One configuration of the train-step benchmark, measured in this process (`benchmarks.train_step` starts one
process per configuration, so that the peak resident set belongs to that configuration alone).

The step is the shipped one: `TrainSettings` -> `build_learner` -> `build_method`, then per step the loop's public
`ser_cli.continual.loop.train_step` (what `ContinualTrainer` runs for every batch): move the loader's batch to the
device, `method.observe`, pop the learner's diagnostics, one host synchronisation over the losses. The method is in its
second task (ER-ACE replays only from task 1) and its reservoir buffer is full of random uint8 images, labels of
the first task and, for DER / DER++, random logits, so every step makes all its replay draws. Timed steps follow
the warm-up steps; FLOPs are counted afterwards on one more step (`torch.utils.flop_counter`, convolutions and
matrix products, forward and backward), then the same process measures its matmul peak (NxN, best of k) and the
best forward + backward rate among the network's 3x3 convolutions at the step's size (`compute_peaks`).

Run by hand: `python -m benchmarks.train_step_worker '{"method": "derpp", "ser": true, "height": 32, "width": 48}'`
prints one JSON object (see `benchmarks/RESULTS.md` for the fields).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass
from statistics import median
from typing import Any

import torch
from torch import Tensor

from benchmarks.compute_peaks import conv_peak, conv_shapes, counted_flops, matmul_peak, sync
from ser_cli.continual.learner import Learner, build_learner
from ser_cli.continual.loop import train_step as loop_train_step
from ser_cli.continual.methods import Method, build_method
from ser_cli.continual.settings import TrainSettings
from ser_cli.runtime.allocator import tune_memory
from ser_cli.runtime.device import memory_format_for, resolve_device, use_bf16
from ser_cli.runtime.seeding import seed_everything

PAGE = os.sysconf("SC_PAGE_SIZE")
FILL_CHUNK = 256  # images per `buffer.add` while filling


@dataclass(frozen=True)
class StepConfig:
    """What one measurement runs (defaults: the paper's batch 8, draws of 8, buffer 2000 and 20 tasks x 5 classes;
    the demo's size and backbone)."""

    method: str = "derpp"
    ser: bool = True
    backbone: str = "resnet18_reduced"
    height: int = 32
    width: int = 48
    device: str = "cpu"
    warmup: int = 2
    steps: int = 5
    batch_size: int = 8
    minibatch_size: int = 8
    buffer_size: int = 2000
    n_tasks: int = 20
    classes_per_task: int = 5
    matmul_n: int = 4096
    peak_repeats: int = 3
    threads: int = 0  # 0: torch's default
    memory_tuning: bool = True  # keep freed memory mapped, as `ser` does unless --no-memory-tuning
    allocator: str = "auto"  # auto (what `ser` preloads), glibc (mallopt alone), tcmalloc or mimalloc (preloaded)
    activation_checkpointing: bool = False  # recompute the classifier's blocks in the backward
    memory_format: str = "auto"  # train.memory_format: auto, channels_last or contiguous
    compile: bool = False  # train.compile: torch.compile the classifier and the saliency network (warm-up compiles)
    figures: bool = True  # FLOPs and the matmul / convolution peaks (off: --memory-only, time and memory alone)

    def settings(self) -> TrainSettings:
        """The run's settings, diagnostics off (they run every 25th step in `ser train`; here they would make one
        timed step in 25 an outlier)."""
        return TrainSettings(
            method=self.method,
            ser=self.ser,
            backbone=self.backbone,
            n_tasks=self.n_tasks,
            classes_per_task=self.classes_per_task,
            batch_size=self.batch_size,
            minibatch_size=self.minibatch_size,
            buffer_size=self.buffer_size,
            diagnostics_every=0,
            # only when on: the benchmark also measures earlier versions of the package, which lack the key
            **({"activation_checkpointing": True} if self.activation_checkpointing else {}),
            **({"memory_format": self.memory_format} if self.memory_format != "auto" else {}),
            **({"compile": True} if self.compile else {}),
        )


# ------------------------------------------------------------------------------------------------- the step


def train_step(method: Method, learner: Learner, batch: tuple[Tensor, Tensor, Tensor], device: torch.device) -> dict:
    """One `ser train` step on a loader batch: the loop's own public step (`ser_cli.continual.loop.train_step`);
    `device` is where the learner lives (the step moves the batch there)."""
    return loop_train_step(method, learner, *batch)


def random_batch(cfg: StepConfig, task: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """A loader-like CPU batch of task `task`: uint8 images, maps summing to 1, labels."""
    b, h, w = cfg.batch_size, cfg.height, cfg.width
    images = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=generator)  # (B, 3, H, W)
    maps = torch.rand((b, h, w), generator=generator) + 1e-3  # (B, H, W)
    labels = task * cfg.classes_per_task + torch.randint(0, cfg.classes_per_task, (b,), generator=generator)
    return images, maps / maps.sum(dim=(1, 2), keepdim=True), labels


def fill_buffer(method: Method, cfg: StepConfig, generator: torch.Generator) -> None:
    """Fill every slot of the method's reservoir with first-task samples, through `buffer.add`."""
    buffer = method.buffer
    n_classes = cfg.n_tasks * cfg.classes_per_task
    while buffer.filled < buffer.capacity:
        n = min(FILL_CHUNK, buffer.capacity - buffer.filled)
        images = torch.randint(0, 256, (n, 3, cfg.height, cfg.width), dtype=torch.uint8, generator=generator)
        labels = torch.randint(0, cfg.classes_per_task, (n,), generator=generator)
        logits = torch.randn((n, n_classes), generator=generator) if method.stores_logits else None
        buffer.add(images, labels, task=0, logits=logits)


def build(cfg: StepConfig, device: torch.device) -> tuple[TrainSettings, Learner, Method]:
    """The learner and method `ser train` builds for these settings, in the second task, buffer full."""
    settings = cfg.settings()
    seed_everything(settings.seed)
    learner = build_learner(settings, device)
    method = build_method(settings.method, learner, settings, (3, cfg.height, cfg.width))
    method.before_task(1)
    learner.train(True)
    if method.buffer is not None:
        fill_buffer(method, cfg, torch.Generator().manual_seed(1))
    return settings, learner, method


# ------------------------------------------------------------------------------------------------ measuring


def rss_bytes() -> int:
    """Resident set of this process now (`/proc/self/statm`, second field, in pages)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def timed_steps(cfg: StepConfig, method: Method, learner: Learner, device: torch.device) -> dict[str, list]:
    """Warm-up, then the measured steps: wall seconds, user / sys CPU seconds, minor faults, RSS after each."""
    generator = torch.Generator().manual_seed(2)
    batches = [random_batch(cfg, 1, generator) for _ in range(cfg.warmup + cfg.steps)]
    for batch in batches[: cfg.warmup]:
        train_step(method, learner, batch, device)
    out: dict[str, list] = {k: [] for k in ("seconds", "user", "sys", "minor_faults", "rss", "finite")}
    for batch in batches[cfg.warmup :]:
        sync(device)
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        losses = train_step(method, learner, batch, device)
        sync(device)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        out["seconds"].append(seconds)
        out["user"].append(after.ru_utime - before.ru_utime)
        out["sys"].append(after.ru_stime - before.ru_stime)
        out["minor_faults"].append(after.ru_minflt - before.ru_minflt)
        out["rss"].append(rss_bytes())
        out["finite"].append(all(v == v and abs(v) != float("inf") for v in losses.values()))
    return out


# ------------------------------------------------------------------------------------------------ the record


def measure(cfg: StepConfig) -> dict[str, Any]:
    """Every figure of one configuration (see `benchmarks/RESULTS.md`)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tuned = tune_memory() if cfg.memory_tuning else "none"  # tcmalloc (preloaded by run_config), glibc or none
    device = resolve_device(cfg.device)
    rss_at_start = rss_bytes()  # the interpreter, torch and its libraries: what no setting can save
    settings, learner, method = build(cfg, device)
    steps = timed_steps(cfg, method, learner, device)
    rss = steps.pop("rss")
    memory = {
        "rss_bytes_at_start": rss_at_start,
        "rss_bytes_per_step": rss,
        # ru_maxrss before the peaks below; the kernel folds per-thread RSS counters in lazily, so it can trail
        # the last statm reading by a few pages
        "peak_rss_bytes": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, *rss),
        "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "buffer_bytes": method.buffer.nbytes if method.buffer is not None else 0,
    }
    bf16 = use_bf16(settings.precision, device)
    step = median(steps["seconds"])
    user, sys_ = median(steps["user"]), median(steps["sys"])
    return {
        "config": {
            **asdict(cfg),
            "device": str(device),
            "device_name": device_name(device),
            "threads": torch.get_num_threads(),
            "precision": "bf16" if bf16 else "fp32",
            "n_classes": settings.n_classes,
            "torch": torch.__version__,
            "memory_tuning_applied": tuned,
        },
        "step_seconds": {
            "median": step,
            "min": min(steps["seconds"]),
            "max": max(steps["seconds"]),
            "all": steps["seconds"],
        },
        **(compute_figures(cfg, method, learner, device, step, bf16) if cfg.figures else {}),
        "cpu_seconds_per_step": {
            "user": user,
            "sys": sys_,
            "sys_share": sys_ / max(user + sys_, 1e-9),
            "user_all": steps["user"],
            "sys_all": steps["sys"],
        },
        "minor_faults_per_step": median(steps["minor_faults"]),
        **memory,
        "losses_finite": all(steps["finite"]),
    }


def compute_figures(cfg: StepConfig, method: Method, learner: Learner, device: torch.device, step: float,
                    bf16: bool) -> dict[str, Any]:
    """FLOPs of one more step, the achieved rate, and this process's matmul and convolution peaks."""
    batch = random_batch(cfg, 1, torch.Generator().manual_seed(3))
    flops, conv_flops = counted_flops(lambda: train_step(method, learner, batch, device))
    matmul = matmul_peak(cfg.matmul_n, torch.bfloat16 if bf16 else torch.float32, device, cfg.peak_repeats)
    memory_format = memory_format_for(cfg.memory_format, "bf16" if bf16 else "fp32", device)  # as `build_learner`
    specs = conv_shapes(learner.classifier, cfg.height, cfg.width, device)
    conv = conv_peak(
        specs, cfg.batch_size, device, cfg.peak_repeats, autocast=learner.autocast, memory_format=memory_format
    )
    achieved = flops / step / 1e9
    return {
        "flop_per_step": flops,
        "conv_flop_per_step": conv_flops,
        "gflop_per_s": achieved,
        "matmul_peak": matmul,
        "conv_peak": conv,
        "fraction_of_matmul_peak": achieved / matmul["gflop_per_s"],
        "fraction_of_conv_peak": achieved / conv["gflop_per_s"],
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "cpu")
    return f"{model} ({os.cpu_count()} cores)"


def main(argv: list[str]) -> None:
    print(json.dumps(measure(StepConfig(**json.loads(argv[0])))))


if __name__ == "__main__":
    main(sys.argv[1:])
