"""One writer per output root: an exclusive `flock` on OUT/state/run.lock, whose content names the holder.

Nightly refreshes are started by cron, systemd or an orchestrator, and two of them overlapping (a slow night,
a manual run) must not interleave their publishes. Why `flock` and not a file created with O_EXCL: the kernel
drops the lock when its holder dies, however it dies, so there is no stale lock to detect. Guessing staleness
from a pid in the file failed in two ways: two contenders could both "take over" the same dead holder, and a
file left empty (killed between create and write) or naming a reused pid blocked every later run for good.

The file's content (host, pid, purpose, start time) is only for the message the second process prints. A
file left by a killed run is taken over (and logged). On NFS, `flock` is served by the NFS lock manager on
Linux, so holders on other hosts are respected and a crashed host's lock expires with its lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from datatrove.utils.logging import logger

# Descriptors of locks this process holds. A forked child (vLLM and Dask start helpers) would otherwise share
# the lock and keep it alive after this process dies; the child closes its copies, which releases nothing.
_HELD: set[int] = set()


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_in_child)


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


class LockUnsupported(RuntimeError):
    """The filesystem of OUT cannot lock files; not a busy lock, so callers must not treat it as one (a nightly
    job that exits "try again later" every night would never run and never alert)."""


class RunLock:
    """`with RunLock(OUT / "state" / "run.lock", "refresh"):` - raises LockHeld if someone else has it,
    LockUnsupported if the filesystem cannot lock."""

    def __init__(self, path: Path, purpose: str):
        self.path = Path(path)
        self.purpose = purpose
        self.acquired = False
        self._fd: int | None = None

    @staticmethod
    def _read(fd: int) -> dict | None:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 65536)
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return {"unreadable": True}

    def _holder(self) -> dict:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return {}
        try:
            return self._read(fd) or {}
        finally:
            os.close(fd)

    def _open_locked(self) -> int | None:
        """A descriptor of the file at `path`, exclusively locked; None when another process holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as exc:
            os.close(fd)
            raise LockUnsupported(
                f"{self.path}: this filesystem does not support file locks ({exc.strerror}); "
                "put OUT on a local or NFS filesystem"
            ) from exc
        return fd

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            fd = self._open_locked()
            if fd is None:
                holder = self._holder()
                raise LockHeld(
                    f"{self.path} is held by {holder.get('purpose', '?')} (pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')}, started {holder.get('started', '?')}); wait for it to finish"
                )
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:  # the previous holder removed the file between our open and our lock
                os.close(fd)
                continue
            previous = self._read(fd)
            if previous:
                logger.warning(
                    f"taking over stale lock {self.path} from process {previous.get('pid', '?')} on "
                    f"{previous.get('host', '?')} ({previous.get('purpose', '?')} started "
                    f"{previous.get('started', '?')}): it ended without releasing it"
                )
            me = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "purpose": self.purpose,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
            os.fsync(fd)
            self._fd = fd
            _HELD.add(fd)
            self.acquired = True
            return
        raise LockHeld(f"{self.path}: could not acquire the lock after 5 attempts (it keeps changing)")

    def release(self) -> None:
        if self.acquired and self._fd is not None:
            # unlink while still holding the lock; a contender that opened the old file notices (inode check)
            self.path.unlink(missing_ok=True)
            _HELD.discard(self._fd)
            os.close(self._fd)
            self._fd = None
            self.acquired = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
