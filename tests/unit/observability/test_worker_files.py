"""Exited workers' metric files folded into one archive, with exact sums (``observability.workerfiles``).

The files are written here with prometheus-client's own MmapedDict, as a worker's values would be.
"""

import json
import logging
import os
from fractions import Fraction

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from support.waiting import eventually
from tenantgate.observability import workerfiles
from tenantgate.observability.multiprocess import MetricsEndpoint
from tenantgate.observability.workerfiles import ExactCollector, forget

BOUNDS = ("0.005", "0.1", "+Inf")


def _write(files_dir, identity, decisions, seconds):
    """Worker ``identity``'s files: a counter and a histogram (``seconds``: the values it observed)."""
    counter = MmapedDict(str(files_dir / f"counter_{identity}.db"))
    counter.write_value(mmap_key("tg_decisions", "tg_decisions_total", ["api"], ["check"], "Decisions."),
                        float(decisions), 0.0)
    counter.close()
    histogram = MmapedDict(str(files_dir / f"histogram_{identity}.db"))
    histogram.write_value(mmap_key("tg_seconds", "tg_seconds_sum", ["api"], ["check"], "Seconds."),
                          sum(seconds), 0.0)
    for bound in BOUNDS:
        below = [s for s in seconds if s <= float(bound) and (bound == "0.005" or s > _previous(bound))]
        histogram.write_value(mmap_key("tg_seconds", "tg_seconds_bucket", ["api", "le"], ["check", bound],
                                       "Seconds."), float(len(below)), 0.0)
    histogram.close()


def _previous(bound):
    return float(BOUNDS[BOUNDS.index(bound) - 1])


def _scrape(collector):
    registry = CollectorRegistry()
    registry.register(collector)
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")}


def test_an_exited_workers_files_are_folded_once_and_no_series_moves(tmp_path):
    # Review finding: each worker restart left two files for good. And a first fold re-added float sums in
    # another order, so a histogram _sum could drop by an ulp (a counter reset to Prometheus).
    for identity, seconds in (("w1", [0.1]), ("w2", [0.2]), ("w3", [0.3])):
        _write(tmp_path, identity, 1, seconds)
    collector = ExactCollector(str(tmp_path))
    before = _scrape(collector)
    assert before['tg_decisions_total{api="check"}'] == 3
    exact = float(Fraction(0.1) + Fraction(0.2) + Fraction(0.3))
    assert before['tg_seconds_sum{api="check"}'] == exact and (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)
    assert before['tg_seconds_count{api="check"}'] == 3 and before['tg_seconds_bucket{api="check",le="0.1"}'] == 1
    forget("w1", str(tmp_path), keep=True)
    assert _scrape(collector) == before
    forget("w3", str(tmp_path), keep=True)
    assert _scrape(collector) == before
    assert sorted(os.listdir(tmp_path)) == ["archive.json", "counter_w2.db", "histogram_w2.db"]
    forget("w2", str(tmp_path), keep=True)
    _write(tmp_path, "w4", 1, [0.001])
    after = _scrape(collector)
    assert after['tg_decisions_total{api="check"}'] == 4 and after['tg_seconds_count{api="check"}'] == 4
    assert sorted(os.listdir(tmp_path)) == ["archive.json", "counter_w4.db", "histogram_w4.db"]
    assert _scrape(ExactCollector(str(tmp_path))) == after  # a restarted /metrics process reads the archive


def test_files_the_archive_already_holds_are_removed_not_counted_twice(tmp_path, monkeypatch):
    # A /metrics process killed between writing the archive and removing the files it folded.
    _write(tmp_path, "w1", 5, [0.2])
    _write(tmp_path, "w2", 1, [])
    before = _scrape(ExactCollector(str(tmp_path)))
    forget("w1", str(tmp_path), keep=True)
    crashed = ExactCollector(str(tmp_path))
    monkeypatch.setattr(crashed, "_remove_taken", lambda: None)
    crashed.collect()
    assert {"archive.json", "counter_w1.db", "w1.dead"} <= set(os.listdir(tmp_path))
    assert _scrape(crashed) == before
    assert _scrape(ExactCollector(str(tmp_path))) == before
    assert sorted(os.listdir(tmp_path)) == ["archive.json", "counter_w2.db", "histogram_w2.db"]


