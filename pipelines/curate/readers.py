"""The curate reader: one datatrove step that reads every input format of a rank's work units.

Why one step instead of datatrove's per-format readers: a rank's units can mix formats, units are byte or
row-group ranges, and every bad record must be *counted by reason* instead of raising or vanishing. Each
delimited record increments `documents_in`; a record that cannot become a document increments
`dropped_<reason>`; a problem with a file rather than a record (truncated gzip, empty file, wrong Parquet
schema) increments `file_error_<reason>`; a text that was repaired and kept increments `repaired_<reason>`.
With `strict`, the first of any of these raises BadInputError naming the file and the offset.

Documents leave with `metadata`: source, source_offset, url, crawl_date and kind ("html" needs extraction,
"text" does not).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import fsspec
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger

from classifiers.normalize import has_lone_surrogates, without_surrogates
from pipelines.curate.charset import INVALID_UTF8, decode_html, decode_text, decode_utf8
from pipelines.curate.exclusions import exclusion_writer
from pipelines.curate.http import HttpError, HttpResponse, parse_response
from pipelines.curate.inputs import Plan, WorkUnit
from pipelines.curate.settings import ReadSettings
from pipelines.curate.streams import (
    GzipMembers,
    Lines,
    ZstdFrames,
    find_gzip_member,
    find_warc_record,
    find_zstd_frame,
    warc_record_end,
)

HTML_TYPES = {"text/html", "application/xhtml+xml", "application/xml", "text/xml", ""}
TEXT_TYPES = {"text/plain"}
PREVIEW_CHARS = 2000
# The canonical URL: one bounded pass over <link>/<meta> tags, then each tag's attributes on their own. A single
# regex with two unbounded spans per tag backtracks cubically on pages with many unclosed "<link rel=" runs
# (16 KB of them took 9 s; the 64 KB scan window would take minutes, unsandboxed).
_LINK_OR_META = re.compile(rb"<(?:link|meta)\b[^>]{0,4096}", re.IGNORECASE)
_REL_CANONICAL = re.compile(rb"""\brel=["']?canonical\b""", re.IGNORECASE)
_OG_URL = re.compile(rb"""\bproperty=["']og:url["']""", re.IGNORECASE)
_HREF = re.compile(rb"""\bhref=["']([^"'>\s]+)""", re.IGNORECASE)
_CONTENT = re.compile(rb"""\bcontent=["']([^"'>\s]+)""", re.IGNORECASE)
_CHUNK = 1 << 16
# Opening a unit's file fails like this when it was deleted, made unreadable or replaced since planning.
_UNREADABLE = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class BadInputError(ValueError):
    """strict mode: a bad input, named by file and offset, and what was expected."""


@lru_cache(maxsize=64)
def _label(path: str) -> str:
    """The path as written into ids, metadata, exclusions, logs and errors. Why: a file name that is not UTF-8
    comes back from the OS as lone surrogates, which no UTF-8 writer (Parquet, orjson, the console) accepts.
    Cached: every document of a file asks for the same path."""
    return without_surrogates(path) if has_lone_surrogates(path) else path


def _lookup(record: dict[str, Any], dotted: str) -> Any:
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first_url(record: dict[str, Any], fields: list[str]) -> str | None:
    for name in fields:
        value = _lookup(record, name)
        if isinstance(value, str) and value.startswith(("http://", "https://")):
            return value
    return None


def _first_date(record: dict[str, Any], fields: list[str]) -> str | None:
    for name in fields:
        value = _lookup(record, name)
        if value is not None and value != "":
            return value.isoformat() if hasattr(value, "isoformat") else str(value)
    return None


