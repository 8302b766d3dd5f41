"""A saliency model's recorded input size: `ser precompute` and `ser predict` warn in one line on data of another
size, stay silent on the same size, and files from before the record still load (and warn about nothing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.model_input import input_record, read_recorded_size, recorded_size
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests.conftest import make_synth


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same network saved as trained at 32x48 and as an old file without the record."""
    torch.manual_seed(0)
    net, root = SaliencyNet("resnet18_reduced"), tmp_path_factory.mktemp("models")
    save_saliency_checkpoint(root / "new.pt", net, "0" * 64, {"input": input_record(32, 48)})
    save_saliency_checkpoint(root / "old.pt", net, "0" * 64, {})
    return {"new": root / "new.pt", "old": root / "old.pt"}


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stderr


def _warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def test_the_record_reads_back(models: dict[str, Path]) -> None:
    assert read_recorded_size(models["new"]) == (32, 48)
    assert read_recorded_size(models["old"]) is None
    assert recorded_size({"input": {"height": "32", "width": 48}}) is None  # a crafted record is ignored


def test_precompute_warns_on_data_of_another_size(models: dict[str, Path], tmp_path: Path) -> None:
    big = make_synth(tmp_path / "big.h5", height=64, width=96, n_classes=2, train_per_class=2, test_per_class=1)
    code, stderr = _cli("precompute", "--model", str(models["new"]), "--data", str(big), "--out",
                        str(tmp_path / "maps.h5"))
    assert code == 0, stderr
    assert _warnings(stderr) == [
        f"warning: {models['new']} was trained on 32x48 images but {big} is 64x96: its maps may be poor; pretrain "
        "at 64x96 (--set data.height=64 --set data.width=96) or use 32x48 images"]


@pytest.mark.parametrize("model", ["new", "old"])
def test_precompute_is_silent_on_the_same_size_or_an_old_file(models: dict[str, Path], tiny_synth: Path,
                                                              tmp_path: Path, model: str) -> None:
    code, stderr = _cli("precompute", "--model", str(models[model]), "--data", str(tiny_synth), "--out",
                        str(tmp_path / "maps.h5"))
    assert code == 0, stderr
    assert _warnings(stderr) == []



def test_import_says_the_size_it_resizes_to(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(root / "examples" / "make_imagefolder.py"), str(tmp_path / "imgs"),
                    "--classes", "2", "--size", "40x60", "--train", "2", "--test", "1"], check=True, timeout=60)
    code, stderr = _cli("data", "import", "imagefolder", str(tmp_path / "imgs"), "--out", str(tmp_path / "own.h5"),
                        "--set", "data.height=32", "--set", "data.width=48", "--workers", "0")
    assert code == 0, stderr
    assert "resizing every image to 32x48 (data.height x data.width;" in stderr


def test_predict_uses_the_recorded_size_and_warns_on_another(models: dict[str, Path], tmp_path: Path) -> None:
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "a.png")
    code, stderr = _cli("predict", str(tmp_path / "a.png"), "--model", str(models["new"]), "--out",
                        str(tmp_path / "same"), "--json")
    assert code == 0 and _warnings(stderr) == [], stderr  # no --size needed: the model says 32x48
    code, stderr = _cli("predict", str(tmp_path / "a.png"), "--model", str(models["new"]), "--out",
                        str(tmp_path / "other"), "--size", "64x96")
    assert code == 0, stderr
    assert len(_warnings(stderr)) == 1 and "trained on 32x48 images but --size is 64x96" in stderr
