"""`check` options that only mean something with `--server` (`--timeout`, `--tls-ca`, `--tls-cert`, `--tls-key`)
are refused without it (review finding: `check --tls-ca ca.pem ...` without `--server` decided in-process on the
local files, silently, where the user meant to ask a server over TLS)."""

import os

import pytest

from tenantgate.cli import main

REQUEST = ["--token", "t", "--action", "read", "--resource-type", "Invoice", "--resource-id", "inv-1",
           "--resource-tenant", "acme"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("TENANTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("extra", [["--timeout", "3"], ["--tls-ca", "ca.pem"],
                                   ["--tls-cert", "c.pem", "--tls-key", "k.pem"], ["--explain", "--tls-ca", "ca.pem"]],
                         ids=lambda extra: " ".join(extra))
def test_a_remote_only_option_without_server_is_refused(extra, tmp_path, capsys):
    assert main.main(["check", *REQUEST, *extra]) == main.EXIT_ERROR
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "only apply with --server" in captured.err and extra[-2] in captured.err
    assert not (tmp_path / ".tenantgate").exists()  # nothing decided in-process, nothing audited


def test_the_options_still_work_with_server(capsys):
    # Nothing listens on port 1: the options reach the channel, and the call fails for want of a server.
    assert main.main(["check", *REQUEST, "--server", "127.0.0.1:1", "--timeout", "0.5"]) == main.EXIT_ERROR
    err = capsys.readouterr().err
    assert "server 127.0.0.1:1" in err and "only apply with --server" not in err
