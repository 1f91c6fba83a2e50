"""The optional exclusion writer: dropped documents, with their reason, kept for inspection.

One gzipped JSON Lines file per step and rank under `work/<run>/curate/excluded/<step>/<rank>.jsonl.gz`; each
line is a datatrove document whose `metadata.filter_reason` names the drop reason (the same name as the
`dropped_<reason>` counter). Reader-level drops keep only a preview of the raw record.
"""

from __future__ import annotations

from datatrove.pipeline.writers import JsonlWriter


def exclusion_writer(folder: str | None, step: str) -> JsonlWriter | None:
    """A datatrove JsonlWriter for one step's dropped documents, or None when exclusions are off."""
    if not folder:
        return None
    return JsonlWriter(f"{folder}/{step}", output_filename="${rank}.jsonl.gz")
