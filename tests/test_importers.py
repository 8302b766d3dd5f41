"""`ser data import`: each format read from a tiny fixture in its exact published layout.

Checked against independent computations: pixels against PIL's LANCZOS resize of the source file, maps against a
float LANCZOS resize rescaled to 255, fixation points against coordinates worked out by hand, labels against the
class-order file read here. Then the file-level contracts: raw and encoded storage decode to the same pixels, two
workers write the same content as none, an interrupted import resumes to the same content and decodes only the
missing rows, and every bad input exits 2 with one line naming the file and leaves no data file behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.data.importers import load_class_order
from ser_cli.data.importers.mit1003 import split_test_rows
from ser_cli.data.store import DataFile, fixations_of, read_image
from ser_cli.data.writer import StoreWriter, partial_path
from tests.fixtures_formats import (
    MIT_SIZES,
    SALICON_SIZES,
    colour_index,
    write_imagefolder,
    write_mit1003,
    write_salicon,
    write_ser_layout,
)

runner = CliRunner()
H, W = 32, 48
PACKAGE_ORDERS = Path(__file__).resolve().parents[1] / "ser_cli" / "data" / "class_orders"


@pytest.fixture(autouse=True)
def _quiet_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: built-in defaults plus the overrides below
    monkeypatch.setenv("SER_QUIET", "1")


def run_import(fmt: str, src: Path, out: Path, *extra: str, workers: int = 0):
    """`ser data import` at H x W through the CLI; returns the click Result."""
    args = ["data", "import", fmt, str(src), "--out", str(out), "--set", f"data.height={H}", "--set",
            f"data.width={W}", "--workers", str(workers), *extra]
    return runner.invoke(app, args)


def imported(fmt: str, src: Path, out: Path, *extra: str, workers: int = 0) -> Path:
    result = run_import(fmt, src, out, *extra, workers=workers)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


def content_sha256(path: Path) -> str:
    """Everything a reader sees: class names and every dataset of every split except the `done` bookkeeping."""
    digest = hashlib.sha256()
    with h5py.File(path, "r") as h5:
        digest.update(h5.attrs["class_names"].encode())
        for split in ("train", "test"):
            for name in sorted(set(h5[split]) - {"done"}):
                data = h5[split][name][:]
                chunks = [row.tobytes() for row in data] if data.dtype.kind == "O" else [data.tobytes()]
                digest.update(name.encode() + b"".join(chunks))
    return digest.hexdigest()


def lanczos(path: Path) -> np.ndarray:
    """The independent reference: PIL's LANCZOS resize of the decoded source, (H, W, 3) uint8."""
    return np.asarray(Image.open(path).convert("RGB").resize((W, H), Image.Resampling.LANCZOS))


def lanczos_map(path: Path) -> np.ndarray:
    grey = np.asarray(Image.open(path).convert("L").convert("F").resize((W, H), Image.Resampling.LANCZOS))
    grey = np.clip(grey.astype(np.float64), 0, None)
    return np.round(grey * 255 / grey.max()).astype(np.uint8)


# ---------------------------------------------------------------- SALICON


def test_salicon_pixels_maps_and_fixations(tmp_path: Path) -> None:
    src = write_salicon(tmp_path / "salicon")
    out = imported("salicon", src, tmp_path / "s.h5")
    data = DataFile(out)
    assert data.class_names == ["salicon"] and (data.height, data.width) == (H, W)
    assert {s: i.size for s, i in data.splits.items()} == {"train": 3, "test": 2} and data.has_maps
    prov = data.provenance
    assert prov["format"] == "salicon" and prov["source"] == str(src.resolve()) and prov["size"] == [H, W]
    assert prov["created_at"].endswith("+00:00")
    with h5py.File(out, "r") as h5:
        for split, folder in (("train", "train"), ("test", "val")):
            for row in range(len(SALICON_SIZES[folder])):
                stem = f"COCO_{folder}2014_{row:012d}"
                assert np.array_equal(h5[split]["images"][row], lanczos(src / "images" / folder / f"{stem}.jpg"))
                assert np.array_equal(h5[split]["maps"][row], lanczos_map(src / "maps" / folder / f"{stem}.png"))
            assert (h5[split]["labels"][:] == 0).all()
        # image 0 is 50x70 (H x W); 1-based [x, y] -> 0-based, pixel centre scaled by 32/50 and 48/70, floored:
        # [35, 20] -> (floor(19.5 * .64), floor(34.5 * .6857)) = (12, 23); [1, 1] -> (0, 0); [70, 50] -> (31, 47);
        # observer 1 has none; observer 2's [71, 10] lies outside the 70-wide image (dropped), [10, 5] -> (2, 6).
        expected = [[0, 0, 12, 23], [0, 0, 0, 0], [0, 0, 31, 47], [0, 2, 2, 6]]
        assert fixations_of(h5["train"], 0).tolist() == expected
        assert h5["train"]["fixation_ptr"][:].tolist() == [0, 4, 8, 12]
        # image 1 of val is 37x53: [35, 20] -> (floor(19.5 * 32/37), floor(34.5 * 48/53)) = (16, 31)
        assert fixations_of(h5["test"], 1)[0].tolist() == [1, 0, 16, 31]


