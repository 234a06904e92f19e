"""The last key set a JWKS URL served, kept on disk so that a process started while the URL is down can verify.

A running process keeps its last good keys while the URL is down (``JwksUrl``); a process started meanwhile
had none, so it denied every token of that issuer. With ``serve --workers`` that was a worker restarted during
an IdP outage: the kernel gave it its share of connections, and about half of valid tokens were denied while
the other worker answered health checks (review finding). Each key set fetched is now written to
``<state_dir>/jwks/<hash of the URL>.json`` (changed or not, so the file's age is the time since the URL last
answered; a set without a usable key too, so a withdrawal is remembered); a process whose first fetch fails
uses that file, if it is younger than ``tokens.jwks_saved_max_age_seconds`` and holds a usable key, until a
fetch succeeds or the file's age passes that limit.

Only public asymmetric keys are written: a JWK with private members or of type ``oct`` (an HMAC secret) is
left out, as the fetched path would never use a private one. The directory is made 0700; a file is used only
when it is a regular file owned by this user, not readable or writable by others, in a directory that only
this user can write. It is written to a new file with a random name and renamed into place, so a reader sees
a whole file or the previous one. Failures to read or write it are logged, never raised: the URL stays the
source of truth.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tenantgate.identity.encoding import parse_strict_json
from tenantgate.identity.keys import MAX_JWKS_BYTES, PRIVATE_MEMBERS
from tenantgate.paths import make_private_dirs

log = logging.getLogger("tenantgate.identity")


class SavedKeySet:
    """One URL's saved key set. ``save`` and ``load`` never raise."""

    __slots__ = ("_directory", "_wall", "max_age", "path")

    def __init__(self, directory: Path, url: str, max_age_seconds: float, *,
                 wall: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self.path = directory / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] + ".json")
        self.max_age = max_age_seconds
        self._wall = wall  # file ages outlive the process, so they are wall-clock ages (bounded by max_age)

    def now(self) -> float:
        return self._wall()

    def save(self, text: str) -> None:
        """Replace the saved key set with the public keys of ``text``, a fetched JWKS document."""
        try:
            document = public_document(text)
            make_private_dirs(self._directory)
            os.chmod(self._directory, 0o700)
            fd, temporary = tempfile.mkstemp(dir=self._directory, prefix=f".{self.path.name}.", suffix=".new")
        except (OSError, ValueError) as err:
            log.warning("could not save the JWKS response to %s: %s", self.path, _reason(err))
            return
        try:
            try:
                data = document.encode("utf-8")
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as err:
            log.warning("could not save the JWKS response to %s: %s", self.path, _reason(err))
            try:
                os.unlink(temporary)
            except OSError:
                pass

    def load(self) -> tuple[str, float] | None:
        """The saved key set and its age in seconds, or None when there is none this process may use."""
        try:
            directory = os.open(self._directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("saved JWKS response %s not read: %s", self.path, _reason(err))
            return None
        try:
            if not _private(os.fstat(directory), writable_only=True):
                log.warning("saved JWKS responses in %s not used: the directory is not this user's alone",
                            self._directory)
                return None
            try:
                fd = os.open(self.path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=directory)
            except FileNotFoundError:
                return None
            try:
                return self._read(fd)
            finally:
                os.close(fd)
        except (OSError, UnicodeDecodeError) as err:
            log.warning("saved JWKS response %s not read: %s", self.path, _reason(err))
            return None
        finally:
            os.close(directory)

    def _read(self, fd: int) -> tuple[str, float] | None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_JWKS_BYTES or not _private(st, writable_only=False):
            log.warning("saved JWKS response %s not used: not a regular file of at most %d bytes that only this "
                        "user can read and write", self.path, MAX_JWKS_BYTES)
            return None
        age = self._wall() - st.st_mtime
        if not 0 <= age <= self.max_age:  # a file from the future is as doubtful as an old one
            log.warning("saved JWKS response %s not used: saved %.0f s ago, the limit is %.0f s "
                        "(tokens.jwks_saved_max_age_seconds)", self.path, age, self.max_age)
            return None
        os.set_blocking(fd, True)
        return os.read(fd, MAX_JWKS_BYTES + 1).decode("utf-8"), age


def public_document(text: str) -> str:
    """``text``'s key set without any key that has private members or is a shared secret (``oct``): only what
    may sit on disk. Raises ``ValueError`` when ``text`` is not a JSON object with a ``keys`` list."""
    document = parse_strict_json(text)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS document")
    public: list[Any] = [jwk for jwk in keys if isinstance(jwk, dict) and jwk.get("kty") != "oct"
                         and not PRIVATE_MEMBERS & jwk.keys()]
    return json.dumps({"keys": public})


def _private(st: os.stat_result, *, writable_only: bool) -> bool:
    """Owned by this user, and not writable (``writable_only``) or not accessible at all by anyone else."""
    others = 0o022 if writable_only else 0o077
    return st.st_uid == os.geteuid() and not st.st_mode & others


def _reason(err: Exception) -> str:
    return (err.strerror if isinstance(err, OSError) else None) or str(err)
