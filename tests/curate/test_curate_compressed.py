"""A corrupt gzip member or zstd frame in a JSON Lines file costs only itself.

Reading resumes at the next gzip member or zstd frame that decodes; the loss is one
`file_error_corrupt_compressed` named by the *compressed* offset of the bad member or frame, the documents
after it are read and counted, and `in = out + dropped` still holds. Fixtures are built here: members and
frames of whole lines, and members cut at arbitrary bytes (as bgzip writes them), with bytes zeroed inside.
"""

from __future__ import annotations

import gzip
import json
import random
import re

import pytest
from curate_fixtures import counters, prose, read_counts, read_reader, run_stage

from pipelines.curate.readers import BadInputError


def _rows(first: int, n: int) -> list[bytes]:
    return [json.dumps({"text": prose(i), "id": i}).encode() + b"\n" for i in range(first, first + n)]


def _pack(data: bytes, suffix: str) -> bytes:
    if suffix.endswith(".gz"):
        return gzip.compress(data, mtime=0)
    import zstandard

    return zstandard.ZstdCompressor(write_checksum=True).compress(data)


def _zero_middle(block: bytes, n: int = 20) -> bytes:
    mid = len(block) // 2
    return block[:mid] + b"\0" * n + block[mid + n :]


def _texts(rows: list[bytes]) -> list[str]:
    return [json.loads(r)["text"] for r in rows]


def _ranges(rows: list[bytes]) -> list[tuple[int, int]]:
    """Decompressed [start, end) of each row."""
    out, pos = [], 0
    for row in rows:
        out.append((pos, pos + len(row)))
        pos += len(row)
    return out


def _three_blocks(tmp_path, suffix: str) -> tuple:
    """5 good records, the same block with 20 bytes zeroed in its middle, 5 more good records."""
    good, after = _rows(0, 5), _rows(10, 5)
    first = _pack(b"".join(good), suffix)
    bad = _zero_middle(first)
    path = tmp_path / f"m{suffix}"
    path.write_bytes(first + bad + _pack(b"".join(after), suffix))
    return path, good, after, len(first)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_corrupt_middle_block_loses_only_itself(tmp_path, suffix):
    path, good, after, bad_offset = _three_blocks(tmp_path, suffix)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert [d.text for d in docs] == _texts(good + after), "the block after the corrupt one is read"
    assert c["documents_in"] == 10 and c["file_error_corrupt_compressed"] == 1
    assert not any(k.startswith("dropped_") for k in c)
    offsets = [d.metadata["source_offset"] for d in docs]
    assert offsets == sorted(set(offsets)), "document offsets stay increasing and unique after a resume"


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_corrupt_block_error_names_its_compressed_offset(tmp_path, suffix):
    path, _, _, bad_offset = _three_blocks(tmp_path, suffix)
    with pytest.raises(BadInputError) as info:
        read_reader([path], strict=True)
    message = str(info.value)
    assert message.startswith(f"{path} at offset {bad_offset}:"), message
    assert f"resumed at offset {2 * bad_offset}" in message


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_magic_bytes_in_junk_are_not_a_resume_point(tmp_path, suffix):
    """After a corrupt block, junk that holds a gzip/zstd magic number is skipped: reading resumes at the
    first real member or frame, not inside the junk (which would decode as garbage records)."""
    magic = b"\x1f\x8b\x08" if suffix.endswith(".gz") else b"\x28\xb5\x2f\xfd"
    rng = random.Random(7)
    junk = b"".join(magic + bytes(rng.getrandbits(8) for _ in range(200)) for _ in range(20))
    good, after = _rows(0, 3), _rows(3, 3)
    first = _pack(b"".join(good), suffix)
    path = tmp_path / f"j{suffix}"
    path.write_bytes(
        first + _zero_middle(_pack(b"".join(_rows(50, 5)), suffix)) + junk + _pack(b"".join(after), suffix)
    )
    docs, reader = read_reader([path])
    c = counters(reader)
    assert [d.text for d in docs] == _texts(good + after)
    assert c["documents_in"] == 6 and c["file_error_corrupt_compressed"] == 1
    assert not any(k.startswith("dropped_") for k in c)


