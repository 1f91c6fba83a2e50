"""Seed recipes: declarative YAML files (classifiers/recipes/*.yaml) that turn a labelled public source into
per-dimension training labels.

Why declarative: which rows count as positive, negative or neutral is a research decision that users should
be able to read and change without touching code, and the model card quotes it. One loader serves every
source, through `datasets.load_dataset`, whether the data sits in a local folder (`--seeds DIR`, a file
builder such as csv/json/text) or on the Hugging Face Hub (the recipe's `hub:` id) - the same code path.

Labels are soft targets in [0, 1]: 1 positive, 0 negative, 0.5 "neutral" (not flagged: not evidence for
either side; the README warns that "neutral", "neither" and "non-hope" are not positives). Rows that match
no rule are dropped.

A recipe (see classifiers/recipes/stanford-politeness.yaml for a commented one):
  name, description, license, license_file, commercial (bool), domain, citation
  local: {folder, builder (csv|json|text|parquet), options (builder kwargs), splits: {split: [files]}
          or, for builder text with parallel files, {split: {column: [files], ...}}}
  hub:   {path, name, splits: {split: hub_split}, rename: {hub_col: col}, values: {col: {hub_value: value}}}
  eval_split: a split name (or list) used only for evaluation; absent: carved by text hash
  derive: [{op: filter|split_list|split_text|group_max|normalize_label, ...}]
  text: column;  labels: {dimension: {positive: RULE, negative: RULE, neutral: RULE | rest}}
  views: [{text, labels}, ...]  (instead of text/labels, when one row carries several texts)
RULE: a condition {column, eq|ne|in|not_in|ge|gt|le|lt|ge_quantile|le_quantile|any_of|none_of|not_null},
a list of conditions (all must hold) or {any: [RULE, ...]}.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from classifiers.taxonomy import load_taxonomy
from classifiers.yamlconfig import ConfigFileError, did_you_mean, read_yaml, validate

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
NEUTRAL_TARGET = 0.5


class RecipeError(ConfigFileError):
    """A recipe that does not validate or a source that cannot be loaded; names the file and key."""


class LocalSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str = Field(description="Folder under the seeds root (e.g. ../shared/data/labeled/<folder>).")
    builder: Literal["csv", "json", "text", "parquet"] = Field(description="`datasets` file builder.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments for the builder."
    )
    splits: dict[str, list[str] | dict[str, list[str]]] = Field(
        description="Split name -> files; for parallel text files, split -> {column: files}."
    )


class HubSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="Hugging Face Hub dataset id.")
    name: str | None = Field(None, description="Dataset config name.")
    splits: dict[str, str] = Field(description="Our split name -> the hub split name.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Hub column -> the column the rules use."
    )
    values: dict[str, dict[Any, Any]] = Field(
        default_factory=dict, description="Column -> {hub value: value}."
    )


class View(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(description="Column holding the text.")
    labels: dict[str, dict[str, Any]] = Field(description="Dimension -> {positive, negative, neutral} rules.")


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    license: str
    license_file: str | None = None
    commercial: bool = Field(description="False when the licence forbids commercial use (or states none).")
    domain: str = ""
    citation: str = ""
    local: LocalSource | None = None
    hub: HubSource | None = None
    eval_split: str | list[str] | None = Field(
        None, description="Official split(s) used for evaluation only."
    )
    derive: list[dict[str, Any]] = Field(default_factory=list)
    text: str | None = None
    labels: dict[str, dict[str, Any]] | None = None
    views: list[View] | None = None
    path: str | None = Field(None, description="Where the recipe was read from (set by the loader).")

    @property
    def all_views(self) -> list[View]:
        if self.views:
            return self.views
        if self.text is None or self.labels is None:
            raise RecipeError(f"{self.path}: a recipe needs `text` and `labels`, or `views`")
        return [View(text=self.text, labels=self.labels)]

    @property
    def dimensions(self) -> list[str]:
        return sorted({dim for view in self.all_views for dim in view.labels})

    @property
    def eval_splits(self) -> list[str]:
        if self.eval_split is None:
            return []
        return [self.eval_split] if isinstance(self.eval_split, str) else list(self.eval_split)


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    data = read_yaml(path, RecipeError)
    data["path"] = str(path)
    recipe = validate(data, Recipe, str(path), RecipeError)
    known = sorted(load_taxonomy().dimensions)
    for v_index, view in enumerate(recipe.all_views):
        for dim, spec in view.labels.items():
            if dim not in known:  # a typo would otherwise drop the dimension's labels without a word
                key = f"views[{v_index}].labels.{dim}" if recipe.views else f"labels.{dim}"
                raise RecipeError(
                    f"{path}: {key}: unknown dimension {dim!r}{did_you_mean(dim, known)}; "
                    f"dimensions of the taxonomy: {', '.join(known)}"
                )
            unknown = set(spec) - {"positive", "negative", "neutral"}
            if unknown:
                raise RecipeError(f"{path}: labels.{dim}: unknown keys {sorted(unknown)}")
    return recipe


def load_recipes(
    folder: str | Path = RECIPE_DIR, licenses: str = "all", names: list[str] | None = None
) -> list[Recipe]:
    """All recipes in `folder`, sorted by name. `licenses='commercial'` keeps commercially usable sources only."""
    if licenses not in {"all", "commercial"}:
        raise RecipeError(f"licenses: expected 'all' or 'commercial', got {licenses!r}")
    recipes = [load_recipe(p) for p in sorted(Path(folder).glob("*.yaml"))]
    if names:
        unknown = set(names) - {r.name for r in recipes}
        if unknown:
            raise RecipeError(
                f"unknown sources {sorted(unknown)} (known: {', '.join(r.name for r in recipes)})"
            )
        recipes = [r for r in recipes if r.name in names]
    if licenses == "commercial":
        recipes = [r for r in recipes if r.commercial]
    return recipes


# ---------------------------------------------------------------------------------------------- loading


def _read_failure(exc: BaseException) -> str | None:
    """What went wrong reading a seed file, in words, with the fix; None if the error is not about the file."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, UnicodeDecodeError):
            return (
                f"not UTF-8 text ({seen.reason} at byte {seen.start}); re-save it as UTF-8 or set the recipe's "
                "local.options.encoding (e.g. latin-1)"
            )
        if isinstance(seen, pd.errors.EmptyDataError):
            return "empty file (no header, no rows); re-export it or remove it from the recipe"
        if "Invalid UTF8" in str(seen):  # pyarrow's json/parquet readers
            return "not UTF-8 text; re-save it as UTF-8 or set the recipe's local.options.encoding"
        if "corresponds to no data" in str(seen):
            return "no data rows (only a header?); re-export it or remove it from the recipe"
        seen = seen.__cause__ or seen.__context__
    return None


