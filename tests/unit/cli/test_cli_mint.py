"""`token mint` refuses a token every decision would deny (review finding: it printed one and exited 0), and
names the option at fault."""

import os

import jwt
import pytest

from tenantgate.cli import main


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("TENANTGATE_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "tenantgate.toml"
    path.write_text('[dev_issuer]\nenabled = true\nmax_ttl_seconds = 3600\n')
    return path


def mint(config_file, *extra):
    return main.main(["token", "mint", "--config", str(config_file), "--sub", "alice", *extra])


@pytest.mark.parametrize("tenant", ["a b", "", "-acme", "acme/eu", "x" * 129])
def test_a_tenant_outside_the_tenant_id_grammar_is_refused(config_file, tenant, capsys):
    assert mint(config_file, f"--tenant={tenant}") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"--tenant {tenant!r} is not a tenant id" in captured.err and "tenant_claim_missing" in captured.err


def test_a_ttl_beyond_tokens_max_lifetime_is_refused(config_file, monkeypatch, capsys):
    monkeypatch.setenv("TENANTGATE_TOKENS_MAX_LIFETIME_SECONDS", "60")
    assert mint(config_file, "--tenant", "acme", "--ttl", "600") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--ttl 600 is longer than tokens.max_lifetime_seconds (60)" in captured.err
    assert mint(config_file, "--tenant", "acme", "--ttl", "60") == 0  # at the limit: accepted


@pytest.mark.parametrize("ttl", ["0", "-5", "3601"])
def test_a_ttl_outside_the_dev_issuer_bound_names_the_option_and_the_setting(config_file, ttl, capsys):
    assert mint(config_file, "--tenant", "acme", "--ttl", ttl) == 1
    err = capsys.readouterr().err
    assert f"--ttl must be between 1 and 3600 seconds (dev_issuer.max_ttl_seconds), not {ttl}" in err
    assert "ttl_seconds must" not in err  # the issuer's parameter, not the option the user typed


def test_a_valid_request_still_mints(config_file, capsys):
    assert mint(config_file, "--tenant", "acme.eu:1@x-y", "--ttl", "3600") == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["tenant"] == "acme.eu:1@x-y" and claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("sub", ["", "a" * 1025])
def test_a_subject_no_verifier_accepts_is_refused(config_file, sub, capsys):
    # Review finding: a 5,000-character --sub minted a token every decision denied token_invalid.
    assert main.main(["token", "mint", "--config", str(config_file), "--tenant", "acme", f"--sub={sub}"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "--sub must be 1 to 1024 characters" in captured.err


@pytest.mark.parametrize("extra, message", [
    (["--act", "a" * 1025, "--intents", "billing.reconcile"], "--act must be 1 to 1024 characters"),
    (["--act", "billing-bot"], "--act needs --intents"),
    (["--act", "billing-bot", "--intents", ""], "--intents names no intent"),
    (["--intents", ""], "--intents names no intent"),
    (["--intents", " , "], "--intents names no intent"),
], ids=["long-act", "act-without-intents", "act-empty-intents", "empty-intents", "blank-intents"])
def test_an_agent_or_intents_token_every_decision_would_deny_is_refused(config_file, extra, message, capsys):
    # Review finding: `--act bot` without --intents (intent_not_bound), `--intents ""` (intent_missing or
    # intent_not_bound) and a 2,000-character --act (token_invalid) minted tokens every decision denied, exit 0.
    assert mint(config_file, "--tenant", "acme", *extra) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_an_agent_token_with_intents_still_mints(config_file, capsys):
    assert mint(config_file, "--tenant", "acme", "--act", "a" * 1024, "--intents", "billing.reconcile") == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims["act"] == {"sub": "a" * 1024} and claims["intents"] == ["billing.reconcile"]
