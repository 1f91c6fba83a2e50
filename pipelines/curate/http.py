"""Split a WARC response block into HTTP status, headers and decoded body.

Done here rather than by FastWARC so that the reader sees the whole raw block first: comparing its length with
the record's Content-Length is how a record cut short by a truncated file is recognised.
"""

from __future__ import annotations

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


def _dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end == -1:
            raise HttpError("decode_error", "chunked body ends inside a chunk header")
        size_text = body[pos:end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError("decode_error", f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


def _decompress(body: bytes, encoding: str) -> bytes:
    try:
        if encoding in ("gzip", "x-gzip"):
            return zlib.decompress(body, 47)  # gzip or zlib header, auto-detected
        if encoding == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -15)  # raw deflate, as some servers send
        if encoding == "br":
            import brotli  # optional; most crawlers store decoded bodies

            return brotli.decompress(body)
    except ImportError:
        raise HttpError("decode_error", "brotli-encoded body and no brotli module") from None
    except Exception as exc:
        raise HttpError("decode_error", f"cannot decode {encoding} body ({exc})") from None
    if encoding in ("", "identity"):
        return body
    raise HttpError("decode_error", f"unsupported Content-Encoding {encoding!r}")


def parse_response(block: bytes) -> HttpResponse:
    """Parse an HTTP response block; raises HttpError('no_payload' | 'decode_error', ...)."""
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
        body = _decompress(body, encoding)
    return HttpResponse(status=status, headers=headers, body=body)
