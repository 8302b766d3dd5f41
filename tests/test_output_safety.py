"""No command destroys a user's files: the rows of the reliability report that lost data, each as a test.

Every case checks the exit code, one stderr line and that the inputs (and any unrelated file) are byte-identical
afterwards; `ser_cli.runtime.output_folder` is also checked on its own for the replace / keep rules.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.checkpoint import save_saliency_checkpoint
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import MANIFEST, OutputFolder, check_disjoint
from tests.conftest import make_synth

runner = CliRunner()
TINY = ["--set", "train.n_tasks=2", "--set", "train.classes_per_task=2", "--set", "train.buffer_size=16",
        "--set", "train.batch_size=4", "--set", "train.minibatch_size=4", "--set", "train.classifier_init=random"]
FAST_EVAL = ["--set", "evaluate.attack_images=4", "--set", "evaluate.pgd_steps=1", "--set", "evaluate.epsilons=[0.01]"]


def _tree_digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _one_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A data file, a trained plain run and its evaluation, in one folder that also holds a user's file."""
    root = tmp_path_factory.mktemp("work")
    data = make_synth(root / "data.h5")
    (root / "notes.txt").write_text("a user's notes\n")
    run = root / "run"
    args = ["-q", "train", "--data", str(data), "--out", str(run), "--device", "cpu", "--method", "er", *TINY]
    assert runner.invoke(app, args).exit_code == 0
    ev = root / "eval"
    result = runner.invoke(app, ["-q", "evaluate", "--run", str(run), "--data", str(data), "--out", str(ev),
                                 "--device", "cpu", *FAST_EVAL])
    assert result.exit_code == 0, result.output
    return {"root": root, "data": data, "run": run, "eval": ev}


@pytest.mark.parametrize("target", ["root", "parent_of_eval", "unrelated"])
def test_compare_never_deletes_an_existing_folder(work: dict[str, Path], target: str, tmp_path: Path) -> None:
    unrelated = tmp_path / "mine"
    unrelated.mkdir()
    (unrelated / "thesis.tex").write_text("chapter 1\n")
    out = {"root": work["root"], "parent_of_eval": work["eval"].parent, "unrelated": unrelated}[target]
    before = _tree_digest(out)
    result = runner.invoke(app, ["compare", str(work["eval"]), "--out", str(out)])
    assert result.exit_code == 2
    line = _one_line(result)
    assert "contains the input" in line or "did not write" in line, line
    assert _tree_digest(out) == before
    assert not Path(f"{out}.partial").exists()


def test_evaluate_refuses_the_run_folder_and_the_data_file(work: dict[str, Path]) -> None:
    before_run, before_data = _tree_digest(work["run"]), hashlib.sha256(work["data"].read_bytes()).hexdigest()
    for out, words in ((work["run"], "is the input --run"), (work["data"], "is the input --data")):
        result = runner.invoke(app, ["evaluate", "--run", str(work["run"]), "--data", str(work["data"]),
                                     "--out", str(out), "--device", "cpu", *FAST_EVAL])
        assert result.exit_code == 2 and words in _one_line(result)
        assert not Path(f"{out}.partial").exists()
    assert _tree_digest(work["run"]) == before_run
    assert hashlib.sha256(work["data"].read_bytes()).hexdigest() == before_data


