"""Keep a command's stdout for its JSON summary alone.

Commands that start a cluster or a vLLM engine print one JSON summary on stdout for scripts and cron
(`>> refresh.jsonl`). Worker processes and engine subprocesses inherit file descriptor 1, and vLLM and other
libraries write to it, so a summary read from stdout would come with their lines mixed in. During the command,
descriptor 1 is stderr; only the summary is written to the real stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def summary_stdout() -> Iterator[TextIO]:
    """Point file descriptor 1 at stderr for the run (child processes included) and yield the real stdout.

    When `sys.stdout` is not descriptor 1 (replaced by a caller capturing it, as pytest's capsys does), the
    summary goes to that replacement, and descriptor 1 is still pointed at stderr for the children.
    """
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all (closed by the caller): nothing to keep clean
        yield sys.stdout
        return
    try:
        own = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        own = False
    os.dup2(2, 1)
    out = os.fdopen(os.dup(saved), "w", encoding="utf-8") if own else sys.stdout
    try:
        yield out
    finally:
        out.flush()
        if own:
            out.close()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
