"""Numbers from the environment (and ports in listen addresses) are plain ASCII decimal: Python's ``int()`` and
``float()`` also read ``1_0``, ``+5``, `` 7 `` and other scripts' digits, so a value nobody meant as that number
became a setting (review finding). Each is refused in one line naming the variable and the key."""

import pytest

from tenantgate import config
from tenantgate.errors import ConfigError

LENIENT = ["1_0", "+5", " 7 ", "7 ", "\t7", "\u0661\u0660", "\uff11\uff10", "\u00b2", "0x10", "1e1", "", "-",
           "--5", "5-"]
ARABIC_TEN = "\u0661\u0660"


def _refusal(env):
    with pytest.raises(ConfigError) as caught:
        config.load(None, env=env)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", LENIENT, ids=repr)
@pytest.mark.parametrize(("name", "key"), [("TENANTGATE_SERVER_WORKERS", "server.workers"),
                                           ("TENANTGATE_TOKENS_LEEWAY_SECONDS", "tokens.leeway_seconds"),
                                           ("TENANTGATE_HTTP_MAX_BODY_BYTES", "http.max_body_bytes")])
def test_an_integer_setting_from_the_environment_takes_only_ascii_digits(name, key, value):
    message = _refusal({name: value})
    assert message.startswith(f"{name} ({key}) must be an integer, got {value!r}"), message
    assert "ASCII digits" in message


@pytest.mark.parametrize("value", [*(v for v in LENIENT if v != "1e1"), "1_0.5", ".", "-.", ".e1", "1.5e1_0",
                                   "nan", "inf", "-inf", "+1.5", " 2.5", "2.5\n", "1e999", "9" * 400], ids=repr)
def test_a_number_setting_from_the_environment_takes_only_ascii_decimals(value):
    message = _refusal({"TENANTGATE_SERVER_GRACE_SECONDS": value})
    assert message.startswith(f"TENANTGATE_SERVER_GRACE_SECONDS (server.grace_seconds) must be a number, got "
                              f"{value!r}"[:120]), message


@pytest.mark.parametrize(("value", "seconds"), [(".5", 0.5), ("5.", 5.0), ("-0", 0.0), ("1.e1", 10.0),
                                                ("0.25", 0.25)])
def test_a_number_with_digits_on_one_side_of_its_point_is_still_read(value, seconds):
    # float() read ".5" and "5." before numerals existed, and each means one number: refusing them stopped
    # deployments that had always started (review finding).
    assert config.load(None, env={"TENANTGATE_SERVER_GRACE_SECONDS": value}).server.grace_seconds == seconds


def test_plain_decimal_values_are_still_read():
    settings = config.load(None, env={"TENANTGATE_SERVER_WORKERS": "4", "TENANTGATE_TOKENS_LEEWAY_SECONDS": "010",
                                      "TENANTGATE_SERVER_GRACE_SECONDS": "2.5",
                                      "TENANTGATE_GRANTS_SWEEP_INTERVAL_SECONDS": "1e1",
                                      "TENANTGATE_POLICIES_POLL_INTERVAL_SECONDS": "0"})
    assert (settings.server.workers, settings.tokens.leeway_seconds, settings.server.grace_seconds,
            settings.policies.poll_interval_seconds, settings.grants.sweep_interval_seconds) == (4, 10, 2.5, 0.0, 10.0)


def test_a_negative_value_is_read_and_refused_by_the_settings_range_naming_the_key():
    assert _refusal({"TENANTGATE_SERVER_WORKERS": "-3"}) == "server.workers must be between 1 and 64, got -3"


def test_more_digits_than_python_converts_is_a_config_error_not_a_traceback():
    assert _refusal({"TENANTGATE_TOKENS_CACHE_SIZE": "1" * 5000}).startswith(
        "TENANTGATE_TOKENS_CACHE_SIZE (tokens.cache_size) must be an integer")


@pytest.mark.parametrize("port", [ARABIC_TEN, "\u00b2", "\uff18\uff10", "1" * 5000, "+80", " 80"], ids=repr)
@pytest.mark.parametrize(("name", "key"), [("TENANTGATE_SERVER_LISTEN", "server.listen"),
                                           ("TENANTGATE_HTTP_LISTEN", "http.listen")])
def test_a_listen_port_takes_only_ascii_digits(name, key, port):
    # Before: Arabic-Indic digits were a port (int() reads them), and a superscript two passed str.isdigit()
    # and then raised ValueError out of config.load (a traceback, no key named).
    assert _refusal({name: f"127.0.0.1:{port}"}).startswith(f"{key} must be HOST:PORT, got "), port


def test_a_service_link_port_in_other_digits_is_no_service_link():
    # Kubernetes writes ASCII digits; anything else under such a name is refused like any unknown variable.
    assert config.load(None, env={"TENANTGATE_SERVICE_PORT": "50051"}).server.workers == 1
    assert "unknown" in _refusal({"TENANTGATE_SERVICE_PORT": "\u0665\u0660\u0660\u0665\u0661"})


@pytest.mark.parametrize(("name", "key"), [("TENANTGATE_SERVER_LISTEN", "server.listen"),
                                           ("TENANTGATE_SERVER_METRICS_LISTEN", "server.metrics_listen"),
                                           ("TENANTGATE_HTTP_LISTEN", "http.listen")])
def test_a_long_bad_listen_address_is_shown_cut_short(name, key):
    # Before: the whole value was echoed, however long (a megabyte pasted by mistake filled the log line).
    message = _refusal({name: "h" * 100_000 + ":x"})
    assert message.startswith(f"{key} must be HOST:PORT, got 'hhh") and message.endswith("...")
    assert len(message) < 120


def test_a_long_listen_host_sharing_a_port_is_shown_cut_short():
    message = _refusal({"TENANTGATE_SERVER_LISTEN": "h" * 100_000 + ":7001",
                        "TENANTGATE_HTTP_LISTEN": "h" * 100_000 + ":7001"})
    assert "name the same port 7001" in message and len(message) < 250, len(message)
