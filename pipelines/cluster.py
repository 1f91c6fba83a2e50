"""Connect to the Dask cluster a run uses: a LocalCluster, an existing scheduler, or SLURM via dask-jobqueue.

Every flavour is configured the way datatrove steps need it: one thread per worker process (a datatrove rank
is not thread-safe and holds models per process) and non-daemonic workers (extractors and vLLM start their
own subprocesses, which daemonic processes may not do).
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dask
from distributed.diagnostics.plugin import WorkerPlugin
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from distributed import Client

# Must be in the environment of every worker process, including `dask worker` processes started by hand or
# by SLURM, so we export it as well as setting it in this process's dask config.
WORKER_ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
HOST_DEVICES = "PROSOCIAL_HOST_CUDA_DEVICES"


class SlurmConfig(BaseModel):
    """Passed to `dask_jobqueue.SLURMCluster`; see its docs for the meaning of each key."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(None, description="SLURM partition (sbatch -p).")
    account: str | None = Field(None, description="SLURM account (sbatch -A).")
    cores: int = Field(
        8,
        ge=1,
        description="Cores per SLURM job; one single-threaded worker process each (GPU jobs: one per GPU).",
    )
    memory: str = Field("32GB", description="Memory per SLURM job, shared by its workers.")
    walltime: str = Field("24:00:00", description="Time limit per SLURM job.")
    jobs: int = Field(1, ge=1, description="SLURM jobs to start (scale).")
    start_timeout: int = Field(
        3600, ge=1, description="Seconds to wait for the first worker of the queued jobs."
    )
    gpus_per_job: int = Field(
        0,
        ge=0,
        description="GPUs per job; the job then runs one worker per GPU, pinned to it, advertising GPU=1.",
    )
    job_extra_directives: list[str] = Field(default_factory=list, description="Extra #SBATCH lines.")
    job_script_prologue: list[str] = Field(
        default_factory=list, description="e.g. ['source .venv/bin/activate']"
    )
    local_directory: str | None = Field(None, description="Node-local scratch folder for the workers.")


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    kind: Literal["local", "address", "slurm"] = Field("local", description="Where Dask workers come from.")
    n_workers: int = Field(2, ge=1, description="LocalCluster worker processes (one thread each).")
    memory_limit: str = Field("auto", description="Per-worker memory limit of the LocalCluster, e.g. '4GB'.")
    gpus_per_worker: int = Field(
        0, ge=0, description="LocalCluster: GPUs each worker advertises as resource GPU and is pinned to."
    )
    address: str | None = Field(
        None, description="Scheduler address for kind=address, e.g. tcp://10.0.0.5:8786."
    )
    connect_timeout: float = Field(
        30.0, gt=0, description="kind=address: seconds to wait for the scheduler to answer."
    )
    worker_timeout: float = Field(
        300.0,
        gt=0,
        description=(
            "kind=address: seconds to wait for the first worker; any kind: seconds ranks may wait while the "
            "cluster has no worker before the run fails (SLURM: at least slurm.start_timeout)."
        ),
    )
    paused_timeout: float = Field(
        900.0,
        gt=0,
        description=(
            "Seconds ranks may wait while every worker is paused by Dask's memory monitor and runs nothing "
            "before the run fails (a warning comes after a tenth of it)."
        ),
    )
    dashboard_address: str = Field("127.0.0.1:0", description="LocalCluster dashboard bind address.")
    local_directory: str | None = Field(None, description="Worker scratch folder (default: Dask's).")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        """Checked here, not when the cluster starts (after the run lock, as a traceback)."""
        from dask.utils import parse_bytes

        if value.strip().lower() != "auto":
            try:
                parse_bytes(value)
            except ValueError:
                raise ValueError(
                    f"expected 'auto' or a size such as '4GB' or '512MiB', got {value!r}"
                ) from None
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        """Checked here: a malformed address failed after the run lock, as a traceback from `Client`."""
        if value is None:
            return None
        from distributed.comm.addressing import get_address_host_port

        try:
            host, port = get_address_host_port(value.strip())
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"expected a Dask scheduler address such as tcp://10.0.0.5:8786, got {value!r} ({exc})"
            ) from None
        if not host or not port:
            raise ValueError(
                f"expected a Dask scheduler address with a host and a port such as tcp://10.0.0.5:8786, "
                f"got {value!r}"
            )
        return value.strip()

    @model_validator(mode="after")
    def _address_given(self) -> ClusterConfig:
        # on the section, not the whole config: the error then names `cluster` and blames where it was set
        if self.kind == "address" and not self.address:
            raise ValueError("kind=address needs cluster.address (e.g. tcp://10.0.0.5:8786)")
        return self


