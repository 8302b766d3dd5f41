"""Ordered parallel map over a pool of worker processes, with a bounded window so memory stays flat.

The import decodes JPEGs and resizes them in worker processes while the main process alone writes the HDF5
file (h5py handles must not be shared across processes). `Pool.imap` and `Executor.map` submit every item up
front and buffer every result the writer has not consumed yet, which for ImageNet-size imports is gigabytes;
here at most `window` items are in flight. Workers are started with `spawn`, so they inherit no open HDF5
handle and no lock held by a progress-bar thread; one pool serves every split of an import. Workers ignore
Ctrl-C: the main process alone handles it (cancels what has not started, lets the pool wind down, keeps the
partial file), since a worker killed by SIGINT breaks the pool and can leave its shutdown hanging.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


@contextmanager
def worker_pool(workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """A pool of `workers` spawned processes (started on first use), or None for `workers == 0`."""
    if workers == 0:
        yield None
        return
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_interrupts)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Worker initializer: Ctrl-C reaches the whole process group; only the main process should act on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], pool: ProcessPoolExecutor | None,
                window: int = 8) -> Iterator[R]:
    """`fn(item)` for every item, yielded in the items' order.

    Args:
        fn: A picklable (module-level) function when a pool is given.
        pool: Where to run `fn`; None runs it in this process.
        window: Items in flight at once.

    An exception raised by `fn` in a worker is re-raised here, at its item; closing the generator early (an
    error, Ctrl-C) cancels the items not started yet.
    """
    if pool is None:
        yield from map(fn, items)
        return
    items = iter(items)
    pending: deque[Future[R]] = deque(pool.submit(fn, item) for _, item in zip(range(window), items, strict=False))
    try:
        while pending:
            result = pending.popleft().result()
            nxt = next(items, _END)
            if nxt is not _END:
                pending.append(pool.submit(fn, nxt))
            yield result
    finally:
        for future in pending:
            future.cancel()
