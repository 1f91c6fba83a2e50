"""The dialogue Arrow schema (DESIGN.md "Dialogues"), shared by the stage, its tests and readers.

`messages` is `list<struct<role, content>>`, which `datasets` loads as a list of dicts, so a row's messages
go straight into `tokenizer.apply_chat_template`. `ps_<dimension>` columns follow the classifier bundle's
dimensions. Work-folder chunk files (every attempt, accepted or not) add the raw completion text.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

# dialogue/2: `sampling.temperature` and `top_p` are float64 (float32 stored 0.8 as 0.800000011920929, which
# is not the value the run used). Readers of a folder that mixes both (a refresh carries dialogue/1 files)
# get the first file's type: pyarrow and `datasets` cast the others.
SCHEMA_VERSION = "dialogue/2"

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
SAMPLING = pa.struct(
    [("temperature", pa.float64()), ("top_p", pa.float64()), ("max_tokens", pa.int32()), ("seed", pa.int64())]
)
VALIDATION = pa.struct(
    [
        ("passed", pa.bool_()),
        ("reasons", pa.list_(pa.string())),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        ("score", pa.float32()),
        ("near_duplicate_of", pa.string()),
    ]
)


def dialogue_schema(dimensions: Sequence[str], attempts: bool = False) -> pa.Schema:
    """Schema of mid-training dialogues; `attempts=True` adds the raw completion (work-folder chunk files)."""
    fields = [
        pa.field("id", pa.string()),
        pa.field("messages", pa.list_(MESSAGE)),
        pa.field("dimension", pa.string()),
        pa.field("scenario", pa.string()),
        pa.field("persona", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("style", pa.string()),
        pa.field("scenario_index", pa.int64()),
        pa.field("grounding_doc_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("sampling", SAMPLING),
    ]
    fields += [pa.field(f"ps_{d}", pa.float32()) for d in dimensions]
    fields += [
        pa.field("validation", VALIDATION),
        pa.field("output_tokens", pa.int32()),
        pa.field("finish_reason", pa.string()),
    ]
    if attempts:
        fields.append(pa.field("raw", pa.string()))
    return pa.schema(fields, metadata={b"prosocial_corpus.schema": SCHEMA_VERSION.encode()})


def score_dimensions(schema: pa.Schema) -> list[str]:
    return [name[3:] for name in schema.names if name.startswith("ps_")]
