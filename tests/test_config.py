"""Config validation: typos and wrong types fail before any work, naming the file and the key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.config import (
    DEFAULT_CONFIG,
    ConfigError,
    CorpusConfig,
    dump_config,
    flatten,
    load_config,
    read_yaml,
)

CORPUS = str(Path(sys.executable).with_name("corpus"))


def test_default_yaml_matches_builtin_defaults():
    """configs/default.yaml documents the defaults; it must never drift from the models."""
    from_file = load_config(DEFAULT_CONFIG)
    assert from_file.model_dump() == CorpusConfig().model_dump()
    assert read_yaml(DEFAULT_CONFIG), "default.yaml should spell the defaults out"


def test_default_yaml_is_regenerated():
    """configs/default.yaml is generated from the models' defaults and descriptions: never stale."""
    import subprocess

    script = Path(__file__).parents[1] / "scripts" / "write_default_config.py"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_overrides_are_typed_and_nested():
    config = load_config(None, ["cluster.n_workers=3", "out=/tmp/x", "input=a/*.jsonl,b", "strict=true"])
    assert config.cluster.n_workers == 3
    assert config.out == Path("/tmp/x")
    assert config.input == ["a/*.jsonl", "b"]
    assert config.strict is True


def test_out_is_absolute_and_path_overrides_stay_strings(tmp_path, monkeypatch):
    """A relative OUT is anchored once: the journal and remote workers must not depend on a working folder."""
    from pipelines.graph import config_hash

    monkeypatch.chdir(tmp_path)
    assert load_config(None, ["out=rel/out"]).out == tmp_path / "rel" / "out"
    assert load_config(None, ["out=~/corpus"]).out == Path.home() / "corpus"
    for name in ("2024-06-01", "on", "1"):  # YAML would read a date, a boolean, an integer
        assert load_config(None, [f"out={name}"]).out == tmp_path / name
    assert load_config(None, ["input=[a, b]"]).input == ["a", "b"]
    # where OUT is and how many versions it keeps are not part of what a run computes
    same = {config_hash(load_config(None, o)) for o in (["out=a"], ["out=b", "publish.retention=9"])}
    assert len(same) == 1
    assert config_hash(load_config(None, ["out=a", "dedup.enabled=false"])) not in same


