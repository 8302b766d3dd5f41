"""`ser data spurious`: exact 5(c+1)/255 brightening of the train split, test split untouched, provenance, errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.data.store import DataFile, read_image
from ser_cli.data.writer import StoreWriter
from ser_cli.runtime.errors import UserError
from stages import spurious as stage
from tests.conftest import make_synth

runner = CliRunner()


def _arrays(path: Path, split: str) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        g = h5[split]
        images = np.stack([read_image(g, i) for i in range(g["labels"].shape[0])])
        return {"images": images, "labels": g["labels"][:], "maps": g["maps"][:], "fixations": g["fixations"][:],
                "fixation_ptr": g["fixation_ptr"][:]}


def test_train_images_brightened_exactly_and_test_untouched(tiny_synth: Path, tmp_path: Path) -> None:
    out = stage.run(tiny_synth, tmp_path / "spur.h5")
    before, after = _arrays(tiny_synth, "train"), _arrays(out, "train")
    shift = 5 * (before["labels"] + 1)  # class c -> 5(c + 1) grey levels
    expected = np.minimum(before["images"].astype(np.int64) + shift[:, None, None, None], 255)
    assert np.array_equal(after["images"], expected)
    assert (before["images"].astype(np.int64) + shift[:, None, None, None] > 255).any()  # clipping is exercised
    for key in ("labels", "maps", "fixations", "fixation_ptr"):
        assert np.array_equal(after[key], before[key])
    test_before, test_after = _arrays(tiny_synth, "test"), _arrays(out, "test")
    assert all(np.array_equal(test_after[k], test_before[k]) for k in test_before)
    spur, clean = DataFile(out), DataFile(tiny_synth)
    assert spur.provenance["spurious"] is True and spur.provenance["source_fingerprint"] == clean.fingerprint
    assert spur.fingerprint != clean.fingerprint
    assert spur.split_fingerprint("test") == clean.split_fingerprint("test")
    assert spur.spurious and not clean.spurious


def test_same_pixels_as_synth_with_the_spurious_switch(tiny_synth: Path, tmp_path: Path) -> None:
    derived = DataFile(stage.run(tiny_synth, tmp_path / "derived.h5"))
    generated = DataFile(make_synth(tmp_path / "generated.h5", spurious=True))
    assert derived.fingerprint == generated.fingerprint  # same classes, labels and pixels in both splits
    assert generated.spurious


def test_encoded_storage_round_trips(tiny_synth: Path, tmp_path: Path) -> None:
    src = tmp_path / "encoded.h5"
    clean = DataFile(tiny_synth)
    writer = StoreWriter(src, height=clean.height, width=clean.width, class_names=clean.class_names,
                         provenance={"generator": "test"}, storage="encoded")
    for split in ("train", "test"):
        a = _arrays(tiny_synth, split)
        writer.create_split(split, len(a["labels"]), with_maps=True, with_fixations=True)
        writer.write_rows(split, np.arange(len(a["labels"])), a["images"], a["labels"], a["maps"])
        writer.write_fixations(split, a["fixations"], a["fixation_ptr"])
    writer.finalize()
    out = stage.run(src, tmp_path / "encoded_spur.h5")
    assert DataFile(out).storage == "encoded"
    reference = stage.run(tiny_synth, tmp_path / "raw_spur.h5")
    for split in ("train", "test"):
        assert np.array_equal(_arrays(out, split)["images"], _arrays(reference, split)["images"])


def test_bad_inputs(tiny_synth: Path, tmp_path: Path) -> None:
    spur = stage.run(tiny_synth, tmp_path / "spur.h5")
    with pytest.raises(UserError, match="already has the spurious feature"):
        stage.run(spur, tmp_path / "twice.h5")
    with pytest.raises(UserError, match="is the input IN"):
        stage.run(tiny_synth, tiny_synth)
    assert not (tmp_path / "twice.h5").exists() and not Path(f"{tmp_path / 'twice.h5'}.partial").exists()


def test_cli(tiny_synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli_spur.h5"
    result = runner.invoke(app, ["--quiet", "data", "spurious", str(tiny_synth), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out) and DataFile(out).provenance["spurious"] is True
    again = runner.invoke(app, ["data", "spurious", str(out), "--out", str(tmp_path / "x.h5")])
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.exit_code == 2 and len(lines) == 1 and "already has the spurious feature" in lines[0]
    missing = runner.invoke(app, ["data", "spurious", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "y.h5")])
    assert missing.exit_code == 2 and "file not found" in missing.stderr
