"""Large bodies at the AuthZEN HTTP edge: parsed and decided off the event loop (which also serves gRPC), one at a
time, a few waiting their turn without holding a decision slot, the rest 503 at once; the slots, body budget
and turns exact again afterwards, whoever hung up or was turned away.
"""

import asyncio
import socket
import threading
import time

import httpx
import pytest

from support.authzen import bearer
from support.http_intake import (
    BODY,
    EVALUATION,
    _exchange,
    _own_server,
    _own_server_and_state,
    _request,
    _status,
)
from tenantgate.http import intake


def test_large_bodies_are_parsed_and_decided_off_the_event_loop(tmp_path, monkeypatch):
    threads = []
    real_parse = intake.parse_strict_json

    def recording(text):
        threads.append(threading.current_thread())
        return real_parse(text)

    monkeypatch.setattr(intake, "parse_strict_json", recording)
    port, issuer, stop = _own_server(tmp_path, verifier_first=True)
    try:
        good = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
        padding = b', "padding": "' + b"x" * intake.ON_LOOP_MAX_BODY_BYTES + b'"}'  # unknown: ignored
        for body in (BODY, BODY[:-1] + padding):
            head, answer = _exchange(port, _request(token=good, body=body))
            assert _status(head) == 200 and '"decision": true' in answer, (head, answer[:200])
        loop_thread = next(t for t in threading.enumerate() if t.name == "authzen-test-loop")
        assert threads[0] is loop_thread and threads[1] is not loop_thread
    finally:
        stop()


# ------------------------------------------------------------------ large bodies waiting for the worker (review 2)


LARGE_BODY = BODY[:-1] + b', "padding": "' + b"x" * (2 * intake.ON_LOOP_MAX_BODY_BYTES) + b'"}'


@pytest.fixture
def held_worker(monkeypatch):
    """Large bodies' parsing blocks until ``release`` is set; ``parsed`` counts the large bodies parsed."""
    release, started, parsed = threading.Event(), threading.Event(), []
    real_parse = intake.parse_strict_json

    def holding(text):
        if len(text) > intake.ON_LOOP_MAX_BODY_BYTES:
            parsed.append(len(text))
            started.set()
            release.wait(10)
        return real_parse(text)

    monkeypatch.setattr(intake, "parse_strict_json", holding)
    yield release, started, parsed
    release.set()


def _wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _accounting_is_back(state, full_budget):
    _wait_for(lambda: state._slots.in_flight == 0 and state._bodies.free == full_budget)
    assert state._large_bodies.waiting == 0


def test_large_bodies_waiting_for_the_worker_leave_decision_slots_to_small_requests(tmp_path, held_worker):
    # 4 decision slots; 4 large bodies from one client: one parsed, two waiting (at most half the slots),
    # the fourth 503 at once. None of the waiting ones holds a slot, so another client's small request is decided.
    release, started, parsed = held_worker
    port, issuer, stop, state = _own_server_and_state(tmp_path)
    url = f"http://127.0.0.1:{port}{EVALUATION}"
    full_budget = state._bodies.free
    try:
        alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
        headers = bearer(alice, **{"Content-Type": "application/json"})
        large = []

        def send_large():
            response = httpx.post(url, content=LARGE_BODY, headers=headers, timeout=30)
            large.append((response.status_code, response.headers.get("Retry-After")))

        senders = [threading.Thread(target=send_large) for _ in range(4)]
        for sender in senders:
            sender.start()
        assert started.wait(5)
        _wait_for(lambda: state._bodies.free <= full_budget - 3 * len(LARGE_BODY))  # the others are in
        time.sleep(0.2)
        for _ in range(3):
            small = httpx.post(url, content=BODY, headers=headers, timeout=5)
            assert small.status_code == 200 and small.json()["decision"] is True, small.text
        _wait_for(lambda: large == [(503, "1")])  # the one beyond the queue, answered without waiting
        release.set()
        for sender in senders:
            sender.join(30)
        assert sorted(large) == [(200, None)] * 3 + [(503, "1")]
        assert len(parsed) == 3
        _accounting_is_back(state, full_budget)
    finally:
        stop()


def test_a_large_body_whose_client_hangs_up_while_waiting_is_not_parsed(tmp_path, held_worker):
    release, started, parsed = held_worker
    port, issuer, stop, state = _own_server_and_state(tmp_path)
    full_budget = state._bodies.free
    try:
        alice = issuer.mint(tenant="acme", sub="alice", roles=["viewer"])
        with socket.create_connection(("127.0.0.1", port)) as first:
            first.sendall(_request(token=alice, body=LARGE_BODY))
            assert started.wait(5)
            with socket.create_connection(("127.0.0.1", port)) as second:
                second.sendall(_request(token=alice, body=LARGE_BODY))
                _wait_for(lambda: state._large_bodies.waiting == 1)
            time.sleep(0.2)  # the second hung up while waiting its turn
            release.set()
            first.settimeout(10)
            assert first.recv(65536).startswith(b"HTTP/1.1 200")
        assert len(parsed) == 1
        _accounting_is_back(state, full_budget)
    finally:
        stop()


def test_large_body_turns_stay_exact_when_a_waiter_is_cancelled_or_turned_away():
    async def scenario():
        turns = intake.LargeBodyTurns(max_waiting=1)
        holding, finish = asyncio.Event(), asyncio.Event()

        async def hold():
            async with turns.turn():
                holding.set()
                await finish.wait()

        holder = asyncio.create_task(hold())
        await holding.wait()
        waiter = asyncio.create_task(hold())
        await asyncio.sleep(0)
        assert turns.waiting == 1
        with pytest.raises(intake.Refused) as refused:  # the queue is full
            async with turns.turn():
                pass
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert turns.waiting == 0
        finish.set()
        await holder
        async with turns.turn():  # the worker is free again, for the next one at once
            assert turns.waiting == 0

    asyncio.run(scenario())