def test_address_cluster_needs_an_address(tmp_path, capsys):
    with pytest.raises(ConfigError, match="command line: key 'cluster': kind=address needs cluster.address"):
        load_config(None, ["cluster.kind=address"])
    # a scheduler that does not answer: one line naming the address, not an OSError traceback
    from pipelines.cli import main as corpus

    args = ["cluster.kind=address", "cluster.address=tcp://127.0.0.1:1", "cluster.connect_timeout=1"]
    assert corpus(["run", *args, f"out={tmp_path}", "synthetic.enabled=false"]) == 1
    err = capsys.readouterr().err
    assert "cluster.address tcp://127.0.0.1:1: no Dask scheduler answered" in err and "Traceback" not in err
    config = load_config(None, ["cluster.kind=address", "cluster.address=tcp://127.0.0.1:8786"])
    assert config.cluster.kind == "address" and config.cluster.address == "tcp://127.0.0.1:8786"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster:\n  n_wrkers: 2\n", "unknown key 'cluster.n_wrkers' (did you mean 'n_workers'?)"),
        ("clustr:\n  n_workers: 2\n", "unknown key 'clustr' (did you mean 'cluster'?)"),
        ("cluster:\n  n_workers: two\n", "key 'cluster.n_workers': expected an integer, got 'two'"),
        (
            "cluster:\n  kind: kubernetes\n",
            "key 'cluster.kind': expected one of 'local', 'address' or 'slurm'",
        ),
        ("strict: maybe\n", "key 'strict': expected true or false, got 'maybe'"),
        ("cluster: [1, 2]\n", "key 'cluster': expected a mapping"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_override_errors_name_the_command_line():
    with pytest.raises(ConfigError, match=r"^command line: key 'cluster.n_workers': expected an integer"):
        load_config(None, ["cluster.n_workers=lots"])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(None, ["cluster.n_workers"])


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("cluster:\n  n_workers: [1,\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+: invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_a_key_given_twice_is_an_error_not_a_silent_overwrite(tmp_path):
    """PyYAML keeps the last `curate:`, so `languages: [de]` in the first one was dropped without a word."""
    path = tmp_path / "twice.yaml"
    path.write_text("curate:\n  languages: [de]\nmix:\n  seed: 3\ncurate:\n  exact_dedup: false\n")
    with pytest.raises(ConfigError, match=r"twice.yaml: line 5: invalid YAML \(duplicate key 'curate'"):
        load_config(path)
    path.write_text("curate:\n  languages: [de]\n  languages: [en]\n")
    with pytest.raises(ConfigError, match=r"line 3: invalid YAML \(duplicate key 'languages'"):
        load_config(path)
    # YAML merge keys still work, and a key given beside one overrides the merged value
    from classifiers.yamlconfig import read_yaml

    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "base: &b {languages: [de], exact_dedup: false}\ncurate:\n  <<: *b\n  languages: [fr]\n"
    )
    assert read_yaml(merged)["curate"] == {"languages": ["fr"], "exact_dedup": False}


@pytest.mark.parametrize("override", ["cluster.n_wrkers=2", "cluster.n_workers=two"])
def test_cli_exits_nonzero_with_one_line(tmp_path, override):
    result = subprocess.run(
        [CORPUS, "run", f"out={tmp_path}", override], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cluster.n_w" in lines[0] and lines[0].startswith("config error: command line:")
    assert not (tmp_path / "work").exists(), "no work may start on a bad config"


def test_an_output_folder_that_cannot_be_made_is_a_config_error(capsys):
    """It failed inside the run lock with a FileNotFoundError traceback."""
    from pipelines.cli import main as corpus

    assert corpus(["run", "out=/proc/prosocial-corpus-test", "synthetic.enabled=false"]) == 2
    assert "out: cannot create or write /proc/prosocial-corpus-test (No such file or directory)" in (
        capsys.readouterr().err
    )


def test_cli_bad_config_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("out: somewhere\ncurate:\n  langauges: [en]\n")
    result = subprocess.run([CORPUS, "run", "-c", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"config error: {path}: unknown key 'curate.langauges' (did you mean 'languages'?)"
    )


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")))
def test_shipped_configs_validate(path):
    """Every value a shipped config sets is the value the run gets (none ignored or coerced)."""
    loaded = flatten(dump_config(load_config(path)))
    for key, value in flatten(read_yaml(path)).items():
        expected = str(Path(value).resolve()) if key == "out" else value  # out is made absolute (from cwd)
        assert loaded[key] == expected, key


def test_gpu_workers_are_pinned_only_where_a_host_shows_them_several_gpus():
    """A one-GPU SLURM job's worker is SLURMCluster-<job>: pinning read the job number as a device index."""
    from pipelines.cluster import ClusterConfig, gpus_to_pin

    def slurm(gpus: int) -> ClusterConfig:
        return ClusterConfig.model_validate({"kind": "slurm", "slurm": {"gpus_per_job": gpus}})

    assert [gpus_to_pin(slurm(g)) for g in (0, 1, 2, 4)] == [0, 0, 1, 1]
    assert gpus_to_pin(ClusterConfig(gpus_per_worker=2)) == 2 and gpus_to_pin(ClusterConfig()) == 0


def test_slurm_job_script_has_single_threaded_non_daemonic_gpu_workers():
    from pipelines.cluster import ClusterConfig, slurm_cluster

    config = ClusterConfig.model_validate(
        {"kind": "slurm", "slurm": {"cores": 4, "memory": "8GB", "gpus_per_job": 2, "queue": "gpu"}}
    )
    cluster = slurm_cluster(config, scale=False)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:2" in script and "#SBATCH --cpus-per-task=4" in script
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in script
    # one worker per GPU (each pinned to its device), not one per core all claiming a GPU
    assert "--nthreads 1" in script and "--nworkers 2" in script
    assert "--resources GPU=1" in script
    cpu = slurm_cluster(ClusterConfig.model_validate({"kind": "slurm", "slurm": {"cores": 4}}), scale=False)
    try:
        assert "--nworkers 4" in cpu.job_script() and "GPU" not in cpu.job_script()
    finally:
        cpu.close()


def test_each_gpu_worker_gets_devices_of_its_own():
    from pipelines.cluster import visible_devices

    assert [visible_devices(i, None, 1) for i in range(3)] == ["0", "1", "2"]  # LocalCluster names
    assert visible_devices("SLURMCluster-7-1", "4,5", 1) == "5"  # dask worker --nworkers: NAME-<index>
    assert visible_devices(1, "0,1,2,3", 2) == "2,3"
    with pytest.raises(RuntimeError, match="needs 1 GPU"):
        visible_devices("job-2", "4,5", 1)


def test_profile_typo_is_one_line_with_a_hint(tmp_path):
    from classifiers.profiles import ProfileError, load_profile

    path = tmp_path / "mine.yaml"
    path.write_text("weights: {care: 1}\ntiers:\n  - {name: top, min_scor: 0.5, factor: 2}\n")
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    assert str(info.value).startswith(f"{path}: unknown key 'tiers.0.min_scor'")
    result = subprocess.run(
        [CORPUS, "run", f"out={tmp_path / 'out'}", f"profile={path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"config error: {info.value}"]


def test_profile_tier_names_must_be_unique(tmp_path):
    from classifiers.profiles import ProfileError, load_profile

    path = tmp_path / "twice.yaml"
    path.write_text(
        "weights: {care: 1}\ntiers:\n  - {name: top, min_score: 0.6, factor: 2}\n"
        "  - {name: top, min_score: 0.4, factor: 1}\n"
    )
    with pytest.raises(ProfileError, match=re.escape(f"{path}: key 'tiers': names must be unique, ['top']")):
        load_profile(str(path))


def test_local_gpu_workers_are_pinned_to_distinct_devices(monkeypatch):
    """The pinning runs inside real worker processes (no GPU needed: it only sets CUDA_VISIBLE_DEVICES)."""
    import os

    from pipelines.cluster import ClusterConfig, connect

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    config = ClusterConfig(n_workers=2, gpus_per_worker=1, memory_limit="1GB")
    with connect(config) as client:
        seen = client.run(lambda: os.environ["CUDA_VISIBLE_DEVICES"])
    assert sorted(seen.values()) == ["3", "5"]


def test_command_line_values_keep_their_type_and_bad_ones_name_their_source(tmp_path):
    assert load_config(None, ["cluster.slurm.walltime=24:00:00"]).cluster.slurm.walltime == "24:00:00"
    assert load_config(None, ["synthetic.model=0x1F"]).synthetic.model == "0x1F"  # not 31
    assert load_config(None, ["cluster.n_workers=3"]).cluster.n_workers == 3
    with pytest.raises(ConfigError, match="command line: key 'out': expected an output folder"):
        load_config(None, ["out="])  # `out=$OUT` with OUT unset
    with pytest.raises(ConfigError, match="key 'cluster.memory_limit': expected 'auto' or a size"):
        load_config(None, ["cluster.memory_limit=4GiBs"])
    mine = tmp_path / "mine.yaml"
    mine.write_text("cluster:\n  n_workers: two\n")
    with pytest.raises(ConfigError, match=re.escape(f"{mine}: key 'cluster.n_workers'")):
        load_config(mine, ["cluster.memory_limit=4GB"])  # the sibling on the command line is not to blame


def test_bad_log_level_is_a_usage_error():
    result = subprocess.run(
        [CORPUS, "refresh", "--log-level", "warn"], capture_output=True, text=True, timeout=60
    )
    assert (
        result.returncode == 2
        and "'warn' is not one of" in result.stderr
        and "Traceback" not in result.stderr
    )


@pytest.mark.parametrize(
    ("weights", "factor", "expected"),
    [
        ("{care: .nan, respect: 1}", "2", "key 'weights.care': expected a finite number"),
        ("{car: 1}", "2", "key 'weights.car': not a dimension of the taxonomy (did you mean 'care'?)"),
        ("{care: 1}", ".inf", "key 'tiers.0.factor': expected a finite number"),
    ],
)
def test_profile_numbers_are_finite_and_dimensions_known(tmp_path, weights, factor, expected):
    from classifiers.profiles import ProfileError, load_profile

    path = tmp_path / "p.yaml"
    path.write_text(f"weights: {weights}\ntiers:\n  - {{name: top, min_score: 0.5, factor: {factor}}}\n")
    with pytest.raises(ProfileError, match=re.escape(f"{path}: {expected}")):
        load_profile(str(path))


def test_tensor_parallel_size_no_worker_can_host_fails_before_curate(tmp_path):
    from pipelines.graph import run_graph

    config = load_config(
        None,
        [f"out={tmp_path / 'out'}", "cluster.gpus_per_worker=1", "cluster.n_workers=1",
         "synthetic.tensor_parallel_size=2", "cluster.memory_limit=1GB"],
    )  # fmt: skip
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 but the largest worker advertises GPU=1"):
        run_graph(config)
    assert not list((tmp_path / "out" / "work").glob("*/curate"))
