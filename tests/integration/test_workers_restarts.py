"""`tenantgate serve --workers N` after a crash: a killed worker or /metrics process restarted (its metrics kept),
a worker that cannot restart retried while another serves, and the crash limit that stops the supervisor.

Every process is started here and stopped here; each wait is bounded. The crash limit and restart delays are
shortened in the launched supervisor (`tenantgate.cli.restarts` set in its own `python -c`), not in this process.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.request import urlopen

from support import workers
from support.procfs import _alive, _metrics_dir
from support.waiting import eventually
from support.worker_records import _metric_sum, _verify_all_workers
from support.workers import BROKEN, CHANNELS, _check, _env, _stand_in, serving
from tenantgate.v1 import authorizer_pb2 as pb

issuer = workers.issuer  # function-scoped: each test's own issuer and policies
policy_dir = workers.policy_dir


# `tenantgate serve` with a crash limit reached in seconds: 2 deaths, 0.1 s apart.
FAST_CRASH_LIMIT = [sys.executable, "-c", """import sys
from tenantgate.cli import main, restarts
restarts.RESTART_DELAYS = (0.1,)
restarts.CRASH_LIMIT = 2
sys.exit(main.main(sys.argv[1:]))"""]


def _files_of_others(files_dir: Path, worker: int) -> set[str]:
    """The metric files that are not ``worker``'s own (the ones the others and the supervisor have open)."""
    own = {os.readlink(fd) for fd in Path(f"/proc/{worker}/fd").iterdir()}
    return {f for f in os.listdir(files_dir) if str(files_dir / f) not in own}


def _answers(url: str) -> bool:
    try:
        urlopen(url, timeout=5).read()
    except OSError:
        return False
    return True


def test_a_killed_worker_is_restarted_and_serving_resumes(tmp_path, issuer, policy_dir):
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        before = cluster.workers()
        victim = min(before)
        files_dir = _metrics_dir(victim)
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == CHANNELS,
                   "the decisions before the kill on /metrics")
        victims_files = {f for f in os.listdir(files_dir) if f.endswith(".db")} - _files_of_others(files_dir, victim)
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(cluster.workers()) == 2 and victim not in cluster.workers(), "a new worker")
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "the new worker serving")
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        assert _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 1
        # Review finding: an exited worker's counter and histogram files stayed for good (two per restart, each
        # read by every scrape). They are folded into one archive at the next scrape, its counts kept.
        assert _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == 2 * CHANNELS
        assert victims_files and not victims_files & set(os.listdir(files_dir))
        assert "archive.json" in os.listdir(files_dir)
        # A /metrics process restarted after a crash starts from the archive, not from nothing.
        first = cluster.metrics_process()
        os.kill(first, signal.SIGKILL)
        eventually(lambda: cluster.metrics_process() not in (None, first), "a new /metrics process")
        eventually(lambda: _answers(cluster.metrics_url), "/metrics answering again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_decisions_total") == 2 * CHANNELS
        assert cluster.stop() == 0
    assert f"(pid {victim}) was killed by SIGKILL; restarting it" in cluster.stderr.read_text()
    assert _verify_all_workers(cluster.audit).returncode == 0


def test_a_killed_metrics_process_is_restarted_and_is_not_counted_as_a_worker(tmp_path, issuer, policy_dir):
    with serving(tmp_path, issuer, policy_dir) as cluster:
        first = cluster.metrics_process()
        assert first is not None
        os.kill(first, signal.SIGKILL)
        eventually(lambda: cluster.metrics_process() not in (None, first), "a new /metrics process")
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "/metrics answering again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 0
        assert len(cluster.workers()) == 2
        second = cluster.metrics_process()
        assert cluster.stop() == 0
    assert not _alive(second)
    assert f"/metrics process (pid {first}) was killed by SIGKILL; restarting it" in cluster.stderr.read_text()


def test_a_worker_that_cannot_restart_is_retried_while_another_serves_until_the_files_are_fixed(
        tmp_path, issuer, policy_dir):
    # Invalid files on disk: a serving worker keeps its policies, a restarted one cannot start (exit 3).
    token = issuer.mint(roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir, launcher=FAST_CRASH_LIMIT) as cluster:
        (policy_dir / "broken.cedar").write_text(BROKEN)
        os.kill(min(cluster.workers()), signal.SIGKILL)
        retrying = "1 of 2 workers still serve, so it keeps being restarted every 0.1 s until it starts"
        eventually(lambda: cluster.stderr.read_text().count(retrying) >= 2,
                   "two failed restarts past the crash limit (2)", attempts=300)
        assert cluster.proc.poll() is None
        assert _check(cluster.address, token).decision == pb.ALLOW
        assert _metric_sum(cluster.metrics_url, "tenantgate_workers") == 1
        (policy_dir / "broken.cedar").unlink()
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2,
                   "the worker starting once the files are fixed", attempts=300)
        assert all(_check(cluster.address, token).decision == pb.ALLOW for _ in range(CHANNELS))
        assert cluster.stop() == 0
    logged = cluster.stderr.read_text()
    assert "broken.cedar:1" in logged
    assert "exited with code 3 before serving (see its own error above), 2 times within 60 s" in logged


def test_a_worker_restarted_while_a_tenant_is_held_back_comes_back_with_that_tenant_quarantined(
        tmp_path, issuer, policy_dir):
    # Review finding (session 16, F): start-up was strict for restarted workers too, so while a tenant was held
    # back a crashed worker never came back (and the supervisor stopped once every worker had crashed).
    evil = policy_dir / "tenants" / "evil"
    evil.mkdir(parents=True)
    (evil / "own.cedar").write_text('@id("evil-no-read")\nforbid (principal, action == Action::"read", resource);\n')
    alice, eve = issuer.mint(roles=["viewer"]), issuer.mint(tenant="evil", roles=["viewer"])
    with serving(tmp_path, issuer, policy_dir) as cluster:
        (evil / "oops.cedar").write_text(BROKEN)
        cluster.proc.send_signal(signal.SIGHUP)
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_policy_reloads_total") >= 2,
                   "both workers holding evil back")
        os.kill(min(cluster.workers()), signal.SIGKILL)
        eventually(lambda: _metric_sum(cluster.metrics_url, "tenantgate_worker_restarts_total") == 1
                   and _metric_sum(cluster.metrics_url, "tenantgate_workers") == 2, "the killed worker serving again")
        assert _metric_sum(cluster.metrics_url, "tenantgate_policy_quarantined_tenants") == 1
        assert all(_check(cluster.address, alice).decision == pb.ALLOW for _ in range(CHANNELS))
        # One worker answers from evil's last valid files, the restarted one denies it all: never an allow.
        reasons = {_check(cluster.address, eve, tenant="evil").reason for _ in range(CHANNELS)}
        assert reasons <= {"policy_forbid", "tenant_policies_unavailable"}, reasons
        assert cluster.stop() == 0
    logged = cluster.stderr.read_text()
    assert "tenant(s) evil quarantined" in logged and "oops.cedar" in logged


def test_a_worker_dying_again_and_again_stops_the_supervisor_with_exit_1(tmp_path):
    command = _stand_in("""
announce({"grpc": 1, "health": 0, "http": 0})
time.sleep(0.2)
return 7
""")
    out = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert out.stdout == "ready\n"
    assert ("died 5 times within 60 s (last: exited with code 7) and no other worker serves; stopping all workers"
            in out.stderr)
