"""Findings of the configuration review (documentation against behaviour): each value the README does not allow
is refused at load, in one line that names the key; and `serve --workers N` wins over the file and environment."""

import os

import pytest

from tenantgate import config
from tenantgate.cli import main, serve
from tenantgate.errors import ConfigError

A_WEEK, A_YEAR = 604_800, 31_536_000


@pytest.fixture
def load(write_config, issuer_table):
    """Load TOML text after one trusted issuer's table (``issuer=`` replaces that table)."""
    def load_text(text: str = "", env: dict[str, str] | None = None, *, issuer: str | None = None) -> config.Settings:
        return config.load(write_config((issuer_table() if issuer is None else issuer) + text), env=env or {})

    return load_text


def refused(load_text, *args, **kwargs) -> str:
    """The ConfigError a load raises: always one line."""
    with pytest.raises(ConfigError) as caught:
        load_text(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# 1. An empty path was resolved against the working directory, not the config file's directory: the audit log,
# grants.db and the dev issuer's keys went to wherever the server was started; policies were read from there.
@pytest.mark.parametrize(("text", "env", "key"), [
    ('[server]\nstate_dir = ""\n', {}, "server.state_dir"),
    ("", {"TENANTGATE_SERVER_STATE_DIR": ""}, "server.state_dir"),
    ('[policies]\ndir = ""\n', {}, "policies.dir"),
    ("", {"TENANTGATE_POLICIES_DIR": ""}, "policies.dir"),
])
def test_an_empty_state_or_policy_dir_is_refused_not_read_as_the_working_directory(load, text, env, key):
    assert refused(load, text, env).startswith(f"{key} must not be empty")


def test_a_sqlite_grant_store_without_a_file_is_refused_at_load(load):
    # It passed config loading and failed when the store was opened, with a message that named no key.
    assert refused(load, '[grants]\nstore = "sqlite:///"\n').startswith("grants.store")


def test_empty_paths_that_mean_not_set_or_the_default_still_load(load, tmp_path):
    s = load('[audit]\npath = ""\ncheckpoint_key_file = ""\n[dev_issuer]\nkey_dir = ""\n'
             '[policies]\nschema_file = ""\n[grants]\nstore = ""\n[http]\ncert_file = ""\nkey_file = ""\n'
             '[server.tls]\ncert_file = ""\nkey_file = ""\nclient_ca_file = ""\n')
    state = tmp_path / ".tenantgate"
    assert (s.audit.path, s.dev_issuer.key_dir) == (str(state / "audit.jsonl"), str(state / "dev-issuer"))
    assert s.grants.store == f"sqlite:///{state / 'grants.db'}"
    assert s.policies.schema_file == str(tmp_path / "policies" / "schema.cedarschema")
    assert (s.audit.checkpoint_key_file, s.http.cert_file, s.server.tls.cert_file) == ("", "", "")


# 2. Upper bounds: tokens.max_token_bytes = 99999999999999999999 started, then every AuthZEN request got an
# empty reply with nothing logged.
LIMITS = [
    ("tokens", "max_token_bytes", 1_048_576), ("tokens", "max_lifetime_seconds", A_YEAR),
    ("tokens", "jwks_cache_seconds", A_WEEK), ("tokens", "jwks_refresh_min_interval_seconds", A_WEEK),
    ("tokens", "cache_size", 1_000_000), ("dev_issuer", "max_ttl_seconds", A_YEAR),
    ("http", "max_body_bytes", 67_108_864), ("http", "max_concurrent_requests", 65_536),
    ("policies", "poll_interval_seconds", A_WEEK), ("grants", "sweep_interval_seconds", A_WEEK),
    ("audit", "checkpoint_seconds", A_WEEK),
]
DEV_ISSUER_ON = "[dev_issuer]\nenabled = true\n"


@pytest.mark.parametrize(("section", "key", "maximum"), LIMITS)
def test_numbers_above_their_maximum_are_refused_with_the_key(load, section, key, maximum):
    table = DEV_ISSUER_ON if section == "dev_issuer" else f"[{section}]\n"  # checked when the dev issuer is on
    name, kind = f"{section}.{key}", type(getattr(getattr(config.Settings(), section), key))
    for too_large in (maximum + 1, 99999999999999999999):
        message = refused(load, f"{table}{key} = {too_large}\n")
        assert message.startswith(f"{name} must be at most {maximum}") and message.endswith(f"got {kind(too_large)}")
    env = {f"TENANTGATE_{section.upper()}_{key.upper()}": str(maximum + 1)}
    assert refused(load, table, env).startswith(f"{name} must be at most {maximum}")
    assert getattr(getattr(load(f"{table}{key} = {maximum}\n"), section), key) == maximum


# 3. Claim settings naming a claim whose meaning is fixed: roles_claim = "sub" denied every token.
RESERVED_CLAIMS = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti", "act", "cnf")


@pytest.mark.parametrize("claim", RESERVED_CLAIMS)
@pytest.mark.parametrize("key", ["tenant_claim", "roles_claim", "intents_claim"])
def test_claim_settings_cannot_name_a_registered_claim_or_one_tenantgate_reads(load, key, claim):
    message = refused(load, f'[tokens]\n{key} = "{claim}"\n')
    assert message.startswith(f"tokens.{key} cannot be {claim!r}")


@pytest.mark.parametrize(("text", "keys"), [
    ('roles_claim = "tenant"', "tokens.tenant_claim and tokens.roles_claim"),
    ('intents_claim = "roles"', "tokens.roles_claim and tokens.intents_claim"),
    ('tenant_claim = "org"\nintents_claim = "org"', "tokens.tenant_claim and tokens.intents_claim"),
])
def test_two_claim_settings_naming_the_same_claim_are_refused_naming_both(load, text, keys):
    assert refused(load, f"[tokens]\n{text}\n").startswith(f"{keys} name the same claim")


# 4. Values that passed loading and failed later, with a message that did not name the key.
@pytest.mark.parametrize(("text", "issuer", "start"), [
    (DEV_ISSUER_ON + 'issuer = ""\n', None, "dev_issuer.issuer must not be empty"),
    (DEV_ISSUER_ON + 'audience = ""\n', None, "dev_issuer.audience must not be empty"),
    ("", {"audiences": '["tenantgate", ""]'}, "tokens.issuers[0].audiences: an audience must not be empty"),
    ("", {"jwks_file": None, "jwks_url": '"https://"'}, "tokens.issuers[0].jwks_url must be an https:// URL with"),
    ("", {"jwks_file": None, "jwks_url": '"https://[::1"'}, "tokens.issuers[0].jwks_url must be an https:// URL"),
    ("", {"jwks_file": None, "jwks_url": '"https://keys.example.com:99999/"'}, "tokens.issuers[0].jwks_url must"),
])
def test_empty_names_and_urls_without_a_host_are_refused_at_load(load, issuer_table, text, issuer, start):
    assert refused(load, text, issuer=None if issuer is None else issuer_table(**issuer)).startswith(start)


PUBLIC_URL = "http.public_url must be an http:// or https:// URL with a host and without query or fragment"


@pytest.mark.parametrize("url", ["ftp://pdp.example.com", "https://", "https://:443", "pdp.example.com",
                                 "https://pdp.example.com/#x", "https://[::1"])
def test_public_url_is_refused_with_a_message_that_says_what_it_may_be(load, url):
    assert refused(load, f'[http]\npublic_url = "{url}"\n').startswith(PUBLIC_URL)


@pytest.mark.parametrize("url", ["https://pdp.example.com", "http://pdp.internal:8080", "https://pdp.example.com/az"])
def test_public_url_may_be_http_or_https_as_the_discovery_fallback_is(load, url):
    # Without public_url, discovery answers the request's own scheme, http on a plaintext port.
    assert load(f'[http]\npublic_url = "{url}"\n').http.public_url == url


# 5. Missing required keys and unreadable environment values: the message was Python's, not the key's.
def test_a_missing_required_issuer_key_is_named(load, issuer_table):
    assert refused(load, issuer=issuer_table(issuer=None)) == "tokens.issuers[0]: missing required key 'issuer'"
    message = refused(load, issuer=issuer_table(audiences=None, algorithms=None))
    assert message == "tokens.issuers[0]: missing required keys 'audiences', 'algorithms'"


def test_a_missing_required_route_key_is_named(load):
    route = '[[ext_authz.routes]]\nmethods = ["GET"]\npath = "/t/{tenant}/i/{id}"\naction = "read"\n'
    assert refused(load, route) == "ext_authz.routes[0]: missing required key 'resource_type'"


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("TENANTGATE_TOKENS_LEEWAY_SECONDS", "1e1", "(tokens.leeway_seconds) must be an integer, got '1e1'"),
    ("TENANTGATE_SERVER_GRACE_SECONDS", "soon", "(server.grace_seconds) must be a number, got 'soon'"),
    ("TENANTGATE_DEV_ISSUER_ENABLED", "maybe", "(dev_issuer.enabled) must be true or false"),
])
def test_an_unreadable_environment_value_names_the_variable_and_the_type_in_words(load, name, value, expected):
    assert refused(load, env={name: value}).startswith(f"{name} {expected}")


