"""`ser predict`: maps vs an independent forward pass at each image's own size, folder / glob expansion, name
collisions, bad images skipped with exit 1, a run's saliency branch, `--h5`, and one-line errors for user mistakes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.continual.learner import build_learner
from ser_cli.data.image_files import output_names
from ser_cli.data.store import DataFile
from ser_cli.models import SaliencyNet
from ser_cli.runs.run_io import save_run_model
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests.conftest import seeded_saliency_net
from tests.continual_data import tiny_settings

H, W = 32, 48  # the model's input size
SIZE = ["--size", f"{H}x{W}"]
# (relative path, height, width): model-sized, larger and odd-sized, smaller than the model, a repeated stem
IMAGES = [("a/img.jpg", 37, 50), ("a/deep/big.png", 70, 90), ("b/img.png", H, W), ("b/small.png", 20, 24)]


@pytest.fixture(scope="module")
def net() -> SaliencyNet:
    """A seeded resnet18_reduced predictor with BN statistics moved off their defaults."""
    return seeded_saliency_net()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, net: SaliencyNet) -> Path:
    """A `ser pretrain-saliency` checkpoint that names no training data (so --size is needed)."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_saliency_checkpoint(path, net, "0" * 64, {})
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smooth random images (JPEG and PNG) of several sizes, plus a hidden file and a text file to skip."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for rel, h, w in IMAGES:
        coarse = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(coarse).resize((w, h), Image.Resampling.BILINEAR).save(root / rel)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / ".hidden.png")
    (root / "b" / "notes.txt").write_text("not an image")
    return root


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["predict", *args])
    return result.exit_code, result.stdout, result.stderr


def _expected_map(net: SaliencyNet, path: Path) -> np.ndarray:
    """Independent path: PIL LANCZOS to the model size, ImageNet normalisation in numpy, forward, PIL bilinear back
    to the image's size in float, scaled to 255 at the maximum."""
    image = Image.open(path).convert("RGB")
    x = np.asarray(image.resize((W, H), Image.Resampling.LANCZOS)) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])  # (H, W, 3)
    with torch.no_grad():
        pred = net(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0][0, 0].double().numpy()  # (H, W)
    back = np.asarray(Image.fromarray(pred.astype(np.float32), "F").resize(image.size, Image.Resampling.BILINEAR))
    back = np.clip(back.astype(np.float64), 0, None)
    return np.round(back / back.max() * 255)


def test_maps_equal_an_independent_forward_at_each_image_size(images: Path, model: Path, net: SaliencyNet,
                                                              tmp_path: Path) -> None:
    code, stdout, stderr = _cli(str(images), "--model", str(model), "--out", str(tmp_path / "out"), *SIZE,
                                "--batch-size", "3", "--json")
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["images"], summary["written"], summary["skipped"]) == (4, 4, 0)
    for entry in summary["maps"]:
        source = Image.open(entry["image"])
        grey = Image.open(entry["map"])
        assert grey.mode == "L" and grey.size == source.size  # the image's own size, e.g. 50x37
        expected = _expected_map(net, Path(entry["image"]))
        stored = np.asarray(grey).astype(np.float64)
        assert np.abs(stored - expected).max() <= 1, entry["image"]
        assert stored.max() == 255 and stored.std() > 1
        overlay = np.asarray(Image.open(entry["overlay"])).astype(int)
        assert overlay.shape == (source.size[1], source.size[0], 3)
        plain = np.asarray(source.convert("RGB")).astype(int)
        assert (overlay[stored == 0] == plain[stored == 0]).all()  # no saliency: the image as it is
        assert np.abs(overlay - plain)[stored == 255].mean() > 10  # the peak is coloured


