"""Find the input files, recognise their format, and cut them into work units packed into ranks.

Why a plan: datatrove readers shard by file (`files[rank::world_size]`), which leaves workers idle when a run
has two 5 GB WARCs and eight workers. Here every splittable file is cut into byte ranges (WARC/WET at record
boundaries, plain JSONL at line boundaries) or row-group ranges (Parquet), and the units are packed into
ranks by size. The plan is computed once on the driver and saved next to the stage's logging dir, so a
resumed run maps ranks to exactly the same units even if the cluster size changed.

Byte-range rule (the usual split-file rule): a unit [start, end) owns every record from the first record
boundary at or after `start` up to the first one at or after `end` (where the next unit starts). The reader
seeks to its first boundary and reads past `end` to the next unit's, so units never overlap and never miss a
record, even one too damaged to be recognised as a boundary.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

# (suffix, format, compression); the longest matching suffix wins. WET files are WARC files whose records
# are `conversion` records holding plain text; the WARC reader handles both.
FORMATS: list[tuple[str, str, str | None]] = [
    (".warc.wet.gz", "warc", "gzip"),
    (".warc.wet", "warc", None),
    (".wet.gz", "warc", "gzip"),
    (".wet", "warc", None),
    (".warc.gz", "warc", "gzip"),
    (".warc", "warc", None),
    (".jsonl.gz", "jsonl", "gzip"),
    (".jsonl.zst", "jsonl", "zstd"),
    (".jsonl.zstd", "jsonl", "zstd"),
    (".jsonl", "jsonl", None),
    (".ndjson.gz", "jsonl", "gzip"),
    (".ndjson", "jsonl", None),
    (".json.gz", "jsonl", "gzip"),  # dolma / FineWeb style
    (".json.zst", "jsonl", "zstd"),
    (".json", "jsonl?", None),  # JSON Lines only if the first line is one JSON object (sniffed)
    (".parquet", "parquet", None),
    (".html.gz", "html", "gzip"),
    (".htm.gz", "html", "gzip"),
    (".html", "html", None),
    (".htm", "html", None),
]
_BY_LENGTH = sorted(FORMATS, key=lambda item: -len(item[0]))


class InputError(ValueError):
    """An input pattern that matches nothing, or an unreadable input root; names the pattern."""


class MissingInput(InputError):
    """An input pattern that names no file or folder (raised by the listing; the planner may tolerate it)."""


# Files an input names that the curate stage does not read, each with why. All are listed in `plan.json` and
# the stage summary and logged. Two kinds:
# - bad inputs (BAD_INPUT_REASONS): files that look like inputs but cannot be read (a broken link, a FIFO, a
#   file gone since it was listed). They are file errors of the curate stage, and a `strict` run stops at one.
# - not read: files in no format the curate stage reads. Dataset folders hold LICENSE, README and metadata
#   `.json` files beside the data, so these are reported (someone may have expected a `.csv` to be read) but
#   are neither file errors nor a reason for `strict` to stop; an input entry that matches only such files is
#   an error (`discover`).
# Not listed at all (not inputs): hidden files (`.name`: writers' temp files) and marker files (`_name` in no
# readable format: Hadoop/Spark `_SUCCESS`, Parquet `_metadata`).
SKIP_REASONS = {
    "broken_link": "a symbolic link whose target does not exist",
    "not_regular_file": "not a regular file (a FIFO, socket or device would block or fail the reader)",
    "unreadable": "no such file or folder any more (listed, then gone before the curate stage planned it)",
    "unsupported_format": "not a format the curate stage reads: WARC, WET, JSONL, JSON Lines .json, Parquet, HTML",
    "json_not_json_lines": "a .json file that is not JSON Lines (its first line is not one JSON object)",
}
BAD_INPUT_REASONS = frozenset({"broken_link", "not_regular_file", "unreadable"})


def is_bad_input(entry: dict[str, str]) -> bool:
    """Whether a skipped entry is a bad input (a file error; `strict` stops) rather than a file not read."""
    return entry["reason"] in BAD_INPUT_REASONS


def describe_skipped(entry: dict[str, str]) -> str:
    """One line naming a skipped input file and why: `PATH: skipped (reason: explanation)`."""
    reason = entry["reason"]
    return f"{entry['path']}: skipped ({reason}: {SKIP_REASONS.get(reason, reason)})"


def _not_an_input(name: str) -> bool:
    return name.startswith(".") or (name.startswith("_") and detect_format(name) is None)


def detect_format(path: str) -> tuple[str, str | None] | None:
    """(format, compression) from the file name, or None for files the curate stage does not read."""
    name = path.rsplit("/", 1)[-1].lower()
    for suffix, fmt, compression in _BY_LENGTH:
        if name.endswith(suffix):
            return fmt, compression
    return None


@dataclass
class InputFile:
    path: str  # fsspec URL, with protocol for non-local files
    size: int
    format: str
    compression: str | None
    # change marks for `corpus refresh` (new or changed = path, size, modified, etag not seen before)
    modified: str | None = None
    etag: str | None = None


@dataclass
class WorkUnit:
    """A piece of one input file: byte range [start, end) or, for Parquet, row groups [start, end)."""

    path: str
    format: str
    compression: str | None
    start: int
    end: int
    size: int  # bytes this unit covers (for packing)
    split: bool  # True when the file was cut, so the reader must look for a boundary at `start`

    def describe(self) -> str:
        if not self.split:
            return self.path
        what = "row groups" if self.format == "parquet" else "bytes"
        return f"{self.path} [{what} {self.start}-{self.end})"


@dataclass
class Plan:
    inputs: list[str]
    files: list[InputFile]
    skipped: list[dict[str, str]]
    units: list[WorkUnit]
    ranks: list[list[int]] = field(default_factory=list)

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def units_of(self, rank: int) -> list[WorkUnit]:
        return [self.units[i] for i in self.ranks[rank]]

    def fingerprint(self) -> str:
        """Identity of the input listing (paths and sizes); a resumed run must see the same one."""
        listing = sorted((f.path, f.size) for f in self.files)
        return hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps({"fingerprint": self.fingerprint(), **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data.pop("fingerprint", None)
        return cls(
            inputs=data["inputs"],
            files=[InputFile(**f) for f in data["files"]],
            skipped=data["skipped"],
            units=[WorkUnit(**u) for u in data["units"]],
            ranks=data["ranks"],
        )


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _url(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if _is_local(fs) else fs.unstrip_protocol(path)


def _sniff_json_lines(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether a `.json` file is JSON Lines: its first non-blank line is an object (or, past 1 MB, starts one)."""
    with fs.open(path, "rb") as f:
        for _ in range(1000):
            line = f.readline(1 << 20)
            if not line or line.strip():
                break
    first = line.strip()
    if len(line) >= 1 << 20 and not line.endswith(b"\n"):  # a long first record: its start has to do
        return first.startswith(b"{")
    try:
        return isinstance(json.loads(first), dict)
    except (ValueError, RecursionError):
        return False


