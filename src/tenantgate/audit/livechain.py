"""The live file of the audit log and where its chain ends, for the batch writer (``writer.py``).

Before each batch the live file is opened (a regular file only), locked exclusively, and checked to be the
one at the path, of the size the last batch left it. When anyone else may have written to it (a restart,
another writer, a rotation, a failure) the chain head is learnt again from its tail and, when the log does not
end where the chain was known to end, an ``audit_recovered`` record is queued (``recovery.py``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tenantgate.audit.checkpoint import CHECKPOINT
from tenantgate.audit.fileio import close_quietly, forget_half_rotation, lock_exclusive, unlock
from tenantgate.audit.files import ChainHead, known_head, resume_point, scan_tail
from tenantgate.audit.recovery import Recovery, check_end, move_unchained, set_aside_tail
from tenantgate.core.ports import Clock
from tenantgate.errors import AuditUnavailable
from tenantgate.paths import NotRegularFile, make_private_dirs, open_regular


class LiveFileMoved(Exception):
    """The live file was moved aside (unchained legacy log); open the path again."""


class LiveChain:
    """The live file at ``path`` (open, locked by ``_acquire``) and the chain head as of the last batch.

    Touched only by the batch leader (one at a time, see ``GroupCommitter``); ``ChainWriter`` appends on top.
    ``sync``: fsync what recovery sets aside (``"fsync"`` durability).
    """

    def __init__(self, path: Path, *, sync: bool, clock: Clock, lock_timeout: float) -> None:
        self.path = path
        self._path_text = os.fspath(self.path)  # for os.stat on every batch (a Path costs a conversion each time)
        self._sync = sync
        self._clock = clock  # the ``time`` of checkpoint and ``audit_recovered`` records
        self._lock_timeout = lock_timeout
        # State below is touched only by the batch leader (one at a time, see GroupCommitter).
        self._fd: int | None = None
        self._head_fd: int | None = None
        self._ident: tuple[int, int] = (-1, -1)
        self._other_links = 1  # a link count of our file checked not to be a half rotation (see ``_unchanged``)
        self._chain: ChainHead | None = None  # the chain head as of our last batch
        self._end = -1  # file size after our last batch; anything else means someone else wrote
        self._preamble: list[dict[str, Any]] = []  # recovery records not yet written
        self._since_checkpoint = 0
        self._checkpoint_due = False

    def _acquire(self) -> int:
        """The live file, open and exclusively locked, its chain head known (recovering a torn tail)."""
        for _attempt in range(10):
            fd = self._ensure_open()
            lock_exclusive(fd, self._lock_timeout, self.path)
            if self._unchanged():
                return fd  # the common case, one stat: our file is still the live one and nobody wrote to it
            st = os.fstat(fd)
            if not self._is_live(st):
                unlock(fd)  # rotated, replaced or deleted (before or while we waited for the lock): reopen
                self._close_files()
                continue
            try:
                self._sync_chain(fd, st)
            except LiveFileMoved:
                unlock(fd)
                self._close_files()
                continue
            except BaseException:
                unlock(fd)
                raise
            return fd
        raise AuditUnavailable(f"audit log {self.path} keeps being replaced; giving up on this batch")

    def _unchanged(self) -> bool:
        """Called with the lock held. True when the file at our path is the one we have open, of the size
        we left it (so the chain head in memory is current); False when unsure (then the full checks run)."""
        if self._chain is None:
            return False
        try:
            on_disk = os.stat(self._path_text)
        except OSError:
            return False
        if (on_disk.st_dev, on_disk.st_ino) != self._ident or on_disk.st_size != self._end:
            return False
        # A second name (nlink > 1) may mean a writer was killed mid-rotation, leaving ``.1`` linked to this very
        # file: the slow path removes it. A count the slow path found to be other names (a hard-link backup)
        # is accepted while it holds, or every batch would take the slow path for as long as they exist; a
        # new count (a half rotation on top of them) means looking again, and so does one after seeing 1. Left
        # unseen: the backup's name gone and a half rotation made between two of our batches (same count);
        # readers skip such a ``.1`` and our next rotation, or next slow path, removes it.
        links = on_disk.st_nlink
        if links < 2:
            self._other_links = 1
            return True
        return links == self._other_links

    def _sync_chain(self, fd: int, st: os.stat_result) -> None:
        """Learn where the chain ends from the file ``fd`` (locked, ``st`` its fstat) when someone else may have
        written to it: a restart, another writer, a rotation, a failure. Sets ``_chain`` and ``_end``; queues
        an ``audit_recovered`` record when the end is not what the chain reached. Raises ``LiveFileMoved``,
        ``AuditUnavailable`` (no intact record in the tail window), ``OSError``."""
        ident = (st.st_dev, st.st_ino)
        self._other_links = 1  # it belongs to ``_ident``, which becomes ``ident`` below
        # Even when we wrote last: the half rotation may be someone else's. When ``.1`` is another file, the
        # extra names are not a half rotation: the fast path may accept this count again.
        if st.st_nlink > 1 and not forget_half_rotation(self.path):
            self._other_links = st.st_nlink
        if self._chain is not None and ident == self._ident and st.st_size == self._end:
            return  # we wrote last: the head in memory is current
        # Our own last batch went to this very file (open all along, so not a reused inode): its record is a head
        # nobody can rewrite in memory. (Right after our own rotation it went to ``.1``: the new file's records
        # can only follow it, so it is never found there and nothing is set aside.)
        ours = self._chain if ident == self._ident else None
        self._ident = ident
        forget_half_rotation(self.path)
        # Records we did not write may follow our last checkpoint: counting on would understate the unsigned
        # run. The chain found ends in a checkpoint, or ``_checkpoint_due`` seals it first in the next batch.
        self._since_checkpoint = 0
        if st.st_size == 0:
            self._chain = resume_point(self.path, self._chain)
            self._checkpoint_due = self._chain.seq > 0
        else:
            scan = scan_tail(fd, st.st_size)
            if scan.last is None and scan.legacy:
                self._preamble.append(move_unchained(self.path, self._clock.now(), self._sync))
                raise LiveFileMoved
            if scan.last is None and not scan.whole_file:
                raise AuditUnavailable(f"no intact record in the last {st.st_size - scan.intact_end} bytes of "
                                       f"{self.path}; inspect it with `tenantgate audit verify`")
            known = known_head(self.path, ours)
            if scan.last is None:  # nothing intact in the whole file: continue from what else there is
                recovery = Recovery(self.path, fd, scan.intact_end, st.st_size,
                                    resume_point(self.path, self._chain), known)
            else:
                recovery = check_end(self.path, fd, scan, known, ours)
            if recovery.cut < recovery.size or recovery.reason != "torn_tail":
                self._preamble.append(set_aside_tail(recovery, self._clock.now(), self._sync))
            self._chain = recovery.resume
            self._checkpoint_due = scan.last is None or recovery.reason == "head_mismatch" or \
                scan.last.record_type != CHECKPOINT
        self._end = os.fstat(fd).st_size

    def _follow_rotated(self) -> None:
        """Continue the chain from wherever it now ends (``.1``'s tail, the head file), as someone else wrote
        last: nothing of ours is counted as signed-for, and a tail without a checkpoint is sealed first."""
        self._chain = resume_point(self.path, self._chain)
        self._since_checkpoint = 0
        self._checkpoint_due = self._chain.seq > 0

    def _ensure_open(self) -> int:
        if self._fd is None:
            try:
                make_private_dirs(self.path.parent)
                # A regular file only: records written to a FIFO nobody reads, to /dev/null or through a symlink
                # planted at the path would be acknowledged and kept nowhere (review finding).
                self._fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            except NotRegularFile as err:
                raise AuditUnavailable(f"audit log {self.path} is {err.strerror}: no record is written to it") \
                    from err
            except OSError as err:
                raise AuditUnavailable(f"cannot open audit log {self.path}: {err.strerror}") from err
        return self._fd

    def _is_live(self, ours: os.stat_result) -> bool:
        """True when our open file is still the one at the configured path (not renamed away or deleted)."""
        try:
            on_disk = os.stat(self.path)
        except OSError:
            return False
        return (on_disk.st_ino, on_disk.st_dev) == (ours.st_ino, ours.st_dev)

    def _close_files(self) -> None:
        close_quietly(self._fd)
        close_quietly(self._head_fd)
        self._fd = self._head_fd = None
        self._end = -1
        self._ident = (-1, -1)  # a file opened later is not the one our chain head was written to, even at this inode