def test_folders_globs_and_names_that_collide(images: Path, model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _cli(str(images / "a"), str(images / "b" / "*.png"), str(images / "a" / "img.jpg"),
                                "--model", str(model), "--out", str(out), *SIZE, "--json", "-q")
    assert code == 0, stderr
    found = [(Path(m["image"]).relative_to(images).as_posix(), Path(m["map"]).name)
             for m in json.loads(stdout)["maps"]]
    # folder recursive and sorted, then the pattern's matches sorted; the repeated file counted once
    assert found == [("a/deep/big.png", "big.png"), ("a/img.jpg", "a__img.png"), ("b/img.png", "b__img.png"),
                     ("b/small.png", "small.png")]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".ser-output.json"] + [f"{n}{s}.png" for n in ("big", "a__img", "b__img", "small") for s in ("", "_overlay")])


def test_output_names_never_share_a_file() -> None:
    paths = [Path("p/x.jpg"), Path("p/x.png"), Path("p/y.jpg"), Path("p/y_overlay.jpg"), Path("q/sub/x.jpg")]
    names = output_names(paths)
    assert names == ["p__x", "p__x_png", "y", "y_overlay_jpg", "q__sub__x"]
    files = [f"{n}{s}.png" for n in names for s in ("", "_overlay")]
    assert len(set(files)) == len(files)


