"""Multiprocess metric files whose disk space is allocated before it is mapped, and a full disk that turns a
process's metrics off instead of killing it.

prometheus-client keeps each process's values of one kind in a file it maps into memory (``MmapedDict``), made
sparse: ``truncate`` to 64 KiB, doubled whenever it fills. The filesystem allocates a block only when a page is
first written through the mapping, and when it is full the kernel answers that write with SIGBUS. Review
finding: with ``serve --workers N`` and a full temp directory, workers died on the request path (a new series
on an untouched page) and at every restart, until the supervisor stopped everything; the single process, with
no files, answered every request.

``ReservedMmapedDict`` allocates a file's blocks (``posix_fallocate``) when it creates the file and whenever it
grows it, before they are mapped: a full disk is then an ``OSError`` there, and every later write goes to a
page allocated already. The steady state is prometheus-client's own: nothing is added to a write.

When the space cannot be had, every metric of this process goes on in memory: its files keep the values they
had (``/metrics`` shows them as they were until the process exits and they are folded; no total goes back), one
error line names the directory, and decisions and the worker go on as before. A forked process tries files
again. On copy-on-write filesystems (btrfs, ZFS) any write may need a new block, so there allocating ahead
cannot rule SIGBUS out.

prometheus-client has no hook for its file class: ``install`` points ``prometheus_client.values.MmapedDict``, the
name its ``MultiProcessValue`` creates files by, at this class (a test checks the files it creates are
allocated).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import struct
import weakref
from typing import BinaryIO

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

log = logging.getLogger("tenantgate.metrics")

INITIAL_BYTES = 1 << 16  # a new file's size, as prometheus-client's own; it doubles from there
_ZEROS = bytes(INITIAL_BYTES)
_NO_FALLOCATE = (errno.EOPNOTSUPP, errno.ENOSYS)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a libc that does not emulate it (musl) on such a filesystem


def install() -> None:
    """Make prometheus-client's multiprocess values keep their files in ``ReservedMmapedDict``s. Call before
    the first metric is created."""
    if values.MmapedDict not in (MmapedDict, ReservedMmapedDict):  # type: ignore[attr-defined]
        log.warning("prometheus-client creates its metric files in another way than this version of TenantGate "
                    "knows: their space is not allocated ahead, and a full disk may kill a worker with SIGBUS")
        return
    values.MmapedDict = ReservedMmapedDict  # type: ignore[attr-defined]


class ReservedMmapedDict(MmapedDict):
    """prometheus-client's ``MmapedDict`` whose file blocks are allocated before they are mapped (see module).

    Raises no ``OSError`` for want of space: this process's metrics go on in memory instead (``_Off``). Like its
    base class it is not thread-safe: prometheus-client calls it under one lock per process.
    """

    # In memory: no file, and the values in a buffer the base class reads and writes as it does the mapping.
    _f: BinaryIO | None  # type: ignore[assignment]
    _m: mmap.mmap | bytearray  # type: ignore[assignment]

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if read_mode:
            super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]
            return
        self._f = None  # nothing open yet: what _start_in_memory checks when the base class failed half-way
        if _OFF.here():
            self._start_in_memory(filename)
        else:
            try:
                _create(filename)
                super().__init__(filename)  # type: ignore[no-untyped-call]
            except OSError as err:
                self._start_in_memory(filename)
                _OFF.switch(filename, err)
        _OFF.files.add(self)

    def _init_value(self, key: str) -> None:
        """Add ``key``, allocating the space the base class would map sparse (it grows the file only when full)."""
        needed = self._used + _entry_bytes(key)
        if needed > self._capacity:
            self._grow(needed)
        super()._init_value(key)  # type: ignore[no-untyped-call]

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        if isinstance(self._m, bytearray):  # in memory
            self._m.extend(bytes(capacity - self._capacity))
        else:
            file = self._f
            assert file is not None  # mapped: its file is open
            try:
                _reserve(file.fileno(), self._capacity, capacity - self._capacity)
                self._m = mmap.mmap(file.fileno(), capacity)
            except OSError as err:
                _OFF.switch(self._fname, err)
                self._to_memory()  # switched with the others already; this makes sure
                self._grow(needed)
                return
        self._capacity = capacity

    def _to_memory(self) -> None:
        """Keep the values in memory from now on (the file keeps what it holds). Nothing when in memory already,
        or closed."""
        mapping, file = self._m, self._f
        if not isinstance(mapping, mmap.mmap) or file is None:
            return
        buffer = bytearray(self._capacity)
        buffer[:self._used] = mapping[:self._used]
        mapping.close()
        file.close()
        self._f, self._m = None, buffer

    def _start_in_memory(self, filename: str) -> None:
        if self._f is not None:  # the base class opened the file, then failed
            self._f.close()
        self._fname = filename
        self._f = None
        self._m = bytearray(INITIAL_BYTES)
        self._capacity = INITIAL_BYTES
        self._used = 8  # the base class's layout: bytes used (4), padding (4), then the entries
        self._m[0:4] = struct.pack("i", self._used)
        self._positions = {}


class _Off:
    """The process whose metrics went to memory (by pid: a forked child starts with files again), and this
    process's files, all switched at once so that its series stop together."""

    def __init__(self) -> None:
        self.pid = 0
        self.files: weakref.WeakSet[ReservedMmapedDict] = weakref.WeakSet()

    def here(self) -> bool:
        return self.pid == os.getpid()

    def switch(self, filename: str, err: OSError) -> None:
        """Every file of this process goes on in memory; one error line (per process) says why."""
        if self.here():
            return
        self.pid = os.getpid()
        for values_file in list(self.files):
            values_file._to_memory()
        remedy = ("Free space there, or point TMPDIR at a larger filesystem, and restart" if err.errno in _NO_SPACE
                  else "Fix the cause above and restart")
        log.error("metrics files in %s cannot be allocated (%s: %s): this process (pid %d) keeps its metrics in "
                  "memory from now on, and what it counts from now on is not in /metrics (its series stay as they "
                  "were); decisions go on. %s",
                  os.path.dirname(filename), os.path.basename(filename), err.strerror or err, self.pid, remedy)


# Module state, as prometheus-client's own files registry is: it constructs this class with a file name only.
_OFF = _Off()


def _create(filename: str) -> None:
    """Create ``filename`` ``INITIAL_BYTES`` long and allocated, unless it holds something (then a process of this
    start made it, here). Made under another name and renamed: a reader never finds it empty (that fails a scrape)."""
    try:
        if os.stat(filename).st_size > 0:
            return
    except FileNotFoundError:
        pass
    temporary = filename + ".new"  # not *.db: no reader looks at it
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        _reserve(fd, 0, INITIAL_BYTES)
        os.rename(temporary, filename)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)  # its blocks go back to a filesystem that is short of them
        raise
    finally:
        os.close(fd)


def _reserve(fd: int, offset: int, length: int) -> None:
    """Allocate ``length`` bytes of the file from ``offset`` (a range that holds nothing yet), extending it.
    Raises ``OSError`` (ENOSPC: the filesystem is full)."""
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as err:
        if err.errno not in _NO_FALLOCATE:
            raise
        end = offset + length
        while offset < end:  # zeros: what the range holds anyway, now written, so its blocks exist
            offset += os.pwrite(fd, _ZEROS[:end - offset], offset)


def _entry_bytes(key: str) -> int:
    """What ``MmapedDict._init_value`` appends for ``key``: its length (4), the key padded so that the value is
    8-aligned, then value and timestamp (8 each)."""
    encoded = len(key.encode("utf-8"))
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16
