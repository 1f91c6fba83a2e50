"""`corpus score`: score JSONL `{"id", "text"}` lines with a bundle.

    corpus score [--model DIR] --input IN.jsonl[.gz|.zst] --output OUT.jsonl [--profile NAME]

Writes `{"id", "prosocial", "<dimension>": p, ...}` per input line, in input order (the CLI contract in
DESIGN.md), atomically. A line that is not UTF-8, not JSON or lacks `text` is reported with its line number;
it stops the run with --strict. Otherwise it still gets its output line, with null scores and an `error`, so
output line N always answers input line N. A text with no words left after normalisation gets null scores
and an `error` too (not a stop under --strict: it is valid input with nothing to judge). Strings carrying lone
surrogates (JSON escapes such as "\ud800", which fastText cannot take) are repaired with U+FFFD and counted.
Gzip and zstd input (recognised by its first bytes, whatever its name) is decompressed on the fly: read as
text, it came out as one error row per line and "scored 0 texts".
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from classifiers.bundle import BundleError, load_bundle
from classifiers.normalize import has_lone_surrogates, without_surrogates
from classifiers.profiles import ProfileError, load_profile

BATCH = 2048
EMPTY = "no words to score after normalisation (empty, or only URLs/mentions)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="default", help="bundle folder (default: the shipped default bundle)"
    )
    parser.add_argument(
        "--input",
        required=True,
        help="JSONL file with {'id', 'text'} per line, plain, gzip or zstd ('-' for stdin)",
    )
    parser.add_argument("--output", required=True, help="JSONL file to write ('-' for stdout)")
    parser.add_argument("--profile", default="default", help="profile whose aggregate becomes 'prosocial'")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad input line")


def _repair(value: object) -> tuple[object, bool]:
    """`value` with every string in it encodable as UTF-8 (lone surrogates become U+FFFD; ids may be lists or
    objects), and whether it needed repair."""
    if isinstance(value, str):
        return (without_surrogates(value), True) if has_lone_surrogates(value) else (value, False)
    if isinstance(value, list):
        pairs = [_repair(v) for v in value]
        return [v for v, _ in pairs], any(fixed for _, fixed in pairs)
    if isinstance(value, dict):
        pairs = [(_repair(k), _repair(v)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, any(a or b for (_, a), (_, b) in pairs)
    return value, False


def _not_json(name: str) -> None:
    """Python's json reads NaN and Infinity, which are not JSON: echoed back, they would break strict readers."""
    raise ValueError(f"{name} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: would be written back as Infinity
        raise ValueError(f"{text} is out of range for a JSON number")
    return value


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _decompressed(raw: io.BufferedReader, path: str) -> tuple[io.BufferedIOBase, str | None]:
    """`raw` decompressed, and the compression its magic bytes name (None: plain, `raw` itself)."""
    if not hasattr(raw, "peek"):  # a replaced stdin (tests, embedding): buffer it to look ahead
        raw = io.BufferedReader(raw)
    head = raw.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb"), "gzip"
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:
            raise ValueError(
                f"{path}: zstd input needs the zstandard package (pip install zstandard)"
            ) from None
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False)
        return io.BufferedReader(reader), "zstd"
    return raw, None


def _read(path: str, strict: bool) -> Iterator[tuple[dict | None, str | None]]:
    """(record, None) per good line; (None or a partial record, error) per bad one. Bytes are decoded per line,
    so one undecodable line costs that line, not the file."""
    raw_handle = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 (closed below)
    number = 0
    try:
        handle, compression = _decompressed(raw_handle, path)
        lines = iter(handle)
        while True:
            try:
                raw = next(lines)
            except StopIteration:
                break
            except Exception as exc:  # a truncated or damaged stream: EOFError, zlib.error, ZstdError, ...
                if compression is None:
                    raise
                raise ValueError(
                    f"{path}: {compression} input damaged or truncated after line {number}: {exc}"
                ) from None
            number += 1
            record = None
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    raise ValueError("blank line")
                record = json.loads(line, parse_constant=_not_json, parse_float=_finite)
                if not isinstance(record, dict):
                    raise ValueError("expected a JSON object")
                if not isinstance(record.get("text"), str):
                    raise ValueError("expected a string 'text'")
            except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                message = f"{path}: line {number}: {exc}"
                if strict:
                    raise ValueError(message) from None
                print(f"bad line: {message}", file=sys.stderr)
                yield (record if isinstance(record, dict) else None), message
                continue
            yield record, None
    finally:
        if path != "-":
            raw_handle.close()


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
        what = "is a folder (expected one JSONL file)" if Path(args.input).is_dir() else "not found"
        print(f"error: --input {args.input}: {what}", file=sys.stderr)
        return 2
    if args.output != "-" and Path(args.output).is_dir():  # found before scoring, not at the final rename
        print(
            f"error: --output {args.output} is a folder (expected a file, e.g. {Path(args.output) / 'scores.jsonl'})",
            file=sys.stderr,
        )
        return 2
    if args.output == "-":
        out, tmp_name = sys.stdout, None
    else:
        target = Path(args.output)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would carry over to the output
        out = os.fdopen(fd, "w", encoding="utf-8")
    scored = bad = repaired = 0

    def flush(batch: list[tuple[dict | None, str | None]]) -> None:
        nonlocal scored, bad
        good = [record["text"] for record, error in batch if error is None]
        chunks, offsets = bundle.chunk(good)
        scores = bundle.score_chunked(chunks, offsets)
        prosocial = profile.aggregate(scores)
        index = 0
        for record, error in batch:
            row: dict = {"id": _repair(record.get("id"))[0] if record else None}
            if error is None and chunks[offsets[index]] == "":
                # nothing left to score (blank, or only URLs and mentions): the models' score of the empty
                # line is a constant that means nothing, so it is not reported as one
                error, index, bad = EMPTY, index + 1, bad + 1
            if error is None:
                row["prosocial"] = round(float(prosocial[index]), 6)
                row.update({d: round(float(scores[d][index]), 6) for d in bundle.dimensions})
                index += 1
                scored += 1
            else:
                row.update({"prosocial": None, **dict.fromkeys(bundle.dimensions), "error": error})
            out.write(json.dumps(row, ensure_ascii=False) + "\n")

    committed = False
    try:
        batch: list[tuple[dict | None, str | None]] = []
        for record, error in _read(args.input, args.strict):
            if error is None:
                record["text"], fixed = _repair(record["text"])
                repaired += fixed
            else:
                bad += 1
            batch.append((record, error))
            if len(batch) >= BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        if tmp_name:
            out.close()  # the last buffered write happens here: a full disk fails now, not after the rename
            os.replace(tmp_name, args.output)
            committed = True
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: scoring {args.input} into {args.output}: {exc}", file=sys.stderr)
        return 1
    finally:
        if tmp_name and not committed:  # never leave a partial output behind
            with contextlib.suppress(OSError):
                out.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    print(
        f"scored {scored} texts with bundle {bundle.version}"
        + (f"; {bad} lines written with null scores and an error" if bad else "")
        + (f"; repaired invalid UTF-8 (lone surrogates) in {repaired} texts" if repaired else ""),
        file=sys.stderr,
    )
    return 0