def _is_text_type(arrow_type: Any) -> bool:
    """A column Arrow hands back as Python strings: plain, large and view strings, and dictionary-encoded
    strings (what pandas writes for a `category` column)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return (
        pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or pa.types.is_string_view(arrow_type)
    )


def _parquet_batch_rows(row_group: Any, budget: int = 64 << 20) -> int:
    """Rows per batch so one batch of Python objects stays near `budget` bytes (256 rows of ordinary pages;
    fewer when the row group holds huge texts, which are only measured against the size limit after
    conversion)."""
    per_row = row_group.total_byte_size / max(1, row_group.num_rows)
    return int(max(1, min(256, budget // max(1.0, per_row))))


def _parquet_rows(batch: Any) -> list[tuple[dict[str, Any], bool]]:
    """The rows of an Arrow batch, each with whether invalid UTF-8 in it was replaced by U+FFFD.

    Why: writers that skip validation can store invalid UTF-8 in a Parquet string column, and Arrow raises
    on converting it; top-level string columns are then decoded the way JSON Lines are.
    """
    import pyarrow as pa

    try:
        return [(row, False) for row in batch.to_pylist()]
    except UnicodeDecodeError:
        as_bytes = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}
        strings = {field.name for field in batch.schema if field.type in as_bytes}
        columns = [col.view(as_bytes.get(col.type, col.type)) for col in batch.columns]
        rows = []
        for row in pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist():
            problems = set()
            for name in strings & row.keys():
                if row[name] is not None:
                    row[name], problem = decode_utf8(row[name])
                    problems.add(problem)
            rows.append((row, INVALID_UTF8 in problems))
        return rows


def _gunzip(raw: Any, limit: int) -> tuple[bytes, str | None, str | None]:
    """Up to `limit` + 1 decompressed bytes of a gzip file of one or more members: (data, reason, what).

    reason is None, "truncated_gzip" (the file ends inside a member), "corrupt_compressed" (not gzip, or a
    member is not valid deflate data; `data` is incomplete) or "corrupt_gzip" (bytes after the last complete
    member are not gzip data; `data` is whole). Why not gzip.GzipFile: it raises on junk after the last
    member and so loses the intact page before it. The member handling is the WARC reader's (GzipMembers).
    """
    stream, out = GzipMembers(raw), bytearray()
    while len(out) <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - len(out)))
        if not chunk:
            break
        out += chunk
    if stream.truncated:
        return bytes(out), "truncated_gzip", "gzip stream ends inside a member (truncated file)"
    if stream.corrupt and (stream.bad_member or not stream.member_count):
        return (
            bytes(out),
            "corrupt_compressed",
            "not gzip data" if not stream.member_count else stream.corrupt,
        )
    if stream.corrupt:
        return bytes(out), "corrupt_gzip", "bytes after the last gzip member are not gzip data"
    return bytes(out), None, None


def _parses(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


def _canonical_url(data: bytes) -> str | None:
    for tag in _LINK_OR_META.finditer(data[:65536]):
        text = tag.group(0)
        if text[1:2].lower() == b"l":
            match = _REL_CANONICAL.search(text) and _HREF.search(text)
        else:
            match = _OG_URL.search(text) and _CONTENT.search(text)
        if match:
            url = match.group(1).decode("utf-8", "replace")
            return url if url.startswith(("http://", "https://")) else None
    return None


class _Progress:
    """A log line every `seconds` while a rank reads: documents so far, rate, and the unit being read.

    Why: the driver's progress bar moves only when a rank ends, and a 64 MB .jsonl.gz rank holds about 90,000
    documents (an hour on one worker; a big compressed file that cannot be cut, days). For 536 s the console
    showed `curate ranks: 0/2` and the rank logs held only the pipeline banner.
    """

    def __init__(self, rank: int, units: list[int], seconds: float):
        self.rank, self.units, self.seconds = rank, len(units), seconds
        self.started = self.last = time.monotonic()
        self.documents = 0

    def tick(self, position: int, unit: WorkUnit) -> None:
        self.documents += 1
        now = time.monotonic()
        if now - self.last < self.seconds:
            return
        self.last = now
        elapsed = now - self.started
        logger.info(
            f"curate rank {self.rank}: {self.documents:,} documents read in {elapsed / 60:.1f} min "
            f"({self.documents / max(elapsed, 1e-9):.0f}/s); unit {position + 1} of {self.units}: "
            f"{unit.describe()}"
        )


class CurateReader(PipelineStep):
    """Read the work units of one rank (see pipelines.curate.inputs) into Documents, counting every loss."""

    name = "📖 Curate reader"
    type = "📖 - READER"

    def __init__(
        self,
        plan: Plan,
        settings: ReadSettings,
        strict: bool = False,
        exclusion_dir: str | None = None,
        progress_seconds: float = 300.0,
    ):
        super().__init__()
        self.plan = plan
        self.progress_seconds = progress_seconds
        self.settings = settings
        self.strict = strict
        self.exclusion_dir = exclusion_dir
        self._excluded = None
        self._rank = 0
        # inputs that could not be opened: not read at all, so the state store must not mark them seen
        self.unreadable: list[str] = []

    # -- accounting ---------------------------------------------------------------------------------------
    def _fail(self, path: str, offset: int | None, what: str) -> None:
        path = _label(path)
        where = f"{path} at offset {offset}" if offset is not None else path
        raise BadInputError(f"{where}: {what}")

    def _drop(
        self, reason: str, path: str, offset: int, what: str, preview: str = "", count: int = 1
    ) -> None:
        """`count` delimited records that cannot become documents."""
        self.stat_update("documents_in", value=count)
        self.stat_update(f"dropped_{reason}", value=count)
        if self.strict:
            self._fail(path, offset, what)
        if self._excluded is not None:
            path = _label(path)
            doc = Document(text=preview[:PREVIEW_CHARS], id=f"{path}#{offset}")
            doc.metadata.update(source=path, source_offset=offset, filter_reason=reason, detail=what)
            self._excluded.write(doc, self._rank)

    def _file_error(self, reason: str, path: str, offset: int | None, what: str) -> None:
        self.stat_update(f"file_error_{reason}")
        logger.warning(f"bad input ({reason}): {_label(path)} at offset {offset}: {what}")
        if self.strict:
            self._fail(path, offset, what)

    def _repaired(self, reason: str, path: str, offset: int, what: str) -> None:
        self.stat_update(f"repaired_{reason}")
        if self.strict:
            self._fail(path, offset, what)

    def _open(self, unit: WorkUnit) -> Any | None:
        """The unit's file opened for binary reading, or None after a file error (instead of a failed rank)."""
        fs, path = fsspec.core.url_to_fs(unit.path)
        try:
            return fs.open(path, "rb")
        except _UNREADABLE as exc:
            self._file_error("unreadable", unit.path, None, f"cannot open ({exc})")
            if unit.path not in self.unreadable:
                self.unreadable.append(unit.path)
            return None

    def _doc(
        self, text: str, path: str, offset: int, kind: str, url: str | None, date: str | None, size: int
    ) -> Document:
        self.stat_update("documents_in")
        self.stat_update("bytes_in", value=size, unit="doc")
        path = _label(path)
        return Document(
            text=text,
            id=f"{path}#{offset}",
            metadata={"source": path, "source_offset": offset, "url": url, "crawl_date": date, "kind": kind},
        )

    # -- driver -------------------------------------------------------------------------------------------
    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        self._rank = rank
        readers = {
            "warc": self._read_warc,
            "jsonl": self._read_jsonl,
            "parquet": self._read_parquet,
            "html": self._read_html,
        }
        excluded = exclusion_writer(self.exclusion_dir, "read")
        progress = _Progress(rank, self.plan.ranks[rank], self.progress_seconds)
        with excluded if excluded is not None else contextlib.nullcontext() as writer:
            self._excluded = writer
            for position, index in enumerate(self.plan.ranks[rank]):
                unit = self.plan.units[index]
                self.stat_update("units", unit="rank")
                docs = readers[unit.format](unit)
                while True:
                    with self.track_time():
                        doc = next(docs, None)
                    if doc is None:
                        break
                    # with source_offset: the document's place in the input order (output.input_order)
                    doc.metadata["unit"] = index
                    progress.tick(position, unit)
                    yield doc
            self._excluded = None

    # -- WARC / WET ---------------------------------------------------------------------------------------
    def _read_warc(self, unit: WorkUnit) -> Iterator[Document]:
        """Read the records of a unit; a corrupt gzip member or an unparseable record costs only itself.

        FastWARC cannot go on after a parse error, so reading restarts with a fresh iterator at the next gzip
        member (.warc.gz) or the next valid record header (.warc). The bad member or record is dropped with
        its offset; unparseable bytes after a record that was read are a `file_error_corrupt_warc`.
        """
        from fastwarc import ArchiveIterator, WarcRecordType

        gzipped = unit.compression == "gzip"
        types = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion
        raw = self._open(unit)
        if raw is None:
            return
        with raw:
            if unit.size == 0 and not unit.split:
                self._file_error("empty_file", unit.path, 0, "empty file (expected WARC records)")
                return

            def next_start(pos: int) -> int | None:
                return find_gzip_member(raw, pos) if gzipped else find_warc_record(raw, pos)

            start = next_start(unit.start) if unit.split and unit.start else 0
            # Read up to where the next unit starts (its first boundary at or after `end`), not just to `end`:
            # a bad record or member after `end` that is no boundary is then still read, and counted, here.
            stop = next_start(unit.end) if unit.split else None
            seen = 0
            first = True
            pending: tuple[int, str] | None = None  # bad bytes after a record; reported unless explained
            while start is not None and not (stop is not None and start >= stop):
                stream: Any = raw
                if gzipped:
                    stream = GzipMembers(raw, start, stop=stop)
                else:
                    raw.seek(start)
                records = iter(ArchiveIterator(stream, record_types=types, parse_http=False))
                last = error = resume = None
                skipped = False  # a record with a bad Content-Length: resume after it, whatever follows
                while True:
                    try:
                        record = next(records)
                    except StopIteration:
                        break
                    except Exception as exc:
                        error = f"cannot parse WARC ({exc})"
                        break
                    pos = record.stream_pos
                    offset = stream.member_offset(pos) if gzipped else pos
                    if stop is not None and offset >= stop:
                        break
                    if pending is not None:
                        self._file_error("corrupt_warc", unit.path, *pending)
                        pending = None
                    seen += 1
                    last = offset
                    length = (record.headers.get("Content-Length") or "").strip()
                    if not (length.isascii() and length.isdigit() and int(length) == record.content_length):
                        # FastWARC reads it as 0 bytes and then fails on its block: skip it instead.
                        if gzipped and stream.truncated and offset == stream.error_offset:
                            self._drop(
                                "truncated", unit.path, offset, "record header cut off (truncated file)"
                            )
                        else:
                            skipped, resume = True, next_start(offset + 1)
                            self._drop(
                                "corrupt_warc",
                                unit.path,
                                offset,
                                f"invalid WARC Content-Length {length!r}; resumed at offset {resume}",
                            )
                        break
                    doc = self._warc_record(record, unit.path, offset)
                    if doc is not None:
                        yield doc
                broken = gzipped and (stream.truncated or stream.corrupt) and not skipped
                if broken and error is not None:  # FastWARC reads ahead: is the gzip problem where it failed?
                    after = start if last is None else find_gzip_member(raw, last + 1)
                    broken = stream.error_offset in (last, after)
                if broken and stream.truncated:
                    self._file_error(
                        "truncated_gzip",
                        unit.path,
                        stream.error_offset,
                        "gzip stream ends inside a member (truncated file)",
                    )
                    error = resume = None  # the file ends there
                elif broken:
                    bad = stream.error_offset
                    resume = find_gzip_member(raw, bad + 1)
                    self._file_error(
                        "corrupt_gzip", unit.path, bad, f"{stream.corrupt}; resumed at offset {resume}"
                    )
                    if stream.bad_member and last != bad:  # its record, unless it was read (and counted)
                        self._drop(
                            "corrupt_gzip",
                            unit.path,
                            bad,
                            f"gzip member cannot be decompressed ({stream.corrupt})",
                        )
                    error = None  # a parse error here comes from the cut-off member
                if error is not None and last is None:  # the record at `start` itself
                    pending = None
                    resume = next_start(start + 1)
                    self._drop("corrupt_warc", unit.path, start, f"{error}; resumed at offset {resume}")
                elif error is not None:
                    resume = next_start(last + 1)
                    where = last if gzipped else (warc_record_end(raw, last) or last)
                    then = f"resumed at offset {resume}" if resume is not None else "no later record"
                    pending = (where, f"{error} after the record at offset {last}; {then}")
                    if self.strict:
                        self._file_error("corrupt_warc", unit.path, *pending)
                if (
                    gzipped
                    and first
                    and seen == 0
                    and stream.pos_out == 0
                    and not unit.split
                    and not stream.truncated
                ):
                    self._file_error("empty_file", unit.path, 0, "no data (expected WARC records)")
                first = False
                start = resume
            if pending is not None:
                self._file_error("corrupt_warc", unit.path, *pending)

    def _warc_record(self, record: Any, path: str, offset: int) -> Document | None:
        from fastwarc import WarcRecordType

        length = record.content_length
        url = (record.headers.get("WARC-Target-URI") or "").strip("<>") or None
        date = record.headers.get("WARC-Date")
        if record.record_type == WarcRecordType.resource and (url or "").startswith("metadata:"):
            # the crawler's own files (wget's log and arguments): no more a document than a request record, so
            # not read as one (they were scored, then dropped as low quality) nor a drop that fails strict runs
            self.stat_update("warc_crawler_metadata_skipped")
            return None
        if length > self.settings.max_document_bytes:
            self._drop("too_large", path, offset, f"record of {length} bytes > read.max_document_bytes")
            return None
        try:
            block = record.reader.read()
        except Exception as exc:
            self._drop("truncated", path, offset, f"cannot read record block ({exc})")
            return None
        if len(block) < length:
            self._drop(
                "truncated", path, offset, f"record block has {len(block)} of {length} bytes (truncated file)"
            )
            return None
        kind_of = record.record_type
        if kind_of == WarcRecordType.response:
            try:
                response = parse_response(block, self.settings.max_document_bytes)
            except HttpError as exc:
                self._drop(exc.reason, path, offset, str(exc))
                return None
            if not 200 <= response.status < 300:
                self._drop("http_status", path, offset, f"HTTP status {response.status}")
                return None
            body, content_type, charset = response.body, response.content_type, response.charset
        else:
            body = block
            # the record's own Content-Type, parsed as an HTTP one (a resource record may name its charset)
            header = HttpResponse(0, {"content-type": record.headers.get("Content-Type") or ""}, b"")
            content_type, charset = header.content_type, header.charset
            if not body.strip():
                self._drop("no_payload", path, offset, "record has no payload")
                return None
        if kind_of == WarcRecordType.conversion:  # WET: UTF-8 by definition
            text, problem = decode_utf8(body)
            kind = "text"
        elif content_type in TEXT_TYPES:  # the declared charset, or what the bytes look like (as for HTML)
            text, problem = decode_text(body, charset)
            kind = "text"
        elif content_type in HTML_TYPES:
            text, problem = decode_html(body, charset)
            kind = "html"
        else:
            self._drop(
                "unsupported_content_type", path, offset, f"content type {content_type!r} is not HTML or text"
            )
            return None
        if problem:
            self._repaired(problem, path, offset, f"{problem} (declared charset {charset!r})")
        return self._doc(text, path, offset, kind, url, date, len(body))

    # -- JSON Lines ---------------------------------------------------------------------------------------
    def _open_lines(self, raw: Any, unit: WorkUnit, start: int) -> Any:
        """Lines of the unit from compressed offset `start` (a gzip member or zstd frame; 0 for plain files,
        which are positioned by the caller)."""
        if unit.compression == "gzip":
            return Lines(GzipMembers(raw, start, raise_errors=True))
        if unit.compression == "zstd":
            return Lines(ZstdFrames(raw, start))
        return raw

    @staticmethod
    def _resume_offset(raw: Any, unit: WorkUnit, bad: int | None) -> int | None:
        """Where reading goes on after the corrupt member or frame at compressed offset `bad`: the next gzip
        member or zstd frame after it, or None (plain files, or nothing decodable follows)."""
        if bad is None:
            return None
        if unit.compression == "gzip":
            return find_gzip_member(raw, bad + 1, expect=b"")
        if unit.compression == "zstd":
            return find_zstd_frame(raw, bad + 1)
        return None

    def _read_jsonl(self, unit: WorkUnit) -> Iterator[Document]:
        """Read the lines of a unit; a corrupt gzip member or zstd frame costs only itself.

        After a decoding error, reading restarts at the next gzip member or zstd frame that decodes, and the
        loss is one `file_error_corrupt_compressed` at the compressed offset of the bad member or frame (how
        many records it held cannot be known). Document offsets are positions in the decompressed lines
        read, so they stay increasing and unique across a skipped member. Compressed files are never split.
        """
        limit = self.settings.max_document_bytes
        raw = self._open(unit)
        if raw is None:
            return
        with raw:
            offset = 0
            if unit.split and unit.start > 0:
                raw.seek(unit.start - 1)
                # finish the line the previous unit owns, in bounded pieces: it may be gigabytes long
                while (piece := raw.readline(1 << 20)) and not piece.endswith(b"\n"):
                    pass
                offset = raw.tell()
            lines, failed = 0, False
            start: int | None = 0  # compressed offset of the member or frame the next segment starts at
            while start is not None:
                stream = self._open_lines(raw, unit, start)
                # a member or frame after a corrupt one may begin inside a line whose start was lost
                resumed, start = start > 0, None
                cut_at: int | None = None  # a record cut by the decoding error, counted after the file error
                while not (unit.split and offset >= unit.end):
                    size = 0
                    try:
                        line = stream.readline(limit + 1)
                        if len(line) > limit and not line.endswith(b"\n"):
                            size = len(line)
                            while line and not line.endswith(b"\n"):  # skip the rest without holding it
                                line = stream.readline(1 << 20)
                                size += len(line)
                    except Exception as exc:  # truncated, corrupt member or frame, junk, unreadable stream
                        failed = True
                        # named by its compressed offset; a plain file's error by the line's offset
                        bad = getattr(exc, "offset", None)
                        if isinstance(exc, EOFError):
                            what = f"compressed stream ends early ({exc})"
                            reason = f"truncated_{unit.compression}"
                        else:
                            start = self._resume_offset(raw, unit, bad)
                            then = (
                                f"resumed at offset {start}"
                                if start is not None
                                else "nothing decodable after it"
                            )
                            what, reason = f"cannot decompress ({exc}); {then}", "corrupt_compressed"
                        self._file_error(reason, unit.path, offset if bad is None else bad, what)
                        if cut_at is not None:  # after the file error, so that strict names the latter
                            self._drop("truncated", unit.path, cut_at, "record cut by a decoding error")
                        break
                    if size:
                        lines += 1
                        resumed = False
                        self._drop(
                            "too_large", unit.path, offset, f"line of {size} bytes > read.max_document_bytes"
                        )
                        offset += size
                        continue
                    if not line:
                        break
                    line_offset, offset = offset, offset + len(line)
                    if not line.strip():
                        continue
                    lines += 1
                    first, resumed = resumed, False
                    # the last bytes before a decoding error: a whole record before junk, or one cut short
                    cut = not line.endswith(b"\n") and getattr(stream, "error", None) is not None
                    if cut and not _parses(line):
                        cut_at = line_offset  # the next readline raises the error
                        continue
                    if first and not _parses(line):
                        what = "record whose start was lost in a corrupt compressed block"
                        self._drop("truncated", unit.path, line_offset, what)
                        continue
                    doc = self._json_line(line, unit.path, line_offset)
                    if doc is not None:
                        yield doc
            if lines == 0 and not unit.split and not failed:  # no bytes, or only blank lines
                self._file_error("empty_file", unit.path, 0, "empty file (expected JSON Lines)")

    def _json_line(self, line: bytes, path: str, offset: int) -> Document | None:
        text_line, problem = decode_utf8(line)
        if problem:
            self._repaired(problem, path, offset, "line is not valid UTF-8 (bytes replaced by U+FFFD)")
        if offset == 0:
            text_line = text_line.removeprefix("\ufeff")  # a byte order mark opens some files
        try:
            record = json.loads(text_line)
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's stack
            self._drop("invalid_json", path, offset, f"invalid JSON ({type(exc).__name__}: {exc})", text_line)
            return None
        if not isinstance(record, dict):
            self._drop(
                "invalid_json",
                path,
                offset,
                f"expected a JSON object, got {type(record).__name__}",
                text_line,
            )
            return None
        # only a \uD800-\uDFFF escape makes a lone surrogate: a byte search spares the scan of every text
        escapes = b"\\ud" in line or b"\\uD" in line
        return self._record_doc(record, path, offset, len(line), escapes)

    def _record_doc(
        self, record: dict[str, Any], path: str, offset: int, size: int, escapes: bool = False
    ) -> Document | None:
        field = self.settings.text_field
        text = _lookup(record, field)
        if not isinstance(text, str):
            self._drop("missing_text", path, offset, f"field '{field}' is missing or not a string")
            return None
        if not text.strip():
            self._drop("empty_text", path, offset, f"field '{field}' is empty")
            return None
        if len(text) > self.settings.max_document_bytes:
            self._drop("too_large", path, offset, f"text of {len(text)} characters > read.max_document_bytes")
            return None
        url = _first_url(record, self.settings.url_fields)
        date = _first_date(record, self.settings.date_fields)
        if escapes and any(has_lone_surrogates(value) for value in (text, url, date) if value):
            # keep the record: the language filter and the Parquet writer would fail on the whole rank
            text, url, date = (without_surrogates(v) if v else v for v in (text, url, date))
            self._repaired(INVALID_UTF8, path, offset, "lone surrogate escapes (replaced by U+FFFD)")
        return self._doc(text, path, offset, "text", url, date, size)

    # -- Parquet ------------------------------------------------------------------------------------------
    def _read_parquet(self, unit: WorkUnit) -> Iterator[Document]:
        import pyarrow.parquet as pq

        if unit.size == 0:
            self._file_error("empty_file", unit.path, 0, "empty file (expected Parquet)")
            return
        handle = self._open(unit)
        if handle is None:
            return
        with handle:
            try:
                parquet = pq.ParquetFile(handle)
            except Exception as exc:
                self._file_error(
                    "unreadable_parquet", unit.path, None, f"not a readable Parquet file ({exc})"
                )
                return
            meta = parquet.metadata
            end = meta.num_row_groups if unit.end < 0 else min(unit.end, meta.num_row_groups)
            groups = list(range(unit.start, end))
            first_row = sum(meta.row_group(i).num_rows for i in range(unit.start))
            rows = sum(meta.row_group(i).num_rows for i in groups)
            schema = parquet.schema_arrow
            field = self.settings.text_field
            root = field.split(".", 1)[0]
            root_type = schema.field(root).type if root in schema.names else None
            if root_type is None or ("." not in field and not _is_text_type(root_type)):
                what = (
                    f"wrong schema: expected a string column '{field}', found columns "
                    f"{', '.join(f'{n}: {schema.field(n).type}' for n in schema.names[:12])}"
                )
                self._file_error("wrong_schema", unit.path, first_row, what)
                if rows:
                    self._drop("wrong_schema", unit.path, first_row, what, count=rows)
                return
            if not groups:
                if not unit.split:
                    self._file_error("empty_file", unit.path, 0, "Parquet file has no rows")
                return
            wanted = {root} | {
                f.split(".", 1)[0] for f in self.settings.url_fields + self.settings.date_fields
            }
            columns = [name for name in schema.names if name in wanted]
            row = first_row
            for group in groups:  # one at a time: a corrupt page loses only the rest of its row group
                left = meta.row_group(group).num_rows
                batches = parquet.iter_batches(
                    batch_size=_parquet_batch_rows(meta.row_group(group)), row_groups=[group], columns=columns
                )
                while left:
                    try:
                        records = _parquet_rows(next(batches))
                    except Exception as exc:  # corrupt page or compression, invalid UTF-8, short file
                        what = f"cannot read row group {group} ({exc or type(exc).__name__})"
                        self._file_error("corrupt_parquet", unit.path, row, what)
                        self._drop("corrupt_parquet", unit.path, row, what, count=left)
                        row += left
                        break
                    for record, repaired in records:
                        if repaired:
                            what = "string column is not valid UTF-8 (bytes replaced by U+FFFD)"
                            self._repaired(INVALID_UTF8, unit.path, row, what)
                        doc = self._record_doc(
                            record,
                            unit.path,
                            row,
                            len(record.get(root) or "") if isinstance(record.get(root), str) else 0,
                        )
                        row += 1
                        left -= 1
                        if doc is not None:
                            yield doc

    # -- HTML files ---------------------------------------------------------------------------------------
    def _read_html(self, unit: WorkUnit) -> Iterator[Document]:
        limit = self.settings.max_document_bytes
        if unit.size == 0:
            self._file_error("empty_file", unit.path, 0, "empty file (expected HTML)")
            return
        if unit.compression is None and unit.size > limit:
            self._drop("too_large", unit.path, 0, f"file of {unit.size} bytes > read.max_document_bytes")
            return
        raw = self._open(unit)
        if raw is None:
            return
        with raw:
            if unit.compression == "gzip":
                data, problem, what = _gunzip(raw, limit)
            else:
                data, problem, what = raw.read(limit + 1), None, None
        if problem == "truncated_gzip":
            self._drop("truncated", unit.path, 0, what)
        if problem:
            self._file_error(problem, unit.path, 0, what)
        if problem in ("truncated_gzip", "corrupt_compressed"):
            return
        if len(data) > limit:
            self._drop("too_large", unit.path, 0, f"document > read.max_document_bytes ({limit})")
            return
        if not data.strip():
            self._file_error("empty_file", unit.path, 0, "no content (expected HTML)")
            return
        text, problem = decode_html(data)
        if problem:
            self._repaired(problem, unit.path, 0, f"{problem} in HTML file")
        yield self._doc(text, unit.path, 0, "html", _canonical_url(data), None, len(data))
