"""Classical saliency targets (`ser precompute --method spectral-residual|center-bias`): the maps against independent
numpy / scipy computations and closed forms, the maps file's `method` attribute and its readers, `ser data info`,
and `ser compare`'s maps column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.data.maps import FROM_DATASET, MapsFile, quantize_maps
from ser_cli.data.store import DataFile
from ser_cli.report.compare import group_evals, load_eval
from ser_cli.report.pairs import pair_groups
from ser_cli.report.render import header, headline_columns, shows_maps, table_rows
from ser_cli.saliency.classical import (
    CLASSICAL,
    center_bias_maps,
    grey,
    spectral_residual,
    spectral_residual_maps,
)

TINY_TRAIN = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
              "--set", "train.batch_size=4", "--set", "train.minibatch_size=4"]
FAST_EVAL = ["--set", "evaluate.attack_images=4", "--set", "evaluate.pgd_steps=1", "--set", "evaluate.epsilons=[0.0]"]


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})  # long tmp paths: no wrapping
    return result.exit_code, result.stdout, result.stderr


def _images(seed: int, n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)  # (N, H, W, 3)


def _as_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)  # (N, 3, H, W) uint8, as the loader yields them


def _numpy_spectral_residual(image: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Hou & Zhang step by step in numpy / scipy for one (H, W, 3) uint8 image at its own size.

    Returns the saliency before the blur and the final map in [0, 1].
    """
    g = (0.299 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]) / 255.0  # (H, W)
    spectrum = np.fft.fft2(g)
    amplitude = np.abs(spectrum)
    floor = 1e-12 * amplitude.max()
    log_amp = np.log(np.maximum(amplitude, floor))
    residual = log_amp - ndimage.uniform_filter(log_amp, size=3, mode="wrap")
    phase = np.where(amplitude > floor, spectrum / np.maximum(amplitude, floor), 0)
    back = np.fft.ifft2(np.exp(residual) * phase)
    assert np.abs(back.imag).max() <= 1e-9 * np.abs(back).max()  # the wrapped 3x3 mean keeps Hermitian symmetry
    raw = np.abs(back) ** 2
    blurred = ndimage.gaussian_filter(raw, sigma, mode="wrap", truncate=3.0)
    return raw, (blurred - blurred.min()) / (blurred.max() - blurred.min())


# ---------------------------------------------------------------------------------------------------------------
# The maps themselves
# ---------------------------------------------------------------------------------------------------------------


def test_spectral_residual_matches_numpy_step_by_step() -> None:
    images = _images(0, 3, 8, 8)  # 8 px wide: below the 64 px working width, so used as is, sigma = 8 * 8 / 64 = 1
    maps = spectral_residual_maps(_as_tensor(images)).numpy()  # (3, 8, 8)
    raws = spectral_residual(grey(_as_tensor(images)).double()).numpy()
    for image, raw, got in zip(images, raws, maps, strict=True):
        want_raw, want = _numpy_spectral_residual(image, sigma=1.0)
        np.testing.assert_allclose(raw, want_raw, rtol=1e-4)  # grey in float32 before the float64 spectrum
        np.testing.assert_allclose(got, want, atol=1e-5)
        stored = quantize_maps(torch.from_numpy(got)[None])[0].numpy()
        assert stored.dtype == np.uint8 and stored.max() == 255 and stored.min() == 0
        assert np.abs(stored.astype(int) - np.round(want * 255).astype(int)).max() <= 1


def test_spectral_residual_batches_rows_independently() -> None:
    images = _as_tensor(_images(1, 5, 12, 20))
    together = spectral_residual_maps(images)
    one_by_one = torch.cat([spectral_residual_maps(images[i : i + 1]) for i in range(5)])
    assert torch.equal(together, one_by_one)  # a resumed or sharded precompute writes the same bytes