def test_an_unreadable_archive_is_reported_and_counting_goes_on(tmp_path, caplog):
    (tmp_path / "archive.json").write_text("{not json")
    _write(tmp_path, "w2", 2, [])
    with caplog.at_level(logging.ERROR, logger="tenantgate.metrics"):
        assert _scrape(ExactCollector(str(tmp_path)))['tg_decisions_total{api="check"}'] == 2
    assert "metrics archive" in caplog.text and "unreadable" in caplog.text


def test_a_fold_that_cannot_be_written_leaves_the_files_counted(tmp_path, monkeypatch):
    _write(tmp_path, "w1", 3, [])
    collector = ExactCollector(str(tmp_path))
    forget("w1", str(tmp_path), keep=True)

    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(collector, "_write", full)
    assert _scrape(collector)['tg_decisions_total{api="check"}'] == 3
    assert "counter_w1.db" in os.listdir(tmp_path)


def test_without_a_metrics_endpoint_an_exited_workers_files_are_removed(tmp_path):
    _write(tmp_path, "w1", 3, [0.1])
    forget("w1", str(tmp_path), keep=False)
    assert os.listdir(tmp_path) == []


def test_worker_identities_name_the_files_and_never_contain_the_separator():
    assert workerfiles.worker_identity(12) == "w12" and "_" not in workerfiles.worker_identity(1)
    workerfiles.become_worker("w7")
    try:
        assert workerfiles._current_identity() == "w7"
    finally:
        workerfiles._identity.clear()
    assert workerfiles._current_identity() == str(os.getpid())


def test_the_archive_holds_exact_values(tmp_path):
    _write(tmp_path, "w1", 1, [0.1, 0.2])
    forget("w1", str(tmp_path), keep=True)
    ExactCollector(str(tmp_path)).collect()
    document = json.loads((tmp_path / "archive.json").read_text())
    sums = [value for _kind, key, value in document["series"] if "tg_seconds_sum" in key]
    assert [Fraction(value) for value in sums] == [Fraction(0.1 + 0.2)]  # the float as written, not rounded
    assert document["taken"] == [] and os.listdir(tmp_path) == ["archive.json"]  # its files are gone


def test_a_collector_reads_the_archive_at_its_first_scrape_not_when_it_is_built(tmp_path):
    # Review finding: the collector is built in the supervisor and forked into every /metrics process; one
    # restarted after a crash started from the supervisor's empty archive, and its first fold overwrote the
    # file: the exited workers' counts were lost for good.
    forked_copy = ExactCollector(str(tmp_path))  # built before anything was folded
    _write(tmp_path, "w1", 3, [0.1])
    forget("w1", str(tmp_path), keep=True)
    first = _scrape(ExactCollector(str(tmp_path)))  # the first /metrics process folds w1
    assert os.listdir(tmp_path) == ["archive.json"]
    _write(tmp_path, "w2", 1, [])
    forget("w2", str(tmp_path), keep=True)
    after = _scrape(forked_copy)  # the restarted one
    assert after['tg_decisions_total{api="check"}'] == first['tg_decisions_total{api="check"}'] + 1 == 4


def test_exited_workers_files_are_folded_on_a_timer_while_nothing_scrapes(tmp_path):
    # Review finding: files were folded only at a scrape; with no scraper, a worker dying again and again
    # added three files per start (17 -> 31 in 32 s).
    _write(tmp_path, "w1", 3, [0.1])
    _write(tmp_path, "w2", 1, [])
    endpoint = MetricsEndpoint("127.0.0.1:0", str(tmp_path), fold_interval=0.01)
    endpoint.serve_in_thread()
    try:
        forget("w1", str(tmp_path), keep=True)
        eventually(lambda: sorted(os.listdir(tmp_path)) == ["archive.json", "counter_w2.db", "histogram_w2.db"],
                   "w1's files folded with no scrape")
    finally:
        endpoint.shutdown()
        endpoint.close()
    assert _scrape(ExactCollector(str(tmp_path)))['tg_decisions_total{api="check"}'] == 4


