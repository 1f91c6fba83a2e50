"""DaskPipelineExecutor on a real LocalCluster: layout, depends=, resume, stats isolation, failures."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datatrove.pipeline.filters import LambdaFilter
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import ParquetWriter

from pipelines.executor import DaskPipelineExecutor, RankFailed


def write_inputs(folder: Path, files: int, docs_per_file=lambda i: 20) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(files):
        with open(folder / f"part-{i:03d}.jsonl", "w") as f:
            for j in range(docs_per_file(i)):
                f.write(
                    json.dumps({"id": f"{i}-{j}", "text": f"document {i} {j} about kindness " * 3}) + "\n"
                )
                total += 1
    return total


def output_ids(folder: Path) -> list[str]:
    ids: list[str] = []
    for path in sorted(folder.glob("*.parquet")):
        ids += pq.read_table(path, columns=["id"]).column("id").to_pylist()
    return ids


class RecordRun:
    """A step that appends `rank` to a file each time a rank runs: counts executions across processes."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        with open(self.path, "a") as f:
            f.write(f"{rank}\n")
        yield from data or ()


def runs(path: Path) -> list[int]:
    return sorted(int(x) for x in path.read_text().split()) if path.exists() else []


@pytest.mark.parametrize(("tasks", "workers"), [(3, 1), (3, 3), (8, 2)])
def test_logging_dir_layout(dask_client, tmp_path, tasks, workers):
    total = write_inputs(tmp_path / "in", tasks)
    logs = tmp_path / "logs"
    executor = DaskPipelineExecutor(
        [JsonlReader(str(tmp_path / "in")), ParquetWriter(str(tmp_path / "out"))],
        tasks=tasks,
        workers=workers,
        logging_dir=str(logs),
        client=dask_client,
        progress=False,
    )
    stats = executor.run()
    ranks = [f"{r:05d}" for r in range(tasks)]
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ranks
    assert sorted(p.name for p in (logs / "stats").iterdir()) == [f"{r}.json" for r in ranks]
    assert sorted(p.name for p in (logs / "logs").iterdir()) == [f"task_{r}.log" for r in ranks]
    assert json.loads((logs / "executor.json").read_text())["world_size"] == tasks
    merged = json.loads((logs / "stats.json").read_text())
    reader = next(s for s in merged if "Jsonl" in s["name"])
    assert reader["stats"]["documents"]["total"] == total
    assert len(output_ids(tmp_path / "out")) == total
    assert stats.stats[0].stats["documents"].total == total


def test_depends_runs_parent_once(dask_client, tmp_path):
    write_inputs(tmp_path / "in", 2)
    parent_runs, child_runs = tmp_path / "parent.txt", tmp_path / "child.txt"

    def make():
        parent = DaskPipelineExecutor(
            [JsonlReader(str(tmp_path / "in")), RecordRun(parent_runs), ParquetWriter(str(tmp_path / "mid"))],
            tasks=2,
            logging_dir=str(tmp_path / "logs-parent"),
            client=dask_client,
            name="parent",
            progress=False,
        )
        return DaskPipelineExecutor(
            [RecordRun(child_runs)],
            tasks=1,
            logging_dir=str(tmp_path / "logs-child"),
            depends=parent,
            client=dask_client,
            name="child",
            progress=False,
        )

    make().run()
    assert runs(parent_runs) == [0, 1]
    assert runs(child_runs) == [0]
    make().run()  # a second invocation: both already complete
    assert runs(parent_runs) == [0, 1]
    assert runs(child_runs) == [0]


def test_rerun_after_deleted_completion_runs_only_that_rank(dask_client, tmp_path):
    total = write_inputs(tmp_path / "in", 4)
    record = tmp_path / "runs.txt"

    def make():
        return DaskPipelineExecutor(
            [JsonlReader(str(tmp_path / "in")), RecordRun(record), ParquetWriter(str(tmp_path / "out"))],
            tasks=4,
            logging_dir=str(tmp_path / "logs"),
            client=dask_client,
            progress=False,
        )

    make().run()
    assert runs(record) == [0, 1, 2, 3]
    (tmp_path / "logs" / "completions" / "00002").unlink()
    stats = make().run()
    assert runs(record) == [0, 1, 2, 2, 3]
    # stats.json still merges all four ranks, three of them from the earlier invocation
    reader = next(s for s in stats.stats if "Jsonl" in s.name)
    assert reader.stats["documents"].total == total
    assert sorted(output_ids(tmp_path / "out")) == sorted(f"{i}-{j}" for i in range(4) for j in range(20))