def test_a_long_unreadable_environment_value_is_shortened_in_the_message(load):
    assert len(refused(load, env={"TENANTGATE_TOKENS_CACHE_SIZE": "x" * 10_000})) < 200


def test_test_suite_variables_are_not_settings(load):
    # The README's "an unknown TENANTGATE_* variable is an error" excepts TENANTGATE_TEST_*.
    assert load(env={"TENANTGATE_TEST_PG_DSN": "postgresql://x", "TENANTGATE_TEST_ANYTHING": "1"}).server.workers == 1


# 6. `serve --workers N` overrides server.workers (README), so it wins before the settings are validated.
def test_overrides_win_over_the_environment_and_the_file_before_validation(write_config, issuer_table):
    path = write_config("[server]\nworkers = 0\n" + issuer_table())
    env = {"TENANTGATE_SERVER_WORKERS": "0"}
    assert config.load(path, env=env, overrides={"server": {"workers": 2}}).server.workers == 2
    with pytest.raises(ConfigError, match=r"^server\.workers must be between 1 and 64, got 0$"):
        config.load(path, env=env)
    # An environment value the override replaces is not even read (self-review finding: 'four' was refused).
    for name in ("TENANTGATE_SERVER_WORKERS", "TENANTGATE_server_workers"):  # the environment's names, any case
        assert config.load(path, env={name: "four"}, overrides={"server": {"workers": 3}}).server.workers == 3


