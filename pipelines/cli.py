"""The `corpus` command line.

Each command lives in the module that implements it, as `add_arguments(parser)` plus `main(args) -> int`.
This file is only the table of commands, so that `corpus --help` stays fast (no vLLM or torch import) and
adding a command never means editing someone else's parser.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
from collections.abc import Iterator

from classifiers.yamlconfig import ConfigFileError

# command -> (module, one-line help). Nested tables are command groups.
COMMANDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "run": ("pipelines.commands.run", "run the full stage graph (curate, dedup, mix, synthesize, publish)"),
    "refresh": (
        "pipelines.publish.refresh",
        "incremental, idempotent run on new inputs only; publishes a version",
    ),
    "verify": ("pipelines.publish.verify", "re-check a published version against its manifest"),
    "synth": ("pipelines.synthesize", "run the synthetic dialogue stage alone"),
    "score": ("classifiers.score_cli", "score JSONL {id,text} lines with a classifier bundle"),
    "stats": ("pipelines.stats.cli", "print a compact summary of a published corpus"),
    "report": ("pipelines.stats.report", "write a static HTML report with plots"),
    "classifier": {
        "train": ("classifiers.train_cli", "train a classifier bundle from seed recipes"),
        "eval": ("classifiers.eval_cli", "evaluate a bundle against baselines, per dimension and source"),
        "annotate": ("synthetic.annotate", "LLM rubric annotation of curated documents (FineWeb-Edu recipe)"),
    },
}


# commands that hold OUT's run lock for hours: a SIGTERM (systemctl stop, timeout) ended them with 143 and not a
# word in stderr or the run log
TERMINATE_LOGGED = {"corpus run", "corpus refresh", "corpus synth"}
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised by the SIGTERM handler. A BaseException, like KeyboardInterrupt, so that no `except Exception`
    swallows it; the run lock and the cluster are released as the stack unwinds, and the next run resumes."""


def _on_sigterm(signum: int, frame: object) -> None:
    from datatrove.utils.logging import logger

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not interrupt the cleanup
    # to the run log (when a run is under way) only: stderr gets the command's one line. loguru refuses rather
    # than deadlocks when the signal lands while this thread is writing a log line
    with contextlib.suppress(Exception):
        logger.bind(file_only=True).error("terminated by signal SIGTERM")
    raise Terminated("terminated by signal SIGTERM")


@contextlib.contextmanager
def _sigterm_logged(prog: str) -> Iterator[None]:
    if prog not in TERMINATE_LOGGED:
        yield
        return
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _usage(table: dict, prog: str) -> str:
    width = max(len(name) for name in table) + 2
    lines = [f"usage: {prog} <command> [options]", "", "commands:"]
    for name, entry in table.items():
        text = entry[1] if isinstance(entry, tuple) else "group: " + ", ".join(entry)
        lines.append(f"  {name.ljust(width)}{text}")
    lines.append("")
    lines.append(f"Run '{prog} <command> --help' for the options of one command.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    table: dict = COMMANDS
    prog = "corpus"
    while True:
        if not argv or argv[0] in {"-h", "--help"}:
            print(_usage(table, prog))
            return 0 if argv else 2
        name = argv.pop(0)
        entry = table.get(name)
        if entry is None:
            print(f"{prog}: unknown command '{name}'\n\n{_usage(table, prog)}", file=sys.stderr)
            return 2
        prog = f"{prog} {name}"
        if isinstance(entry, dict):
            table = entry
            continue
        module_name, description = entry
        break
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        with _sigterm_logged(prog):
            return int(module.main(args) or 0)
    except Terminated:
        print(f"{prog}: terminated by signal SIGTERM", file=sys.stderr)
        return EXIT_TERMINATED
    except ConfigFileError as exc:  # run configs, profiles, recipes, grids: one line, exit 2
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
