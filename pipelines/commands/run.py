"""`corpus run [-c CONFIG] [key=value ...]`: the full stage graph on the configured cluster.

A full rebuild from every input; after publishing it resets the state store (`OUT/state/`) that `corpus refresh`
extends. It holds the same lock as a refresh, so the two never interleave. Exit codes as `corpus refresh`.
"""

from __future__ import annotations

import argparse

from pipelines.publish.refresh import log_level


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. out=/data/x"
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=log_level,
        help="level of the log on stderr (the run folder's is INFO)",
    )
    parser.add_argument(
        "--compact", action="store_true", help="print the JSON summary on one line (log files)"
    )


def main(args: argparse.Namespace) -> int:
    from pipelines.publish.refresh import run_command

    return run_command(args, "full")
