"""Decision ids: random (version 4) UUIDs, as ``str(uuid.uuid4())`` spells them, at a fraction of its cost.

``uuid.uuid4()`` asks the kernel for 16 random bytes per id (a system call on every decision). Here the
bytes come from the same source, ``os.urandom``, 4 KiB at a time. A forked child drops the buffer it
inherited, so two processes never hand out the same ids.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 4096  # random bytes fetched at once: 256 ids


class _RandomIds:
    __slots__ = ("_buffer", "_lock", "_offset")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = _BLOCK

    def reset(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork time stays held in the child
        self._buffer, self._offset = b"", _BLOCK

    def next(self) -> str:
        with self._lock:
            if self._offset >= _BLOCK:
                self._buffer, self._offset = os.urandom(_BLOCK), 0
            start = self._offset
            self._offset = start + 16
            raw = bytearray(self._buffer[start:start + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_IDS = _RandomIds()
os.register_at_fork(after_in_child=_IDS.reset)


def decision_id() -> str:
    """A new random UUID (version 4) in its canonical lowercase form, e.g. ``1b4e28ba-2fa1-4d2e-883f-...``."""
    return _IDS.next()