def configure_dask() -> None:
    """Dask settings every run needs, in this process and in the environment that workers inherit."""
    os.environ.update(WORKER_ENV)
    # a scheduler started here (LocalCluster, SLURM) queues tasks it has no free thread for instead of
    # sending them to a worker, whose death would then take them down with it
    dask.config.set({"distributed.worker.daemon": False, "distributed.scheduler.worker-saturation": 1.0})


def _local_cluster(config: ClusterConfig):
    from distributed import LocalCluster

    resources = {"GPU": config.gpus_per_worker} if config.gpus_per_worker else None
    return LocalCluster(
        n_workers=config.n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=config.dashboard_address,
        memory_limit=config.memory_limit,
        resources=resources,
        local_directory=config.local_directory,
    )


def slurm_cluster(config: ClusterConfig, scale: bool = True):
    """A dask-jobqueue SLURMCluster; `scale=False` builds it without submitting jobs (to inspect the script)."""
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise RuntimeError(
            "cluster.kind=slurm needs dask-jobqueue: pip install -e '.[slurm]' -c requirements/constraints.txt"
        ) from exc
    s = config.slurm
    extra = list(s.job_extra_directives)
    worker_extra_args = []
    # one single-threaded worker per core; a GPU job runs one worker per GPU instead (each advertising GPU=1
    # and pinned to its device by PinGPUs), so that no two vLLM engines share a device
    workers = s.cores
    if s.gpus_per_job:
        extra.append(f"--gres=gpu:{s.gpus_per_job}")
        worker_extra_args += ["--resources", "GPU=1"]
        workers = s.gpus_per_job
    cluster = SLURMCluster(
        queue=s.queue,
        account=s.account,
        cores=workers,
        processes=workers,
        job_cpu=s.cores,  # the job still asks SLURM for every core (tokenisers, vLLM's CPU side)
        memory=s.memory,
        walltime=s.walltime,
        job_extra_directives=extra,
        job_script_prologue=[*(f"export {k}={v}" for k, v in WORKER_ENV.items()), *s.job_script_prologue],
        worker_extra_args=worker_extra_args,
        local_directory=s.local_directory,
    )
    if scale:
        cluster.scale(jobs=s.jobs)
    return cluster


def gpus_to_pin(config: ClusterConfig) -> int:
    """GPUs each worker is pinned to by PinGPUs, 0 for none.

    A SLURM job with one GPU runs one worker, named SLURMCluster-<job> (no index), and SLURM already shows it
    only that GPU: nothing to pin (reading the job number as a device index failed). A job with N GPUs runs N
    workers named SLURMCluster-<job>-<i>, one GPU each.
    """
    if config.kind == "local":
        return config.gpus_per_worker
    if config.kind == "slurm":
        return int(config.slurm.gpus_per_job > 1)
    return 0


class ClusterUnreachable(RuntimeError):
    """`cluster.kind=address` names a scheduler that does not answer."""


class ClusterMisconfigured(ClusterUnreachable):
    """The cluster's workers cannot run the project: none joined, the project is missing or elsewhere on them,
    or they are daemonic processes. Raised before any stage runs; the message names the worker and the fix."""


class ClusterLost(ClusterUnreachable):
    """The cluster went away or stalled while a stage ran: the scheduler was lost, it has had no worker, or
    every worker stayed paused by its memory limit. A rerun resumes (completed ranks are kept)."""


