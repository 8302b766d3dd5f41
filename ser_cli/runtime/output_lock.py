"""One writer per output: an advisory lock beside every path a command writes, held for the whole command.

The lock is `fcntl.flock` on `.NAME.ser-lock` in the output's folder (beside it, not inside: a folder output may
not exist yet, and a file output is replaced by rename). The kernel frees it when the holder exits, `kill -9`
included, so a crash never leaves an output locked. The holder writes its pid into the lock file, so a second
writer is refused with one line naming it (exit 2) instead of the two crashing each other mid-rename. The holder
deletes the lock file before releasing it; a waiter that locked a file already deleted retries on the new one.

`locks_outputs("out", ...)` wraps a stage's `run`: it refuses outputs that are devices, FIFOs, sockets or paths
through a symbolic-link loop, then locks the named arguments' paths. Under torchrun a stage made for it
(precompute, pretrain-saliency, evaluate) writes shared outputs from rank 0 only (`DistInfo.is_main`), so only rank 0
takes the lock (the ranks of one job would refuse each other otherwise); a second torchrun job is refused at its rank
0, before any rank joins the process group, and torchrun stops its other ranks. A stage that runs in one process
(`locks_outputs(..., torchrun=False)`: train, predict, compare, data synth / import / spurious) refuses a launch of
several: every rank would write the same output, all but rank 0 unlocked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import inspect
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from ser_cli.runtime.errors import UserError
from ser_cli.runtime.output_folder import symlink_loop

F = TypeVar("F", bound=Callable[..., Any])
SUFFIX = ".ser-lock"


def lock_path(output: Path) -> Path:
    """`.NAME.ser-lock` in the folder of `output` (resolved, so `.` and `~` lock the folder they name)."""
    resolved = Path(output).expanduser().resolve()
    return resolved.parent / f".{resolved.name or 'root'}{SUFFIX}"


def check_not_special(output: Path, option: str = "--out") -> None:
    """Refuse an existing output that is neither a regular file nor a folder: a device, FIFO or socket is never
    replaced (as root, `os.replace` over /dev/null would swap the device for a regular file)."""
    try:
        mode = os.stat(output).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as err:
        if err.errno == errno.ELOOP:  # `ln -s loop loop; --out loop/run`: no file can ever be written there
            raise symlink_loop(option, output) from None
        raise
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"{option} {output}: exists and is not a regular file or folder (a device, FIFO or socket); "
                        "choose another path")


@contextlib.contextmanager
def output_lock(output: Path, option: str = "--out") -> Iterator[Path]:
    """Hold the exclusive lock of `output` for the block; UserError naming the holder's pid when another has it."""
    path = lock_path(output)
    try:
        made = _make_parents(path.parent)
    except OSError as err:  # a file where a folder should be, or no permission
        raise UserError(f"{option} {output}: cannot create its folder {path.parent} ({err.strerror})") from None
    try:
        fd = _acquire(path, output, option)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield path
        finally:
            path.unlink(missing_ok=True)  # while still locked: a waiter then finds its inode gone and retries
            os.close(fd)
    finally:
        _remove_if_empty(made)


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents (the lock lives there); returns those created, deepest first."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders `_make_parents` created that the command left empty (a refused run leaves nothing)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (the command wrote there) or gone: keep it and its parents


def _acquire(path: Path, output: Path, option: str) -> int:
    """An fd holding the lock of the file now at `path` (retried if the previous holder deleted it meanwhile)."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.ENOTDIR):
                raise UserError(f"{option} {output}: cannot create its lock file {path} ({err.strerror})") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{option} {output}: being written by another ser process (pid {holder}); wait for it "
                            "to finish or stop it") from None
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder deleted this lock file as it finished: lock the one there now


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def locks_outputs(*names: str, option: dict[str, str] | None = None, torchrun: bool = True) -> Callable[[F], F]:
    """Decorate a stage's `run`: check and lock the paths passed as the arguments `names` (None: not given) for
    the whole call. `option` maps an argument to its CLI name. `torchrun`: the stage splits its work over torchrun's
    ranks and only rank 0 writes, so only rank 0 locks; False: it runs in one process and a launch of several is
    refused (see the module docstring)."""
    options = {name: f"--{name}" for name in names} | (option or {})

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            outputs = {options[n]: Path(bound.arguments[n]) for n in names if bound.arguments[n] is not None}
            with contextlib.ExitStack() as stack:
                if _writes_here(torchrun):
                    for opt, path in outputs.items():
                        check_not_special(path, opt)
                        stack.enter_context(output_lock(path, opt))
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _writes_here(torchrun: bool) -> bool:
    """Whether this process writes (and so locks) the outputs: rank 0 of a torchrun stage, any one-process run.

    Raises:
        UserError: several processes launched for a stage that runs in one.
    """
    from ser_cli.runtime.distributed import detect  # torch is imported there: only when a stage runs

    info = detect()
    if info.is_distributed and not torchrun:
        raise UserError(f"WORLD_SIZE={info.world_size}: this command runs in one process (torchrun runs ser "
                        "precompute, pretrain-saliency and evaluate); run it without torchrun")
    return info.is_main
