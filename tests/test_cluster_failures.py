"""A cluster that cannot run the ranks fails the run with one clear message instead of waiting forever.

Real `dask scheduler` / `dask worker` processes on 127.0.0.1 (helpers in test_external_cluster.py), killed or
misconfigured the ways a reviewer found the driver stuck or the message misleading.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datatrove.utils.logging import logger
from test_external_cluster import start_scheduler, start_worker, stop, worker_env

from pipelines.cluster import ClusterConfig, ClusterLost, ClusterMisconfigured, ClusterUnreachable, connect
from pipelines.executor import DaskPipelineExecutor, RankFailed

CORPUS = str(Path(sys.executable).with_name("corpus"))


class Sleep:
    """A step that holds its worker for `seconds` (so that the cluster can be broken under it)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        time.sleep(self.seconds)
        yield from data or ()


def sleeping_stage(
    client, tmp_path: Path, tasks: int = 4, seconds: float = 2.0, resources: dict[str, float] | None = None
) -> DaskPipelineExecutor:
    return DaskPipelineExecutor(
        [Sleep(seconds)],
        tasks=tasks,
        logging_dir=str(tmp_path / "logs"),
        client=client,
        progress=False,
        resources=resources,
    )


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield started
    stop(started)


@pytest.mark.timeout(90)
def test_losing_the_scheduler_mid_stage_fails_naming_it(tmp_path, procs):
    """It waited forever (a rank submitted while the client reconnected was dropped), or failed with a raw
    ClosedClientError, or blamed each rank with "task cancelled"."""
    address = start_scheduler(tmp_path, procs)
    start_worker(address, "w1", tmp_path, procs)
    config = ClusterConfig(kind="address", address=address, connect_timeout=3)
    with connect(config) as client:
        stage = sleeping_stage(client, tmp_path, tasks=4, seconds=2.0)
        # the scheduler dies while rank 0 runs and ranks 1-3 wait
        killer = threading.Timer(1.5, procs[0].kill)
        killer.start()
        started = time.monotonic()
        with pytest.raises(ClusterLost, match=f"^pipeline: lost the Dask scheduler at {re.escape(address)}"):
            stage.run()
        killer.join()
        assert time.monotonic() - started < 30
    assert issubclass(ClusterLost, ClusterUnreachable)  # the CLI prints these as one line, exit 1


@pytest.mark.timeout(60)
def test_a_scheduler_without_workers_is_refused_at_connect(tmp_path, procs):
    """`corpus run` sat at `curate ranks: 0/1` forever."""
    address = start_scheduler(tmp_path, procs)
    started = time.monotonic()
    match = f"cluster.address {re.escape(address)}: no Dask worker joined"
    with (
        pytest.raises(ClusterMisconfigured, match=match) as info,
        connect(ClusterConfig(kind="address", address=address, worker_timeout=2)),
    ):
        pass
    assert "cluster.worker_timeout=2 s" in str(info.value)
    assert time.monotonic() - started < 20


@pytest.mark.timeout(90)
def test_ranks_waiting_on_a_cluster_whose_workers_all_died_fail(tmp_path, procs):
    address = start_scheduler(tmp_path, procs)
    worker = start_worker(address, "w1", tmp_path, procs, args=("--no-nanny",))
    with connect(ClusterConfig(kind="address", address=address, worker_timeout=3)) as client:
        stage = sleeping_stage(client, tmp_path, tasks=3, seconds=3.0)
        threading.Timer(1.5, worker.kill).start()
        with pytest.raises(
            ClusterLost, match=f"cluster at {re.escape(address)} has had no worker for 3 s with 3 rank"
        ):
            stage.run()


@pytest.mark.timeout(90)
def test_gpu_ranks_whose_gpu_workers_died_fail_while_cpu_workers_live(tmp_path, procs):
    """A CPU worker kept the cluster non-empty, so the watch saw workers and GPU ranks waited forever."""
    address = start_scheduler(tmp_path, procs)
    start_worker(address, "cpu", tmp_path, procs)
    gpu = start_worker(address, "gpu", tmp_path, procs, args=("--no-nanny", "--resources", "GPU=1"))
    with connect(ClusterConfig(kind="address", address=address, worker_timeout=3)) as client:
        client.wait_for_workers(2, timeout=30)
        stage = sleeping_stage(client, tmp_path, tasks=3, seconds=3.0, resources={"GPU": 1})
        threading.Timer(1.5, gpu.kill).start()
        with pytest.raises(ClusterLost, match=r"no worker with the resources \{'GPU': 1\} for 3 s"):
            stage.run()


