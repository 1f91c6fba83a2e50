"""The bundle's model card (README.md): what went in (sources, licences), what it measures, how well.

Generated from the manifest only, so the card can never disagree with the bundle it describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    return "" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def render_model_card(manifest: dict[str, Any]) -> str:
    from classifiers.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    lines = [
        f"# Prosociality classifier bundle `{manifest['name']}` (version `{manifest['version']}`)",
        "",
        "One fastText binary classifier per value dimension. `bundle.score(texts)` gives P(dimension) in [0, 1]",
        "per text, calibrated by a logistic fit on a held-out calibration split: sigmoid(a z + d z L + c L + b)",
        "of fastText's logit z and L = log(1 + tokens), in the manifest's `calibration` (d: evidence grows with",
        "length, since fastText's logit is a mean over n-grams; c: labels that depend on length itself); long",
        "texts are scored in windows of "
        f"{manifest['scoring']['chunk_words']} tokens aggregated with `{manifest['scoring']['aggregation']}`.",
        f"Text normalisation v{manifest['normalization_version']}, taxonomy v{manifest['taxonomy_version']}.",
        "",
        "Intended use: ranking and tiering web documents for prosocial pre-training mixtures. Not a moderation",
        "tool: trained on short social-media and news-comment texts, so scores on long web pages drift (see the",
        "leave-one-source-out figures from `corpus classifier eval`). Proxy labels (emotions, hope speech) measure",
        "the expression of care, not conduct.",
        "",
        "## Dimensions",
        "",
    ]
    for dim in manifest["dimensions"]:
        definition = taxonomy.dimensions[dim].definition if dim in taxonomy.dimensions else ""
        lines.append(f"- **{dim}**: {definition}")
    if manifest.get("rubric_only_dimensions"):
        lines.append(
            f"- Rubric only, not scored by this bundle (no human seeds; LLM annotation can train them): "
            f"{', '.join(manifest['rubric_only_dimensions'])}."
        )
    lines += [
        "",
        "## Sources and licences",
        "",
        "| source | licence | commercial use | domain | dimensions | train / calib / eval rows |",
        "|---|---|---|---|---|---|",
    ]
    for src in manifest["sources"]:
        c = src.get("counts", {})
        lines.append(
            f"| {src['name']} | {src['license']} | {'yes' if src['commercial'] else 'no'} | {src['domain']} | "
            f"{', '.join(src['dimensions'])} | {c.get('train', 0)} / {c.get('calib', 0)} / {c.get('eval', 0)} |"
        )
    noncommercial = [s["name"] for s in manifest["sources"] if not s["commercial"]]
    if noncommercial:
        lines += [
            "",
            f"This bundle includes non-commercial or unlicensed sources ({', '.join(noncommercial)}). Retrain with "
            "`corpus classifier train --licenses commercial` for a bundle built from commercially usable sources only.",
        ]
    lines += ["", "Citations:", ""]
    lines += [f"- {s['name']}: {s['citation']}" for s in manifest["sources"] if s.get("citation")]
    lines += [
        "",
        "## Metrics (`eval/*`: evaluation splits never trained on; `corpus classifier eval` adds baselines)",
        "",
        "| dimension | set | n pos / neg | ROC-AUC | F1 @ threshold | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for dim in manifest["dimensions"]:
        entry = manifest["models"][dim]
        for name, m in entry.get("metrics", {}).items():
            name = "calibration split (fitted on)" if name == "calib" else name
            # no F1/ECE for "neutral ranks above negative" sets (see train.binary_metrics)
            f1 = f"{_fmt(m['f1'])} @ {entry['threshold']:.2f}" if "f1" in m else "-"
            ece = _fmt(m["ece"]) if "ece" in m else "-"
            lines.append(
                f"| {dim} | {name} | {m.get('n_pos')} / {m.get('n_neg')} | {_fmt(m.get('auc'))} | {f1} | {ece} |"
            )
    hp = manifest["hyperparameters"]
    lines += [
        "",
        "## Training",
        "",
        "Deterministic: examples sorted by text hash, shuffled with seed "
        f"{hp['seed']}, fastText thread=1. `make classifier` reproduces this bundle.",
        "",
        "```",
        *(f"{k}: {v}" for k, v in sorted(hp.items())),
        "```",
        "",
        "| model | file | bytes | sha256 of training file | training examples (after balancing; a neutral one is two lines) |",
        "|---|---|---|---|---|",
    ]
    for dim in manifest["dimensions"]:
        e = manifest["models"][dim]
        lines.append(
            f"| {dim} | {e['file']} | {e['bytes']} | `{e['training_data']['sha256'][:16]}` | {e['training_data']['lines']} |"
        )
    return "\n".join(lines) + "\n"


def write_model_card(manifest: dict[str, Any], path: Path) -> None:
    path.write_text(render_model_card(manifest), encoding="utf-8")
