"""Stable document ids and exact deduplication on a normalised-content hash.

Normalisation for hashing is deliberately light (Unicode NFKC, lower case, whitespace collapsed): it makes
copies that differ only by case, spacing or line wrapping equal, without merging texts that differ in
wording or punctuation (near-duplicates are the dedup stage's job, with MinHash).

`id` = first 32 hex chars of sha256(url + "\\n" + normalised text): the same page crawled again with the same
text keeps its id across runs and refreshes; an unknown URL hashes as "".

Within a rank, a set of 16-byte content hashes drops repeats at once. Across ranks, each rank writes its
hashes next to its shard and the stage's finishing pass (pipelines.curate.finalize) drops the later copies,
so the whole run is exact-deduplicated.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from pipelines.curate.exclusions import exclusion_writer

_SPACE = re.compile(r"\s+")


def normalise_for_hash(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def _digest(norm: str) -> bytes:
    return hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()


def _id(url: str | None, norm: str) -> str:
    return hashlib.sha256(f"{url or ''}\n{norm}".encode()).hexdigest()[:32]


def content_hash(text: str) -> bytes:
    """16-byte blake2b of the normalised text (the exact-dedup key)."""
    return _digest(normalise_for_hash(text))


def document_id(url: str | None, text: str) -> str:
    """Stable 32-hex-char id of a document: sha256 of url and normalised text."""
    return _id(url, normalise_for_hash(text))


class ExactDedup(PipelineStep):
    """Give each document its stable id and content hash; drop repeats of a content hash (`exact_duplicate`)."""

    name = "🫂 Exact dedup + id"
    type = "🫂 - DEDUP"

    def __init__(self, enabled: bool = True, exclusion_dir: str | None = None):
        super().__init__()
        self.enabled = enabled
        self.exclusion_dir = exclusion_dir

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        seen: set[bytes] = set()
        excluded = exclusion_writer(self.exclusion_dir, "exact_dedup")
        try:
            for doc in data:
                with self.track_time():
                    norm = normalise_for_hash(doc.text)  # once for both hashes
                    digest = _digest(norm)
                    duplicate = self.enabled and digest in seen
                    if not duplicate:
                        seen.add(digest)
                        url = doc.metadata.get("url")
                        doc.id = _id(url, norm)
                        doc.metadata["content_hash"] = digest
                if duplicate:
                    self.stat_update("dropped_exact_duplicate")
                    if excluded is not None:
                        doc.metadata["filter_reason"] = "exact_duplicate"
                        excluded.write(doc, rank)
                    continue
                self.stat_update("forwarded")
                yield doc
        finally:
            if excluded is not None:
                excluded.close()
