"""A full disk: every HDF5 writer checks the space it needs first and stops with one line, exit 1, nothing left;
a read-only output folder: one line, exit 2.

The output folder is a tiny tmpfs mounted in a private mount namespace (`unshare -m`, so nothing outside the test
sees it; needs root or user namespaces, as in this project's CI container; skipped where neither is available).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ser_cli.runtime.disk import check_free_space
from ser_cli.runtime.errors import RunFailure
from tests import faults

TINY = ["--set", "data.synth.train_per_class=4", "--set", "data.synth.height=32", "--set", "data.synth.width=48"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny SynthSal file (outside the tiny disks) for the commands that read one."""
    path = tmp_path_factory.mktemp("data") / "data.h5"
    subprocess.run([sys.executable, "-m", "ser_cli", "-q", "data", "synth", "--out", str(path), *TINY], check=True,
                   env=faults.env(), capture_output=True)
    return path


@pytest.fixture(scope="module")
def run(data: Path) -> Path:
    """A tiny finished `ser train` run on `data`, for `ser evaluate`."""
    path = data.parent / "run"
    subprocess.run([sys.executable, "-m", "ser_cli", "-q", "train", "--data", str(data), "--out", str(path), "--set",
                    "train.buffer_size=8"], check=True, env=faults.env(), capture_output=True)
    return path


@pytest.fixture(scope="module")
def sources(data: Path) -> dict[str, Path]:
    """An image folder to import and a saliency model (with two JPEG images) to predict with."""
    from tests.fixtures_formats import write_imagefolder

    root = data.parent
    folder = write_imagefolder(root / "imagefolder", ["cat", "dog"])
    model = root / "saliency"
    subprocess.run([sys.executable, "-m", "ser_cli", "-q", "pretrain-saliency", "--data", str(data), "--out",
                    str(model), "--set", "saliency.epochs=1", "--set", "saliency.precise_bn_batches=0"], check=True,
                   env=faults.env(), capture_output=True)
    return {"folder": folder, "model": model / "model.pt", "images": next(folder.rglob("*.jp*g")).parent}


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && umount /mnt"],
                           capture_output=True)
    return probe.returncode == 0


def _on_tiny_disk(mount: Path, size: str, command: list[str],
                  read_only: bool = False) -> subprocess.CompletedProcess:
    """Run `command` with a `size` tmpfs mounted at `mount` (visible to it alone; `read_only`: mounted ro)."""
    mount.mkdir(parents=True, exist_ok=True)
    options = f"{'ro,' if read_only else ''}size={size}"
    script = f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && {shlex.join(command)}; " \
             f"code=$?; ls -A {shlex.quote(str(mount))} >&2; exit $code"
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=faults.env(),
                          timeout=300)


def test_check_free_space_names_the_need_and_the_free_space(tmp_path: Path) -> None:
    check_free_space(tmp_path / "x.h5", 1, "one byte")
    with pytest.raises(RunFailure, match=r"x\.h5: the images need .* of disk space, .* free in"):
        check_free_space(tmp_path / "new" / "x.h5", shutil.disk_usage(tmp_path).free, "the images")


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace here")
@pytest.mark.parametrize("args", [
    ["data", "synth", "--out", "{disk}/synth.h5", *TINY],
    ["data", "spurious", "{data}", "--out", "{disk}/spurious.h5"],
    ["precompute", "--from-dataset", "--data", "{data}", "--out", "{disk}/maps.h5"],
], ids=["data-synth", "data-spurious", "precompute"])
def test_a_full_disk_is_one_line_and_exit_1(tmp_path: Path, data: Path, args: list[str]) -> None:
    disk = tmp_path / "disk"
    command = [sys.executable, "-m", "ser_cli", "-q", *(a.format(disk=disk, data=data) for a in args)]
    done = _on_tiny_disk(disk, "1m", command)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "disk space" in lines[0], done.stderr[-2000:]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace here")