@pytest.mark.timeout(90)
def test_workers_paused_by_their_memory_limit_warn_then_fail(tmp_path, procs):
    """Workers above Dask's pause threshold run nothing: the driver stopped at 4/8 ranks with no output."""
    address = start_scheduler(tmp_path, procs)
    # pause at 1% of a 4 GB limit: paused from the start, deterministically (never killed: terminate off)
    paused = worker_env(
        DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE="0.01",
        DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE="False",
        DASK_DISTRIBUTED__WORKER__MEMORY__SPILL="False",
        DASK_DISTRIBUTED__WORKER__MEMORY__TARGET="False",
    )
    start_worker(address, "small", tmp_path, procs, env=paused, args=("--memory-limit", "4GB"))
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        with connect(ClusterConfig(kind="address", address=address, paused_timeout=6)) as client:
            deadline = time.monotonic() + 20  # the worker reports its pause with its next heartbeat
            while client.scheduler_info(n_workers=-1)["workers"] and not any(
                w["status"] == "paused" for w in client.scheduler_info(n_workers=-1)["workers"].values()
            ):
                assert time.monotonic() < deadline, "the worker never paused"
                time.sleep(0.2)
            with pytest.raises(
                ClusterLost, match="every worker of .* is paused by Dask's memory monitor"
            ) as info:
                sleeping_stage(client, tmp_path, tasks=2, seconds=0.1).run()
    finally:
        logger.remove(sink)
    assert "memory limit: 3.73 GiB" in str(info.value) and "cluster.paused_timeout" in str(info.value)
    assert any("paused by Dask's memory monitor" in w and "--memory-limit" in w for w in warnings), warnings


@pytest.mark.timeout(90)
def test_workers_that_cannot_run_the_project_are_refused_by_name(tmp_path, procs):
    """A worker without the project died deserialising every rank and the driver printed nothing forever;
    a daemonic one failed every vLLM (and extractor) rank and the run published no dialogues with exit 0."""
    address = start_scheduler(tmp_path, procs)
    missing, elsewhere = tmp_path / "missing", tmp_path / "elsewhere"
    (missing / "pipelines").mkdir(parents=True)
    (missing / "pipelines" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pipelines'\", name='pipelines')\n"
    )
    (elsewhere / "pipelines").mkdir(parents=True)
    (elsewhere / "pipelines" / "__init__.py").write_text("")
    start_worker(address, "nopkg", tmp_path, procs, env=worker_env(PYTHONPATH=str(missing)))
    start_worker(address, "otherpath", tmp_path, procs, env=worker_env(PYTHONPATH=str(elsewhere)))
    start_worker(
        address, "daemonic", tmp_path, procs, env=worker_env(DASK_DISTRIBUTED__WORKER__DAEMON="True")
    )
    from distributed import Client

    with Client(address, timeout=10) as probe:
        probe.wait_for_workers(3, timeout=60)
    with pytest.raises(ClusterMisconfigured) as info, connect(ClusterConfig(kind="address", address=address)):
        pass
    message = str(info.value)
    assert message.startswith(f"{address}: 3 of 3 worker(s) cannot run the pipeline")
    assert "cannot import the project (ModuleNotFoundError: No module named 'pipelines'" in message
    assert f"runs the project from {tmp_path / 'elsewhere'} but this client from" in message
    assert "daemonic process: start `dask worker` with DASK_DISTRIBUTED__WORKER__DAEMON=False" in message
    assert "\n" not in message


def test_a_rank_whose_output_the_client_cannot_see_says_so(dask_client, tmp_path):
    """OUT on a worker-local disk: the message pointed at a task log that did not exist on the client.
    `memory://` is per process, so the workers' completion markers are invisible here, as on a local disk."""
    stage = DaskPipelineExecutor(
        [Sleep(0)], tasks=2, logging_dir=f"memory://{tmp_path}/logs", client=dask_client, progress=False
    )
    with pytest.raises(RankFailed) as info:
        stage.run()
    message = str(info.value)
    assert "rank 0: finished on worker " in message and " on host " in message
    assert f"but its output is not visible at {tmp_path}/logs/completions/00000" in message
    assert "must be on a filesystem shared by the client and every worker" in message


