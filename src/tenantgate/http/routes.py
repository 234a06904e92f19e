"""The AuthZEN HTTP endpoints as an aiohttp application: translate, call the one ``decide()``, translate back.

* ``POST /access/v1/evaluation``  -> ``{"decision": bool, "context": {...}}`` (a denial is 200, never an error)
* ``POST /access/v1/evaluations`` -> ``{"evaluations": [...]}`` (execute_all / deny_on_first_deny /
  permit_on_first_permit; no or an empty ``evaluations`` array is answered as a single evaluation)
* ``GET /.well-known/authzen-configuration`` -> PDP metadata

Errors (AuthZEN 1.0, HTTPS binding): 400 for a body that is not a JSON object or a wrong ``Content-Type``,
missing or ill-typed required members, or a body that cannot be decoded; 401 (with ``WWW-Authenticate``) when
the bearer token is missing or not accepted, answered before the body is read; 403 when the caller may not
ask (see ``convert.http_status``); 408 when the body does not arrive in time; 413 above ``max_body_bytes``;
415 for a ``Content-Encoding`` other than identity, gzip or deflate; 501 for a ``Transfer-Encoding`` other
than ``chunked`` (400 on HTTP/1.0); 505 for a request line naming neither HTTP/1.0 nor HTTP/1.1; 503 above
``max_concurrent_requests`` decisions in flight (or too many body bytes in transit, or too many large bodies
waiting for the worker).
See ``intake`` for the order; an answer given before the body was in closes the connection. Error bodies are a
plain-text message. ``X-Request-ID`` is echoed on every answer; every decision's id is also in
``X-TenantGate-Decision-Id``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from tenantgate.core.engine import Engine
from tenantgate.core.model import CheckInput, DecisionResult, SubjectBinding
from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.ports import TokenVerifier
from tenantgate.errors import TokenError
from tenantgate.http import convert, intake

log = logging.getLogger("tenantgate.http")

# Called after every decision with (api, result, seconds); metrics hang here. Must not raise.
DecisionObserver = Callable[[str, DecisionResult, float], None]

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
CONFIGURATION_PATH = "/.well-known/authzen-configuration"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
_REQUEST_ID = "X-Request-ID"
_DECISION_ID = "X-TenantGate-Decision-Id"
_REALM = 'Bearer realm="tenantgate"'


@dataclass(frozen=True, slots=True)
class Limits:
    max_body_bytes: int
    max_concurrent_requests: int
    max_evaluations: int


def _ignore(_api: str, _result: DecisionResult, _seconds: float) -> None:
    return None


def build_app(pdp: DecisionPoint, *, mode: str, limits: Limits, public_url: str = "", tls: bool = False,
              observe: DecisionObserver = _ignore, verifier: TokenVerifier | None = None) -> web.Application:
    """The aiohttp application. ``mode`` is ``user_token`` or ``trusted_pep`` (``[http] mode``).

    ``verifier``: the ``DecisionPoint``'s own verifier (it caches). With it, a presented token is verified
    before the body is read, so a caller whose token is refused never gets its body parsed; without it, only
    a missing or malformed ``Authorization`` header is refused that early."""
    handlers = _Handlers(pdp, SubjectBinding.PEP if mode == "trusted_pep" else SubjectBinding.TOKEN, limits,
                         public_url, tls, observe, verifier)
    app = web.Application(client_max_size=limits.max_body_bytes, middlewares=[_request_id_middleware])
    app.router.add_post(EVALUATION_PATH, handlers.evaluation, expect_handler=intake.defer_continue)
    app.router.add_post(EVALUATIONS_PATH, handlers.evaluations, expect_handler=intake.defer_continue)
    app.router.add_get(CONFIGURATION_PATH, handlers.configuration)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = TypeVar("_T")


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo ``X-Request-ID`` on every answer, errors included (AuthZEN 1.0, request identification). A request
    whose framing is refused (``intake.check_framing``) reaches no handler."""
    try:
        intake.check_framing(request)
        response = await handler(request)
    except intake.Refused as err:
        response = _error(err.status, err.message)
        response.headers.update(err.headers)
        if err.close:
            response.force_close()
    except intake.ClientGone:
        # Nobody to answer; aiohttp drops the answer quietly. A hang-up is routine, not an error to log.
        log.debug("AuthZEN client hung up before its request was answered")
        response = _error(400, "the request body was cut off")
    except web.HTTPException as err:  # aiohttp's own (404, 405, ...): answered as a plain response
        response = _error(err.status, err.text or err.reason)
        if "Allow" in err.headers:
            response.headers["Allow"] = err.headers["Allow"]
    except Exception:  # an unexpected failure is a 500, never an allow
        log.exception("AuthZEN request failed unexpectedly")
        response = _error(500, "internal error")
    if intake.must_close(request):
        # Answered before its body was in (refused from the headers, or cut short): see intake.must_close.
        response.force_close()
    request_id = request.headers.get(_REQUEST_ID)
    if request_id is not None:
        response.headers[_REQUEST_ID] = request_id
    return response


