"""DaskPipelineExecutor: datatrove pipelines on a Dask cluster, one rank per Dask task.

datatrove ships Local, SLURM and Ray executors but none for Dask. This one keeps datatrove's contract so
that everything built on it (completions, resumability, per-rank stats and logs) behaves as users of the
other executors expect:

* each rank runs on a freshly deserialised copy of the executor, so per-rank state (stats, open writers,
  loaded models) never leaks from one rank into the next even when a worker process runs many ranks;
* the logging dir has datatrove's layout (`completions/`, `logs/`, `stats/`, `stats.json`, `executor.json`);
* completed ranks are skipped on rerun, and `stats.json` merges every rank, including those completed by an
  earlier invocation;
* a task lost with a dead worker is rescheduled by Dask itself (up to `distributed.scheduler.allowed-failures`
  times), while an application error fails its rank at once (`retries=0`) and is reported with its log path;
* a stage never waits forever: losing the scheduler, a cluster with no worker, or workers all paused by their
  memory limit raise `ClusterLost` with one clear line (see `_ClusterWatch`);
* a rank that returned but whose completion marker the client cannot see is reported as such: the logging dir
  is not on a filesystem shared by the client and the workers.
"""

from __future__ import annotations

import contextlib
import json
import queue
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import cloudpickle
from datatrove.executor.base import DistributedEnvVars, PipelineExecutor
from datatrove.io import DataFolderLike
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger
from datatrove.utils.stats import PipelineStats
from tqdm.auto import tqdm

from pipelines.cluster import (
    NO_WORKERS_TIMEOUT_KEY,
    PAUSED_TIMEOUT_KEY,
    ClusterLost,
    scheduler_address,
    scheduler_lost,
)

if TYPE_CHECKING:
    from distributed import Client


class RankFailed(RuntimeError):
    """One or more ranks raised an application error; the message names each rank and its log file."""

    def __init__(self, name: str, failures: dict[int, str], logging_dir: str):
        self.failures = failures
        lines = [
            f"  rank {rank}: {error}  (log: {logging_dir}/logs/task_{rank:05d}.log)"
            for rank, error in sorted(failures.items())
        ]
        super().__init__(f"{name}: {len(failures)} rank(s) failed:\n" + "\n".join(lines))


_TASK_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | <level>{level: <8}</level> | {name}:{function}:{line} - <level>{message}</level>"


