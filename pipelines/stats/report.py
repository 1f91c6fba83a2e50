"""`corpus report OUT`: a static, self-contained HTML report of a version, for people who would rather look.

One file with inline PNG figures and inline CSS, no scripts and no network requests, so it can be mailed,
attached to a ticket or opened from a laptop without the corpus next to it. It shows the stage funnel, drop
reasons, score distributions (scored input against the upsampled mixture), tier shares and effective epochs,
languages, token lengths, shards, synthetic outcomes and drift from the previous version (or `--compare`).

The report is written next to the versions (`OUT/reports/<version>.html` by default), never inside a version
folder: published versions are immutable and fully described by their manifest.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from pipelines.atomic import write_text_atomic
from pipelines.stats import plots
from pipelines.stats.cli import SUMMARY_TABLES, summary_text
from pipelines.stats.tables import StatsError, label_per_run_stages, load, require, resolve_version

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f5f8; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.6em 0; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
.warn { color: #a33; font-weight: bold; }
.scroll { overflow-x: auto; }
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output root (uses OUT/latest) or a version folder")
    parser.add_argument("--version", help="version id under OUT/versions (default: latest)")
    parser.add_argument(
        "--compare", metavar="VERSION", help="version id to show drift from (default: the parent)"
    )
    parser.add_argument("-o", "--output", help="HTML file to write (default: OUT/reports/<version>.html)")


def figure_html(fig: Figure | None, alt: str) -> str:
    """A figure as an inline PNG <img> (empty string for None)."""
    if fig is None:
        return ""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table_html(frame: pd.DataFrame | None, columns: list[str] | None = None, limit: int = 50) -> str:
    if frame is None or not len(frame):
        return "<p>(none)</p>"
    frame = frame[columns] if columns else frame
    table = frame.head(limit).to_html(index=False, escape=True, float_format=lambda v: f"{v:,.3f}", na_rep="")
    more = f'<p class="meta">first {limit} of {len(frame)} rows</p>' if len(frame) > limit else ""
    return f'<div class="scroll">{table}</div>{more}'


def render_report(
    tables: dict[str, pd.DataFrame],
    drift: dict[str, pd.DataFrame] | None = None,
    old: dict[str, pd.DataFrame] | None = None,
) -> str:
    """The report as one HTML string."""
    version = tables["version"].iloc[0] if len(tables.get("version", ())) else {}
    title = f"prosocial-corpus {version.get('version') or ''}".strip()
    primary = plots.primary_dataset(tables)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<link rel="icon" href="data:,">',  # no favicon request
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">run {html.escape(str(version.get("run_id")))} · created {html.escape(str(version.get("created")))}'
        f" · profiles {html.escape(str(version.get('profiles')))} · classifier {html.escape(str(version.get('classifier_version')))}"
        f" · previous {html.escape(str(version.get('parent') or '-'))}</p>",
    ]
    stages, note = label_per_run_stages(tables, "*")
    unaccounted = (
        stages[stages["unaccounted"].notna() & (stages["unaccounted"] != 0)] if len(stages) else stages
    )
    if len(unaccounted):
        parts.append(
            '<p class="warn">Documents unaccounted for (in != out + dropped): '
            + html.escape(
                ", ".join(f"{r.stage}/{r.dataset}: {r.unaccounted}" for r in unaccounted.itertuples())
            )
            + "</p>"
        )
    parts += [
        "<h2>Stages</h2>",
        table_html(
            stages,
            [
                "stage",
                "dataset",
                "shards",
                "documents_in",
                "dropped",
                "rows",
                "documents",
                "tokens",
                "text_bytes",
                "file_bytes",
            ],
        ),
        *([f"<p>* {html.escape(note)}.</p>"] if note else []),
        figure_html(plots.stage_funnel({**tables, "stages": stages}), "documents per stage"),
        "<h2>Drop reasons</h2>",
        figure_html(plots.drop_reasons(tables), "drop reasons"),
        "<h2>Score distributions</h2>",
        "<p>Distinct documents of the scored input against the rows of the mixture (repeats count), "
        "normalised to densities: upsampling shifts the mixture towards the higher tiers.</p>",
        figure_html(plots.score_distributions(tables), "score distributions"),
        "<h2>Tiers and effective epochs</h2>",
        figure_html(plots.tier_shares(tables), "tier shares"),
        table_html(tables.get("tiers"), None),
        "<h2>Languages and lengths</h2>",
        figure_html(plots.languages(tables), "languages"),
        figure_html(plots.token_lengths(tables), "token lengths"),
        "<h2>Shards</h2>",
        figure_html(plots.shard_overview(tables), "shards"),
        table_html(
            tables["shards"],
            [
                "stage",
                "dataset",
                "shard",
                "rows",
                "documents",
                "documents_in",
                "dropped",
                "tokens",
                "file_bytes",
            ],
            limit=200,
        ),
    ]
    synthetic = plots.synthetic_outcomes(tables)
    if synthetic is not None:
        parts += ["<h2>Synthetic dialogues</h2>", figure_html(synthetic, "synthetic dialogues")]
    domains = tables.get("domains")
    if domains is not None and len(domains) and primary:
        parts += [
            f"<h2>Top domains ({html.escape(primary)})</h2>",
            table_html(domains[domains["dataset"] == primary], ["domain", "documents", "tokens"], limit=30),
        ]
    if drift is not None and old is not None:
        labels = drift["versions"]["version"].tolist()
        refresh_note = (
            "<p>This version is a refresh: curate and dedup count only its new inputs, while the mixture is "
            "rebuilt from every kept document.</p>"
            if str(version.get("mode")) == "refresh"
            else ""
        )
        notes = drift.get("notes")
        parts += [
            f"<h2>Drift {html.escape(labels[0])} → {html.escape(labels[1])}</h2>",
            refresh_note,
            *(f"<p>{html.escape(note)}.</p>" for note in (notes["note"] if notes is not None else [])),
            figure_html(plots.version_drift(drift, old, tables), "version drift"),
            table_html(
                drift["counts"], ["stage", "dataset", "rows_old", "rows_new", "rows_delta", "rows_change"]
            ),
            table_html(
                drift["scores"],
                ["stage", "dataset", "column", "mean_old", "mean_new", "ks", "wasserstein", "psi"],
            ),
        ]
    parts += [
        "<h2>Summary (as printed by <code>corpus stats</code>)</h2>",
        f"<pre>{html.escape(summary_text(tables, drift))}</pre>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def _previous(folder: Path, tables: dict[str, pd.DataFrame], compare: str | None) -> Path | None:
    versions = folder.parent
    wanted = compare
    if wanted is None and len(tables.get("version", ())):
        wanted = tables["version"]["parent"].iloc[0] or None
    if not wanted:
        return None
    candidate = versions / wanted
    if candidate.is_dir() and (candidate / "stats").is_dir():
        return candidate
    if compare:
        raise StatsError(f"{candidate}: no such version with stats/ to compare against")
    return None


def write_report(
    path: str | os.PathLike,
    output: str | os.PathLike | None = None,
    version: str | None = None,
    compare: str | None = None,
) -> Path:
    """Render the report of a version (OUT or version folder) and write it atomically; returns the file."""
    from pipelines.stats.drift import compare as compare_versions

    folder = resolve_version(path, version)
    tables = load(folder)
    require(tables, SUMMARY_TABLES, folder)
    previous = _previous(folder, tables, compare)
    old = load(previous) if previous else None
    drift = compare_versions(old, tables) if old is not None else None
    text = render_report(tables, drift, old)
    if output is None:
        root = folder.parent.parent if folder.parent.name == "versions" else Path.cwd()
        output = root / "reports" / f"{folder.name}.html"
    output = Path(output)
    write_text_atomic(output, text)
    return output


def main(args: argparse.Namespace) -> int:
    try:
        output = write_report(args.out, args.output, args.version, args.compare)
    except StatsError as exc:
        print(f"corpus report: {exc}", file=sys.stderr)
        return 2
    print(output)
    return 0
