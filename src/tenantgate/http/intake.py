"""Taking an AuthZEN request off the wire, cheapest refusal first. The event loop is shared with gRPC (and
Envoy's ext_authz Checks, which have a deadline), so nothing a caller sends may cost it much before the caller
has proved who it is, and no slow or broken upload may hold what other callers need.

0. ``check_framing`` (every route, before any handler): the request line's HTTP version (505) and the
   ``Transfer-Encoding`` (501, or 400 on HTTP/1.0): framing we would otherwise take on trust;
1. ``check_headers``: ``Content-Encoding`` (415), ``Content-Type`` (400), the declared length (413);
2. (``routes``) the bearer token: a caller without a usable one is refused before its body is read;
3. ``body_of``: ``100 Continue`` only now, so a refused client never uploads; then the body, bounded by
   size (413), time (408) and a server-wide budget of body bytes held (503), decoded by ``BodyDecoder`` (not
   by aiohttp); broken or truncated gzip/deflate data is 400;
4. ``LargeBodyTurns``: a body above ``ON_LOOP_MAX_BODY_BYTES`` waits its turn for the one large-body worker
   (a bounded queue: 503 beyond it); ``parse_json`` (strict JSON, I-JSON) then runs on a worker thread;
5. ``DecisionSlots``: decisions in flight (503 above the bound), taken only once the body is in and its turn
   has come, so neither the time a client takes to upload nor the time its large body waits for the worker
   counts against other callers' decisions.

Every answer given before the body was read (a refusal from the headers, or from a body cut short) closes the
connection (``must_close``): a client that sent ``Expect: 100-continue`` may withhold the body, and what it
sends next would otherwise be read as that body (RFC 9110 section 10.1.1).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

from tenantgate.identity.encoding import parse_strict_json

log = logging.getLogger("tenantgate.http")

BODY_READ_TIMEOUT_SECONDS = 10.0
# A body above this is parsed (and its evaluation decided) on a worker thread: an 864 KB body took 0.3-0.5 s
# on the loop. Below it, a thread hop costs more than the work.
ON_LOOP_MAX_BODY_BYTES = 64 * 1024
# What BodyDecoder decodes, bounded by our size limit; anything else is 415 (lists like "gzip, br" included),
# never passed on to the JSON parser as bytes the client meant to be decoded.
CONTENT_ENCODINGS = ("identity", "gzip", "deflate")
RETRY_AFTER = {"Retry-After": "1"}
# Large bodies waiting for the worker, at most (fewer when http.max_concurrent_requests is small: see
# LargeBodyTurns.for_limits): about 3-4 s of parsing at the 1 MiB default, then 503 with Retry-After.
LARGE_BODIES_WAITING_MAX = 8


class Refused(Exception):
    """A request that cannot be processed: answered ``status`` with ``message`` (plain text) and ``headers``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.close = close  # answer with "Connection: close": what follows on this connection is not trusted


# The request line's version as sent, when it was neither HTTP/1.0 nor HTTP/1.1 (see server._versions_checked:
# such a request reaches the application as HTTP/1.1, so that even its refusal is an HTTP/1.1 answer).
SENT_VERSION = web.RequestKey("tenantgate.sent_version", HttpVersion)


class ClientGone(Exception):
    """The client hung up while sending its body: nobody is left to answer, nothing to log above debug."""


