"""Low-level file operations on a chain's files: bounded locking, all-or-nothing appends and rotation (the
sink's). The consistent snapshot of a rotating chain that its readers take is ``snapshot.py``.

Everything here raises ``OSError`` (``TimeoutError`` for a lock held too long); the sink turns it into
``AuditUnavailable``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from tenantgate.audit.files import rotated_numbers, rotated_path
from tenantgate.paths import open_regular


def lock_exclusive(fd: int, timeout: float, what: Path) -> None:
    """Take the exclusive ``flock`` of ``fd``, polling for at most ``timeout`` seconds.

    Bounded so a stuck writer elsewhere (a stopped process) turns into ``TimeoutError``, never a hung decision.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass  # contended: poll with backoff until the deadline
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 0.005)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"audit log {what} stayed locked by another writer for {timeout:g}s") from None


def lock_shared(fd: int, timeout: float) -> bool:
    """Take a shared ``flock`` of ``fd``, polling for at most ``timeout`` seconds; False when it was not granted
    (held by a writer all that time, or no locks on this filesystem). Never blocks longer: a reader must not hang
    on a stuck writer, and readers do without the lock (``snapshot_chain``)."""
    deadline = time.monotonic() + timeout
    delay = 0.0002
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
        except OSError:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.005)


def unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass


def close_quietly(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def fsync_dir(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_all(fd: int, data: bytes, *, start: int, sync: bool) -> int:
    """Append ``data`` to the file of size ``start`` with one ``os.write`` loop (then ``os.fsync`` when
    ``sync``); returns the new size.

    On failure the bytes written are cut off again (when nothing else was appended meanwhile), so the log
    stays line-aligned and holds no record whose write was reported as failed; then the error is re-raised.
    """
    written = 0
    try:
        view = memoryview(data)
        while view:
            count = os.write(fd, view)
            written += count
            view = view[count:]
        if sync:
            os.fsync(fd)
    except OSError:
        if written:
            _cut_back(fd, start, written)
        raise
    return start + len(data)


def rotate(live: Path, keep_files: int, durable: bool, lock_timeout: float) -> int:
    """Move ``live`` to ``live.1`` (shifting ``.N`` to ``.N+1``; deleting beyond ``keep_files`` unless 0) and
    put a new file in its place. Returns the file now at ``live``, open for appending and locked.

    Call with ``live``'s lock held. The new file is created and locked under a temporary name, the old one
    is hard-linked to ``.1``, then the new one atomically renamed over ``live``: the path never disappears
    (so no writer can create a stray file there) and no writer can append to the new file before this one,
    so the returned file is empty.

    Without hard links (``os.link`` fails with ``PermissionError``) the old file is renamed to ``.1`` and the
    path is empty for a moment: a writer arriving then creates its own file there and may append to it
    (continuing the chain from ``.1``). That file is never replaced (its records were acknowledged): the new
    file is created with ``O_EXCL`` or, if one is already there, adopted, so the returned file may hold
    another writer's records and the caller must then continue the chain from its tail. Even an empty
    returned file may follow such records: that writer may have rotated its file to ``.1`` in the gap too,
    so the caller checks that ``.1`` is still the file it had open.
    """
    for stale in live.parent.glob(glob_escape(live.name) + ".rotating-*"):
        stale.unlink(missing_ok=True)  # left by a writer killed mid-rotation (no rotation runs besides ours)
    forget_half_rotation(live)
    temp = live.with_name(f"{live.name}.rotating-{os.getpid()}-{threading.get_ident()}")
    new_fd = os.open(temp, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(new_fd, fcntl.LOCK_EX)
        for number in reversed(rotated_numbers(live)):
            if keep_files and number >= keep_files:
                os.unlink(rotated_path(live, number))
            else:
                os.rename(rotated_path(live, number), rotated_path(live, number + 1))
        try:
            os.link(live, rotated_path(live, 1))
        except PermissionError:  # no hard links on this filesystem
            os.close(new_fd)
            new_fd = -1
            temp.unlink()
            os.rename(live, rotated_path(live, 1))
            new_fd = _claim_path(live, lock_timeout)
        else:
            os.rename(temp, live)
        if durable:
            fsync_dir(live.parent)
    except OSError:
        close_quietly(new_fd if new_fd >= 0 else None)
        temp.unlink(missing_ok=True)
        raise
    return new_fd


def _claim_path(live: Path, lock_timeout: float) -> int:
    """The file at ``live`` (just renamed away), created if nobody did meanwhile, open and locked.

    ``O_EXCL``, never a rename over the path: a file another writer created there in the gap may already
    hold records it acknowledged, and replacing it would lose them. Raises ``OSError`` (``TimeoutError``).
    """
    for _attempt in range(10):
        try:
            fd = os.open(live, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            try:
                fd = open_regular(live, os.O_RDWR | os.O_APPEND)  # a FIFO or a symlink put there: NotRegularFile
            except FileNotFoundError:
                continue  # rotated or removed meanwhile: look again
        try:
            # Between the open and the lock another writer may take the file and append: the caller reads
            # the size of what it gets, not what it created.
            lock_exclusive(fd, lock_timeout, live)
            ours, on_disk = os.fstat(fd), os.stat(live)
        except FileNotFoundError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        if (ours.st_dev, ours.st_ino) == (on_disk.st_dev, on_disk.st_ino):
            return fd
        os.close(fd)  # replaced while we waited for the lock: take the new one
    raise OSError(errno.EAGAIN, f"audit log {live} kept being replaced during rotation")


def forget_half_rotation(live: Path) -> bool:
    """Remove ``live.1`` when it is a second name of ``live`` itself (a writer was killed between linking the
    old file to ``.1`` and renaming the new one into place): the rotation simply did not happen.

    Returns True when it removed one."""
    first = rotated_path(live, 1)
    try:
        if os.path.samefile(live, first):
            first.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _cut_back(fd: int, start: int, written: int) -> None:
    try:
        if os.fstat(fd).st_size == start + written:
            os.ftruncate(fd, start)
    except OSError:
        pass  # left for recovery at the next batch (the size no longer matches what we wrote)