def test_a_fold_that_keeps_failing_is_logged_once_not_at_every_tick(tmp_path, monkeypatch, caplog):
    collector = ExactCollector(str(tmp_path))

    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(collector, "_write", full)
    with caplog.at_level(logging.WARNING, logger="tenantgate.metrics"):
        for identity in ("w1", "w2", "w3"):
            _write(tmp_path, identity, 1, [])
            forget(identity, str(tmp_path), keep=True)
            collector.fold()
    assert [record.getMessage() for record in caplog.records if "not folded" in record.getMessage()] == [
        "exited workers' metrics not folded (their files stay counted): No space left on device; while this goes "
        "on, one line every 60 s counts the failed folds"]
    assert _scrape(collector)['tg_decisions_total{api="check"}'] == 3


def test_a_fold_on_the_timer_never_raises(tmp_path, caplog):
    (tmp_path / "counter_w1.db").write_bytes(b"\xff\xff\x00\x00" + bytes(60))  # claims more than it holds
    forget("w1", str(tmp_path), keep=True)
    with caplog.at_level(logging.WARNING, logger="tenantgate.metrics"):
        ExactCollector(str(tmp_path)).fold()
    assert "exited workers' metrics not folded: error(" in caplog.text  # struct.error, from a thread: logged


def test_a_fifo_or_a_link_named_like_a_metrics_file_is_skipped_and_scrapes_go_on(tmp_path):
    # Review finding: a FIFO named counter_<id>.db blocked the scrape in open() for good, holding the collector's
    # lock, so /metrics never answered again (also after the FIFO was removed); a link put any readable file
    # into the sums.
    import threading

    _write(tmp_path, "w1", 2, [0.1])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _write(elsewhere, "w9", 1000, [0.1])
    os.mkfifo(tmp_path / "archive.json")
    os.mkfifo(tmp_path / "counter_w8.db")
    os.mkfifo(tmp_path / "gauge_livesum_w8.db")
    os.symlink(elsewhere / "counter_w9.db", tmp_path / "counter_w9.db")
    (tmp_path / "w8.dead").touch()  # folding an exited worker's files reads them too
    collector = ExactCollector(str(tmp_path))
    scraped: list[dict[str, float]] = []
    scraping = threading.Thread(target=lambda: scraped.append(_scrape(collector)), daemon=True)
    scraping.start()
    scraping.join(10)
    assert scraped, "the scrape is stuck on the FIFO"
    assert scraped[0]['tg_decisions_total{api="check"}'] == 2


def test_a_replaced_policy_version_leaves_no_series_behind(tmp_path):
    # Review finding: a worker cannot remove a series from its file, so it sets a replaced policy version to 0;
    # every reload (a tenant changing its own files, every poll) added a tenantgate_policy_info series for good.
    for identity, versions in (("w1", {"v1": 0.0, "v2": 0.0, "v3": 1.0}), ("w2", {"v2": 0.0, "v4": 1.0})):
        gauge = MmapedDict(str(tmp_path / f"gauge_livemax_{identity}.db"))
        for version, value in versions.items():
            gauge.write_value(mmap_key("tenantgate_policy_info", "tenantgate_policy_info", ["version"], [version],
                                       "Version."), value, 0.0)
        gauge.close()
    scraped = _scrape(ExactCollector(str(tmp_path)))
    assert {k: v for k, v in scraped.items() if k.startswith("tenantgate_policy_info")} == {
        'tenantgate_policy_info{version="v3"}': 1.0, 'tenantgate_policy_info{version="v4"}': 1.0}
