"""`serve --workers N` removes the metrics directories of supervisors that are gone (review finding: a
supervisor killed with SIGKILL left its /tmp/tenantgate-metrics-* behind, one more at every start), and
never one a live supervisor holds, in whatever pid namespace it runs."""

import subprocess
import sys
import textwrap

from tenantgate.cli.metricsdir import IN_USE_FILE, METRICS_DIR_PREFIX, sweep_stale_metrics_files


def _metrics_dir(parent, name, in_use_file=True):
    directory = parent / (METRICS_DIR_PREFIX + name)
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"x")
    if in_use_file:
        (directory / IN_USE_FILE).touch()
    return directory


def test_directories_nobody_holds_are_removed_and_held_or_new_ones_kept(tmp_path):
    gone = _metrics_dir(tmp_path, "gone")  # its supervisor exited without cleaning up: nobody holds the lock
    held = _metrics_dir(tmp_path, "held")
    starting = _metrics_dir(tmp_path, "starting", in_use_file=False)
    other = tmp_path / "unrelated"
    other.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from tenantgate.cli.metricsdir import hold_in_use
        hold_in_use(Path({str(held)!r}))
        print("held", flush=True)
        sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        sweep_stale_metrics_files(tmp_path)
        assert not gone.exists()
        assert held.exists() and starting.exists() and other.exists()
    finally:
        holder.communicate("", timeout=30)
    sweep_stale_metrics_files(tmp_path)  # its holder has exited now
    assert not held.exists() and starting.exists()
