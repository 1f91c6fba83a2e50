"""Write configs/default.yaml from the config models, with each field's description as a comment.

The models are the single source of the defaults; this file is their documentation, regenerated so the two
cannot drift (tests/test_config.py checks the committed file equals this script's output).

    .venv/bin/python scripts/write_default_config.py [--check]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import yaml
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.config import DEFAULT_CONFIG, CorpusConfig

HEADER = """\
# The embedded default: a 2-worker Dask LocalCluster, local folders, the shipped demo input, CPU vLLM.
# Generated from the config models by scripts/write_default_config.py (do not edit by hand: edit the
# models' defaults and descriptions, then rerun it). Copy this file to start your own config and keep only
# the keys you change. Relative paths are resolved from the folder you run `corpus` in.
"""


def scalar(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def render(model: BaseModel, indent: int = 0) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in type(model).model_fields.items():
        # the declared default, not the validated value (validation anchors `out` at the current folder)
        value = field.get_default(call_default_factory=True)
        if field.description:
            for part in textwrap.wrap(field.description, width=108 - len(pad)):
                lines.append(f"{pad}# {part}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += render(value, indent + 1)
        else:
            lines.append(f"{pad}{name}: {scalar(_jsonable(value))}")
    return lines


def _jsonable(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def generate() -> str:
    return HEADER + "\n".join(render(CorpusConfig())) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if configs/default.yaml is out of date")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if DEFAULT_CONFIG.read_text() != text:
            print(f"{DEFAULT_CONFIG} is out of date: run scripts/write_default_config.py", file=sys.stderr)
            return 1
        return 0
    DEFAULT_CONFIG.write_text(text)
    print(f"wrote {DEFAULT_CONFIG}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
