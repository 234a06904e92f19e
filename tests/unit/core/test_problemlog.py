"""ProblemLog: a problem repeated once per request is one line, then one line per interval counting it."""

import logging
import threading

import pytest

from support.issuers import FixedClock
from tenantgate.core.problemlog import ProblemLog

LOGGER = "tenantgate.test.problems"


@pytest.fixture()
def problems(caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FixedClock(1000.0)
    log = ProblemLog(logging.getLogger(LOGGER), now=clock.now, level=logging.ERROR, noun="failures", interval=60,
                     summary="%d more failures since the last line (latest: %s)")
    return log, clock, caplog


def _lines(caplog):
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_a_thousand_occurrences_in_an_interval_are_one_line_then_one_count(problems):
    log, clock, caplog = problems
    for i in range(1000):
        log.occurred("write %d failed: %s", i, "disk full")
    assert _lines(caplog) == [("ERROR", "write 0 failed: disk full; while this goes on, one line every 60 s counts "
                                        "the failures")]
    clock.advance(60)
    log.occurred("write %d failed: %s", 1000, "disk full")
    assert _lines(caplog)[1:] == [("ERROR", "1000 more failures since the last line (latest: write 1000 failed: "
                                            "disk full)")]


def test_summarize_writes_the_count_not_written_yet_and_nothing_when_there_is_none(problems):
    log, clock, caplog = problems
    log.summarize()
    assert _lines(caplog) == []
    log.occurred("first", cause="one")
    log.occurred("second", cause="one")
    assert log.due() == clock.now() + 60
    log.summarize()
    assert _lines(caplog)[1:] == [("ERROR", "1 more failures since the last line (latest: second)")]
    log.summarize()
    assert len(_lines(caplog)) == 2 and log.due() is None


def test_the_end_of_a_problem_is_said_once_with_the_count(problems):
    log, _clock, caplog = problems
    log.ended("written again")  # nothing happened: nothing to say
    assert _lines(caplog) == []
    for _ in range(5):
        log.occurred("failed")
    for _ in range(100):
        log.ended("written again")
    assert _lines(caplog)[1:] == [("WARNING", "written again (4 more failures since the last line; latest: failed)")]
    assert not log.ongoing


def test_after_a_quiet_interval_the_next_occurrence_is_logged_in_full_again(problems):
    log, clock, caplog = problems
    log.occurred("failed once", cause="one")
    clock.advance(61)
    log.occurred("failed again", cause="one")
    assert [m for _l, m in _lines(caplog)] == [
        "failed once; while this goes on, one line every 60 s counts the failures",
        "failed again; while this goes on, one line every 60 s counts the failures"]


def test_a_problem_that_comes_and_goes_with_every_request_writes_at_most_two_lines_an_interval(problems):
    log, clock, caplog = problems
    for _ in range(30):  # a minute of requests that fail and succeed by turns, 500 of each
        for _ in range(500 // 30):
            log.occurred("failed")
            log.ended("written again")
        clock.advance(2)
    assert len(_lines(caplog)) <= 2 * 2  # 60 s: at most two intervals touched, two lines each


def test_a_clock_stepped_back_costs_one_extra_line_at_most(problems):
    log, clock, caplog = problems
    log.occurred("failed")
    clock.advance(-3600)
    for _ in range(100):
        log.occurred("failed")
    assert len(_lines(caplog)) == 2


def test_concurrent_occurrences_are_all_counted(problems):
    log, _clock, caplog = problems

    def fail():
        for _ in range(250):
            log.occurred("failed")

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.summarize()
    assert [m for _l, m in _lines(caplog)][1:] == ["1999 more failures since the last line (latest: failed)"]


def test_a_different_cause_within_the_interval_gets_its_own_first_line(problems):
    # Review finding: one ProblemLog per subsystem let a cause a client repeats at will (load shedding) take the
    # first line, so a different, real fault starting and ending within the minute was only ever a count.
    log, clock, caplog = problems
    for _ in range(100):
        log.occurred("refused: %s", "too many waiting", cause="too many waiting")
    log.occurred("refused: %s", "corrupt row g-7", cause="corrupt row g-7")
    log.occurred("refused: %s", "corrupt row g-7", cause="corrupt row g-7")
    lines = [text for _level, text in _lines(caplog)]
    assert len(lines) == 2 and lines[1].startswith("refused: corrupt row g-7")
    for n in range(20):  # at most MAX_CAUSES distinct causes in full per interval
        log.occurred("refused: %s", n, cause=str(n))
    assert len(_lines(caplog)) == 8
    clock.advance(60)
    log.occurred("refused: %s", "too many waiting", cause="too many waiting")
    assert len(_lines(caplog)) == 9  # the count of all of them
    log.ended("answers again")
    assert _lines(caplog)[-1][1] == "answers again"
