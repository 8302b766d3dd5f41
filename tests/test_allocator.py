"""Allocator tuning (`runtime/allocator.py`): freed large blocks stay mapped, so a repeated allocation costs no page
faults, and `ser train` computes the same weights with the tuning on and off."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ser_cli.runtime import allocator
from ser_cli.runtime.allocator import (
    RESTARTED,
    allocator_choice,
    allocator_to_preload,
    find_mimalloc,
    find_tcmalloc,
    preload_environment,
)
from tests import faults
from tests.conftest import make_synth

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's mallopt")


def _tiny_train(data: Path) -> list[str]:
    """`ser train` arguments of a two-task DER++ run of a few steps on `data`."""
    return ["train", "--data", str(data), "--device", "cpu", "--method", "derpp", "--set", "train.n_tasks=2",
            "--set", "train.classes_per_task=2", "--set", "train.buffer_size=8", "--set", "train.batch_size=4",
            "--set", "train.minibatch_size=4"]


def _classifier(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "model.pt", weights_only=True)["learner"]["classifier"]


def _environ_without_allocator_settings() -> dict[str, str]:
    """This process's environment without what would preload tcmalloc or stop the restart."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", RESTARTED, "SER_ALLOCATOR")}

# A child that allocates, touches and frees a 64 MiB tensor (twice glibc's largest mmap threshold) 20 times and
# prints the minor page faults of the last four rounds. With the tuning the first rounds (up to ~9 seen here) still
# take fresh pages: small allocations between rounds land in the freed block until the heap's layout settles.
FAULTS = """
import resource, sys, torch
from ser_cli.runtime.allocator import keep_freed_memory_mapped
applied = keep_freed_memory_mapped() if sys.argv[1] == "on" else False
counts = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.ones(16 * 2**20)  # 64 MiB of float32, every page written
    del block
    counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(counts[-4:]))
"""