def test_evaluate_again_is_nothing_to_do_and_other_settings_need_overwrite(work: dict[str, Path]) -> None:
    base = ["evaluate", "--run", str(work["run"]), "--data", str(work["data"]), "--out", str(work["eval"]),
            "--device", "cpu", *FAST_EVAL]
    (work["eval"] / "my_notes.md").write_text("keep me\n")
    before = _tree_digest(work["eval"])
    again = runner.invoke(app, base)
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    assert _tree_digest(work["eval"]) == before
    other = runner.invoke(app, [*base, "--set", "evaluate.attacks=[fgsm]"])
    assert other.exit_code == 2 and "--overwrite" in _one_line(other)
    assert _tree_digest(work["eval"]) == before
    replaced = runner.invoke(app, [*base, "--set", "evaluate.attacks=[fgsm]", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    metrics = json.loads((work["eval"] / "metrics.json").read_text())
    assert "fgsm_acc_eps_2.55" in metrics and not any(k.startswith("pgd_") for k in metrics)
    assert (work["eval"] / "my_notes.md").read_text() == "keep me\n"  # not ours: never touched


def test_train_refuses_a_finished_run_of_another_method(work: dict[str, Path]) -> None:
    before = _tree_digest(work["run"])
    args = ["train", "--data", str(work["data"]), "--out", str(work["run"]), "--device", "cpu", *TINY]
    other = runner.invoke(app, [*args, "--method", "derpp"])
    assert other.exit_code == 2 and "--overwrite" in _one_line(other)
    same = runner.invoke(app, [*args, "--method", "er"])
    assert same.exit_code == 0 and "nothing to do" in same.stderr
    assert _tree_digest(work["run"]) == before


def test_resume_on_another_data_file_is_refused(work: dict[str, Path], tmp_path: Path) -> None:
    other_data = make_synth(tmp_path / "other.h5", seed=1)
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--device", "cpu", "--method", "er", *TINY]
    assert runner.invoke(app, ["-q", *args, "--data", str(work["data"])]).exit_code == 0
    identity = json.loads((run / "run.json").read_text())["identity"]
    (run / "model.pt").unlink()  # an interrupted run: no model.pt yet, its checkpoint left behind
    torch.save({"trainer": {}, "log": [], "seconds": 0.0, "identity": identity}, run / "checkpoint.pt")
    result = runner.invoke(app, [*args, "--data", str(other_data)])
    assert result.exit_code == 2
    line = _one_line(result)
    assert "data_fingerprint" in line and "--restart" in line
    assert (run / "checkpoint.pt").is_file()


def test_unreadable_checkpoint_is_set_aside_not_deleted(work: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    result = runner.invoke(app, ["train", "--data", str(work["data"]), "--out", str(run), "--device", "cpu",
                                 "--method", "er", *TINY])
    assert result.exit_code == 0, result.output
    aside = list(run.glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"not a checkpoint at all"


def test_precompute_and_import_outputs_inside_inputs_are_refused(work: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tmp_path / "sal" / "model.pt"
    model.parent.mkdir()
    save_saliency_checkpoint(model, SaliencyNet("resnet18_reduced"), "x", {})
    model_bytes = model.read_bytes()
    result = runner.invoke(app, ["precompute", "--model", str(model), "--data", str(work["data"]),
                                 "--out", str(model)])
    assert result.exit_code == 2 and "is the input --model" in _one_line(result)
    assert model.read_bytes() == model_bytes
    src = tmp_path / "src"
    (src / "train" / "cat").mkdir(parents=True)
    (src / "train" / "cat" / "img0.jpg").write_bytes(b"jpeg bytes")
    result = runner.invoke(app, ["data", "import", "imagefolder", str(src), "--out",
                                 str(src / "train" / "cat" / "img0.jpg")])
    assert result.exit_code == 2 and "lies inside the input SRC" in _one_line(result)
    assert (src / "train" / "cat" / "img0.jpg").read_bytes() == b"jpeg bytes"


def test_check_disjoint_relations(tmp_path: Path) -> None:
    check_disjoint({"--out": tmp_path / "a" / "out"}, {"--data": tmp_path / "b" / "data.h5"})
    for out, words in ((tmp_path / "d", "is the input"), (tmp_path, "contains the input"),
                       (tmp_path / "d" / "x", "lies inside the input")):
        with pytest.raises(UserError, match=words):
            check_disjoint({"--out": out}, {"--data": tmp_path / "d"})


def test_output_folder_replaces_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = OutputFolder(out, "ser test", "id-1")
    assert first.state() == "fresh"
    staging = first.start()
    (staging / "a.txt").write_text("1")
    (staging / "sub").mkdir()
    (staging / "sub" / "b.txt").write_text("1")
    first.commit()
    (out / "user.txt").write_text("user")
    assert OutputFolder(out, "ser test", "id-1").state() == "complete"
    with pytest.raises(UserError, match="--overwrite"):
        OutputFolder(out, "ser test", "id-2").state()
    with pytest.raises(UserError, match="holds the output of `ser test`"):
        OutputFolder(out, "ser other", "id-1").state()
    second = OutputFolder(out, "ser test", "id-2", overwrite=True)
    assert second.state() == "replace"
    (second.start() / "a.txt").write_text("2")  # sub/b.txt is no longer produced
    second.commit()
    assert (out / "a.txt").read_text() == "2" and not (out / "sub" / "b.txt").exists()
    assert (out / "user.txt").read_text() == "user"
    assert json.loads((out / MANIFEST).read_text())["files"] == ["a.txt"]
    (out / "a.txt").unlink()  # what DVC does to a stage's outs before rerunning it
    assert OutputFolder(out, "ser test", "id-3").state() == "replace"


def test_labels_outside_the_scenario_are_refused_before_training(tmp_path: Path) -> None:
    import h5py

    data = make_synth(tmp_path / "bad_labels.h5")
    with h5py.File(data, "r+") as h5:
        labels = h5["train"]["labels"][:]
        labels[3] = 7  # the file has 4 classes: 2 tasks x 2
        h5["train"]["labels"][:] = labels
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--device", "cpu",
                                 "--method", "er", *TINY])
    assert result.exit_code == 2
    assert "train/labels holds 7, outside the 4 classes 0..3" in _one_line(result)
    assert not (tmp_path / "r" / "model.pt").exists()


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    from ser_cli.runtime.atomic import atomic_path

    target = tmp_path / "sub" / "file.txt"
    with atomic_path(target, fsync=True) as tmp:
        tmp.write_text("complete")
        assert not target.exists()  # nobody sees it before the block succeeds
    assert target.read_text() == "complete"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "complete" and not list(target.parent.glob("*.partial"))
