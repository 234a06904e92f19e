"""Usage errors exit 1, the documented error code: argparse's own 2 is DENY in this CLI (README, "CLI"), so a
script reading `check`'s exit code took a missing option for a denial."""

import pytest

from tenantgate.cli import main

USAGE_ERRORS = [
    # --resource-tenant missing
    ["check", "--server", "127.0.0.1:1", "--token", "t", "--action", "read", "--resource-type", "Invoice",
     "--resource-id", "inv-1"],
    ["explain", "--token", "t", "--action", "read", "--resource-type", "Invoice", "--resource-id", "inv-1"],
    # --duration missing
    ["grant", "request", "--target-tenant", "acme", "--actions", "read", "--reason", "INC-1"],
    ["grant", "request", "--target-tenant", "acme", "--actions", "read", "--reason", "INC-1", "--duration", "soon"],
    ["grant", "list", "--state", "gone"],
    ["audit", "query", "x.jsonl", "--decision", "MAYBE"],
    ["token", "mint", "--sub", "alice"],
    ["test", "--min-coverage", "120"],
    ["serve", "--workers", "two"],
    ["no-such-command"],
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda argv: " ".join(argv[:2]))
def test_a_usage_error_exits_1_not_the_deny_code(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        main.main(argv)
    assert exited.value.code == main.EXIT_ERROR
    assert "error:" in capsys.readouterr().err


def test_help_and_version_still_exit_0(capsys):
    for argv in (["--help"], ["check", "--help"], ["--version"]):
        with pytest.raises(SystemExit) as exited:
            main.main(argv)
        assert exited.value.code == 0
    assert "usage: tenantgate" in capsys.readouterr().out
