"""`torchrun` on the CPU (gloo, 2 processes): DDP saliency pretraining and sharded evaluation against one process.

Each torchrun launch is `python -m torch.distributed.run --standalone --nproc_per_node=2 -m -- tests.faults ...`
(faults as in the kill matrix; none is a plain `ser`). One-process runs are forked from the test process
(`faults.run_forked`).

What is compared, and why it must hold:
- DDP with 2 x batch 4 against one process with batch 8, bit for bit up to float64 rounding: rank r's b-th batch is
  positions r, r+2, ... of the rows of one process's b-th batch (`runtime.distributed.sampler_share`), DDP averages
  the two ranks' gradients of their mean losses (the gradient of the mean over 8 images), synchronised BatchNorm
  (`saliency.sync_bn`) takes the statistics of the 8 images, and the skip branches' dropout is off (each rank draws
  its own masks, so with dropout the runs are different samples of the same training). In float64 (`float64`
  fault), because in float32 this tiny network amplifies rounding: its deepest BatchNorm layers see a handful of
  values per channel, and weights perturbed by 1e-7 already move the loss by 1e-3 within 6 steps (measured).
- A 2-process run SIGKILLed mid-epoch and rerun equals the uninterrupted 2-process run exactly (dropout on, plain
  BatchNorm: every rank's RNG state and epoch sums come back from the checkpoint), and a one-process rerun of the
  interrupted folder is refused in one line (exit 2).
- `ser evaluate` on 2 processes equals one process exactly (measured rates aside): same batches, per-image PGD starts,
  per-batch sums folded in batch order on rank 0; rank 1 writes nothing.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests import faults

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TRAIN_EPOCH = "ser_cli.saliency.saliency_trainer.SaliencyTrainer.train_epoch"
NO_DROPOUT = ("set-attr", "ser_cli.models.saliency_net.SKIP_DROPOUT", "0.0")
# conftest's pretraining file: 22 training rows, 11 per rank: 3 steps per epoch (4, 4, 3 per rank; 8, 8, 6 in one)
PRETRAIN = {"epochs": 2, "lr": 0.05, "checkpoint_every": 2, "precise_bn_batches": 2}


def _sets(section: str, **values: object) -> list[str]:
    return [x for key, value in values.items() for x in ("--set", f"{section}.{key}={value}")]


def _torchrun(args: list[str], cwd: Path, *fault: str) -> subprocess.CompletedProcess:
    # `--` ends torchrun's options: its parser would take `evaluate --run` for an abbreviation of its `--run-path`
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "--",
           "tests.faults", *fault, "-q", *args]
    return subprocess.run(cmd, cwd=cwd, env=faults.env(), capture_output=True, text=True, timeout=300)


def _one(args: list[str], cwd: Path, *fault: str) -> tuple[int, str]:
    log = cwd / "one.log"
    code = faults.run_forked([*fault, "-q", *args], cwd=cwd, log=log)
    return code, log.read_text()


def _pretrain_args(data: Path, out: Path, **values: object) -> list[str]:
    return ["pretrain-saliency", "--data", str(data), "--out", str(out), "--device", "cpu",
            *_sets("saliency", **{**PRETRAIN, **values})]


def _measured(key: str) -> bool:
    return "seconds" in key or "per_second" in key


def _log(run: Path) -> list[dict[str, float]]:
    with open(run / "train_log.csv") as f:
        return [{k: float(v) for k, v in row.items() if not _measured(k)} for row in csv.DictReader(f)]


def _metrics(folder: Path) -> dict[str, float]:
    return {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if not _measured(k)}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["state_dict"]


def _sync_bn_rank(rank: int, store: str) -> None:
    """Rank `rank` of 2: SyncBatchNorm2d on its half of a batch against BatchNorm2d on the whole (float64)."""
    import torch.distributed as dist
    from torch import nn

    from ser_cli.runtime.sync_batchnorm import convert_sync_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 6, 3, 5, 7, generator=g, dtype=torch.float64)  # (6, 3, 5, 7) each: input, loss weights
    ref = nn.Sequential(nn.BatchNorm2d(3, momentum=None)).double()
    ref[0].weight.data.uniform_(0.5, 1.5, generator=g)
    ref[0].bias.data.uniform_(-1, 1, generator=g)
    sync = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3, momentum=None)).double())
    sync.load_state_dict(ref.state_dict())
    whole, half = x.clone().requires_grad_(True), x[3 * rank : 3 * rank + 3].clone().requires_grad_(True)
    (ref(whole) * w).sum().backward()
    (sync(half) * w[3 * rank : 3 * rank + 3]).sum().backward()  # the two halves' losses add up to the whole's
    torch.testing.assert_close(half.grad, whole.grad[3 * rank : 3 * rank + 3], rtol=1e-12, atol=1e-12)
    for name, p in (("weight", sync[0].weight), ("bias", sync[0].bias)):
        total = p.grad.clone()
        dist.all_reduce(total)  # what DDP does (then divides by 2 for the mean of the two ranks' losses)
        torch.testing.assert_close(total, getattr(ref[0], name).grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sync[0].running_mean, ref[0].running_mean, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sync[0].running_var, ref[0].running_var, rtol=1e-12, atol=1e-14)  # unbiased, n = 210
    sync.eval()
    torch.testing.assert_close(sync(x), ref.eval()(x))  # outside training: plain BatchNorm
    dist.destroy_process_group()


def test_sync_batchnorm_equals_batchnorm_on_the_union(tmp_path: Path) -> None:
    """Forward statistics, input and parameter gradients and running statistics of 2 ranks x 3 images equal plain
    BatchNorm on the 6 images (gloo, spawned processes, float64)."""
    import torch.multiprocessing as mp

    mp.spawn(_sync_bn_rank, args=(str(tmp_path / "store"),), nprocs=2)


def test_ddp_pretraining_equals_one_process_with_the_doubled_batch(tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    args = {"sync_bn": "true", "checkpoint_every": 0}
    ddp = _torchrun(_pretrain_args(tiny_synth_pretrain, tmp_path / "ddp", batch_size=4, **args), tmp_path,
                    *NO_DROPOUT, "float64")
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.splitlines()[0] == str(tmp_path / "ddp" / "model.pt")  # rank 0 alone reports
    code, log = _one(_pretrain_args(tiny_synth_pretrain, tmp_path / "one", batch_size=8, **args), tmp_path,
                     *NO_DROPOUT, "float64")
    assert code == 0, log
    one, two = _log(tmp_path / "one"), _log(tmp_path / "ddp")
    assert [r["epoch"] for r in two] == [1, 2] and two[1]["loss"] < two[0]["loss"]  # it learns
    for a, b in zip(one, two, strict=True):
        assert b == pytest.approx(a, rel=1e-5)  # the log's 6 significant digits
    assert _metrics(tmp_path / "ddp") == pytest.approx(_metrics(tmp_path / "one"), rel=1e-10)
    ref, got = _weights(tmp_path / "one"), _weights(tmp_path / "ddp")
    for name in ref:  # BatchNorm statistics included: precise BN over the two ranks' batches together
        torch.testing.assert_close(got[name], ref[name], rtol=1e-9, atol=1e-12, msg=name)
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())


def test_ddp_sigkill_then_rerun_equals_uninterrupted(tiny_synth_pretrain: Path, tmp_path: Path) -> None:
    ref = _torchrun(_pretrain_args(tiny_synth_pretrain, tmp_path / "ref", batch_size=4), tmp_path)
    assert ref.returncode == 0, ref.stderr
    # Rank 0 alone, once it has written the checkpoint of step 2 of 3; rank 1 then waits in step 3's gradient
    # all-reduce. Killing both ranks raced: rank 1's death made torchrun stop rank 0 while it wrote checkpoint.pt.
    killed = _torchrun(_pretrain_args(tiny_synth_pretrain, tmp_path / "run", batch_size=4), tmp_path,
                       "on-rank", "0", "kill-after-calls", TRAIN_EPOCH, "2")
    assert killed.returncode != 0 and f"Signal {int(signal.SIGKILL)} (SIGKILL)" in killed.stderr, killed.stderr
    assert not (tmp_path / "run" / "model.pt").exists() and (tmp_path / "run" / "checkpoint.pt").is_file()

    shutil.copytree(tmp_path / "run", tmp_path / "alone")
    code, log = _one(_pretrain_args(tiny_synth_pretrain, tmp_path / "alone", batch_size=4), tmp_path)
    lines = [line for line in log.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, log
    assert "checkpoint.pt: left by an interrupted run on 2 process(es), now 1;" in lines[0]

    redone = tmp_path / "redone.txt"
    again = _torchrun(_pretrain_args(tiny_synth_pretrain, tmp_path / "run", batch_size=4), tmp_path,
                      "count-calls", TRAIN_EPOCH, str(redone))
    assert again.returncode == 0, again.stderr
    assert len(redone.read_text().splitlines()) == 2 * (6 - 2), "the rerun did not resume (2 ranks, 4 steps each)"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in (tmp_path / "ref").iterdir())
    ref_w, run_w = _weights(tmp_path / "ref"), _weights(tmp_path / "run")
    assert all(torch.equal(ref_w[k], run_w[k]) for k in ref_w)
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")
    assert _log(tmp_path / "run") == _log(tmp_path / "ref")


@pytest.fixture(scope="module")
def trained_run(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny DER++ + SER run (2 tasks of 2 classes) on conftest's file, with its own maps as SER targets."""
    from ser_cli.models import SaliencyNet
    from ser_cli.runs.saliency_file import save_saliency_checkpoint

    root = tmp_path_factory.mktemp("ddp_eval")
    torch.manual_seed(0)
    save_saliency_checkpoint(root / "sal.pt", SaliencyNet("resnet18_reduced").eval(), "untrained", {})
    code, log = _one(["train", "--data", str(tiny_synth), "--out", str(root / "run"), "--method", "derpp", "--ser",
                      "--device", "cpu", *_sets("train", n_tasks=2, classes_per_task=2, buffer_size=8,
                                                saliency_checkpoint=root / "sal.pt")], root)
    assert code == 0, log
    return root / "run"


