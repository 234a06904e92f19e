import pytest

from tenantgate import config
from tenantgate.app import decision_settings
from tenantgate.errors import ConfigError

ISSUER = """
[[tokens.issuers]]
issuer = "https://login.example.com/"
audiences = ["tenantgate"]
algorithms = ["RS256"]
jwks_file = "keys/jwks.json"
"""


def test_embedded_defaults_enable_the_dev_issuer_and_use_the_state_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = config.load(None, env={})
    assert s.dev_issuer.enabled
    assert s.server.listen == "127.0.0.1:50051"
    assert s.audit.path == str(tmp_path / ".tenantgate" / "audit.jsonl")
    assert s.policies.schema_file == str(tmp_path / "policies" / "schema.cedarschema")


def test_a_config_file_keeps_the_dev_issuer_off_and_resolves_paths_against_itself(tmp_path, write_config):
    s = config.load(write_config(ISSUER), env={})
    assert not s.dev_issuer.enabled
    assert s.tokens.issuers[0].jwks_file == str(tmp_path / "keys" / "jwks.json")
    assert s.tokens.issuers[0].audiences == ("tenantgate",)


def test_environment_overrides_use_section_and_key(write_config):
    env = {"TENANTGATE_SERVER_LISTEN": "127.0.0.1:6000", "TENANTGATE_TOKENS_LEEWAY_SECONDS": "5",
           "TENANTGATE_DEV_ISSUER_ENABLED": "true", "TENANTGATE_TOKEN": "ignored", "TENANTGATE_CONFIG": "x"}
    s = config.load(write_config(ISSUER), env=env)
    assert (s.server.listen, s.tokens.leeway_seconds, s.dev_issuer.enabled) == ("127.0.0.1:6000", 5, True)