def check_framing(request: web.Request) -> None:
    """Refuse, before any body is read (the answer closes the connection), a request whose framing we would
    take on trust: a request line naming a version other than HTTP/1.0 or HTTP/1.1 (505: aiohttp's parser
    reads ``HTTP/2.0`` or ``HTTP/0.9`` as HTTP/1.x framing); a ``Transfer-Encoding`` other than one ``chunked``
    (501, RFC 9112 section 6.1: aiohttp's parser takes ``gzip, chunked`` as chunked and decodes nothing else);
    any ``Transfer-Encoding`` in an HTTP/1.0 request (400: its framing is faulty, RFC 9112 section 6.1).
    ``Transfer-Encoding`` with ``Content-Length`` never gets here: aiohttp's parser refuses it (400)."""
    sent = request.get(SENT_VERSION)
    if sent is not None:
        raise Refused(505, f"HTTP/{sent.major}.{sent.minor} is not supported: send HTTP/1.1 (or HTTP/1.0)",
                      close=True)
    codings = request.headers.getall(hdrs.TRANSFER_ENCODING, [])
    if not codings:
        return
    if request.version == HttpVersion10:
        raise Refused(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request", close=True)
    if len(codings) > 1 or not (codings[0].isascii() and codings[0].strip().lower() == "chunked"):
        raise Refused(501, "Transfer-Encoding must be chunked alone", close=True)


def check_headers(request: web.Request, max_body_bytes: int) -> None:
    """Refuse from the headers alone: an encoding we do not decode (415), a content type other than UTF-8
    ``application/json`` (400), a declared ``Content-Length`` above ``max_body_bytes`` (413)."""
    encodings = request.headers.getall(hdrs.CONTENT_ENCODING, [])
    # Two headers: ambiguous (aiohttp's C parser reads the last, its Python parser the first); refuse both readings.
    if len(encodings) > 1 or (encodings and not (encodings[0].isascii()
                                                  and encodings[0].lower() in CONTENT_ENCODINGS)):
        raise Refused(415, f"Content-Encoding must be one of {', '.join(CONTENT_ENCODINGS)}",
                      {"Accept-Encoding": ", ".join(CONTENT_ENCODINGS)})
    if request.content_type != "application/json":
        raise Refused(400, "Content-Type must be application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise Refused(400, "the request body must be UTF-8 JSON")
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise Refused(413, "the request body is larger than http.max_body_bytes")


def must_close(request: web.Request) -> bool:
    """Whether the answer to ``request`` must close the connection: its body was announced (``Content-Length``
    above 0, or chunked) and has not fully arrived. The client may be withholding it (``Expect: 100-continue``
    without a ``100 Continue``), so aiohttp's drain of the rest would eat the start of the next request as this
    body. A body that has fully arrived, read or not, leaves the connection in step: it stays open."""
    return not request.content.is_eof()


async def defer_continue(request: web.Request) -> web.StreamResponse | None:
    """aiohttp's ``expect_handler``: instead of answering ``100 Continue`` at once (aiohttp's default), leave it
    to ``body_of``, so a request refused from its headers (401, 413, 415, ...) is refused before the client
    uploads. Runs before the middlewares, hence the ``X-Request-ID`` echo and ``must_close`` here."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11 or expect.lower() == "100-continue":
        return None
    response = web.Response(status=417, text=f"unknown Expect: {expect[:64]}", content_type="text/plain")
    if (request_id := request.headers.get("X-Request-ID")) is not None:
        response.headers["X-Request-ID"] = request_id
    if must_close(request):
        response.force_close()
    return response


class BodyBudget:
    """Request-body bytes held in memory at once, across the server. Counted as they arrive (not as declared),
    so a client that stalls mid-body holds only what it sent: it cannot make others wait, only a client
    that really uploads this much can fill it. Event-loop only (no locking)."""

    def __init__(self, max_bytes: int) -> None:
        self._free = max_bytes

    @property
    def free(self) -> int:
        return self._free

    def take(self, size: int) -> bool:
        if size > self._free:
            return False
        self._free -= size
        return True

    def give(self, size: int) -> None:
        self._free += size


@asynccontextmanager
async def body_of(request: web.Request, max_body_bytes: int, budget: BodyBudget) -> AsyncIterator[bytes]:
    """The (decoded) request body; its bytes count against ``budget`` until the block ends.

    Raises ``Refused``: 408 when it does not arrive within ``BODY_READ_TIMEOUT_SECONDS``, 413 above
    ``max_body_bytes`` (as sent or after decompression), 503 when ``budget`` is spent, 400 for a body that cannot
    be decoded (bad or truncated deflate/gzip data, a failed checksum, broken chunking). Raises ``ClientGone``
    when the client hangs up."""
    held = 0
    try:
        if request.headers.get(hdrs.EXPECT, "").lower() == "100-continue" and request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # as aiohttp's own expect handler: the response has not started
        decoder = BodyDecoder(request.headers.get(hdrs.CONTENT_ENCODING, ""), max_body_bytes)
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(BODY_READ_TIMEOUT_SECONDS):
                while chunk := await request.content.readany():
                    decoded = decoder.feed(chunk)
                    if held + len(decoded) > max_body_bytes:
                        raise Refused(413, "the request body is larger than http.max_body_bytes")
                    if not budget.take(len(decoded)):
                        raise Refused(503, "too many request bodies in transit; retry shortly", RETRY_AFTER)
                    held += len(decoded)
                    chunks.append(decoded)
                decoder.finish()
        except TimeoutError as err:
            raise Refused(408, "the request body did not arrive in time") from err
        except ConnectionError as err:
            raise ClientGone() from err
        except web.RequestPayloadError as err:
            raise _payload_refusal(err) from err
        yield b"".join(chunks)
    finally:
        budget.give(held)


MAX_GZIP_MEMBERS = 16  # concatenated gzip members in one body (clients send one)


class BodyDecoder:
    """Decodes a body sent with ``Content-Encoding`` gzip or deflate (``identity``: passed through), chunk by
    chunk, never taking or producing more than ``max_bytes`` in all (413 beyond: a small bomb cannot expand in
    memory).

    We decode, not aiohttp (``auto_decompress=False``, see ``server``): its parser answers an encoding it cannot
    decode (zstd, br) with its own 400 before our 415, and never checks that gzip data is complete (a body cut
    before its CRC-32 was decided). Here a body must end exactly where its compressed data ends, checksums
    verified: ``finish()`` refuses truncated data, ``feed()`` bad data; both ``Refused`` 400 (connection closed).
    Concatenated gzip members are decoded one after the other (RFC 1952), at most ``MAX_GZIP_MEMBERS``; deflate
    is one stream (anything after its end is refused), with or without its zlib wrapper (raw deflate, which
    some clients send, as aiohttp accepted). Review finding: a body of a million empty streams made this loop
    build a decompressor every two bytes on the event loop, 1.1 s per MiB, stalling every call."""

    def __init__(self, encoding: str, max_bytes: int) -> None:
        # check_headers admitted only CONTENT_ENCODINGS (one header, ASCII).
        self._encoding = encoding.strip().lower() if encoding.isascii() else encoding
        self._limit = max_bytes + 1  # one byte over says "too large" without decoding the rest
        self._produced = 0
        self._received = 0
        self._stream: Any = None  # the zlib decompressor of the current member, None before the first byte
        self._members = 0

    def feed(self, data: bytes) -> bytes:
        if self._encoding in ("", "identity"):
            return data
        # Compressed input is bounded too: empty gzip members (or empty deflate blocks) produce nothing.
        self._received += len(data)
        if self._received >= self._limit:
            raise Refused(413, "the request body is larger than http.max_body_bytes", close=True)
        out: list[bytes] = []
        try:
            while data:
                if self._stream is None or self._stream.eof:
                    self._stream = self._member(data)
                    self._members += 1
                piece = self._stream.decompress(data, self._limit - self._produced)
                self._produced += len(piece)
                if self._produced >= self._limit:
                    raise Refused(413, "the decompressed request body is larger than http.max_body_bytes",
                                  close=True)
                out.append(piece)
                # What this member did not take: the next member (after its end), else nothing (the output
                # bound was not reached, so all input was consumed).
                data = self._stream.unused_data if self._stream.eof else self._stream.unconsumed_tail
        except zlib.error as err:
            raise Refused(400, f"the request body could not be decoded: invalid {self._encoding} data ({err})",
                          close=True) from err
        return b"".join(out)

    def finish(self) -> None:
        """Refuses (400) a compressed body that ended before its compressed data did (checksum included)."""
        if self._stream is not None and not self._stream.eof:
            raise Refused(400, f"the request body could not be decoded: the {self._encoding} data is cut off "
                               "(incomplete, or its checksum is missing)", close=True)

    def _member(self, data: bytes) -> Any:
        if self._encoding == "gzip":
            if self._members >= MAX_GZIP_MEMBERS:
                raise Refused(400, f"the request body could not be decoded: more than {MAX_GZIP_MEMBERS} gzip "
                                   "members", close=True)
            return zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        if self._members:
            raise Refused(400, "the request body could not be decoded: data after the end of the deflate stream",
                          close=True)
        # RFC 1950 header: the low 4 bits of the first byte are CM = 8 (deflate); otherwise raw deflate.
        return zlib.decompressobj(wbits=zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS)


def _payload_refusal(err: web.RequestPayloadError) -> Refused:
    # aiohttp wraps the parser's error (a broken chunk, a body cut short).
    # The connection is closed after the answer: what follows a broken body is not a request to trust.
    cause = err.__cause__
    detail = cause.message if isinstance(cause, HttpProcessingError) else str(cause or err)
    return Refused(400, f"the request body could not be decoded: {detail}", close=True)


def parse_json(raw: bytes) -> Any:
    """The body as strict JSON (I-JSON: no duplicate members, no NaN, bounded depth); ``Refused`` 400 if not.
    Callers run it on a worker thread for a body above ``ON_LOOP_MAX_BODY_BYTES``."""
    try:
        return parse_strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise Refused(400, f"the request body is not valid JSON: {err}") from err


class LargeBodyTurns:
    """The one worker for large bodies: ``turn()`` waits for it, so one large body is parsed (and decided) at a
    time; an 864 KB body takes 0.3-0.5 s, and each such thread competes with the loop for the GIL.

    At most ``max_waiting`` wait; one more is ``Refused`` 503 with ``Retry-After`` at once, so waiting bodies
    hold a bounded share of the body budget and a bounded wait. A waiter holds no decision slot (the caller takes
    its slot inside the turn). Cancellation while waiting leaves the counts exact. Event-loop only."""

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._waiting = 0
        self._worker = asyncio.Lock()

    @classmethod
    def for_limits(cls, max_concurrent_requests: int) -> LargeBodyTurns:
        """At most ``LARGE_BODIES_WAITING_MAX`` waiting, and at most half of ``max_concurrent_requests`` (at least
        one): large bodies, waiting or parsed, never hold more than about half the body budget."""
        return cls(max(1, min(LARGE_BODIES_WAITING_MAX, max_concurrent_requests // 2)))

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        if self._worker.locked() and self._waiting >= self._max_waiting:
            raise Refused(503, "too many large request bodies waiting; retry shortly", RETRY_AFTER)
        self._waiting += 1
        try:
            await self._worker.acquire()
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self._worker.release()


class DecisionSlots:
    """Decisions in flight (``http.max_concurrent_requests``); one more is answered 503 with ``Retry-After``.
    Event-loop only (no locking)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._in_flight = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self._in_flight >= self._limit:
            raise Refused(503, "too many requests in flight; retry shortly", RETRY_AFTER)
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
