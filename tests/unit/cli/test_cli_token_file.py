"""A token file (or stdin) that is not UTF-8 text is a usage error with a message, never a traceback: every
command taking --token-file reads it the same way (``cli.channel.token_of``)."""

import io
import sys

import pytest

from tenantgate.cli import main


@pytest.mark.parametrize("argv", [
    ["grant", "list", "--server", "127.0.0.1:9"],
    ["check", "--server", "127.0.0.1:9", "--action", "read", "--resource-type", "Invoice", "--resource-id", "inv-1",
     "--resource-tenant", "acme"],
], ids=["grant list", "check --server"])
def test_a_token_file_that_is_not_utf8_is_a_clean_error(tmp_path, capsys, argv):
    token_file = tmp_path / "token"
    token_file.write_bytes(b"\xff\xfeeyJhbGciOi.x.y\n")
    assert main.main([*argv, "--token-file", str(token_file)]) == main.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--token-file" in err and "UTF-8" in err


def test_a_token_on_stdin_that_is_not_utf8_is_a_clean_error(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xff\xfe.x.y\n"), encoding="utf-8"))
    assert main.main(["grant", "list", "--server", "127.0.0.1:9", "--token", "-"]) == main.EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stdin" in err and "UTF-8" in err