class _Handlers:
    def __init__(self, pdp: DecisionPoint, binding: SubjectBinding, limits: Limits, public_url: str, tls: bool,
                 observe: DecisionObserver, verifier: TokenVerifier | None) -> None:
        self._pdp = pdp
        self._binding = binding
        self._limits = limits
        self._public_url = public_url.rstrip("/")
        self._scheme = "https" if tls else "http"
        self._observe = observe
        self._verifier = verifier
        # Decision slots are taken only once the body is in; bodies in transit are bounded by the bytes they
        # hold (the same worst case as max_concurrent_requests full bodies), not by the time they take.
        self._slots = intake.DecisionSlots(limits.max_concurrent_requests)
        self._bodies = intake.BodyBudget(limits.max_concurrent_requests * limits.max_body_bytes)
        self._large_bodies = intake.LargeBodyTurns.for_limits(limits.max_concurrent_requests)

    async def evaluation(self, request: web.Request) -> web.StreamResponse:
        async def work(raw: bytes, token: str, problem: str) -> web.StreamResponse:
            # Checking a large request's attributes and context walks all of it, like parsing it does.
            return await self._by_size(raw, lambda: self._evaluation(intake.parse_json(raw), token, problem))

        return await self._intake(request, work)

    def _evaluation(self, body: Any, token: str, problem: str) -> web.Response:
        try:
            evaluation = convert.parse_evaluation(body)
        except convert.BadRequest as err:
            return _error(400, str(err))
        return self._single(evaluation, token, problem)

    async def evaluations(self, request: web.Request) -> web.StreamResponse:
        async def work(raw: bytes, token: str, problem: str) -> web.StreamResponse:
            body = await self._by_size(raw, lambda: intake.parse_json(raw))
            return await self._evaluations(request, body, token, problem)

        return await self._intake(request, work)

    async def _intake(self, request: web.Request,
                      work: Callable[[bytes, str, str], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Admit the request from its headers (``_admit``), read its body, wait for the large-body worker if the
        body is large, hold a decision slot, then ``work(body, token, token_problem)``: the order ``intake``
        describes. A large body holds no decision slot while it waits, so other callers' small requests keep
        being decided."""
        caller = self._admit(request)
        if isinstance(caller, web.Response):
            return caller
        token, problem = caller
        async with intake.body_of(request, self._limits.max_body_bytes, self._bodies) as raw:
            large = len(raw) > intake.ON_LOOP_MAX_BODY_BYTES
            async with self._large_bodies.turn() if large else contextlib.nullcontext():
                if large and (request.transport is None or request.transport.is_closing()):
                    raise intake.ClientGone()  # hung up while waiting: parse and decide nothing for nobody
                with self._slots.hold():
                    return await work(raw, token, problem)

    async def _by_size(self, raw: bytes, work: Callable[[], _T]) -> _T:
        """``work()`` on the loop for a small body; for a large one on a worker thread (``_intake`` holds the
        large-body turn, so one at a time): an 864 KB body took 0.3-0.5 s to parse on the loop."""
        if len(raw) <= intake.ON_LOOP_MAX_BODY_BYTES:
            return work()
        return await asyncio.to_thread(work)

    async def _evaluations(self, request: web.Request, body: Any, token: str, problem: str) -> web.StreamResponse:
        try:
            parsed = convert.parse_evaluations(body, self._limits.max_evaluations)
        except convert.BadRequest as err:
            return _error(400, str(err))
        if parsed.single:
            return self._single(parsed.items[0], token, problem)
        checks = [convert.check_input(item, token=token, token_problem=problem, binding=self._binding)
                  for item in parsed.items]
        transport = request.transport
        # Up to max_evaluations full decisions: off the event loop, so other requests keep being answered;
        # stop deciding (and auditing) once the caller has hung up.
        answers = await asyncio.to_thread(self._decide_all, checks, parsed, lambda: transport is None
                                          or transport.is_closing())
        if isinstance(answers, web.Response):
            return answers
        return web.json_response({"evaluations": answers})

    def _admit(self, request: web.Request) -> tuple[str, str] | web.Response:
        """``(token, token_problem)`` for a request worth reading, or the answer to one that is not.

        Everything here looks at headers only: a caller without a usable token gets its 401 (a decision,
        audited as always) before one byte of its body is read or parsed, so unauthenticated traffic cannot
        buy event-loop time (shared with gRPC) or hold a slot by uploading slowly."""
        intake.check_headers(request, self._limits.max_body_bytes)
        token, problem = _bearer(request)
        if problem or not token:
            return self._refuse_unread(token, problem, None)
        refusal = self._refusal(token)
        if refusal is not None:
            return self._refuse_unread(token, problem, refusal)
        return token, problem

    def _refusal(self, token: str) -> Exception | None:
        """Why the token is refused, or None when it verifies (a valid one is cached per token)."""
        if self._verifier is None:
            return None  # not known yet: decide() verifies it, after the body
        try:
            self._verifier.verify(token)
        except Exception as err:  # noqa: BLE001 - why it was refused is decide()'s to say (and audit), just below
            return err
        return None

    def _refuse_unread(self, token: str, problem: str, refusal: Exception | None) -> web.Response:
        # decide() is told why the token was just refused, so a forged token costs one verification, not two
        # (review finding); anything but a token error it verifies again and classifies itself.
        known = {token: refusal} if isinstance(refusal, TokenError) else None
        result = self._decide(convert.unread_check(token, problem), refused=known)
        if convert.caller_refused(result.reason):
            return _refusal(result)
        # The token passed on the second look (its key set refreshed in between): nothing was asked yet.
        response = _error(503, "the token could not be checked; retry shortly")
        response.headers.update(intake.RETRY_AFTER)
        return response

    def _decide_all(self, checks: list[CheckInput], parsed: convert.Evaluations,
                    gone: Callable[[], bool]) -> list[dict[str, Any]] | web.Response:
        answers: list[dict[str, Any]] = []
        engine = self._pdp.current_engine()  # one policy version for every item, whatever reloads meanwhile
        for index, (check, item) in enumerate(zip(checks, parsed.items, strict=True)):
            if gone():
                break
            result = self._decide(check, engine)
            if index == 0 and convert.caller_refused(result.reason):
                # The token alone decided this; it would for every item: one error for the whole request.
                return _refusal(result)
            answers.append(convert.decision_body(result, item_error=bool(item.problem)))
            if parsed.semantic.stops_after(result.allowed):
                break
        return answers

    def _single(self, evaluation: convert.Evaluation, token: str, problem: str) -> web.Response:
        result = self._decide(convert.check_input(evaluation, token=token, token_problem=problem,
                                                  binding=self._binding))
        if convert.http_status(result.reason) != 200:
            return _refusal(result)
        response = web.json_response(convert.decision_body(result))
        response.headers[_DECISION_ID] = result.decision_id
        return response

    def _decide(self, check: CheckInput, engine: Engine | None = None,
                refused: dict[str, TokenError] | None = None) -> DecisionResult:
        started = time.perf_counter()
        result = self._pdp.decide(check, engine, refused)
        self._observe(convert.API, result, time.perf_counter() - started)
        return result

    async def configuration(self, request: web.Request) -> web.StreamResponse:
        base = self._public_url
        if not base:
            host = request.headers.get("Host", "")
            if not _HOST.fullmatch(host):
                return _error(400, "a Host header is required (or set http.public_url)")
            base = f"{self._scheme}://{host}"
        response = web.json_response(convert.configuration(base))
        response.headers["Cache-Control"] = "max-age=300"
        return response


def _bearer(request: web.Request) -> tuple[str, str]:
    return convert.bearer_from_headers(request.headers.getall("Authorization", []))


def _refusal(result: DecisionResult) -> web.Response:
    """A decision answered as an HTTP error (401 or 403); it was decided and audited like any other."""
    status = convert.http_status(result.reason)
    response = _error(status, f"{result.reason.value}: {result.message}")
    if status == 401:
        # RFC 6750 section 3: no token at all gets the bare challenge; a rejected token gets invalid_token.
        response.headers["WWW-Authenticate"] = (_REALM if result.reason.value == "token_missing"
                                                else f'{_REALM}, error="invalid_token"')
    response.headers[_DECISION_ID] = result.decision_id
    return response


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")
