"""Multiprocess metric files allocated ahead, and a full disk that turns metrics off (``observability.valuefiles``).

Review finding: prometheus-client's files were sparse, so on a full temp directory the first write to a page
killed the worker with SIGBUS (on the request path, and at every restart). A full filesystem is simulated here
without root: ``posix_fallocate`` failing with ENOSPC, or a file size limit (RLIMIT_FSIZE) in a subprocess,
which the kernel enforces on ``truncate`` and ``fallocate`` alike. ``tests/integration/test_metrics_full_disk.py``
fills a real tmpfs where user namespaces allow it.
"""

import errno
import logging
import os
import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from tenantgate.observability import valuefiles, workerfiles
from tenantgate.observability.workerfiles import ExactCollector


@pytest.fixture()
def files_dir(tmp_path, monkeypatch):
    """This process keeps its metrics as a worker of ``serve --workers N`` does, in tmp_path (undone after)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    monkeypatch.setattr(values, "MmapedDict", values.MmapedDict)
    monkeypatch.setattr(valuefiles, "_OFF", valuefiles._Off())
    workerfiles.install()
    yield tmp_path
    values.ValueClass.close_all_files()


def _allocated(path):
    """Every byte of the file has a block: no page of it is left for a write to fault on."""
    status = path.stat()
    return status.st_blocks * 512 >= status.st_size


def _scrape(files_dir):
    registry = CollectorRegistry()
    registry.register(ExactCollector(str(files_dir)))
    return generate_latest(registry).decode()


def _full(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_metrics_file_is_allocated_when_it_is_created_and_when_it_grows(files_dir):
    counter = Counter("tg_calls", "Calls.", ["n"], registry=CollectorRegistry())
    counter.labels("0").inc()
    path = files_dir / f"counter_{os.getpid()}.db"
    assert _allocated(path)
    for n in range(1, 2000):  # some 150 KiB of series: the file doubles twice
        counter.labels(str(n)).inc()
    assert path.stat().st_size > valuefiles.INITIAL_BYTES and _allocated(path)
    assert 'tg_calls_total{n="1999"} 1.0' in _scrape(files_dir)


def test_a_file_that_cannot_grow_keeps_the_process_metrics_in_memory_and_says_so_once(
        files_dir, monkeypatch, caplog):
    registry = CollectorRegistry()
    counter = Counter("tg_calls", "Calls.", ["n"], registry=registry)
    gauge = Gauge("tg_level", "Level.", registry=registry, multiprocess_mode="livemax")
    counter.labels("0").inc()
    gauge.set(1)
    monkeypatch.setattr(os, "posix_fallocate", _full)  # the filesystem is full from here on
    with caplog.at_level(logging.ERROR, logger="tenantgate.metrics"):
        for n in range(2000):  # more than the first 64 KiB: the counter file must grow, and cannot
            counter.labels(str(n)).inc()
        frozen = _scrape(files_dir)
        counter.labels("0").inc()
        gauge.set(7)  # its file had room: it goes to memory with the others, so the process's series stop together
        Histogram("tg_seconds", "Seconds.", registry=registry).observe(0.1)  # a new file: none is made
    assert registry.get_sample_value("tg_calls_total", {"n": "0"}) == 3
    assert registry.get_sample_value("tg_calls_total", {"n": "1999"}) == 1
    assert registry.get_sample_value("tg_level") == 7 and registry.get_sample_value("tg_seconds_count") == 1
    assert _scrape(files_dir) == frozen and 'tg_level 1.0' in frozen  # /metrics: as they were
    assert not [name for name in os.listdir(files_dir) if name.startswith("histogram_")]
    lines = [record.getMessage() for record in caplog.records if "cannot be allocated" in record.getMessage()]
    assert len(lines) == 1 and str(files_dir) in lines[0] and "No space left on device" in lines[0]


# The supervisor's metrics went to memory; a worker it forks later (the disk has room again) uses files.
_SUPERVISOR = """
import errno, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from tenantgate.observability import workerfiles
workerfiles.install()
from prometheus_client import CollectorRegistry, Counter
allocate = os.posix_fallocate
def full(*_args):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.posix_fallocate = full
restarts = Counter("tg_restarts", "Restarts.", registry=CollectorRegistry())
restarts.inc()
os.posix_fallocate = allocate
pid = os.fork()
if pid == 0:
    workerfiles.become_worker("w1")
    restarts.inc()
    os._exit(0)
restarts.inc()
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), sorted(os.listdir(sys.argv[1])))
"""


def test_a_worker_forked_after_the_supervisor_went_to_memory_writes_files_again(tmp_path):
    done = subprocess.run([sys.executable, "-c", _SUPERVISOR, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 ['counter_w1.db']\n"
    assert done.stderr.count("cannot be allocated") == 1  # the supervisor's line; none from the worker
    assert 'tg_restarts_total 1.0' in _scrape(tmp_path)


# A worker's decision metrics, written under a file size limit (the kernel refuses to make a file longer than
# ``limit``, as a full disk refuses blocks): ``new_files`` below 64 KiB, no file can be created (a worker
# restarted on a full disk); at 64 KiB, files are created and cannot grow (many series written later).
_WORKER = """
import os, resource, sys
from types import SimpleNamespace
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from tenantgate.observability import workerfiles
workerfiles.install()
workerfiles.become_worker("w1")
from prometheus_client import CollectorRegistry, Counter
from tenantgate.core.model import Decision, Reason
from tenantgate.observability.metrics import DecisionMetrics
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
registry = CollectorRegistry()
metrics = DecisionMetrics(registry, multiprocess=True)
result = SimpleNamespace(decision=Decision.DENY, reason=Reason.CROSS_TENANT, audit=SimpleNamespace(grant_id=""))
metrics.observe("check", result, 0.001)
for version in range(1500):
    metrics.policy_loaded(f"version-{version}")
metrics.observe("check", result, 0.001)
print(registry.get_sample_value("tenantgate_decisions_total",
                                {"api": "check", "decision": "deny", "reason": "cross_tenant"}))
"""


@pytest.mark.parametrize("limit", [16 * 1024, 64 * 1024], ids=["no file can be created", "no file can grow"])
def test_a_worker_whose_metrics_files_cannot_be_written_goes_on_deciding(tmp_path, limit):
    done = subprocess.run([sys.executable, "-c", _WORKER, str(tmp_path), str(limit)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2.0"]
    assert done.stderr.count("cannot be allocated") == 1 and "File too large" in done.stderr
