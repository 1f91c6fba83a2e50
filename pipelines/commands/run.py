"""`corpus run [-c CONFIG] [key=value ...]`: the full stage graph on the configured cluster."""

from __future__ import annotations

import argparse
import json

from pipelines.config import load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. out=/data/x")


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    from pipelines.graph import run_graph

    summary = run_graph(config)
    print(json.dumps(summary, indent=2, default=str))
    return 0
