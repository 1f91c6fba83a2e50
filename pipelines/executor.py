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
  times), while an application error fails its rank at once (`retries=0`) and is reported with its log path.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle
from datatrove.executor.base import DistributedEnvVars, PipelineExecutor
from datatrove.io import DataFolderLike
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger
from datatrove.utils.stats import PipelineStats
from tqdm.auto import tqdm

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
    return stats.to_json() if isinstance(stats, PipelineStats) else "[]"


def _slots(client: Client, resources: dict[str, float] | None = None) -> int:
    """Ranks to keep in flight: one per worker thread the cluster has now (read again at every refill, so a
    cluster that grows, like SLURM jobs starting, gets more), counting only the ranks each worker's Dask
    resources can hold at once when the ranks request some (`{"GPU": 1}`: one per GPU, not per CPU thread).

    Why not submit every rank: ranks beyond the free threads wait in a worker's queue, and when that worker
    dies (OOM, SIGKILL) Dask charges them with the death too: a rank that never started came back as
    KilledWorker and was reported failed, with a log that does not exist. Dask queues resource-restricted
    tasks on the workers, not on the scheduler, so counting CPU threads for GPU ranks would do exactly that.
    """
    try:
        workers = client.scheduler_info()["workers"].values()
    except Exception:  # scheduler unreachable: the submit that follows will say so
        return 1
    total = 0
    for worker in workers:
        fits = int(worker.get("nthreads", 1))
        for name, amount in (resources or {}).items():
            if amount > 0:
                fits = min(fits, int(float((worker.get("resources") or {}).get(name, 0)) // amount))
        total += fits
    return max(1, total)


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
        pending = list(ranks)
        in_flight = {}

        from distributed import as_completed

        def submit(rank: int):
            return client.submit(
                _run_rank_payload,
                payload,
                rank,
                key=f"{self.name}-rank{rank:05d}-{token}",
                pure=False,
                retries=0,
                resources=self.resources or None,
            )

        bar = tqdm(
            total=self.world_size,
            initial=skipped,
            desc=f"{self.name} ranks",
            unit="rank",
            disable=not self.progress,
            dynamic_ncols=True,
        )

        slots, counted_at = 1, float("-inf")

        def fill() -> None:
            nonlocal slots, counted_at
            # the worker list is one scheduler round trip: read it every 5 s, not after every rank
            if time.monotonic() - counted_at > 5:
                slots, counted_at = _slots(client, self.resources), time.monotonic()
            while pending and len(in_flight) < min(self.workers, slots):
                rank = pending.pop(0)
                future = submit(rank)
                in_flight[future.key] = rank
                queue.add(future)

        try:
            queue = as_completed()
            fill()
            for future in queue:
                rank = in_flight.pop(future.key)
                if future.status != "finished":
                    # "cancelled" counts too: a client that loses its scheduler cancels every future
                    if future.status == "error":
                        error = future.exception()
                        failures[rank] = f"{type(error).__name__}: {error}"
                    else:
                        failures[rank] = f"task {future.status} before it finished"
                    logger.error(
                        f"{self.name}: rank {rank} failed ({failures[rank]}); "
                        f"log: {self.logging_dir.path}/logs/task_{rank:05d}.log"
                    )
                    if self.fail_fast:
                        pending.clear()
                        client.cancel([f for f in queue.futures if f.key != future.key])
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
