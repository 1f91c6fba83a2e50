"""`corpus score`: score JSONL `{"id", "text"}` lines with a bundle.

    corpus score [--model DIR] --input IN.jsonl --output OUT.jsonl [--profile NAME]

Writes `{"id", "prosocial", "<dimension>": p, ...}` per input line, in input order (the CLI contract in
DESIGN.md), atomically. A line that is not JSON or lacks `text` is reported with its line number; it stops
the run with --strict, otherwise it is counted, skipped and listed on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from classifiers.bundle import BundleError, load_bundle
from classifiers.profiles import ProfileError, load_profile

BATCH = 2048


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="bundle folder (default: the shipped default bundle)"
    )
    parser.add_argument(
        "--input", required=True, help="JSONL file with {'id', 'text'} per line ('-' for stdin)"
    )
    parser.add_argument("--output", required=True, help="JSONL file to write ('-' for stdout)")
    parser.add_argument("--profile", default="default", help="profile whose aggregate becomes 'prosocial'")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input line")


def _read(path: str, strict: bool):
    handle = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError("expected an object with a string 'text'")
            except ValueError as exc:
                message = f"{path}: line {number}: {exc}"
                if strict:
                    raise ValueError(message) from None
                print(f"skipped: {message}", file=sys.stderr)
                yield None
                continue
            yield record
    finally:
        if handle is not sys.stdin:
            handle.close()


def main(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(args.model)
        profile = load_profile(args.profile)
        missing = [d for d in profile.dimensions if d not in bundle.dimensions]
        if missing:
            raise ProfileError(
                f"profile '{profile.name}' weights dimensions {missing} the bundle does not score"
            )
    except (BundleError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.input != "-" and not Path(args.input).is_file():
        print(f"error: input file not found: {args.input}", file=sys.stderr)
        return 2
    if args.output == "-":
        out, tmp_name = sys.stdout, None
    else:
        target = Path(args.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        out = os.fdopen(fd, "w", encoding="utf-8")
    scored = skipped = 0

    def flush(batch: list[dict]) -> None:
        nonlocal scored
        if not batch:
            return
        scores = bundle.score([r["text"] for r in batch])
        prosocial = profile.aggregate(scores)
        for index, record in enumerate(batch):
            row = {"id": record.get("id"), "prosocial": round(float(prosocial[index]), 6)}
            row.update({d: round(float(scores[d][index]), 6) for d in bundle.dimensions})
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        scored += len(batch)

    try:
        batch: list[dict] = []
        for record in _read(args.input, args.strict):
            if record is None:
                skipped += 1
                continue
            batch.append(record)
            if len(batch) >= BATCH:
                flush(batch)
                batch = []
        flush(batch)
    except ValueError as exc:
        if tmp_name:
            out.close()
            os.unlink(tmp_name)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        if tmp_name:
            out.close()
            os.unlink(tmp_name)
        raise
    if tmp_name:
        out.close()
        os.replace(tmp_name, args.output)
    print(
        f"scored {scored} texts with bundle {bundle.version}"
        + (f", skipped {skipped} bad lines" if skipped else ""),
        file=sys.stderr,
    )
    return 0
