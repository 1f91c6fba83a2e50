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
    # workers import pipeline steps by reference, so they need this test module on their path, as a real
    # cluster needs the user's code installed on every node
    env = {**os.environ, **WORKER_ENV, "PYTHONPATH": str(Path(__file__).parent)}
    scheduler_file = tmp_path / "scheduler.json"
    common = ["--no-dashboard"]
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--scheduler-file",
                str(scheduler_file),
                *common,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        wait_for(scheduler_file)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        for name in ("w1", "w2"):
            procs.append(
                subprocess.Popen(
                    [
                        DASK,
                        "worker",
                        address,
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--name",
                        name,
                        "--local-directory",
                        str(tmp_path / name),
                        *common,
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=(tmp_path / f"{name}.stderr").open("w"),
                )
            )
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
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert all(p.returncode is not None for p in procs)
