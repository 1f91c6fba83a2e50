"""`corpus refresh [-c CONFIG] [key=value ...]`: incremental, idempotent run on new inputs only.

Made to be started by cron, a systemd timer or an orchestrator: it holds the output root's lock for the whole
run, finishes whatever an earlier crash left half done, curates only inputs the state store has not seen,
publishes a new version, and prints one JSON summary on stdout (logs go to the run folder and stderr).
Nothing else reaches stdout: the cluster's worker processes inherit it, and vLLM or a library printing there
would break `>> refresh.jsonl`, so the run's stdout is stderr and only the summary goes to the real one.

Exit codes: 0 published (or finished an interrupted publish) or nothing new; 75 another run holds the lock
(EX_TEMPFAIL: try again later); 78 the state store refuses (EX_CONFIG: a changed setting, a hand rollback of
`latest`, a lost index or lost shards; rerunning will not help, the message says what to do); 2 bad
configuration; 1 any other failure. A failure never leaves a half-published version: `latest` and every
published version stay intact, and the next refresh resumes.
"""

from __future__ import annotations

import argparse
import json
import sys

from pipelines.config import load_config
from pipelines.stdout import summary_stdout

EXIT_LOCKED = 75
EXIT_REFUSED = 78


def add_arguments(parser: argparse.ArgumentParser, example: str = "out=/data/x") -> None:
    """The options of every command that runs stages on OUT (`corpus run`, `refresh`, `synth`)."""
    parser.add_argument("-c", "--config", help="YAML config (default: configs/default.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help=f"config overrides, e.g. {example}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=log_level,
        help="level of the log on stderr (the run folder's log is always INFO); WARNING keeps cron mail short",
    )
    parser.add_argument(
        "--compact", action="store_true", help="print the JSON summary on one line (log files)"
    )


LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def log_level(value: str) -> str:
    """argparse type: a loguru level in any case (`--log-level warning`), else a usage error naming them."""
    if value.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of {', '.join(LOG_LEVELS)}")
    return value.upper()


def configure_stderr(level: str) -> None:
    """One stderr sink at `level` for this process (the run's log file is added by the graph)."""
    from datatrove.utils.logging import logger

    logger.remove()
    logger.add(sys.stderr, level=level.upper(), filter=lambda record: not record["extra"].get("file_only"))


def expected_stage_errors() -> tuple[type[Exception], ...]:
    """Failures a command reports as one line (their messages name the file or rank and what to do); the
    traceback goes to the run log only."""
    from classifiers.bundle import BundleError
    from pipelines.cluster import ClusterUnreachable
    from pipelines.curate.inputs import InputError
    from pipelines.dedup.stage import DedupError
    from pipelines.executor import RankFailed
    from pipelines.mix.stage import MixError
    from pipelines.publish.manifest import VerifyError
    from pipelines.stats.tables import StatsError

    return (
        RankFailed,
        InputError,
        DedupError,
        MixError,
        StatsError,
        VerifyError,
        BundleError,
        ClusterUnreachable,
    )


def run_command(args: argparse.Namespace, mode: str) -> int:
    """Shared by `corpus run` and `corpus refresh`: run the graph, print the summary, map errors to exit codes."""
    from pipelines.graph import run_graph
    from pipelines.publish.lock import LockHeld, LockUnsupported
    from pipelines.publish.state import StateError

    stage_errors = expected_stage_errors()
    config = load_config(args.config, args.overrides)
    configure_stderr(getattr(args, "log_level", "INFO"))
    name = f"corpus {mode if mode == 'refresh' else 'run'}"
    with summary_stdout() as out:
        try:
            summary = run_graph(config, mode=mode)
        except LockHeld as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_LOCKED
        except LockUnsupported as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 1
        except stage_errors as exc:  # expected failures: their message names the file or rank and what to do
            notes = "".join(f"\n  {note}" for note in getattr(exc, "__notes__", ()))
            print(f"{name}: {type(exc).__name__}: {exc}{notes}", file=sys.stderr)
            return 1
        except StateError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return EXIT_REFUSED if exc.refusal else 1
        if summary.get("status") == "nothing new":
            print("refresh: nothing new", file=sys.stderr)
        print(
            json.dumps(summary, indent=None if getattr(args, "compact", False) else 2, default=str), file=out
        )
    return 0


def main(args: argparse.Namespace) -> int:
    return run_command(args, "refresh")
