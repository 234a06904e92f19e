"""The last key set a JWKS URL served, kept on disk so that a process started while the URL is down can verify.

A running process keeps its last good keys while the URL is down (``JwksUrl``); a process started meanwhile
had none, so it denied every token of that issuer. With ``serve --workers`` that was a worker restarted during
an IdP outage: the kernel gave it its share of connections, and about half of valid tokens were denied while
the other worker answered health checks (review finding). Each key set fetched is now written to
``<state_dir>/jwks/<hash of the URL>.json`` (changed or not, so the file's age is the time since the URL last
answered; a set without a usable key too, so a withdrawal is remembered); a process whose first fetch fails
uses that file, if it is younger than ``tokens.jwks_saved_max_age_seconds`` and holds a usable key, until a
fetch succeeds.

The file holds public keys only, and lives in the state directory (0700), which holds the audit log and the
grant store too: whoever can write there is trusted already. It is written atomically (a new file, then a
rename), never through a symlink, and read only when it is a regular file of at most ``MAX_JWKS_BYTES``.
Failures to read or write it are logged, never raised: the URL stays the source of truth.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from tenantgate.identity.keys import MAX_JWKS_BYTES
from tenantgate.paths import make_private_dirs

log = logging.getLogger("tenantgate.identity")


class SavedKeySet:
    """One URL's saved response. ``save`` and ``load`` never raise."""

    __slots__ = ("_directory", "_max_age", "_wall", "path")

    def __init__(self, directory: Path, url: str, max_age_seconds: float, *,
                 wall: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self.path = directory / (hashlib.sha256(url.encode("utf-8")).hexdigest()[:32] + ".json")
        self._max_age = max_age_seconds
        self._wall = wall  # file ages outlive the process, so they are wall-clock ages (bounded by max_age)

    def save(self, text: str) -> None:
        """Replace the saved response with ``text`` (the body of a fetch that gave usable keys)."""
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            make_private_dirs(self._directory)
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as err:
            log.warning("could not save the JWKS response to %s: %s", self.path, err.strerror or err)
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass

    def load(self) -> tuple[str, float] | None:
        """The saved response and its age in seconds, or None when there is none young enough to use."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("saved JWKS response %s not read: %s", self.path, err.strerror or err)
            return None
        try:
            st = os.fstat(fd)
            age = self._wall() - st.st_mtime
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_JWKS_BYTES:
                log.warning("saved JWKS response %s not used: not a regular file of at most %d bytes",
                            self.path, MAX_JWKS_BYTES)
                return None
            if not 0 <= age <= self._max_age:  # a file from the future is as doubtful as an old one
                log.warning("saved JWKS response %s not used: saved %.0f s ago, the limit is %.0f s "
                            "(tokens.jwks_saved_max_age_seconds)", self.path, age, self._max_age)
                return None
            return os.read(fd, MAX_JWKS_BYTES + 1).decode("utf-8"), age
        except (OSError, UnicodeDecodeError) as err:
            log.warning("saved JWKS response %s not read: %s", self.path, err)
            return None
        finally:
            os.close(fd)