def test_salicon_flat_layout_reads_the_same(tmp_path: Path) -> None:
    per_split = imported("salicon", write_salicon(tmp_path / "a"), tmp_path / "a.h5")
    flat = imported("salicon", write_salicon(tmp_path / "b", flat=True), tmp_path / "b.h5")
    assert content_sha256(per_split) == content_sha256(flat)


# ---------------------------------------------------------------- MIT1003


def test_mit1003_seeded_split_maps_and_points(tmp_path: Path) -> None:
    assert MIT_SIZES[0] == (50, 70)  # the hand-computed points below are for this size
    src = write_mit1003(tmp_path / "mit", nested=True)
    out = imported("mit1003", src, tmp_path / "m.h5", "--test-fraction", "0.34", "--seed", "3")
    stimuli = sorted((src / "ALLSTIMULI" / "ALLSTIMULI").glob("*.jpeg"))
    test_rows = split_test_rows(len(stimuli), 0.34, 3)
    assert len(test_rows) == 2  # round(6 * 0.34)
    train_rows = [i for i in range(len(stimuli)) if i not in test_rows]
    with h5py.File(out, "r") as h5:
        for split, rows in (("train", train_rows), ("test", test_rows)):
            for row, index in enumerate(rows):
                assert np.array_equal(h5[split]["images"][row], lanczos(stimuli[index]))
                fix_map = src / "ALLFIXATIONMAPS" / f"{stimuli[index].stem}_fixMap.jpg"
                assert np.array_equal(h5[split]["maps"][row], lanczos_map(fix_map))
        # stimulus 0 (50x70) is train row 0 unless drawn for test; its points (y, x) = (20, 35), (3, 4), (49, 69)
        # land on floor((p + .5) * (32/50, 48/70)) = (13, 24), (2, 3), (31, 47); row-major order from the point map.
        split, row = ("test", list(test_rows).index(0)) if 0 in test_rows else ("train", train_rows.index(0))
        assert fixations_of(h5[split], row)[:, 1:].tolist() == [[0, 2, 3], [0, 13, 24], [0, 31, 47]]
    other = imported("mit1003", src, tmp_path / "m2.h5", "--test-fraction", "0.34", "--seed", "3")
    assert content_sha256(other) == content_sha256(out)


# ---------------------------------------------------------------- ser-layout and imagefolder


def fg_imagenet_labels() -> dict[str, int]:
    """wnid -> label read straight from the shipped YAML (groups of {wnid: label}), independently of ser."""
    groups = yaml.safe_load((PACKAGE_ORDERS / "fg-imagenet.yaml").read_text())
    return {wnid: label for group in groups.values() for wnid, label in group.items()}


