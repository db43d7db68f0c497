"""One job per run folder: an advisory file lock held by the process that owns the run.

Two launches into one run folder (a command typed twice, a SLURM job
submitted twice) would both train and both write ``checkpoint_last.pt``; the
second would also decide what to resume while the first is still saving. The
launching process therefore takes ``run.lock`` in the run folder with
``fcntl.flock`` before it looks at any checkpoint, and holds it until its run
has ended. A second launch fails to take it and is refused at once with
:class:`RunFolderInUse`, whose one-line message names the holder's host, pid
and start time (written into the lock file) and what to do.

Why ``flock`` and not a marker file: the kernel drops the lock when the last
descriptor of it closes, so a crash, ``kill -9`` or a node's reboot never
leaves a stale lock behind, and nothing has to guess whether a recorded pid
is still alive. The lock file itself stays (deleting it would let two
launches lock two different files of the same name); its content is only
information, read when the lock is refused, and emptied on a clean release.

Inheritance: the descriptor is close-on-exec, so processes started with
``exec`` (spawned ranks, ``subprocess``) never hold it; a ``fork`` child
(a DataLoader worker of a single-process run) closes its copy at once
(:func:`os.register_at_fork`), so the lock lives exactly as long as the
process that took it. A child never unlocks (``LOCK_UN`` on the shared open
file would release the parent's lock too); it only closes.

Filesystems: ``flock`` works on local disks, on NFS (the Linux client maps
it to NFS byte-range locks, shared by every node) and on Lustre mounted with
``-o flock``. Where the filesystem refuses locks, the launch goes on with a
warning that a second launch will not be refused.

Plain Python (no fairseq): :mod:`.launch` decides which process of a job takes
the lock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Dict, Optional, Set

__all__ = ["LOCK_NAME", "LockHolder", "RunFolderInUse", "RunLock", "acquire", "read_holder"]

logger = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
# The holder writes its details right after taking the lock; a refused launch
# that reads the file in between waits this long for them before saying "unknown".
_HOLDER_WRITE_WAIT_S = 1.0
# errno values of a filesystem that does not lock (NFS without lockd, some FUSE mounts)
_NO_LOCKING = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}

_HELD_HERE: Set[int] = set()  # descriptors of locks taken by this process (closed in fork children)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a run folder, as written into its lock file."""

    host: str
    pid: int
    started: str  # ISO 8601 with the UTC offset, seconds
    command: str = ""

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, started {self.started}"

    def to_text(self) -> str:
        return f"host: {self.host}\npid: {self.pid}\nstarted: {self.started}\ncommand: {self.command}\n"

    @classmethod
    def from_text(cls, text: str) -> Optional["LockHolder"]:
        """The holder written by :meth:`to_text`; None for an empty or partly written file."""
        fields: Dict[str, str] = {}
        for line in text.splitlines():
            key, sep, value = line.partition(": ")
            if sep:
                fields[key.strip()] = value.strip()
        try:
            return cls(fields["host"], int(fields["pid"]), fields["started"], fields.get("command", ""))
        except (KeyError, ValueError):
            return None

    @classmethod
    def this_process(cls, command: Optional[str] = None) -> "LockHolder":
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        return cls(socket.gethostname(), os.getpid(), started, " ".join(sys.argv) if command is None else command)


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock; the message is one line naming it and what to do."""

    def __init__(self, folder: str, holder: Optional[LockHolder], advice: str):
        self.folder = folder
        self.holder = holder
        who = holder.describe() if holder is not None else "holder unknown: it has not written its host and pid"
        super().__init__(f"run folder {folder} is in use by another launch ({who}): {advice}")


class RunLock:
    """A run folder's lock held by this process; :meth:`release` (or leaving a ``with`` block) frees it."""

    def __init__(self, path: str, fd: Optional[int], holder: LockHolder):
        self.path = path
        self.holder = holder
        self._fd = fd  # None: not held (released, or a filesystem without locks)
        self._pid = os.getpid()  # a fork child's copy of this object holds nothing

    @property
    def held(self) -> bool:
        return self._fd is not None and os.getpid() == self._pid

    def release(self) -> None:
        """Empty the lock file and unlock it (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None or os.getpid() != self._pid:  # in a fork child the descriptor is closed already
            return
        _HELD_HERE.discard(fd)
        try:
            os.ftruncate(fd, 0)  # a reader of the file then sees nobody named, as is the case
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: str) -> Optional[LockHolder]:
    """The holder written in a lock file (without locking it); None when empty or missing."""
    try:
        with open(path, encoding="utf-8") as handle:
            return LockHolder.from_text(handle.read())
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def acquire(
    folder: str,
    advice: str = "wait for it to end, or use another folder",
    command: Optional[str] = None,
) -> RunLock:
    """Take ``folder``'s run lock for this process, or refuse at once.

    Args:
        folder: the run folder (created when missing); the lock is ``folder/run.lock``.
        advice: what a refused launch should do, the end of the refusal message.
        command: written as the holder's command (default: this process's ``sys.argv``).

    Raises:
        RunFolderInUse: another process (of any host sharing the folder) holds the lock.
    """
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(os.path.abspath(folder), LOCK_NAME)
    holder = LockHolder.this_process(command)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunFolderInUse(os.path.dirname(path), _holder_of_held_lock(path), advice) from None
    except OSError as err:
        os.close(fd)
        if err.errno not in _NO_LOCKING:
            raise
        logger.warning(
            "cannot lock %s (%s): this filesystem does not support file locks, so a second launch into %s "
            "will not be refused", path, err.strerror, os.path.dirname(path),
        )
        return RunLock(path, None, holder)
    _HELD_HERE.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.to_text().encode("utf-8"), 0)
        os.fsync(fd)  # on NFS: visible to a refused launch on another node
    except OSError as err:  # the lock is what counts; its description is a courtesy
        logger.warning("could not write the holder into %s: %s", path, err)
    return RunLock(path, fd, holder)


def _holder_of_held_lock(path: str) -> Optional[LockHolder]:
    deadline = time.monotonic() + _HOLDER_WRITE_WAIT_S
    while True:
        holder = read_holder(path)
        if holder is not None or time.monotonic() > deadline:
            return holder
        time.sleep(0.05)


def _close_in_fork_child() -> None:
    """A forked child drops its copies of the lock descriptors, so the lock dies with its taker."""
    for fd in list(_HELD_HERE):
        try:
            os.close(fd)  # never LOCK_UN: that would unlock the parent's lock as well
        except OSError:
            pass
    _HELD_HERE.clear()


os.register_at_fork(after_in_child=_close_in_fork_child)
