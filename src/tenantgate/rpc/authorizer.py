"""``tenantgate.v1.Authorizer``: translate, call the one ``decide()``, translate back."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc

from tenantgate.core.engine import Engine
from tenantgate.core.model import CheckInput, DecisionResult, Resource
from tenantgate.core.pdp import DecisionPoint
from tenantgate.errors import InvalidRequest
from tenantgate.ids import decision_id as new_decision_id
from tenantgate.rpc import convert
from tenantgate.rpc.decoding import Undecodable
from tenantgate.rpc.metadata import bearer_from_metadata
from tenantgate.rpc.status import abort_with, stop_if_late
from tenantgate.v1 import authorizer_pb2 as pb
from tenantgate.v1 import authorizer_pb2_grpc as pb_grpc

log = logging.getLogger("tenantgate.rpc")

MAX_BATCH_ITEMS = 1000
BATCH_CHUNK = 50  # items decided (and audited) together; the deadline is checked between chunks
BATCH_THREADS = min(4, os.cpu_count() or 1)  # threads deciding batch chunks (see AuthorizerService)
# A Check whose resource attributes and context together pass this many bytes is converted and decided on the
# servicer's one large-request thread instead of the event loop. Converting a Struct runs in Python at about
# 0.3 µs per byte: a 52 KB context of 5,000 values cost 15 ms of event-loop time per call, so 64 such calls in
# flight held a neighbour's plain Check for 1.4 s (review finding). Ordinary contexts are a few hundred bytes.
ON_LOOP_MAX_STRUCT_BYTES = 4096

# Called after every decision with (api, result, seconds); metrics hang here. Must not raise.
DecisionObserver = Callable[[str, DecisionResult, float], None]


def _ignore(_api: str, _result: DecisionResult, _seconds: float) -> None:
    return None


class AuthorizerService(pb_grpc.AuthorizerServicer):
    def __init__(self, pdp: DecisionPoint, observe: DecisionObserver = _ignore) -> None:
        self._pdp = pdp
        self._observe = observe
        # Batch chunks run here, off the event loop. A few threads: signature checks (a batch of distinct
        # tokens) release the GIL and run in parallel; each batch submits one chunk at a time, so batches
        # take turns instead of one large batch holding every thread.
        self._batches = ThreadPoolExecutor(max_workers=BATCH_THREADS, thread_name_prefix="tenantgate-batch")
        # Large Checks queue for one thread: they cannot crowd out the event loop (one other GIL holder at a
        # time), only each other.
        self._large = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tenantgate-large-check")

    def close(self) -> None:
        """Let running batch chunks and large Checks finish, drop queued ones (their callers are gone), stop
        the threads."""
        self._batches.shutdown(wait=True, cancel_futures=True)
        self._large.shutdown(wait=True, cancel_futures=True)

    async def Check(self, request: pb.CheckRequest | Undecodable,
                    context: grpc.aio.ServicerContext) -> pb.CheckResponse:
        try:
            if isinstance(request, Undecodable):  # registered by rpc.decoding.add_service
                return self._answer(_undecodable(request, context))
            token, problem = _metadata_token(request.token, context)
            if _struct_bytes(request) > ON_LOOP_MAX_STRUCT_BYTES:
                return await asyncio.get_running_loop().run_in_executor(self._large, self._check, request, token,
                                                                        problem)
            return self._check(request, token, problem)
        except Exception:  # noqa: BLE001 - decide() never raises; this guards the conversions
            return self._internal_denial("check")

    def _check(self, request: pb.CheckRequest, token: str, problem: str) -> pb.CheckResponse:
        return self._answer(convert.check_input(request, fallback_token=token, token_problem=problem, api="check"))

    def _internal_denial(self, api: str) -> pb.CheckResponse:
        """Translating the call failed unexpectedly (logged here, in its ``except``): still a decided DENY
        ``internal_error`` with its audit record (review finding: its decision id had none)."""
        log.exception("%s: translating the call failed; denied internal_error", api)
        try:
            return self._answer(convert.failed_translation(api))
        except Exception:  # noqa: BLE001 - the answer itself cannot be made: the unrecorded last resort
            return _last_resort_denial(api, new_decision_id())

    def _answer(self, check: CheckInput) -> pb.CheckResponse:
        started = time.perf_counter()
        result = self._pdp.decide(check)
        self._observe("check", result, time.perf_counter() - started)
        return convert.check_response(result)

    async def BatchCheck(self, request: pb.BatchCheckRequest,
                         context: grpc.aio.ServicerContext) -> pb.BatchCheckResponse:
        if len(request.items) > MAX_BATCH_ITEMS:
            await abort_with(context, InvalidRequest(
                f"BatchCheck takes at most {MAX_BATCH_ITEMS} items, got {len(request.items)}"))
        token, problem = _metadata_token(request.token, context)
        shared, shared_problem = request.token or token, problem  # no problem when the request has a token
        # A batch can hold up to 1,000 full verifications: its chunks are decided off the event loop, so other
        # calls keep being answered, one chunk at a time on the servicer's batch threads, handing back to the
        # loop in between (cheaper per item than one thread running the whole batch, and concurrent batches
        # take turns). Deciding stops once the caller has gone: a cancelled call cancels this task (grpc.aio
        # raises CancelledError at the await; it runs done callbacks only after the handler has returned), and
        # past the deadline no further chunk is decided (audited) and nothing is answered (``stop_if_late``:
        # an abort there could meet a call the core has ended, which grpc.aio logs with a traceback).
        loop = asyncio.get_running_loop()
        items = list(request.items)
        engine = self._pdp.current_engine()  # one policy version for every chunk, whatever reloads meanwhile
        results: list[pb.CheckResponse] = []
        for start in range(0, len(items), BATCH_CHUNK):
            stop_if_late(context)
            results += await loop.run_in_executor(self._batches, self._decide_chunk,
                                                  items[start:start + BATCH_CHUNK], shared, shared_problem,
                                                  engine)
        # Answered even when the last chunk ended past the deadline: the caller may still take it (its own
        # timer runs a little late). Should the core have ended the call meanwhile, grpc.aio's error line for
        # the failed send is counted once a minute (observability.logging.EndedCallErrors).
        return pb.BatchCheckResponse(results=results)

    def _decide_chunk(self, items: list[pb.CheckRequest], shared: str, shared_problem: str,
                      engine: Engine | None) -> list[pb.CheckResponse]:
        """Decide items together (their audit records in one append); a bad item is a denial for it only."""
        checks: list[CheckInput] = []
        answers: list[pb.CheckResponse | None] = []
        for item in items:
            try:
                checks.append(convert.check_input(item, fallback_token=shared, token_problem=shared_problem,
                                                  api="batch_check"))
                answers.append(None)
            except Exception:
                log.exception("batch_check: translating an item failed; denied internal_error")
                checks.append(convert.failed_translation("batch_check"))
                answers.append(None)
        started = time.perf_counter()
        decided = self._pdp.decide_many(checks, engine)
        each = (time.perf_counter() - started) / max(1, len(checks))
        decisions = iter(decided)
        for index, answer in enumerate(answers):
            if answer is not None:
                continue
            result = next(decisions)
            self._observe("batch_check", result, each)
            try:
                answers[index] = convert.check_response(result)
            except Exception:  # noqa: BLE001 - as above; the item's record is written, under this decision id
                answers[index] = _last_resort_denial("batch_check", result.decision_id)
        return [answer for answer in answers if answer is not None]


def _struct_bytes(request: pb.CheckRequest) -> int:
    """Encoded size of the request's resource attributes and context (0 for the usual request with neither)."""
    size = request.context.ByteSize() if request.HasField("context") else 0
    if request.resource.HasField("attributes"):
        size += request.resource.attributes.ByteSize()
    return size


