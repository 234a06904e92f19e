"""`serve`'s start-up: the banner's "Try" hint appears only where it works as printed, and `--workers` out of
range names the option."""

import os
import shutil

import pytest

from support.server import BUNDLED_POLICIES, REPO
from tenantgate import config
from tenantgate.cli import main, serve

TODO_CONFIG = REPO / "examples" / "authzen-todo" / "tenantgate.toml"
SERVED = {"grpc": 50051, "health": 0, "http": 0, "policies": [11, 1, "sha256:x"]}


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for name in [n for n in os.environ if n.startswith("TENANTGATE_")]:
        monkeypatch.delenv(name)
    shutil.copytree(BUNDLED_POLICIES, tmp_path / "policies")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def banner(settings, capsys):
    serve._banner(settings, {**SERVED, "tour": serve.tour_fits(settings)})
    return capsys.readouterr().out


def test_embedded_defaults_with_the_bundled_policies_show_the_tour_hint(workdir, capsys):
    out = banner(config.load(None, env={}), capsys)
    assert "dev issuer  https://dev.tenantgate.local" in out
    assert "token mint --tenant acme --sub alice --roles viewer" in out and "--resource-type Invoice" in out


def test_a_config_file_gets_no_hint_its_mint_would_sign_with_another_key(workdir, capsys):
    settings = config.load(TODO_CONFIG, env={})
    assert settings.dev_issuer.enabled
    out = banner(settings, capsys)
    assert "dev issuer" in out  # still said: it is on
    assert "Try" not in out and "token mint" not in out and "Invoice" not in out
    # Even a config file with the bundled policies: a mint without --config would use other keys.
    (workdir / "t.toml").write_text('[dev_issuer]\nenabled = true\n')
    assert "token mint" not in banner(config.load(workdir / "t.toml", env={}), capsys)


def test_embedded_defaults_on_a_schema_without_invoices_get_no_hint(workdir, capsys):
    todo_policies = TODO_CONFIG.parent / "policies"
    settings = config.load(None, env={"TENANTGATE_POLICIES_DIR": str(todo_policies)})
    assert "token mint" not in banner(settings, capsys)
    shutil.rmtree(workdir / "policies")  # no schema at all (the server would not start; the hint says nothing)
    assert not serve.tour_fits(config.load(None, env={}))


def test_workers_out_of_range_names_the_option(workdir, capsys):
    assert main.main(["serve", "--workers", "0"]) == main.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("tenantgate: --workers 0: ")
    assert "server.workers must be between 1 and 64, got 0" in err


def test_the_banner_shows_the_metrics_port_bound_not_the_configured_0(workdir, capsys):
    # Review finding: `metrics_listen = "127.0.0.1:0"` was shown as http://127.0.0.1:0/metrics.
    settings = config.load(None, env={"TENANTGATE_SERVER_METRICS_LISTEN": "127.0.0.1:0"})
    serve._banner(settings, {**SERVED, "metrics": 40123})
    assert "metrics     http://127.0.0.1:40123/metrics" in capsys.readouterr().out
    fixed = config.load(None, env={"TENANTGATE_SERVER_METRICS_LISTEN": "127.0.0.1:9464"})
    serve._banner(fixed, SERVED)  # a report without the port (an older worker): the configured one
    assert "metrics     http://127.0.0.1:9464/metrics" in capsys.readouterr().out
