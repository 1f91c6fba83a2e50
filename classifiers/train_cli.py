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
    train_bundle(seed_data, args.out, params, dimensions=dims, name=name)
    print(f"done in {time.time() - started:.0f} s")
    return 0
