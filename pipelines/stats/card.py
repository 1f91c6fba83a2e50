"""The dataset card (`README.md`) of a version, with a Hugging Face dataset-card YAML header.

People read the card before training on a version, and `datasets.load_dataset(version_dir, "pretrain")` reads
its `configs` to find the data files, so the card is generated from the version's own files (its stats
tables, `mixture.json`, the classifier bundle's manifest) and can never disagree with what it describes.
`write_card(ctx, version_id)` is called by `publish_run` after `write_stats` and before the manifest is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from pipelines.atomic import write_text_atomic
from pipelines.parquet import parquet_paths
from pipelines.stats.licenses import card_license_ids, input_root, license_of
from pipelines.stats.sources import read_json
from pipelines.stats.tables import NEW_INPUTS, STATS_DIR, label_per_run_stages, load

if TYPE_CHECKING:
    from pipelines.config import CorpusConfig
    from pipelines.context import RunContext

LID_ATTRIBUTION = (
    "Language identification uses fastText's `lid.176.ftz` (Joulin et al. 2016, https://fasttext.cc), "
    "licensed CC BY-SA 3.0."
)
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]


def size_category(rows: int) -> str:
    for limit, name in SIZE_CATEGORIES:
        if rows < limit:
            return name
    return "n>1T"


def data_configs(version: Path) -> list[dict[str, Any]]:
    """One `configs` entry per data folder with Parquet files: pretrain (default), pretrain_<profile>, midtrain.

    Each entry carries its `dataset_info` (rows and bytes; see `dataset_infos`), popped off by the caller.
    """
    folders = []
    if (version / "pretrain").is_dir():
        folders.append("pretrain")
    folders += sorted(p.name for p in version.glob("pretrain_*") if p.is_dir())
    if (version / "midtrain").is_dir():
        folders.append("midtrain")
    configs = []
    for folder in folders:
        files = parquet_paths(version / folder)
        footers = [pq.ParquetFile(p).metadata for p in files]
        rows = sum(m.num_rows for m in footers)
        if not rows:
            continue  # a config without rows makes load_dataset fail (e.g. every dialogue was rejected)
        entry: dict[str, Any] = {
            "config_name": folder,
            "data_files": [{"split": "train", "path": f"{folder}/*.parquet"}],
            "_info": {
                "config_name": folder,
                # num_bytes (uncompressed, from the footers) too: `datasets` calls a split without it
                # malformed and warns on every load_dataset
                "splits": [
                    {
                        "name": "train",
                        "num_bytes": sum(
                            m.row_group(i).total_byte_size for m in footers for i in range(m.num_row_groups)
                        ),
                        "num_examples": rows,
                    }
                ],
                "download_size": sum(p.stat().st_size for p in files),
            },
        }
        if folder == "pretrain":
            entry["default"] = True
        configs.append(entry)
    return configs


def source_licenses(version: Path, inputs: list[str]) -> pd.DataFrame:
    """Distinct documents of the published pretraining data per source folder, with the licence found next to it.

    Every profile folder counts: profiles tier (and drop) documents differently, so a source can reach
    `pretrain_<profile>/` and not `pretrain/`. A source's `documents` is its distinct document ids over the
    union of all `pretrain*` folders (a document in two profiles, or repeated within one, counts once).
    """
    roots = [input_root(i) for i in inputs]
    # (source number, 64-bit hash of the id) of every distinct document, sorted, merged one folder at a time
    # (ids are sha256 hex: no collisions to fear). Why: a table of (source, id) strings for the whole version
    # cost about 210 bytes a document in the driver (1.1 GB at 4M documents); this holds 12.
    names: dict[str, int] = {}
    sources, keys = np.empty(0, np.uint32), np.empty(0, np.uint64)
    for folder in sorted(version.glob("pretrain*")):
        parts: list[tuple[np.ndarray, np.ndarray]] = []
        for file in parquet_paths(folder):
            schema = pq.read_schema(file)
            if "source" not in schema.names or "id" not in schema.names:
                continue
            columns = ["source", "id"] + (["repeat_index"] if "repeat_index" in schema.names else [])
            for batch in pq.ParquetFile(file).iter_batches(batch_size=1 << 16, columns=columns):
                frame = batch.to_pandas()
                if "repeat_index" in frame:
                    frame = frame[frame["repeat_index"] == 0]
                codes, found = pd.factorize(frame["source"].fillna("(unknown)").astype(str))
                number = np.array([names.setdefault(name, len(names)) for name in found], np.uint32)
                parts.append((number[codes], pd.util.hash_array(frame["id"].astype(str).to_numpy(object))))
        if parts:
            sources = np.concatenate([sources, *(p[0] for p in parts)])
            keys = np.concatenate([keys, *(p[1] for p in parts)])
            order = np.lexsort((keys, sources))
            sources, keys = sources[order], keys[order]
            first = np.ones(len(keys), bool)
            first[1:] = (sources[1:] != sources[:-1]) | (keys[1:] != keys[:-1])
            sources, keys = sources[first], keys[first]
    per_source = np.bincount(sources, minlength=len(names))
    counts = {name: int(per_source[number]) for name, number in sorted(names.items()) if per_source[number]}
    rows: dict[tuple[str, str, str | None], dict[str, Any]] = {}
    for source, n in counts.items():
        lic = license_of(source, roots)
        key = (lic.root, lic.license, lic.license_file)
        row = rows.setdefault(
            key,
            {
                "source": lic.root,
                "license": lic.license,
                "license_file": lic.license_file,
                "files": 0,
                "documents": 0,
            },
        )
        row["files"] += 1
        row["documents"] += n
    frame = pd.DataFrame(
        list(rows.values()), columns=["source", "license", "license_file", "files", "documents"]
    )
    return frame.sort_values(["documents", "source"], ascending=[False, True]).reset_index(drop=True)


def _bundle_manifest(config: CorpusConfig) -> tuple[Path | None, dict[str, Any] | None]:
    try:
        from classifiers.bundle import resolve_bundle_path
    except ImportError:  # pragma: no cover - the leaf package always ships with pipelines
        return None, None
    path = resolve_bundle_path(config.classifier.bundle)
    try:
        return path, read_json(path / "manifest.json")
    except ValueError:
        return path, None


def _md_table(frame: pd.DataFrame, columns: list[str] | None = None, floats: str = "{:.3f}") -> list[str]:
    if frame is None or not len(frame):
        return ["(none)"]
    columns = columns or list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        cells = []
        for col in columns:
            value = row[col]
            if isinstance(value, float):
                cells.append("" if pd.isna(value) else floats.format(value))
            elif value is None or (not isinstance(value, str) and pd.isna(value)):
                cells.append("")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append(str(value).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_card(
    version: Path,
    config: CorpusConfig,
    version_id: str | None = None,
    parent: str | None = None,
    results: dict[str, Any] | None = None,
) -> str:
    """The card's text for the (staged or published) version folder `version`."""
    from pipelines.stats.drift import compare

    version = Path(version)
    tables = load(version) if (version / STATS_DIR).is_dir() else {}
    stages = tables.get("stages", pd.DataFrame())
    mixture = read_json(version / "mixture.json") or {}
    configs = data_configs(version)
    # `datasets` keys its cache of a local folder by the folder's name and the card's configs, not by the
    # files: two corpora's `v2` (or `latest` after it moved) would share a cache entry. Rows and bytes per
    # config in `dataset_info` make the key change with the data, and `datasets` checks the row counts.
    infos = [entry.pop("_info") for entry in configs]
    sources = source_licenses(version, list(config.input))
    licenses = list(config.publish.license) or card_license_ids(list(sources["license"]))
    bundle_path, bundle = _bundle_manifest(config)
    languages = tables.get("languages", pd.DataFrame())
    primary = next((c["config_name"] for c in configs if c.get("default")), None)
    pretrain_langs = []
    if len(languages) and primary:
        part = languages[languages["dataset"] == primary].groupby("language")["documents"].sum()
        pretrain_langs = [str(x) for x in part.sort_values(ascending=False).index if x != "unknown"]
    primary_rows = (
        int(stages.loc[stages["dataset"] == primary, "rows"].sum()) if len(stages) and primary else 0
    )
    name = f"prosocial-corpus {version_id}" if version_id else "prosocial-corpus"

    header: dict[str, Any] = {
        "pretty_name": name,
        "license": licenses if len(licenses) > 1 else licenses[0],
        "language": pretrain_langs or list(config.curate.languages),
        "task_categories": ["text-generation"],
        "tags": ["prosocial", "pretraining", "midtraining", "synthetic", "datatrove"],
        "size_categories": [size_category(primary_rows)],
        "configs": configs,
        "dataset_info": infos,
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]
    lines += [
        f"# {name}",
        "",
        "A prosocial pretraining and mid-training corpus built by the prosocial-corpus pipeline "
        "(`corpus run`): web text extracted, language-identified and "
        "quality-filtered, deduplicated, scored by fastText prosociality classifiers along several value "
        "dimensions, tiered by a user-authored profile and upsampled with capped repetition, plus synthetic "
        "dialogues checked by the same classifiers.",
        "",
        f"- version: `{version_id or 'unpublished'}`" + (f" (previous: `{parent}`)" if parent else ""),
    ]
    version_table = tables.get("version")
    if version_table is not None and len(version_table):
        row = version_table.iloc[0]
        lines += [
            f"- created: {row.get('created')}",
            f"- run: `{row.get('run_id')}`, config hash `{str(row.get('config_hash'))[:12]}`",
        ]
    lines += ["", "## How to load", "", "```python", "from datasets import load_dataset", ""]
    for entry in configs:
        lines.append(
            f'{entry["config_name"]} = load_dataset("path/to/{version_id or "version"}", '
            f'"{entry["config_name"]}", split="train")'
        )
    lines += [
        "```",
        "",
        f"Load a version by its own folder (`versions/{version_id or '<id>'}`), not through the `latest` symlink:",
        "`datasets` caches a local folder by its name and this card, so the resolved folder is the unambiguous name.",
        "",
        'Every file is plain Parquet (zstd), so `pandas.read_parquet("pretrain/")` or any Parquet reader works too.',
        "`pipelines.stats.load(path)` returns the statistics tables under `stats/` as pandas DataFrames, and",
        "`corpus report OUT` renders them as an HTML report.",
        "",
        "## Contents",
        "",
    ]
    contents, note = label_per_run_stages(tables, f" ({NEW_INPUTS})")
    lines += _md_table(
        contents,
        ["stage", "dataset", "location", "shards", "rows", "documents", "tokens", "documents_in", "dropped"],
    )
    if note:
        lines += ["", note[0].upper() + note[1:] + "."]
    lines += [
        "",
        "`pretrain*` rows include repeats: a document upsampled to three copies is three rows (`repeat_index`",
        "0, 1, 2), so `documents` counts distinct documents. `scored` and `deduped` live in the run's work",
        "folder and are described here for accounting only.",
        "",
        "Columns of `pretrain*`: `id`, `text`, `url`, `source`, `source_offset`, `crawl_date`, `language`,",
        "`language_score`, `ps_<dimension>` (P(prosocial) per value dimension, in [0, 1]), `prosocial` (the",
        "profile aggregate), `token_count`, `dup_cluster_size`, `classifier_version`, `tier`, `repeat_index`.",
        "`midtrain` holds chat-format dialogues: `messages` (list of {role, content}), `dimension`, `scenario`,",
        "`persona`, `grounding_doc_id`, `model`, `sampling`, `ps_*` and `validation`.",
        "",
    ]
    drops = tables.get("drops", pd.DataFrame())
    if len(drops):
        top = drops.groupby(["stage", "reason"])["documents"].sum().reset_index()
        top = top[top["documents"] > 0].sort_values(["stage", "documents"], ascending=[True, False])
        lines += ["### Documents dropped, by stage and reason", ""]
        lines += _md_table(top, ["stage", "reason", "documents"])
        lines.append("")

    lines += ["## Sources and licences", ""]
    if config.publish.license:
        lines += [
            f"Licence set by the publisher (`publish.license`): {', '.join(config.publish.license)}.",
            "",
        ]
    lines += [
        "Per source folder: the licence file found next to the inputs (`unknown` when none was found; check the",
        "original terms before redistributing). Web pages remain subject to the rights of their authors.",
        "`documents` counts distinct document ids over the union of all `pretrain*` folders.",
        "",
    ]
    lines += _md_table(
        sources.rename(columns={"documents": "documents (distinct, all pretrain*)"}),
        ["source", "license", "files", "documents (distinct, all pretrain*)"],
    )
    lines += [
        "",
        f"Inputs as configured: {', '.join(f'`{i}`' for i in config.input)}.",
        "",
        LID_ATTRIBUTION,
        "",
    ]

    lines += ["## Classifiers", ""]
    if bundle:
        lines += [
            f"Bundle `{bundle.get('name', bundle_path.name if bundle_path else '')}`, version "
            f"`{bundle.get('version')}`, dimensions: {', '.join(bundle.get('dimensions', []))}.",
        ]
        data_versions = []
        if (
            version_table is not None
            and len(version_table)
            and version_table.iloc[0].get("classifier_version")
        ):
            data_versions = str(version_table.iloc[0]["classifier_version"]).split(",")
        if data_versions and bundle.get("version") not in data_versions:
            lines.append(
                f"Note: the documents were scored by classifier version(s) {', '.join(data_versions)}, "
                "not by the bundle configured now."
            )
        lines += [
            "",
            "| dimension | evaluation set | n pos / neg | ROC-AUC | F1 | ECE |",
            "|---|---|---|---|---|---|",
        ]
        for dim in bundle.get("dimensions", []):
            for set_name, m in (bundle.get("models", {}).get(dim, {}).get("metrics") or {}).items():
                lines.append(
                    f"| {dim} | {set_name} | {m.get('n_pos')} / {m.get('n_neg')} | {_num(m.get('auc'))} | "
                    f"{_num(m.get('f1'))} | {_num(m.get('ece'))} |"
                )
        training_sources = bundle.get("sources") or []
        if training_sources:
            lines += ["", "Classifier training data (labels, not redistributed here):", ""]
            lines += [
                f"- {s.get('name')}: {s.get('license')}"
                + ("" if s.get("commercial", True) else " (non-commercial)")
                for s in training_sources
            ]
    else:
        lines.append(f"No classifier bundle manifest found at `{bundle_path}`; documents may be unscored.")
    scores = tables.get("scores", pd.DataFrame())
    if len(scores) and primary:
        from pipelines.stats.scan import merge_metrics

        part = merge_metrics(scores[scores["dataset"] == primary], ["column"])
        part = part[part["column"] != "token_count"]
        lines += ["", f"Score distribution in `{primary}` (distinct documents):", ""]
        lines += _md_table(part, ["column", "n", "mean", "std", "min", "max"])
    lines.append("")

    lines += ["## Profiles and mixture", ""]
    tiers = tables.get("tiers", pd.DataFrame())
    for pname, entry in mixture.get("profiles", {}).items():
        profile = entry.get("profile", {})
        weights = ", ".join(f"{k} {v:g}" for k, v in (profile.get("weights") or {}).items())
        lines += [
            f"### `{pname}` -> `{entry.get('folder')}/`" + (" (primary)" if entry.get("primary") else ""),
            "",
            f"{profile.get('description', '')}".strip() or "(no description)",
            "",
            f"Weights: {weights}. At most {entry.get('max_epochs', mixture.get('max_epochs'))} copies per document "
            f"(Muennighoff et al. 2023).",
            "",
        ]
        lines += _md_table(
            tiers[tiers["profile"] == pname] if len(tiers) else tiers,
            [
                "tier",
                "min_score",
                "factor",
                "input_documents",
                "documents",
                "rows",
                "tokens",
                "effective_epochs",
                "share",
            ],
        )
        lines.append("")
    if not mixture.get("profiles"):
        lines += ["No mixture.json in this version.", ""]

    synthetic = tables.get("synthetic", pd.DataFrame())
    lines += ["## Synthetic dialogues", ""]
    synth_result = (results or {}).get("synthesize") or {}
    if len(synthetic) and (synthetic["dialogues"] > 0).any():
        totals = (
            synthetic[synthetic["outcome"].isin(["attempted", "accepted"])]
            .groupby("outcome")["dialogues"]
            .sum()
        )
        lines.append(
            f"Generated with `{synth_result.get('model', config.synthetic.model)}`: {int(totals.get('attempted', 0))} "
            f"attempted, {int(totals.get('accepted', 0))} accepted after structure, language, classifier "
            f"(threshold {config.synthetic.min_score}) and near-duplicate checks."
        )
        rejected = (
            synthetic[synthetic["outcome"] == "rejected"].groupby("reason")["dialogues"].sum().reset_index()
        )
        if len(rejected):
            lines += ["", "Rejected dialogues by first failed check:", ""]
            lines += _md_table(rejected.sort_values("dialogues", ascending=False), ["reason", "dialogues"])
        lines += ["", "The licence of generated text follows the generator model's terms."]
    else:
        lines.append("No synthetic dialogues in this version.")
    lines.append("")

    if parent:
        parent_dir = version.parent / parent if (version.parent / parent).is_dir() else None
        if parent_dir is None and version.parent.name != "versions":
            candidate = Path(config.out) / "versions" / parent
            parent_dir = candidate if candidate.is_dir() else None
        if parent_dir is not None and (parent_dir / STATS_DIR).is_dir() and tables:
            drift = compare(parent_dir, tables)
            counts = drift["counts"]
            lines += [f"## Changes since `{parent}`", ""]
            lines += [f"Note: {note}." for note in drift["notes"]["note"]]
            lines += [""] if len(drift["notes"]) else []
            lines += _md_table(counts, ["stage", "dataset", "rows_old", "rows_new", "rows_delta"])
            lines.append("")

    lines += [
        "## Limitations",
        "",
        "Prosociality scores come from small fastText classifiers trained on short social-media and news",
        "comments; on long web pages they drift, and proxy labels (emotion, hope speech) measure the expression",
        "of care rather than conduct. Tiers and upsampling amplify whatever the classifiers prefer, including",
        "their biases. Quality filters and language ID under-serve some languages and dialects. Inspect the",
        "`stats/` tables (or `corpus report`) before training.",
        "",
        "## Files",
        "",
        "- `pretrain/`, `pretrain_<profile>/`, `midtrain/`: the data (Parquet, zstd).",
        "- `stats/*.parquet`: per shard and per stage statistics (`pipelines.stats.load`).",
        "- `mixture.json`: tiers, solved factors, effective epochs and blend weights per profile.",
        "- `manifest.json`: every file with rows, bytes and sha256; `corpus verify` re-checks them.",
        "",
    ]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else ("" if value is None else str(value))


def write_card(ctx: RunContext, version_id: str) -> Path:
    """Write `<staging>/README.md` for the version being published; returns its path."""
    from pipelines.publish.publish import latest_version

    text = render_card(
        ctx.staging,
        ctx.config,
        version_id=version_id,
        parent=latest_version(ctx.out),
        results=json.loads(json.dumps(ctx.results, default=str)),
    )
    path = ctx.staging / "README.md"
    write_text_atomic(path, text)
    return path