@pytest.mark.parametrize("args", [
    ["data", "synth", "--out", "{disk}/synth.h5", *TINY],
    ["data", "spurious", "{data}", "--out", "{disk}/spurious.h5"],
    ["precompute", "--from-dataset", "--data", "{data}", "--out", "{disk}/maps.h5"],
    ["train", "--data", "{data}", "--out", "{disk}/run", "--set", "train.buffer_size=8"],
    ["compare", "{data}", "--out", "{disk}/report"],
    ["pretrain-saliency", "--data", "{data}", "--out", "{disk}/saliency", "--set", "saliency.epochs=1"],
    ["evaluate", "--run", "{run}", "--data", "{data}", "--out", "{disk}/eval"],
    ["data", "import", "imagefolder", "{folder}", "--out", "{disk}/imported.h5", "--set", "data.height=16",
     "--set", "data.width=16"],
    ["predict", "{images}", "--model", "{model}", "--out", "{disk}/maps", "--size", "32x48"],
], ids=["data-synth", "data-spurious", "precompute", "train", "compare", "pretrain-saliency", "evaluate", "data-import",
        "predict"])
def test_a_read_only_output_folder_is_one_line_and_exit_2(tmp_path: Path, data: Path, args: list[str],
                                                          request: pytest.FixtureRequest) -> None:
    """As root, permissions do not stop a write; a read-only mount does (EROFS), as it would for any user."""
    disk = tmp_path / "disk"
    run = request.getfixturevalue("run") if "{run}" in args else None
    src = request.getfixturevalue("sources") if any(k in a for a in args for k in ("{folder}", "{images}")) else {}
    values = {"disk": disk, "data": data, "run": run, **src}
    command = [sys.executable, "-m", "ser_cli", "-q", *(a.format(**values) for a in args)]
    done = _on_tiny_disk(disk, "256m", command, read_only=True)  # room enough: the write itself must fail
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr[-2000:]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace here")
def test_predict_h5_on_a_full_disk_is_one_line_not_a_crash(tmp_path: Path, sources: dict[str, Path]) -> None:
    """Before the space check, h5py's buffered writes failed at close (`Can't close file`, a multi-line error) and
    the process could then die with SIGSEGV (it did with --out on a larger disk)."""
    disk = tmp_path / "disk"
    command = [sys.executable, "-m", "ser_cli", "-q", "predict", str(sources["images"]), "--model",
               str(sources["model"]), "--out", str(disk / "maps"), "--h5", str(disk / "maps.h5"), "--size", "32x48"]
    done = _on_tiny_disk(disk, "16k", command)
    lines = [line for line in done.stderr.splitlines() if line.strip()]  # `ls` of the disk adds a line per file
    assert done.returncode == 1, done.stderr[-2000:]
    assert lines == [lines[0]] and lines[0].startswith("error: ") and "disk space" in lines[0], done.stderr[-2000:]


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="cannot mount a tmpfs in a private mount namespace here")
def test_pngs_that_would_fill_the_disk_under_an_open_h5_stop_first(tmp_path: Path, sources: dict[str, Path]) -> None:
    """The maps file fits (the margin made small so that it does on a 2 MB disk) but a large image's PNGs do not:
    they are refused before PIL fills the disk. Before, PIL filled it and the line named no file (`error: output: No
    space left on device`); with more maps buffered (40 noisy images at 256x256 on 8 MB), HDF5 then failed to close
    the open --h5 file too (`Can't close file`, as in the test above)."""
    import numpy as np
    from PIL import Image

    big = tmp_path / "big"
    big.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)  # PNG cannot shrink it
    Image.fromarray(noise).save(big / "zz.png")
    disk = tmp_path / "disk"
    command = faults.command("set-attr", "ser_cli.runtime.disk.MARGIN_BYTES", 300_000, "-q", "predict",
                             sources["images"], big, "--model", sources["model"], "--out", disk / "maps", "--h5",
                             disk / "maps.h5", "--size", "32x48", "--batch-size", 1)
    done = _on_tiny_disk(disk, "2m", command)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr[-2000:]
    assert lines == [lines[0]] and "the PNGs of 1 image(s) need" in lines[0], done.stderr[-2000:]
