"""Deterministic crash points for the crash-safety tests: `PROSOCIAL_FAULT=<point>` SIGKILLs the process there.

Why a hook instead of killing from outside at a random moment: the tests must prove that a crash at *each*
interesting moment (between stages, just before and just after the rename of a version, between publishing
and committing the state) is repaired by the next run, and a timer cannot hit those moments reliably. The
hook is one environment lookup per point and does nothing unless the variable names that point.

Points (in run order): after_lock, after_curate, after_dedup, after_mix, after_synthesize,
publish_before_rename, publish_after_rename, publish_after_flip, after_publish, commit_after_shards,
commit_during_index_merge (a bucket's files merged, the files it replaces not yet removed), commit_after_index,
commit_during_shard_fold (kept-shard batches being folded into one, see shard_compaction.py),
commit_after_state. Several can be given, comma-separated; the first one reached fires.
`PROSOCIAL_PAUSE=<point>:<seconds>` sleeps there instead (the lock test holds the lock long enough that a
second refresh surely finds it taken).
"""

from __future__ import annotations

import os
import signal
import sys
import time

FAULT_ENV = "PROSOCIAL_FAULT"
PAUSE_ENV = "PROSOCIAL_PAUSE"
POINTS = (
    "after_lock",
    "after_curate",
    "after_dedup",
    "after_mix",
    "after_synthesize",
    "publish_before_rename",
    "publish_after_rename",
    "publish_after_flip",
    "after_publish",
    "commit_after_shards",
    "commit_during_index_merge",
    "commit_after_index",
    "commit_during_shard_fold",
    "commit_after_state",
)


def fault_point(name: str) -> None:
    """SIGKILL this process when `PROSOCIAL_FAULT` names `name` (test-only; a no-op otherwise)."""
    pause = os.environ.get(PAUSE_ENV, "")
    if pause.startswith(f"{name}:"):
        time.sleep(float(pause.split(":", 1)[1]))
    wanted = os.environ.get(FAULT_ENV)
    if not wanted or name not in wanted.split(","):
        return
    print(f"{FAULT_ENV}: killing pid {os.getpid()} at {name}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