def _faults_of_repeated_allocations(tuning: str) -> tuple[bool, int]:
    done = subprocess.run([sys.executable, "-c", FAULTS, tuning], capture_output=True, text=True, check=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": ""}, cwd=Path(__file__).resolve().parents[1])
    applied, count = done.stdout.split()
    return applied == "True", int(count)


@glibc
def test_a_freed_large_block_is_reused_without_page_faults() -> None:
    applied, tuned = _faults_of_repeated_allocations("on")
    untouched, plain = _faults_of_repeated_allocations("off")
    assert applied and not untouched
    pages = 4 * 64 * 2**20 // 4096  # four rounds of 64 MiB
    assert plain >= pages // 2, plain  # without: the kernel maps and zeroes the block again each round
    assert tuned < pages // 4, tuned  # with: once settled, the earlier rounds' pages are reused


@glibc
def test_train_gives_the_same_weights_with_and_without_the_tuning(tmp_path: Path) -> None:
    common = _tiny_train(make_synth(tmp_path / "d.h5"))
    for name, switch in (("tuned", []), ("plain", ["--no-memory-tuning"])):
        code = faults.run_forked(["-q", *switch, *common, "--out", tmp_path / name], cwd=tmp_path,
                                 log=tmp_path / f"{name}.log")
        assert code == 0, (tmp_path / f"{name}.log").read_text()[-2000:]
    tuned, plain = (_classifier(tmp_path / n) for n in ("tuned", "plain"))
    assert tuned.keys() == plain.keys() and all(torch.equal(tuned[k], plain[k]) for k in tuned)
    assert (json.loads((tmp_path / "tuned" / "accuracy_matrix.json").read_text())
            == json.loads((tmp_path / "plain" / "accuracy_matrix.json").read_text()))


tcmalloc = pytest.mark.skipif(find_tcmalloc() is None, reason="tcmalloc is not installed (libtcmalloc-minimal4)")
mimalloc = pytest.mark.skipif(find_mimalloc() is None,
                              reason="cmeel-mimalloc is not installed (a dependency on Linux x86-64 and aarch64)")

# A child that calls the entry point's restart and reports the allocator it ends up on, mimalloc's purge delay and
# its arguments. HIDE_TCMALLOC=1 makes this machine look like one without tcmalloc (the README's set-up alone).
RESTART = """
import os, sys
from ser_cli.runtime import allocator
if os.environ.get("HIDE_TCMALLOC"):
    allocator.find_tcmalloc = lambda: None
allocator.restart_on_fast_allocator(sys.argv[1:])
print(allocator.loaded_caching_allocator(), os.environ.get("MIMALLOC_PURGE_DELAY"), *sys.argv[1:])
"""


def _allocator_after_restart(*args: str, **environ: str) -> str:
    env = {k: v for k, v in _environ_without_allocator_settings().items() if k != "MIMALLOC_PURGE_DELAY"}
    done = subprocess.run([sys.executable, "-c", RESTART, *args], capture_output=True, text=True, check=True,
                          env={**env, **environ}, cwd=Path(__file__).resolve().parents[1])
    return done.stdout.strip()


@tcmalloc
def test_the_entry_point_restarts_on_tcmalloc_once_with_the_same_arguments() -> None:
    assert _allocator_after_restart("train", "--out", "a b") == "tcmalloc None train --out a b"
    assert _allocator_after_restart("--no-memory-tuning", "train") == "None None --no-memory-tuning train"
    assert _allocator_after_restart("train", SER_ALLOCATOR="glibc") == "None None train"
    assert _allocator_after_restart("train", **{RESTARTED: "1"}) == "None None train"  # never a second restart


@mimalloc
def test_without_tcmalloc_the_entry_point_restarts_on_mimalloc_from_pip() -> None:
    assert _allocator_after_restart("train", "--out", "a b", HIDE_TCMALLOC="1") == "mimalloc -1 train --out a b"
    assert _allocator_after_restart("train", SER_ALLOCATOR="mimalloc") == "mimalloc -1 train"  # chosen by name
    assert _allocator_after_restart("train", SER_ALLOCATOR="mimalloc", MIMALLOC_PURGE_DELAY="5") == "mimalloc 5 train"
    assert _allocator_after_restart("--no-memory-tuning", "t", HIDE_TCMALLOC="1") == "None None --no-memory-tuning t"
    assert _allocator_after_restart("train", HIDE_TCMALLOC="1", SER_ALLOCATOR="glibc") == "None None train"


def test_preloading_puts_the_library_first_and_marks_the_restart() -> None:
    env = preload_environment({"LD_PRELOAD": "/x/libother.so", "PATH": "/bin"}, Path("/l/libtcmalloc.so.4"))
    assert env["LD_PRELOAD"] == "/l/libtcmalloc.so.4 /x/libother.so" and env["PATH"] == "/bin"
    assert env[RESTARTED] == "1" and int(env["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 2**40
    assert "MIMALLOC_PURGE_DELAY" not in env
    assert allocator_to_preload(env) is None  # a process started with it never preloads again
    assert allocator_to_preload({"SER_ALLOCATOR": "glibc"}) is None
    mi = preload_environment({"PATH": "/bin"}, Path("/p/cmeel.prefix/lib/libmimalloc.so.3"))
    assert mi["LD_PRELOAD"] == "/p/cmeel.prefix/lib/libmimalloc.so.3" and mi["MIMALLOC_PURGE_DELAY"] == "-1"
    assert "TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD" not in mi
    assert allocator_to_preload({"LD_PRELOAD": "/p/libmimalloc.so.3"}) is None  # preloaded by the user


def test_the_preference_is_tcmalloc_then_mimalloc_unless_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    tc, mi = Path("/l/libtcmalloc_minimal.so.4"), Path("/p/libmimalloc.so.3")
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: tc)
    monkeypatch.setattr(allocator, "find_mimalloc", lambda: mi)
    assert allocator_to_preload({}) == tc and allocator_to_preload({"SER_ALLOCATOR": "auto"}) == tc
    assert allocator_to_preload({"SER_ALLOCATOR": "MiMalloc"}) == mi
    assert allocator_to_preload({"SER_ALLOCATOR": "bogus"}) is None
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: None)
    assert allocator_to_preload({}) == mi and allocator_to_preload({"SER_ALLOCATOR": "tcmalloc"}) is None
    monkeypatch.setattr(allocator, "find_mimalloc", lambda: None)
    assert allocator_to_preload({}) is None  # neither: ser stays on glibc and tunes it with mallopt
    with pytest.raises(ValueError, match="SER_ALLOCATOR='bogus': expected one of auto, tcmalloc, mimalloc, glibc"):
        allocator_choice({"SER_ALLOCATOR": "bogus"})


def test_a_misspelt_allocator_choice_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**_environ_without_allocator_settings(), "SER_ALLOCATOR": "tcmaloc"}
    done = subprocess.run([sys.executable, "-m", "ser_cli", "data", "info", str(tmp_path / "none.h5")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [
        "error: ser: SER_ALLOCATOR='tcmaloc': expected one of auto, tcmalloc, mimalloc, glibc (see ser --help)"]


def _train_on(tmp_path: Path, choice: str) -> None:
    """`ser train` on the allocator `choice` and with --no-memory-tuning: the same weights, bit for bit."""
    common = _tiny_train(make_synth(tmp_path / "d.h5"))
    env = {**_environ_without_allocator_settings(), "SER_ALLOCATOR": choice}
    for name, switch in ((choice, []), ("plain", ["--no-memory-tuning"])):
        subprocess.run([sys.executable, "-m", "ser_cli", "-q", *switch, *common, "--out", str(tmp_path / name)],
                       check=True, env={**env, "OMP_NUM_THREADS": "1"}, cwd=tmp_path, capture_output=True)
    tuned, plain = (_classifier(tmp_path / n) for n in (choice, "plain"))
    assert tuned.keys() == plain.keys() and all(torch.equal(tuned[k], plain[k]) for k in tuned)


@tcmalloc
def test_train_on_tcmalloc_gives_the_same_weights_as_without_tuning(tmp_path: Path) -> None:
    _train_on(tmp_path, "tcmalloc")


@mimalloc
def test_train_on_mimalloc_gives_the_same_weights_as_without_tuning(tmp_path: Path) -> None:
    _train_on(tmp_path, "mimalloc")
