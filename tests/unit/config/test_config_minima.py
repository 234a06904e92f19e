"""Lower bounds of intervals and timeouts (review finding): 1e-9 loaded for every one of them, and an idle server
swept grants (21% of a core) or polled policies (27%) every 0.0001 s. A value below the minimum is refused at load,
from the file and the environment, naming the key and the minimum; 0 still turns off what the README says it does."""

import pytest

from tenantgate import config
from tenantgate.configcheck import MINIMA, OFF_AT_ZERO
from tenantgate.errors import ConfigError

BOUNDS = [(key, minimum) for key, (minimum, _words) in MINIMA.items()]


@pytest.fixture
def load(write_config, issuer_table):
    def load_text(text: str = "", env: dict[str, str] | None = None) -> config.Settings:
        return config.load(write_config(issuer_table() + text), env=env or {})

    return load_text


def _file(key: str, value: str) -> str:
    section, _, name = key.partition(".")
    return f"[{section}]\n{name} = {value}\n"


def _env(key: str, value: str) -> dict[str, str]:
    return {f"TENANTGATE_{key.replace('.', '_').upper()}": value}


def _value(settings: config.Settings, key: str) -> float:
    section, _, name = key.partition(".")
    return getattr(getattr(settings, section), name)


def _refusal(load, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        load(*args)
    return str(caught.value)


@pytest.mark.parametrize(("key", "minimum"), BOUNDS)
@pytest.mark.parametrize("too_small", ["1e-9", "0.0001"])
def test_an_interval_or_timeout_below_its_minimum_is_refused_naming_key_and_minimum(load, key, minimum, too_small):
    zero = f"0 ({OFF_AT_ZERO[key]}) or " if key in OFF_AT_ZERO else ""
    start = f"{key} must be {zero}at least {minimum:g} ("
    for refusal in (_refusal(load, _file(key, too_small)), _refusal(load, "", _env(key, too_small))):
        assert refusal.startswith(start) and refusal.endswith(f"got {float(too_small)}")


@pytest.mark.parametrize(("key", "minimum"), BOUNDS)
def test_the_minimum_itself_loads_from_the_file_and_the_environment(load, key, minimum):
    assert _value(load(_file(key, repr(float(minimum)))), key) == minimum
    assert _value(load("", _env(key, str(minimum))), key) == minimum


@pytest.mark.parametrize("key", sorted(OFF_AT_ZERO))
def test_zero_still_turns_off_what_the_readme_says_it_does(load, key):
    assert _value(load(_file(key, "0")), key) == 0
    assert _value(load("", _env(key, "0")), key) == 0


@pytest.mark.parametrize("key", sorted(set(MINIMA) - set(OFF_AT_ZERO)))
def test_zero_is_refused_where_it_means_nothing(load, key):
    assert _refusal(load, _file(key, "0")).startswith(f"{key} must be at least")


@pytest.mark.parametrize("key", sorted(MINIMA))
def test_negative_zero_is_refused(load, key):
    # -0.0 == 0: it passed `< 0`, and read as "off" or as an interval of nothing depending on the comparison.
    assert _refusal(load, _file(key, "-0.0")).endswith("got -0.0")
    assert _refusal(load, "", _env(key, "-0")).endswith("got -0.0")


@pytest.mark.parametrize(("key", "value"), [
    ("policies.poll_interval_seconds", "0.02"),  # the policy reload tests poll this often
    ("policies.poll_interval_seconds", "0.05"),
    ("grants.lookup_timeout_seconds", "0.05"),
])
def test_short_values_the_test_suite_uses_still_load(load, key, value):
    assert _value(load(_file(key, value)), key) == float(value)


def test_every_minimum_belongs_to_a_float_setting_whose_default_it_allows():
    defaults = config.Settings()
    for key, (minimum, _words) in MINIMA.items():
        assert isinstance(_value(defaults, key), float), key
        assert _value(defaults, key) >= minimum, key