# Each client's scheduler address, as last read while it was connected.
_ADDRESSES: weakref.WeakKeyDictionary[Client, str] = weakref.WeakKeyDictionary()


def scheduler_address(client: Client) -> str:
    """The address a lost-scheduler message names.

    Why remembered: a client that gave up reconnecting has closed itself and no longer knows its address, so a
    stage that began its next Dask call after that said "lost the Dask scheduler at the Dask scheduler" (seen in
    CI, when the machine was slow enough for the client to close between two of the mix's passes).
    """
    live = getattr(client.scheduler, "address", None)
    if live:
        _ADDRESSES[client] = str(live)
    return _ADDRESSES.get(client, "the Dask scheduler")


def scheduler_lost(client: Client, what: str, address: str, note: str = "") -> ClusterLost:
    """The one-line error of a stage whose client lost its scheduler (the executor's and the direct calls').

    `address` is `scheduler_address`, read before the stage waited.
    """
    return ClusterLost(
        f"{what}: lost the Dask scheduler at {address} (client {client.status}); rerun when it is back{note}"
    )


@contextlib.contextmanager
def scheduler_lost_as_cluster_lost(client: Client | None, what: str) -> Iterator[None]:
    """Around Dask calls made outside DaskPipelineExecutor (`client.compute(...).result()`, `client.gather`):
    an error that comes from losing the scheduler becomes one ClusterLost line naming its address.

    Why: when the scheduler died mid-mix, the client cancelled its futures and the run ended with a traceback
    of `FutureCancelledError: merge_stats-4f90... cancelled for reason: scheduler-connection-lost` (or
    `reason: unknown`, for futures submitted while the client was reconnecting), naming neither the cluster
    nor what to do. Errors raised while the client is still connected (a task's own OSError) pass unchanged.
    """
    if client is None:
        yield
        return
    from concurrent.futures import CancelledError

    from distributed.client import ClosedClientError

    address = scheduler_address(client)
    try:
        yield
    except (CancelledError, ClosedClientError, OSError) as exc:  # CommClosedError is an OSError
        lost = "scheduler-connection-lost" in str(exc) or client.status != "running"
        if not lost:
            raise
        raise scheduler_lost(client, what, address) from exc


# Read by DaskPipelineExecutor (which only sees the client): how long ranks may wait on a cluster that cannot
# run them. `connect` sets them from ClusterConfig for the duration of a run.
NO_WORKERS_TIMEOUT_KEY = "prosocial.no-workers-timeout"
PAUSED_TIMEOUT_KEY = "prosocial.paused-timeout"


def _watch_settings(config: ClusterConfig) -> dict[str, float]:
    no_workers = config.worker_timeout
    # SLURM jobs that end at their walltime may be requeued: give them as long as to start
    if config.kind == "slurm":
        no_workers = max(no_workers, float(config.slurm.start_timeout))
    return {NO_WORKERS_TIMEOUT_KEY: no_workers, PAUSED_TIMEOUT_KEY: config.paused_timeout}


@contextlib.contextmanager
def connect(config: ClusterConfig, shared: Path | None = None) -> Iterator[Client]:
    """Yield a `distributed.Client` for the configured cluster and tear down what we started.

    `shared`: OUT's work folder, which the workers of an external or SLURM cluster must see
    (`check_shared_folder`).
    """
    from distributed import Client

    configure_dask()
    with dask.config.set(_watch_settings(config)):
        if config.kind == "address":
            try:
                client = Client(config.address, timeout=config.connect_timeout)
            except OSError as exc:
                raise ClusterUnreachable(
                    f"cluster.address {config.address}: no Dask scheduler answered ({exc}); start one with "
                    "`dask scheduler` and its workers, or check the address"
                ) from None
            with client:
                _wait_for_workers(client, config)
                check_workers(client, config.address)
                if shared is not None:
                    check_shared_folder(client, shared, config.address)
                scheduler_address(client)  # remembered, for a message after the client closed itself
                yield client
            return
        cluster = _local_cluster(config) if config.kind == "local" else slurm_cluster(config)
        per_worker = gpus_to_pin(config)
        try:
            with Client(cluster) as client:
                if per_worker:
                    client.register_plugin(PinGPUs(per_worker))
                if config.kind == "slurm":
                    _wait_for_slurm(client, config.slurm)
                    check_workers(client, "the SLURM cluster")
                    if shared is not None:
                        check_shared_folder(client, shared, "the SLURM cluster")
                scheduler_address(client)  # remembered, for a message after the client closed itself
                yield client
        finally:
            cluster.close()