def test_a_constant_image_has_a_flat_residual_and_an_all_zero_map() -> None:
    flat = _as_tensor(np.full((2, 16, 24, 3), 117, np.uint8))
    raw = spectral_residual(grey(flat).double())  # (2, 16, 24)
    assert torch.allclose(raw, raw[:, :1, :1].expand_as(raw), rtol=1e-12)  # only the mean frequency: constant
    maps = spectral_residual_maps(flat)
    assert torch.equal(maps, torch.zeros_like(maps))  # stored as zeros, which readers treat as uniform
    assert torch.equal(quantize_maps(maps), torch.zeros(2, 16, 24, dtype=torch.uint8))


@pytest.mark.parametrize("seed", range(4))
def test_the_odd_bar_out_gets_the_peak(seed: int) -> None:
    """Hou & Zhang's psychophysics case: among jittered horizontal bars, the one vertical bar is the most salient."""
    rng = np.random.default_rng(seed)
    image = np.full((48, 64), 40, np.uint8)
    cells = [(y, x) for y in range(3, 45, 8) for x in range(3, 61, 8)]
    oy, ox = cells[rng.integers(len(cells))]
    for y, x in cells:
        if (y, x) != (oy, ox):
            y, x = y + rng.integers(-1, 2), x + rng.integers(-1, 2)
            image[y, x : x + 5] = 220  # a horizontal bar, 5 px
    image[oy - 2 : oy + 3, ox + 2] = 220  # the vertical one, centred at (oy, ox + 2)
    saliency = spectral_residual_maps(torch.from_numpy(image)[None, None].expand(1, 3, 48, 64))[0].numpy()
    py, px = np.unravel_index(saliency.argmax(), saliency.shape)
    assert np.hypot(py - oy, px - ox - 2) < 4


def test_images_wider_than_64_px_are_worked_at_64_px_so_the_map_follows_content_not_resolution() -> None:
    rng = np.random.default_rng(2)
    small = ndimage.zoom(rng.uniform(0, 255, (6, 8, 3)), (8, 8, 1), order=1)  # (48, 64, 3): smooth background
    small[20:28, 30:40] = 250
    small = small.round().clip(0, 255).astype(np.uint8)[None]
    big = small.repeat(2, axis=1).repeat(2, axis=2)  # (1, 96, 128, 3): the same picture at twice the resolution
    at_64 = spectral_residual_maps(_as_tensor(small))
    from_128 = torch.nn.functional.avg_pool2d(spectral_residual_maps(_as_tensor(big))[:, None], 2)[:, 0]
    at_128 = torch.nn.functional.avg_pool2d(spectral_residual_maps(_as_tensor(big), working_width=128,
                                                                   blur_sigma=16.0)[:, None], 2)[:, 0]
    assert np.corrcoef(at_64.ravel(), from_128.ravel())[0, 1] > 0.8
    assert np.corrcoef(at_64.ravel(), at_128.ravel())[0, 1] < 0.5  # without it the residual sees other scales


