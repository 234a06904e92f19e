"""The verified-token cache: least recently used first out, bounded by entries and by approximate bytes.

Entries alone do not bound memory: an issuer may mint tokens of up to ``tokens.max_token_bytes`` whose
parsed claims take many times their text (``[{}, {}, ...]`` costs ~70 bytes of Python objects per three
characters). ``JwtVerifier`` keeps only the claims decisions read, and this cache counts what it keeps
(``approximate_size``), so whatever an issuer puts into those claims, the cache stays within ``max_bytes``.

A hit counts only while it would still verify: ``TokenCache.trusted_claims`` applies the time checks of a
fresh verification again and checks that the key which verified the token is still in its issuer's key set.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tenantgate.config import TokenSettings
from tenantgate.core.model import VerifiedClaims
from tenantgate.core.ports import Clock
from tenantgate.errors import TokenExpired
from tenantgate.identity.claimchecks import check_window
from tenantgate.identity.keys import KeySet, VerificationKey

if TYPE_CHECKING:
    from tenantgate.identity.jwks import KeySource

CACHE_MAX_BYTES = 64 * 1024 * 1024
"""Approximate memory the verified-token cache may hold, claims and bookkeeping included."""

# The entry record, its key's slot in the ordered map (dict entry, index and linked-list node, with the
# table's spare room) and the float objects for the times (nbf, iat): ~240 bytes measured (tracemalloc),
# plus 24 for the references to what verified it, rounded up. The key source, key set and key they refer to
# are the issuer's, shared by every entry: not counted.
_ENTRY_OVERHEAD = 320


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A verified token as cached: its claims, its ``nbf`` and ``iat`` (with ``claims.expires_at``, each hit
    re-applies the time checks of a fresh verification to them), its counted size, and what verified it: the
    issuer's key ``source``, the key set ``keys`` it held then, and the ``key`` used.

    INVARIANT: a hit counts only while ``source.current() is keys``, or, once the source holds another set,
    while that set still ``holds(key)``; a key removed from its issuer's set ends its tokens' cache entries.
    """

    claims: VerifiedClaims
    not_before: float | None
    issued_at: float | None
    size: int
    source: KeySource
    keys: KeySet
    key: VerificationKey


def approximate_size(value: object) -> int:
    """Bytes held by ``value`` and everything it contains (dicts, lists, tuples, their keys and items).

    Shared objects are counted once per reference, so the figure errs high, never low. Iterative: parsed
    JSON may be nested up to its depth limit, and a recursive walk would be its own attack surface.
    """
    total = 0
    stack = [value]
    while stack:
        node = stack.pop()
        total += sys.getsizeof(node)
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return total


def entry_size(key: bytes, claims: VerifiedClaims, kept: object) -> int:
    """The bytes an entry holds: ``kept`` (the claims mapping's contents), the ``VerifiedClaims`` around it
    (issuer strings are the configuration's own, shared by every entry: not counted) and the bookkeeping."""
    return (approximate_size(kept) + sys.getsizeof(claims) + sys.getsizeof(claims.claims)
            + sys.getsizeof(claims.subject) + sys.getsizeof(claims.token_id) + sys.getsizeof(key)
            + _ENTRY_OVERHEAD)


class TokenCache:
    """LRU map from token digest to ``CachedToken``, holding at most ``max_entries`` entries and at most
    ``max_bytes`` bytes (by each entry's ``size``). Inserting evicts the least recently used entries until
    both hold; an entry larger than ``max_bytes`` alone is not cached. ``max_entries <= 0`` disables it.
    Thread-safe: lookups may come from the event loop and from worker threads at once.
    """

    __slots__ = ("_bytes", "_entries", "_lock", "_max_bytes", "_max_entries")

    def __init__(self, max_entries: int, max_bytes: int = CACHE_MAX_BYTES) -> None:
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._max_entries > 0 and self._max_bytes > 0

    @property
    def held_bytes(self) -> int:
        """The summed ``size`` of the entries held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> CachedToken | None:
        """The entry under ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def trusted_claims(self, digest: bytes, settings: TokenSettings, clock: Clock) -> VerifiedClaims | None:
        """The claims cached under ``digest`` when they still hold now, else None (verify afresh).

        Raises what ``check_window`` raises for the entry's times (a ``TokenExpired`` entry is dropped first);
        drops an entry whose key its issuer's current key set no longer holds. Disabled: always None.
        """
        if not self.enabled:
            return None
        entry = self.get(digest)
        if entry is None:
            return None
        try:
            check_window(entry.claims.expires_at, entry.not_before, entry.issued_at, settings, clock)
        except TokenExpired:
            self.discard(digest)  # verified afresh if presented again; other refusals keep the entry
            raise
        # INVARIANT: a cached token counts only while the key that verified it is in its issuer's current key
        # set (review finding: a token cached before its key was removed kept being accepted until exp).
        # ``current()`` holds no lock and does no I/O (a due JWKS re-fetch starts in the background).
        keys = entry.source.current()
        if keys is not entry.keys:
            return self._still_trusted(digest, entry, keys)
        return entry.claims

    def _still_trusted(self, digest: bytes, entry: CachedToken, keys: KeySet) -> VerifiedClaims | None:
        # The issuer's key set changed since the entry was made (once per entry and change, not per hit).
        if keys.holds(entry.key):
            self.put(digest, replace(entry, keys=keys))  # later hits compare with the new set
            return entry.claims
        self.discard(digest)
        return None  # verified afresh: refused unless the new set holds a key that verifies it

    def put(self, key: bytes, entry: CachedToken) -> None:
        """Hold ``entry`` under ``key``, evicting the least recently used entries until both bounds hold."""
        if not self.enabled or entry.size > self._max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.size
            self._entries[key] = entry
            self._bytes += entry.size
            while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

    def discard(self, key: bytes) -> None:
        """Forget ``key`` if held."""
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry.size

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0
