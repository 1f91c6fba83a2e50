"""Losing the scheduler during the mix's own Dask calls (outside DaskPipelineExecutor) fails with one ClusterLost
line naming the scheduler, not a traceback of `FutureCancelledError ... cancelled for reason: ...`.

Real `dask scheduler` / `dask worker` processes on 127.0.0.1 (helpers in test_external_cluster.py), killed
with SIGKILL. (The dedup stage makes no Dask calls of its own: it runs every step through the executor.)
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_external_cluster import start_scheduler, start_worker, stop

import pipelines.mix.stage as mix_stage
from classifiers.profiles import Profile, Tier
from pipelines.cluster import ClusterConfig, ClusterLost, ClusterUnreachable, connect
from pipelines.mix.sample_data import DIMENSIONS, make_scored_table, write_scored
from pipelines.mix.settings import MixConfig

# Worker preload: each stats task holds its worker for a while, so that the scheduler dies while the driver
# waits in `client.compute(...).result()`.
SLOW_STATS = """
import functools
import time

import pipelines.mix.copies as copies

_stats = copies.partition_stats


@functools.wraps(_stats)
def partition_stats(*args, **kwargs):
    time.sleep(3.0)
    return _stats(*args, **kwargs)


copies.partition_stats = partition_stats
"""

PROFILE = Profile(
    name="p",
    weights={d: 1.0 for d in DIMENSIONS},
    tiers=[Tier(name="hi", min_score=0.5, factor=2.0), Tier(name="lo", min_score=0.0, factor=1.0)],
)


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    stop(started)


def _scored(tmp_path: Path) -> Path:
    write_scored(tmp_path / "in", make_scored_table(200, seed=1, min_words=5, max_words=12), files=2)
    return tmp_path / "in"


@pytest.mark.timeout(60)
def test_losing_the_scheduler_while_the_mix_waits_on_it_fails_naming_it(tmp_path, procs):
    """The driver raised promptly, but as a raw FutureCancelledError traceback naming a task key."""
    preload = tmp_path / "slow_stats.py"
    preload.write_text(SLOW_STATS)
    address = start_scheduler(tmp_path, procs)
    start_worker(address, "w1", tmp_path, procs, args=("--preload", str(preload)))
    inputs = _scored(tmp_path)
    with connect(ClusterConfig(kind="address", address=address, connect_timeout=3)) as client:
        killer = threading.Timer(1.5, procs[0].kill)  # while the first stats task sleeps
        killer.start()
        started = time.monotonic()
        with pytest.raises(
            ClusterLost, match=f"^mix: lost the Dask scheduler at {re.escape(address)} "
        ) as info:
            mix_stage.mix_scored(inputs, tmp_path / "staging", [PROFILE], MixConfig(), client)
        killer.join()
        # promptly, not at the test timeout (a loaded CI machine is slow)
        assert time.monotonic() - started < 30
    assert "\n" not in str(info.value)
    assert "scheduler-connection-lost" in str(info.value.__cause__)  # what Dask said, kept as the cause
    assert issubclass(ClusterLost, ClusterUnreachable)  # the CLI prints these as one line, exit 1
    assert not (tmp_path / "staging" / "mixture.json").exists()


@pytest.mark.timeout(60)
def test_losing_the_scheduler_between_the_mix_passes_fails_naming_it(tmp_path, procs, monkeypatch):
    """Tasks submitted while the client reconnects were cancelled with `reason: unknown` once it gave up."""
    address = start_scheduler(tmp_path, procs)
    start_worker(address, "w1", tmp_path, procs)
    inputs = _scored(tmp_path)
    materialise = mix_stage.materialise
    clients = []

    def scheduler_dies_first(*args, **kwargs):
        """Waits until the client has given up reconnecting and closed itself: a closed client no longer knows
        its scheduler's address, and the message read "lost the Dask scheduler at the Dask scheduler" (seen in
        CI, where the machine was slow enough for the client to close first)."""
        procs[0].kill()
        procs[0].wait()
        deadline = time.monotonic() + 15
        while clients[0].status != "closed" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert clients[0].status == "closed"
        return materialise(*args, **kwargs)

    monkeypatch.setattr(mix_stage, "materialise", scheduler_dies_first)
    with connect(ClusterConfig(kind="address", address=address, connect_timeout=3)) as client:
        clients.append(client)
        started = time.monotonic()
        with pytest.raises(ClusterLost, match=f"^mix: lost the Dask scheduler at {re.escape(address)} "):
            mix_stage.mix_scored(inputs, tmp_path / "staging", [PROFILE], MixConfig(), client)
        assert time.monotonic() - started < 30
    assert not list((tmp_path / "staging").glob("*pretrain*"))  # no half-written mixture folder
