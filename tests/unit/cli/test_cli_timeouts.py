"""Every ``--timeout`` of the CLI takes a positive, finite number of seconds; anything else is a usage error.

Before, ``float`` accepted nan, inf, 0 and negatives, and the command went on to fail with a misleading
DEADLINE_EXCEEDED (or to wait without bound).
"""

import pytest

from tenantgate.cli import main

COMMANDS = [
    ["health"],
    ["status"],
    ["check", "--server", "127.0.0.1:1", "--action", "read", "--resource-type", "Invoice", "--resource-id", "i",
     "--resource-tenant", "acme"],
    ["grant", "list"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "0", "-1", "soon", "86400.5", "1e10"])
def test_a_timeout_that_is_not_a_positive_finite_number_is_a_usage_error(command, value, capsys):
    with pytest.raises(SystemExit) as exited:
        main.main([*command, f"--timeout={value}"])
    assert exited.value.code == 1  # a usage error is an error (1): 2 is DENY in this CLI
    err = capsys.readouterr().err
    assert "--timeout" in err and ("positive number of seconds up to 86400" in err or "not a number of seconds" in err)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_positive_timeout_is_accepted(command):
    assert main._parser().parse_args([*command, "--timeout", "0.5"]).timeout == 0.5
