"""Where the offline language-ID model lives, and a clear error when it is missing."""

from __future__ import annotations

import os
from pathlib import Path

LID_MODEL = Path(__file__).resolve().parent / "assets" / "lid.176.ftz"


def lid_model_path() -> Path:
    """`PROSOCIAL_LID_MODEL` if set, else the copy `make setup` fetched (scripts/fetch_lid_model.py)."""
    path = Path(os.environ.get("PROSOCIAL_LID_MODEL", LID_MODEL))
    if not path.is_file():
        raise FileNotFoundError(
            f"language-ID model not found at {path}: run `make setup` (or scripts/fetch_lid_model.py), "
            "or set PROSOCIAL_LID_MODEL to a lid.176.ftz/.bin file"
        )
    return path
