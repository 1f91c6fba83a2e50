"""The run configuration: one YAML file, validated before any work starts.

Users hand this file to jobs that run for days, so a typo must fail in the first second with a message that
names the file, the key and what was expected, never an hour later inside a worker. Each stage owns its
section model next to its code; this module only assembles them and turns pydantic's errors into one line.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from classifiers.settings import ClassifierSettings
from classifiers.yamlconfig import ConfigFileError, describe_validation
from classifiers.yamlconfig import read_yaml as _read_yaml
from pipelines.cluster import ClusterConfig
from pipelines.curate.settings import CurateConfig
from pipelines.dedup.settings import DedupConfig
from pipelines.mix.settings import MixConfig
from pipelines.publish.settings import PublishConfig
from synthetic.settings import SyntheticSettings

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"


class ConfigError(ConfigFileError):
    """A run-config problem, phrased for the person who wrote the file."""


class CorpusConfig(BaseModel):
    """Root of `configs/*.yaml`. Every field has the same default as `configs/default.yaml`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    out: Path = Field(
        Path("out"),
        validate_default=True,
        description="Output root: versions/, latest, state/ and work/ live here.",
    )
    input: list[str] = Field(
        default_factory=lambda: ["examples/demo"],
        description="Input globs or folders (any fsspec URL). A comma-separated string is accepted too.",
    )
    strict: bool = Field(
        False, description="Fail on the first bad input (naming file and offset) instead of counting it."
    )
    profile: list[str] = Field(
        default_factory=lambda: ["default"],
        description="Profile names (configs/profiles/NAME.yaml) or YAML paths; the first one scores `prosocial`.",
    )
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @field_validator("input", "profile", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("profile")
    @classmethod
    def _some_profile(cls, value: list[str]) -> list[str]:
        """`profile=` (or `profile: []`) would pass every stage up to the mix and fail there, hours later."""
        if not value or any(not name.strip() for name in value):
            raise ValueError("expected at least one profile name or YAML path, e.g. profile=default")
        return [name.strip() for name in value]

    @field_validator("out", mode="before")
    @classmethod
    def _absolute_out(cls, value: Any) -> Any:
        """Anchor OUT at the directory the run starts in, once.

        Why: the refresh journal records paths under OUT, and workers started elsewhere (`dask worker` on
        another host or folder) resolve relative paths against their own working directory. A relative OUT
        made a crash recoverable only from the same folder, and remote workers wrote into the wrong place.
        """
        if isinstance(value, (str, os.PathLike)):
            if not os.fspath(value).strip():  # `out=$OUT` with OUT unset: not "the current folder"
                raise ValueError("expected an output folder, got an empty value")
            return Path(os.path.abspath(os.path.expanduser(os.fspath(value))))
        return value

    @property
    def work_dir(self) -> Path:
        """Scratch state of unfinished runs (datatrove logging dirs, staged shards); survives crashes."""
        return self.out / "work"

    @property
    def state_dir(self) -> Path:
        """What a refresh must remember between runs: seen inputs, kept scored shards, the MinHash index."""
        return self.out / "state"


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


# Keys whose values are paths: kept as typed, so `out=2024-06-01` or `out=on` stay folder names, not a date
# or a boolean. A YAML list (`input=[a, b]`) is still parsed.
PATH_KEYS = {"out", "input"}


def _is_str_field(dotted: str) -> bool:
    """Whether `dotted` names a field typed str (or str | None) in CorpusConfig."""
    model: Any = CorpusConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return False
        if i == len(parts) - 1:
            return field.annotation is str or set(typing.get_args(field.annotation)) == {str, type(None)}
        model = field.annotation
    return False


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=value` pairs to a nested dict; values are parsed as YAML scalars so `n=2` is an int.

    A field typed str keeps the text as typed: YAML 1.1 would turn `walltime=24:00:00` into 86400 and
    `model=0x1F` into 31.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: '{item}' is not key=value (e.g. out=/data/corpus)")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"command line: '{item}' has an empty key")
        try:
            if key in PATH_KEYS and not raw.lstrip().startswith("["):
                value = raw
            else:
                value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if value is not None and not isinstance(value, (str, list, dict)) and _is_str_field(key):
            value = raw
        # a comma-separated value stays a string: list fields split it themselves
        _set_dotted(tree, key, value)
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a nested mapping (an empty mapping is a leaf)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file as a YAML mapping; errors name the file (and the line of a syntax error)."""
    return _read_yaml(path, ConfigError)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> CorpusConfig:
    """Load `path` (default: configs/default.yaml), apply `key=value` overrides and validate everything.

    Raises ConfigError with a one-line message naming the file (or the command line) and the key.
    """
    source_path = Path(path) if path else DEFAULT_CONFIG
    data = read_yaml(source_path) if (path or DEFAULT_CONFIG.exists()) else {}
    cli_tree = parse_overrides(list(overrides or []))
    # leaves only: `cluster.memory_limit=4GB` on the command line does not make it the source of `cluster.n_workers`
    cli_keys = set(flatten(cli_tree))
    merged = _deep_merge(data, cli_tree)
    try:
        config = CorpusConfig.model_validate(merged)
    except ValidationError as exc:
        key = ".".join(str(p) for p in exc.errors()[0].get("loc", ()))
        # a section's own check (min above max) names the section: blame the command line if it set a key in it
        on_cli = any(
            key == k or key.startswith(k + ".") or (key and k.startswith(key + ".")) for k in cli_keys
        )
        source = "command line" if on_cli else str(source_path)
        raise ConfigError(describe_validation(exc, CorpusConfig, source)) from None
    except ConfigError:
        raise
    except ValueError as exc:  # raised by section validators that check paths
        raise ConfigError(f"{source_path}: {exc}") from None
    return config


def dump_config(config: CorpusConfig) -> dict[str, Any]:
    """A JSON-able dict of the full config, for manifests and the config hash."""
    return config.model_dump(mode="json")
