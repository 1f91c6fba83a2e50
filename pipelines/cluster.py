"""Connect to the Dask cluster a run uses: a LocalCluster, an existing scheduler, or SLURM via dask-jobqueue.

Every flavour is configured the way datatrove steps need it: one thread per worker process (a datatrove rank
is not thread-safe and holds models per process) and non-daemonic workers (extractors and vLLM start their
own subprocesses, which daemonic processes may not do).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import dask
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from distributed import Client

# Must be in the environment of every worker process, including `dask worker` processes started by hand or
# by SLURM, so we export it as well as setting it in this process's dask config.
WORKER_ENV = {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}


class SlurmConfig(BaseModel):
    """Passed to `dask_jobqueue.SLURMCluster`; see its docs for the meaning of each key."""

    model_config = ConfigDict(extra="forbid")

    queue: str | None = Field(None, description="SLURM partition (sbatch -p).")
    account: str | None = Field(None, description="SLURM account (sbatch -A).")
    cores: int = Field(8, ge=1, description="Cores per SLURM job; one single-threaded worker process each.")
    memory: str = Field("32GB", description="Memory per SLURM job, shared by its workers.")
    walltime: str = Field("24:00:00", description="Time limit per SLURM job.")
    jobs: int = Field(1, ge=1, description="SLURM jobs to start (scale).")
    gpus_per_job: int = Field(0, ge=0, description="GPUs per job; each worker then advertises GPU=1.")
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
        0, ge=0, description="LocalCluster: GPUs each worker advertises as resource GPU."
    )
    address: str | None = Field(
        None, description="Scheduler address for kind=address, e.g. tcp://10.0.0.5:8786."
    )
    dashboard_address: str = Field("127.0.0.1:0", description="LocalCluster dashboard bind address.")
    local_directory: str | None = Field(None, description="Worker scratch folder (default: Dask's).")
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)


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
    if s.gpus_per_job:
        extra.append(f"--gres=gpu:{s.gpus_per_job}")
        worker_extra_args += ["--resources", "GPU=1"]
    cluster = SLURMCluster(
        queue=s.queue,
        account=s.account,
        cores=s.cores,
        processes=s.cores,  # one single-threaded worker per core
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


@contextlib.contextmanager
def connect(config: ClusterConfig) -> Iterator[Client]:
    """Yield a `distributed.Client` for the configured cluster and tear down what we started."""
    from distributed import Client

    configure_dask()
    if config.kind == "address":
        if not config.address:
            raise ValueError("cluster.kind=address needs cluster.address (e.g. tcp://127.0.0.1:8786)")
        with Client(config.address) as client:
            yield client
        return
    cluster = _local_cluster(config) if config.kind == "local" else slurm_cluster(config)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def has_gpu_workers(client: Client) -> bool:
    """True when any worker advertises a GPU resource; GPU stages then request `resources={'GPU': 1}`."""
    info = client.scheduler_info(n_workers=-1)
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in info.get("workers", {}).values())
