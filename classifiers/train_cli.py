"""`corpus classifier train`: build a model bundle from the seed recipes.

corpus classifier train --seeds ../shared/data/labeled --out classifiers/models/default
corpus classifier train --seeds hub --licenses commercial --out models/commercial
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from classifiers.dataset import SeedData, build_seed_data
from classifiers.recipes import RECIPE_DIR, Recipe, RecipeError, load_recipes, seeds_root
from classifiers.taxonomy import load_taxonomy
from classifiers.train import OutputFolderError, TrainParams, check_output_folder, train_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds",
        default="../shared/data/labeled",
        help="folder holding one sub-folder per source (recipes' local.folder); 'hub' loads every source by its hub id "
        "(sources missing locally fall back to their hub id too)",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="bundle folder to write (atomically); an existing folder is replaced only if empty or a bundle",
    )
    parser.add_argument("--recipes", default=str(RECIPE_DIR), help="folder of recipe YAML files")
    parser.add_argument(
        "--licenses",
        choices=["all", "commercial"],
        default="all",
        help="'commercial' keeps only sources whose licence allows commercial use (the model card lists what went in)",
    )
    parser.add_argument("--sources", nargs="*", help="only these recipe names")
    parser.add_argument(
        "--dimensions",
        nargs="*",
        help="only these dimensions (default: the human-seeded ones); rubric-only dimensions train when a source "
        "labels them, e.g. the recipe.yaml of `corpus classifier annotate`",
    )
    parser.add_argument(
        "--name", default=None, help="bundle name in the manifest (default: the --out folder name)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training hyperparameter, for every dimension (KEY=VALUE) or one (DIMENSION.KEY=VALUE); "
        f"keys: {', '.join(f.name for f in fields(TrainParams) if f.name not in {'aggregation', 'per_dimension'})}",
    )


BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def parse_params(pairs: list[str], params: TrainParams | None = None) -> TrainParams:
    """Apply KEY=VALUE overrides; DIMENSION.KEY=VALUE overrides one dimension only."""
    params = params or TrainParams()
    names = sorted(f.name for f in fields(TrainParams) if f.name not in {"aggregation", "per_dimension"})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        dim, _, key = key.rpartition(".")
        if not sep or key not in names:
            raise SystemExit(f"--param {pair!r}: expected [DIMENSION.]KEY=VALUE with KEY one of {names}")
        if dim and dim not in (known := load_taxonomy().dimensions):
            raise SystemExit(f"--param {pair!r}: unknown dimension {dim!r} (expected one of {sorted(known)})")
        current = getattr(params, key)
        if isinstance(current, bool):
            if value.lower() not in BOOLEANS:
                raise SystemExit(f"--param {pair!r}: expected one of {', '.join(BOOLEANS)}")
            parsed = BOOLEANS[value.lower()]
        else:
            try:
                parsed = type(current)(value)
            except ValueError:
                raise SystemExit(f"--param {pair!r}: expected a {type(current).__name__}") from None
        if dim:
            params.per_dimension = {
                **params.per_dimension,
                dim: {**params.per_dimension.get(dim, {}), key: parsed},
            }
        else:
            setattr(params, key, parsed)
    return params


def select_dimensions(seed_data: SeedData, requested: list[str] | None) -> list[str] | str:
    """The dimensions to train, or an error message.

    Without `--dimensions`: every human-seeded dimension that has training rows (what `make classifier` ships).
    With it: exactly the named dimensions, human or rubric-only, as long as the taxonomy knows them and the
    selected sources give them training rows (e.g. LLM annotations from `corpus classifier annotate`).
    """
    taxonomy = load_taxonomy()
    available = sorted(d for d, data in seed_data.dimensions.items() if data.train)
    if not requested:
        human = set(taxonomy.human_dimensions)
        return [d for d in available if d in human]
    not_in_taxonomy = sorted(set(requested) - set(taxonomy.dimensions))
    if not_in_taxonomy:
        return f"dimensions {not_in_taxonomy} are not in the taxonomy (known: {sorted(taxonomy.dimensions)})"
    missing = sorted(set(requested) - set(available))
    if missing:
        return f"no training data for dimensions {missing} (have: {available})"
    return sorted(set(requested))


def licence_warnings(
    selected: list[Recipe], kept: list[Recipe], licenses: str, requested: list[str] | None
) -> list[str]:
    """One warning per dimension the selected recipes label but the licence filter leaves without a source.

    Why: `--licenses commercial` drops every constructiveness source; the bundle then silently lacks the
    dimension and every shipped profile that weights it refuses the bundle.
    """
    wanted = set(requested) if requested else set(load_taxonomy().human_dimensions)
    kept_dims = {d for r in kept for d in r.dimensions}
    warnings = []
    for dim in sorted(({d for r in selected for d in r.dimensions} - kept_dims) & wanted):
        dropped = [r.name for r in selected if dim in r.dimensions]
        warnings.append(
            f"--licenses {licenses} leaves no source for {dim} (excluded: {', '.join(dropped)}): this bundle "
            f"does not score {dim}; use it with a profile that does not weight {dim}"
        )
    return warnings


def _log(message: str) -> None:
    print(message, file=sys.stderr if "WARNING" in message else sys.stdout)


def main(args: argparse.Namespace) -> int:
    started = time.time()
    params = parse_params(args.param)
    try:
        params.check()
        check_output_folder(args.out)  # before loading seeds and training, not after
        seeds_root(args.seeds)  # a mistyped folder fails now, not after half a minute of hub retries
        recipes = load_recipes(args.recipes, licenses=args.licenses, names=args.sources)
        selected = recipes if args.licenses == "all" else load_recipes(args.recipes, names=args.sources)
    except (RecipeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not recipes:
        if selected:
            print(
                f"error: --licenses {args.licenses} excludes every selected source "
                f"({', '.join(r.name for r in selected)}: not licensed for commercial use); "
                "select commercially usable sources or use --licenses all",
                file=sys.stderr,
            )
        else:
            print(f"error: no recipes selected (none in {args.recipes})", file=sys.stderr)
        return 2
    warnings = licence_warnings(selected, recipes, args.licenses, args.dimensions)
    for warning in warnings:
        print(f"WARNING: {warning}", file=sys.stderr)
    print(f"sources ({args.licenses} licences): {', '.join(r.name for r in recipes)}")
    try:
        seed_data = build_seed_data(recipes, args.seeds)
    except (RecipeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dims = select_dimensions(seed_data, args.dimensions)
    if isinstance(dims, str):
        print(f"error: {dims}", file=sys.stderr)
        return 2
    if not dims:
        have = sorted(d for d, data in seed_data.dimensions.items() if data.train)
        print(
            f"error: no human-seeded dimension has training data (have: {have}); name rubric-only dimensions "
            "with --dimensions",
            file=sys.stderr,
        )
        return 2
    # TrainParams' own per-dimension defaults name every human-seeded dimension, so only the user's overrides count
    untrained = sorted({pair.partition("=")[0].rpartition(".")[0] for pair in args.param} - {""} - set(dims))
    if untrained:
        print(
            f"error: --param overrides dimensions {untrained} that this run does not train (training: {dims})",
            file=sys.stderr,
        )
        return 2
    name = args.name or Path(args.out).name
    # no key without warnings: `make classifier` stays byte-identical
    extra = {"warnings": warnings} if warnings else None
    try:
        train_bundle(seed_data, args.out, params, dimensions=dims, name=name, log=_log, extra_manifest=extra)
    except OutputFolderError as exc:  # the folder changed while training
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.time() - started:.0f} s")
    return 0