@pytest.mark.parametrize("address", ["http://127.0.0.1:18786", "scheduler:8786x", "tcp://scheduler"])
def test_a_malformed_scheduler_address_is_a_config_error_before_any_work(tmp_path, capsys, address):
    """It was a ValueError traceback with exit 1, after the run lock and a work folder."""
    from pipelines.cli import main as corpus

    out = tmp_path / "out"
    assert corpus(["run", f"out={out}", "cluster.kind=address", f"cluster.address={address}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("config error: command line: key 'cluster.address': expected a Dask scheduler")
    assert address in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_config_error_found_by_the_preflight_leaves_no_output_folder(tmp_path, capsys):
    from pipelines.cli import main as corpus

    out = tmp_path / "out"
    assert corpus(["run", f"out={out}", f"input={tmp_path / 'nothing' / '*.jsonl'}"]) == 2
    assert "config error" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.timeout(120)
def test_sigterm_is_reported_on_stderr_and_in_the_run_log(tmp_path, procs):
    """systemctl stop / timeout ended a run with 143 and not a word anywhere."""
    address = start_scheduler(tmp_path, procs)  # no worker: the run waits for one, holding the lock
    out = tmp_path / "out"
    stderr = tmp_path / "run.stderr"
    run = subprocess.Popen(
        [CORPUS, "run", f"out={out}", "cluster.kind=address", f"cluster.address={address}"]
        + ["cluster.worker_timeout=100", "synthetic.enabled=false"],
        stdout=subprocess.DEVNULL,
        stderr=stderr.open("w"),
    )
    try:
        deadline = time.monotonic() + 90
        while "waiting up to 100 s for a worker" not in stderr.read_text():
            assert run.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.3)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 143
    finally:
        if run.poll() is None:
            run.kill()
    assert stderr.read_text().strip().splitlines()[-1] == "corpus run: terminated by signal SIGTERM"
    (log,) = out.glob("work/*/logs/full.log")
    assert "terminated by signal SIGTERM" in log.read_text()
    from pipelines.config import load_config
    from pipelines.publish.lock import RunLock
    from pipelines.publish.state import StateStore

    # the lock ended with the process: the next night's run takes it (it does not exit 75)
    with RunLock(StateStore(load_config(None, [f"out={out}"]).state_dir).lock_path, "test"):
        pass


def _can_hide_folders() -> bool:
    """`unshare --mount` (root, or user namespaces) lets one worker run with a folder hidden by a tmpfs."""
    import shutil

    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.timeout(90)
@pytest.mark.skipif(not _can_hide_folders(), reason="needs `unshare --mount` to give a worker its own view")
def test_a_worker_that_cannot_see_out_is_refused_at_connect(tmp_path, procs):
    """OUT on a disk only the client has: the run learned it when the first rank finished, an hour into
    curation. One worker here runs in its own mount namespace, with OUT hidden under an empty tmpfs."""
    from test_external_cluster import DASK

    from pipelines.cluster import check_shared_folder

    work = tmp_path / "out" / "work"
    work.mkdir(parents=True)
    address = start_scheduler(tmp_path, procs)
    start_worker(address, "sees", tmp_path, procs)
    worker = [DASK, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--name", "blind"]
    worker += ["--local-directory", str(tmp_path / "blind"), "--no-dashboard"]
    hide = f'mount -t tmpfs none {tmp_path / "out"} && exec "$@"'
    procs.append(
        subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh", *worker],
            env=worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "blind.stderr").open("w"),
        )
    )
    from distributed import Client

    with Client(address, timeout=10) as client:
        client.wait_for_workers(2, timeout=60)
        with pytest.raises(ClusterMisconfigured) as info:
            check_shared_folder(client, work, address, patience=1)
        message = str(info.value)
        assert message.startswith(f"{address}: 1 of 2 worker(s) cannot see {work} (first: tcp://127.0.0.1:")
        assert "OUT must be on a filesystem shared by this client and every worker" in message
        assert not list(work.iterdir()), "the marker is removed"
        client.retire_workers(
            [w for w, i in client.scheduler_info()["workers"].items() if i["name"] == "blind"]
        )
    with connect(ClusterConfig(kind="address", address=address), shared=work) as client:  # the one that sees
        assert len(client.scheduler_info()["workers"]) == 1
