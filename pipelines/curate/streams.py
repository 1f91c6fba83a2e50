"""Byte streams for splitting and reading inputs: gzip members with their offsets, zstd frames, WARC record
boundaries.

Why our own gzip layer under FastWARC: FastWARC's reader stops silently at a truncated gzip (the real
`clipped.warc.gz` yields a short record and no error), and it reports record offsets in the *decompressed*
stream. Common Crawl's index, and byte-range splitting, need the *compressed* offset of the gzip member
that holds each record. `GzipMembers` decompresses member by member with zlib, remembers where each member
starts in the file, stops cleanly at a unit's end, and records truncation or trailing garbage instead of
losing it.

Both decoders know the compressed offset of the member or frame they are in, so that a reader can name it in
an error and resume after a corrupt one (`find_gzip_member`, `find_zstd_frame`) instead of losing the rest of
the file.
"""

from __future__ import annotations

import bisect
import io
import zlib
from typing import Any, BinaryIO

GZIP_MAGIC = b"\x1f\x8b\x08"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # 0xFD2FB528 little-endian: the start of every zstd data frame
_CHUNK = 1 << 16
# zstd input fed at a time: decompressobj has no output limit, and 1 KB expands to at most about 32 MB.
_ZSTD_FEED = 1 << 10
# How much a resume candidate must decode without error when its content is not known in advance (JSONL):
# a magic number that occurs by chance inside compressed data fails well before that.
_PROBE_BYTES = 4096
# zstd output comes a whole block at a time: a real frame yields output within its first block, at most
# 128 KB plus the frame and block headers.
_ZSTD_PROBE = (128 + 1) << 10