def change_marks(info: dict[str, Any]) -> tuple[str | None, str | None]:
    """(modified, etag) from an fsspec info dict: local mtime, S3 LastModified/ETag, GCS updated/md5Hash, ..."""
    keys = ("mtime", "LastModified", "last_modified", "updated", "modified")
    modified = next((info[k] for k in keys if info.get(k)), None)
    etag = next((info[k] for k in ("ETag", "etag", "md5Hash", "content_md5") if info.get(k)), None)
    if hasattr(modified, "isoformat"):
        modified = modified.isoformat()
    return (None if modified is None else str(modified)), (None if etag is None else str(etag).strip('"'))


def _regular_file(fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]) -> tuple[dict, str | None]:
    """(info of the file a listed path reads, None) or (info, skip reason) for what is not a regular file.

    Why: a local listing reports a broken symlink and a FIFO as size-0 "other" entries; opening the first
    fails and opening the second blocks forever, so either would stop a rank. A symlink to a regular file is
    an input like any other (its info is the target's).
    """
    if info.get("type", "file") == "file":
        return info, None
    if info.get("islink"):
        try:
            info = fs.info(path)  # follows the link
        except OSError:
            return info, "broken_link"
        if info.get("type") == "file":
            return info, None
    return info, "not_regular_file"


def _entry(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any] | None:
    """The listing entry of a path that is neither file nor folder (a FIFO, a broken link), or None."""
    try:
        return fs.info(path)
    except FileNotFoundError:
        pass
    if not _is_local(fs):  # object stores have no links: missing is missing (and a prefix can be huge)
        return None
    # a broken link: `info` follows it; the folder's listing describes the link itself
    try:
        return next((i for i in fs.ls(fs._parent(path), detail=True) if i.get("name") == path), None)
    except Exception:  # no such folder either: the path is simply missing
        return None


