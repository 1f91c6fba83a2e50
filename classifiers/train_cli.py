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

from classifiers.dataset import build_seed_data
from classifiers.recipes import RECIPE_DIR, RecipeError, load_recipes
from classifiers.taxonomy import load_taxonomy
from classifiers.train import TrainParams, train_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seeds",
        default="../shared/data/labeled",
        help="folder holding one sub-folder per source (recipes' local.folder); 'hub' loads every source by its hub id "
        "(sources missing locally fall back to their hub id too)",
    )
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    parser.add_argument("--recipes", default=str(RECIPE_DIR), help="folder of recipe YAML files")
    parser.add_argument(
        "--licenses",
        choices=["all", "commercial"],
        default="all",
        help="'commercial' keeps only sources whose licence allows commercial use (the model card lists what went in)",
    )
    parser.add_argument("--sources", nargs="*", help="only these recipe names")
    parser.add_argument("--dimensions", nargs="*", help="only these dimensions")
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


def parse_params(pairs: list[str], params: TrainParams | None = None) -> TrainParams:
    """Apply KEY=VALUE overrides; DIMENSION.KEY=VALUE overrides one dimension only."""
    params = params or TrainParams()
    names = sorted(f.name for f in fields(TrainParams) if f.name not in {"aggregation", "per_dimension"})
    for pair in pairs:
        key, sep, value = pair.partition("=")
        dim, _, key = key.rpartition(".")
        if not sep or key not in names:
            raise SystemExit(f"--param {pair!r}: expected [DIMENSION.]KEY=VALUE with KEY one of {names}")
        current = getattr(params, key)
        if isinstance(current, bool):
            parsed = value.lower() in {"1", "true", "yes"}
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


def main(args: argparse.Namespace) -> int:
    started = time.time()
    params = parse_params(args.param)
    try:
        params.check()
        recipes = load_recipes(args.recipes, licenses=args.licenses, names=args.sources)
    except (RecipeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not recipes:
        print("error: no recipes selected", file=sys.stderr)
        return 2
    print(f"sources ({args.licenses} licences): {', '.join(r.name for r in recipes)}")
    try:
        seed_data = build_seed_data(recipes, args.seeds)
    except (RecipeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    human = set(load_taxonomy().human_dimensions)
    dims = sorted(d for d in seed_data.dimensions if d in human and seed_data.dimensions[d].train)
    if args.dimensions:
        unknown = set(args.dimensions) - set(dims)
        if unknown:
            print(f"error: no training data for dimensions {sorted(unknown)} (have: {dims})", file=sys.stderr)
            return 2
        dims = [d for d in dims if d in args.dimensions]
    name = args.name or Path(args.out).name
    train_bundle(seed_data, args.out, params, dimensions=dims, name=name)
    print(f"done in {time.time() - started:.0f} s")
    return 0
