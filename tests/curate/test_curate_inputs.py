"""Input discovery, format detection, splitting of big files into byte-range / row-group units, rank packing."""

from __future__ import annotations

import gzip
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curate_fixtures import (
    counters,
    html_warc,
    mixed_folder,
    prose,
    read_reader,
    warc_record,
    write_jsonl,
    write_warc,
)

from pipelines.curate.inputs import (
    InputError,
    WorkUnit,
    detect_format,
    discover,
    make_plan,
    make_units,
    pack_ranks,
    unsplittable_warning,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CC-MAIN-x.warc.gz", ("warc", "gzip")),
        ("x.warc.wet.gz", ("warc", "gzip")),
        ("x.warc", ("warc", None)),
        ("a.jsonl.zst", ("jsonl", "zstd")),
        ("000.json.gz", ("jsonl", "gzip")),
        ("a.jsonl", ("jsonl", None)),
        ("a.parquet", ("parquet", None)),
        ("page.HTML.gz", ("html", "gzip")),
        ("page.htm", ("html", None)),
        ("LICENSE", None),
        ("notes.md", None),
    ],
)
def test_detect_format(name, expected):
    assert detect_format(f"/data/{name}") == expected


def test_discover_folders_globs_and_skips(tmp_path):
    write_jsonl(tmp_path / "a" / "docs.jsonl", [{"text": "x"}])
    (tmp_path / "a" / "README.md").write_text("not an input")
    (tmp_path / "a" / "single.json").write_text('{\n  "pretty": "printed"\n}\n')
    (tmp_path / "a" / "lines.json").write_text('{"text": "one"}\n')
    (tmp_path / "a" / ".hidden.jsonl").write_text('{"text": "temp file"}\n')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "p.html").write_text("<p>hi</p>")
    files, skipped = discover([str(tmp_path / "a"), str(tmp_path / "b" / "*.html")])
    names = sorted(f.path.rsplit("/", 1)[-1] for f in files)
    assert names == ["docs.jsonl", "lines.json", "p.html"]
    reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in skipped}
    assert reasons == {"README.md": "unsupported_format", "single.json": "json_not_json_lines"}
    # JSON Lines that open with a blank line, or with a record longer than the 1 MB sniff, are still inputs;
    # a line nested deeper than Python's stack is not JSON Lines (and not a crash)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "blank_first.json").write_text('\n\n{"text": "one"}\n')
    (tmp_path / "c" / "long_first.json").write_text(json.dumps({"text": "word " * 300_000}) + "\n")
    (tmp_path / "c" / "deep.json").write_text('{"a": ' + "[" * 100_000 + "\n")
    files, skipped = discover([str(tmp_path / "c")])
    assert sorted(f.path.rsplit("/", 1)[-1] for f in files) == ["blank_first.json", "long_first.json"]
    assert [(s["path"].rsplit("/", 1)[-1], s["reason"]) for s in skipped] == [
        ("deep.json", "json_not_json_lines")
    ]
    with pytest.raises(InputError, match="nope"):
        discover([str(tmp_path / "nope")])
    with pytest.raises(InputError, match="matches no files"):
        discover([str(tmp_path / "*.warc")])


