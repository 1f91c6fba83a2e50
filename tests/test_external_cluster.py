"""A real `dask scheduler` and two `dask worker` processes on 127.0.0.1, reached by address."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter

from pipelines.cluster import WORKER_ENV, ClusterConfig, connect
from pipelines.executor import DaskPipelineExecutor

DASK = str(Path(sys.executable).with_name("dask"))


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if time.time() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.2)


def worker_env(**extra: str) -> dict[str, str]:
    """What `dask worker` processes need: non-daemonic, and this folder on the path, since workers import
    test pipeline steps by reference (as a real cluster needs the user's code installed on every node)."""
    path = os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])
    return {**os.environ, **WORKER_ENV, "PYTHONPATH": path, **extra}


def start_scheduler(folder: Path, procs: list[subprocess.Popen]) -> str:
    """A real `dask scheduler` on 127.0.0.1 (appended to `procs`); returns its address."""
    scheduler_file = folder / "scheduler.json"
    procs.append(
        subprocess.Popen(
            [DASK, "scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--scheduler-file", str(scheduler_file), "--no-dashboard"],
            env=worker_env(),
            stdout=subprocess.DEVNULL,
            stderr=(folder / "scheduler.stderr").open("w"),
        )
    )
    wait_for(scheduler_file)
    address = json.loads(scheduler_file.read_text())["address"]
    assert address.startswith("tcp://127.0.0.1:")
    return address


def start_worker(
    address: str,
    name: str,
    folder: Path,
    procs: list[subprocess.Popen],
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> subprocess.Popen:
    """A real single-threaded `dask worker` process (appended to `procs`); its stderr goes to NAME.stderr."""
    proc = subprocess.Popen(
        [DASK, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--name", name]
        + ["--local-directory", str(folder / name), "--no-dashboard", *args],
        env=env or worker_env(),
        stdout=subprocess.DEVNULL,
        stderr=(folder / f"{name}.stderr").open("w"),
    )
    procs.append(proc)
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RecordWorker:
    """Writes the name of the Dask worker that runs each rank."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        from distributed import get_worker

        os.makedirs(self.folder, exist_ok=True)
        Path(self.folder, str(rank)).write_text(str(get_worker().name))
        time.sleep(0.5)
        yield from data


def test_pipeline_on_scheduler_and_workers_started_by_hand(tmp_path):
    procs: list[subprocess.Popen] = []
    try:
        address = start_scheduler(tmp_path, procs)
        for name in ("w1", "w2"):
            start_worker(address, name, tmp_path, procs, args=("--nworkers", "1"))
        (tmp_path / "in").mkdir()
        for i in range(4):
            rows = [json.dumps({"id": f"{i}-{j}", "text": f"text {i} {j}"}) for j in range(50)]
            (tmp_path / "in" / f"{i}.jsonl").write_text("\n".join(rows) + "\n")
        with connect(ClusterConfig(kind="address", address=address)) as client:
            client.wait_for_workers(2, timeout=60)
            workers = client.scheduler_info(n_workers=-1)["workers"]
            assert sorted(w["name"] for w in workers.values()) == ["w1", "w2"]
            DaskPipelineExecutor(
                [
                    JsonlReader(str(tmp_path / "in")),
                    LambdaFilter(lambda doc: not doc.id.endswith("-0")),
                    RecordWorker(tmp_path / "seen"),
                    ParquetWriter(str(tmp_path / "out")),
                ],
                tasks=4,
                logging_dir=str(tmp_path / "logs"),
                client=client,
                progress=False,
            ).run()
        # both hand-started workers took part (each rank holds its worker for a moment)
        assert {p.read_text() for p in (tmp_path / "seen").iterdir()} == {"w1", "w2"}
        ids = pq.read_table(tmp_path / "out").column("id").to_pylist()
        assert len(ids) == 4 * 49 and len(set(ids)) == len(ids)
        assert len(list((tmp_path / "logs" / "completions").iterdir())) == 4
        # rank logs go to logs/task_*.log, not to the workers' consoles (console_logs=False by default)
        for rank in range(4):
            assert (
                f"Launching pipeline for rank={rank}"
                in (tmp_path / "logs" / "logs" / f"task_{rank:05d}.log").read_text()
            )
        consoles = "".join((tmp_path / f"{name}.stderr").read_text() for name in ("w1", "w2"))
        assert "Launching pipeline" not in consoles
    finally:
        stop(procs)
    assert all(p.returncode is not None for p in procs)