def _metadata_token(request_token: str, context: grpc.aio.ServicerContext) -> tuple[str, str]:
    """The metadata's bearer token and problem (``bearer_from_metadata``), read only when the request carries no
    token of its own: the request's token wins over the metadata, so its metadata is not even looked at."""
    if request_token:
        return "", ""
    return bearer_from_metadata(context.invocation_metadata())


def _undecodable(request: Undecodable, context: grpc.aio.ServicerContext) -> CheckInput:
    """A CheckRequest protobuf cannot decode: an audited ``invalid_request`` denial, for the metadata's token
    when there is one (the request's own cannot be read), like any other request that cannot be understood."""
    token, problem = bearer_from_metadata(context.invocation_metadata())
    if not token and not problem:
        # Not "no token presented": the body may well hold one (review finding: a misleading answer). As ext_authz
        # answers an undecodable request: token_invalid, saying why.
        problem = f"the request could not be decoded ({request.problem}), so its token could not be read"
    return CheckInput(token=token, action="", resource=Resource("", "", ""), token_problem=problem,
                      request_problem=request.problem, api="check")


def _last_resort_denial(api: str, decision_id: str) -> pb.CheckResponse:
    """When not even a decided answer can be made: an explicit DENY, never an unset response."""
    log.exception("%s: no answer could be made; denied as %s", api, decision_id)
    return pb.CheckResponse(decision=pb.DENY, reason="internal_error", decision_id=decision_id,
                            message="internal error while translating the call or its answer")