@pytest.mark.parametrize("text,message", [
    ("[server]\nlisten = 5\n", "server.listen must be a string"),
    ("[server]\nlisn = 'x'\n", "unknown key"),
    ("[nope]\n", "unknown config section"),
    (ISSUER.replace('["RS256"]', '["RS256", "HS256"]'), "mixes HMAC"),
    (ISSUER.replace('["RS256"]', '["none"]'), "not supported"),
    (ISSUER.replace('["RS256"]', '[]'), "at least one algorithm"),
    (ISSUER.replace('audiences = ["tenantgate"]', 'audiences = []'), "audiences"),
    (ISSUER + 'jwks_url = "https://x/jwks"\n', "exactly one of"),
    (ISSUER + ISSUER, "configured twice"),
    ("[tokens]\ntenant_claim = 'sub'\n" + ISSUER, "registered claim"),
    ("", "no trusted token issuer"),
    ("[server]\nlisten = 'nohost'\n" + ISSUER, "HOST:PORT"),
    ("not toml [", "invalid TOML"),
    (ISSUER.replace('jwks_file = "keys/jwks.json"', 'jwks_url = "http://keys.example.com/jwks"'), "https://"),
    ("[tokens]\njwks_refresh_min_interval_seconds = 0\n" + ISSUER, ">= 1"),
    ("[server]\nmax_connection_age_seconds = 0.5\n" + ISSUER, "max_connection_age_seconds must be 0 .off. or between"),
    ("[server]\nmax_connection_age_seconds = -1\n" + ISSUER, "max_connection_age_seconds must be 0 .off. or between"),
    ("[server]\nmax_connection_age_seconds = 1e9\n" + ISSUER, "between 1 and 604800"),
    ("[server]\ngrace_seconds = 1e306\n" + ISSUER, "server.grace_seconds must be between 0 and 86400"),
    ("[server]\ngrace_seconds = 1" + "0" * 400 + "\n" + ISSUER, "server.grace_seconds must be a finite number"),
    ("[server]\nmax_connection_age_seconds = 604800.0001\n" + ISSUER, "got 604800.0001"),
    ("[policies]\ndecision_cache_size = -1\n" + ISSUER, r"policies\.decision_cache_size must be 0 \(off\) or more"),
    ("[tokens]\njwks_saved_max_age_seconds = 1e9\n" + ISSUER, r"tokens\.jwks_saved_max_age_seconds must be at most"),
    ("[server]\nmax_message_bytes = 1" + "0" * 5000 + "\n" + ISSUER, "invalid TOML"),
    ("[grants]\npending_ttl_seconds = 100000000000000000000\n" + ISSUER, "grants.pending_ttl_seconds must be at most"),
    ("[grants]\nmax_ttl_seconds = 31536001\n" + ISSUER, "grants.max_ttl_seconds must be at most 31536000"),
    ("[server]\nmax_message_bytes = 2147483648\n" + ISSUER, "server.max_message_bytes must be at most 2147483647"),
    ("[server]\nmax_concurrent_rpcs = 99999999999999999999\n" + ISSUER, "max_concurrent_rpcs must be at most"),
    ("[policies]\ninvalid_tenants_at_start = 'Quarantine'\n" + ISSUER, "must be \"refuse\" or \"quarantine\", got"),
    ("[policies]\ntenant_evaluation_budget_ms = -1\n" + ISSUER, r"0 \(off\) to 60000, got -1"),
    ("[policies]\nmax_tenant_like_pattern_chars = 99999999999\n" + ISSUER, r"to 65536, got 99999999999"),
])
def test_unsafe_or_wrong_settings_are_refused_with_the_key(write_config, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load(write_config(text), env={})


def test_http_jwks_url_is_allowed_only_on_loopback(write_config):
    text = ISSUER.replace('jwks_file = "keys/jwks.json"', 'jwks_url = "http://127.0.0.1:8080/jwks"')
    assert config.load(write_config(text), env={}).tokens.issuers[0].jwks_url.startswith("http://127.")


def test_unknown_environment_key_is_refused(write_config):
    with pytest.raises(ConfigError, match="unknown key"):
        config.load(write_config(ISSUER), env={"TENANTGATE_SERVER_LISTENN": "x"})


# What Kubernetes sets in every pod for Services named `tenantgate` and `tenantgate-http` (service links).
SERVICE_LINKS = {
    "TENANTGATE_SERVICE_HOST": "10.96.0.10", "TENANTGATE_SERVICE_PORT": "50051",
    "TENANTGATE_SERVICE_PORT_GRPC": "50051", "TENANTGATE_SERVICE_PORT_HEALTH_PROBE": "8081",
    "TENANTGATE_PORT": "tcp://10.96.0.10:50051", "TENANTGATE_PORT_50051_TCP": "tcp://10.96.0.10:50051",
    "TENANTGATE_PORT_50051_TCP_PROTO": "tcp", "TENANTGATE_PORT_50051_TCP_PORT": "50051",
    "TENANTGATE_PORT_50051_TCP_ADDR": "10.96.0.10", "TENANTGATE_HTTP_SERVICE_HOST": "10.96.0.11",
    "TENANTGATE_HTTP_PORT_8080_TCP": "tcp://10.96.0.11:8080", "TENANTGATE_HTTP_SERVICE_PORT": "8080",
}


def test_kubernetes_service_link_variables_are_not_settings_and_do_not_stop_the_server(write_config):
    # Review finding: every central pod created after its Service existed crash-looped on
    # "environment variable TENANTGATE_SERVICE_HOST: unknown section".
    settings = config.load(write_config(ISSUER), env={**SERVICE_LINKS, "TENANTGATE_SERVER_WORKERS": "2"})
    assert settings.server.workers == 2 and settings.server.listen == config.load(write_config(ISSUER),
                                                                                 env={}).server.listen


@pytest.mark.parametrize(("name", "value"), [
    ("TENANTGATE_SERVICE_HOSTS", "x"), ("TENANTGATE_PORTS", "x"), ("TENANTGATE_PORT_50051_TCPX", "x"),
    ("TENANTGATE_HTTP_LISTENN", "x"), ("TENANTGATE_SERVER_PORT_GRPC", "x"),
    # Review finding: names of a service link's shape with values Kubernetes never gives are typos.
    ("TENANTGATE_SERVER_PORT", "9000"), ("TENANTGATE_HTTP_PORT", "8080"), ("TENANTGATE_METRICS_PORT", "9464"),
    ("TENANTGATE_SERVICE_HOST", "tenantgate.example.com"), ("TENANTGATE_SERVICE_PORT", "grpc"),
    ("TENANTGATE_PORT_50051_TCP_PROTO", "http"),
])
def test_names_close_to_service_links_are_still_refused(write_config, name, value):
    with pytest.raises(ConfigError, match="unknown"):
        config.load(write_config(ISSUER), env={name: value})


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "missing.toml", env={})


def test_the_example_config_loads():
    from pathlib import Path

    example = Path(__file__).resolve().parents[3] / "deploy" / "tenantgate.example.toml"
    s = config.load(example, env={})
    assert s.tokens.issuers[0].jwks_url.startswith("https://")


def test_every_setting_is_documented_in_the_readme():
    import dataclasses
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    missing = []
    for section in ("server", "tokens", "dev_issuer", "policies", "audit", "http", "log"):
        cls = type(getattr(config.Settings(), section))
        for f in dataclasses.fields(cls):
            if f.name == "issuers":
                cls_i = config.IssuerSettings
                missing += [f"tokens.issuers[].{g.name}" for g in dataclasses.fields(cls_i)
                            if f"`tokens.issuers[].{g.name}`" not in readme]
            elif dataclasses.is_dataclass(getattr(getattr(config.Settings(), section), f.name)):
                continue  # a nested table ([server.tls]): its keys are checked in test_config_transport.py
            elif f"`{section}.{f.name}`" not in readme:
                missing.append(f"{section}.{f.name}")
    assert missing == []


def _float_settings() -> list[tuple[str, str]]:
    import dataclasses

    found = []
    for section in dataclasses.fields(config.Settings):
        if section.name == "source":
            continue
        for f in dataclasses.fields(type(getattr(config.Settings(), section.name))):
            if f.type in (float, "float"):
                found.append((section.name, f.name))
    return found


