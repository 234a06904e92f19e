"""A JWKS file: read strictly at start, re-read off the request path when it changes.

Security defaults:

* The file is trusted configuration, so anything doubtful is a start-up ``ConfigError`` naming the file:
  private key material (``d``, ``p``, ``q``, ...), HMAC secrets shorter than 32 bytes, RSA moduli shorter than
  2048 bits, malformed keys, an empty set. Keys of an unsupported type or curve are skipped with a warning.
* Removing a key from the file revokes it without a restart: ``reread`` (SIGHUP and the policy poll, never a
  request) installs the new set when the file's fingerprint (size, mtime, inode) changed. A file that became
  unreadable or doubtful keeps the last good keys (logged, ``last_error``); a well-formed set without a usable
  key (``{"keys": []}``) replaces them: every token of the issuer is then denied, which is what withdrawing
  every key means.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from tenantgate.errors import ConfigError
from tenantgate.identity.keys import MAX_JWKS_BYTES, KeySet, no_usable_key_message, parse_jwks
from tenantgate.paths import open_regular

log = logging.getLogger("tenantgate.identity")

Fingerprint = tuple[int, int, int]
"""What tells a changed file: (size, mtime_ns, inode), following symlinks (a ConfigMap's ``..data`` swap
gives every file a new inode)."""


class JwksFile:
    """A JWKS read from a local file at construction, and again by ``reread`` when the file changed.

    Raises ``ConfigError`` naming the file if it is missing, unreadable, larger than 1 MiB, not a strict
    JSON key set, holds private key material, a weak HMAC secret, a short RSA key or no usable key.
    ``current()``, ``refresh()`` and ``peek()`` return the held keys without I/O; ``reread`` is the only
    method that touches the file after start.
    """

    __slots__ = ("_fingerprint", "_keys", "_last_error", "_lock", "description", "path")

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"JWKS file {self.path}"
        self._keys, fingerprint = self._read(allow_empty=False)
        self._fingerprint: Fingerprint | None = fingerprint  # None: the file could not be stat'ed
        self._last_error = ""
        self._lock = threading.Lock()  # one re-read at a time (SIGHUP and the poll may meet)

    @property
    def warnings(self) -> tuple[str, ...]:
        return self._keys.warnings

    @property
    def last_error(self) -> str:
        """Why the held keys are not the file's current content, or why they hold no usable key ('' when
        they are the file's and usable). Never holds key material."""
        return self._last_error

    def current(self) -> KeySet:
        return self._keys

    def refresh(self) -> KeySet:
        return self._keys

    def peek(self) -> KeySet | None:
        return self._keys

    def fetch_soon(self) -> None:
        return None  # re-read by reread(), off the request path

    def reread(self, *, force: bool = False) -> bool:
        """Read the file again if its fingerprint changed since the last read (or always, with ``force``);
        True iff a different key set was installed. Never raises: a file that cannot be read or holds a
        doubtful key keeps the last good keys, logs an error (once per change of the file, or per ``force``)
        and sets ``last_error``. A well-formed set without a usable key is installed (tokens are denied, the issuer is
        not ready) and logged as an error. Call it off the request path: it stats, and may read, the file."""
        with self._lock:
            try:
                fingerprint: Fingerprint | None = _fingerprint_of(os.stat(self.path))
            except OSError:
                fingerprint = None
            if not force and fingerprint == self._fingerprint:
                return False
            try:
                keys, fingerprint = self._read(allow_empty=True)
            except Exception as err:  # noqa: BLE001 - any failure keeps the last good keys
                # Remembered, so an unchanged bad file is not read (nor logged) again at every poll.
                self._fingerprint = fingerprint
                self._last_error = (str(err) if isinstance(err, ConfigError)
                                    else f"{self.description}: could not be read ({type(err).__name__})")
                log.error("%s; the last good keys stay in use", self._last_error)
                return False
            self._fingerprint = fingerprint
            return self._install(keys)

    def _install(self, keys: KeySet) -> bool:
        previous, failing = self._keys, self._last_error
        self._last_error = no_usable_key_message(self.description) if not keys.keys else ""
        if keys == previous:
            # The same keys (the file was touched, or rewritten alike): cached tokens stay as they are.
            if failing and not self._last_error:
                log.info("%s: read again, its keys are unchanged", self.description)
            return False
        self._keys = keys
        if self._last_error:
            log.error("%s: every token of this issuer is denied until the file holds one", self._last_error)
        else:
            log.info("%s: read again, %d usable key(s)", self.description, len(keys.keys))
        return True

    def _read(self, *, allow_empty: bool) -> tuple[KeySet, Fingerprint]:
        try:
            # Never waited on: a FIFO without a writer blocked open() for good (hostile review: `serve` hung at
            # start-up). A link (a mounted Kubernetes Secret) is followed.
            with os.fdopen(open_regular(self.path, follow_symlinks=True), "rb") as handle:
                fingerprint = _fingerprint_of(os.fstat(handle.fileno()))
                data = handle.read(MAX_JWKS_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"cannot read JWKS file {self.path}: {err.strerror or err}") from err
        if len(data) > MAX_JWKS_BYTES:
            raise ConfigError(f"JWKS file {self.path} is larger than {MAX_JWKS_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(f"JWKS file {self.path} is not UTF-8") from err
        return parse_jwks(text, origin=self.description, strict=True, allow_empty=allow_empty), fingerprint


def _fingerprint_of(status: os.stat_result) -> Fingerprint:
    return status.st_size, status.st_mtime_ns, status.st_ino
