"""Ctrl-C (SIGINT) and SIGTERM as a request to stop at the next safe point, not an exception mid-step.

Inside `stop_requests()`, the first signal only sets a flag that a training loop polls between steps; the loop
then writes its checkpoint and raises `Interrupted`, so the user's progress up to the last finished step is kept.
A second Ctrl-C restores the default behaviour (an immediate KeyboardInterrupt) for a user who will not wait.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from ser_cli.runtime.errors import SerError


class Interrupted(SerError):
    """The user interrupted a run, which stopped cleanly (exit 130, the shell's code for Ctrl-C)."""

    exit_code = 130


@contextlib.contextmanager
def stop_requests() -> Iterator[Callable[[], bool]]:
    """Yield a function that tells whether SIGINT or SIGTERM arrived; restores the previous handlers on exit."""
    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield lambda: False
        return
    requested = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handle(signum: int, frame: object) -> None:
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    for s in previous:
        signal.signal(s, handle)
    try:
        yield requested.is_set
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