def _read_files(recipe: Recipe, folder: Path, paths: list[str], where: str):
    """`datasets.load_dataset` of local seed files; a file it cannot read is a RecipeError naming the file."""
    import datasets

    spec = recipe.local
    missing = [p for p in paths if not (folder / p).is_file()]
    if missing:
        raise RecipeError(f"{recipe.path}: {where}: missing files {missing} in {folder}")

    def load(files: list[str]):
        return datasets.load_dataset(
            spec.builder, data_files=[str(folder / p) for p in files], split="train", **spec.options
        )

    try:
        return load(paths)
    # datasets wraps the reader's error in a DatasetGenerationError, or raises ValueError for a file without rows
    except Exception as exc:
        culprit, reason = paths, _read_failure(exc)
        if len(paths) > 1:  # which file: load them one by one (only on this error path)
            for path in paths:
                try:
                    load([path])
                except Exception as single:
                    culprit, reason = [path], _read_failure(single) or reason
                    break
        files = ", ".join(str(folder / p) for p in culprit)
        raise RecipeError(
            f"{recipe.path}: source {recipe.name!r}: {where}: cannot read {files} as {spec.builder}: "
            + (
                reason
                or f"{type(exc).__name__}: {exc}; check the file and the recipe's local.builder/options"
            )
        ) from None


def _load_local(recipe: Recipe, root: Path) -> dict[str, pd.DataFrame]:
    spec = recipe.local
    folder = root / spec.folder
    if not folder.is_dir():
        raise RecipeError(f"{recipe.path}: source folder {folder} not found")
    frames: dict[str, pd.DataFrame] = {}
    for split, files in spec.splits.items():
        if isinstance(files, dict):  # parallel files, one column each (TweetEval's text + labels)
            columns = {}
            for column, paths in files.items():
                ds = _read_files(recipe, folder, paths, f"local.splits.{split}.{column}")
                columns[column] = ds.to_pandas().iloc[:, 0].tolist()
            lengths = {len(v) for v in columns.values()}
            if len(lengths) != 1:
                raise RecipeError(
                    f"{recipe.path}: local.splits.{split}: files have different line counts {lengths}"
                )
            frames[split] = pd.DataFrame(columns)
        else:
            frames[split] = _read_files(recipe, folder, files, f"local.splits.{split}").to_pandas()
    return frames


