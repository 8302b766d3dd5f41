"""Shared fixtures: tiny SynthSal files built once per test session (CPU, a few seconds)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ser_cli.config import SynthConfig

if TYPE_CHECKING:
    from ser_cli.models.saliency_net import SaliencyNet


def make_synth(path: Path, **overrides) -> Path:
    """Write a SynthSal file with small defaults (32x48, 4 classes) and return its path."""
    from stages import synth

    base = dict(height=32, width=48, n_classes=4, train_per_class=6, test_per_class=3, seed=0)
    return synth.run(SynthConfig(**{**base, **overrides}), path)


def seeded_saliency_net(seed: int = 0, backbone: str = "resnet18_reduced") -> SaliencyNet:
    """A freshly initialised predictor in eval mode, its BatchNorm statistics moved off their defaults (so a
    command that ignored them, or used train-mode statistics, would give other maps)."""
    import torch

    from ser_cli.models.saliency_net import SaliencyNet

    torch.manual_seed(seed)
    net = SaliencyNet(backbone)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-class, 32x48 SynthSal file (24 train / 12 test images) with maps and fixations."""
    return make_synth(tmp_path_factory.mktemp("synth") / "tiny.h5")


@pytest.fixture(scope="session")
def tiny_synth_pretrain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The disjoint-class pretraining family at the same tiny size."""
    return make_synth(tmp_path_factory.mktemp("synth") / "tiny_pretrain.h5", purpose="pretrain")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread for the whole suite (restored afterwards). The tensors here are tiny; on a 2-core
    machine shared with other processes a second OpenMP thread mostly waits at barriers (runs were 10x slower),
    and the subprocess tests run with OMP_NUM_THREADS=1, so in-process and subprocess runs stay bit-comparable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in its own folder, so the CLI never picks up the checkout's params.yaml or outputs
    (a checkout where `make demo` ran has models/saliency/model.pt, which params.yaml points at)."""
    monkeypatch.chdir(tmp_path)


def pytest_configure(config: pytest.Config) -> None:
    # registered here rather than in pyproject.toml, whose every change makes `make` reinstall the venv
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped without one (gpu-check runs them)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA device: without one they are skipped with that reason, so that the GPU check
    (`python -m benchmarks gpu-check`, which runs `pytest -m cuda`) and CI both say what did not run."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def saliency_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained reduced-ResNet-18 saliency checkpoint (seed 0): what SER starts from in the train tests."""
    import torch

    from ser_cli.models.saliency_net import SaliencyNet
    from ser_cli.runs.saliency_file import save_saliency_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sal") / "model.pt"
    save_saliency_checkpoint(path, SaliencyNet("resnet18_reduced"), "fingerprint-of-pretraining-data", {})
    return path