@pytest.mark.parametrize("size", [(9, 13), (32, 48), (8, 8)])
def test_center_bias_is_the_closed_form_gaussian_peaking_at_the_centre_and_symmetric(size: tuple[int, int]) -> None:
    h, w = size
    maps = quantize_maps(center_bias_maps(torch.zeros(2, 3, h, w, dtype=torch.uint8))).numpy()  # (2, H, W)
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    want = np.exp(-0.5 * (((ys - (h - 1) / 2) / (h / 4)) ** 2 + ((xs - (w - 1) / 2) / (w / 4)) ** 2))
    assert maps.dtype == np.uint8 and np.array_equal(maps[0], maps[1])
    np.testing.assert_array_equal(maps[0], np.round(want / want.max() * 255))
    assert maps[0].max() == 255 and maps[0][(h - 1) // 2, (w - 1) // 2] == 255 and maps[0][h // 2, w // 2] == 255
    assert np.array_equal(maps[0], maps[0][::-1]) and np.array_equal(maps[0], maps[0][:, ::-1])
    assert maps[0][0, 0] < maps[0][0, w // 2] < 255  # anisotropic: it falls off along each side


def test_the_registry_names_the_classical_methods_and_refuses_others() -> None:
    assert CLASSICAL.names() == ["center-bias", "spectral-residual"]
    from ser_cli.runtime.errors import UserError

    with pytest.raises(UserError, match="unknown saliency method 'itti'"):
        CLASSICAL.lookup("itti")


# ---------------------------------------------------------------------------------------------------------------
# ser precompute --method, the maps file and its readers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classical_maps(tiny_synth: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both classical maps files of the tiny SynthSal, written by the command."""
    folder = tmp_path_factory.mktemp("classical")
    out = {}
    for method in ("spectral-residual", "center-bias"):
        out[method] = folder / f"{method}.h5"
        code, stdout, stderr = _cli("precompute", "--data", str(tiny_synth), "--out", str(out[method]),
                                    "--method", method, "--set", "precompute.batch_size=5")
        assert code == 0, stderr
        assert stdout.strip() == str(out[method])
    return out


@pytest.mark.parametrize("method", ["spectral-residual", "center-bias"])
def test_precompute_writes_the_library_maps_with_the_method_recorded(
    classical_maps: dict[str, Path], tiny_synth: Path, method: str
) -> None:
    maps = MapsFile(classical_maps[method])
    assert (maps.method, maps.model_sha256, maps.source) == (method, None, method)
    assert maps.method_settings == CLASSICAL[method].settings
    # the data it was made for, what made it, and (files with checksums) its content
    assert maps.identity() == f"{DataFile(tiny_synth).fingerprint}:{method}:{maps.content}" and maps.content
    assert not maps.from_dataset
    with h5py.File(classical_maps[method], "r") as h5:
        assert "model_sha256" not in h5.attrs and h5.attrs["method"] == method
        for split in ("train", "test"):
            images = h5py.File(tiny_synth, "r")[split]["images"][:]
            want = quantize_maps(CLASSICAL[method](_as_tensor(images))).numpy()
            assert np.array_equal(h5[split]["maps"][:], want)


def _pearson_and_kld(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Mean CC and KLD (MIT convention, eps = Matlab's eps) over images, in numpy."""
    ccs, klds = [], []
    for p, q in zip(pred.astype(float), truth.astype(float), strict=True):
        ccs.append(np.corrcoef(p.ravel(), q.ravel())[0, 1])
        p, q = p / p.sum(), q / q.sum()
        klds.append(np.sum(q * np.log(np.finfo(float).eps + q / (p + np.finfo(float).eps))))
    return float(np.mean(ccs)), float(np.mean(klds))


@pytest.mark.parametrize("method", ["spectral-residual", "center-bias"])
def test_precompute_metrics_score_the_classical_maps_against_the_ground_truth(
    classical_maps: dict[str, Path], tiny_synth: Path, method: str
) -> None:
    metrics = json.loads(classical_maps[method].with_suffix(".metrics.json").read_text())
    maps = MapsFile(classical_maps[method])
    with h5py.File(tiny_synth, "r") as h5:
        truth = np.concatenate([h5[s]["maps"][:] for s in ("train", "test")])
    pred = np.concatenate([maps.read(s) for s in ("train", "test")])
    cc, kld = _pearson_and_kld(pred, truth)
    assert metrics["cc"] == pytest.approx(cc, abs=1e-5) and metrics["kld"] == pytest.approx(kld, rel=1e-4)
    assert metrics["n_maps"] == 36


def test_files_without_a_method_attribute_read_as_model_or_from_dataset(
    classical_maps: dict[str, Path], tmp_path: Path
) -> None:
    """Maps files written before `method` existed keep their identity (a finished `ser train` run stays finished)."""
    legacy = tmp_path / "legacy.h5"
    shutil.copy(classical_maps["center-bias"], legacy)
    with h5py.File(legacy, "a") as h5:
        del h5.attrs["method"], h5.attrs["method_settings"]
        h5.attrs["model_sha256"] = "ab" * 32
        for split in ("train", "test"):  # and, older still than `method`, before per-dataset checksums
            del h5[split]["maps"].attrs["sha256"]
    maps = MapsFile(legacy)
    assert (maps.method, maps.model_sha256, maps.method_settings) == ("model", "ab" * 32, {})
    assert maps.identity() == f"{maps.data_fingerprint}:{'ab' * 32}"
    with h5py.File(legacy, "a") as h5:
        h5.attrs["model_sha256"] = FROM_DATASET
    maps = MapsFile(legacy)
    assert maps.method == FROM_DATASET and maps.from_dataset
    assert maps.identity() == f"{maps.data_fingerprint}:{FROM_DATASET}"


def test_from_dataset_still_copies_the_data_maps_and_records_its_method(tiny_synth: Path, tmp_path: Path) -> None:
    code, _, stderr = _cli("precompute", "--data", str(tiny_synth), "--out", str(tmp_path / "m.h5"), "--from-dataset")
    assert code == 0, stderr
    maps = MapsFile(tmp_path / "m.h5")
    assert (maps.method, maps.model_sha256) == (FROM_DATASET, FROM_DATASET)
    with h5py.File(tiny_synth, "r") as h5:
        truth = torch.from_numpy(h5["test"]["maps"][:]).float()
    assert np.array_equal(maps.read("test"), quantize_maps(truth).numpy())


ONE_SOURCE = "give exactly one of --model FILE (predict maps), --from-dataset (copy the data's maps) and --method"


@pytest.mark.parametrize(("args", "message"), [
    (["--method", "itti"], "--method: unknown method 'itti'; choose one of: model, from-dataset, center-bias, "
                           "spectral-residual"),
    (["--method", "center-bias", "--from-dataset"], ONE_SOURCE),
    (["--method", "center-bias", "--model", "{model}"], ONE_SOURCE),
    (["--method", "model"], ONE_SOURCE),
    ([], ONE_SOURCE),
])
def test_bad_method_choices_are_one_line_errors(tiny_synth: Path, tmp_path: Path, args: list[str],
                                                message: str) -> None:
    (tmp_path / "model.pt").write_bytes(b"not read")
    args = [a.replace("{model}", str(tmp_path / "model.pt")) for a in args]
    code, _, stderr = _cli("precompute", "--data", str(tiny_synth), "--out", str(tmp_path / "m.h5"), *args)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.h5").exists()


def test_the_stage_refuses_a_model_for_a_classical_method(tiny_synth: Path, tmp_path: Path) -> None:
    from ser_cli.config import PrecomputeConfig
    from ser_cli.runtime.errors import UserError
    from stages import precompute

    with pytest.raises(UserError, match="--method spectral-residual: takes no --model"):
        precompute.run(PrecomputeConfig(), tiny_synth, tmp_path / "m.h5", model=tmp_path / "model.pt",
                       method="spectral-residual")
    with pytest.raises(UserError, match="--method model needs --model FILE"):
        precompute.run(PrecomputeConfig(), tiny_synth, tmp_path / "m.h5", method="model")


def test_data_info_shows_a_maps_file_and_its_method(classical_maps: dict[str, Path], tiny_synth: Path) -> None:
    code, stdout, stderr = _cli("data", "info", str(classical_maps["spectral-residual"]))
    assert code == 0, stderr
    assert "maps file" in stdout and "maps 32x48 uint8 (24 train, 12 test)" in stdout
    assert "method: spectral-residual (blur_sigma=8.0, working_width=64)" in stdout
    assert f"made for data fingerprint: {DataFile(tiny_synth).fingerprint}" in stdout
    assert "model sha256" not in stdout
    code, stdout, _ = _cli("data", "info", str(classical_maps["center-bias"]), "--json")
    info = json.loads(stdout)
    assert (info["kind"], info["method"], info["method_settings"], info["model_sha256"]) == (
        "ser-maps", "center-bias", {"sigma_frac": 0.25}, None)
    assert info["sizes"] == {"train": 24, "test": 12} and info["map_shape"] == [32, 48]
    code, stdout, _ = _cli("data", "info", str(tiny_synth))  # a data file: as before
    flat = " ".join(stdout.split())  # Rich wraps at 80 columns, and the path's length (pytest's tmp) moves the break
    assert code == 0 and "images 32x48x3" in flat and "method:" not in stdout


# ---------------------------------------------------------------------------------------------------------------
# ser train / evaluate / compare with classical maps
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_evaluate_and_compare_run_on_classical_maps(classical_maps: dict[str, Path], tiny_synth: Path,
                                                          tmp_path: Path) -> None:
    maps = classical_maps["spectral-residual"]
    code, _, stderr = _cli("-q", "train", "--data", str(tiny_synth), "--maps", str(maps), "--out",
                           str(tmp_path / "run"), "--device", "cpu", "--method", "derpp", *TINY_TRAIN)
    assert code == 0, stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (run["maps_method"], run["maps_model_sha256"]) == ("spectral-residual", None)
    assert run["identity"]["maps"] == MapsFile(maps).identity()
    code, _, stderr = _cli("-q", "evaluate", "--run", str(tmp_path / "run"), "--data", str(tiny_synth), "--maps",
                           str(maps), "--out", str(tmp_path / "eval"), *FAST_EVAL)
    assert code == 0, stderr
    assert json.loads((tmp_path / "eval" / "run.json").read_text())["maps_method"] == "spectral-residual"
    code, stdout, stderr = _cli("compare", str(tmp_path / "eval"), "--out", str(tmp_path / "report"))
    assert code == 0, stderr
    head = (tmp_path / "report" / "table.txt").read_text().splitlines()
    assert any("maps" in line.split() and "spectral-residual" not in line for line in head)  # the column's title
    assert any("derpp" in line and "spectral-residual" in line for line in head)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["groups"][0]["maps_method"] == "spectral-residual"


def _fake_eval(folder: Path, config: str, ser: bool, seed: int, class_il: float, maps_method: str | None) -> Path:
    """An evaluation folder with what `ser compare` reads (metrics.json, run.json); `maps_method` None = legacy."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"class_il_final_avg_acc": class_il, "clean_acc": class_il}))
    info = {"config_hash": config, "method": "derpp", "ser": ser, "seed": seed,
            "label": "derpp+ser" if ser else "derpp", "settings": {"method": "derpp", "ser": ser},
            "data": {"fingerprint": "d" * 64, "test_fingerprint": "t" * 64, "spurious": False}}
    if maps_method is not None:
        info["maps_method"] = maps_method
    (folder / "run.json").write_text(json.dumps(info))
    return folder


def test_compare_keeps_classical_maps_apart_and_shows_the_maps_column(tmp_path: Path) -> None:
    plain, ser = "a" * 64, "b" * 64
    evals = [
        _fake_eval(tmp_path / "plain0", plain, False, 0, 40.0, "model"),
        _fake_eval(tmp_path / "plain1", plain, False, 1, 42.0, None),  # evaluated before maps_method: model
        _fake_eval(tmp_path / "ser0", ser, True, 0, 45.0, "model"),
        _fake_eval(tmp_path / "ser1", ser, True, 1, 47.0, "model"),
        _fake_eval(tmp_path / "sr0", ser, True, 0, 30.0, "spectral-residual"),
        _fake_eval(tmp_path / "sr1", ser, True, 1, 34.0, "spectral-residual"),
    ]
    groups = group_evals([load_eval(p) for p in evals])
    assert [g.label for g in groups] == ["derpp", "derpp+ser (maps=model)", "derpp+ser (maps=spectral-residual)"]
    assert [len(g.records) for g in groups] == [2, 2, 2]
    assert groups[2].stats["class_il_final_avg_acc"].mean == pytest.approx(32.0)
    columns = headline_columns(groups)
    assert header(columns, shows_maps(groups))[:3] == ["run", "n", "maps"]
    assert [row[2] for row in table_rows(groups, columns)] == ["model", "model", "spectral-residual"]
    pairs = pair_groups(groups)  # both SER groups against the same plain runs, seed by seed
    assert [(p.ser.label, p.plain.label) for p in pairs] == [("derpp+ser (maps=model)", "derpp"),
                                                             ("derpp+ser (maps=spectral-residual)", "derpp")]
    assert pairs[1].diffs["class_il_final_avg_acc"].mean == pytest.approx(((30 - 40) + (34 - 42)) / 2)
    predictor_only = group_evals([load_eval(p) for p in evals[:4]])
    assert not shows_maps(predictor_only)  # nothing to tell apart: the table keeps its usual columns
    assert header(headline_columns(predictor_only), shows_maps(predictor_only))[:3] == ["run", "n", "class-IL acc"]