def _task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1) -> Any:
    """datatrove's `add_task_logger` without loguru's variable dumps. With them, a failing rank printed every
    local variable of every frame (document texts included: a strict run's bad line came with 250 lines) to the
    worker's stderr and its task log. Now stderr gets the error's one line and `logs/task_NNNNN.log` the plain
    traceback."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    prefix = f"[NODE {node_rank}] " if node_rank != -1 else ""
    logger.add(
        sys.stderr,
        level="INFO" if local_rank == 0 else "ERROR",
        format=lambda _record: prefix + _TASK_FORMAT + "\n",  # a callable format: no traceback appended
        backtrace=False,
        diagnose=False,
    )
    logger.add(logfile, level="DEBUG", format=prefix + _TASK_FORMAT, backtrace=False, diagnose=False)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def _run_rank_payload(payload: bytes, rank: int) -> str:
    """Runs inside a Dask worker: unpickle a private copy of the executor and run one rank."""
    import datatrove.executor.base

    datatrove.executor.base.add_task_logger = _task_logger  # what `_run_for_rank` calls (see _task_logger)
    executor: DaskPipelineExecutor = cloudpickle.loads(payload)
    # datatrove prints a rank's INFO log to the console only for local_rank 0 (the argument has no other use);
    # every rank's full log is in logs/task_NNNNN.log either way
    stats = executor._run_for_rank(rank, local_rank=0 if executor.console_logs else 1)
    return json.dumps(
        {"worker": _worker_name(), "stats": stats.to_json() if isinstance(stats, PipelineStats) else "[]"}
    )


def _worker_name() -> str:
    """`name (address) on host`: which worker ran a rank, for the message when its output is not visible."""
    import socket

    try:
        from distributed import get_worker

        worker = get_worker()
        name = f"{worker.name} ({worker.address})" if str(worker.name) != worker.address else worker.address
    except ValueError:  # not in a worker (tests calling the payload directly)
        name = "a non-Dask process"
    return f"{name} on host {socket.gethostname()}"


def _count_slots(workers: Iterable[dict[str, Any]], resources: dict[str, float] | None) -> int:
    """Ranks to keep in flight: one per thread of the workers the cluster has now (read again at every refill, so
    a cluster that grows, like SLURM jobs starting, gets more), counting only the ranks each worker's Dask
    resources can hold at once when the ranks request some (`{"GPU": 1}`: one per GPU, not per CPU thread).
    0 when no worker can run them (none, or none with the resources).

    Why not submit every rank: ranks beyond the free threads wait in a worker's queue, and when that worker
    dies (OOM, SIGKILL) Dask charges them with the death too: a rank that never started came back as
    KilledWorker and was reported failed, with a log that does not exist. Dask queues resource-restricted
    tasks on the workers, not on the scheduler, so counting CPU threads for GPU ranks would do exactly that.
    """
    total = 0
    for worker in workers:
        fits = int(worker.get("nthreads", 1))
        for name, amount in (resources or {}).items():
            if amount > 0:
                fits = min(fits, int(float((worker.get("resources") or {}).get(name, 0)) // amount))
        total += fits
    return total


_POLL_SECONDS = 1.0  # how often a stage with nothing ending rechecks that its cluster can still run ranks
_COUNT_SECONDS = 5.0  # how often it reads the worker list (one scheduler round trip)


class _ClusterWatch:
    """What a stage waiting on its ranks checks, so that it never waits forever with no word.

    Dask itself waits: for a scheduler that will never come back (the client gives up reconnecting and silently
    drops what was submitted meanwhile), for workers when there are none, and for paused workers (memory above
    Dask's pause threshold) to unpause. Each of these left `corpus run` at `N/M ranks` for good, holding the
    run lock, so every later nightly refresh exited 75 ("another run holds the lock").
    """

    def __init__(self, client: Client, name: str, resources: dict[str, float] | None):
        import dask

        self.client = client
        self.name = name
        self.resources = resources
        self.no_workers_timeout = float(dask.config.get(NO_WORKERS_TIMEOUT_KEY, 300.0))
        self.paused_timeout = float(dask.config.get(PAUSED_TIMEOUT_KEY, 900.0))
        self.address = scheduler_address(client)
        self._slots = 1
        self._capable = 1
        self._counted_at = float("-inf")
        self._workers: list[dict[str, Any]] | None = None
        self._no_workers_since: float | None = None
        self._paused_since: float | None = None
        self._warned_paused = False

    def lost(self) -> ClusterLost:
        return scheduler_lost(self.client, self.name, self.address, ": ranks that completed are kept")

    def scheduler_gone(self, future: Any) -> bool:
        """A future cancelled by the client itself because its scheduler connection was lost."""
        exception = getattr(getattr(future, "_state", None), "exception", None)
        return (
            getattr(exception, "reason", None) == "scheduler-connection-lost"
            or self.client.status != "running"
        )

    def progressed(self) -> None:
        self._paused_since, self._warned_paused = None, False

    def slots(self) -> int:
        self._read()
        return self._slots

    def _read(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._counted_at <= _COUNT_SECONDS:
            return
        self._counted_at = now
        try:
            workers = list(self.client.scheduler_info(n_workers=-1)["workers"].values())
        except Exception:  # unreachable now: check() decides from the client's status
            self._workers = None
            return
        self._workers = workers
        self._capable = _count_slots(workers, self.resources)
        self._slots = max(1, self._capable)

    def check(self, waiting: int) -> None:
        """Raise ClusterLost when the scheduler is gone, or no worker could run the `waiting` ranks for too long."""
        if self.client.status in ("closing", "closed", "failed"):
            raise self.lost()
        if self.client.status != "running":  # reconnecting: the client gives up after its connect timeout
            return
        self._read()
        if self._workers is None:
            return
        now = time.monotonic()
        if not self._workers or not self._capable:
            # none at all, or none with the resources the ranks request (GPU workers gone, CPU workers up)
            self._no_workers_since = self._no_workers_since or now
            if now - self._no_workers_since > self.no_workers_timeout:
                which = "no worker" if not self._workers else f"no worker with the resources {self.resources}"
                raise ClusterLost(
                    f"{self.name}: the Dask cluster at {self.address} has had {which} for "
                    f"{self.no_workers_timeout:g} s with {waiting} rank(s) waiting: start workers, or read the "
                    "worker logs for why they died (cluster.worker_timeout sets this wait)"
                )
        else:
            self._no_workers_since = None
        idle_paused = bool(self._workers) and all(
            w.get("status") == "paused"
            and not (w.get("metrics") or {}).get("task_counts", {}).get("executing")
            for w in self._workers
        )
        if not idle_paused:
            self._paused_since, self._warned_paused = None, False
            return
        self._paused_since = self._paused_since or now
        paused_for = now - self._paused_since
        limits = sorted({_format_bytes(w.get("memory_limit")) for w in self._workers})
        why = (
            f"every worker of {self.address} is paused by Dask's memory monitor (process memory above "
            f"distributed.worker.memory.pause, by default 80% of its memory limit: {', '.join(limits)}) and runs "
            "nothing"
        )
        advice = "give each worker more memory (`dask worker --memory-limit`; README, Running on a cluster)"
        if paused_for > self.paused_timeout:
            raise ClusterLost(
                f"{self.name}: {why} since {self.paused_timeout:g} s with {waiting} rank(s) waiting: {advice} "
                "(cluster.paused_timeout sets this wait)"
            )
        if paused_for > self.paused_timeout / 10 and not self._warned_paused:
            self._warned_paused = True
            logger.warning(
                f"{self.name}: {why}; {waiting} rank(s) cannot start: {advice}. The stage fails after "
                f"cluster.paused_timeout={self.paused_timeout:g} s"
            )


def _format_bytes(value: Any) -> str:
    from dask.utils import format_bytes

    try:
        return format_bytes(int(value)) if value else "none"
    except (TypeError, ValueError):
        return str(value)


class DaskPipelineExecutor(PipelineExecutor):
    """Run a datatrove pipeline with one Dask task per rank.

    Args:
        pipeline: datatrove steps and/or callables `(data, rank, world_size) -> data`.
        tasks: number of ranks (the world size seen by readers that shard their inputs).
        workers: at most this many ranks in flight at once; -1 means no limit beyond the cluster's slots.
        logging_dir: datatrove logging folder (any fsspec path shared by the client and the workers).
        depends: an executor whose ranks must all complete before this one starts; run first if needed.
        skip_completed: skip ranks that have a completion marker from an earlier run.
        client: a `distributed.Client`; when None, the current default client (`distributed.get_client`).
        resources: Dask resources each rank requests, e.g. `{"GPU": 1}` for GPU stages.
        name: shown in the progress bar and in the summary line.
        progress: show a progress bar of ranks done out of total.
        fail_fast: on the first failed rank, cancel the ranks in flight and submit no more (strict runs).
        console_logs: also print each rank's INFO log on its worker's stderr. Off by default: with many ranks the
            interleaved pipeline banners bury the progress bar; errors still print, and `logs/` has everything.
        on_rank_done: called on the client as `on_rank_done(rank, finished_ok)` when each rank ends (a stage's own
            progress lines; never pickled to the workers).
    """

    def __init__(
        self,
        pipeline: list[PipelineStep | Callable],
        tasks: int = 1,
        workers: int = -1,
        logging_dir: DataFolderLike = None,
        depends: DaskPipelineExecutor | None = None,
        skip_completed: bool = True,
        randomize_start_duration: int = 0,
        client: Client | None = None,
        resources: dict[str, float] | None = None,
        name: str = "pipeline",
        progress: bool = True,
        fail_fast: bool = False,
        console_logs: bool = False,
        on_rank_done: Callable[[int, bool], None] | None = None,
    ):
        super().__init__(pipeline, logging_dir, skip_completed, randomize_start_duration)
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")
        self.tasks = tasks
        self.workers = workers if workers != -1 else tasks
        self.depends = depends
        self.resources = dict(resources or {})
        self.name = name
        self.progress = progress
        self.fail_fast = fail_fast
        self.console_logs = console_logs
        self.on_rank_done = on_rank_done
        self._client = client
        self._launched = False

    # -- datatrove's abstract interface -------------------------------------------------------------------
    @property
    def world_size(self) -> int:
        return self.tasks

    def get_distributed_env(self, node_rank: int = -1) -> DistributedEnvVars:
        return DistributedEnvVars(
            datatrove_node_ips="localhost",
            datatrove_cpus_per_task="1",
            datatrove_mem_per_cpu="-1",
            datatrove_gpus_on_node=str(int(self.resources.get("GPU", 0))),
            datatrove_executor="DASK",
        )

    # -- pickling: the client and the parent job stay on the submitting side ------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None
        state["depends"] = None
        state["on_rank_done"] = None
        return state

    def to_json(self, indent: int = 4) -> str:  # datatrove's version mutates self.__dict__
        return json.dumps(self._describe(), indent=indent, default=str)

    def _describe(self) -> dict[str, Any]:
        return {
            "executor": type(self).__name__,
            "name": self.name,
            "tasks": self.tasks,
            "workers": self.workers,
            "world_size": self.world_size,
            "skip_completed": self.skip_completed,
            "resources": self.resources,
            "logging_dir": str(self.logging_dir.path),
            "depends": str(self.depends.logging_dir.path) if self.depends else None,
            "pipeline": [
                {"step": str(step), **{k: v for k, v in vars(step).items() if k != "stats"}}
                if isinstance(step, PipelineStep)
                else {"step": getattr(step, "__name__", repr(step))}
                for step in self.pipeline
            ],
        }

    def save_executor_as_json(self, indent: int = 4) -> None:
        with self.logging_dir.open("executor.json", "w") as f:
            f.write(self.to_json(indent=indent))

    # -- running ------------------------------------------------------------------------------------------
    def _get_client(self) -> Client:
        if self._client is None:
            from distributed import get_client

            self._client = get_client()
        return self._client

    def run(self) -> PipelineStats:
        """Run every incomplete rank; return the merged stats of all ranks (this run and earlier ones)."""
        if self.depends is not None:
            if self.depends._client is None:
                self.depends._client = self._client
            if not self.depends._launched:
                logger.info(f"{self.name}: running dependency {self.depends.name} first")
                self.depends.run()
            incomplete = self.depends.get_incomplete_ranks(skip_completed=True)
            if incomplete:
                raise RuntimeError(
                    f"{self.name}: dependency {self.depends.name} left {len(incomplete)} incomplete rank(s): "
                    f"{incomplete[:10]}"
                )
        self._launched = True
        start = time.perf_counter()
        ranks = self.get_incomplete_ranks()
        skipped = self.world_size - len(ranks)
        if not ranks:
            stats = self.merge_stats()
            logger.info(f"{self.name}: all {self.world_size} ranks already complete; nothing to run")
            self._summary(start, ran=0, skipped=skipped, failed=0)
            return stats

        self.save_executor_as_json()
        client = self._get_client()
        payload = cloudpickle.dumps(self)
        token = uuid.uuid4().hex[:8]
        failures: dict[int, str] = {}
        finished_on: dict[int, str] = {}  # ranks whose task returned: the worker that ran each
        pending = list(ranks)
        in_flight: dict[str, int] = {}
        futures: dict[str, Any] = {}
        done: queue.Queue = queue.Queue()  # futures as they end, put there by their done callbacks
        watch = _ClusterWatch(client, self.name, self.resources)

        from distributed import CancelledError
        from distributed.client import ClosedClientError
        from distributed.comm import CommClosedError

        def submit(rank: int) -> None:
            # a client that lost its scheduler buffers a submit while it reconnects and drops it when it gives
            # up: that rank's future never ended and the run waited forever
            if client.status != "running":
                raise watch.lost()
            try:
                future = client.submit(
                    _run_rank_payload,
                    payload,
                    rank,
                    key=f"{self.name}-rank{rank:05d}-{token}",
                    pure=False,
                    retries=0,
                    resources=self.resources or None,
                )
            except (ClosedClientError, CommClosedError, CancelledError):
                raise watch.lost() from None
            in_flight[future.key] = rank
            futures[future.key] = future
            future.add_done_callback(done.put)

        bar = tqdm(
            total=self.world_size,
            initial=skipped,
            desc=f"{self.name} ranks",
            unit="rank",
            disable=not self.progress,
            dynamic_ncols=True,
        )

        def fill() -> None:
            slots = watch.slots()
            while pending and len(in_flight) < min(self.workers, slots):
                submit(pending.pop(0))

        cancelling = False
        try:
            fill()
            while in_flight:
                try:
                    future = done.get(timeout=_POLL_SECONDS)
                except queue.Empty:
                    # nothing ended: is anything still able to? (raises ClusterLost when not)
                    watch.check(waiting=len(pending) + len(in_flight))
                    fill()
                    continue
                if future.key not in in_flight:
                    continue
                rank = in_flight.pop(future.key)
                futures.pop(future.key, None)
                watch.progressed()
                if future.status == "finished":
                    with contextlib.suppress(Exception):
                        finished_on[rank] = json.loads(future.result(timeout=5))["worker"]
                else:
                    if future.status == "cancelled" and not cancelling and watch.scheduler_gone(future):
                        # the client lost its scheduler and cancelled every future: not this rank's fault
                        raise watch.lost()
                    # "cancelled" counts too: fail_fast cancels the ranks in flight
                    if future.status == "error":
                        error = future.exception()
                        failures[rank] = f"{type(error).__name__}: {error}"
                    else:
                        failures[rank] = f"task {future.status} before it finished"
                    logger.error(
                        f"{self.name}: rank {rank} failed ({failures[rank]}); "
                        f"log: {self.logging_dir.path}/logs/task_{rank:05d}.log"
                    )
                    if self.fail_fast and not cancelling:
                        pending.clear()
                        cancelling = True
                        with contextlib.suppress(Exception):
                            client.cancel(list(futures.values()))
                bar.update(1)
                bar.set_postfix(failed=len(failures)) if failures else None
                if self.on_rank_done is not None:
                    self.on_rank_done(rank, rank not in failures)
                future.release()
                fill()
        finally:
            bar.close()
        stats = self.merge_stats()
        for rank in self.get_incomplete_ranks(skip_completed=True):
            if rank in finished_on:
                # the rank ran to its end on a worker, but the marker it wrote is not where this client looks
                failures.setdefault(
                    rank,
                    f"finished on worker {finished_on[rank]} but its output is not visible at "
                    f"{self.logging_dir.path}/completions/{rank:05d}: OUT (and the work folder) must be on a "
                    "filesystem shared by the client and every worker",
                )
            # never run (fail_fast stopped the stage) or returned without marking itself complete
            failures.setdefault(rank, "not complete: not run, or returned without its completion marker")
        self._summary(start, ran=len(ranks) - len(failures), skipped=skipped, failed=len(failures))
        if failures:
            raise RankFailed(self.name, failures, str(self.logging_dir.path))
        return stats

    def merge_stats(self) -> PipelineStats:
        """Merge `stats/*.json` of every completed rank into `stats.json`, as datatrove's executors do."""
        total = PipelineStats()
        for rank in range(self.world_size):
            path = f"stats/{rank:05d}.json"
            if self.logging_dir.isfile(path):
                try:
                    with self.logging_dir.open(path, "r") as f:
                        total += PipelineStats.from_json(json.load(f))
                except (ValueError, KeyError, TypeError) as exc:
                    # datatrove writes it without fsync or rename, so a power cut can leave it torn after the
                    # rank's output is complete. The output is what counts: rerunning the rank could undo
                    # what later steps did to it (finalize's cross-rank dedup), and failing here would block
                    # the stage on every rerun. So its counts are left out, loudly.
                    logger.warning(
                        f"{self.name}: {self.logging_dir.path}/{path} is unreadable ({type(exc).__name__}: "
                        f"{exc}); rank {rank}'s counts are missing from stats.json (its output is complete)"
                    )
        with self.logging_dir.open("stats.json", "wt") as f:
            total.save_to_disk(f)
        return total

    def _summary(self, start: float, ran: int, skipped: int, failed: int) -> None:
        elapsed = time.perf_counter() - start
        done = self.world_size - len(self.get_incomplete_ranks(skip_completed=True))
        logger.log(
            "SUCCESS" if not failed else "ERROR",
            f"{self.name}: {done}/{self.world_size} ranks complete "
            f"({ran} ran, {skipped} skipped as already complete, {failed} failed) in {elapsed:.1f}s; "
            f"stats: {self.logging_dir.path}/stats.json",
        )
