"""Decode web bytes to text, surviving wrong charset labels and invalid bytes, and saying what was repaired.

Why not just `bytes.decode(declared)`: web pages routinely declare one charset and use another. The two
common lies are (1) `charset=utf-8` on windows-1252 bytes, which fails to decode, and (2) `iso-8859-1` on
UTF-8 bytes, which decodes "successfully" into mojibake (`Ã©` for `é`). Case 2 is caught because valid
multi-byte UTF-8 sequences almost never occur in real single-byte text. Labels are mapped the way browsers
map them (HTML5: `iso-8859-1` means windows-1252), via resiliparse.
"""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)

# Problems reported by decode_html/decode_utf8 (counted as `repaired_<problem>` in the stage stats).
MISLABELLED = "mislabelled_charset"
INVALID_BYTES = "invalid_bytes"
INVALID_UTF8 = "invalid_utf8"

_WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _codec(label: str | None) -> str | None:
    """Python codec name for a charset label, HTML5-mapped; None for unknown labels."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    try:
        codecs.lookup(label)
    except LookupError:
        return None
    mapped = map_encoding_to_html5(label)
    try:
        return codecs.lookup(mapped).name
    except LookupError:
        return codecs.lookup(label).name


def _is_single_byte(codec: str) -> bool:
    return codec.startswith(("cp12", "iso8859", "latin", "mac-", "koi8", "cp4", "cp8", "ascii"))


def sniff_meta_charset(data: bytes) -> str | None:
    match = _META_CHARSET.search(data[:4096])
    return match.group(1).decode("ascii", "replace") if match else None


def decode_html(data: bytes, declared: str | None = None) -> tuple[str, str | None]:
    """Text of an HTML payload and the problem repaired (None, MISLABELLED or INVALID_BYTES).

    `declared` is the HTTP charset; a `<meta charset>` in the first 4 KB is used when it is absent.
    """
    return _decode(data, _codec(declared) or _codec(sniff_meta_charset(data)))


def decode_text(data: bytes, declared: str | None = None) -> tuple[str, str | None]:
    """Text of a `text/plain` payload: as `decode_html`, minus the `<meta>` sniffing (plain text has none).

    Why not UTF-8 only: an HTTP `charset=iso-8859-1` on plain text is as common (and as often true) as on HTML.
    """
    return _decode(data, _codec(declared))


_HIGH_BYTES = bytes(range(0x80, 0x100))


def _decode(data: bytes, codec: str | None) -> tuple[str, str | None]:
    """Decode with the (HTML5-mapped) label `codec`, repairing the label's lies and stray invalid bytes."""
    if codec is None:
        return _decode_unlabelled(data)
    if codec.startswith(("utf-16", "utf-32")) and _not_wide(data):
        text, problem = _decode_unlabelled(data)
        return text, problem or MISLABELLED
    single = codec != "utf-8" and _is_single_byte(codec)
    if single and not data.isascii():
        try:
            return data.decode("utf-8"), MISLABELLED  # iso-8859-1 label on UTF-8 bytes
        except UnicodeDecodeError:
            text = data.decode("utf-8", errors="replace")
            # UTF-8 with a few stray bytes, still mislabelled: in UTF-8 most high bytes form characters, in a
            # real single-byte page nearly every one is an invalid sequence (one U+FFFD each)
            if text.count("\ufffd") * 10 < len(data) - len(data.translate(None, _HIGH_BYTES)):
                return text, INVALID_BYTES
    try:
        return data.decode(codec), None
    except UnicodeDecodeError:
        pass
    if single:
        # A single-byte codec rejects only the bytes it leaves undefined (Python's cp1252: 0x81 0x8D 0x8F 0x90
        # 0x9D, which WHATWG maps to C1 controls): one stray byte must cost itself, not every accent of the page.
        return data.decode(codec, errors="replace"), INVALID_BYTES
    detected = _codec(detect_encoding(data)) or "utf-8"
    try:
        return data.decode(detected), MISLABELLED
    except UnicodeDecodeError:
        return _least_damaged(data, (codec, detected, "utf-8")), INVALID_BYTES


def _least_damaged(data: bytes, candidates: tuple[str, ...]) -> str:
    """`data` decoded with errors="replace" by the candidate codec that replaces the fewest characters (the
    first on a tie): bytes no candidate decodes cleanly are lost one by one, not the whole page's accents."""
    best: str | None = None
    for codec in dict.fromkeys(candidates):
        text = data.decode(codec, errors="replace")
        if best is None or text.count("\ufffd") < best.count("\ufffd"):
            best = text
    return best


def _not_wide(data: bytes) -> bool:
    """True when bytes labelled UTF-16/32 cannot be: no BOM and no NUL in the first KB.

    Real UTF-16/32 HTML is full of NULs (every ASCII markup character has one); UTF-8 or single-byte bytes
    under such a label still decode without error when their length is even, into CJK-looking mojibake.
    """
    return not data.startswith(_WIDE_BOMS) and b"\x00" not in data[:1024]


def _decode_unlabelled(data: bytes) -> tuple[str, str | None]:
    """No (usable) label: UTF-8 if it is valid, else what the bytes look like (HTML's windows-1252 default)."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    detected = _codec(detect_encoding(data)) or "cp1252"
    try:
        return data.decode(detected), None
    except UnicodeDecodeError:
        return _least_damaged(data, (detected, "utf-8")), INVALID_BYTES


def decode_utf8(data: bytes) -> tuple[str, str | None]:
    """Text that must be UTF-8 (JSON Lines, WET): invalid bytes become U+FFFD and are reported."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), INVALID_UTF8
