"""One writer per output root: a lock file created with O_EXCL, naming its holder.

Nightly refreshes are started by cron, systemd or an orchestrator, and two of them overlapping (a slow night,
a manual run) must not interleave their publishes. The lock records host, pid and start time so the second
process can say who holds it; a lock left by a dead process on this host is taken over (and logged), since
nothing else would ever remove it. Locks from other hosts are never broken automatically.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from datatrove.utils.logging import logger


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`with RunLock(OUT / "state" / "run.lock", "refresh"):` - raises LockHeld if someone else has it."""

    def __init__(self, path: Path, purpose: str):
        self.path = Path(path)
        self.purpose = purpose
        self.acquired = False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, OSError):
            return {"host": "?", "pid": -1, "purpose": "?", "started": "?", "unreadable": True}

    def _try_create(self) -> bool:
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "purpose": self.purpose,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if self._try_create():
                self.acquired = True
                return
            holder = self._holder()
            if holder is None:
                continue  # released between our attempt and the read
            same_host = holder.get("host") == socket.gethostname()
            pid = int(holder.get("pid", -1))
            if same_host and pid > 0 and not _pid_alive(pid):
                logger.warning(
                    f"taking over stale lock {self.path} from dead process {pid} "
                    f"({holder.get('purpose')} started {holder.get('started')})"
                )
                # rename-then-remove so two contenders cannot both delete and recreate it
                stale = self.path.with_name(f"{self.path.name}.stale-{os.getpid()}")
                try:
                    os.rename(self.path, stale)
                    stale.unlink()
                except FileNotFoundError:
                    pass
                continue
            raise LockHeld(
                f"{self.path} is held by {holder.get('purpose', '?')} (pid {pid} on {holder.get('host')}, "
                f"started {holder.get('started')}); wait for it to finish, or remove the file if that "
                "process is gone"
            )
        raise LockHeld(f"{self.path}: could not acquire the lock after 3 attempts")

    def release(self) -> None:
        if self.acquired:
            holder = self._holder()
            if holder and holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.acquired = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
