"""`corpus run [-c CONFIG] [key=value ...]`: the full stage graph on the configured cluster.

A full rebuild from every input; after publishing it resets the state store (`OUT/state/`) that `corpus refresh`
extends. It holds the same lock as a refresh, so the two never interleave. Exit codes as `corpus refresh`.
"""

from __future__ import annotations

import argparse

from pipelines.publish.refresh import add_arguments  # noqa: F401 (the CLI looks it up here)


def main(args: argparse.Namespace) -> int:
    from pipelines.publish.refresh import run_command

    return run_command(args, "full")
