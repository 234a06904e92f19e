"""Append-only JSON Lines audit sink: one JSON object a line, handed to the OS before ``write`` returns.

The file is opened with ``O_APPEND`` and each record goes out in one ``os.write`` loop under a lock, so
concurrent writers (threads, or a CLI check beside the server) never interleave within a line. A failed
write raises ``AuditUnavailable``; the next write reopens the file, so the sink recovers by itself.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from tenantgate.core.ports import AuditRecord
from tenantgate.errors import AuditUnavailable


def encode_event(event: AuditRecord) -> bytes:
    """One line of compact, ASCII-only JSON (newlines and separators in values are escaped)."""
    return (json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


class JsonlAuditSink:
    """Writes audit records to ``path`` (created 0600, parent directories created 0700)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._lock = threading.Lock()
        self._ok = True

    def open(self) -> None:
        """Open (or create) the file now, raising ``AuditUnavailable`` if that is impossible."""
        with self._lock:
            self._ensure_open()

    def write(self, event: AuditRecord) -> None:
        data = encode_event(event)
        with self._lock:
            try:
                fd = self._ensure_open()
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                self._ok = True
            except OSError as err:
                self._ok = False
                self._close()
                raise AuditUnavailable(f"cannot append to audit log {self.path}: {err.strerror}") from err

    def healthy(self) -> bool:
        """True when records can be written.

        After a failed write, health is probed by reopening the log and writing a byte to a sibling probe
        file on the same file system (a full disk fails that too); it recovers without a restart.
        """
        if self._ok:
            return True
        probe = self.path.with_name(self.path.name + ".probe")
        try:
            self.open()
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, b"\n")
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except (OSError, AuditUnavailable):
            return False
        self._ok = True
        return True

    def close(self) -> None:
        with self._lock:
            self._close()

    def _ensure_open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                self._ok = False
                raise AuditUnavailable(f"cannot open audit log {self.path}: {err.strerror}") from err
        return self._fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
