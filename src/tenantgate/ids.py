"""Decision ids: random (version 4) UUIDs, as ``str(uuid.uuid4())`` spells them, at a fraction of its cost.

``uuid.uuid4()`` asks the kernel for 16 random bytes per id (a system call on every decision). Here the
bytes come from the same source, ``os.urandom``, 4 KiB at a time, and the 256 ids they make are spelled out
together, so taking one is a ``list.pop``. A forked child drops the ids it inherited, so two processes never
hand out the same ids.
"""

from __future__ import annotations

import os
import threading

_BLOCK = 4096  # random bytes fetched at once: 256 ids


def _spell(raw: bytearray) -> str:
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _RandomIds:
    __slots__ = ("_lock", "_ready")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: list[str] = []

    def reset(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork time stays held in the child
        self._ready = []

    def next(self) -> str:
        try:
            return self._ready.pop()  # atomic: each id is handed out once, whichever thread asks
        except IndexError:
            return self._refill()

    def _refill(self) -> str:
        with self._lock:
            try:
                return self._ready.pop()  # another thread refilled while this one waited
            except IndexError:
                pass
            block = os.urandom(_BLOCK)
            fresh = [_spell(bytearray(block[i:i + 16])) for i in range(0, _BLOCK, 16)]
            # Ours is taken before the rest is published: other threads pop without the lock and may empty
            # the new list at once (a thread switch, a free-threaded build or a trace function in between).
            mine = fresh.pop()
            self._ready = fresh
            return mine


_IDS = _RandomIds()
os.register_at_fork(after_in_child=_IDS.reset)


def decision_id() -> str:
    """A new random UUID (version 4) in its canonical lowercase form, e.g. ``1b4e28ba-2fa1-4d2e-883f-...``."""
    return _IDS.next()
