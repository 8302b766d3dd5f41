"""Symbolic-link loops as paths (issue 30): after `ln -s loop loop`, `--out loop/run` or `--data loop/data.h5` can
never name a file. Every command answers with one line naming the option and the path as given (`--out loop/run:
symlink loop (too many levels of symbolic links); ...`), exit 2, no traceback, and creates nothing.

Before: an output through a loop got the generic errno line (`loop/run: Too many levels of symbolic links`, no
option), and `ser compare` / `ser data import` given a loop as input died with a RuntimeError traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ser_cli.cli.app import app
from tests.conftest import make_synth

runner = CliRunner()
LOOP = "symlink loop (too many levels of symbolic links)"
TINY_TRAIN = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
              "--set", "train.batch_size=4", "--set", "train.minibatch_size=4", "--set", "train.classifier_init=random"]

# case -> (arguments with {placeholders}, the option and path the line must name)
OUTPUTS: dict[str, tuple[list[str], str]] = {
    "data synth": (["data", "synth", "--out", "{loop}/x.h5"], "--out {loop}/x.h5"),
    "data spurious": (["data", "spurious", "{data}", "--out", "{loop}/x.h5"], "--out {loop}/x.h5"),
    "data import": (["data", "import", "imagefolder", "{folder}", "--out", "{loop}/x.h5"], "--out {loop}/x.h5"),
    "precompute --out": (["precompute", "--from-dataset", "--data", "{data}", "--out", "{loop}/m.h5"],
                         "--out {loop}/m.h5"),
    "precompute --metrics": (["precompute", "--from-dataset", "--data", "{data}", "--out", "{tmp}/m.h5",
                              "--metrics", "{loop}/m.json"], "--metrics {loop}/m.json"),
    "pretrain-saliency": (["pretrain-saliency", "--data", "{data}", "--out", "{loop}/sal"], "--out {loop}/sal"),
    "train": (["train", "--data", "{data}", "--out", "{loop}/run", *TINY_TRAIN], "--out {loop}/run"),
    "evaluate": (["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{loop}/ev"], "--out {loop}/ev"),
    "compare": (["compare", "{data}", "--out", "{loop}/report"], "--out {loop}/report"),  # the lock comes first
    "predict --out": (["predict", "{image}", "--model", "{model}", "--out", "{loop}/maps", "--size", "32x48"],
                      "--out {loop}/maps"),
    "predict --h5": (["predict", "{image}", "--model", "{model}", "--out", "{tmp}/maps", "--h5", "{loop}/p.h5",
                      "--size", "32x48"], "--h5 {loop}/p.h5"),
}
INPUTS: dict[str, tuple[list[str], str]] = {
    "train --data": (["train", "--data", "{loop}/d.h5", "--out", "{tmp}/run", *TINY_TRAIN], "--data {loop}/d.h5"),
    "pretrain-saliency --data": (["pretrain-saliency", "--data", "{loop}/d.h5", "--out", "{tmp}/sal"],
                                 "--data {loop}/d.h5"),
    "precompute --data": (["precompute", "--from-dataset", "--data", "{loop}/d.h5", "--out", "{tmp}/m.h5"],
                          "--data {loop}/d.h5"),
    "evaluate --data": (["evaluate", "--run", "{run}", "--data", "{loop}/d.h5", "--out", "{tmp}/ev"],
                        "--data {loop}/d.h5"),
    "data spurious IN": (["data", "spurious", "{loop}/d.h5", "--out", "{tmp}/x.h5"], "IN {loop}/d.h5"),
    "data import SRC": (["data", "import", "imagefolder", "{loop}", "--out", "{tmp}/x.h5"], "SRC {loop}"),
    "compare EVAL": (["compare", "{loop}/ev", "--out", "{tmp}/report"], "EVAL#1 {loop}/ev"),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, saliency_ckpt: Path) -> dict[str, Path]:
    """A data file, an image folder and a saliency model."""
    from tests.fixtures_formats import write_imagefolder

    root = tmp_path_factory.mktemp("loops")
    folder = write_imagefolder(root / "imagefolder", ["cat", "dog"])
    return {"data": make_synth(root / "data.h5"), "folder": folder, "model": saliency_ckpt,
            "image": next(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def run(inputs: dict[str, Path]) -> Path:
    """A tiny finished `ser train` run, for the evaluate cases."""
    out = inputs["data"].parent / "run"
    done = runner.invoke(app, ["-q", "train", "--data", str(inputs["data"]), "--out", str(out), "--device", "cpu",
                               "--method", "er", *TINY_TRAIN])
    assert done.exit_code == 0, done.output
    return out


def _check(case: tuple[list[str], str], inputs: dict[str, Path], tmp_path: Path,
           request: pytest.FixtureRequest) -> None:
    args, named = case
    if any("{run}" in a for a in args):
        inputs = {**inputs, "run": request.getfixturevalue("run")}
    work = tmp_path / "work"
    work.mkdir()
    loop = tmp_path / "loop"
    os.symlink("loop", loop)  # `ln -s loop loop`: a link to itself
    values = {**{k: str(v) for k, v in inputs.items()}, "loop": str(loop), "tmp": str(work)}
    result = runner.invoke(app, ["-q", *(a.format(**values) for a in args)])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert lines == [f"error: {named.format(**values)}: {LOOP}; point it at a real file or folder"], lines
    assert list(work.iterdir()) == [], list(work.iterdir())  # nothing created, no lock file left


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_an_output_through_a_symlink_loop_is_one_line_naming_it(case: str, inputs: dict[str, Path], tmp_path: Path,
                                                                request: pytest.FixtureRequest) -> None:
    _check(OUTPUTS[case], inputs, tmp_path, request)


@pytest.mark.parametrize("case", list(INPUTS))
def test_an_input_through_a_symlink_loop_is_one_line_naming_it(case: str, inputs: dict[str, Path], tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    _check(INPUTS[case], inputs, tmp_path, request)