def test_ser_layout_fg_imagenet_labels_exactly_as_the_class_order(tmp_path: Path) -> None:
    order = fg_imagenet_labels()
    wnids = sorted(order)  # fixture image colour i <-> wnids[i]
    assert len(wnids) == 100
    src = write_ser_layout(tmp_path / "fg", wnids, per_split={"train": 1, "val": 1}, with_maps=False, size=(6, 8))
    out = imported("ser-layout", src, tmp_path / "fg.h5", "--class-order", "fg-imagenet")
    data = DataFile(out)
    assert data.class_names == sorted(order, key=order.get)
    with h5py.File(out, "r") as h5:
        for split in ("train", "test"):
            labels = h5[split]["labels"][:]
            centres = h5[split]["images"][:, H // 2, W // 2].astype(float)  # (N, 3): the colour names the wnid
            for label, rgb in zip(labels, centres, strict=True):
                assert label == order[wnids[colour_index(rgb)]]
            assert sorted(labels.tolist()) == list(range(100))


def test_ser_layout_custom_order_maps_and_skipped_class(tmp_path: Path) -> None:
    src = write_ser_layout(tmp_path / "s", ["n0001", "n0002", "n0003", "n0004"])
    order_file = tmp_path / "order.yaml"
    order_file.write_text("n0003: 0\nn0001: 1\nn0002: 2\n")  # n0004 is on disk but not in the order
    out = imported("ser-layout", src, tmp_path / "s.h5", "--class-order", str(order_file))
    data = DataFile(out)
    assert data.class_names == ["n0003", "n0001", "n0002"] and data.has_maps
    assert data.provenance["skipped_classes"] == 1 and data.provenance["class_order"] == str(order_file)
    with h5py.File(out, "r") as h5:
        assert h5["train"]["labels"][:].tolist() == [0, 0, 1, 1, 2, 2]
        for row, (wnid, j) in enumerate([(w, j) for w in data.class_names for j in range(2)]):
            image = src / "images" / "train" / wnid / f"{wnid}_{j}.JPEG"
            assert np.array_equal(h5["train"]["images"][row], lanczos(image))
            annotation = src / "annotations" / "train" / wnid / f"{wnid}_{j}.png"
            assert np.array_equal(h5["train"]["maps"][row], lanczos_map(annotation))
    limited = imported("ser-layout", src, tmp_path / "l.h5", "--class-order", str(order_file), "--limit-per-class", "1")
    assert DataFile(limited).labels("train").tolist() == [0, 1, 2]


def test_imagefolder_sorted_and_listed_orders(tmp_path: Path) -> None:
    src = write_imagefolder(tmp_path / "f", ["zebra", "ant", "moth"], test_name="val")
    out = imported("imagefolder", src, tmp_path / "f.h5")
    assert DataFile(out).class_names == ["ant", "moth", "zebra"]
    with h5py.File(out, "r") as h5:
        assert h5["test"]["labels"][:].tolist() == [0, 0, 1, 1, 2, 2]
        images = sorted((src / "val" / "moth").iterdir())
        assert np.array_equal(h5["test"]["images"][2], lanczos(images[0]))
    listed = tmp_path / "order.yaml"
    listed.write_text("[zebra, ant, moth]\n")
    again = imported("imagefolder", src, tmp_path / "g.h5", "--class-order", str(listed))
    assert DataFile(again).class_names == ["zebra", "ant", "moth"]
    with h5py.File(again, "r") as h5:
        assert np.array_equal(h5["test"]["images"][4], lanczos(images[0]))  # moth is label 2 now


# sha256 of the paper's class-order files (shared/data/class_order_{fg,mini}_imagenet.yaml, read 2026-12-01): the
# check runs on every checkout, with or without the shared folder beside it.
PAPER_ORDER_SHA256 = {"fg-imagenet": "617d6f633c2c803accb16dad96bb70b6be210c628c9e13971a7aea31a13139ae",
                      "mini-imagenet": "627facef8c7c1ae0e6dc1e57ec0c40dfcbdbdff562193ef2370a2dc7fd85b285"}


def test_builtin_class_orders_match_the_paper_files() -> None:
    for name, digest in PAPER_ORDER_SHA256.items():
        assert hashlib.sha256((PACKAGE_ORDERS / f"{name}.yaml").read_bytes()).hexdigest() == digest, name
    mini = load_class_order("mini-imagenet")
    raw = yaml.safe_load((PACKAGE_ORDERS / "mini-imagenet.yaml").read_text())
    assert len(mini.names) == 100 and all(raw[name] == label for label, name in enumerate(mini.names))


# ---------------------------------------------------------------- file-level contracts


def test_raw_and_encoded_decode_to_the_same_pixels(tmp_path: Path) -> None:
    src = write_imagefolder(tmp_path / "f", ["a", "b"])
    raw = imported("imagefolder", src, tmp_path / "raw.h5", "--storage", "raw")
    enc = imported("imagefolder", src, tmp_path / "enc.h5", "--storage", "encoded")
    assert DataFile(enc).storage == "encoded"
    with h5py.File(raw, "r") as a, h5py.File(enc, "r") as b:
        assert "images_encoded" in b["train"] and "images" not in b["train"]
        for split in ("train", "test"):
            for row in range(a[split]["labels"].shape[0]):
                assert np.array_equal(read_image(a[split], row), read_image(b[split], row))


def test_two_workers_write_what_no_worker_writes(tmp_path: Path) -> None:
    src = write_salicon(tmp_path / "s")
    serial = imported("salicon", src, tmp_path / "w0.h5", workers=0)
    pooled = imported("salicon", src, tmp_path / "w2.h5", workers=2)
    assert DataFile(serial).fingerprint == DataFile(pooled).fingerprint
    assert content_sha256(serial) == content_sha256(pooled)


def test_interrupted_import_resumes_and_decodes_only_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stages import import_data

    src = write_salicon(tmp_path / "s")
    reference = imported("salicon", src, tmp_path / "ref.h5")
    monkeypatch.setattr(import_data, "BLOCK_ROWS", 2)
    real_write, calls = StoreWriter.write_rows, []

    def write_then_die(self, *args, **kwargs):  # the second block of train never lands
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    out = tmp_path / "s.h5"
    monkeypatch.setattr(StoreWriter, "write_rows", write_then_die)
    assert run_import("salicon", src, out).exit_code == 130
    assert not out.exists() and partial_path(out).exists()
    monkeypatch.setattr(StoreWriter, "write_rows", real_write)
    decoded = []
    real_decode = import_data.decode_item
    monkeypatch.setattr(import_data, "decode_item", lambda item, **kw: decoded.append(item) or real_decode(item, **kw))
    imported("salicon", src, out)
    assert len(decoded) == 5 - 2  # rows 0 and 1 of train were done
    assert content_sha256(out) == content_sha256(reference)
    assert DataFile(out).fingerprint == DataFile(reference).fingerprint


def test_partial_of_a_different_import_is_discarded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_imagefolder(tmp_path / "f", ["a", "b"])
    out = tmp_path / "f.h5"
    other = imported("imagefolder", src, tmp_path / "other.h5", "--limit-per-class", "1")
    shutil.copy(other, partial_path(out))  # a partial left by an import with other options
    with h5py.File(partial_path(out), "a") as h5:
        h5.attrs["complete"] = False
    fresh = imported("imagefolder", src, tmp_path / "fresh.h5")
    assert content_sha256(imported("imagefolder", src, out)) == content_sha256(fresh)


# ---------------------------------------------------------------- bad inputs: exit 2, one line, no file


def _corrupt(path: Path) -> Path:
    path.write_bytes(b"this is not an image\n")
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _missing_class_order(root: Path) -> tuple[Path, list[str], str]:
    src = write_ser_layout(root / "s", ["n0001", "n0002"], with_maps=False)
    order = root / "order.yaml"
    order.write_text("n0001: 0\nn0002: 1\nn0099: 2\n")
    return src, ["--class-order", str(order)], str(src / "images" / "train" / "n0099")


def _empty_class(root: Path) -> tuple[Path, list[str], str]:
    src = write_imagefolder(root / "f", ["a", "b"])
    for image in (src / "test" / "b").iterdir():
        image.unlink()
    return src, [], str(src / "test" / "b")


def _corrupt_image(root: Path) -> tuple[Path, list[str], str]:
    src = write_imagefolder(root / "f", ["a", "b"])
    return src, ["--workers", "2"], str(_corrupt(src / "train" / "b" / "img1.jpg"))


def _truncated_jpeg(root: Path) -> tuple[Path, list[str], str]:
    src = write_salicon(root / "s")
    return src, [], str(_truncate(src / "images" / "val" / "COCO_val2014_000000000001.jpg"))


def _map_without_image(root: Path) -> tuple[Path, list[str], str]:
    src = write_salicon(root / "s")
    orphan = src / "maps" / "train" / "COCO_train2014_000000000099.png"
    shutil.copy(src / "maps" / "train" / "COCO_train2014_000000000000.png", orphan)
    return src, [], str(orphan)


def _unreadable_mat(root: Path) -> tuple[Path, list[str], str]:
    src = write_salicon(root / "s")
    return src, [], str(_corrupt(src / "fixations" / "train" / "COCO_train2014_000000000002.mat"))


def _image_without_map(root: Path) -> tuple[Path, list[str], str]:
    src = write_ser_layout(root / "s", ["n0001", "n0002"])
    gone = src / "annotations" / "val" / "n0002" / "n0002_0.png"
    gone.unlink()
    return src, [], str(gone)


def _mit_points_without_stimulus(root: Path) -> tuple[Path, list[str], str]:
    src = write_mit1003(root / "m")
    orphan = src / "ALLFIXATIONMAPS" / "i9999_fixPts.jpg"
    shutil.copy(src / "ALLFIXATIONMAPS" / "i0000_fixPts.jpg", orphan)
    return src, [], str(orphan)


BAD_INPUTS = {
    "ser-layout": [_missing_class_order, _image_without_map],
    "imagefolder": [_empty_class, _corrupt_image],
    "salicon": [_truncated_jpeg, _map_without_image, _unreadable_mat],
    "mit1003": [_mit_points_without_stimulus],
}


@pytest.mark.parametrize(("fmt", "make"), [(f, m) for f, makers in BAD_INPUTS.items() for m in makers],
                         ids=lambda v: getattr(v, "__name__", v))
def test_bad_input_exits_2_with_one_line_naming_the_file(tmp_path: Path, fmt: str, make) -> None:
    src, extra, culprit = make(tmp_path)
    out = tmp_path / "out.h5"
    result = run_import(fmt, src, out, *extra)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith("error: ") and culprit in lines[0], lines[0]
    assert not out.exists()


def test_unknown_format_and_misplaced_options_exit_2(tmp_path: Path) -> None:
    src = write_imagefolder(tmp_path / "f", ["a", "b"])
    for args, needle in ((["cifar", str(src)], "unknown dataset format 'cifar'"),
                         (["imagefolder", str(src), "--test-fraction", "0.2"], "--test-fraction"),
                         (["imagefolder", str(src), "--storage", "zip"], "--storage"),
                         (["imagefolder", str(src), "--class-order", "nope"], "nope: class order not found")):
        result = runner.invoke(app, ["data", "import", *args, "--out", str(tmp_path / "x.h5")])
        assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_class_order_file_errors_name_the_file(tmp_path: Path) -> None:
    from ser_cli.runtime.errors import UserError

    bad = tmp_path / "bad.yaml"
    for text, needle in (("a: 0\nb: 2\n", "labels must be exactly 0..1"), ("a: x\n", "must be an integer"),
                         ("[a, a]\n", "listed twice"), ("42\n", "list of names or a mapping")):
        bad.write_text(text)
        with pytest.raises(UserError, match=needle) as err:
            load_class_order(str(bad))
        assert str(bad) in str(err.value)
    assert json.loads(json.dumps(load_class_order("fg-imagenet").names))[:2] == ["n01943899", "n01753488"]


def _two_colour(height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8: the left half red, the right half blue."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2, 0] = 255
    image[:, width // 2 :, 2] = 255
    return image


def test_imagefolder_turns_exif_rotated_photos_upright_and_scales_16_bit_images(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "test"):
        folder = tmp_path / "f" / split / "cls"
        folder.mkdir(parents=True)
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation 6: shown rotated 90 degrees clockwise, so the left half ends on top
        Image.fromarray(_two_colour(40, 60)).save(folder / "photo.jpg", exif=exif, quality=95)
        ramp = (np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 40).astype(np.uint16)  # up to 61,400
        Image.fromarray(ramp).save(folder / "scan.png")  # mode I;16
    out = imported("imagefolder", tmp_path / "f", tmp_path / "f.h5", "--set", "data.height=32",
                   "--set", "data.width=48")
    with h5py.File(out, "r") as h5:
        images = list(h5["train"]["images"][:])  # 2 x (32, 48, 3)
    grey = [bool((im[..., 0] == im[..., 2]).all()) for im in images]  # the scan is grey, the photo red and blue
    scan, photo = images[grey.index(True)], images[grey.index(False)]
    top, bottom = photo[:12].reshape(-1, 3).mean(0), photo[-12:].reshape(-1, 3).mean(0)
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60  # red on top: turned upright
    expected = np.rint(ramp / 65535.0 * 255.0)  # the ramp scaled to 8 bits, not clipped to white
    assert np.abs(scan[..., 0].astype(float) - expected).max() <= 1 and scan[..., 0].max() < 255