def test_sharded_evaluate_equals_one_process_exactly(trained_run: Path, tiny_synth: Path, tmp_path: Path) -> None:
    # 12 test images in batches of 4 (ranks: batches 0, 2 and 1); 8 attacked, in 2 batches (one per rank)
    fast = ["--device", "cpu", *_sets("evaluate", batch_size=4, attack_images=8, pgd_steps=2,
                                      epsilons="[2/255,8/255]")]
    args = ["evaluate", "--run", str(trained_run), "--data", str(tiny_synth), *fast]
    ddp = _torchrun([*args, "--out", str(tmp_path / "two")], tmp_path)
    assert ddp.returncode == 0, ddp.stderr
    assert ddp.stdout.strip() == str(tmp_path / "two")  # rank 0 alone reports
    code, log = _one([*args, "--out", str(tmp_path / "one")], tmp_path)
    assert code == 0, log
    one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert two == one  # exactly: same images, same batches, same attack starts, sums folded in the same order
    assert one["test_images"] == 12 and one["attack_images"] == 8 and "saliency_cc" in one
    assert 0 < one["clean_acc"] and "pgd_acc_eps_8" in one
    for table in ("robustness.csv", "avg_accuracy.csv", "accuracy_matrix.csv"):
        assert (tmp_path / "one" / "plots" / table).read_text() == (tmp_path / "two" / "plots" / table).read_text()
    listing = sorted(str(p.relative_to(tmp_path / "one")) for p in (tmp_path / "one").rglob("*"))
    assert listing == sorted(str(p.relative_to(tmp_path / "two")) for p in (tmp_path / "two").rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "one.log", "two"]  # no staging folder left
