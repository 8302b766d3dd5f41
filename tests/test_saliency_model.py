"""The one saliency-model loader (`ser_cli.runs.saliency_model`) and the one `torch.load` (`runtime.torch_file`).

A `ser pretrain-saliency` model.pt, a SER run's model.pt holding the same weights and a TorchScript export of the
same network must give the same maps through the loader, and `ser precompute` must take all three (it refused a
SER run's model.pt that `ser predict` took); `ser train` must refuse a TorchScript oracle as SER's branch.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.continual.learner import build_learner
from ser_cli.data.store import DataFile
from ser_cli.models.normalize import Normalizer
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.run_io import save_run_model
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from ser_cli.runs.saliency_model import load_saliency_model
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.torch_file import read_torch_file
from tests.conftest import seeded_saliency_net
from tests.continual_data import tiny_settings


class MapsOnly(torch.nn.Module):
    """A SaliencyNet as a TorchScript oracle would export it: a batch in, one map per image out."""

    def __init__(self, net: SaliencyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


@pytest.fixture(scope="module")
def three_files(tmp_path_factory: pytest.TempPathFactory, tiny_synth: Path) -> dict[str, Path]:
    """The same seeded network as a pretraining model.pt, as a SER run's branch, and as TorchScript."""
    root, net = tmp_path_factory.mktemp("models"), seeded_saliency_net()
    files = {"pretrain": root / "model.pt", "run": root / "run.pt", "torchscript": root / "oracle.ts"}
    save_saliency_checkpoint(files["pretrain"], net, DataFile(tiny_synth).fingerprint, {})
    settings = tiny_settings(ser=True)
    learner = build_learner(settings, "cpu", copy.deepcopy(net))
    save_run_model(files["run"], learner, settings, ["c"] * settings.n_classes, {"data": str(tiny_synth)})
    torch.jit.trace(MapsOnly(copy.deepcopy(net)).eval(), torch.zeros(1, 3, 32, 48)).save(str(files["torchscript"]))
    return files


def _batch() -> torch.Tensor:
    torch.manual_seed(3)
    return Normalizer("cpu")(torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8))


def test_the_three_kinds_give_the_same_maps_through_one_loader(three_files: dict[str, Path]) -> None:
    x = _batch()
    with torch.inference_mode():
        reference = seeded_saliency_net()(x)[0][:, 0]  # (B, H, W), an independent forward of the same weights
        maps = {kind: load_saliency_model(path).maps(x) for kind, path in three_files.items()}
    for kind, got in maps.items():
        assert got.shape == (2, 32, 48), kind
        assert torch.allclose(got, reference, atol=1e-6), kind
    loaded = {kind: load_saliency_model(path) for kind, path in three_files.items()}
    assert [m.made_by for m in loaded.values()] == ["ser pretrain-saliency", "ser train", "torchscript"]
    assert loaded["torchscript"].net is None and loaded["run"].data is not None


def test_a_torchscript_oracle_cannot_be_sers_branch(three_files: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="a TorchScript model can make SER's targets .* but not be its saliency branch"):
        load_saliency_model(three_files["torchscript"], need_network=True)
    assert load_saliency_model(three_files["run"], need_network=True).net is not None


def test_precompute_takes_a_ser_runs_model_and_writes_the_pretrained_models_maps(
        three_files: dict[str, Path], tiny_synth: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    outs = {}
    for kind in ("pretrain", "run"):
        outs[kind] = tmp_path / f"{kind}.h5"
        result = runner.invoke(app, ["-q", "precompute", "--model", str(three_files[kind]), "--data", str(tiny_synth),
                                     "--out", str(outs[kind]), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    with h5py.File(outs["pretrain"]) as a, h5py.File(outs["run"]) as b:
        for split in ("train", "test"):
            assert np.array_equal(a[split]["maps"][:], b[split]["maps"][:]), split


def test_read_torch_file_errors_are_one_line_each(tmp_path: Path) -> None:
    garbage, fifo = tmp_path / "garbage.pt", tmp_path / "fifo"
    garbage.write_bytes(b"not a checkpoint")
    os.mkfifo(fifo)
    cases = {tmp_path / "none.pt": "--init-from {p}: file not found", garbage: "--init-from {p}: not a readable torch "
             "checkpoint (UnpicklingError)", fifo: "--init-from {p}: not a regular file (a folder, device, FIFO or "
             "socket)", tmp_path: "--init-from {p}: not a regular file (a folder, device, FIFO or socket)"}
    for path, expected in cases.items():
        with pytest.raises(UserError) as err:
            read_torch_file(path, f"--init-from {path}")
        assert str(err.value) == expected.format(p=path)
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(read_torch_file(tmp_path / "ok.pt", mmap=True)["w"], torch.ones(2))
