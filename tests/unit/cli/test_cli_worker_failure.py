"""Under `serve --workers N`, stderr is a stream of JSON lines: a worker that cannot start says why in one of
them (review finding: it wrote "tenantgate: invalid policies: ..." and indented file:line lines into it).
A single `serve` keeps its plain message for a human at a terminal."""

import json
import logging

import pytest

from tenantgate.cli import main, worker
from tenantgate.errors import ConfigError, PolicyDiagnostic, PolicyError
from tenantgate.observability.logging import configure

BROKEN = PolicyError("1 problem(s) in the policy set",
                     [PolicyDiagnostic("wtest.cedar", 1, "unexpected end of input", column=1)])


@pytest.fixture
def root_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _fail(error):
    def command():
        raise error
    return command


def test_a_worker_that_cannot_start_logs_one_json_line_with_the_details(root_logging, capsys):
    configure("info", worker=1)
    assert main.guarded(_fail(BROKEN), report=worker.log_failure) == main.EXIT_INVALID_POLICIES
    (line,) = capsys.readouterr().err.splitlines()
    logged = json.loads(line)
    assert logged["level"] == "error" and logged["worker"] == 1 and logged["logger"] == "tenantgate.worker"
    assert logged["message"] == "invalid policies: 1 problem(s) in the policy set"
    assert logged["details"] == ["wtest.cedar:1:1: unexpected end of input"]


def test_other_worker_errors_are_json_lines_too(root_logging, capsys):
    configure("info", worker=0)
    assert main.guarded(_fail(ConfigError("cannot listen on 127.0.0.1:1")), report=worker.log_failure) == 1
    logged = json.loads(capsys.readouterr().err)
    assert logged["message"] == "cannot listen on 127.0.0.1:1" and "details" not in logged


def test_a_single_server_keeps_the_plain_message(capsys):
    assert main.guarded(_fail(BROKEN)) == main.EXIT_INVALID_POLICIES
    assert capsys.readouterr().err == ("tenantgate: invalid policies: 1 problem(s) in the policy set\n"
                                       "  wtest.cedar:1:1: unexpected end of input\n")