def test_per_rank_stats_do_not_leak(dask_client, tmp_path):
    # rank i reads a file with 5 * (i + 1) documents; with one slot, the same worker process runs every rank
    write_inputs(tmp_path / "in", 4, docs_per_file=lambda i: 5 * (i + 1))
    logs = tmp_path / "logs"
    DaskPipelineExecutor(
        [
            JsonlReader(str(tmp_path / "in")),
            LambdaFilter(lambda doc: True),
            ParquetWriter(str(tmp_path / "out")),
        ],
        tasks=4,
        workers=1,
        logging_dir=str(logs),
        client=dask_client,
        progress=False,
    ).run()
    for rank in range(4):
        per_rank = json.loads((logs / "stats" / f"{rank:05d}.json").read_text())
        reader = next(s for s in per_rank if "Jsonl" in s["name"])
        assert reader["stats"]["documents"]["total"] == 5 * (rank + 1)


def test_lambda_and_adapter_pipeline(dask_client, tmp_path):
    write_inputs(tmp_path / "in", 2)
    suffix = "-adapted"  # captured by the closure below

    def adapter(self, document):
        return {"id": document.id + suffix, "text": document.text.upper()}

    DaskPipelineExecutor(
        [
            JsonlReader(str(tmp_path / "in")),
            LambdaFilter(lambda doc: int(doc.id.split("-")[1]) % 2 == 0),
            ParquetWriter(str(tmp_path / "out"), adapter=adapter),
        ],
        tasks=2,
        logging_dir=str(tmp_path / "logs"),
        client=dask_client,
        progress=False,
    ).run()
    table = pq.read_table(tmp_path / "out")
    ids = table.column("id").to_pylist()
    assert len(ids) == 20 and all(i.endswith("-adapted") for i in ids)
    assert all(int(i.split("-")[1]) % 2 == 0 for i in ids)
    assert all(t.isupper() for t in table.column("text").to_pylist())


class FailOnRank:
    def __init__(self, rank: int):
        self.rank = rank

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        if rank == self.rank:
            raise ValueError(f"planted failure in rank {rank}")
        yield from data


def test_application_error_fails_rank_with_log_path(dask_client, tmp_path):
    write_inputs(tmp_path / "in", 3)
    logs = tmp_path / "logs"
    executor = DaskPipelineExecutor(
        [JsonlReader(str(tmp_path / "in")), FailOnRank(1), ParquetWriter(str(tmp_path / "out"))],
        tasks=3,
        logging_dir=str(logs),
        client=dask_client,
        progress=False,
    )
    with pytest.raises(RankFailed) as info:
        executor.run()
    assert info.value.failures.keys() == {1}
    assert "planted failure in rank 1" in str(info.value)
    assert f"{logs}/logs/task_00001.log" in str(info.value)
    log = (logs / "logs" / "task_00001.log").read_text()
    assert "planted failure" in log and "Traceback (most recent call last)" in log
    assert "│" not in log  # no loguru variable dumps under the frames (they printed document texts)
    assert sorted(p.name for p in (logs / "completions").iterdir()) == ["00000", "00002"]


class Sleep:
    def __call__(self, data, rank: int = 0, world_size: int = 1):
        time.sleep(3)
        yield from data


def test_cancelled_ranks_fail_the_stage(dask_client, tmp_path):
    """A client that loses its scheduler sees every future cancelled: that is a failure, never a success."""
    from distributed import Future

    write_inputs(tmp_path / "in", 2)
    executor = DaskPipelineExecutor(
        [JsonlReader(str(tmp_path / "in")), Sleep(), ParquetWriter(str(tmp_path / "out"))],
        tasks=2,
        logging_dir=str(tmp_path / "logs"),
        client=dask_client,
        progress=False,
        name="cancelme",
    )

    def cancel_when_submitted():
        deadline = time.time() + 60
        while time.time() < deadline:
            keys = [k for k in list(dask_client.futures) if str(k).startswith("cancelme-rank")]
            if len(keys) == 2:
                time.sleep(0.5)
                dask_client.cancel([Future(k, dask_client) for k in keys])
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_when_submitted)
    canceller.start()
    with pytest.raises(RankFailed) as info:
        executor.run()
    canceller.join()
    assert info.value.failures.keys() == {0, 1}
    assert "cancelled" in str(info.value)


class KillWorkerOnce:
    """Kill the worker process running `rank` mid-stream, the first time only (a marker file remembers)."""

    def __init__(self, rank: int, marker: Path, after: int):
        self.rank, self.marker, self.after = rank, str(marker), after

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        for index, document in enumerate(data):
            if rank == self.rank and index == self.after and not os.path.exists(self.marker):
                Path(self.marker).write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            yield document


