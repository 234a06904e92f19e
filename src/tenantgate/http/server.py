"""Serving the AuthZEN application on the running asyncio loop (the gRPC server's), with TLS and limits.

aiohttp's ``AppRunner`` + ``TCPSite`` start on whatever loop is running, so the HTTP API shares the process,
the ``DecisionPoint``, the audit sink and the metrics with gRPC; ``stop()`` stops accepting connections and
lets in-flight requests finish within the grace period.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tenantgate.core.pdp import DecisionPoint
from tenantgate.core.ports import TokenVerifier
from tenantgate.errors import ConfigError
from tenantgate.http.routes import DecisionObserver, Limits, build_app

log = logging.getLogger("tenantgate.http")

KEEPALIVE_TIMEOUT_SECONDS = 15.0


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
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT_SECONDS,
                                     shutdown_timeout=options.grace_seconds, auto_decompress=False,
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

    async def stop(self) -> None:
        """Stop accepting connections; in-flight requests get up to the grace period to finish."""
        await self._runner.cleanup()


def _tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(f"http.cert_file / http.key_file: cannot load the certificate and key: {err}") from err
    return context


class _ClientFaultsQuiet(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, except for what a client causes at will: a request aiohttp's parser refuses
    (bad chunk sizes, Content-Length with Transfer-Encoding, ...: aiohttp answers 400 itself), a broken body
    (aiohttp meets its error again when it drains the body after our 400), or a hang-up is
    one debug line, not an ERROR with a traceback that anyone could make fill the log. Anything else aiohttp
    reports keeps its ERROR and traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, HttpProcessingError | ConnectionError | web.RequestPayloadError):
            first_line = next(iter(str(exc_info).splitlines()), "")
            self.debug("%s: %s: %s", str(msg) % args if args else msg, type(exc_info).__name__, first_line)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)
