"""Serving the AuthZEN application on the running asyncio loop (the gRPC server's), with TLS and limits.

aiohttp's ``AppRunner`` + ``TCPSite`` start on whatever loop is running, so the HTTP API shares the process,
the ``DecisionPoint``, the audit sink and the metrics with gRPC; ``stop()`` stops accepting connections and
lets in-flight requests finish within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.ports import TokenVerifier
from tenantgate.errors import ConfigError
from tenantgate.http.intake import SENT_VERSION
from tenantgate.http.routes import DecisionObserver, Limits, build_app

log = logging.getLogger("tenantgate.http")

KEEPALIVE_TIMEOUT_SECONDS = 15.0
DEFAULT_MAX_TOKEN_BYTES = 16_384  # config.TokenSettings.max_token_bytes' default
# aiohttp's default limit on one header field (name + value) and on the request line.
AIOHTTP_FIELD_BYTES = 8190
# Room for "Authorization", "Bearer " and stray whitespace around a token of exactly max_token_bytes, so a
# token just over the limit still reaches the verifier (an audited token_invalid, as on gRPC).
AUTHORIZATION_MARGIN_BYTES = 512


@dataclass(frozen=True, slots=True)
class HttpOptions:
    listen: str
    mode: str
    limits: Limits
    cert_file: str = ""
    key_file: str = ""
    public_url: str = ""
    grace_seconds: float = 10.0
    reuse_port: bool = False  # SO_REUSEPORT: only for `serve --workers N` (N > 1), whose processes share the port
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES  # tokens.max_token_bytes: sizes the header field limit


def max_field_bytes(max_token_bytes: int) -> int:
    """The longest header field (name + value) the HTTP parser accepts: an ``Authorization: Bearer`` header
    carrying a token ``AUTHORIZATION_MARGIN_BYTES`` over ``max_token_bytes``, never less than aiohttp's own
    limit. A token the verifier would accept is never refused by the parser instead (unaudited, with a
    different status than gRPC gives it); a header line far beyond it is refused by the parser (400)."""
    return max(AIOHTTP_FIELD_BYTES, max_token_bytes + AUTHORIZATION_MARGIN_BYTES)


class HttpServer:
    """One aiohttp site. ``start()`` binds (raising ``ConfigError`` when it cannot); ``stop()`` drains.

    ``verifier``: the ``DecisionPoint``'s verifier, so a refused token is refused before its body is read
    (see ``routes.build_app``)."""

    def __init__(self, options: HttpOptions, pdp: DecisionPoint, observe: DecisionObserver, *,
                 verifier: TokenVerifier | None = None) -> None:
        self._options = options
        self._tls = _tls_context(options.cert_file, options.key_file) if options.cert_file else None
        app = build_app(pdp, mode=options.mode, limits=options.limits, public_url=options.public_url,
                        tls=self._tls is not None, observe=observe, verifier=verifier)
        # auto_decompress=False: intake.BodyDecoder decodes request bodies, so an encoding aiohttp's parser
        # could not decode (zstd, br) reaches our 415, and truncated gzip/deflate data is refused (aiohttp never
        # checked gzip's CRC trailer was there).
        # max_field_size: see max_field_bytes. (max_line_size bounds the request line and chunk-size lines,
        # never a header; it keeps aiohttp's default.)
        self._runner = _Runner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
                               shutdown_timeout=options.grace_seconds, auto_decompress=False,
                               max_field_size=max_field_bytes(options.max_token_bytes),
                               logger=_ClientFaultsQuiet(logging.getLogger("aiohttp.server")))
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    async def start(self) -> int:
        host, _, port = self._options.listen.rpartition(":")
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port), ssl_context=self._tls, backlog=128,
                           reuse_port=self._options.reuse_port)
        try:
            await site.start()
        except OSError as err:
            await self._runner.cleanup()
            raise ConfigError(f"cannot serve AuthZEN on {self._options.listen}: {err.strerror}") from err
        self.port = int(self._runner.addresses[0][1])
        log.info("AuthZEN API on %s://%s:%d", self.scheme, host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting connections at once (idle keep-alive ones are closed); in-flight requests get up to
        ``grace`` seconds (default: ``grace_seconds``) to finish, then are cancelled."""
        await self._runner.drain(self._options.grace_seconds if grace is None else grace)


def _tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"http.cert_file / http.key_file: cannot load the certificate and key: {err}") from err
    return context


# What a client causes at will: a request aiohttp's parser refuses, a broken body, a hang-up.
_CLIENT_FAULTS = (HttpProcessingError, ConnectionError, web.RequestPayloadError)