def test_killed_worker_rank_is_retried_and_written_once(dask_client, tmp_path):
    total = write_inputs(tmp_path / "in", 4, docs_per_file=lambda i: 3000)
    marker = tmp_path / "killed.pid"
    DaskPipelineExecutor(
        [
            JsonlReader(str(tmp_path / "in")),
            KillWorkerOnce(rank=2, marker=marker, after=2500),
            ParquetWriter(str(tmp_path / "out"), batch_size=500),
        ],
        tasks=4,
        logging_dir=str(tmp_path / "logs"),
        client=dask_client,
        progress=False,
    ).run()
    assert marker.exists(), "the planted kill never happened"
    ids = output_ids(tmp_path / "out")
    assert len(ids) == total
    assert len(set(ids)) == total
    dask_client.wait_for_workers(2, timeout=60)


class KillWorkerAlways:
    """Rank `rank` SIGKILLs its worker every time it runs; every rank records that it started."""

    def __init__(self, rank: int, folder: Path):
        self.rank, self.folder = rank, str(folder)

    def __call__(self, data, rank: int = 0, world_size: int = 1):
        with open(os.path.join(self.folder, f"started-{rank}"), "a") as f:
            f.write("x")
        if rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
        yield from data or ()


def test_a_dying_worker_fails_only_the_rank_that_killed_it(tmp_path):
    """Ranks wait at the scheduler, not in a worker's queue, so a worker's death is charged to its own rank
    only; the rank queued behind it used to come back as KilledWorker without ever starting."""
    from pipelines.cluster import ClusterConfig, connect

    with connect(ClusterConfig(n_workers=1, memory_limit="1GB")) as client:
        executor = DaskPipelineExecutor(
            [KillWorkerAlways(rank=0, folder=tmp_path)],
            tasks=4,
            logging_dir=str(tmp_path / "logs"),
            client=client,
            progress=False,
        )
        with pytest.raises(RankFailed) as info:
            executor.run()
    assert list(info.value.failures) == [0] and "KilledWorker" in info.value.failures[0]
    assert all((tmp_path / f"started-{rank}").read_text() == "x" for rank in (1, 2, 3))


def test_a_torn_stats_file_leaves_its_counts_out_instead_of_blocking_the_stage(dask_client, tmp_path):
    """datatrove writes stats/NNNNN.json without fsync: after a power cut a complete rank can have an empty one.
    Every rerun used to die on a bare JSONDecodeError naming no file."""
    total = write_inputs(tmp_path / "in", 2)

    def make():
        return DaskPipelineExecutor(
            [JsonlReader(str(tmp_path / "in")), ParquetWriter(str(tmp_path / "out"))],
            tasks=2,
            logging_dir=str(tmp_path / "logs"),
            client=dask_client,
            progress=False,
        )

    make().run()
    (tmp_path / "logs" / "stats" / "00000.json").write_text("")
    make().run()
    merged = json.loads((tmp_path / "logs" / "stats.json").read_text())
    reader = next(s for s in merged if "Jsonl" in s["name"])
    assert reader["stats"]["documents"]["total"] == total // 2  # rank 1's counts only
    assert len(output_ids(tmp_path / "out")) == total  # the output is whole


def test_ranks_that_request_resources_count_only_the_workers_that_have_them():
    """GPU ranks must not queue on a GPU worker's CPU threads (a vLLM OOM would take the queued ranks along)."""
    from distributed import Client, LocalCluster, Worker

    from pipelines.executor import _count_slots

    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        workers = [
            client.sync(Worker, cluster.scheduler_address, nthreads=3, resources={"GPU": 1}),
            client.sync(Worker, cluster.scheduler_address, nthreads=2, resources={"GPU": 2}),
            client.sync(Worker, cluster.scheduler_address, nthreads=4),
        ]
        try:
            client.wait_for_workers(3)
            listed = list(client.scheduler_info(n_workers=-1)["workers"].values())
            assert _count_slots(listed, None) == 9
            assert (
                _count_slots(listed, {"GPU": 1}) == 3
            )  # 1 on the first worker, 2 on the second, none on the CPU one
            assert _count_slots(listed, {"GPU": 2}) == 1
            assert (
                _count_slots(listed, {"GPU": 4}) == 0
            )  # no worker can run them: the watch's "no worker" case
        finally:
            for worker in workers:
                client.sync(worker.close)
