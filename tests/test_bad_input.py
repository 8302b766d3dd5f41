"""The bad-input matrix: every command, fed what a hostile new user would feed it, answers with exactly one stderr
line naming the file, field or value, exits 2 (invalid input), never shows a traceback, leaves its inputs
byte-identical and leaves no output or `.partial` behind; a malicious pickle never runs."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from tests.conftest import make_synth

runner = CliRunner()
TINY = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
        "--set", "train.batch_size=4", "--set", "train.minibatch_size=4", "--set", "train.classifier_init=random"]
FAST_EVAL = ["--set", "evaluate.attack_images=4", "--set", "evaluate.pgd_steps=1", "--set", "evaluate.epsilons=[0.01]"]
MARKER = "PWNED-by-pickle"


class _Evil:
    """Unpickling this would create the marker file: a weights-only loader must refuse it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def W(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input the cases need, built once in one folder."""
    root = tmp_path_factory.mktemp("bad input")  # a space in every path
    w: dict[str, Path] = {"root": root, "data": make_synth(root / "data.h5")}
    w["other"] = make_synth(root / "other.h5", seed=5)
    w["maps_other"] = root / "maps_other.h5"
    assert runner.invoke(app, ["-q", "precompute", "--from-dataset", "--data", str(w["other"]),
                               "--out", str(w["maps_other"])]).exit_code == 0
    w["maps_nan"] = root / "maps_nan.h5"
    assert runner.invoke(app, ["-q", "precompute", "--from-dataset", "--data", str(w["data"]),
                               "--out", str(w["maps_nan"])]).exit_code == 0
    with h5py.File(w["maps_nan"], "r+") as h5:  # a hand-made maps file: float maps holding NaN
        shape = h5["train"]["maps"].shape
        del h5["train"]["maps"]
        h5["train"].create_dataset("maps", data=np.full(shape, np.nan, dtype=np.float32))
    torch.manual_seed(0)
    w["sal"] = root / "sal.pt"
    save_saliency_checkpoint(w["sal"], SaliencyNet("resnet18_reduced"), "x", {})
    w["sal_wide"] = root / "sal_wide.pt"
    save_saliency_checkpoint(w["sal_wide"], SaliencyNet("resnet18"), "x", {})
    w["garbage"] = root / "garbage.pt"
    w["garbage"].write_bytes(os.urandom(2048))
    w["empty"] = root / "empty.h5"
    w["empty"].write_bytes(b"")
    w["text"] = root / "notes.h5"
    w["text"].write_text("this is not HDF5\n")
    w["evil"] = root / "evil.pt"
    w["evil"].write_bytes(pickle.dumps(_Evil(root / MARKER)))
    w["truncated"] = root / "truncated.h5"
    w["truncated"].write_bytes(w["data"].read_bytes()[:5000])
    w["newer"] = _edited_copy(w["data"], root / "newer.h5", lambda h5: h5.attrs.__setitem__("schema_version", 99))
    w["no_labels"] = _edited_copy(w["data"], root / "no_labels.h5", lambda h5: h5["train"].__delitem__("labels"))
    w["no_maps"] = _edited_copy(w["data"], root / "no_maps.h5",
                                lambda h5: [h5[s].__delitem__("maps") for s in ("train", "test")])
    w["bad_labels"] = _edited_copy(w["data"], root / "bad_labels.h5", _label_out_of_range)
    w["run"] = root / "run"
    assert runner.invoke(app, ["-q", "train", "--data", str(w["data"]), "--out", str(w["run"]), "--device", "cpu",
                               "--method", "er", *TINY]).exit_code == 0
    w["run_no_matrix"] = root / "run_no_matrix"
    shutil.copytree(w["run"], w["run_no_matrix"])
    (w["run_no_matrix"] / "accuracy_matrix.json").unlink()
    w["run_garbage"] = root / "run_garbage"
    w["run_garbage"].mkdir()
    shutil.copy(w["garbage"], w["run_garbage"] / "model.pt")
    w["eval"] = root / "eval"
    assert runner.invoke(app, ["-q", "evaluate", "--run", str(w["run"]), "--data", str(w["data"]),
                               "--out", str(w["eval"]), "--device", "cpu", *FAST_EVAL]).exit_code == 0
    w["eval_bad_json"] = root / "eval_bad_json"
    shutil.copytree(w["eval"], w["eval_bad_json"])
    (w["eval_bad_json"] / "run.json").write_text("{not json")
    w["bad_yaml"] = root / "bad.yaml"
    w["bad_yaml"].write_text("train: [unclosed\n")
    _schema_and_integrity_inputs(w)
    _untrusted_file_inputs(w)
    w["src"] = root / "src"
    (w["src"] / "train" / "cat").mkdir(parents=True)
    (w["src"] / "train" / "cat" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    w["src_corrupt"] = root / "src_corrupt"
    for split, names in (("train", ["good0.png", "good1.png", "zbad.jpg"]), ("test", ["good2.png"])):
        (w["src_corrupt"] / split / "cat").mkdir(parents=True)
        for name in names:
            if name.startswith("good"):
                Image.new("RGB", (12, 10), (10, 200, 30)).save(w["src_corrupt"] / split / "cat" / name)
            else:
                (w["src_corrupt"] / split / "cat" / name).write_bytes(b"\xff\xd8 truncated jpeg")
    return w


def _replace(h5: h5py.File, name: str, data: np.ndarray) -> None:
    del h5[name]
    h5.create_dataset(name, data=data)


def _schema_and_integrity_inputs(w: dict[str, Path]) -> None:
    """Data files that break the schema in one way each (issue 30 item 4), and one whose pixels changed."""
    root, data = w["root"], w["data"]
    images = lambda h5: h5["train/images"][:]  # noqa: E731
    labels = lambda h5, s="train": h5[f"{s}/labels"][:]  # noqa: E731
    edits = {
        "float_images": lambda h5: _replace(h5, "train/images", images(h5).astype(np.float32)),
        "nhw_images": lambda h5: _replace(h5, "train/images", images(h5)[..., 0]),
        "small_images": lambda h5: _replace(h5, "train/images", images(h5)[:, :16, :16]),
        "negative_height": lambda h5: h5.attrs.__setitem__("height", -5),
        "names_string": lambda h5: h5.attrs.__setitem__("class_names", json.dumps("cat")),
        "names_escape": lambda h5: h5.attrs.__setitem__("class_names", json.dumps(["a", "b", "c", "\x1b[2Jd"])),
        "labels_8": lambda h5: _replace(h5, "train/labels", labels(h5) * 2),
        "float_labels": lambda h5: _replace(h5, "train/labels", labels(h5) + 0.5),
        "negative_labels": lambda h5: _replace(h5, "train/labels", labels(h5) - 1),
        "schema_minus_1": lambda h5: h5.attrs.__setitem__("schema_version", -1),
        "test_label_7": lambda h5: _replace(h5, "test/labels", np.where(labels(h5, "test") == 3, 7,
                                                                           labels(h5, "test"))),
        "test_lost_class": lambda h5: _replace(h5, "test/labels", np.where(labels(h5, "test") == 3, 2,
                                                                              labels(h5, "test"))),
        "xored": _xor_pixels,
    }
    for name, edit in edits.items():
        w[name] = _edited_copy(data, root / f"{name}.h5", edit)
    w["damaged_meta"] = root / "damaged_meta.h5"
    raw = bytearray(data.read_bytes())
    at = raw.find(b"SNOD")  # a symbol table node's signature: HDF5 reports "bad symbol table node signature"
    raw[at:at + 4] = b"XXXX"
    w["damaged_meta"].write_bytes(bytes(raw))
    w["maps_changed"] = _edited_copy(w["maps_other"], root / "maps_changed.h5", _xor_maps)


def _xor_pixels(h5: h5py.File) -> None:
    """200 bytes of one training image flipped, the stored checksums left as they were."""
    image = h5["train/images"][0]
    image.reshape(-1)[:200] ^= 0xFF
    h5["train/images"][0] = image


def _xor_maps(h5: h5py.File) -> None:
    maps = h5["train/maps"][0]
    maps.reshape(-1)[:200] ^= 0xFF
    h5["train/maps"][0] = maps


def _untrusted_file_inputs(w: dict[str, Path]) -> None:
    """Crafted saliency models, malformed run files, hostile YAML, symlink loops, FIFOs (issue 30 items 5-6)."""
    root = w["root"]
    base = torch.load(w["sal"], weights_only=True)
    nan = {k: v * float("nan") if v.is_floating_point() else v for k, v in base["state_dict"].items()}
    for name, change in {"fmt_abc": {"format_version": "abc"}, "cfg_list": {"config": [1, 2]},
                         "cfg_unknown": {"config": {**base["config"], "depth": 3}},
                         "gauss_1e11": {"config": {**base["config"], "n_gaussians": 10**11}},
                         "empty_weights": {"state_dict": {}}, "nan_weights": {"state_dict": nan}}.items():
        w[name] = root / f"{name}.pt"
        torch.save({**base, **change}, w[name])
    for name, (file, text) in {
        "run_ragged": ("accuracy_matrix.json", json.dumps({"class_il": [[1], [1, 2]], "task_il": [[1], [1, 2]]})),
        "run_nonlist": ("accuracy_matrix.json", json.dumps({"class_il": "x", "task_il": 3})),
        "run_nonutf8": ("accuracy_matrix.json", b'{"class_il": "\xff"}'),
        "run_list": ("run.json", "[1, 2]"),
    }.items():
        w[name] = root / name
        shutil.copytree(w["run"], w[name])
        (w[name] / file).write_bytes(text if isinstance(text, bytes) else text.encode())
    w["eval_list"] = root / "eval_list"
    shutil.copytree(w["eval"], w["eval_list"])
    (w["eval_list"] / "run.json").write_text("[1, 2]")
    w["eval_nonutf8"] = root / "eval_nonutf8"
    shutil.copytree(w["eval"], w["eval_nonutf8"])
    (w["eval_nonutf8"] / "metrics.json").write_bytes(b'{"x": "\xff"}')
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))
    for name, text in {"bomb.yaml": bomb, "dup.yaml": "train:\n  lr: 0.01\n  lr: 0.5\n",
                       "sweep_bad.yaml": "name: s\nset:\n  train.lr: [0.01, .inf]\n",
                       "sweep_unknown.yaml": "name: s\nset:\n  train.seed: [0, 1]\n  train.colour: [red]\n"}.items():
        w[name.replace(".yaml", "")] = root / name
        (root / name).write_text(text)
    w["latin1"] = root / "latin1.yaml"
    w["latin1"].write_bytes("train:\n  lr: 0.01  # caf\xe9\n".encode("latin-1"))
    w["loop"] = root / "loop_a"
    os.symlink(root / "loop_b", root / "loop_a")
    os.symlink(root / "loop_a", root / "loop_b")
    w["fifo"] = root / "fifo.h5"
    os.mkfifo(w["fifo"])
    w["small_png"] = root / "small.png"
    Image.new("RGB", (20, 20), (40, 90, 200)).save(w["small_png"])
    w["huge_png"] = _png_claiming(w["small_png"], root / "huge.png", 12000, 12000)


def _png_claiming(src: Path, dst: Path, width: int, height: int) -> Path:
    """A copy of a PNG whose header claims another size (with a valid CRC): what a decoder would allocate for."""
    raw = bytearray(src.read_bytes())
    raw[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16: width, height
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))  # CRC over the chunk type and its 13 data bytes
    dst.write_bytes(bytes(raw))
    return dst


def _edited_copy(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)
    return dst


def _label_out_of_range(h5: h5py.File) -> None:
    labels = h5["train"]["labels"][:]
    labels[0] = 9
    h5["train"]["labels"][:] = labels


def _digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# (command args with {name} placeholders for inputs and {out} for the output, words the one line must contain)
CASES: dict[str, tuple[list[str], str]] = {
    # ser data info
    "info: missing file": (["data", "info", "{root}/nope.h5"], "nope.h5: file not found"),
    "info: empty file": (["data", "info", "{empty}"], "empty.h5: not an HDF5 file"),
    "info: text file": (["data", "info", "{text}"], "notes.h5: not an HDF5 file"),
    "info: truncated HDF5": (["data", "info", "{truncated}"], "truncated.h5: unreadable HDF5 file"),
    "info: newer schema": (["data", "info", "{newer}"], "newer.h5: schema version 99 is newer"),
    "info: missing dataset": (["data", "info", "{no_labels}"], "missing required dataset '/train/labels'"),
    # ser data synth: configuration mistakes
    "synth: out of range": (["data", "synth", "--out", "{out}", "--set", "data.synth.n_classes=0"], "n_classes"),
    "synth: boolean as number": (["data", "synth", "--out", "{out}", "--set", "data.synth.train_per_class=true"],
                                 "data.synth.train_per_class: expected a number, got the boolean true"),
    "synth: unknown key": (["data", "synth", "--out", "{out}", "--set", "data.synth.colour=red"], "colour"),
    "synth: wrong type": (["data", "synth", "--out", "{out}", "--set", "data.synth.height=tall"], "data.synth.height"),
    "synth: non-finite": (["data", "synth", "--out", "{out}", "--set", "data.synth.blur_sigma=.nan"],
                          "data.synth.blur_sigma: Input should be a finite number"),
    "synth: --set without =": (["data", "synth", "--out", "{out}", "--set", "data.synth.height"], "data.synth.height"),
    "synth: malformed YAML": (["data", "synth", "--out", "{out}", "--params", "{bad_yaml}"], "bad.yaml"),
    "synth: params file missing": (["data", "synth", "--out", "{out}", "--params", "{root}/none.yaml"], "none.yaml"),
    # ser data spurious / import
    "spurious: out is the input": (["data", "spurious", "{data}", "--out", "{data}"], "is the input IN"),
    "spurious: a maps file": (["data", "spurious", "{maps_other}", "--out", "{out}"], "is a 'ser-maps' file"),
    "import: out inside the source": (["data", "import", "imagefolder", "{src}", "--out", "{src}/train/x.h5"],
                                      "lies inside the input SRC"),
    "import: missing source": (["data", "import", "imagefolder", "{root}/no_src", "--out", "{out}"],
                               "source folder not found"),
    "import: corrupt image": (["data", "import", "imagefolder", "{src_corrupt}", "--out", "{out}", "--workers", "0",
                               "--set", "data.height=16", "--set", "data.width=16"], "zbad.jpg"),
    "import: unknown format": (["data", "import", "tiff-stack", "{src}", "--out", "{out}"], "tiff-stack"),
    # ser pretrain-saliency
    "pretrain: data without maps": (["pretrain-saliency", "--data", "{no_maps}", "--out", "{out}"],
                                    "has no saliency maps"),
    "pretrain: init-from garbage": (["pretrain-saliency", "--data", "{data}", "--out", "{out}", "--init-from",
                                     "{garbage}"], "garbage.pt: not a readable torch checkpoint"),
    "pretrain: init-from malicious pickle": (["pretrain-saliency", "--data", "{data}", "--out", "{out}",
                                              "--init-from", "{evil}"], "evil.pt: not a readable torch checkpoint"),
    "pretrain: non-finite lr": (["pretrain-saliency", "--data", "{data}", "--out", "{out}", "--set",
                                 "saliency.lr=inf"], "saliency.lr: Input should be a finite number"),
    "pretrain: out is the data": (["pretrain-saliency", "--data", "{data}", "--out", "{data}"], "is the input --data"),
    "pretrain: truncated data": (["pretrain-saliency", "--data", "{truncated}", "--out", "{out}"],
                                 "unreadable HDF5 file"),
    # ser precompute
    "precompute: garbage checkpoint": (["precompute", "--model", "{garbage}", "--data", "{data}", "--out", "{out}"],
                                       "garbage.pt: not a readable torch checkpoint"),
    "precompute: malicious pickle": (["precompute", "--model", "{evil}", "--data", "{data}", "--out", "{out}"],
                                     "evil.pt: not a readable torch checkpoint"),
    "precompute: a run's model as saliency model": (["precompute", "--model", "{run}/model.pt", "--data", "{data}",
                                                     "--out", "{out}"], "not a model written by `ser pretrain"),
    "precompute: out is the model": (["precompute", "--model", "{sal}", "--data", "{data}", "--out", "{sal}"],
                                     "is the input --model"),
    "precompute: metrics is the data": (["precompute", "--model", "{sal}", "--data", "{data}", "--out", "{out}",
                                         "--metrics", "{data}"], "is the input --data"),
    "precompute: newer schema": (["precompute", "--model", "{sal}", "--data", "{newer}", "--out", "{out}"],
                                 "schema version 99"),
    # ser train
    "train: maps of another data file": (["train", "--data", "{data}", "--maps", "{maps_other}", "--out", "{out}",
                                          "--method", "er", "--ser", "--set", "train.saliency_checkpoint={sal}",
                                          *TINY], "maps_other.h5"),
    "train: NaN maps": (["train", "--data", "{data}", "--maps", "{maps_nan}", "--out", "{out}", "--method", "er",
                         "--ser", "--set", "train.saliency_checkpoint={sal}", *TINY],
                        "maps_nan.h5: /train/maps is float32, expected uint8"),
    "train: labels out of range": (["train", "--data", "{bad_labels}", "--out", "{out}", "--method", "er", *TINY],
                                   "train/labels holds 9"),
    "train: negative buffer": (["train", "--data", "{data}", "--out", "{out}", "--set", "train.buffer_size=-5"],
                               "train.buffer_size"),
    "train: buffer beyond memory": (["train", "--data", "{data}", "--out", "{out}", "--method", "er", *TINY,
                                     "--set", "train.buffer_size=1000000000000"], "the replay buffer needs"),
    "train: non-finite lr": (["train", "--data", "{data}", "--out", "{out}", "--set", "train.lr=nan"],
                             "train.lr: Input should be a finite number"),
    "train: saliency net of another backbone": (["train", "--data", "{data}", "--out", "{out}", "--method", "er",
                                                 "--ser", "--set", "train.saliency_checkpoint={sal_wide}", *TINY],
                                                "backbone 'resnet18'"),
    "train: classifier init from garbage": (["train", "--data", "{data}", "--out", "{out}", "--method", "er", *TINY,
                                             "--set", "train.classifier_init={garbage}"],
                                            "garbage.pt: not a readable torch checkpoint"),
    "train: out is the data": (["train", "--data", "{data}", "--out", "{data}", "--method", "er", *TINY],
                               "is the input --data"),
    "train: unknown method": (["train", "--data", "{data}", "--out", "{out}", "--method", "nope", *TINY], "nope"),
    "train: truncated data": (["train", "--data", "{truncated}", "--out", "{out}", "--method", "er", *TINY],
                              "unreadable HDF5 file"),
    # ser evaluate
    "evaluate: no such run": (["evaluate", "--run", "{root}/no_run", "--data", "{data}", "--out", "{out}"],
                              "no such folder"),
    "evaluate: run without model": (["evaluate", "--run", "{src}", "--data", "{data}", "--out", "{out}"],
                                    "has no model.pt"),
    "evaluate: garbage model": (["evaluate", "--run", "{run_garbage}", "--data", "{data}", "--out", "{out}"],
                                "not a readable torch checkpoint"),
    "evaluate: run without accuracy matrix": (["evaluate", "--run", "{run_no_matrix}", "--data", "{data}",
                                               "--out", "{out}", "--device", "cpu"], "accuracy_matrix.json: missing"),
    "evaluate: another data file": (["evaluate", "--run", "{run}", "--data", "{other}", "--out", "{out}",
                                     "--device", "cpu"], "other.h5"),
    "evaluate: epsilon out of range": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{out}",
                                        "--set", "evaluate.epsilons=[2]"], "evaluate.epsilons"),
    "evaluate: unknown attack": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{out}", "--device",
                                  "cpu", "--set", "evaluate.attacks=[cw]"], "evaluate.attacks.0: must be one of"),
    "evaluate: out is the run": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{run}", "--device",
                                  "cpu"], "is the input --run"),
    "evaluate: out is the data": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{data}", "--device",
                                   "cpu"], "is the input --data"),
    # ser compare
    "compare: not an evaluation": (["compare", "{src}", "--out", "{out}"], "not an evaluation folder"),
    "compare: invalid run.json": (["compare", "{eval_bad_json}", "--out", "{out}"], "run.json: not valid JSON"),
    "compare: out contains the inputs": (["compare", "{eval}", "--out", "{root}"], "contains the input EVAL#1"),
    "compare: out is an input": (["compare", "{eval}", "--out", "{eval}"], "is the input EVAL#1"),
    # issue 30 item 4: every file kind checked against its schema and checksums before any work
    "info: float32 images": (["data", "info", "{float_images}"], "/train/images is float32, expected uint8"),
    "info: (N,H,W) images": (["data", "info", "{nhw_images}"], "expected (24, 32, 48, 3)"),
    "info: 16x16 images in a 32x48 file": (["data", "info", "{small_images}"], "has shape (24, 16, 16, 3)"),
    "info: height -5": (["data", "info", "{negative_height}"], "attribute 'height' must be an integer"),
    "info: class_names a JSON string": (["data", "info", "{names_string}"], "'class_names' must be a JSON list"),
    "info: class name with a terminal escape": (["data", "info", "{names_escape}"], "control characters"),
    "info: 4 names for 8 labels": (["data", "info", "{labels_8}"], "/train/labels holds 4, outside the 4 classes"),
    "info: float labels": (["data", "info", "{float_labels}"], "/train/labels is float64, expected integer"),
    "info: negative labels": (["data", "info", "{negative_labels}"], "/train/labels holds -1"),
    "info: schema version -1": (["data", "info", "{schema_minus_1}"], "schema version -1 is not one ser"),
    "info: --verify, changed pixels": (["data", "info", "--verify", "{xored}"],
                                       "/train/images does not match its checksum"),
    "info: --verify, changed maps": (["data", "info", "--verify", "{maps_changed}"],
                                     "/train/maps does not match its checksum"),
    "info: damaged HDF5 metadata": (["data", "info", "{damaged_meta}"], "damaged_meta.h5"),
    "info: a FIFO": (["data", "info", "{fifo}"], "not a regular file"),
    "info: a symlink loop": (["data", "info", "{loop}"], "loop_a"),
    "synth: seed 2**70": (["data", "synth", "--out", "{out}", "--seed", str(2**70)], "must be <= 4294967295"),
    "synth: non-UTF-8 params": (["data", "synth", "--out", "{out}", "--params", "{latin1}"], "not UTF-8 text"),
    "synth: out a symlink loop": (["data", "synth", "--out", "{loop}"], "loop_a"),
    "spurious: changed pixels": (["data", "spurious", "{xored}", "--out", "{out}"], "does not match its checksum"),
    "train: changed pixels": (["train", "--data", "{xored}", "--out", "{out}", "--method", "er", *TINY],
                              "/train/images does not match its checksum"),
    "train: test labels outside the classes": (["train", "--data", "{test_label_7}", "--out", "{out}", "--method",
                                                "er", *TINY], "/test/labels holds 7"),
    "train: damaged HDF5 metadata": (["train", "--data", "{damaged_meta}", "--out", "{out}", "--method", "er",
                                      *TINY], "damaged_meta.h5"),
    "train: changed maps": (["train", "--data", "{other}", "--maps", "{maps_changed}", "--out", "{out}", "--method",
                             "er", "--ser", "--set", "train.saliency_checkpoint={sal}", *TINY],
                            "/train/maps does not match its checksum"),
    "train: saliency model with NaN weights": (["train", "--data", "{data}", "--out", "{out}", "--method", "er",
                                                "--ser", "--set", "train.saliency_checkpoint={nan_weights}", *TINY],
                                               "holds NaN or inf"),
    "evaluate: test split lost a class": (["evaluate", "--run", "{run}", "--data", "{test_lost_class}", "--out",
                                           "{out}", "--device", "cpu"], "the test split lost a class"),
    "evaluate: test labels outside the classes": (["evaluate", "--run", "{run}", "--data", "{test_label_7}",
                                                   "--out", "{out}", "--device", "cpu"], "/test/labels holds 7"),
    "evaluate: damaged HDF5 metadata": (["evaluate", "--run", "{run}", "--data", "{damaged_meta}", "--out",
                                         "{out}", "--device", "cpu"], "damaged_meta.h5"),
    "evaluate: ragged accuracy matrix": (["evaluate", "--run", "{run_ragged}", "--data", "{data}", "--out", "{out}",
                                          "--device", "cpu"], "class_il must be rows of 2 accuracies"),
    "evaluate: accuracy matrix not lists": (["evaluate", "--run", "{run_nonlist}", "--data", "{data}", "--out",
                                             "{out}", "--device", "cpu"], "lacks class_il, task_il"),
    "evaluate: accuracy matrix not UTF-8": (["evaluate", "--run", "{run_nonutf8}", "--data", "{data}", "--out",
                                             "{out}", "--device", "cpu"], "not UTF-8 text"),
    "evaluate: run.json a list": (["evaluate", "--run", "{run_list}", "--data", "{data}", "--out", "{out}",
                                   "--device", "cpu"], "run.json: must hold a JSON object, not a list"),
    "evaluate: --data a symlink loop": (["evaluate", "--run", "{run}", "--data", "{loop}", "--out", "{out}"],
                                        "loop_a"),
    "compare: run.json a list": (["compare", "{eval_list}", "--out", "{out}"], "must hold a JSON object"),
    "compare: metrics.json not UTF-8": (["compare", "{eval_nonutf8}", "--out", "{out}"], "not UTF-8 text"),
    # issue 30 items 5-6: crafted saliency models, bounded settings, hostile YAML
    "precompute: format version 'abc'": (["precompute", "--model", "{fmt_abc}", "--data", "{data}", "--out",
                                          "{out}"], "format_version 'abc' is not one ser writes"),
    "precompute: config not a dict": (["precompute", "--model", "{cfg_list}", "--data", "{data}", "--out", "{out}"],
                                      "its config must be a mapping"),
    "precompute: unknown config key": (["precompute", "--model", "{cfg_unknown}", "--data", "{data}", "--out",
                                        "{out}"], "'depth'"),
    "precompute: n_gaussians 1e11": (["precompute", "--model", "{gauss_1e11}", "--data", "{data}", "--out",
                                      "{out}"], "n_gaussians must be in 0..64"),
    "precompute: empty state dict": (["precompute", "--model", "{empty_weights}", "--data", "{data}", "--out",
                                      "{out}"], "holds no weights"),
    "precompute: NaN weights": (["precompute", "--model", "{nan_weights}", "--data", "{data}", "--out", "{out}"],
                                "holds NaN or inf"),
    "precompute: changed pixels": (["precompute", "--model", "{sal}", "--data", "{xored}", "--out", "{out}"],
                                   "does not match its checksum"),
    "pretrain: lr 1e30": (["pretrain-saliency", "--data", "{data}", "--out", "{out}", "--set", "saliency.lr=1e30"],
                          "saliency.lr: must be <= 10.0"),
    "pretrain: changed pixels": (["pretrain-saliency", "--data", "{xored}", "--out", "{out}"],
                                 "does not match its checksum"),
    "pretrain: out a symlink loop": (["pretrain-saliency", "--data", "{data}", "--out", "{loop}"], "loop_a"),
    "train: lr 1e308": (["train", "--data", "{data}", "--out", "{out}", "--set", "train.lr=1e308"],
                        "train.lr: must be <= 10.0"),
    "train: seed 2**70": (["train", "--data", "{data}", "--out", "{out}", "--seed", str(2**70)],
                          "train.seed: must be <= 4294967295"),
    "train: non-UTF-8 params": (["train", "--data", "{data}", "--out", "{out}", "--params", "{latin1}"],
                                "latin1.yaml: not UTF-8 text"),
    "train: YAML anchor bomb": (["train", "--data", "{data}", "--out", "{out}", "--params", "{bomb}"],
                                "expands to more than 100000 values"),
    "train: duplicate YAML key": (["train", "--data", "{data}", "--out", "{out}", "--params", "{dup}"],
                                  "duplicate key 'lr' (line 3)"),
    "train: --data a symlink loop": (["train", "--data", "{loop}", "--out", "{out}", *TINY], "loop_a"),
    "train: --out a symlink loop": (["train", "--data", "{data}", "--out", "{loop}", *TINY], "loop_a"),
    "evaluate: seed 2**70": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{out}", "--set",
                              f"evaluate.seed={2**70}"], "evaluate.seed: must be <="),
    "sweep: an inf value": (["sweep", "{sweep_bad}", "--dry"], "s-lrinf: train.lr: Input should be a finite number"),
    "sweep: an unknown key": (["sweep", "{sweep_unknown}", "--dry"], "train.colour: unknown key"),
    "sweep: non-UTF-8 file": (["sweep", "{latin1}", "--dry"], "not UTF-8 text"),
    "sweep: YAML anchor bomb": (["sweep", "{bomb}", "--dry"], "expands to more than 100000 values"),
    "predict: NaN weights": (["predict", "{small_png}", "--model", "{nan_weights}", "--out", "{out}", "--size",
                              "32x48"], "holds NaN or inf"),
    "predict: n_gaussians 1e11": (["predict", "{small_png}", "--model", "{gauss_1e11}", "--out", "{out}", "--size",
                                   "32x48"], "n_gaussians must be in 0..64"),
    "predict: --size 100000x100000": (["predict", "{small_png}", "--model", "{sal}", "--out", "{out}", "--size",
                                       "100000x100000"], "--size: must be HEIGHTxWIDTH with both in 16..4096"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_touches_nothing(case: str, W: dict[str, Path], tmp_path: Path) -> None:
    args, words = CASES[case]
    out = tmp_path / "out dir é" / "result"
    values = {**{k: str(v) for k, v in W.items()}, "out": str(out)}
    argv = [a.format(**values) for a in args]
    before = _digest(W["root"])
    result = runner.invoke(app, ["-q", *argv])  # -q: no progress bars, so stderr holds only the error
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, (case, result.output)
    assert len(lines) == 1 and "Traceback" not in result.output, (case, result.output)
    assert lines[0].startswith("error: ") and words in lines[0], (case, lines[0])
    assert _digest(W["root"]) == before, case  # inputs byte-identical
    assert not (W["root"] / MARKER).exists(), case  # the malicious pickle never ran
    leftovers = list(tmp_path.rglob("*"))
    assert not any(p.name.endswith(".partial") for p in leftovers), (case, leftovers)
    assert not out.exists(), (case, leftovers)


def test_the_matrix_covers_every_command() -> None:
    commands = {args[0] if args[0] != "data" else f"data {args[1]}" for args, _ in CASES.values()}
    assert len(CASES) >= 40
    assert commands == {"data info", "data synth", "data spurious", "data import", "pretrain-saliency",
                        "precompute", "train", "evaluate", "compare", "sweep", "predict"}


def _one_line(result, code: int, words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == code and "Traceback" not in result.output, result.output
    assert len(lines) == 1 and words in lines[0], lines


def test_weights_that_go_nan_stop_training_with_one_line_and_keep_the_checkpoint(
        W: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ser_cli.continual.methods.base import Method

    def poison(self, task: int) -> None:  # a weight goes NaN while every loss stayed finite
        if task == 1:
            with torch.no_grad():
                next(iter(self.learner.parameters())).fill_(float("nan"))

    monkeypatch.setattr(Method, "after_task", poison)
    out = tmp_path / "run"
    result = runner.invoke(app, ["-q", "train", "--data", str(W["data"]), "--out", str(out), "--device", "cpu",
                                 "--method", "er", *TINY])
    _one_line(result, 1, "non-finite weight")
    assert "checkpoint of step" in result.stderr
    saved = torch.load(next(out.rglob("checkpoint.pt")), weights_only=True)  # task 0's, all finite
    from ser_cli.runtime.checkpoint import first_nonfinite

    assert first_nonfinite(saved) is None
    assert not any(out.rglob("model.pt"))


def test_a_saliency_model_with_nan_weights_is_never_written(tmp_path: Path) -> None:
    from ser_cli.runs.saliency_file import save_saliency_checkpoint
    from ser_cli.runtime.errors import RunFailure

    net = SaliencyNet("resnet18_reduced")
    with torch.no_grad():
        next(net.parameters()).fill_(float("inf"))
    with pytest.raises(RunFailure, match="holds NaN or inf"):
        save_saliency_checkpoint(tmp_path / "model.pt", net, "x", {})
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_during_torch_save_is_the_one_line_space_error(
        W: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ser_cli.runtime.checkpoint as checkpoint

    real_save = torch.save
    monkeypatch.setattr(checkpoint.torch, "save", lambda state, _path: real_save(state, "/dev/full"))
    for argv in (["train", "--data", str(W["data"]), "--out", str(tmp_path / "run"), "--device", "cpu",
                  "--method", "er", *TINY],
                 ["pretrain-saliency", "--data", str(W["data"]), "--out", str(tmp_path / "sal"), "--device", "cpu",
                  "--set", "saliency.epochs=1", "--set", "saliency.precise_bn_batches=0"]):
        _one_line(runner.invoke(app, ["-q", *argv]), 1, "no space left on the device?")


def test_predict_refuses_a_huge_image_and_never_opens_a_fifo(W: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(W["small_png"], folder / "ok.png")
    os.mkfifo(folder / "waiting.png")  # opening it for reading would block forever
    result = runner.invoke(app, ["-q", "predict", str(folder), "--model", str(W["sal"]), "--out",
                                 str(tmp_path / "maps"), "--size", "32x48"])
    assert result.exit_code == 0 and (tmp_path / "maps" / "ok.png").is_file(), result.output
    result = runner.invoke(app, ["-q", "predict", str(W["huge_png"]), "--model", str(W["sal"]), "--out",
                                 str(tmp_path / "huge"), "--size", "32x48"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "12000x12000 pixels, more than the 50 megapixels" in result.stderr


def test_resume_identity_includes_the_maps_content(W: dict[str, Path], tmp_path: Path) -> None:
    from ser_cli.data.checksum import write_checksums
    from ser_cli.data.maps import MapsFile

    changed = _edited_copy(W["maps_other"], tmp_path / "changed.h5", lambda h5: (_xor_maps(h5), write_checksums(h5)))
    before, after = MapsFile(W["maps_other"]), MapsFile(changed)  # same data fingerprint, same source
    assert (before.data_fingerprint, before.source) == (after.data_fingerprint, after.source)
    assert before.identity() != after.identity()


def test_files_written_before_checksums_stay_readable(W: dict[str, Path], tmp_path: Path) -> None:
    from ser_cli.data.checksum import ATTR
    from ser_cli.data.store import DataFile

    def strip(h5: h5py.File) -> None:
        for split in ("train", "test"):
            for ds in h5[split].values():
                del ds.attrs[ATTR]

    legacy = _edited_copy(W["data"], tmp_path / "legacy.h5", strip)
    assert DataFile(legacy).checksums == "absent" and DataFile(W["data"]).checksums == "verified"
    result = runner.invoke(app, ["data", "info", "--verify", str(legacy)])
    assert result.exit_code == 0 and "checksums: absent" in result.output, result.output
