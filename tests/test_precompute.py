"""`ser precompute`: predicted maps vs an independent forward pass, kill -9 resume, torchrun sharding, --from-dataset,
metrics, and one-line errors for bad inputs."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.data.maps import FROM_DATASET, MapsFile
from ser_cli.data.maps_work import work_path
from ser_cli.data.store import DataFile
from ser_cli.data.writer import StoreWriter
from ser_cli.models import SaliencyNet
from ser_cli.runs.saliency_file import file_sha256, save_saliency_checkpoint
from tests import faults
from tests.conftest import seeded_saliency_net

BATCH = ["--set", "precompute.batch_size=4"]  # 36 rows -> 9 batches
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised resnet18_reduced predictor, with BN statistics moved off their defaults."""
    net = seeded_saliency_net()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_saliency_checkpoint(path, net, "0" * 64, {})
    return path


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def _command(model: Path, data: Path, out: Path) -> list[str]:
    return ["precompute", "--model", str(model), "--data", str(data), "--out", str(out), *BATCH]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_synth: Path, model: Path) -> Path:
    """One uninterrupted, one-process run."""
    out = tmp_path_factory.mktemp("ref") / "maps.h5"
    code, stdout, stderr = _cli(*_command(model, tiny_synth, out))
    assert code == 0, stderr
    assert stdout.strip() == str(out)
    return out