def _listing(
    pattern: str, storage_options: dict[str, Any] | None, literal: bool = False
) -> tuple[fsspec.AbstractFileSystem, dict[str, dict[str, Any]]]:
    """The filesystem of `pattern` and every file it names (folders expanded), or an InputError naming it.

    Why the wrapping: a remote listing fails with the filesystem's own exception (no credentials, no network,
    a missing fsspec backend) and a traceback; the user needs the input and the reason in one line. A path
    that exists as written is never globbed (`a[1].jsonl`, a folder `in[v2]`), nor is any `literal` one (paths
    an earlier listing returned).
    """
    try:
        fs, root = fsspec.core.url_to_fs(pattern, **dict(storage_options or {}))
        if any(ch in root for ch in "*?[") and not literal and not fs.exists(root):
            matches = fs.glob(root, detail=True)
            found = {p: info for p, info in matches.items() if info.get("type") != "directory"}
            for p, info in matches.items():
                if info.get("type") == "directory":
                    found.update(fs.find(p, detail=True))
        elif fs.isdir(root):
            found = fs.find(root, detail=True)
        elif fs.isfile(root):
            found = {root: fs.info(root)}
        else:  # a broken link or a FIFO named directly is classified like one in a folder
            found = {root: info} if (info := _entry(fs, root)) else {}
            if not found:
                raise MissingInput(f"input '{pattern}': no such file or folder")
    except InputError:
        raise
    except Exception as exc:  # any backend's failure, reported with the pattern
        raise InputError(f"input '{pattern}': cannot list it ({type(exc).__name__}: {exc})") from None
    return fs, found


def discover(
    inputs: list[str], storage_options: dict[str, Any] | None = None, *, listed: bool = False
) -> tuple[list[InputFile], list[dict]]:
    """Expand folders (recursively) and globs into readable input files, plus the files skipped and why.

    Skipped entries are `{"path", "reason"}` with a reason of SKIP_REASONS. Raises InputError naming the first
    pattern that matches no file at all, or only files the curate stage does not read.

    `listed=True` is for planning inputs that an earlier discovery already accepted (the graph's listing of a
    run's batch): an entry that is gone now, or no longer matches a readable file, is a skipped entry (reason
    `unreadable` when gone, so it is not marked seen and the next refresh retries it), not an error. A pattern
    that cannot be listed at all (no network, no credentials) is still an error.
    """
    files: dict[str, InputFile] = {}
    skipped: dict[str, dict[str, str]] = {}
    for pattern in inputs:
        try:
            fs, found = _listing(pattern, storage_options, literal=listed)
        except MissingInput:
            if not listed:
                raise
            skipped.setdefault(pattern, {"path": pattern, "reason": "unreadable"})
            continue
        if not found:
            if listed:
                skipped.setdefault(pattern, {"path": pattern, "reason": "unreadable"})
                continue
            raise InputError(f"input '{pattern}': matches no files")
        readable, mine = 0, []
        for path in sorted(found):
            if _not_an_input(path.rsplit("/", 1)[-1]):
                continue
            url = _url(fs, path)
            if url in files:
                readable += 1
                continue
            reason, info, fmt, compression = _classify(fs, path, found[path])
            if reason:
                mine.append({"path": url, "reason": reason})
                continue
            readable += 1
            files[url] = InputFile(url, int(info.get("size") or 0), fmt, compression, *change_marks(info))
        for entry in mine:
            skipped.setdefault(entry["path"], entry)
        if not readable and not listed:
            raise InputError(f"input '{pattern}': {_nothing_readable(mine)}")
    return [files[k] for k in sorted(files)], [skipped[k] for k in sorted(skipped)]


def _classify(
    fs: fsspec.AbstractFileSystem, path: str, info: dict[str, Any]
) -> tuple[str | None, dict[str, Any], str, str | None]:
    """(skip reason or None, info of the file read, format, compression) of one listed path."""
    info, not_regular = _regular_file(fs, path, info)
    if not_regular:
        return not_regular, info, "", None
    detected = detect_format(path)
    if detected is None:
        return "unsupported_format", info, "", None
    fmt, compression = detected
    if fmt == "jsonl?":
        if info.get("size", 0) and not _sniff_json_lines(fs, path):
            return "json_not_json_lines", info, fmt, compression
        fmt = "jsonl"
    return None, info, fmt, compression


def _nothing_readable(skipped: list[dict[str, str]]) -> str:
    """Why a pattern gave no input: the skipped files it matched, grouped by reason (the first few named)."""
    if not skipped:
        return "matches no input files (only hidden or marker files: names starting with '.' or '_')"
    groups: dict[str, list[str]] = {}
    for entry in skipped:
        groups.setdefault(entry["reason"], []).append(entry["path"].rsplit("/", 1)[-1])
    parts = []
    for reason, names in groups.items():
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        parts.append(f"{', '.join(names[:3])}{more} ({reason}: {SKIP_REASONS[reason]})")
    return "matches no file the curate stage reads; skipped " + "; ".join(parts)


def _splittable(f: InputFile) -> bool:
    return (
        f.format == "parquet"
        or (f.format == "warc" and f.compression in (None, "gzip"))
        or (f.format == "jsonl" and f.compression is None)
    )


