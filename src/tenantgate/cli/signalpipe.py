"""The supervisor's signals as bytes on a pipe its loop watches: no work in a handler, none lost.

``route_signals`` makes each of ``HANDLED`` write its number to the pipe (``signal.set_wakeup_fd``) and keeps
its default action away; the loop reads the numbers with ``received`` and acts on them outside any handler.
``restore_signals`` puts the default handlers back and closes the pipe.
"""

from __future__ import annotations

import os
import signal
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)


def open_pipe() -> tuple[int, int]:
    """A new pipe (read end, write end), both ends non-blocking."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def route_signals(write: int) -> None:
    """Each of ``HANDLED`` from now on writes its number to ``write``."""
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    for sig in HANDLED:
        signal.signal(sig, _ignore)


def received(read: int) -> bytes:
    """The numbers of the signals that arrived since the last call (b"" when none)."""
    try:
        return os.read(read, 512)
    except BlockingIOError:
        return b""


def restore_signals(pipe: tuple[int, int] | None) -> None:
    """Default handlers again and ``pipe`` (from ``open_pipe``, when one was opened) closed."""
    signal.set_wakeup_fd(-1)
    if pipe is not None:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in pipe:
            os.close(fd)


def _ignore(_signum: int, _frame: Any) -> None:
    """The wakeup pipe carries the signal; the handler only keeps the default action away."""