def _load_hub(recipe: Recipe) -> dict[str, pd.DataFrame]:
    import datasets

    spec = recipe.hub
    frames = {}
    for split, hub_split in spec.splits.items():
        ds = datasets.load_dataset(spec.path, spec.name, split=hub_split)
        frame = ds.to_pandas().rename(columns=spec.rename)
        for column, mapping in spec.values.items():
            frame[column] = frame[column].map(lambda v, m=mapping: m.get(v, v))
        frames[split] = frame
    return frames


def seeds_root(seeds: str | Path | None) -> Path | None:
    """The local seeds folder, or None for 'hub' (or nothing). A path that does not exist is an error at once:
    falling back to the hub would retry downloads for half a minute and then blame the network."""
    if seeds in (None, "", "hub"):
        return None
    root = Path(seeds)
    if not root.exists():
        raise RecipeError(
            f"seeds folder {root} not found: give the folder holding one sub-folder per source "
            "(the recipes' local.folder), or 'hub' to load every source from its Hugging Face Hub id"
        )
    if not root.is_dir():
        raise RecipeError(f"seeds {root} is a file: expected the folder holding one sub-folder per source")
    return root


def load_source(recipe: Recipe, seeds: str | Path | None) -> dict[str, pd.DataFrame]:
    """The source's raw rows per split: from `seeds/<folder>` if present, else from the hub id."""
    root = seeds_root(seeds)
    if root is not None and recipe.local is not None and (root / recipe.local.folder).is_dir():
        return _load_local(recipe, root)
    local_missing = (
        f"local folder {root / recipe.local.folder} not found"
        if root is not None and recipe.local is not None
        else None
    )
    if recipe.hub is not None:
        try:
            return _load_hub(recipe)
        except Exception as exc:  # network, missing config, renamed columns
            tried = f"{local_missing}, and " if local_missing else ""
            raise RecipeError(
                f"{recipe.path}: {tried}cannot load hub dataset {recipe.hub.path!r}: {exc}"
            ) from None
    where = local_missing or "no local folder"
    raise RecipeError(
        f"{recipe.path}: source {recipe.name!r} not found ({where}) and the recipe has no hub id"
    )


# ---------------------------------------------------------------------------------------------- deriving


def _derive(frame: pd.DataFrame, op: dict[str, Any], where: str) -> pd.DataFrame:
    kind = op.get("op")
    if kind == "filter":
        return frame[evaluate_rule(frame, op["where"], where)].reset_index(drop=True)
    if kind == "split_list":
        sep = op.get("sep", ",")

        def parse(value: Any) -> tuple:
            if isinstance(value, list | tuple | np.ndarray):
                return tuple(int(v) for v in value)
            return tuple(int(v) for v in str(value).split(sep) if v.strip())

        frame = frame.copy()
        frame[op["to"]] = frame[op["column"]].map(parse)
        return frame
    if kind == "split_text":
        parts = frame[op["column"]].astype(str).str.split(re.escape(op["sep"]), n=1, expand=True, regex=True)
        frame = frame.copy()
        for index, name in enumerate(op["to"]):
            frame[name] = parts[index].str.strip() if index in parts else None
        return frame
    if kind == "normalize_label":
        frame = frame.copy()
        frame[op["column"]] = frame[op["column"]].astype(str).str.strip().str.rstrip(":").str.lower()
        return frame
    if kind == "group_max":
        columns = op["columns"]
        maxima = frame.groupby(op["key"], sort=True)[columns].max()
        first = frame.drop(columns=columns).drop_duplicates(op["key"]).set_index(op["key"])
        return first.join(maxima).reset_index()
    raise RecipeError(
        f"{where}: unknown derive op {kind!r} (expected filter, split_list, split_text, group_max, normalize_label)"
    )


# ---------------------------------------------------------------------------------------------- rules

_OPS = {
    "eq",
    "ne",
    "in",
    "not_in",
    "ge",
    "gt",
    "le",
    "lt",
    "ge_quantile",
    "le_quantile",
    "any_of",
    "none_of",
    "not_null",
}


def _typed(series: pd.Series, sample: Any) -> pd.Series:
    if isinstance(sample, bool | int | float) and not isinstance(sample, str):
        return pd.to_numeric(series, errors="coerce")
    return series.astype(str).str.strip()