class _ParserErrorsWithoutEcho(web.RequestHandler):
    """aiohttp's connection handler, except for the answers it gives by itself, before a request exists.

    aiohttp answers a request its parser refuses (a folded or NUL-bearing header, a space before the colon, a
    header line over the limit, bad framing, ...) with the parser's message as the body, and that message
    quotes the request's bytes: a bearer token in the offending line came back to whoever sent (or relayed)
    the request (review finding). Here every such answer is a fixed text with no request bytes."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's: logs through _ClientFaultsQuiet and raises ConnectionError when an answer has begun. Its
        # answer is dropped: it is never given the parser's message (nor shows a traceback in debug mode).
        text = "malformed request" if status < 500 else "internal error"
        super().handle_error(request, status, exc, text)
        response = web.Response(status=status, text=text, content_type="text/plain")
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's low-level server, with ``_ParserErrorsWithoutEcho`` as the handler of each connection."""

    @classmethod
    def replacing(cls, server: web.Server) -> _Server:
        """``server`` served through ``_Server``, its requests through ``_versions_checked``. Reads aiohttp's
        internals (``_loop``, ``_kwargs``, ``RawRequestMessage._replace``) here, at start: an aiohttp without
        them stops ``serve`` with a ``ConfigError`` instead of failing (or passing) HTTP/2.0 requests later."""
        if not callable(getattr(RawRequestMessage, "_replace", None)) or not hasattr(server, "_kwargs") \
                or not hasattr(server, "_loop"):
            raise ConfigError(f"aiohttp {aiohttp.__version__} lacks what the AuthZEN HTTP server relies on "
                              "(RawRequestMessage._replace, Server._loop, Server._kwargs): install aiohttp>=3.14,<4")
        return cls(server.request_handler, request_factory=_versions_checked(server.request_factory),
                   handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)

    def __call__(self) -> web.RequestHandler:
        return _ParserErrorsWithoutEcho(self, loop=self._loop, **self._kwargs)


RequestFactory = Callable[[RawRequestMessage, StreamReader, RequestHandler, AbstractStreamWriter,
                           "asyncio.Task[None]"], web.BaseRequest]


def _versions_checked(make_request: RequestFactory) -> RequestFactory:
    """``make_request``, except that a request line naming a version other than HTTP/1.0 or HTTP/1.1 (aiohttp's
    parser passes ``HTTP/2.0`` and ``HTTP/0.9``, framed as HTTP/1.x) makes an HTTP/1.1 request marked with the
    version sent (``intake.SENT_VERSION``): ``intake.check_framing`` refuses it (505), and the refusal's status
    line says HTTP/1.1 (aiohttp echoes the request's version there), not the version it refuses."""

    def make(message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler,
             writer: AbstractStreamWriter, task: asyncio.Task[None]) -> web.BaseRequest:
        sent = message.version
        if sent in (HttpVersion10, HttpVersion11):
            return make_request(message, payload, protocol, writer, task)
        request = make_request(message._replace(version=HttpVersion11, should_close=True), payload, protocol,
                               writer, task)
        request[SENT_VERSION] = sent
        return request

    return make


class _Runner(web.AppRunner):
    """``web.AppRunner`` serving through ``_Server`` (``_make_server`` is ``BaseRunner``'s hook for this)."""

    async def _make_server(self) -> web.Server:
        return _Server.replacing(await super()._make_server())

    async def drain(self, grace: float) -> None:
        """``cleanup()``, giving in-flight requests ``grace`` seconds: what is left of a drain shared with the
        gRPC server, not the ``shutdown_timeout`` fixed at construction."""
        self._shutdown_timeout = grace
        await self.cleanup()


class _ClientFaultsQuiet(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, except for what a client causes at will: a request aiohttp's parser refuses
    (bad chunk sizes, Content-Length with Transfer-Encoding, a malformed header line, ...: answered by
    ``_ParserErrorsWithoutEcho``), a broken body (aiohttp meets its error again when it drains the body after
    our 400), or a hang-up is one debug line with the error's type only, not an ERROR with a traceback that
    anyone could make fill the log. Never the error's message or traceback: those quote the request's bytes
    (a bearer token in a malformed Authorization header). Anything else aiohttp reports keeps its level and
    traceback."""

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None, **kwargs: Any) -> None:
        # exception() and debug() both come here.
        fault = _exception_of(exc_info)
        if isinstance(fault, _CLIENT_FAULTS):
            super().log(logging.DEBUG, "%s: %s", str(msg) % args if args else msg, type(fault).__name__,
                        **kwargs)
            return
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


def _exception_of(exc_info: Any) -> BaseException | None:
    """The exception a logging call's ``exc_info`` names (an exception, ``True`` or an ``exc_info`` tuple)."""
    if isinstance(exc_info, BaseException):
        return exc_info
    if exc_info is True:
        return sys.exc_info()[1]
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        return exc_info[1] if isinstance(exc_info[1], BaseException) else None
    return None