def _direct_forward(model: Path, images: np.ndarray) -> np.ndarray:
    """Independent path: ImageNet normalisation by hand, one batch, float64 quantisation in numpy."""
    payload = torch.load(model, weights_only=True)
    net = SaliencyNet(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (images / 255.0 - mean) / std  # (N, H, W, 3)
    with torch.no_grad():
        pred, _ = net.eval()(torch.from_numpy(x).permute(0, 3, 1, 2).float())  # (N, 1, H, W)
    return pred[:, 0].double().numpy()


def test_maps_equal_a_direct_forward(reference: Path, tiny_synth: Path, model: Path) -> None:
    maps = MapsFile(reference)
    assert maps.model_sha256 == file_sha256(model)
    maps.check_matches(DataFile(tiny_synth))
    with h5py.File(tiny_synth, "r") as h5:
        for split in ("train", "test"):
            pred = _direct_forward(model, h5[split]["images"][:])  # (N, H, W)
            expected = np.round(pred / pred.max(axis=(1, 2), keepdims=True) * 255)
            stored = maps.read(split).astype(np.float64)
            assert np.abs(stored - expected).max() <= 1  # float summation order may flip a .5
            assert (stored == expected).mean() > 0.99
            peak = pred.reshape(len(pred), -1).argmax(1)
            assert (stored.reshape(len(pred), -1)[np.arange(len(pred)), peak] == 255).all()
            assert stored.std(axis=(1, 2)).min() > 1  # not constant maps


def test_metrics_against_numpy(reference: Path, tiny_synth: Path) -> None:
    metrics = json.loads(reference.with_suffix(".metrics.json").read_text())
    assert metrics["n_maps"] == 36 and metrics["maps_per_second"] > 0
    ccs, sims, klds = [], [], []
    with h5py.File(tiny_synth, "r") as h5:
        for split in ("train", "test"):
            pred, truth = MapsFile(reference).read(split).astype(np.float64), h5[split]["maps"][:].astype(np.float64)
            for p, q in zip(pred, truth, strict=True):
                ccs.append(np.corrcoef(p.ravel(), q.ravel())[0, 1])
                p01, q01 = (p - p.min()) / np.ptp(p), (q - q.min()) / np.ptp(q)  # MIT similarity.m
                sims.append(np.minimum(p01 / p01.sum(), q01 / q01.sum()).sum())
                eps = np.finfo(np.float64).eps  # MIT KLdiv.m
                klds.append((q / q.sum() * np.log(eps + (q / q.sum()) / (p / p.sum() + eps))).sum())
    assert metrics["cc"] == pytest.approx(np.mean(ccs), abs=1e-5)
    assert metrics["sim"] == pytest.approx(np.mean(sims), abs=1e-5)
    assert metrics["kld"] == pytest.approx(np.mean(klds), rel=1e-4)
    assert {"kld", "train_cc", "test_cc", "train_kld", "test_sim"} <= set(metrics)


def _done_rows(partial: Path) -> int:
    """Rows committed so far, read while another process writes (a torn read counts as 0)."""
    try:
        with h5py.File(partial, "r", locking=False) as h5:
            return int(h5["train/done"][:].sum() + h5["test/done"][:].sum())
    except Exception:  # noqa: BLE001 - the writer may be mid-flush
        return 0


def _run_ser(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ser_cli", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_then_resume_gives_identical_file(
    tmp_path: Path, reference: Path, tiny_synth: Path, model: Path
) -> None:
    out = tmp_path / "maps.h5"
    proc = subprocess.Popen(faults.command("batch-delay", 0.4, *_command(model, tiny_synth, out)), cwd=ROOT,
                            env=faults.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while _done_rows(work_path(out)) < 8 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _done_rows(work_path(out))
    assert proc.returncode == -signal.SIGKILL and 8 <= done < 36 and not out.exists()
    (tmp_path / "maps.h5.ser-work.rank1of3.partial").write_bytes(b"left by a killed 3-process run")
    resumed = _run_ser(_command(model, tiny_synth, out))
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "resuming" in stderr
    assert filecmp.cmp(out, reference, shallow=False)
    # no work files left (the headline: `ser_cli.metrics.headline`)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.h5", "maps.metrics.headline.json", "maps.metrics.json"]


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path: Path, reference: Path, tiny_synth: Path, model: Path) -> None:
    out = tmp_path / "maps.h5"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "ser_cli",
        *_command(model, tiny_synth, out),
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)  # only rank 0 reports
    assert filecmp.cmp(out, reference, shallow=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.h5", "maps.metrics.headline.json", "maps.metrics.json"]


def test_from_dataset_copies_the_data_maps(tmp_path: Path, tiny_synth: Path) -> None:
    out = tmp_path / "gt.h5"
    code, _, stderr = _cli(
        "precompute",
        "--from-dataset",
        "--data",
        str(tiny_synth),
        "--out",
        str(out),
        "--set",
        "precompute.compression=lzf",
        "--set",
        "precompute.workers=2",  # DataLoader worker processes open the data file lazily
        "--metrics",
        str(tmp_path / "m.json"),
    )
    assert code == 0, stderr
    maps = MapsFile(out)
    assert maps.model_sha256 == FROM_DATASET and maps.compression == "lzf"
    maps.check_matches(DataFile(tiny_synth))
    with h5py.File(tiny_synth, "r") as h5:
        for split in ("train", "test"):
            np.testing.assert_array_equal(maps.read(split), h5[split]["maps"][:])
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["cc"] == pytest.approx(1.0) and metrics["kld"] == pytest.approx(0.0, abs=1e-9)


@pytest.fixture(scope="module")
def no_maps(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-row data file without saliency maps."""
    writer = StoreWriter(
        tmp_path_factory.mktemp("nomaps") / "plain.h5",
        height=32,
        width=48,
        class_names=["a", "b"],
        provenance={"test": True},
    )
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3), dtype=np.uint8)
    for split in ("train", "test"):
        writer.create_split(split, 2)
        writer.write_rows(split, np.arange(2), images, np.array([0, 1]))
    return writer.finalize()


def test_bad_inputs_exit_2_with_one_line(
    tmp_path: Path, tiny_synth: Path, model: Path, no_maps: Path, reference: Path
) -> None:
    garbage, plain = tmp_path / "garbage.pt", tmp_path / "plain.h5"
    garbage.write_bytes(b"not a checkpoint")
    with h5py.File(plain, "w") as h5:
        h5["x"] = np.zeros(3)
    out = str(tmp_path / "out.h5")
    cases = {
        "saliency checkpoint not found": ["--model", str(tmp_path / "nope.pt"), "--data", str(tiny_synth)],
        "not a readable torch checkpoint": ["--model", str(garbage), "--data", str(tiny_synth)],
        "no schema_version attribute": ["--model", str(model), "--data", str(plain)],
        "is a 'ser-maps' file, expected 'ser-dataset'": ["--model", str(model), "--data", str(reference)],
        "holds no saliency maps to copy": ["--from-dataset", "--data", str(no_maps)],
        "give exactly one of --model": ["--data", str(tiny_synth)],
        "exactly one of --model FILE": ["--model", str(model), "--from-dataset", "--data", str(tiny_synth)],
        "is the input --data": ["--from-dataset", "--data", str(tiny_synth), "--out", str(tiny_synth)],
        "--out": ["--model", str(model), "--data", str(tiny_synth), "--out", str(model)],
        "--metrics": ["--from-dataset", "--data", str(tiny_synth), "--metrics", str(tiny_synth)],
    }
    for expected, args in cases.items():
        code, stdout, stderr = _cli("precompute", *args, *(["--out", out] if "--out" not in args else []))
        assert code == 2, (expected, stderr)
        assert stderr.startswith("error: ") and expected in stderr and stderr.count("\n") == 1, stderr
    assert not Path(out).exists()
