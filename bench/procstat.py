"""A process's own CPU and memory accounting, read from /proc (Linux)."""

from __future__ import annotations

import math
import os
import resource

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds so far of every thread of ``pid`` and of its live descendants (the workers of
    ``serve --workers N``), from /proc/<pid>/stat utime + stime.

    Resolution is one clock tick (usually 10 ms): measure windows of many calls. NaN if ``pid`` is unreadable.
    """
    own = _stat_cpu(pid)
    if math.isnan(own):
        return own
    return own + sum(_stat_cpu(child) for child in _descendants(pid))


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stat_cpu(pid: int) -> float:
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state) of proc(5); utime and stime are fields 14 and 15.
    return math.nan if fields is None else (int(fields[11]) + int(fields[12])) / _TICK


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry))  # fields[1]: ppid
    found, todo = [], list(parents.get(pid, ()))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += parents.get(child, ())
    return found


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib(pid: int | None = None, *, tree: bool = False) -> float:
    """Current resident set (VmRSS) of ``pid`` (default: this process) in MiB, with ``tree`` summed over its
    descendants too; NaN if unreadable."""
    own = _status_mib(pid, "VmRSS:")
    if not tree or pid is None or math.isnan(own):
        return own
    return own + sum(value for child in _descendants(pid) if not math.isnan(value := _status_mib(child, "VmRSS:")))


def _status_mib(pid: int | None, field: str) -> float:
    try:
        with open(f"/proc/{pid or 'self'}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def peak_rss_mib() -> float:
    """Peak resident set of this process so far (VmHWM) in MiB.

    Not ``ru_maxrss``: Linux carries it across fork and exec, so a probe started by subprocess (vfork + exec)
    reports at least its parent's resident set at that moment (a 1-tenant probe read 115 MiB, the whole bench
    run's size, against 8.8 MiB of its own for a bare interpreter). VmHWM belongs to the process's own address
    space, which exec replaces. Falls back to ``ru_maxrss`` where /proc is not readable.
    """
    peak = _status_mib(None, "VmHWM:")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if math.isnan(peak) else peak