def test_bad_images_are_skipped_with_one_line_each_and_exit_1(images: Path, model: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    good = (images / "a" / "img.jpg").read_bytes()
    (src / "good.jpg").write_bytes(good)
    (src / "cut.jpg").write_bytes(good[: len(good) // 3])  # truncated JPEG
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("hello")
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(src / "deep.png")  # 16-bit greyscale
    out = tmp_path / "out"
    code, stdout, stderr = _cli(str(src), "--model", str(model), "--out", str(out), *SIZE, "-q")
    lines = stderr.strip().splitlines()
    assert code == 1 and stdout.strip() == str(out)
    assert len(lines) == 4 and all(line.startswith(f"skipped {src}") for line in lines), stderr
    assert "Traceback" not in stderr and "unsupported image mode I;16" in stderr
    assert sorted(p.name for p in out.glob("*.png")) == ["good.png", "good_overlay.png"]


def _run_model(path: Path, net: SaliencyNet | None, data: Path) -> Path:
    settings = tiny_settings(ser=net is not None)
    learner = build_learner(settings, "cpu", net)
    info = DataFile(data)
    save_run_model(path, learner, settings, ["c"] * 6, {"data": str(data), "data_fingerprint": info.fingerprint})
    return path


def test_a_ser_runs_branch_predicts_like_the_same_net_and_reads_its_input_size(
        images: Path, model: Path, net: SaliencyNet, tiny_synth: Path, tmp_path: Path) -> None:
    run = _run_model(tmp_path / "run.pt", copy.deepcopy(net), tiny_synth)
    code, _, stderr = _cli(str(images / "b"), "--model", str(run), "--out", str(tmp_path / "run"))  # no --size
    assert code == 0, stderr
    assert "input size 32x48, that of the training data" in stderr
    code, _, stderr = _cli(str(images / "b"), "--model", str(model), "--out", str(tmp_path / "ckpt"), *SIZE)
    assert code == 0, stderr
    for name in ("img.png", "small.png", "small_overlay.png"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ckpt" / name).read_bytes()


def test_a_run_without_ser_is_one_line_exit_2(images: Path, tiny_synth: Path, tmp_path: Path) -> None:
    run = _run_model(tmp_path / "plain.pt", None, tiny_synth)
    code, stdout, stderr = _cli(str(images), "--model", str(run), "--out", str(tmp_path / "out"))
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert stderr.startswith(f"error: {run}: a `ser train` run without SER has no saliency branch")
    assert not (tmp_path / "out").exists()


def test_h5_holds_every_map_at_the_model_size(images: Path, model: Path, net: SaliencyNet, tmp_path: Path) -> None:
    h5_path = tmp_path / "maps.h5"
    code, stdout, stderr = _cli(str(images), "--model", str(model), "--out", str(tmp_path / "out"), *SIZE,
                                "--h5", str(h5_path), "--json", "-q")
    assert code == 0, stderr
    maps = json.loads(stdout)["maps"]
    assert not Path(f"{h5_path}.partial").exists()
    with h5py.File(h5_path, "r") as h5:
        assert h5.attrs["kind"] == "ser-predictions" and bool(h5.attrs["complete"])
        assert (h5.attrs["height"], h5.attrs["width"]) == (H, W) and h5["maps"].shape == (4, H, W)
        assert [n.decode() for n in h5["names"][:]] == [Path(m["map"]).stem for m in maps]
        for i, source in enumerate(s.decode() for s in h5["sources"][:]):
            image = Image.open(source)
            assert tuple(h5["image_size"][i]) == (image.height, image.width)
            x = np.asarray(image.convert("RGB").resize((W, H), Image.Resampling.LANCZOS)) / 255.0
            x = (x - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
            with torch.no_grad():
                pred = net(torch.from_numpy(x).permute(2, 0, 1)[None].float())[0][0, 0].double().numpy()
            assert np.abs(h5["maps"][i].astype(float) - np.round(pred / pred.max() * 255)).max() <= 1


def test_refuses_folders_and_files_ser_did_not_write(images: Path, model: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    code, _, stderr = _cli(str(images), "--model", str(model), "--out", str(foreign), *SIZE, "--overwrite")
    assert code == 2 and "did not write" in stderr and (foreign / "notes.txt").read_text() == "keep"
    (tmp_path / "other.h5").write_text("keep")
    code, _, stderr = _cli(str(images), "--model", str(model), "--out", str(tmp_path / "o"), *SIZE,
                           "--h5", str(tmp_path / "other.h5"), "--overwrite")
    assert code == 2 and "not written by `ser predict`" in stderr and (tmp_path / "other.h5").read_text() == "keep"
    out = tmp_path / "out"
    assert _cli(str(images / "a"), "--model", str(model), "--out", str(out), *SIZE)[0] == 0
    code, _, stderr = _cli(str(images / "b"), "--model", str(model), "--out", str(out), *SIZE)
    assert code == 2 and "--overwrite" in stderr
    assert _cli(str(images / "b"), "--model", str(model), "--out", str(out), *SIZE, "--overwrite")[0] == 0
    assert sorted(p.name for p in out.glob("*.png") if "overlay" not in p.name) == ["img.png", "small.png"]


@pytest.mark.parametrize(("case", "expected"), [
    ("missing model", "model not found"),
    ("no images", "no JPEG or PNG images found"),
    ("pattern matches nothing", "the pattern matches no file"),
    ("out is an input file", "is the input IMAGES"),
    ("out inside an input folder", "lies inside the input IMAGES"),
    ("no size", "pass --size HxW"),
    ("bad size", "--size: must be HEIGHTxWIDTH"),
])
def test_user_mistakes_are_one_line_exit_2(case: str, expected: str, images: Path, model: Path,
                                           tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = {"missing model": [str(images), "--model", "nope.pt", "--out", "o", *SIZE],
            "no images": [str(tmp_path / "empty"), "--model", str(model), "--out", "o", *SIZE],
            "pattern matches nothing": [str(images / "*.gif"), "--model", str(model), "--out", "o", *SIZE],
            "out is an input file": [str(images / "b" / "img.png"), "--model", str(model),
                                     "--out", str(images / "b" / "img.png"), *SIZE],
            "out inside an input folder": [str(images), "--model", str(model), "--out", str(images / "maps"), *SIZE],
            "no size": [str(images), "--model", str(model), "--out", "o"],
            "bad size": [str(images), "--model", str(model), "--out", "o", "--size", "32by48"]}[case]
    code, stdout, stderr = _cli(*args)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error: ") and expected in stderr
    assert not (images / "maps").exists() and not Path("o").exists()


def test_help_shows_no_bool_placeholder() -> None:
    result = CliRunner().invoke(app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "<bool>" not in result.output and "--size" in result.output


def test_predict_reads_a_photo_upright_by_its_exif_orientation(tmp_path: Path) -> None:
    from PIL import Image

    from ser_cli.data.image_files import read_image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 60 wide x 40 high, shown rotated 90 degrees clockwise: 40 wide x 60 high
    Image.new("RGB", (60, 40), (200, 10, 10)).save(tmp_path / "photo.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").size == (40, 60)
