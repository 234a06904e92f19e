"""abort_with and stop_if_late never answer a call that has ended: grpc.aio logs a failed answer as an error
with a traceback, per call (review finding: 2-9 per 1,000 BatchChecks with short deadlines)."""

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc._cython import cygrpc

from tenantgate.errors import TokenMissing
from tenantgate.rpc.status import abort_with, stop_if_late

BUNDLED = Path(__file__).resolve().parents[3] / "policies"


class _Context:
    """The parts of grpc.aio's ServicerContext these functions use; ``abort`` behaves as the core makes it."""

    def __init__(self, remaining=None, done=False, core_ended=False):
        self.remaining, self._done, self.core_ended = remaining, done, core_ended
        self.aborted: list[tuple[grpc.StatusCode, str]] = []

    def time_remaining(self):
        return self.remaining

    def done(self):
        return self._done

    def cancelled(self):
        return False

    async def abort(self, code, details=""):
        self.aborted.append((code, details))
        if self.core_ended:  # what grpc.aio raises when the core has ended the call before the status went out
            raise cygrpc.ExecuteBatchError('Failed "execute_batch": (SendStatusFromServerOperation,)')
        raise grpc.aio.AbortError("Locally aborted.")


def _run(coroutine):
    return asyncio.run(coroutine)


def test_a_live_call_is_aborted_with_the_tables_status():
    context = _Context(remaining=5.0)
    with pytest.raises(grpc.aio.AbortError):
        _run(abort_with(context, TokenMissing("no bearer token in the call metadata")))
    assert context.aborted == [(grpc.StatusCode.UNAUTHENTICATED, "no bearer token in the call metadata")]


def test_a_call_with_its_status_already_is_not_aborted_again():
    context = _Context(done=True)
    with pytest.raises(asyncio.CancelledError):
        _run(abort_with(context, TokenMissing("no token")))
    assert context.aborted == []


def test_a_call_the_core_ended_while_aborting_ends_the_handler_as_cancelled_not_as_an_error():
    context = _Context(remaining=0.0, core_ended=True)
    # grpc.aio logs a CancelledError at debug, an ExecuteBatchError at error
    with pytest.raises(asyncio.CancelledError):
        _run(abort_with(context, TokenMissing("no token")))


@pytest.mark.parametrize("context,late", [(_Context(remaining=None), False), (_Context(remaining=0.01), False),
                                          (_Context(remaining=0.0), True), (_Context(done=True), True)])
def test_stop_if_late_ends_the_handler_once_the_deadline_has_passed(context, late):
    if late:
        with pytest.raises(asyncio.CancelledError):
            stop_if_late(context)
    else:
        stop_if_late(context)
    assert context.aborted == []


def test_a_batch_past_its_deadline_between_chunks_stops_without_aborting(tmp_path):
    from support.issuers import FixedClock, TestIssuer, verifier_for
    from tenantgate.audit import JsonlAuditSink
    from tenantgate.core.pdp import DecisionPoint
    from tenantgate.policy import PolicyStore, load_policies
    from tenantgate.rpc.authorizer import BATCH_CHUNK, AuthorizerService
    from tenantgate.v1 import authorizer_pb2 as pb

    clock = FixedClock(1_700_000_000)
    issuer = TestIssuer(tmp_path, clock=clock)
    sink = JsonlAuditSink(tmp_path / "audit.jsonl")
    pdp = DecisionPoint(verifier=verifier_for(issuer, clock=clock), audit=sink, clock=clock,
                        engine=PolicyStore(load_policies(BUNDLED)).current)
    service = AuthorizerService(pdp)

    class _Late(_Context):
        def time_remaining(self):  # the deadline passes while the first chunk is decided
            return 0.0 if sink.path.exists() and sink.path.read_text() else 1.0

    context = _Late()
    item = pb.CheckRequest(action="read", resource=pb.Resource(type="Invoice", id="inv-1", tenant="acme"))
    try:
        with pytest.raises(asyncio.CancelledError):
            _run(service.BatchCheck(pb.BatchCheckRequest(token=issuer.mint(roles=["viewer"]),
                                                         items=[item] * (3 * BATCH_CHUNK)), context))
    finally:
        service.close()
    assert context.aborted == []  # nothing sent: the core may have ended the call already
    assert len(sink.path.read_text().splitlines()) == BATCH_CHUNK  # and no further chunk was decided
