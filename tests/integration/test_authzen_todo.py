"""The OpenID AuthZEN Todo interop scenario (examples/authzen-todo), replayed against a real server.

The cases are documented decisions of the interop (openid/authzen, interop/authzen-todo-backend/test/
decisions-1.0-implementers-draft.json, and the boxcarred example of the scenario's 1.1 payload spec): the
PEP states each user by their directory id (PID), todos name their owner by email.
"""

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import httpx
import pytest

from support.server import running_server
from tenantgate import config
from tenantgate.cli.main import main as cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "authzen-todo"
PID = {  # the scenario's user ids (its "Subjects" table)
    "rick": "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "morty": "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "summer": "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "beth": "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    "jerry": "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
}
TODO = "7240d0db-8ff0-41ec-98b2-34a096273b9f"


def _case(user, action, resource, expected):
    return {"user": user, "request": {"subject": {"type": "user", "id": PID[user]}, "action": {"name": action},
                                      "resource": resource}, "expected": expected}


def _todo(owner):
    return {"type": "todo", "id": TODO, "properties": {"ownerID": owner}}


DECISIONS = {
    "evaluation": [
        _case("rick", "can_read_user", {"type": "user", "id": "beth@the-smiths.com"}, True),
        _case("rick", "can_create_todo", {"type": "todo", "id": "todo-1"}, True),
        _case("rick", "can_update_todo", _todo("morty@the-citadel.com"), True),
        _case("rick", "can_delete_todo", _todo("morty@the-citadel.com"), True),
        _case("morty", "can_read_todos", {"type": "todo", "id": "todo-1"}, True),
        _case("morty", "can_update_todo", _todo("rick@the-citadel.com"), False),
        _case("morty", "can_update_todo", _todo("morty@the-citadel.com"), True),
        _case("morty", "can_delete_todo", _todo("rick@the-citadel.com"), False),
        _case("summer", "can_delete_todo", _todo("summer@the-smiths.com"), True),
        _case("beth", "can_create_todo", {"type": "todo", "id": "todo-1"}, False),
        _case("beth", "can_update_todo", _todo("beth@the-smiths.com"), False),
        _case("jerry", "can_read_user", {"type": "user", "id": "jerry@the-smiths.com"}, True),
        _case("jerry", "can_delete_todo", _todo("jerry@the-smiths.com"), False),
    ],
    "evaluations": [
        {"request": {"subject": {"type": "user", "id": PID["morty"]}, "action": {"name": "can_update_todo"},
                     "resource": {}, "context": {},
                     "evaluations": [{"resource": _todo("rick@the-citadel.com")},
                                     {"resource": _todo("morty@the-citadel.com")}]},
         "expected": [{"decision": False}, {"decision": True}]},
    ],
}


def _load_replay():
    spec = importlib.util.spec_from_file_location("authzen_todo_replay", EXAMPLE / "replay.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def todo(tmp_path_factory):
    state = tmp_path_factory.mktemp("todo-state")
    env = {"TENANTGATE_SERVER_STATE_DIR": str(state), "TENANTGATE_SERVER_LISTEN": "127.0.0.1:0",
           "TENANTGATE_HTTP_LISTEN": "127.0.0.1:0", "TENANTGATE_POLICIES_POLL_INTERVAL_SECONDS": "0"}
    settings = config.load(EXAMPLE / "tenantgate.toml", env=env)
    assert (settings.http.mode, settings.dev_issuer.enabled) == ("trusted_pep", True)
    with running_server(settings) as (_address, app):
        yield f"http://127.0.0.1:{app.http_port}", env


@pytest.fixture(scope="module")
def pep_token(todo):
    """The Todo backend's token, minted exactly as the README says (with the example's state dir)."""
    _base, env = todo
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli(["token", "mint", "--config", str(EXAMPLE / "tenantgate.toml"), "--tenant", "todo-app",
                        "--sub", "todo-backend", "--roles", "authzen-pep"])
    assert code == 0
    return out.getvalue().strip()


@pytest.mark.parametrize("case", DECISIONS["evaluation"],
                         ids=lambda c: f"{c['user']}-{c['request']['action']['name']}-{c['expected']}")
def test_documented_todo_decisions(todo, pep_token, case):
    base, _env = todo
    response = httpx.post(f"{base}/access/v1/evaluation", json=case["request"],
                          headers={"Authorization": f"Bearer {pep_token}"}, timeout=10)
    assert response.status_code == 200
    assert response.json()["decision"] is case["expected"], response.json()["context"]


def test_the_boxcarred_todo_example(todo, pep_token):
    base, _env = todo
    (case,) = DECISIONS["evaluations"]
    response = httpx.post(f"{base}/access/v1/evaluations", json=case["request"],
                          headers={"Authorization": f"Bearer {pep_token}"}, timeout=10)
    assert [e["decision"] for e in response.json()["evaluations"]] == [False, True]


def test_the_replay_script_runs_an_interop_decisions_file(todo, pep_token, tmp_path, capsys):
    base, _env = todo
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps(DECISIONS))
    assert _load_replay().main([str(decisions), base, "--token", pep_token]) == 0
    assert f"{len(DECISIONS['evaluation']) + 1} of {len(DECISIONS['evaluation']) + 1}" in capsys.readouterr().out


def test_the_replay_script_says_what_is_wrong_without_a_traceback(tmp_path, capsys):
    """A new user runs it before downloading the interop file, or before starting the server: one line, exit 1."""
    replay = _load_replay()
    missing = tmp_path / "decisions-1.0-implementers-draft.json"
    assert replay.main([str(missing), "http://127.0.0.1:1", "--token", "x"]) == 1
    assert "cannot read the decisions file" in capsys.readouterr().err
    not_an_object = tmp_path / "list.json"
    not_an_object.write_text("[]")
    assert replay.main([str(not_an_object), "http://127.0.0.1:1", "--token", "x"]) == 1
    assert "not an interop decisions file" in capsys.readouterr().err
    decisions = tmp_path / "decisions.json"
    decisions.write_text(json.dumps(DECISIONS))
    assert replay.main([str(decisions), "http://127.0.0.1:1", "--token", "x"]) == 1  # nothing listens on port 1
    assert "no answer from http://127.0.0.1:1" in capsys.readouterr().err


def test_the_todo_tenant_is_isolated_from_callers_of_other_tenants(todo, pep_token, tmp_path):
    base, env = todo
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            cli(["token", "mint", "--config", str(EXAMPLE / "tenantgate.toml"), "--tenant", "other",
                 "--sub", "other-backend", "--roles", "authzen-pep"])
    other = out.getvalue().strip()
    rick_deletes = _case("rick", "can_delete_todo", {**_todo("rick@the-citadel.com"),
                                                     "properties": {"ownerID": "x", "tenant": "todo-app"}}, False)
    answer = httpx.post(f"{base}/access/v1/evaluation", json=rick_deletes["request"],
                        headers={"Authorization": f"Bearer {other}"}, timeout=10).json()
    # Another tenant's PEP can neither name the Todo app's users nor reach its todos.
    assert (answer["decision"], answer["context"]["reason"]) == (False, "subject_unknown")
