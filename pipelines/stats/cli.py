"""`corpus stats OUT`: a compact terminal summary of a published version (and its drift from another).

For a quick look in a terminal or a cron mail: stage counts, drop reasons, languages, score distributions
as sparklines, tiers and effective epochs, synthetic acceptance, top domains. `--table NAME` prints one
full stats table (CSV with `--csv`) for piping into other tools.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

from pipelines.stats.scan import dense_histogram, merge_metrics
from pipelines.stats.tables import (
    StatsError,
    label_per_run_stages,
    load,
    primary_dataset,
    require,
    resolve_version,
)

SPARK = "▁▂▃▄▅▆▇█"
# the tables the summary reads; `--table` works with whatever a version has
SUMMARY_TABLES = ("stages", "drops", "languages", "histograms", "scores")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output root (uses OUT/latest) or a version folder")
    parser.add_argument("--version", help="version id under OUT/versions (default: latest)")
    parser.add_argument("--compare", metavar="VERSION", help="also show drift from this version id (e.g. v1)")
    parser.add_argument("--table", help="print one whole stats table instead of the summary (e.g. shards)")
    parser.add_argument("--csv", action="store_true", help="with --table: CSV instead of an aligned table")


def sparkline(counts: np.ndarray) -> str:
    counts = np.asarray(counts, dtype=float)
    if not counts.size or counts.max() <= 0:
        return ""
    levels = np.ceil(counts / counts.max() * (len(SPARK) - 1)).astype(int)
    return "".join(" " if c == 0 else SPARK[level] for c, level in zip(counts, levels, strict=True))


def human(n: float) -> str:
    for unit in ("", "k", "M", "G", "T"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}P"


def summary_text(tables: dict[str, pd.DataFrame], drift: dict[str, pd.DataFrame] | None = None) -> str:
    """The summary as text (also used by tests and the report's plain-text fallback)."""
    lines: list[str] = []
    version = tables.get("version")
    if version is not None and len(version):
        row = version.iloc[0]
        parent = f" (previous: {row['parent']})" if row.get("parent") else ""
        lines.append(
            f"prosocial-corpus {row.get('version')}{parent}  run {row.get('run_id')}  created {row.get('created')}"
        )
        lines.append(
            f"  profiles: {row.get('profiles')}  classifier: {row.get('classifier_version')}  path: {row.get('path', '')}"
        )
    stages, note = label_per_run_stages(tables, "*")
    show = stages[
        ["stage", "dataset", "shards", "documents_in", "dropped", "rows", "documents", "tokens", "text_bytes"]
    ]
    show = show.rename(columns={"documents_in": "in", "documents": "docs", "text_bytes": "text"})
    for col in ("tokens", "text"):
        show[col] = show[col].map(human)
    lines += ["", show.to_string(index=False)]
    if note:
        lines.append(f"* {note}")

    drops = tables["drops"]
    if len(drops):
        lines += ["", "dropped, by stage and reason:"]
        for stage, group in drops.groupby("stage", sort=False):
            top = group.groupby("reason")["documents"].sum().sort_values(ascending=False)
            lines.append(
                f"  {stage}: "
                + ", ".join(f"{r} {n}" for r, n in top.head(8).items())
                + (f", ... ({len(top) - 8} more)" if len(top) > 8 else "")
            )

    # bad input files (and files in no readable format) are events, not documents: not in the drops above
    events = tables.get("events", pd.DataFrame(columns=["stage", "kind", "reason", "count"]))
    for kind, title in (("file_errors", "input file errors"), ("not_read", "input files not read")):
        chosen = events[events["kind"] == kind] if len(events) else events
        if len(chosen):
            lines += ["", f"{title}, by stage and reason (`--table events`):"]
            for stage, group in chosen.groupby("stage", sort=False):
                top = group.groupby("reason")["count"].sum().sort_values(ascending=False)
                lines.append(f"  {stage}: " + ", ".join(f"{r} {n}" for r, n in top.items()))

    primary = primary_dataset(tables)
    if primary:
        lang = tables["languages"]
        lang = (
            lang[lang["dataset"] == primary]
            .groupby("language")["documents"]
            .sum()
            .sort_values(ascending=False)
        )
        if len(lang):
            total = lang.sum()
            lines += [
                "",
                f"languages ({primary}, distinct documents): "
                + ", ".join(f"{k} {v / total:.1%}" for k, v in lang.head(8).items()),
            ]
        hist = tables["histograms"]
        hist = hist[hist["dataset"] == primary]
        scores = merge_metrics(tables["scores"][tables["scores"]["dataset"] == primary], ["column"])
        if len(scores):
            lines += ["", f"scores ({primary}, distinct documents; histogram over [0, 1]):"]
            width = max(len(c) for c in scores["column"])
            for row in scores.itertuples():
                if row.column == "token_count":
                    continue
                spark = sparkline(dense_histogram(hist, row.column)["count"].to_numpy())
                lines.append(f"  {row.column.ljust(width)}  mean {row.mean:.3f} ± {row.std:.3f}  |{spark}|")

    tiers = tables.get("tiers", pd.DataFrame())
    if len(tiers):
        lines += ["", "tiers (documents in scored input -> rows in mixture, effective epochs, token share):"]
        for (profile, dataset), group in tiers.groupby(["profile", "dataset"], sort=False):
            lines.append(f"  {profile} -> {dataset}/")
            for row in group.itertuples():
                # without mixture.json (a version published before it existed) the inputs are unknown
                known = pd.notna(row.input_documents)
                lines.append(
                    f"    {str(row.tier):<20} {int(row.input_documents) if known else '?':>8} -> {int(row.rows):>8}"
                    f"  x{row.effective_epochs:.2f}  {row.share:6.1%}"
                )

    synthetic = tables.get("synthetic", pd.DataFrame())
    if len(synthetic) and (synthetic["dialogues"] > 0).any():
        total = synthetic.groupby("outcome")["dialogues"].sum()
        rejected = synthetic[synthetic["outcome"] == "rejected"].groupby("reason")["dialogues"].sum()
        lines += [
            "",
            f"synthetic: {int(total.get('attempted', 0))} attempted, {int(total.get('accepted', 0))} accepted"
            + (
                "; rejected: "
                + ", ".join(f"{r} {n}" for r, n in rejected.sort_values(ascending=False).items())
                if len(rejected)
                else ""
            ),
        ]

    domains = tables.get("domains", pd.DataFrame())
    if primary and len(domains):
        top = domains[domains["dataset"] == primary].head(8)
        if len(top):
            lines += [
                "",
                f"top domains ({primary}): "
                + ", ".join(f"{d} {n}" for d, n in zip(top["domain"], top["documents"], strict=True)),
            ]

    if drift:
        versions = drift["versions"]["version"].tolist()
        lines += ["", f"drift {versions[0]} -> {versions[1]}:"]
        notes = drift.get("notes")
        if notes is not None:
            lines += [f"  ({note})" for note in notes["note"]]
        for row in drift["counts"].itertuples():
            change = f" ({row.rows_change:+.1%})" if pd.notna(row.rows_change) else ""
            lines.append(
                f"  {row.stage}/{row.dataset}: rows {int(row.rows_old)} -> {int(row.rows_new)}{change}"
            )
        scores = drift["scores"]
        scores = scores[(scores["dataset"] == primary) & (scores["column"] != "token_count")]
        for row in scores.itertuples():
            lines.append(
                f"  {row.column}: mean {row.mean_old:.3f} -> {row.mean_new:.3f} (KS {row.ks:.3f}, PSI {row.psi:.3f})"
            )
        tiers = drift["tiers"]
        if len(tiers) and "share_old" in tiers:
            for row in tiers[tiers["dataset"] == primary].itertuples():
                lines.append(f"  tier {row.tier}: share {row.share_old:.1%} -> {row.share_new:.1%}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    try:
        folder = resolve_version(args.out, args.version)
        tables = load(folder)
        if not args.table:
            require(tables, SUMMARY_TABLES, folder)
    except StatsError as exc:
        print(f"corpus stats: {exc}", file=sys.stderr)
        return 2
    if args.table:
        if args.table not in tables:
            print(
                f"corpus stats: no table '{args.table}' (have: {', '.join(sorted(tables))})", file=sys.stderr
            )
            return 2
        frame = tables[args.table]
        return _print(frame.to_csv(index=False) if args.csv else frame.to_string(index=False))
    drift = None
    if args.compare:
        from pipelines.stats.drift import compare

        try:
            other = (
                resolve_version(folder.parent.parent, args.compare)
                if folder.parent.name == "versions"
                else resolve_version(args.out, args.compare)
            )
            previous = load(other)
            require(previous, SUMMARY_TABLES, other)
            drift = compare(previous, tables)
        except StatsError as exc:
            print(f"corpus stats: {exc}", file=sys.stderr)
            return 2
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        return _print(summary_text(tables, drift))


def _print(text: str) -> int:
    """Print, staying quiet when the reader went away (`corpus stats OUT | head`)."""
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
