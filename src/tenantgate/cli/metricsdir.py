"""The private directory of ``serve --workers N``'s multiprocess metric files: made fresh at each start, held
while any process of that start lives, and removed by a later start once nobody holds it.

It must be named in the environment before prometheus_client is imported (it picks its value store at
import), so this module imports nothing of prometheus_client.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tenantgate.errors import ConfigError

log = logging.getLogger("tenantgate.metrics")


def metrics_files() -> str:
    """A fresh private directory (0700) for prometheus-client's multiprocess files, named in the environment
    before prometheus_client is imported: it picks its value store at import, and the workers inherit both."""
    if "prometheus_client" in sys.modules:
        raise ConfigError("serve --workers N must start in a fresh process (prometheus_client is already loaded)")
    sweep_stale_metrics_files(Path(tempfile.gettempdir()))
    path = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    hold_in_use(Path(path))
    warn_when_low(path)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def warn_when_low(path: str) -> None:
    """A warning when the filesystem of ``path`` has less than ``LOW_SPACE_BYTES`` free. Each metric file takes
    64 KiB or more, each worker start makes two to five, and a process whose files cannot grow keeps its
    metrics in memory from then on: what it counts after that is lost to /metrics (``observability/valuefiles.py``)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return
    free = stats.f_bavail * stats.f_frsize
    if free < LOW_SPACE_BYTES:
        log.warning("only %d KiB free for the metrics files in %s (under TMPDIR): once it is full, a worker's "
                    "metrics stop moving on /metrics (decisions go on); point TMPDIR at a larger filesystem",
                    free // 1024, path)


METRICS_DIR_PREFIX = "tenantgate-metrics-"
LOW_SPACE_BYTES = 32 << 20  # less free at start: a warning (a worker start takes 128-320 KiB, until folded)
IN_USE_FILE = "in-use.lock"  # not *.db: prometheus_client never reads it
_held: list[int] = []  # the in-use lock fds of this process: kept open (and locked) until it exits


def hold_in_use(directory: Path) -> None:
    """Lock ``directory``'s in-use file for as long as this process (or a child it forks) lives: the kernel
    drops the lock when the last holder exits, however it exits, and in any pid namespace."""
    fd = os.open(directory / IN_USE_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held.append(fd)


def sweep_stale_metrics_files(parent: Path) -> None:
    """Remove metrics directories no live supervisor holds (killed with SIGKILL, one cannot remove its own;
    review finding: one leaked per start). Only real directories of this user with an in-use file nobody has
    locked; one being created (no in-use file yet) or held by a supervisor in another container sharing /tmp
    (a pid check would not see it there) is left alone."""
    for directory in parent.glob(METRICS_DIR_PREFIX + "*"):
        try:
            if directory.is_symlink() or not directory.is_dir() or directory.stat().st_uid != os.getuid():
                continue
            fd = os.open(directory / IN_USE_FILE, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # no in-use file (being created, or not ours): left alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # held: its supervisor (or one of its children) is alive
        finally:
            os.close(fd)
        shutil.rmtree(directory, ignore_errors=True)
