"""Append-only JSON Lines audit sink: one JSON object a line, handed to the OS before ``write`` returns.

The file is opened with ``O_APPEND`` and each record goes out in one ``os.write`` loop under a lock, so
concurrent writers (threads, or a CLI check beside the server) never interleave within a line. A failed
write raises ``AuditUnavailable``; the next write reopens the file, so the sink recovers by itself.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from tenantgate.core.model import rfc3339
from tenantgate.core.ports import AuditRecord
from tenantgate.errors import AuditUnavailable


class _Probe:
    """A record written only to test that the log can grow again after a failure."""

    def to_dict(self) -> dict[str, str]:
        return {"record_type": "audit_probe", "time": rfc3339(time.time())}


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
            fd = -1
            start = -1
            written = 0
            try:
                fd = self._ensure_open()
                start = os.fstat(fd).st_size
                view = memoryview(data)
                while view:
                    count = os.write(fd, view)
                    written += count
                    view = view[count:]
                self._ok = True
            except OSError as err:
                self._ok = False
                if written:
                    self._undo_partial(fd, start, written)
                self._close()
                raise AuditUnavailable(f"cannot append to audit log {self.path}: {err.strerror}") from err

    def healthy(self) -> bool:
        """True when records can be written to the log itself.

        After a failed write, health is probed by appending a small ``audit_probe`` record to the actual log
        (not a side file, which could succeed while the log cannot grow); only a successful append restores
        health, so it recovers without a restart once the log is writable again.
        """
        if self._ok:
            return True
        try:
            self.write(_Probe())
        except AuditUnavailable:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._close()

    def _ensure_open(self) -> int:
        if self._fd is not None and not self._same_file(self._fd):
            # The log was rotated (renamed) or deleted under us: records must reach the configured path.
            self._close()
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError as err:
                self._ok = False
                raise AuditUnavailable(f"cannot open audit log {self.path}: {err.strerror}") from err
        return self._fd

    @staticmethod
    def _undo_partial(fd: int, start: int, written: int) -> None:
        """Cut off a torn record (disk full or file size limit mid-line), so the log stays line-aligned.
        Only when nothing else was appended meanwhile; otherwise the torn line is left for verification."""
        try:
            if os.fstat(fd).st_size == start + written:
                os.ftruncate(fd, start)
        except OSError:
            pass

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk, ours = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (on_disk.st_ino, on_disk.st_dev) == (ours.st_ino, ours.st_dev)

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