@pytest.mark.parametrize(("key", "maximum"), [("max_pending_per_operator", 10_000),
                                              ("max_requests_per_operator_per_hour", 100_000)])
def test_grant_request_limits_have_upper_bounds(write_config, issuer_table, key, maximum):
    # Self-review finding: max_requests_per_operator_per_hour = 2**63 loaded, then every request failed with an
    # OverflowError from the database driver.
    assert getattr(config.load(write_config(f"[grants]\n{key} = {maximum}\n" + issuer_table()), env={}).grants,
                   key) == maximum
    with pytest.raises(ConfigError, match=rf"^grants\.{key} must be at most {maximum} "):
        config.load(write_config(f"[grants]\n{key} = {2**63}\n" + issuer_table()), env={})


def test_serve_workers_flag_wins_over_a_zero_in_the_environment(write_config, issuer_table, monkeypatch):
    for name in [n for n in os.environ if n.startswith("TENANTGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TENANTGATE_SERVER_WORKERS", "0")
    started = []
    monkeypatch.setattr(serve, "_serve_workers", lambda settings: started.append(settings) or main.EXIT_OK)
    monkeypatch.setattr("tenantgate.observability.logging.configure", lambda level: None)
    path = write_config(issuer_table())
    assert main.main(["serve", "--config", str(path), "--workers", "2"]) == main.EXIT_OK
    assert [s.server.workers for s in started] == [2]


# 2026-12-05: checkpoints sign the worker number, which `audit verify` reads from the log's name (-wN) and the
# deployment id, which it prints: a log named like another worker's would never verify as its own, and an id
# with control characters or megabytes of text went into every checkpoint unchecked.
@pytest.mark.parametrize("name", ["audit-w1.jsonl", "log-w12"])
def test_an_audit_path_named_like_a_workers_log_is_refused(load, tmp_path, name):
    assert "worker's log (-wN)" in refused(load, f'[audit]\npath = "{tmp_path / name}"\n')


@pytest.mark.parametrize("value", ["a\\u001bb", "two words", "x" * 129, "caf\\u00e9"])
def test_a_deployment_id_that_is_not_short_printable_ascii_is_refused(load, value):
    assert refused(load, f'[audit]\ndeployment_id = "{value}"\n').startswith("audit.deployment_id must be")


def test_a_plain_deployment_id_and_a_w_without_a_number_load(load, tmp_path):
    s = load(f'[audit]\ndeployment_id = "prod-eu-1"\npath = "{tmp_path / "audit-w.jsonl"}"\n')
    assert s.audit.deployment_id == "prod-eu-1"
