"""The CLI's number options take plain ASCII decimals, like the environment: argparse's ``type=int`` (and
``float``) also read ``1_0``, ``+5``, `` 7 `` and other scripts' digits (Arabic-Indic ones too).
Anything else is a usage error (exit 1) naming the option; each command still checks its own range."""

import pytest

from tenantgate.cli import main

GRANT = ["grant", "request", "--target-tenant", "acme", "--actions", "read", "--reason", "INC-1"]
CHECK = ["check", "--server", "127.0.0.1:1", "--action", "read", "--resource-type", "Invoice", "--resource-id", "i",
         "--resource-tenant", "acme"]
INTEGER_OPTIONS = [
    (["token", "mint", "--tenant", "acme", "--sub", "alice"], "--ttl", "ttl"),
    (GRANT, "--duration", "duration"),
    (["audit", "verify", "x.jsonl"], "--max-unsigned", "max_unsigned"),
    (["audit", "verify", "x.jsonl"], "--worker", "worker"),
    (["audit", "tail", "x.jsonl"], "-n", "n"),
    (["serve"], "--workers", "workers"),
]
LENIENT = ["1_0", "+5", " 7 ", "\u0661\u0660", "\uff11\uff10", "0x10", "1e1", "5-"]


@pytest.mark.parametrize("value", LENIENT, ids=repr)
@pytest.mark.parametrize(("command", "option", "_dest"), INTEGER_OPTIONS, ids=lambda v: v if isinstance(v, str)
                         and v.startswith("-") else None)
def test_an_integer_option_takes_only_ascii_digits(command, option, _dest, value, capsys):
    with pytest.raises(SystemExit) as exited:
        main.main([*command, f"{option}={value}"])
    assert exited.value.code == main.EXIT_ERROR
    err = capsys.readouterr().err
    assert option in err and "not an integer" in err and "ASCII digits" in err, err


@pytest.mark.parametrize(("command", "option", "dest"), INTEGER_OPTIONS, ids=lambda v: v if isinstance(v, str)
                         and v.startswith("-") else None)
def test_an_integer_option_in_plain_digits_is_read(command, option, dest):
    assert getattr(main._parser().parse_args([*command, option, "42"]), dest) == 42
    # A '-' passes the syntax; the command's own range check refuses it (as before).
    assert getattr(main._parser().parse_args([*command, f"{option}=-1"]), dest) == -1


@pytest.mark.parametrize("value", ["1_0", "+5", " 7", "\u0661\u0660", ".", "nan", "1e999"], ids=repr)
def test_a_timeout_takes_only_ascii_decimals(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main.main([*CHECK, f"--timeout={value}"])
    assert exited.value.code == main.EXIT_ERROR
    assert "--timeout" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1_0", "+5", " 7", "\u0661\u0660", "50 %"], ids=repr)
def test_a_minimum_coverage_takes_only_ascii_decimals(value, capsys):
    with pytest.raises(SystemExit) as exited:
        main.main(["test", f"--min-coverage={value}"])
    assert exited.value.code == main.EXIT_ERROR
    assert "not a percentage" in capsys.readouterr().err


def test_plain_decimal_timeouts_and_percentages_are_read():
    assert main._parser().parse_args([*CHECK, "--timeout", "2.5"]).timeout == 2.5
    assert main._parser().parse_args([*CHECK, "--timeout", ".5"]).timeout == 0.5
    assert main._parser().parse_args([*CHECK, "--timeout", "5."]).timeout == 5.0
    assert main._parser().parse_args(["test", "--min-coverage", "0"]).min_coverage == 0.0
    assert main._parser().parse_args(["test", "--min-coverage", "80%"]).min_coverage == 80.0
