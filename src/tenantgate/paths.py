"""Filesystem helpers shared by the adapters that keep state on disk or read it (audit log, grant store, dev
issuer, policy loader)."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}


class NotRegularFile(OSError):
    """A path names something other than a regular file (a FIFO, a device, a socket, a directory, or a symbolic
    link where none is followed): never read, written through or waited on. ``strerror`` says what was found."""


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o600, *,
                 follow_symlinks: bool = False) -> int:
    """``os.open(path, flags, mode)``, only for a regular file, returned as a blocking descriptor (close-on-exec).

    Nothing is waited on: the open is non-blocking, so a FIFO without a peer opens at once and is refused with
    devices, sockets and directories (review findings: a FIFO at the schema path blocked policy reloads for
    good, one in an audit chain hung ``audit verify`` and the audit sink). What is checked is the descriptor
    that was opened, so nothing can be swapped in between. A symbolic link at ``path`` itself is followed only
    with ``follow_symlinks`` (links among its parent directories always are). Raises ``NotRegularFile`` for
    anything but a regular file, ``OSError`` (e.g. ``FileNotFoundError``) when it cannot be opened.
    """
    nofollow = 0 if follow_symlinks else os.O_NOFOLLOW
    try:
        fd = os.open(path, flags | nofollow | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP and not follow_symlinks:  # O_NOFOLLOW's answer for a symlink
            raise NotRegularFile(errno.ELOOP, "not a regular file (a symbolic link, not followed)", str(path)) from err
        if err.errno == errno.EISDIR:
            raise NotRegularFile(errno.EISDIR, "not a regular file (a directory)", str(path)) from err
        raise
    try:
        kind = stat.S_IFMT(os.fstat(fd).st_mode)
        if kind != stat.S_IFREG:
            what = _KINDS.get(kind, f"file type {kind:o}")
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({what})", str(path))
        os.set_blocking(fd, True)  # O_NONBLOCK was for the open only
    except BaseException:
        os.close(fd)
        raise
    return fd


def make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700; existing ones are left as they are.

    ``mkdir(parents=True)`` creates the parents with the default 0755 whatever ``mode`` says, so anyone on the
    host could list a state directory (the default ``.tenantgate``). Raises ``OSError``.
    """
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)
