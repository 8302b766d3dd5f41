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
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from experiments.avalanche.ser_side import METHODS, RUNS_DIR, data_fingerprint, read_protocol, ser_result, ser_run
from experiments.avalanche.strategies import ACE_SWAPS, parse_variant, run_avalanche, variant_name
from experiments.avalanche.table import config_key, config_label, write_table


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