def test_a_remote_input_that_cannot_be_listed_is_one_line_naming_it(monkeypatch, tmp_path):
    """s3fs is installed (README: inputs can be s3:// URLs); offline and without credentials, the listing
    fails inside botocore, and the user gets the pattern and the reason, not a traceback."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata probe
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    with pytest.raises(InputError, match=r"input 's3://bucket/crawl/\*\.warc\.gz': cannot list it \(\w+"):
        discover(["s3://bucket/crawl/*.warc.gz"])
    with pytest.raises(InputError, match="input 'nosuch://x/y': cannot list it .*Protocol not known"):
        discover(["nosuch://x/y"])


def test_discover_skips_what_is_not_a_regular_file(tmp_path):
    """A broken symlink would fail to open and a FIFO would block the rank forever; a good symlink is read."""
    import os

    write_jsonl(tmp_path / "in" / "ok.jsonl", [{"text": "x"}])
    os.symlink(tmp_path / "nowhere.jsonl", tmp_path / "in" / "broken.jsonl")
    os.mkfifo(tmp_path / "in" / "fifo.jsonl")
    os.symlink(tmp_path / "in" / "ok.jsonl", tmp_path / "in" / "link.jsonl")
    for pattern in ["in", "in/*.jsonl"]:
        files, skipped = discover([str(tmp_path / pattern)])
        assert sorted(f.path.rsplit("/", 1)[-1] for f in files) == ["link.jsonl", "ok.jsonl"]
        assert all(f.size > 0 for f in files)
        reasons = {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in skipped}
        assert reasons == {"broken.jsonl": "broken_link", "fifo.jsonl": "not_regular_file"}
    docs, _ = read_reader([tmp_path / "in"])
    assert len(docs) == 2


def test_two_big_files_feed_eight_workers(tmp_path):
    """Splitting: two files, eight workers -> at least eight units and ranks, none overlapping."""
    a = html_warc(tmp_path / "a.warc.gz", 40)
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": prose(i)} for i in range(400)])
    files, _ = discover([str(a), str(b)])
    units = make_units(files, split_bytes=64 << 20, min_split_bytes=4096, workers=8)
    assert len(units) >= 8
    ranks = pack_ranks(units, tasks=0, workers=8, split_bytes=64 << 20)
    assert len(ranks) == 8 and sorted(i for r in ranks for i in r) == list(range(len(units)))
    for f in files:  # each file's ranges tile it exactly
        mine = sorted((u.start, u.end) for u in units if u.path == f.path)
        assert mine[0][0] == 0 and mine[-1][1] == f.size
        assert all(x[1] == y[0] for x, y in zip(mine, mine[1:], strict=False))


def _scan_packing(sizes: list[int], tasks: int) -> list[list[int]]:
    """The packing as first written: a scan for the least-loaded, lowest-numbered rank per unit (O(n * tasks))."""
    loads, ranks = [0] * tasks, [[] for _ in range(tasks)]
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(tasks), key=lambda k: (loads[k], k))
        ranks[r].append(i)
        loads[r] += max(sizes[i], 1)
    return [sorted(r) for r in ranks]


@pytest.mark.parametrize("seed", range(5))
def test_packing_assigns_units_as_the_scan_did(seed):
    """The heap replaced a scan that took 386 s for 32,000 units; rank assignments (and so resumed runs'
    rank numbers) must not change. Equal sizes and zero sizes exercise the tie-breaks."""
    rng = random.Random(seed)
    sizes = [
        rng.choice([0, 1 << 20, 64 << 20, rng.randrange(1, 200 << 20)]) for _ in range(rng.randrange(1, 400))
    ]
    units = [WorkUnit(f"f{i}", "jsonl", None, 0, s, s, False) for i, s in enumerate(sizes)]
    tasks = rng.randrange(1, 60)
    assert pack_ranks(units, tasks, workers=4, split_bytes=64 << 20) == _scan_packing(
        sizes, min(tasks, len(sizes))
    )


def test_big_files_that_cannot_be_cut_are_named_in_a_warning(tmp_path):
    """A big .jsonl.gz is one rank however many workers wait; the plan said nothing about it."""
    rng = random.Random(0)
    records = [{"text": " ".join(f"{rng.getrandbits(40):x}" for _ in range(60))} for _ in range(400)]
    plain = write_jsonl(tmp_path / "plain.jsonl", records)
    packed = tmp_path / "packed.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    files, _ = discover([str(plain), str(packed)])
    assert {f.path.rsplit("/", 1)[-1]: f.size > 2 * (1 << 16) for f in files} == {
        "plain.jsonl": True,
        "packed.jsonl.gz": True,
    }
    warning = unsplittable_warning(files, split_bytes=1 << 16)
    assert warning is not None and warning.startswith(
        "1 input file(s) larger than 2 x curate.read.split_bytes"
    )
    assert str(packed) in warning and "plain.jsonl" not in warning
    units = make_units(files, split_bytes=1 << 16, min_split_bytes=4096, workers=8)
    assert sum(u.path.endswith("packed.jsonl.gz") for u in units) == 1  # what the warning is about
    assert unsplittable_warning(files, split_bytes=64 << 20) is None


@pytest.mark.parametrize("name", ["s.warc.gz", "s.warc", "s.jsonl"])
def test_split_units_read_every_record_once(tmp_path, name):
    if name.endswith(".jsonl"):
        path = write_jsonl(
            tmp_path / name, [{"text": prose(i), "url": f"https://example.org/p{i}"} for i in range(300)]
        )
    else:
        path = html_warc(tmp_path / name, 60)
    whole, _ = read_reader([path])
    split, reader = read_reader([path], split_bytes=1 << 13, tasks=3)
    assert reader.plan.world_size == 3 and len(reader.plan.units) > 3, "the file must really be split"
    assert len(whole) == (300 if name.endswith(".jsonl") else 60)
    key = [(d.metadata["url"], d.metadata["source_offset"]) for d in split]
    assert sorted(key) == sorted((d.metadata["url"], d.metadata["source_offset"]) for d in whole)
    assert len(set(key)) == len(key)


def test_split_plain_warc_ignores_a_quoted_warc_header(tmp_path):
    """A page quoting a WARC record has `\nWARC/1.0` in its payload; a unit boundary is not put there."""
    quoted = warc_record(
        prose(999).encode(), url="https://fake.org/", kind="conversion", content_type="text/plain"
    )
    records = []
    for i in range(60):
        text = prose(i).encode()
        if i == 30:
            text = b"x" * 5000 + b"\n" + quoted + b"\n" + text
        records.append(
            warc_record(text, url=f"https://e.org/{i}", kind="conversion", content_type="text/plain")
        )
    path = write_warc(tmp_path / "quoting.warc", records)
    docs, reader = read_reader([path], split_bytes=1 << 12, tasks=0)
    assert len(reader.plan.units) > 3, "the file must really be split"
    assert sorted(d.metadata["url"] for d in docs) == sorted(f"https://e.org/{i}" for i in range(60))
    assert counters(reader)["documents_in"] == 60


def test_gzip_offsets_are_member_offsets(tmp_path):
    """For .warc.gz the offset is the record's gzip member in the file (Common Crawl index style)."""
    path = html_warc(tmp_path / "m.warc.gz", 5)
    docs, _ = read_reader([path])
    raw = path.read_bytes()
    assert len(docs) == 5
    for doc in docs:
        member = gzip.decompress(raw[doc.metadata["source_offset"] :])  # decompresses this member onwards
        assert member.startswith(b"WARC/1.0") and doc.metadata["url"].encode() in member[:400]


