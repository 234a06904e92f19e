"""A JWKS URL as a key source (``JwksUrl``): when it is fetched, which answer is kept, what is served meanwhile.

The security defaults are listed on ``JwksUrl`` (and, for every source, in ``tenantgate.identity.jwks``). One
request is ``tenantgate.identity.jwkshttp``'s; fetched documents are parsed by ``tenantgate.identity.keys`` and
saved for a process started while the URL is down by ``tenantgate.identity.jwkssaved``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable

from tenantgate.errors import ConfigError, KeySourceUnavailable
from tenantgate.identity.jwkshttp import fetch_jwks
from tenantgate.identity.jwkssaved import SavedKeySet
from tenantgate.identity.keys import KeySet, no_usable_key_message, parse_jwks

log = logging.getLogger("tenantgate.identity")


class JwksUrl:
    """A JWKS fetched over HTTP(S) with ``http.client``: lazily, cached, rate-limited, never following redirects.

    * The first fetch happens on first use (or ``JwtVerifier.prefetch_keys``), so the server starts while the
      URL is briefly down. Until a key set has been obtained, ``current()`` fetches on the calling thread, and
      concurrent callers wait for that one fetch (at most about ``timeout_seconds``) instead of starting more;
      except on an asyncio event loop's thread (the gRPC and HTTP servers), which must never wait for the
      network or for another thread's fetch: there it starts a background fetch and fails at once
      (``KeySourceUnavailable``, a denial), so one issuer's unreachable URL cannot stall every other caller.
    * Once keys are held, ``current()`` and ``refresh()`` never wait for I/O (the caller may be the gRPC event
      loop): keys older than ``cache_seconds``, or ``refresh()`` after an unknown ``kid``, start a re-fetch on
      a daemon thread and return the held keys at once. A ``kid`` that only the new set holds is unknown until
      that fetch has landed; later requests then find it.
    * At most one fetch is in flight, and no fetch *attempt* (successful or not) starts within
      ``refresh_min_interval_seconds`` of the previous one, so a flood of unknown ``kid`` values cannot become
      a flood of fetches.
    * Ages (the cache's and the interval's) are durations on ``monotonic`` (default ``time.monotonic``), never
      on the wall clock: a host clock stepped back by X seconds must not keep a key removed from the JWKS
      trusted for ``cache_seconds + X`` (review finding). The wall clock is for token claims only.
    * ``timeout_seconds`` is a deadline for the whole fetch, not per read: a server that trickles its status
      line, headers or body is cut off when it passes. (Name resolution is not covered, and a host with
      several addresses may take one connect timeout per address.)
    * A failed fetch (network error, timeout, non-200 status including any 3xx, body over 1 MiB, non-UTF-8,
      not a strict-JSON key set) keeps the last good keys, which stay in use while the URL is down. If no key
      set was ever obtained, ``current()`` raises ``KeySourceUnavailable`` (fail closed).
    * A 200 answer holding a well-formed key set without a usable key (``{"keys": []}``, or only unsupported or
      doubtful keys) is an answer, not a failure: it replaces the held keys, so every token of the issuer is
      denied and it is not ready; ``last_error`` says so and an error is logged once per change of the set.
      While the held set is empty, use retries a fetch (rate-limited) as before the first one.
    * A fetched set equal to the held one is not installed: the held ``KeySet`` object stays, so the
      verified-token cache, which compares key sets by identity, keeps its entries across routine re-fetches.
    * With ``saved`` (``identity.jwkssaved``), every key set fetched is also written to disk, and a first fetch
      that fails uses the response saved there (if young enough and holding a usable key) until a fetch
      succeeds, as a running process keeps its last good keys (``last_error`` then says so).
    * Environment proxy settings are ignored (only ``config.py`` reads the environment); HTTPS verifies the
      certificate and host name against the system trust store.
    """

    __slots__ = (
        "_attempted_at",
        "_cache_seconds",
        "_fetch_lock",
        "_fetched_at",
        "_host",
        "_keys",
        "_last_error",
        "_min_interval",
        "_monotonic",
        "_port",
        "_saved",
        "_saved_keys",
        "_saved_until",
        "_target",
        "_timeout",
        "_tls",
        "description",
    )

    def __init__(
        self,
        url: str,
        cache_seconds: float,
        refresh_min_interval_seconds: float,
        timeout_seconds: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        saved: SavedKeySet | None = None,
    ) -> None:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port  # raises ValueError for a port out of range
        except ValueError as err:
            raise ConfigError("jwks_url is not a valid URL") from err
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("jwks_url must be an http(s) URL with a host")
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
            raise ConfigError("jwks_url must not contain spaces or control characters")
        if cache_seconds <= 0 or refresh_min_interval_seconds < 0 or timeout_seconds <= 0:
            raise ConfigError("jwks_url: cache and timeout must be > 0, refresh interval >= 0")
        self._host = parts.hostname
        self._port = port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        # Shown in errors: scheme, host and path only (a URL may carry credentials in userinfo or query).
        netloc = parts.hostname + (f":{port}" if port else "")
        self.description = f"JWKS URL {parts.scheme}://{netloc}{parts.path}"
        self._cache_seconds = float(cache_seconds)
        self._min_interval = float(refresh_min_interval_seconds)
        self._timeout = float(timeout_seconds)
        self._monotonic = monotonic
        # Held for the whole of every fetch, inline or background: at most one fetch is ever in flight.
        self._fetch_lock = threading.Lock()
        self._keys: KeySet | None = None
        self._fetched_at = 0.0  # on self._monotonic, like _attempted_at: read only once keys are held
        self._attempted_at: float | None = None
        self._last_error = ""
        self._saved = saved
        # While the held keys are the saved ones: they and the wall-clock time after which they are dropped.
        self._saved_keys: KeySet | None = None
        self._saved_until = 0.0

    @property
    def last_error(self) -> str:
        """Why the last fetch failed, or that the held set holds no usable key ('' otherwise). Never holds
        response bodies or key material."""
        return self._last_error

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._keys.warnings if self._keys is not None else ()

    def current(self) -> KeySet:
        keys = self._keys if self._saved_keys is None else self._unexpired()
        if keys is None:
            self._first_fetch()
            return self._held()
        if not keys.keys or self._monotonic() - self._fetched_at >= self._cache_seconds:
            self._start_background_fetch()
        return keys

    def refresh(self) -> KeySet:
        if self._keys is None:
            self._first_fetch()
        else:
            self._start_background_fetch()
        return self._held()

    def peek(self) -> KeySet | None:
        return self._keys if self._saved_keys is None else self._unexpired()

    def _unexpired(self) -> KeySet | None:
        """The held keys, dropped first when they are saved ones past their age limit (review finding: checked
        only when the file was read, saved keys stayed trusted for as long as the URL was down)."""
        assert self._saved is not None
        saved = self._saved_keys
        if saved is not None and self._saved.now() > self._saved_until:
            self._saved_keys = None
            if self._keys is saved:  # not replaced by a fetch meanwhile
                self._keys = None
                log.error("%s: the saved key set passed tokens.jwks_saved_max_age_seconds; this issuer's tokens are "
                          "denied until the URL answers", self.description)
        return self._keys

    def fetch_soon(self) -> None:
        if self._keys is None or not self._keys.keys:
            self._start_background_fetch()

    def reread(self, *, force: bool = False) -> bool:
        return False  # fetched on its own schedule (cache expiry, unknown kid), never by a reload

    def wait_for_fetch(self, timeout: float) -> bool:
        """Block until no fetch is in flight, for at most ``timeout`` seconds; True iff none is.

        For tests and orderly shutdown; the request path never calls it.
        """
        if not self._fetch_lock.acquire(timeout=timeout):
            return False
        self._fetch_lock.release()
        return True

    def _held(self) -> KeySet:
        keys = self._keys
        if keys is None:
            # Generic on purpose: this message can reach unauthenticated callers; last_error has the detail.
            raise KeySourceUnavailable("the issuer's signing keys are unavailable")
        return keys

    def _may_attempt(self, now: float) -> bool:
        # ``now`` is monotonic: elapsed never goes negative, whatever the host clock does.
        return self._attempted_at is None or now - self._attempted_at >= self._min_interval

    def _first_fetch(self) -> None:
        if _on_event_loop():
            self._start_background_fetch()  # the loop serves everyone: never wait here (review finding)
        else:
            self._fetch_inline()

    def _fetch_inline(self) -> None:
        # Nothing to serve yet: wait for a fetch in flight rather than failing the request at once.
        if not self._fetch_lock.acquire(timeout=self._timeout + 1.0):
            return
        try:
            if self._keys is None:
                self._attempt()
        finally:
            self._fetch_lock.release()

    def _start_background_fetch(self) -> None:
        # Cheap checks only: this runs on the request path. The lock is taken here and handed to the fetch
        # thread, which releases it when done (a threading.Lock may be released by any thread).
        if not self._may_attempt(self._monotonic()) or not self._fetch_lock.acquire(blocking=False):
            return
        try:
            threading.Thread(target=self._fetch_in_background, name="tenantgate-jwks-fetch", daemon=True).start()
        except RuntimeError as err:  # no thread available: keep serving the held keys, retry next time
            self._last_error = f"cannot start a JWKS fetch thread: {err}"
            self._fetch_lock.release()

    def _fetch_in_background(self) -> None:
        try:
            self._attempt()
        finally:
            self._fetch_lock.release()

    def _attempt(self) -> None:
        # The caller holds _fetch_lock.
        now = self._monotonic()
        if not self._may_attempt(now):
            return
        self._attempted_at = now
        try:
            text = self._fetch()
            keys = parse_jwks(text, origin=self.description, strict=False, allow_empty=True)
        except Exception as err:  # noqa: BLE001 - any fetch failure keeps the last good keys
            self._last_error = f"{type(err).__name__}: {_safe_reason(err)}"
            if self._keys is None and self._saved is not None:
                self._use_saved(now)
            return
        self._fetched_at = now
        self._install(keys)
        if self._saved is not None:
            # Every answer, changed or not, so the file's age is the time since the URL answered; a set without a
            # usable key too, so a process started later does not trust keys the issuer has withdrawn since.
            self._saved.save(text)

    def _use_saved(self, now: float) -> None:
        # The caller holds _fetch_lock; no key set was ever obtained in this process.
        assert self._saved is not None
        loaded = self._saved.load()
        if loaded is None:
            return
        text, age = loaded
        try:
            keys = parse_jwks(text, origin=f"{self.description} (saved)", strict=False, allow_empty=False)
        except Exception as err:  # noqa: BLE001 - a doubtful file is not used; the URL stays the source
            log.warning("saved JWKS response %s not used: %s", self._saved.path, _safe_reason(err))
            return
        self._keys = self._saved_keys = keys
        self._saved_until = self._saved.now() + self._saved.max_age - age
        self._fetched_at = now - self._cache_seconds  # stale at once: fetched again (rate-limited) on use
        self._last_error += f"; using the key set saved {age:.0f} s ago"
        log.warning("%s could not be fetched (%s): using the key set it served %.0f s ago, saved in %s",
                    self.description, self._last_error.partition(";")[0], age, self._saved.path)

    def _install(self, keys: KeySet) -> bool:
        """The caller holds _fetch_lock. True when ``keys`` replaced the held set."""
        previous = self._keys
        self._saved_keys = None  # the URL answered: its keys, from now on
        self._last_error = no_usable_key_message(self.description) if not keys.keys else ""
        if keys == previous:
            return False  # the held object stays: cached tokens are not re-checked after a routine re-fetch
        self._keys = keys
        if not keys.keys:
            log.error("%s: every token of this issuer is denied until it publishes one", self._last_error)
        elif previous is not None and not previous.keys:
            log.info("%s: usable keys again (%d)", self.description, len(keys.keys))
        return True

    def _fetch(self) -> str:
        return fetch_jwks(self._host, self._port, self._target, self._tls, self._timeout)


def _on_event_loop() -> bool:
    """True on a thread running an asyncio event loop (a coroutine's caller), where blocking stalls every call."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _safe_reason(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "response is not UTF-8"
    return str(err)[:200] or type(err).__name__