def _condition(frame: pd.DataFrame, cond: dict[str, Any], where: str) -> np.ndarray:
    column = cond.get("column")
    if column not in frame.columns:
        raise RecipeError(
            f"{where}: column {column!r} not in the source (columns: {', '.join(map(str, frame.columns))})"
        )
    ops = set(cond) - {"column"}
    if len(ops) != 1 or not ops <= _OPS:
        raise RecipeError(f"{where}: a condition needs `column` and one of {sorted(_OPS)}, got {sorted(ops)}")
    op = ops.pop()
    arg = cond[op]
    series = frame[column]
    if op == "not_null":
        out = series.notna() & (series.astype(str).str.strip() != "")
        return out.to_numpy() if arg else (~out).to_numpy()
    if op in {"any_of", "none_of"}:
        wanted = set(arg)
        hits = series.map(lambda values: bool(wanted.intersection(values)))
        return hits.to_numpy() if op == "any_of" else (~hits).to_numpy()
    if op in {"ge_quantile", "le_quantile"}:
        values = pd.to_numeric(series, errors="coerce")
        q = values.quantile(float(arg))
        return (values >= q).to_numpy() if op == "ge_quantile" else (values <= q).to_numpy()
    if op in {"in", "not_in"}:
        sample = arg[0] if arg else ""
        typed = _typed(series, sample)
        values = [str(v) for v in arg] if isinstance(sample, str) else arg
        hits = typed.isin(values)
        return hits.to_numpy() if op == "in" else (~hits).to_numpy()
    typed = _typed(series, arg)
    compare = {
        "eq": typed.__eq__,
        "ne": typed.__ne__,
        "ge": typed.__ge__,
        "gt": typed.__gt__,
        "le": typed.__le__,
        "lt": typed.__lt__,
    }
    return compare[op](arg).fillna(False).to_numpy(dtype=bool)


def evaluate_rule(frame: pd.DataFrame, rule: Any, where: str) -> np.ndarray:
    """Boolean mask of the rows a rule selects (see the module docstring for the rule grammar)."""
    if isinstance(rule, list):
        mask = np.ones(len(frame), dtype=bool)
        for part in rule:
            mask &= evaluate_rule(frame, part, where)
        return mask
    if isinstance(rule, dict) and "any" in rule:
        mask = np.zeros(len(frame), dtype=bool)
        for part in rule["any"]:
            mask |= evaluate_rule(frame, part, where)
        return mask
    if isinstance(rule, dict):
        return _condition(frame, rule, where)
    raise RecipeError(f"{where}: expected a condition mapping, a list or {{any: [...]}}, got {rule!r}")


@dataclass
class LabelledRows:
    """What one recipe yields: texts with per-dimension soft targets (NaN = no label for that dimension)."""

    source: str
    texts: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)  # the source's own split names
    targets: dict[str, list[float]] = field(default_factory=dict)


def label_source(recipe: Recipe, frames: dict[str, pd.DataFrame]) -> LabelledRows:
    """Apply derive ops and label rules to every split; rows without any label are dropped."""
    out = LabelledRows(source=recipe.name)
    dims = recipe.dimensions
    for split, raw in frames.items():
        frame = raw
        for index, op in enumerate(recipe.derive):
            frame = _derive(frame, op, f"{recipe.path}: derive[{index}]")
        for v_index, view in enumerate(recipe.all_views):
            where = f"{recipe.path}: views[{v_index}]" if recipe.views else f"{recipe.path}"
            if view.text not in frame.columns:
                raise RecipeError(
                    f"{where}: text column {view.text!r} not in the source (columns: {list(frame.columns)})"
                )
            texts = frame[view.text]
            has_text = texts.notna().to_numpy() & (texts.astype(str).str.strip() != "").to_numpy()
            view_targets = {}
            for dim in dims:
                target = np.full(len(frame), np.nan)
                spec = view.labels.get(dim)
                if spec:
                    pos = (
                        evaluate_rule(frame, spec["positive"], f"{where}: labels.{dim}.positive")
                        if "positive" in spec
                        else np.zeros(len(frame), bool)
                    )
                    neg = (
                        evaluate_rule(frame, spec["negative"], f"{where}: labels.{dim}.negative")
                        if "negative" in spec
                        else np.zeros(len(frame), bool)
                    )
                    neutral_rule = spec.get("neutral")
                    if neutral_rule == "rest":
                        neu = ~(pos | neg)
                    elif neutral_rule is not None:
                        neu = evaluate_rule(frame, neutral_rule, f"{where}: labels.{dim}.neutral") & ~(
                            pos | neg
                        )
                    else:
                        neu = np.zeros(len(frame), bool)
                    both = pos & neg
                    target[pos & ~both] = 1.0
                    target[neg & ~both] = 0.0
                    target[neu] = NEUTRAL_TARGET
                view_targets[dim] = target
            keep = has_text & np.any([~np.isnan(t) for t in view_targets.values()], axis=0)
            out.texts.extend(texts[keep].astype(str).tolist())
            out.splits.extend([split] * int(keep.sum()))
            for dim in dims:
                out.targets.setdefault(dim, []).extend(view_targets[dim][keep].tolist())
    return out