def test_parquet_split_by_row_groups(tmp_path):
    table = pa.table(
        {"text": [prose(i) for i in range(500)], "url": [f"https://e.org/{i}" for i in range(500)]}
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=50)
    docs, reader = read_reader([path], split_bytes=1 << 13, tasks=4)
    assert len(reader.plan.units) > 1 and all(u.split for u in reader.plan.units)
    assert sorted(d.metadata["source_offset"] for d in docs) == list(range(500))
    assert docs[0].metadata["url"] == f"https://e.org/{docs[0].metadata['source_offset']}"


def test_plan_round_trips_and_fingerprints(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    plan = make_plan([str(tmp_path)], tasks=0, workers=2, split_bytes=1 << 20, min_split_bytes=1 << 12)
    again = type(plan).from_json(plan.to_json())
    assert again.units == plan.units and again.ranks == plan.ranks
    assert json.loads(plan.to_json())["fingerprint"] == plan.fingerprint()
    write_jsonl(tmp_path / "b.jsonl", [{"text": "y"}])
    assert (
        make_plan(
            [str(tmp_path)], tasks=0, workers=2, split_bytes=1 << 20, min_split_bytes=1 << 12
        ).fingerprint()
        != plan.fingerprint()
    )


def test_fsspec_urls(tmp_path):
    """Any fsspec URL: a memory:// file read in-process, and a file:// URL."""
    import fsspec

    with fsspec.open("memory://bucket/docs.jsonl", "wb") as f:
        f.write((json.dumps({"text": prose(1)}) + "\n").encode())
    docs, _ = read_reader(["memory://bucket/docs.jsonl"])
    assert len(docs) == 1
    source = docs[0].metadata["source"]
    assert source.startswith("memory://") and source.endswith("bucket/docs.jsonl")
    path = write_jsonl(tmp_path / "f.jsonl", [{"text": prose(2)}])
    docs, _ = read_reader([f"file://{path}"])
    assert len(docs) == 1


def test_an_input_entry_matching_only_files_it_cannot_read_is_an_error_naming_it(tmp_path):
    """Like a glob matching nothing: a glob of CSVs, a broken link or a FIFO named directly, a folder of notes."""
    import os

    folder = mixed_folder(tmp_path, documents=1)
    write_jsonl(tmp_path / "ok" / "b.jsonl", [{"text": prose(2)}])
    ok = str(tmp_path / "ok")
    with pytest.raises(InputError, match=r"input '.*/mixed/\*\.csv': .*data\.csv \(unsupported_format"):
        discover([ok, str(folder / "*.csv")])
    with pytest.raises(
        InputError, match=r"input '.*/broken\.jsonl': .*broken\.jsonl \(broken_link: a symbolic"
    ):
        discover([ok, str(folder / "broken.jsonl")])
    with pytest.raises(InputError, match=r"input '.*/fifo\.jsonl': .*\(not_regular_file"):
        discover([ok, str(folder / "fifo.jsonl")])
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.md").write_text("x")
    with pytest.raises(InputError, match=r"input '.*/notes': .*README\.md \(unsupported_format"):
        discover([ok, str(notes)])
    # an entry naming a file another entry already found is fine; so is the folder with readable files in it
    files, skipped = discover([str(folder), str(folder / "a.jsonl")])
    assert [f.path for f in files] == [str(folder / "a.jsonl")]
    assert {s["path"].rsplit("/", 1)[-1]: s["reason"] for s in skipped} == {
        "arr.json": "json_not_json_lines",
        "broken.jsonl": "broken_link",
        "data.csv": "unsupported_format",
        "fifo.jsonl": "not_regular_file",
        "notes.txt": "unsupported_format",
    }
    # marker files of Hadoop/Spark/Parquet writers are not inputs at all (neither read nor reported)
    (tmp_path / "ok" / "_SUCCESS").write_text("")
    (tmp_path / "ok" / "_metadata").write_bytes(b"PAR1")
    files, skipped = discover([ok])
    assert [f.path.rsplit("/", 1)[-1] for f in files] == ["b.jsonl"] and skipped == []
    os.remove(tmp_path / "ok" / "b.jsonl")
    with pytest.raises(InputError, match="only hidden or marker files"):
        discover([ok])


def test_a_listed_input_gone_before_planning_is_an_unreadable_entry_of_the_plan(tmp_path):
    """The graph lists a batch, then the curate stage plans it: a file moved away in between is a skipped
    entry (reason `unreadable`), not an InputError that stops the run; without `listed` it is still an error."""
    kept = write_jsonl(tmp_path / "kept.jsonl", [{"text": prose(1)}])
    gone = write_jsonl(tmp_path / "gone.jsonl", [{"text": prose(2)}])
    gone.rename(tmp_path / "moved.jsonl.tmp")
    with pytest.raises(InputError, match="no such file or folder"):
        make_plan([str(kept), str(gone)], tasks=0, workers=1, split_bytes=1 << 20, min_split_bytes=1 << 12)
    plan = make_plan(
        [str(kept), str(gone)], tasks=0, workers=1, split_bytes=1 << 20, min_split_bytes=1 << 12, listed=True
    )
    assert [f.path for f in plan.files] == [str(kept)] and len(plan.units) == 1
    assert plan.skipped == [{"path": str(gone), "reason": "unreadable"}]
    assert type(plan).from_json(plan.to_json()).skipped == plan.skipped


def test_names_with_glob_characters_are_read_as_written(tmp_path):
    """`a[1].jsonl` was re-planned as the pattern a[1] (which matched a1.jsonl), so it was marked seen unread."""
    odd = write_jsonl(tmp_path / "in[v2]" / "a[1].jsonl", [{"text": prose(1)}])
    other = write_jsonl(tmp_path / "in[v2]" / "a1.jsonl", [{"text": prose(2)}])
    args = {"tasks": 0, "workers": 1, "split_bytes": 1 << 20, "min_split_bytes": 1 << 12}
    listed = make_plan([str(tmp_path / "in[v2]")], **args)
    assert sorted(f.path for f in listed.files) == sorted([str(odd), str(other)])
    replanned = make_plan([str(odd)], listed=True, **args)
    assert [f.path for f in replanned.files] == [str(odd)] and replanned.skipped == []
    assert [f.path for f in make_plan([str(odd)], **args).files] == [str(odd)]  # exists as written
    assert [f.path for f in make_plan([str(tmp_path / "in[[]v2]" / "a?.jsonl")], **args).files] == [
        str(other)
    ]


def test_a_reading_rank_logs_its_progress(tmp_path):
    """The driver's bar moves only when a rank ends, and a rank of a big compressed file reads for hours; the
    reader logs documents read, rate and unit every `progress_seconds` (here: every document)."""
    from datatrove.utils.logging import logger

    from pipelines.curate.readers import CurateReader
    from pipelines.curate.settings import ReadSettings

    path = write_jsonl(tmp_path / "a.jsonl.gz", [{"text": prose(i)} for i in range(5)])
    plan = make_plan([str(path)], tasks=1, workers=1, split_bytes=64 << 20, min_split_bytes=1 << 12)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
    try:
        docs = list(CurateReader(plan, ReadSettings(), progress_seconds=0).run(None, 0, 1))
        quiet = len(lines)
        list(CurateReader(plan, ReadSettings()).run(None, 0, 1))  # the default: every 5 minutes
    finally:
        logger.remove(sink)
    assert len(docs) == 5 and quiet == 5 and len(lines) == quiet
    assert lines[-1].startswith("curate rank 0: 5 documents read in ")
    assert lines[-1].endswith(f"unit 1 of 1: {path}")