@pytest.mark.parametrize("section,key", _float_settings())
@pytest.mark.parametrize("literal", ["nan", "inf", "-inf"])
def test_nan_and_infinite_numbers_are_refused_for_every_float_setting(write_config, section, key, literal):
    # `x < 0` and `x <= 0` are both False for nan, and inf passes every lower bound: a grace period of inf
    # would let a drain wait forever. TOML and the environment can both spell them.
    with pytest.raises(ConfigError, match=f"{section}.{key} must be a finite number"):
        config.load(write_config(f"[{section}]\n{key} = {literal}\n" + ISSUER), env={})
    # From the environment, only ASCII decimal numbers are read at all (test_config_env_numbers).
    with pytest.raises(ConfigError, match=rf"\({section}.{key}\) must be a number, got '{literal}'"):
        config.load(write_config(ISSUER), env={f"TENANTGATE_{section.upper()}_{key.upper()}": literal})


def test_every_float_setting_is_covered_by_the_finite_check():
    assert {"server.grace_seconds", "tokens.jwks_fetch_timeout_seconds", "policies.poll_interval_seconds",
            "audit.checkpoint_seconds", "grants.sweep_interval_seconds"} <= {f"{s}.{k}" for s, k in _float_settings()}


@pytest.mark.parametrize("value", ["0", "-1", "5.5", "60"])
def test_grant_lookup_timeout_is_positive_and_short(write_config, value):
    # The wait holds the event loop: a long one would stall every other call while the grant store hangs.
    with pytest.raises(ConfigError, match=r"grants\.lookup_timeout_seconds must be at (least 0\.01 \(|most 5,)"):
        config.load(write_config(ISSUER), env={"TENANTGATE_GRANTS_LOOKUP_TIMEOUT_SECONDS": value})
    assert config.load(write_config(ISSUER), env={}).grants.lookup_timeout_seconds == 0.25
    assert config.load(write_config(ISSUER),
                       env={"TENANTGATE_GRANTS_LOOKUP_TIMEOUT_SECONDS": "1.5"}).grants.lookup_timeout_seconds == 1.5


# grants.max_pending_per_operator: default 10, at least 1, settable in the file and the environment.
def test_max_pending_grants_per_operator_defaults_to_ten_and_can_be_set(write_config):
    assert config.load(write_config(ISSUER), env={}).grants.max_pending_per_operator == 10
    assert config.load(write_config("[grants]\nmax_pending_per_operator = 3\n" + ISSUER),
                       env={}).grants.max_pending_per_operator == 3
    assert config.load(write_config(ISSUER), env={"TENANTGATE_GRANTS_MAX_PENDING_PER_OPERATOR": "25"}
                       ).grants.max_pending_per_operator == 25


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_pending_grants_per_operator_must_be_at_least_one(write_config, value):
    # 0 would refuse every request (or, read as "no limit", reopen the flood): neither is a setting.
    with pytest.raises(ConfigError, match=r"grants\.max_pending_per_operator must be >= 1"):
        config.load(write_config(f"[grants]\nmax_pending_per_operator = {value}\n" + ISSUER), env={})
    with pytest.raises(ConfigError, match=r"grants\.max_pending_per_operator must be >= 1"):
        config.load(write_config(ISSUER), env={"TENANTGATE_GRANTS_MAX_PENDING_PER_OPERATOR": value})


# grants.max_requests_per_operator_per_hour (review finding: request-and-revoke in a loop grew the grant store
# and the audit log without bound under the pending cap).
RATE_KEY = "max_requests_per_operator_per_hour"
RATE_ENV = "TENANTGATE_GRANTS_MAX_REQUESTS_PER_OPERATOR_PER_HOUR"


def test_max_requests_per_operator_per_hour_defaults_to_thirty_and_can_be_set(write_config):
    assert config.load(write_config(ISSUER), env={}).grants.max_requests_per_operator_per_hour == 30
    in_file = config.load(write_config(f"[grants]\n{RATE_KEY} = 3\n" + ISSUER), env={})
    assert in_file.grants.max_requests_per_operator_per_hour == 3
    assert decision_settings(in_file).rules.max_requests_per_operator_per_hour == 3
    assert config.load(write_config(ISSUER), env={RATE_ENV: "100"}).grants.max_requests_per_operator_per_hour == 100


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_requests_per_operator_per_hour_must_be_at_least_one(write_config, value):
    # 0 would refuse every request (or, read as "no limit", reopen the flood): neither is a setting.
    with pytest.raises(ConfigError, match=rf"^grants\.{RATE_KEY} must be >= 1$"):
        config.load(write_config(f"[grants]\n{RATE_KEY} = {value}\n" + ISSUER), env={})
    with pytest.raises(ConfigError, match=rf"^grants\.{RATE_KEY} must be >= 1$"):
        config.load(write_config(ISSUER), env={RATE_ENV: value})

