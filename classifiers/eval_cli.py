"""`corpus classifier eval`: the bundle vs TF-IDF and MiniLM baselines, per dimension and evaluation set.

    corpus classifier eval --model classifiers/models/default --seeds ../shared/data/labeled \
        [--loso] [--no-minilm] [--aggregation] [--profiles default civic] [--json report.json] [--markdown report.md]

Rebuilds the seed splits from the recipes (deterministic, so they are the splits the bundle was trained
around), refuses a bundle whose training data overlaps the evaluation texts, fits both baselines on the
same training rows, and prints ROC-AUC, F1 at the chosen threshold and calibration error (ECE) per set,
leave-one-source-out figures, throughput (texts/s) for all three, how closely each profile's `prosocial`
score tracks every set, and the long-document aggregation study.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from classifiers.bundle import BundleError, load_bundle
from classifiers.dataset import build_seed_data, calibration_as_eval, eval_texts_sha256
from classifiers.evaluate import (
    aggregation_experiment,
    cap_per_source,
    choose_aggregation,
    eval_sets,
    evaluate_dimension,
    leave_one_source_out,
    profile_tracking,
    throughput,
)
from classifiers.profiles import ProfileError, load_profile
from classifiers.recipes import RECIPE_DIR, RecipeError, load_recipes
from classifiers.train import TrainParams


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="bundle folder (default: the shipped default bundle)"
    )
    parser.add_argument("--seeds", default="../shared/data/labeled", help="seeds folder, or 'hub'")
    parser.add_argument("--recipes", default=str(RECIPE_DIR), help="folder of recipe YAML files")
    parser.add_argument(
        "--licenses", choices=["all", "commercial"], default=None, help="default: as the bundle was trained"
    )
    parser.add_argument("--dimensions", nargs="*", help="only these dimensions")
    parser.add_argument("--no-baselines", action="store_true", help="skip both baselines")
    parser.add_argument(
        "--no-minilm", action="store_true", help="skip the MiniLM baseline (slow: embeds every text)"
    )
    parser.add_argument(
        "--minilm-train-cap",
        type=int,
        default=3000,
        help="MiniLM+LR trains on at most this many rows per source and dimension (embedding cost)",
    )
    parser.add_argument(
        "--loso", action="store_true", help="also run leave-one-source-out (retrains per source)"
    )
    parser.add_argument(
        "--aggregation", action="store_true", help="also run the long-document aggregation study"
    )
    parser.add_argument(
        "--profiles",
        nargs="*",
        default=["default"],
        help="profiles (names or YAML paths) whose prosocial score is checked against every set",
    )
    parser.add_argument(
        "--split",
        choices=["eval", "calib"],
        default="eval",
        help="score the evaluation splits (report these) or the calibration splits (tune on these, so the "
        "evaluation splits stay unseen)",
    )
    parser.add_argument(
        "--allow-split-mismatch",
        action="store_true",
        help="evaluate a bundle trained around other evaluation splits (the report then says so)",
    )
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--markdown", help="write the tables here")


def _baselines(args: argparse.Namespace) -> dict[str, Any]:
    from classifiers.baselines import MiniLMBaseline, MiniLMEncoder, TfidfBaseline

    out: dict[str, Any] = {}
    if args.no_baselines:
        return out
    out["tfidf-lr"] = {"make": TfidfBaseline, "train_rows": lambda rows: rows}
    if not args.no_minilm:
        encoder = MiniLMEncoder()
        out["minilm-lr"] = {
            "make": lambda: MiniLMBaseline(encoder),
            "train_rows": lambda rows: cap_per_source(rows, args.minilm_train_cap),
        }
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(float(np.mean(values)), 4) if values else None


def render_markdown(report: dict[str, Any]) -> str:
    models = report["models"]
    lines = [
        f"Bundle `{report['bundle_version']}`; evaluation splits carved from the labelled seeds, never trained on."
        if report.get("split", "eval") == "eval" and report.get("splits_match_training", True)
        else f"Bundle `{report['bundle_version']}`; evaluation splits DIFFERENT from those the bundle was trained "
        "around: it may have trained on some of these texts."
        if report.get("split", "eval") == "eval"
        else f"Bundle `{report['bundle_version']}`; CALIBRATION splits (for tuning; the bundle's calibration was "
        "fitted on them, so report the evaluation splits, not these).",
        "",
        "| dimension | eval set | n pos/neg | "
        + " | ".join(f"{m} AUC" for m in models)
        + " | fastText F1@t | fastText ECE |",
        "|---|---|---|" + "---|" * len(models) + "---|---|",
    ]
    for dim, per_model in report["results"].items():
        for source, m in per_model["fasttext"].items():
            aucs = " | ".join(f"{per_model[name][source].get('auc', float('nan')):.3f}" for name in models)
            lines.append(
                f"| {dim} | {source} | {m['n_pos']}/{m['n_neg']} | {aucs} | {_fmt(m.get('f1'))} | {_fmt(m.get('ece'))} |"
            )
    lines.append(
        "| **mean** | all sets | | "
        + " | ".join(f"**{report['mean_auc'][name]:.3f}**" for name in models)
        + " | | |"
    )
    if report.get("loso"):
        lines += ["", "Leave-one-source-out (train without the source, test on its evaluation split):", ""]
        lines += ["| dimension | held-out source | " + " | ".join(f"{m} AUC" for m in models) + " |"]
        lines += ["|---|---|" + "---|" * len(models)]
        for dim, per_model in report["loso"].items():
            for source in per_model.get("fasttext", {}):
                aucs = " | ".join(
                    f"{per_model[name][source].get('auc', float('nan')):.3f}"
                    for name in models
                    if name in per_model
                )
                lines.append(f"| {dim} | {source} | {aucs} |")
        lines.append(
            "| **mean** | | "
            + " | ".join(f"**{report['loso_mean_auc'].get(name, float('nan')):.3f}**" for name in models)
            + " |"
        )
    if report.get("profiles"):
        columns = list(next(iter(next(iter(report["profiles"].values())).values())))
        lines += [
            "",
            "What the scores users tier on track: ROC-AUC of the dimension's own score `ps_<dimension>` and of each",
            "profile's `prosocial`, through the full scoring path (chunking, calibration, profile weights):",
            "",
            "| dimension | eval set | " + " | ".join(f"{c} AUC" for c in columns) + " |",
            "|---|---|" + "---|" * len(columns),
        ]
        for dim, per_set in report["profiles"].items():
            for source, aucs in per_set.items():
                lines.append(
                    f"| {dim} | {source} | "
                    + " | ".join(f"{aucs[c]:.3f}" if aucs[c] is not None else "-" for c in columns)
                    + " |"
                )
    if report.get("throughput"):
        t = report["throughput"]
        lines += ["", f"Throughput (texts/s, all {len(report['results'])} dimensions, 1 process): "]
        lines += [", ".join(f"{name} {value:,.0f}" for name, value in t.items())]
        if "minilm-lr" in t:
            lines[-1] += f" (fastText / MiniLM = {t['fasttext'] / t['minilm-lr']:.0f}x)"
    if report.get("aggregation"):
        lines += ["", "Long-document aggregation study (pages of labelled paragraphs):", ""]
        lines += [
            "| dimension | method | drop rate | AUC clean vs +1 bad | AUC good vs bad pages | length bias |"
        ]
        lines += ["|---|---|---|---|---|---|"]
        for dim, rows in report["aggregation"].items():
            for method, r in rows.items():
                lines.append(
                    f"| {dim} | {method} | {r['drop_rate']:.2f} | {r['auc_contaminated']:.3f} | {r['auc_pure']:.3f} | {r['length_bias']:+.2f} |"
                )
        if report.get("aggregation_best"):
            lines += [
                "",
                f"Best (AUC clean vs +1 bad + AUC good vs bad - |length bias|): `{report['aggregation_best']}`.",
            ]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    started = time.time()
    try:
        bundle = load_bundle(args.model)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    unknown = sorted(set(args.dimensions or []) - set(bundle.dimensions))
    if unknown:  # before any work: a typo used to evaluate the other names only, silently
        close = [m for name in unknown for m in difflib.get_close_matches(name, bundle.dimensions, n=1)]
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        print(
            f"error: --dimensions {unknown}: not in bundle {args.model} (it scores: {', '.join(bundle.dimensions)})"
            + hint,
            file=sys.stderr,
        )
        return 2
    manifest = bundle.manifest
    trained_sources = [s["name"] for s in manifest.get("sources", [])]
    licenses = args.licenses or (
        "commercial"
        if all(s["commercial"] for s in manifest.get("sources", [{"commercial": False}]))
        else "all"
    )
    try:
        recipes = load_recipes(args.recipes, licenses=licenses)
        seed_data = build_seed_data(recipes, args.seeds)
    except (RecipeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dims = [d for d in bundle.dimensions if d in seed_data.dimensions]
    if args.dimensions:
        dims = [d for d in dims if d in args.dimensions]
    if not dims:
        print(
            f"error: no selected source labels the bundle's dimensions {args.dimensions or bundle.dimensions} "
            f"(sources: {', '.join(r.name for r in recipes) or 'none'})",
            file=sys.stderr,
        )
        return 2
    # the bundle must have been trained around these very evaluation splits (so never on their texts)
    splits_match = True
    for dim in dims:
        recorded = manifest["models"][dim].get("training_data", {}).get("eval_texts_sha256")
        if recorded != eval_texts_sha256(seed_data.dimensions[dim]):
            splits_match = False
            print(
                f"{'WARNING' if args.allow_split_mismatch else 'error'}: {dim}: the evaluation split differs from "
                "the one the bundle was trained around (other recipes, seeds or licences?): it may have trained "
                "on some evaluation texts",
                file=sys.stderr,
            )
    if not splits_match and not args.allow_split_mismatch:
        print(
            "error: refusing to report such scores as held-out (--allow-split-mismatch to see them anyway)",
            file=sys.stderr,
        )
        return 2
    if args.split == "calib":
        for dim in dims:
            seed_data.dimensions[dim] = calibration_as_eval(seed_data.dimensions[dim])
    untrained = sorted(set(r.name for r in recipes) - set(trained_sources)) if trained_sources else []
    if untrained:
        print(f"note: evaluating on sources the bundle did not train on: {untrained}")
    try:
        profiles = [load_profile(name) for name in args.profiles]
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for profile in [p for p in profiles if set(p.dimensions) - set(bundle.dimensions)]:
        missing = sorted(set(profile.dimensions) - set(bundle.dimensions))
        print(f"note: profile '{profile.name}' weights dimensions the bundle lacks {missing}: not checked")
    profiles = [p for p in profiles if set(p.dimensions) <= set(bundle.dimensions)]
    baselines = _baselines(args)
    report: dict[str, Any] = {
        "bundle": str(bundle.path),
        "bundle_version": bundle.version,
        "splits_match_training": splits_match,
        "split": args.split,
        "models": ["fasttext", *baselines],
    }
    report["results"], fitted = {}, {name: [] for name in baselines}
    for dim in dims:
        print(f"== {dim}")
        data = seed_data.dimensions[dim]
        report["results"][dim] = evaluate_dimension(dim, data, bundle, baselines)
        for source, m in report["results"][dim]["fasttext"].items():
            others = ", ".join(
                f"{name}={report['results'][dim][name][source].get('auc')}" for name in baselines
            )
            print(f"  {source}: fasttext auc={m.get('auc')} f1={m.get('f1')} ece={m.get('ece')}; {others}")
    report["mean_auc"] = {
        name: _mean(
            [m.get("auc") for per_model in report["results"].values() for m in per_model[name].values()]
        )
        for name in report["models"]
    }
    print("mean AUC over sets: " + ", ".join(f"{k}={v}" for k, v in report["mean_auc"].items()))
    if profiles:
        report["profiles"] = profile_tracking(bundle, seed_data, dims, profiles)
    # throughput on a mixed sample of evaluation texts (all dimensions' models each time)
    sample = [
        e.text for dim in dims for examples in eval_sets(seed_data.dimensions[dim]).values() for e in examples
    ]
    rng = np.random.default_rng(0)
    sample = [sample[i] for i in rng.permutation(len(sample))[:5000]]
    for name, factory in baselines.items():
        for dim in dims:
            rows = factory["train_rows"](seed_data.dimensions[dim].train)
            fitted[name].append(
                factory["make"]().fit([e.text for e in rows], np.array([e.target for e in rows]))
            )
    report["throughput"] = {k: round(v, 1) for k, v in throughput(bundle, fitted, sample).items()}
    print("throughput texts/s: " + ", ".join(f"{k}={v:,.0f}" for k, v in report["throughput"].items()))
    if args.loso:
        recorded = manifest["hyperparameters"]
        params = TrainParams(**{k: v for k, v in recorded.items() if k in TrainParams.__dataclass_fields__})
        if "length_scaled_logit" not in recorded:  # a format 1 bundle: calibrated on the logit alone
            params.length_scaled_logit = False
        report["loso"] = {}
        for dim in dims:
            print(f"== leave-one-source-out: {dim}")
            result = leave_one_source_out(
                dim, seed_data.dimensions[dim], params, baselines, seed_data=seed_data
            )
            if result:
                report["loso"][dim] = result
        report["loso_mean_auc"] = {
            name: _mean(
                [
                    m.get("auc")
                    for per_model in report["loso"].values()
                    for m in per_model.get(name, {}).values()
                ]
            )
            for name in report["models"]
        }
        print("LOSO mean AUC: " + ", ".join(f"{k}={v}" for k, v in report["loso_mean_auc"].items()))
    if args.aggregation:
        report["aggregation"] = aggregation_experiment(bundle, seed_data)
        report["aggregation_best"] = choose_aggregation(report["aggregation"])
        print(f"aggregation: best {report['aggregation_best']}, bundle uses {bundle.aggregation}")
    markdown = render_markdown(report)
    print()
    print(markdown)
    for path, text in ((args.json, json.dumps(report, indent=2)), (args.markdown, markdown)):
        if path:
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, target)
    print(f"done in {time.time() - started:.0f} s")
    return 0
