"""The bad-input matrix: every command, fed what a hostile new user would feed it, answers with exactly one stderr
line naming the file, field or value, exits 2 (invalid input), never shows a traceback, leaves its inputs
byte-identical and leaves no output or `.partial` behind; a malicious pickle never runs."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.checkpoint import save_saliency_checkpoint
from ser_cli.models.saliency_net import SaliencyNet
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
                        "precompute", "train", "evaluate", "compare"}