def _parquet_units(f: InputFile, target: int) -> list[WorkUnit]:
    import pyarrow.parquet as pq

    try:
        fs, path = fsspec.core.url_to_fs(f.path)
        with fs.open(path, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
    except Exception:  # unreadable: one unit, the reader reports it by reason
        return [WorkUnit(f.path, f.format, f.compression, 0, -1, f.size, False)]
    sizes = [
        sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        for rg in (meta.row_group(i) for i in range(meta.num_row_groups))
    ]
    if meta.num_row_groups <= 1 or f.size <= target:
        return [WorkUnit(f.path, f.format, f.compression, 0, max(meta.num_row_groups, 1), f.size, False)]
    units, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        if acc >= target or i == len(sizes) - 1:
            units.append(WorkUnit(f.path, f.format, f.compression, start, i + 1, acc, True))
            start, acc = i + 1, 0
    if len(units) == 1:
        units[0].split = False
    return units


def unsplittable_warning(files: list[InputFile], split_bytes: int) -> str | None:
    """A warning when inputs that cannot be cut are much bigger than a unit, else None.

    Why: a compressed JSONL stream (gzip, zstd, ...) can only be read from its start, so each such file is one
    rank, one worker and one curate shard however many workers wait: four 5 GB `.jsonl.zst` files on 64
    workers ran as 4 ranks of days each, and a crash restarted a whole file. WARC.gz (one gzip member per
    record), plain JSONL and Parquet are cut.
    """
    big = sorted((f for f in files if not _splittable(f) and f.size > 2 * split_bytes), key=lambda f: -f.size)
    if not big:
        return None
    largest = big[0]
    return (
        f"{len(big)} input file(s) larger than 2 x curate.read.split_bytes ({split_bytes / (1 << 20):g} MB) cannot be "
        f"cut ({largest.format} with {largest.compression or 'no'} compression is read from its start), so each "
        f"is one rank and one curate shard; largest: {largest.path} ({largest.size / (1 << 20):,.0f} MB). "
        "For parallelism and cheaper retries, reshard them into files of about split_bytes, or store them as "
        "plain JSONL or Parquet"
    )


def make_units(
    files: list[InputFile], split_bytes: int, min_split_bytes: int, workers: int
) -> list[WorkUnit]:
    """Cut splittable files into units of about `target` bytes, where target feeds every worker."""
    total = sum(f.size for f in files)
    target = max(min_split_bytes, min(split_bytes, math.ceil(total / max(workers, 1)) or 1))
    units: list[WorkUnit] = []
    for f in files:
        if f.format == "parquet":
            units += _parquet_units(f, target)
        elif _splittable(f) and f.size > target:
            pieces = math.ceil(f.size / target)
            bounds = [round(i * f.size / pieces) for i in range(pieces + 1)]
            units += [
                WorkUnit(f.path, f.format, f.compression, a, b, b - a, True)
                for a, b in zip(bounds, bounds[1:], strict=False)
            ]
        else:
            units.append(WorkUnit(f.path, f.format, f.compression, 0, f.size, f.size, False))
    return units


def pack_ranks(units: list[WorkUnit], tasks: int, workers: int, split_bytes: int) -> list[list[int]]:
    """Assign units to ranks: largest first onto the least-loaded rank (deterministic).

    tasks=0 picks the rank count: enough that every worker has one, about `split_bytes` of input each, and
    never more ranks than units.
    """
    if not units:
        return []
    if tasks <= 0:
        total = sum(u.size for u in units)
        tasks = max(workers, math.ceil(total / split_bytes))
    tasks = min(tasks, len(units))
    # a heap of (load, rank): the same choice as a scan for the least-loaded, lowest-numbered rank, but
    # O(n log n). The scan took 386 s in the driver for 32,000 units (about 2 TB of input), before any work.
    loads = [(0, k) for k in range(tasks)]
    ranks: list[list[int]] = [[] for _ in range(tasks)]
    order = sorted(range(len(units)), key=lambda i: (-units[i].size, i))
    for i in order:
        load, r = loads[0]
        ranks[r].append(i)
        heapq.heapreplace(loads, (load + max(units[i].size, 1), r))
    return [sorted(r) for r in ranks]


def make_plan(
    inputs: list[str],
    *,
    tasks: int,
    workers: int,
    split_bytes: int,
    min_split_bytes: int,
    storage_options: dict[str, Any] | None = None,
    listed: bool = False,
) -> Plan:
    """Discover, cut and pack `inputs`; `listed=True` when they were listed before (see `discover`)."""
    files, skipped = discover(inputs, storage_options, listed=listed)
    units = make_units(files, split_bytes, min_split_bytes, workers)
    return Plan(
        inputs=list(inputs),
        files=files,
        skipped=skipped,
        units=units,
        ranks=pack_ranks(units, tasks, workers, split_bytes),
    )
