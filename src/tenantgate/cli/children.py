"""Forking the supervisor's child processes (workers and the /metrics process) and talking to them.

``fork`` blocks the supervisor's signals across ``os.fork`` (until the child has dropped the supervisor's
handlers, a signal sent to it would land in the supervisor's wakeup pipe), resets them in the child, lets
the supervisor's files be closed there, runs the child's body and exits with what it returns: a child never
returns into the supervisor's loop, whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Collection, Mapping
from typing import Any, NoReturn

EXIT_ERROR = 1

Report = Mapping[str, Any]  # a worker's JSON line once it serves: {"grpc": port, "health": port, "http": port, ...}
Announce = Callable[[Report], None]


def fork(child: Callable[[], int], *, on_interrupt: Any, handled: Collection[signal.Signals],
         forget_parent: Callable[[], None]) -> int:
    """Fork a process that runs ``child()`` and exits with what it returns; return its pid (in the parent).

    ``handled``: the signals the parent handles (blocked across the fork, default again in the child;
    SIGINT gets ``on_interrupt``, SIGHUP is ignored until the child installs its own handler).
    ``forget_parent`` runs first in the child: close what of the parent's the child must not hold.
    """
    sys.stdout.flush()  # nothing buffered here may be written twice, by the child too
    sys.stderr.flush()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    pid = os.fork()
    if pid == 0:
        _run_child(child, on_interrupt, mask, forget_parent)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _run_child(child: Callable[[], int], on_interrupt: Any, mask: set[int | signal.Signals],
               forget_parent: Callable[[], None]) -> NoReturn:
    code = EXIT_ERROR
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, on_interrupt)
        # Ignored until a worker's server handles it; the supervisor sends SIGHUP only after that.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        forget_parent()
        code = child()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    except BaseException:  # noqa: BLE001 - whatever happens, this process must not return into the loop
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def announcer(fd: int) -> Announce:
    """How a worker tells the supervisor it serves: one JSON line on the pipe ``fd``, then the pipe closes."""
    def announce(report: Report) -> None:
        os.write(fd, json.dumps(report).encode("utf-8") + b"\n")  # one small write: atomic on a pipe
        os.close(fd)

    return announce


def read_report(line: bytes) -> tuple[Report, tuple[int, int, int]] | None:
    """The report in a line ``announcer`` wrote and the ports it names (gRPC, health, HTTP); None when the
    line is not such a report."""
    try:
        report = json.loads(line)
        ports = (int(report["grpc"]), int(report["health"]), int(report["http"]))
    except (ValueError, KeyError, TypeError):
        return None
    return report, ports


def send(pid: int, sig: signal.Signals) -> None:
    """``kill(pid, sig)``; a process that has exited already is left to the loop to reap."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def describe(code: int) -> str:
    """An exit code from ``os.waitstatus_to_exitcode`` in words."""
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
