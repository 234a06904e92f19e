"""The AuthZEN HTTP endpoints as an aiohttp application: translate, call the one ``decide()``, translate back.

* ``POST /access/v1/evaluation``  -> ``{"decision": bool, "context": {...}}`` (a denial is 200, never an error)
* ``POST /access/v1/evaluations`` -> ``{"evaluations": [...]}`` (execute_all / deny_on_first_deny /
  permit_on_first_permit; no or an empty ``evaluations`` array is answered as a single evaluation)
* ``GET /.well-known/authzen-configuration`` -> PDP metadata

Errors (AuthZEN 1.0, HTTPS binding): 400 for a body that is not a JSON object or a wrong ``Content-Type``,
missing or ill-typed required members; 401 (with ``WWW-Authenticate``) when the bearer token is missing or
not accepted; 403 when the caller may not ask (see ``convert.http_status``); 413 above ``max_body_bytes``;
503 above ``max_concurrent_requests`` in flight. Error bodies are a plain-text message. ``X-Request-ID`` is
echoed on every answer; every decision's id is also in ``X-TenantGate-Decision-Id``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tenantgate.core.model import CheckInput, DecisionResult, SubjectBinding
from tenantgate.core.pdp import DecisionPoint
from tenantgate.http import convert
from tenantgate.identity.encoding import parse_strict_json

log = logging.getLogger("tenantgate.http")

# Called after every decision with (api, result, seconds); metrics hang here. Must not raise.
DecisionObserver = Callable[[str, DecisionResult, float], None]

EVALUATION_PATH = "/access/v1/evaluation"
EVALUATIONS_PATH = "/access/v1/evaluations"
CONFIGURATION_PATH = "/.well-known/authzen-configuration"
BODY_READ_TIMEOUT_SECONDS = 10.0
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
              observe: DecisionObserver = _ignore) -> web.Application:
    """The aiohttp application. ``mode`` is ``user_token`` or ``trusted_pep`` (``[http] mode``)."""
    handlers = _Handlers(pdp, SubjectBinding.PEP if mode == "trusted_pep" else SubjectBinding.TOKEN, limits,
                         public_url, tls, observe)
    app = web.Application(client_max_size=limits.max_body_bytes,
                          middlewares=[_request_id_middleware, _concurrency_middleware(limits.max_concurrent_requests)])
    app.router.add_post(EVALUATION_PATH, handlers.evaluation)
    app.router.add_post(EVALUATIONS_PATH, handlers.evaluations)
    app.router.add_get(CONFIGURATION_PATH, handlers.configuration)
    return app


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Echo ``X-Request-ID`` on every answer, errors included (AuthZEN 1.0, request identification)."""
    try:
        response = await handler(request)
    except _Refused as err:
        response = _error(err.status, err.message)
    except web.HTTPException as err:  # aiohttp's own (404, 405, ...): answered as a plain response
        response = _error(err.status, err.text or err.reason)
        if "Allow" in err.headers:
            response.headers["Allow"] = err.headers["Allow"]
    except Exception:  # an unexpected failure is a 500, never an allow
        log.exception("AuthZEN request failed unexpectedly")
        response = _error(500, "internal error")
    request_id = request.headers.get(_REQUEST_ID)
    if request_id is not None:
        response.headers[_REQUEST_ID] = request_id
    return response


def _concurrency_middleware(limit: int) -> Any:
    in_flight = 0

    @web.middleware
    async def bound(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal in_flight
        if in_flight >= limit:
            response = _error(503, "too many requests in flight; retry shortly")
            response.headers["Retry-After"] = "1"
            return response
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    return bound


class _Handlers:
    def __init__(self, pdp: DecisionPoint, binding: SubjectBinding, limits: Limits, public_url: str, tls: bool,
                 observe: DecisionObserver) -> None:
        self._pdp = pdp
        self._binding = binding
        self._limits = limits
        self._public_url = public_url.rstrip("/")
        self._scheme = "https" if tls else "http"
        self._observe = observe

    async def evaluation(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        try:
            evaluation = convert.parse_evaluation(body)
        except convert.BadRequest as err:
            return _error(400, str(err))
        return self._single(request, evaluation)

    async def evaluations(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        try:
            parsed = convert.parse_evaluations(body, self._limits.max_evaluations)
        except convert.BadRequest as err:
            return _error(400, str(err))
        if parsed.single:
            return self._single(request, parsed.items[0])
        token, problem = _bearer(request)
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

    def _decide_all(self, checks: list[CheckInput], parsed: convert.Evaluations,
                    gone: Callable[[], bool]) -> list[dict[str, Any]] | web.Response:
        answers: list[dict[str, Any]] = []
        for index, (check, item) in enumerate(zip(checks, parsed.items, strict=True)):
            if gone():
                break
            result = self._decide(check)
            if index == 0 and convert.caller_refused(result.reason):
                # The token alone decided this; it would for every item: one error for the whole request.
                return _refusal(result)
            answers.append(convert.decision_body(result, item_error=bool(item.problem)))
            if parsed.semantic.stops_after(result.allowed):
                break
        return answers

    def _single(self, request: web.Request, evaluation: convert.Evaluation) -> web.Response:
        token, problem = _bearer(request)
        result = self._decide(convert.check_input(evaluation, token=token, token_problem=problem,
                                                  binding=self._binding))
        if convert.http_status(result.reason) != 200:
            return _refusal(result)
        response = web.json_response(convert.decision_body(result))
        response.headers[_DECISION_ID] = result.decision_id
        return response

    def _decide(self, check: CheckInput) -> DecisionResult:
        started = time.perf_counter()
        result = self._pdp.decide(check)
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


async def _json_body(request: web.Request) -> Any:
    """The request body as strict JSON (I-JSON: no duplicate members, no NaN, bounded depth).
    Raises HTTP 400 for a wrong content type or a body that is not JSON, 413 above the size limit."""
    if request.content_type != "application/json":
        raise _Refused(400, "Content-Type must be application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise _Refused(400, "the request body must be UTF-8 JSON")
    try:
        raw = await asyncio.wait_for(request.read(), BODY_READ_TIMEOUT_SECONDS)
    except TimeoutError as err:
        raise _Refused(408, "the request body did not arrive in time") from err
    except web.HTTPRequestEntityTooLarge as err:
        raise _Refused(413, "the request body is larger than http.max_body_bytes") from err
    try:
        return parse_strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _Refused(400, f"the request body is not valid JSON: {err}") from err


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


class _Refused(Exception):
    """Raised while reading a request that cannot be processed: answered ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
