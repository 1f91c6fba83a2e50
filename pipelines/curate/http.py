"""Split a WARC response block into HTTP status, headers and decoded body.

Done here rather than by FastWARC so that the reader sees the whole raw block first: comparing its length with
the record's Content-Length is how a record cut short by a truncated file is recognised.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass


class HttpError(ValueError):
    """The block is not a usable HTTP response; `reason` is the drop reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    @property
    def charset(self) -> str | None:
        for part in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = part.partition("=")
            if key.strip().lower() == "charset" and value.strip():
                return value.strip().strip("\"'")
        return None


_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end == -1:
            raise HttpError("decode_error", "chunked body ends inside a chunk header")
        size_text = body[pos:end].split(b";", 1)[0].strip()
        # hex digits only: int() would also take "-6", "+6", "0x6" and "6_0", and a negative size sends the
        # loop back to where it started, copying the body forever
        if not _HEX.fullmatch(size_text):
            raise HttpError("decode_error", f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


def _inflate(decomp, body: bytes, limit: int) -> bytes:
    out = decomp.decompress(body, limit + 1)  # never more than limit + 1 bytes, whatever the ratio
    if len(out) <= limit and not decomp.eof:
        raise ValueError("incomplete or truncated stream")
    return out


def _unbrotli(body: bytes, limit: int) -> bytes:
    import brotli  # optional; most crawlers store decoded bodies

    decomp = brotli.Decompressor()
    try:
        out = decomp.process(body, output_buffer_limit=limit + 1)
    except TypeError:  # brotli < 1.2 cannot bound its output: decode whole, still drop it when too large
        return brotli.decompress(body)
    while len(out) <= limit and not decomp.is_finished() and not decomp.can_accept_more_data():
        out += decomp.process(b"", output_buffer_limit=limit + 1 - len(out))
    if len(out) <= limit and not decomp.is_finished():
        raise ValueError("incomplete or truncated stream")
    return out


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Decoded body, never more than `limit` + 1 bytes: a small compressed body can expand a thousandfold
    (a 70 KB gzip to 36 MB), so the size limit has to hold while decoding, not only on the raw record."""
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate", "br"):
        raise HttpError("decode_error", f"unsupported Content-Encoding {encoding!r}")
    try:
        if encoding in ("gzip", "x-gzip"):
            out = _inflate(zlib.decompressobj(47), body, limit)  # gzip or zlib header, auto-detected
        elif encoding == "deflate":
            try:
                out = _inflate(zlib.decompressobj(), body, limit)
            except zlib.error:
                out = _inflate(zlib.decompressobj(-15), body, limit)  # raw deflate, as some servers send
        else:
            out = _unbrotli(body, limit)
    except ImportError:
        raise HttpError("decode_error", "brotli-encoded body and no brotli module") from None
    except Exception as exc:
        raise HttpError("decode_error", f"cannot decode {encoding} body ({exc})") from None
    if len(out) > limit:
        raise HttpError(
            "too_large", f"{encoding} body decodes to more than {limit} bytes (read.max_document_bytes)"
        )
    return out


def parse_response(block: bytes, max_body: int = 1 << 62) -> HttpResponse:
    """Parse an HTTP response block; raises HttpError('no_payload' | 'decode_error' | 'too_large', ...).

    `max_body` bounds the body after Content-Encoding is decoded (read.max_document_bytes).
    """
    head, sep, body = block.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = block.partition(b"\n\n")
    if not head.startswith(b"HTTP/"):
        raise HttpError("no_payload", "record block is not an HTTP response")
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise HttpError("no_payload", f"bad HTTP status line {lines[0][:60]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if colon:
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if not sep or not body.strip():
        raise HttpError("no_payload", f"HTTP {status} response with no payload")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding:
        body = _decompress(body, encoding, max_body)
    return HttpResponse(status=status, headers=headers, body=body)