def test_members_cut_inside_lines_keep_every_record_they_hold_whole(tmp_path):
    """Members cut at arbitrary bytes (bgzip style), NUL padding between some, one member corrupt: every
    record wholly inside good members is kept; the two records it cuts are counted as truncated."""
    rows = _rows(0, 40)
    body = b"".join(rows)
    # every member ends a third of the way into a record (and some hold only part of one)
    cuts = [0, *(s + (e - s) // 3 for s, e in _ranges(rows)[3::4]), len(body)]
    members = [gzip.compress(body[a:b], mtime=0) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    bad = 5
    members[bad] = _zero_middle(members[bad])
    path = tmp_path / "bgzip.jsonl.gz"
    path.write_bytes(b"".join(m + (b"\0" * 7 if i == 2 else b"") for i, m in enumerate(members)))
    lost = (cuts[bad], cuts[bad + 1])  # decompressed range of the corrupt member
    kept = [row for row, (s, e) in zip(rows, _ranges(rows), strict=True) if e <= lost[0] or s >= lost[1]]
    cut = sum(1 for s, e in _ranges(rows) for edge in lost if s < edge < e)  # records the lost range cuts
    docs, reader = read_reader([path])
    c = counters(reader)
    assert [d.text for d in docs] == _texts(kept)
    assert c["file_error_corrupt_compressed"] == 1 and len(c) == 5, c  # units, in, bytes, error, truncated
    assert c["dropped_truncated"] == cut == 2
    assert c["documents_in"] == len(docs) + c["dropped_truncated"]
    # strict stops at the member, by its place in the file, before the record it cut
    bad_offset = sum(len(m) for m in members[:bad]) + 7
    with pytest.raises(BadInputError, match=re.escape(f"{path} at offset {bad_offset}: cannot decompress")):
        read_reader([path], strict=True)


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_truncated_last_block_still_keeps_what_precedes_it(tmp_path, suffix):
    """The common case is unchanged: a cut last member or frame is one truncation error after the records
    before it, now named by where that member or frame starts in the file."""
    blocks = [_pack(b"".join(_rows(5 * i, 5)), suffix) for i in range(3)]
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(b"".join(blocks)[: -len(blocks[2]) // 2])
    docs, reader = read_reader([path])
    c = counters(reader)
    kind = "gzip" if suffix.endswith(".gz") else "zstd"
    texts = [d.text for d in docs]
    assert 10 <= len(texts) < 15 and texts == _texts(_rows(0, len(texts))), "what decodes before the cut"
    assert c[f"file_error_truncated_{kind}"] == 1
    assert c["documents_in"] == len(docs) + c.get("dropped_truncated", 0)
    assert not (
        set(c) - {"units", "documents_in", "bytes_in", "dropped_truncated", f"file_error_truncated_{kind}"}
    )
    with pytest.raises(BadInputError, match=re.escape(f"at offset {len(blocks[0]) + len(blocks[1])}:")):
        read_reader([path], strict=True)


def test_corrupt_member_through_the_stage_reconciles(tmp_path, dask_client):
    """Through the Dask stage: the third member's documents are in the ledger, and in = out + dropped."""
    (tmp_path / "in").mkdir()
    path = _three_blocks(tmp_path / "in", ".jsonl.gz")[0]
    summary, stage = run_stage(tmp_path / "out", [path], dask_client)
    assert summary["documents_in"] == summary["documents_out"] == 10 and summary["dropped"] == {}
    assert summary["file_errors"] == {"corrupt_compressed": 1}
    assert summary["unaccounted"] == 0
    ledgers = read_counts(stage)
    assert sum(ledger["documents_in"] for ledger in ledgers) == 10
    assert all(ledger["unaccounted"] == 0 for ledger in ledgers)