def _wait_for_workers(client: Client, config: ClusterConfig) -> None:
    """A scheduler with no worker accepted the ranks and the run waited at `0/N` with no word."""
    from datatrove.utils.logging import logger

    if client.scheduler_info(n_workers=-1)["workers"]:
        return
    logger.info(f"waiting up to {config.worker_timeout:g} s for a worker to join {config.address}")
    try:
        client.wait_for_workers(1, timeout=config.worker_timeout)
    except TimeoutError:
        raise ClusterMisconfigured(
            f"cluster.address {config.address}: no Dask worker joined the scheduler within "
            f"cluster.worker_timeout={config.worker_timeout:g} s; start workers with "
            f"`DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker {config.address} --nthreads 1`"
        ) from None


# The probe runs on every worker, where the project may be missing: it must not be pickled by reference to
# this module (unpickling would import it and fail before the probe could say so). Functions of a module that
# is not importable are pickled by value, hence the exec.
_PROBE_SOURCE = """
def probe():
    import multiprocessing
    import os
    import sys

    info = {"daemonic": bool(multiprocessing.current_process().daemon), "python": sys.executable}
    try:
        import pipelines

        info["project"] = os.path.dirname(os.path.dirname(os.path.abspath(pipelines.__file__)))
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {exc}"
    try:
        from importlib.metadata import version

        info["version"] = version("prosocial-corpus")
    except Exception:
        info["version"] = None
    return info
"""


def _probe_function() -> Callable[[], dict]:
    namespace: dict = {"__name__": "prosocial_worker_probe"}
    exec(_PROBE_SOURCE, namespace)
    return namespace["probe"]


def project_identity() -> dict:
    """What the probe reports for this process: the project's folder and installed version."""
    return _probe_function()()


def check_workers(client: Client, where: str) -> dict[str, dict]:
    """Fail before any stage when a worker cannot run the project's ranks; return each worker's probe.

    Why: a worker without the project died deserialising each rank and the run waited with no word; one with
    the project at another path could not open the models and bundles, which are sent by absolute path; a
    daemonic worker (started without DASK_DISTRIBUTED__WORKER__DAEMON=False) failed every extractor and vLLM
    rank, which start subprocesses, and the run published no dialogues with exit 0.
    """
    mine = project_identity()
    reports = client.run(_probe_function(), on_error="return")
    problems = []
    for worker, info in sorted(reports.items()):
        if isinstance(info, BaseException):
            problems.append(f"worker {worker} could not run a probe ({type(info).__name__}: {info})")
        elif info.get("error"):
            problems.append(
                f"worker {worker} cannot import the project ({info['error']}; python {info['python']}): "
                f"install prosocial-corpus there, at {mine['project']} as on this client, and start "
                "`dask worker` from that environment"
            )
        elif info.get("project") != mine["project"]:
            problems.append(
                f"worker {worker} runs the project from {info.get('project')} but this client from "
                f"{mine['project']}: the project must be at the same path on every host (models and bundles "
                "are sent by absolute path)"
            )
        elif info.get("version") != mine["version"]:
            problems.append(
                f"worker {worker} has prosocial-corpus {info.get('version')} but this client "
                f"{mine['version']}: install the same version everywhere"
            )
        elif info.get("daemonic"):
            problems.append(
                f"worker {worker} is a daemonic process: start `dask worker` with "
                "DASK_DISTRIBUTED__WORKER__DAEMON=False in its environment (extractors and vLLM start "
                "subprocesses, which daemonic processes may not)"
            )
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ClusterMisconfigured(
            f"{where}: {len(problems)} of {len(reports)} worker(s) cannot run the pipeline: "
            + "; ".join(problems[:3])
            + more
        )
    return reports