class CompressedDataError(ValueError):
    """A gzip member or zstd frame that cannot be decoded; `offset` is where it starts in the compressed file."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class TruncatedCompressedData(CompressedDataError, EOFError):
    """The file ends inside the gzip member or zstd frame starting at `offset`."""


class _ChunkedOutput(io.RawIOBase):
    """A forward-only raw stream whose subclass decodes a chunk at a time into `_out` (`_fill`)."""

    def __init__(self) -> None:
        super().__init__()
        self._out = b""
        self._out_pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _serve(self, buffer) -> int:
        """Copy decoded bytes not yet read into `buffer`; 0 when none are left."""
        n = min(len(buffer), len(self._out) - self._out_pos)
        if n <= 0:
            return 0
        buffer[:n] = memoryview(self._out)[self._out_pos : self._out_pos + n]
        self._out_pos += n
        return n


class GzipMembers(_ChunkedOutput):
    """Decompressed view of a multi-member gzip file from compressed offset `start`.

    Reading stops at the first member that starts at or after `stop` (None: end of file). Afterwards
    `truncated` is True when the file ended inside a member, and `corrupt` holds a message when a member
    cannot be decompressed (`bad_member` is then True) or bytes that are not gzip follow a member;
    `error_offset` is the compressed offset of the problem. The reader resumes at the next member.
    NUL bytes between members (some writers pad with them) are skipped, as gzip.GzipFile does.

    With `raise_errors`, reading raises TruncatedCompressedData or CompressedDataError (with `error_offset`)
    once every byte decoded before the problem has been read, as a decoder under `Lines` must.
    """

    def __init__(self, raw: BinaryIO, start: int = 0, stop: int | None = None, raise_errors: bool = False):
        super().__init__()
        self.raw = raw
        self.raw.seek(start)
        self.stop = stop
        self.raise_errors = raise_errors
        self.pos_in = start  # compressed offset of the next unread input byte
        self.pos_out = 0  # decompressed bytes produced so far
        self.truncated = False
        self.corrupt: str | None = None
        self.bad_member = False
        self.error_offset: int | None = None
        self._member_out: list[int] = []  # decompressed offset where each member starts
        self._member_in: list[int] = []  # its compressed offset
        self._decomp: zlib._Decompress | None = None
        self._pending = b""  # compressed bytes read but not yet fed

    # FastWARC asks for tell() once and panics on a stream without seek support, so offer no-op seeks.
    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos_out - (len(self._out) - self._out_pos)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        here = self.tell()
        if (whence == io.SEEK_CUR and offset == 0) or (whence == io.SEEK_SET and offset == here):
            return here
        raise OSError("GzipMembers is a forward-only stream")

    @property
    def member_count(self) -> int:
        """Members started so far (0 after a file that does not begin with a gzip member)."""
        return len(self._member_in)

    def member_offset(self, decompressed_pos: int) -> int:
        """Compressed offset of the member containing decompressed position `decompressed_pos`."""
        i = bisect.bisect_right(self._member_out, decompressed_pos) - 1
        return self._member_in[max(i, 0)] if self._member_in else 0

    def _fill(self) -> None:
        while self._out_pos >= len(self._out) and not self._done:
            if not self._pending:
                self._pending = self.raw.read(_CHUNK)
                if not self._pending:
                    if self._decomp is not None and not self._decomp.eof:
                        self.truncated = True
                        self.error_offset = self._member_in[-1] if self._member_in else self.pos_in
                    self._done = True
                    return
            if self._decomp is None:  # at a member boundary
                if self._pending[:1] == b"\x00":  # NUL padding: skip it, a member may follow
                    rest = self._pending.lstrip(b"\x00")
                    self.pos_in += len(self._pending) - len(rest)
                    self._pending = rest
                    continue
                if len(self._pending) < 3 and not self._top_up():
                    self._pending_garbage()
                    return
                if self.stop is not None and self.pos_in >= self.stop:
                    self._done = True
                    return
                if not self._pending.startswith(GZIP_MAGIC):
                    self._pending_garbage()
                    return
                self._decomp = zlib.decompressobj(31)
                self._member_in.append(self.pos_in)
                self._member_out.append(self.pos_out)
            data, self._pending = self._pending, b""
            try:
                out = self._decomp.decompress(data)
            except zlib.error as exc:
                self.corrupt = f"invalid gzip data ({exc})"
                self.bad_member = True
                self.error_offset = self._member_in[-1]
                self._done = True
                return
            if self._decomp.eof:
                unused = self._decomp.unused_data
                self.pos_in += len(data) - len(unused)
                self._pending = unused
                self._decomp = None
            else:
                self.pos_in += len(data)
            self._out, self._out_pos = out, 0
            self.pos_out += len(out)

    def _top_up(self) -> bool:
        more = self.raw.read(_CHUNK)
        self._pending += more
        return len(self._pending) >= 3

    def _pending_garbage(self) -> None:
        if self._pending.strip(b"\x00"):  # some writers pad with NULs
            self.corrupt = "bytes after a gzip member are not gzip data"
            self.error_offset = self.pos_in
        self._done = True

    def readinto(self, buffer) -> int:
        self._fill()
        n = self._serve(buffer)
        if n == 0 and self.raise_errors:
            self._raise()
        return n

    def _raise(self) -> None:
        if self.truncated:
            raise TruncatedCompressedData(
                "gzip stream ends inside a member (truncated file)", self.error_offset or 0
            )
        if self.corrupt:
            what = self.corrupt if self.member_count else "not gzip data"
            raise CompressedDataError(what, self.error_offset or 0)


class ZstdFrames(_ChunkedOutput):
    """Decompressed bytes of a file of zstd frames from compressed offset `start`; every byte decoded is
    returned before an error is raised.

    Why not ZstdDecompressor.stream_reader: a file cut inside a frame just ends there (no error, the tail
    vanishes and a tiny file looks empty), and on junk after the last frame it raises without returning the
    output decoded from the same chunk, losing the last records. Here a cut frame raises
    TruncatedCompressedData (an EOFError) and a corrupt frame or junk raises CompressedDataError, each only
    once all the output before it has been read, with the compressed offset where that frame (or the junk)
    starts.
    """

    def __init__(self, raw: Any, start: int = 0):
        import zstandard

        super().__init__()
        self._raw = raw
        self._raw.seek(start)
        self._pos_in = start  # compressed offset of the next unread byte
        self.frame_offset = start  # compressed offset where the current (or last) frame starts
        self._new_frame = zstandard.ZstdDecompressor().decompressobj
        self._frame: Any = None  # decompressor of the current frame; None between frames
        self._error: Exception | None = None

    def _fill(self) -> None:
        import zstandard

        data, out = self._raw.read(_ZSTD_FEED), []
        base = self._pos_in  # compressed offset of data[0]
        self._pos_in += len(data)
        if not data:
            self._done = True
            if self._frame is not None:
                self._error = TruncatedCompressedData(
                    "zstd stream ends inside a frame (truncated file)", self.frame_offset
                )
        try:
            while data:
                if self._frame is None:
                    self._frame, self.frame_offset = self._new_frame(), base
                out.append(self._frame.decompress(data))
                if self._frame.eof:
                    unused = self._frame.unused_data
                    base += len(data) - len(unused)
                    data, self._frame = unused, None
                else:
                    data = b""
        except zstandard.ZstdError as exc:
            self._error, self._done = CompressedDataError(str(exc), self.frame_offset), True
        self._out, self._out_pos = b"".join(out), 0

    def readinto(self, buffer: Any) -> int:
        while self._out_pos >= len(self._out) and not self._done:
            self._fill()
        n = self._serve(buffer)
        if n == 0 and self._error is not None:
            error, self._error = self._error, None
            raise error
        return n


class Lines:
    """`readline(limit)` over a decoding stream (gzip, zstd) that keeps every byte decoded before an error.

    Why not io.BufferedReader or GzipFile.readline: when the stream raises (junk after the last member or
    frame, a truncated file), they drop the partial line already decoded, so a last record without a final
    newline vanished uncounted. Here that tail is returned first, with `error` set; the error itself is raised
    by the next call.
    """

    def __init__(self, stream: Any):
        # read1: one decode step per call. A buffered read(n) loops until n bytes and, when a later step
        # raises, loses the bytes it had gathered (GzipFile.read does exactly that on junk after a member).
        self._read = getattr(stream, "read1", stream.read)
        self._buf = bytearray()
        self._pos = 0  # start of the unread bytes in _buf
        self._scan = 0  # no newline in _buf[_pos:_scan]: long lines are not rescanned on every chunk
        self._eof = False
        self.error: BaseException | None = None

    def readline(self, limit: int = -1) -> bytes:
        limit = limit if limit and limit > 0 else 1 << 62
        while True:
            stop = min(len(self._buf), self._pos + limit)
            end = self._buf.find(b"\n", max(self._scan, self._pos), stop)
            if end >= 0 or len(self._buf) - self._pos >= limit or (self._eof and self._pos < len(self._buf)):
                cut = end + 1 if end >= 0 else stop
                line, self._pos = bytes(self._buf[self._pos : cut]), cut
                self._scan = self._pos
                return line
            if self._eof:
                if self.error is not None:
                    error, self.error = self.error, None
                    raise error
                return b""
            self._scan = stop
            try:
                data = self._read(_CHUNK)
            except Exception as exc:  # EOFError (truncated), zlib/gzip/zstd errors (junk, corruption)
                self.error, self._eof = exc, True
                continue
            if not data:
                self._eof = True
                continue
            if self._pos > len(self._buf) // 2:  # drop what was read, at most once per half buffer
                del self._buf[: self._pos]
                self._scan -= self._pos
                self._pos = 0
            self._buf += data


def find_gzip_member(raw: BinaryIO, start: int, expect: bytes = b"WARC/") -> int | None:
    """Offset of the first gzip member at or after `start` whose data begins with `expect`, or None.

    A candidate is a gzip magic number that decompresses to a WARC header; random magic-like bytes inside
    compressed data fail that check. With an empty `expect` (JSON Lines: a member may begin anywhere in a
    line) the candidate must instead decode its first 4 KB (or all of itself) without error; one that yields
    nothing from 64 KB of input (random header flags that announce a long extra field) is no member.
    """
    want = len(expect) or _PROBE_BYTES
    pos = start
    raw.seek(pos)
    window = raw.read(_CHUNK * 4)
    while window:
        i = window.find(GZIP_MAGIC)
        while i != -1:
            candidate = pos + i
            raw.seek(candidate)
            head = raw.read(_CHUNK)
            member = zlib.decompressobj(31)
            try:
                out: bytes | None = member.decompress(head, want)
            except zlib.error:
                out = None
            if out is not None and out.startswith(expect) and (out or member.eof):
                return candidate
            i = window.find(GZIP_MAGIC, i + 1)
        pos += max(len(window) - 2, 1)  # keep 2 bytes of overlap for a magic split across windows
        raw.seek(pos)
        window = raw.read(_CHUNK * 4)
        if len(window) < 3:
            return None
    return None


def _zstd_frame_at(raw: BinaryIO, offset: int) -> bool:
    """True when the bytes at `offset` decode as the start of a zstd frame: its first block decodes.

    Why decode: the 4-byte magic also occurs by chance inside compressed data; the frame header and block
    headers that follow it then fail to decode, or announce a block that never yields output.
    """
    import zstandard

    raw.seek(offset)
    frame = zstandard.ZstdDecompressor().decompressobj()
    for _ in range(_ZSTD_PROBE // _ZSTD_FEED):
        data = raw.read(_ZSTD_FEED)
        if not data:  # a frame cut by the end of the file is still a frame: reading it reports the cut
            return True
        try:
            out = frame.decompress(data)
        except zstandard.ZstdError:
            return False
        if out or frame.eof:
            return True
    return False


def find_zstd_frame(raw: BinaryIO, start: int) -> int | None:
    """Offset of the first zstd frame at or after `start` (its magic number, and a header that decodes), or
    None: where reading resumes after a corrupt frame."""
    pos = start
    raw.seek(pos)
    window = raw.read(_CHUNK * 4)
    while len(window) >= len(ZSTD_MAGIC):
        i = window.find(ZSTD_MAGIC)
        while i != -1:
            if _zstd_frame_at(raw, pos + i):
                return pos + i
            i = window.find(ZSTD_MAGIC, i + 1)
        pos += len(window) - (len(ZSTD_MAGIC) - 1)  # overlap: a magic split across windows
        raw.seek(pos)
        window = raw.read(_CHUNK * 4)
    return None


def warc_record_end(raw: BinaryIO, offset: int) -> int | None:
    """End offset (after the block's CRLFCRLF) of the uncompressed record whose header is at `offset`, or None.

    None when there is no parseable header there: no `WARC/1.x` line, no blank line ending the header within
    64 KB, or a Content-Length that is missing, negative or not a number.
    """
    raw.seek(offset)
    head = raw.read(_CHUNK)
    stop = head.find(b"\r\n\r\n")
    if not head.startswith(b"WARC/1.") or stop == -1:
        return None
    for line in head[:stop].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            value = value.strip()
            if not value.isdigit() or len(value) > 15:  # over 1 PB is a broken length, not a record
                return None
            return offset + stop + 4 + int(value) + 4
    return None


def is_warc_record(raw: BinaryIO, offset: int) -> bool:
    """True when a parseable header starts at `offset` and its Content-Length lands on another header or EOF.

    `\nWARC/1.` alone is not a boundary: a page that quotes a WARC record has one inside its payload. The
    quoted header's length leads into the rest of that payload, not to the next record.
    """
    end = warc_record_end(raw, offset)
    if end is None:
        return False
    raw.seek(end - 4)
    tail = raw.read(64)
    if len(tail) < 4:  # the file ends inside the record: a truncated last record (the reader counts it)
        return True
    if not tail.startswith(b"\r\n\r\n"):
        return False
    rest = tail[4:].lstrip(b"\r\n")  # some writers add blank lines between records
    return rest.startswith(b"WARC/1.") if rest else len(tail) < 64


def find_warc_record(raw: BinaryIO, start: int) -> int | None:
    """Offset of the first uncompressed WARC record (a valid `WARC/1.x` header at a line start) at or after
    `start`; candidates inside payloads are rejected by `is_warc_record`."""
    if start == 0:
        return 0
    pos = start - 1  # the header may begin exactly at `start`, right after a newline
    raw.seek(pos)
    window = raw.read(_CHUNK * 4)
    while len(window) > 8:
        i = window.find(b"\nWARC/1.")
        while i != -1:
            if is_warc_record(raw, pos + i + 1):
                return pos + i + 1
            i = window.find(b"\nWARC/1.", i + 1)
        pos += len(window) - 8
        raw.seek(pos)
        window = raw.read(_CHUNK * 4)
    return None
