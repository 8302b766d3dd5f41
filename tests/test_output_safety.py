"""No command destroys a user's files: the rows of the reliability report that lost data, each as a test.

Every case checks the exit code, one stderr line and that the inputs (and any unrelated file) are byte-identical
afterwards; `ser_cli.runtime.output_folder` is also checked on its own for the replace / keep rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from ser_cli.cli.app import app
from ser_cli.models.saliency_net import SaliencyNet
from ser_cli.runs.saliency_file import save_saliency_checkpoint
from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import MANIFEST, OutputFolder, check_disjoint
from ser_cli.runtime.output_lock import lock_path, output_lock
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


# ------------------------------------------------------------------ issue 30: ownership, manifests, one writer
# One case per class and command. Each checks the exit code, the one stderr line and that the victim (a user's
# file, or a file outside the output) keeps its bytes.

USER_BYTES = b"a user's own file, not written by ser\n"


def _victim(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(USER_BYTES)
    return path


def _src_folder(root: Path) -> Path:
    """An imagefolder source of two classes with one tiny image each."""
    from PIL import Image

    for cls in ("a", "b"):
        for split in ("train", "test"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (40 if cls == "a" else 200, 0, 0)).save(root / split / cls / "0.png")
    return root


def _command(name: str, work: dict[str, Path], out: Path, tmp_path: Path) -> list[str]:
    """The argument list of each writing command, writing `out` (its --out; for `precompute-metrics`, --metrics)."""
    data, root = str(work["data"]), work["root"]
    src = str(_src_folder(tmp_path / "src")) if name == "import" else ""
    return {
        "train": ["train", "--data", data, "--out", str(out), "--device", "cpu", "--method", "er", *TINY],
        "pretrain-saliency": ["pretrain-saliency", "--data", data, "--out", str(out), "--device", "cpu",
                              "--set", "saliency.epochs=1"],
        "evaluate": ["evaluate", "--run", str(work["run"]), "--data", data, "--out", str(out), "--device", "cpu",
                     *FAST_EVAL],
        "compare": ["compare", str(work["eval"]), "--out", str(out)],
        "synth": ["data", "synth", "--out", str(out), "--set", "data.synth.height=32", "--set", "data.synth.width=48",
                  "--set", "data.synth.n_classes=4", "--set", "data.synth.train_per_class=2",
                  "--set", "data.synth.test_per_class=1"],
        "import": ["data", "import", "imagefolder", src, "--out", str(out), "--set", "data.height=16",
                   "--set", "data.width=16", "--set", "data.workers=0"],
        "spurious": ["data", "spurious", data, "--out", str(out)],
        "precompute": ["precompute", "--from-dataset", "--data", data, "--out", str(out)],
        "precompute-metrics": ["precompute", "--from-dataset", "--data", data, "--out", str(root / "unused.h5"),
                               "--metrics", str(out)],
    }[name]


FILE_COMMANDS = ("synth", "import", "spurious", "precompute", "precompute-metrics")
FOLDER_COMMANDS = ("train", "pretrain-saliency", "evaluate", "compare")


@pytest.mark.parametrize("name", FILE_COMMANDS)
@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_users_file_is_never_an_output(name: str, flags: list[str], work: dict[str, Path], tmp_path: Path) -> None:
    if flags and name.startswith("precompute"):
        pytest.skip("precompute has no --overwrite")
    victim = _victim(tmp_path / "notes.txt")
    result = runner.invoke(app, [*_command(name, work, victim, tmp_path), *flags])
    assert result.exit_code == 2, result.output
    assert "written by ser" in _one_line(result)
    assert victim.read_bytes() == USER_BYTES
    assert not (work["root"] / "unused.h5").exists()


@pytest.mark.parametrize("name", FOLDER_COMMANDS)
@pytest.mark.parametrize("flags", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_a_folder_of_user_files_is_never_an_output(name: str, flags: list[str], work: dict[str, Path],
                                                   tmp_path: Path) -> None:
    if flags and name == "pretrain-saliency":
        pytest.skip("pretrain-saliency has no --overwrite")
    out = tmp_path / "home"
    for user_file in ("model.pt", "params.yaml", "metrics.json"):
        _victim(out / user_file)
    before = _tree_digest(out)
    result = runner.invoke(app, [*_command(name, work, out, tmp_path), *flags])
    assert result.exit_code == 2, result.output
    assert "did not write" in _one_line(result)
    assert _tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # no staging folder, no lock file left


@pytest.mark.parametrize("name", (*FILE_COMMANDS, *FOLDER_COMMANDS))
@pytest.mark.parametrize("special", ["fifo", "/dev/null"])
def test_devices_and_fifos_are_never_outputs(name: str, special: str, work: dict[str, Path], tmp_path: Path) -> None:
    if special == "fifo":
        out = tmp_path / "pipe"
        os.mkfifo(out)
    else:
        out = Path(os.devnull)
    result = runner.invoke(app, _command(name, work, out, tmp_path))
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert "not a regular file" in line or "not a folder" in line or "not a directory" in line, line
    assert stat.S_ISFIFO(os.stat(out).st_mode) if special == "fifo" else stat.S_ISCHR(os.stat(out).st_mode)


@pytest.mark.parametrize("args", [["data", "info", "{fifo}"],
                                  ["train", "--data", "{fifo}", "--out", "{tmp}/r", "--device", "cpu", *TINY],
                                  ["precompute", "--from-dataset", "--data", "{fifo}", "--out", "{tmp}/m.h5"],
                                  ["evaluate", "--run", "{run}", "--data", "{fifo}", "--out", "{tmp}/e"]],
                         ids=["info", "train", "precompute", "evaluate"])
def test_a_fifo_as_input_is_refused_not_waited_on(args: list[str], work: dict[str, Path], tmp_path: Path) -> None:
    fifo = tmp_path / "data.h5"
    os.mkfifo(fifo)
    filled = [a.format(fifo=fifo, tmp=tmp_path, run=work["run"]) for a in args]
    result = runner.invoke(app, filled)
    assert result.exit_code == 2, result.output
    assert "not a regular file" in _one_line(result)


def test_synth_replaces_its_own_file_only_of_the_same_settings_or_with_overwrite(work: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    base = _command("synth", work, out, tmp_path)
    assert runner.invoke(app, ["-q", *base]).exit_code == 0
    first = out.read_bytes()
    assert runner.invoke(app, ["-q", *base]).exit_code == 0 and out.read_bytes() == first  # same settings
    other = runner.invoke(app, [*base, "--set", "data.synth.seed=7"])
    assert other.exit_code == 2 and "--overwrite" in _one_line(other)
    assert out.read_bytes() == first
    replaced = runner.invoke(app, ["-q", *base, "--set", "data.synth.seed=7", "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert out.read_bytes() != first


@pytest.mark.parametrize("name", ["synth", "import", "precompute"])
def test_a_users_partial_file_is_never_touched(name: str, work: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "x.h5"
    users = [_victim(Path(f"{out}.partial")), _victim(Path(f"{out}.rank0of2.partial"))]
    result = runner.invoke(app, ["-q", *_command(name, work, out, tmp_path)])
    assert result.exit_code == 0, result.output
    assert all(p.read_bytes() == USER_BYTES for p in users)
    assert not [p for p in tmp_path.iterdir() if ".ser-work" in p.name or p.name.endswith(".ser-lock")]


def test_atomic_writes_never_touch_a_users_partial_file(tmp_path: Path) -> None:
    model = tmp_path / "s" / "model.pt"
    user = _victim(Path(f"{model}.partial"))
    save_saliency_checkpoint(model, SaliencyNet("resnet18_reduced"), "x", {})
    assert user.read_bytes() == USER_BYTES and model.is_file()
    assert sorted(p.name for p in model.parent.iterdir()) == ["model.pt", "model.pt.partial"]


@pytest.mark.parametrize("state", ["finished", "outs removed by dvc"])
def test_train_into_an_old_run_folder_without_manifest_still_works(state: str, work: dict[str, Path],
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(work["run"], run)
    (run / MANIFEST).unlink()  # a run folder written before run folders carried a manifest
    if state != "finished":  # what `dvc repro` leaves before rerunning the stage: its cache-less outs
        for name in ("model.pt", "accuracy_matrix.json", "run.json", "params.yaml", "avg_accuracy.png"):
            (run / name).unlink()
    result = runner.invoke(app, _command("train", work, run, tmp_path))
    assert result.exit_code == 0, result.output
    assert ("nothing to do" in result.stderr) == (state == "finished")
    assert (run / "model.pt").is_file()


# --- manifests are data: entries outside the folder are refused and nothing is deleted


def _crafted_manifest(out: Path, tmp_path: Path, how: str) -> Path:
    """Add an entry naming a victim file outside `out` to `out`'s manifest; returns the victim."""
    victim = _victim(tmp_path / "outside" / "victim.txt")
    entry = {"absolute": str(victim), "dotdot": os.path.relpath(victim, out)}.get(how)
    if how == "symlink":
        (out / "link").symlink_to(victim.parent, target_is_directory=True)
        entry = "link/victim.txt"
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"].append(entry)
    (out / MANIFEST).write_text(json.dumps(manifest))
    return victim


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_evaluate_never_deletes_what_a_crafted_manifest_lists(how: str, work: dict[str, Path], tmp_path: Path) -> None:
    ev = tmp_path / "EV"
    shutil.copytree(work["eval"], ev)
    victim = _crafted_manifest(ev, tmp_path, how)
    before = _tree_digest(ev)
    result = runner.invoke(app, [*_command("evaluate", work, ev, tmp_path), "--set", "evaluate.attacks=[fgsm]",
                                 "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "lies outside" in _one_line(result)
    assert victim.read_bytes() == USER_BYTES and _tree_digest(ev) == before


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_compare_never_deletes_what_a_crafted_manifest_lists(how: str, work: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "REPORT"
    assert runner.invoke(app, ["-q", "compare", str(work["eval"]), "--out", str(report)]).exit_code == 0
    victim = _crafted_manifest(report, tmp_path, how)
    before = _tree_digest(report)
    second = tmp_path / "EV2"
    shutil.copytree(work["eval"], second)
    result = runner.invoke(app, ["compare", str(work["eval"]), str(second), "--out", str(report), "--overwrite"])
    assert result.exit_code == 2, result.output
    assert "lies outside" in _one_line(result)
    assert victim.read_bytes() == USER_BYTES and _tree_digest(report) == before


def test_manifest_entries_are_checked_before_anything_is_moved(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = OutputFolder(out, "ser test", "id-1")
    (folder.start() / "a.txt").write_text("1")
    folder.commit()
    victim = _victim(tmp_path / "victim.txt")
    (out / MANIFEST).write_text(json.dumps({"command": "ser test", "identity": "id-1", "files": ["../victim.txt"]}))
    with pytest.raises(UserError, match="lies outside"):
        OutputFolder(out, "ser test", "id-2", overwrite=True).state()
    again = OutputFolder(out, "ser test", "id-2", overwrite=True)
    (again.start() / "b.txt").write_text("2")
    with pytest.raises(UserError, match="lies outside"):
        again.commit()
    assert victim.read_bytes() == USER_BYTES and (out / "a.txt").read_text() == "1"


# --- one writer per output: a second writer exits 2 naming the holder


@pytest.mark.parametrize("name", (*FILE_COMMANDS, *FOLDER_COMMANDS))
def test_a_second_writer_is_refused_naming_the_holder(name: str, work: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / ("out.json" if name == "precompute-metrics" else "out")
    option = "--metrics" if name == "precompute-metrics" else "--out"
    with output_lock(out):  # the first writer, as far as the command can tell (flock is per open file)
        result = runner.invoke(app, _command(name, work, out, tmp_path))
    assert result.exit_code == 2, result.output
    line = _one_line(result)
    assert f"{option} {out}" in line and f"pid {os.getpid()}" in line, line
    assert not out.exists() and not Path(f"{out}.partial").exists()
    assert runner.invoke(app, ["-q", *_command(name, work, out, tmp_path)]).exit_code == 0  # lock released


def test_the_lock_of_a_killed_writer_is_free(tmp_path: Path) -> None:
    out = tmp_path / "p.h5"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from ser_cli.runtime.output_lock import output_lock\n"
                               "with output_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"pid {holder.pid}"), output_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).exists()  # kill -9 left the file behind, but the kernel freed its lock
    with output_lock(out):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()