def check_shared_folder(client: Client, folder: Path, where: str, patience: float = 30.0) -> None:
    """Fail before any stage when a worker cannot see `folder` (OUT's work folder of this run).

    Why: ranks write their shards and completion markers under OUT, and the client reads them back; with OUT
    on a disk local to the client, every worker wrote into its own copy, and the run learned so only when the
    first rank finished (an hour into curation), with a message about that rank. A marker file is written
    here and looked for on every worker, for up to `patience` seconds (NFS may cache a missing entry briefly).
    """
    import time
    import uuid

    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".visible-from-workers-{uuid.uuid4().hex[:8]}"
    marker.write_text("written by the client; workers of this run must see it\n")
    try:
        deadline = time.monotonic() + patience
        while True:
            seen = client.run(os.path.isfile, str(marker), on_error="return")
            blind = sorted(worker for worker, found in seen.items() if found is not True)
            if not blind or time.monotonic() > deadline:
                break
            time.sleep(2.0)
    finally:
        marker.unlink(missing_ok=True)
    if blind:
        raise ClusterMisconfigured(
            f"{where}: {len(blind)} of {len(seen)} worker(s) cannot see {folder} (first: {blind[0]}): OUT must be "
            "on a filesystem shared by this client and every worker (NFS, Lustre, ...), at the same path"
        )


def _wait_for_slurm(client: Client, slurm: SlurmConfig) -> None:
    """SLURMCluster.scale only queues jobs: without a worker, stages would plan for one worker and GPU stages
    would take the CPU path, or wait with no word if the jobs never start."""
    from datatrove.utils.logging import logger

    logger.info(
        f"waiting up to {slurm.start_timeout} s for the first SLURM worker ({slurm.jobs} job(s) queued)"
    )
    try:
        client.wait_for_workers(1, timeout=slurm.start_timeout)
    except TimeoutError:
        raise RuntimeError(
            f"no SLURM worker started within cluster.slurm.start_timeout={slurm.start_timeout} s: check the "
            "jobs with `squeue --me` (queue, account, walltime, gres)"
        ) from None
    # jobs granted together start together: give the rest a minute to join before stages size their plans
    per_job = slurm.gpus_per_job or slurm.cores
    with contextlib.suppress(TimeoutError):
        client.wait_for_workers(slurm.jobs * per_job, timeout=60)


def visible_devices(worker_name: object, visible: str | None, per_worker: int) -> str:
    """The CUDA_VISIBLE_DEVICES of one worker: its own `per_worker` devices of what the host (or SLURM job)
    shows, chosen by the worker's index on the host (LocalCluster names workers 0, 1, ...; `dask worker
    --nworkers N` names them NAME-0 ... NAME-(N-1))."""
    text = str(worker_name)
    devices = visible.split(",") if visible else [str(i) for i in range(64)]
    tail = text.rsplit("-", 1)[-1]
    index = int(tail) if tail.isdigit() else 0
    mine = devices[index * per_worker : (index + 1) * per_worker]
    if len(mine) < per_worker:
        raise RuntimeError(
            f"worker {text} needs {per_worker} GPU(s) but only {len(devices)} are visible ({visible}): "
            "start no more GPU workers per host than GPUs / GPUs per worker"
        )
    return ",".join(mine)


class PinGPUs(WorkerPlugin):
    """Worker plugin: give each GPU worker process its own devices before anything initialises CUDA.

    Why: a Dask `GPU` resource is bookkeeping only. Without this every worker on a host opens cuda:0, and two
    vLLM engines at gpu_memory_utilization=0.9 on one device fail with out-of-memory errors.
    """

    name = "prosocial-pin-gpus"

    def __init__(self, per_worker: int):
        self.per_worker = per_worker

    def setup(self, worker) -> None:
        # what the host showed before any pinning (setup may run again in the same process)
        visible = os.environ.setdefault(HOST_DEVICES, os.environ.get("CUDA_VISIBLE_DEVICES", ""))
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices(worker.name, visible or None, self.per_worker)
