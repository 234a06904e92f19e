"""The README tour as a user runs it: `tenantgate serve` on embedded defaults, `token mint`, `check`, `validate`."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

TENANTGATE = [sys.executable, "-m", "tenantgate.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, cwd, env=None, **kw):
    return subprocess.run([*TENANTGATE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, **kw)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTGATE_")}
    env.update(extra)
    return env


def test_serve_on_embedded_defaults_then_mint_and_check_then_sigterm(workdir):
    port, mport = _free_port(), _free_port()
    env = _env(TENANTGATE_SERVER_LISTEN=f"127.0.0.1:{port}", TENANTGATE_SERVER_METRICS_LISTEN=f"127.0.0.1:{mport}")
    proc = subprocess.Popen([*TENANTGATE, "serve"], cwd=workdir, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()
        assert f"serving gRPC on 127.0.0.1:{port}" in banner, proc.stderr.read() if proc.poll() else banner
        hint = "".join(iter(proc.stdout.readline, "Stop with Ctrl-C (SIGTERM drains in-flight calls).\n"))
        assert "token mint --tenant acme --sub alice --roles viewer" in hint  # embedded defaults: it works
        assert (workdir / ".tenantgate" / "dev-issuer" / "jwks.json").exists()
        token = _run(["token", "mint", "--tenant", "acme", "--sub", "alice", "--roles", "viewer"], workdir,
                     env).stdout.strip()
        assert token.count(".") == 2
        base = ["check", "--server", f"127.0.0.1:{port}", "--token", token, "--action", "read",
                "--resource-type", "Invoice", "--resource-id", "inv-1"]
        allowed = _run([*base, "--resource-tenant", "acme"], workdir, env)
        assert allowed.returncode == 0, allowed.stderr
        answer = json.loads(allowed.stdout)
        assert (answer["decision"], answer["reason"]) == ("ALLOW", "allow")
        denied = _run([*base, "--resource-tenant", "globex"], workdir, env)
        assert denied.returncode == 2
        answer = json.loads(denied.stdout)
        assert (answer["decision"], answer["reason"]) == ("DENY", "cross_tenant")
        audit = (workdir / ".tenantgate" / "audit.jsonl").read_text()
        assert answer["decision_id"] in audit and token not in audit
        from urllib.request import urlopen

        metrics = urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
        assert 'tenantgate_decisions_total{api="check",decision="deny",reason="cross_tenant"} 1.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30)
        finally:
            proc.kill()
    assert code == 0


def test_check_without_server_decides_in_process_with_exit_codes(workdir):
    env = _env()
    token = _run(["token", "mint", "--tenant", "acme", "--sub", "alice", "--roles", "editor"], workdir, env).stdout
    base = ["check", "--token", token.strip(), "--resource-type", "Invoice", "--resource-id", "i",
            "--resource-tenant", "acme"]
    assert _run([*base, "--action", "update"], workdir, env).returncode == 0
    paid = _run([*base, "--action", "update", "--resource-attributes", '{"status": "paid"}'], workdir, env)
    assert paid.returncode == 2 and json.loads(paid.stdout)["reason"] == "policy_forbid"
    bad = _run([*base, "--action", "update", "--context", "[1]"], workdir, env)
    assert bad.returncode == 1 and "JSON object" in bad.stderr
    record = json.loads((workdir / ".tenantgate" / "audit.jsonl").read_text().splitlines()[-1])
    assert record["api"] == "cli"


def test_check_token_from_environment(workdir):
    env = _env()
    token = _run(["token", "mint", "--tenant", "acme", "--sub", "a", "--roles", "viewer"], workdir, env).stdout
    out = _run(["check", "--action", "read", "--resource-type", "Ticket", "--resource-id", "t",
                "--resource-tenant", "acme"], workdir, _env(TENANTGATE_TOKEN=token.strip()))
    assert out.returncode == 0, out.stdout + out.stderr


def test_mint_refuses_without_the_development_issuer(workdir):
    cfg = workdir / "prod.toml"
    cfg.write_text('[[tokens.issuers]]\nissuer = "https://x"\naudiences = ["a"]\nalgorithms = ["RS256"]\n'
                   'jwks_url = "https://x/jwks"\n')
    out = _run(["token", "mint", "--config", str(cfg), "--tenant", "acme", "--sub", "a"], workdir, _env())
    assert out.returncode == 1 and "development issuer" in out.stderr


def test_validate_reports_file_and_line_and_exit_3(workdir):
    assert _run(["validate"], workdir, _env()).returncode == 0
    (workdir / "policies" / "zz-bad.cedar").write_text(
        'permit(principal, action, resource);\n\n@id("typo")\npermit(principal, action, resource is Invoice)'
        ' when { resource.statuss == "x" };\n')
    out = _run(["validate"], workdir, _env())
    assert out.returncode == 3
    shown = out.stdout.replace(str(workdir) + os.sep, "")
    assert f"{Path('policies') / 'zz-bad.cedar'}:3:1: [typo] for policy `typo`, attribute `statuss`" in shown


def test_serve_refuses_to_start_on_invalid_policies(workdir):
    (workdir / "policies" / "broken.cedar").write_text("permit(principal, action, resource) when {")
    out = _run(["serve"], workdir, _env(TENANTGATE_SERVER_LISTEN=f"127.0.0.1:{_free_port()}"))
    assert out.returncode == 3
    assert "broken.cedar:1" in out.stderr


def test_serve_refuses_a_busy_port(workdir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _run(["serve"], workdir, _env(TENANTGATE_SERVER_LISTEN=f"127.0.0.1:{port}",
                                            TENANTGATE_SERVER_METRICS_LISTEN=""))
    assert out.returncode == 1 and "cannot listen" in out.stderr
    # Review finding: gRPC's C core printed its own error line first ("E1204 ... add_port.cc ... Address already
    # in use"), where the README promises one plain `tenantgate: ...` message.
    expected = f"tenantgate: cannot listen on 127.0.0.1:{port} (server.listen): Address already in use"
    assert out.stderr.strip() == expected


def _lines_until_stop(proc):
    return list(iter(proc.stdout.readline, "Stop with Ctrl-C (SIGTERM drains in-flight calls).\n"))


def test_with_audit_stdout_serve_tees_records_but_in_process_commands_print_only_their_answer(workdir):
    # `[audit] stdout = true` is for the server's log shipper. An in-process check or explain prints its
    # answer on stdout: the record copy came first and `json.load(stdout)` failed ("Extra data").
    port = _free_port()
    cfg = workdir / "tenantgate.toml"
    cfg.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nmetrics_listen = ""\n[dev_issuer]\nenabled = true\n'
                   '[audit]\nstdout = true\n')
    env = _env()
    token = _run(["token", "mint", "--config", str(cfg), "--tenant", "acme", "--sub", "alice", "--roles", "viewer"],
                 workdir, env).stdout.strip()
    request = ["--token", token, "--action", "read", "--resource-type", "Invoice", "--resource-id", "inv-1",
               "--resource-tenant", "acme"]
    local = _run(["check", "--config", str(cfg), *request], workdir, env)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["decision"] == "ALLOW"  # the answer alone
    explained = _run(["explain", "--config", str(cfg), "--json", *request], workdir, env)
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["decision"] == "ALLOW"
    chained = [json.loads(line) for line in (workdir / ".tenantgate" / "audit.jsonl").read_text().splitlines()]
    assert [r["decision_id"] for r in chained if r["record_type"] == "decision"] == [
        json.loads(local.stdout)["decision_id"], json.loads(explained.stdout)["decision_id"]]  # still recorded

    proc = subprocess.Popen([*TENANTGATE, "serve", "--config", str(cfg)], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = _lines_until_stop(proc)
        assert f"serving gRPC on 127.0.0.1:{port}" in banner[0], proc.stderr.read() if proc.poll() else banner
        assert not [line for line in banner if "token mint" in line]  # a config file: no hint
        remote = _run(["check", "--server", f"127.0.0.1:{port}", *request], workdir, env)
        assert remote.returncode == 0, remote.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _err = proc.communicate(timeout=30)
        finally:
            proc.kill()
    records = [json.loads(line) for line in out.splitlines()]  # the server still tees, as documented
    (teed,) = [r for r in records if r["record_type"] == "decision"]
    assert teed["record_type"] == "decision" and teed["decision_id"] == json.loads(remote.stdout)["decision_id"]


def test_a_worker_that_cannot_start_reports_in_the_json_log_stream(workdir):
    (workdir / "policies" / "wtest.cedar").write_text("permit(principal, action, resource) when {")
    out = _run(["serve", "--workers", "2"], workdir, _env(TENANTGATE_SERVER_LISTEN=f"127.0.0.1:{_free_port()}",
                                                          TENANTGATE_SERVER_METRICS_LISTEN=""))
    assert out.returncode == 3
    logged = [json.loads(line) for line in out.stderr.splitlines()]  # every line is JSON
    (failure,) = [line for line in logged if line.get("worker") == 0 and line["level"] == "error"]
    assert failure["message"].startswith("invalid policies: ")
    assert [detail.split(":")[:2] for detail in failure["details"]] == [["wtest.cedar", "1"]]
