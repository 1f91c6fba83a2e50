"""Which licence covers each input, read from the LICENSE files that sit next to the data.

A dataset card must say under what terms each source was obtained. Corpora are usually assembled from folders
that carry their own LICENSE / COPYING / README, so for every input file we walk up from its folder to the
input root and take the first licence file found; its text is matched against the well-known licences and
mapped to a Hugging Face licence id. Anything unrecognised is reported as `unknown` with the file's path, never
guessed. Users override the card's licence field with `publish.license`.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt")
# (Hugging Face licence id, pattern over the first few KB of the licence file); more specific first
PATTERNS: list[tuple[str, re.Pattern]] = [
    (hf, re.compile(rx, re.IGNORECASE | re.DOTALL))
    for hf, rx in [
        ("cc-by-nc-sa-4.0", r"Attribution-NonCommercial-ShareAlike 4\.0"),
        ("cc-by-nc-4.0", r"Attribution-NonCommercial 4\.0"),
        ("cc-by-sa-4.0", r"Attribution-ShareAlike 4\.0"),
        ("cc-by-sa-3.0", r"Attribution-ShareAlike 3\.0"),
        ("cc-by-4.0", r"Attribution 4\.0 International"),
        ("cc0-1.0", r"CC0 1\.0|Creative Commons Zero"),
        ("odc-by", r"Open Data Commons Attribution License"),
        ("odbl", r"Open Database License"),
        ("apache-2.0", r"Apache License,?\s+Version 2\.0"),
        ("gpl-3.0", r"GNU GENERAL PUBLIC LICENSE\s+Version 3"),
        ("lgpl-3.0", r"GNU LESSER GENERAL PUBLIC LICENSE\s+Version 3"),
        ("mit", r"\bMIT License\b|Permission is hereby granted, free of charge, to any person"),
        ("bsd-3-clause", r"Redistribution and use in source and binary forms.*Neither the name"),
        ("bsd-2-clause", r"Redistribution and use in source and binary forms"),
    ]
]


@dataclass(frozen=True)
class SourceLicense:
    """The licence of one group of inputs: `root` is the folder whose LICENSE file covers them."""

    root: str
    license: str  # a Hugging Face licence id, or "unknown"
    license_file: str | None


def identify(text: str) -> str:
    """Hugging Face licence id of a licence text, or 'unknown'."""
    head = text[:8000]
    for hf, pattern in PATTERNS:
        if pattern.search(head):
            return hf
    return "unknown"


def input_root(pattern: str) -> Path:
    """The folder an input entry starts from: the part of a glob before the first wildcard, or its folder."""
    head = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    path = Path(head)
    if glob.has_magic(pattern) or not path.exists():
        return path if head.endswith("/") else path.parent
    return path if path.is_dir() else path.parent


@lru_cache(maxsize=4096)
def _license_in(folder: str) -> tuple[str, str] | None:
    for name in LICENSE_NAMES:
        candidate = Path(folder) / name
        if candidate.is_file():
            try:
                text = candidate.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            return str(candidate), identify(text)
    return None


def license_of(source: str, roots: list[Path]) -> SourceLicense:
    """Licence of one input file: the nearest LICENSE between its folder and the input root that holds it."""
    if "://" in source and not source.startswith("file://"):
        return SourceLicense(root=source.rsplit("/", 1)[0], license="unknown", license_file=None)
    path = Path(source.removeprefix("file://")).resolve()
    resolved = [r.resolve() for r in roots]
    stops = [r for r in resolved if path.is_relative_to(r)]
    stop = max(stops, key=lambda r: len(r.parts)) if stops else path.parent
    folder = path.parent
    while True:
        found = _license_in(str(folder))
        if found:
            return SourceLicense(root=str(folder), license=found[1], license_file=found[0])
        if folder == stop or folder == folder.parent or not folder.is_relative_to(stop):
            break
        folder = folder.parent
    return SourceLicense(root=str(path.parent), license="unknown", license_file=None)


def card_license_ids(licenses: list[str]) -> list[str]:
    """The card's `license` list: each distinct id once, `other` standing in for unknown ones."""
    ids = sorted({"other" if lic == "unknown" else lic for lic in licenses})
    return ids or ["other"]
