"""Every bad-input case of issue 3, with fixtures made here: counted by reason (run goes on), or strict fails fast.

Cases: truncated gzip and zstd, junk after compressed data, invalid JSON lines, a byte order mark, non-UTF-8
bytes, lone surrogate escapes and mislabelled charsets, empty files, files gone since planning, a 50 MB single
document, a WARC record with no HTTP payload, a Parquet file with the wrong schema or a corrupt page.
"""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from curate_fixtures import (
    counters,
    html_page,
    html_warc,
    http_response,
    prose,
    read_reader,
    run_stage,
    warc_record,
    write_jsonl,
    write_warc,
)

from pipelines.curate.readers import BadInputError

FIFTY_MB = 50 * 1024 * 1024


def _truncate(path, keep: float = 0.7):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# -- truncated gzip ------------------------------------------------------------------------------------------
def test_truncated_warc_gzip_keeps_complete_records(tmp_path):
    path = _truncate(html_warc(tmp_path / "cut.warc.gz", 10))
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["file_error_truncated_gzip"] == 1
    assert 5 <= len(docs) < 10, "complete members before the cut are read"
    assert c["documents_in"] == len(docs) + c.get("dropped_truncated", 0)


def test_truncated_single_member_warc_drops_the_partial_record(tmp_path):
    path = _truncate(html_warc(tmp_path / "one.warc.gz", 3, gzip_members=False), keep=0.8)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["file_error_truncated_gzip"] == 1 and c["dropped_truncated"] == 1
    assert c["documents_in"] == len(docs) + 1


def test_real_clipped_warc(shared_data):
    docs, reader = read_reader([shared_data / "web" / "resiliparse-tests" / "clipped.warc.gz"])
    c = counters(reader)
    assert docs == [] and c["documents_in"] == 1 and c["dropped_truncated"] == 1
    assert c["file_error_truncated_gzip"] == 1


def test_truncated_jsonl_gzip(tmp_path):
    path = _truncate(write_jsonl(tmp_path / "cut.jsonl.gz", [{"text": prose(i)} for i in range(50)]))
    docs, reader = read_reader([path])
    assert counters(reader)["file_error_truncated_gzip"] == 1
    assert 0 < len(docs) < 50


def test_truncated_html_gzip(tmp_path):
    path = tmp_path / "page.html.gz"
    path.write_bytes(gzip.compress(html_page(prose(1)).encode())[:-20])
    docs, reader = read_reader([path])
    c = counters(reader)
    assert docs == [] and c["dropped_truncated"] == 1 and c["file_error_truncated_gzip"] == 1


def test_truncated_jsonl_zstd(tmp_path):
    rows = [{"text": f"{prose(i)} {i}"} for i in range(2000)]
    path = _truncate(write_jsonl(tmp_path / "cut.jsonl.zst", rows), 0.6)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["file_error_truncated_zstd"] == 1 and "dropped_invalid_json" not in c
    assert 0 < len(docs) < 2000 and [d.text for d in docs] == [r["text"] for r in rows[: len(docs)]]
    tiny = _truncate(write_jsonl(tmp_path / "tiny.jsonl.zst", [{"text": prose(1)}]), 0.5)
    docs, reader = read_reader([tiny])
    c = counters(reader)
    assert docs == [] and c["file_error_truncated_zstd"] == 1 and "file_error_empty_file" not in c


def test_junk_after_jsonl_zstd_keeps_every_record(tmp_path):
    import zstandard

    rows = [{"text": f"{prose(i)} {i}"} for i in range(300)]
    frames = [zstandard.ZstdCompressor().compress((json.dumps(r) + "\n").encode()) for r in rows]
    path = tmp_path / "junk.jsonl.zst"
    path.write_bytes(b"".join(frames) + b"garbage!!")
    docs, reader = read_reader([path])
    assert len(docs) == 300 and counters(reader)["file_error_corrupt_compressed"] == 1


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".jsonl.zst"])
def test_last_record_without_newline_before_junk_is_kept(tmp_path, suffix):
    """The decoder raises on the junk; the record decoded just before it (no final newline) still counts."""
    import zstandard

    body = "\n".join(json.dumps({"text": prose(i)}) for i in range(3)).encode()  # no final newline
    packed = gzip.compress(body) if suffix.endswith("gz") else zstandard.ZstdCompressor().compress(body)
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(packed + b"JUNK")
    docs, reader = read_reader([path])
    c = counters(reader)
    assert [d.text for d in docs] == [prose(i) for i in range(3)] and c["documents_in"] == 3
    assert c["file_error_corrupt_compressed"] == 1


def test_record_cut_by_truncation_is_counted_as_truncated(tmp_path):
    body = b"".join(json.dumps({"text": prose(i)}).encode() + b"\n" for i in range(3))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(body + b'{"text": "a record cut in the')[:-8])
    docs, reader = read_reader([path])
    c = counters(reader)
    assert len(docs) == 3 and c["documents_in"] == 4 and c["dropped_truncated"] == 1
    assert c["file_error_truncated_gzip"] == 1 and "dropped_invalid_json" not in c


def test_junk_after_html_gzip_keeps_the_page(tmp_path):
    page = html_page(prose(1)).encode()
    path = tmp_path / "page.html.gz"
    path.write_bytes(gzip.compress(page) + b"junkjunk")
    docs, reader = read_reader([path])
    assert [d.text for d in docs] == [page.decode()] and counters(reader)["file_error_corrupt_gzip"] == 1
    path.write_bytes(gzip.compress(page[:100]) + gzip.compress(page[100:]) + b"\0" * 8)
    docs, reader = read_reader([path])
    assert [d.text for d in docs] == [page.decode()], "several members and NUL padding are fine"
    assert not any(k.startswith("file_error_") for k in counters(reader))


# -- corrupt WARC: only the bad member or record is lost --------------------------------------------------------
def _responses(n: int) -> list[bytes]:
    return [
        warc_record(http_response(html_page(prose(i)).encode()), url=f"https://e.org/{i}") for i in range(n)
    ]


def test_corrupt_gzip_member_loses_only_itself(tmp_path):
    members = [gzip.compress(r, mtime=0) for r in _responses(10)]
    bad = bytearray(members[2])
    for i in range(40, 80):
        bad[i] ^= 0xFF
    members[2] = bytes(bad)
    path = tmp_path / "c.warc.gz"
    path.write_bytes(b"".join(members))
    docs, reader = read_reader([path])
    c = counters(reader)
    assert len(docs) == 9 and "https://e.org/2" not in {d.metadata["url"] for d in docs}
    assert c["dropped_corrupt_gzip"] == 1 and c["file_error_corrupt_gzip"] == 1 and c["documents_in"] == 10
    with pytest.raises(BadInputError, match=f"{path} at offset {len(members[0]) + len(members[1])}:"):
        read_reader([path], strict=True)


@pytest.mark.parametrize("name", ["bad.warc", "bad.warc.gz"])
@pytest.mark.parametrize("length", [None, "abc", "-5"])
def test_invalid_content_length_loses_only_its_record(tmp_path, name, length):
    good = _responses(3)
    head, _, rest = good[1].partition(b"Content-Length: ")
    rest = rest.split(b"\r\n", 1)[1]
    good[1] = head + (f"Content-Length: {length}\r\n".encode() if length else b"") + rest
    path = write_warc(tmp_path / name, good)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert [d.metadata["url"] for d in docs] == ["https://e.org/0", "https://e.org/2"]
    assert c["dropped_corrupt_warc"] == 1 and c["documents_in"] == 3
    offset = len(gzip.compress(good[0], mtime=0)) if name.endswith(".gz") else len(good[0])
    with pytest.raises(BadInputError, match=f"{path} at offset {offset}: invalid WARC Content-Length"):
        read_reader([path], strict=True)


@pytest.mark.parametrize("name", ["junk.warc", "junk.warc.gz"])
def test_unparseable_bytes_between_warc_records_are_skipped(tmp_path, name):
    good = _responses(4)
    path = write_warc(tmp_path / name, [*good[:2], b"NOT A WARC HEADER\r\n\r\n", *good[2:]])
    docs, reader = read_reader([path])
    c = counters(reader)
    assert len(docs) == 4 and c["file_error_corrupt_warc"] == 1 and c["documents_in"] == 4


@pytest.mark.parametrize("name", ["s.warc", "s.warc.gz"])
def test_split_units_count_each_bad_warc_record_once(tmp_path, name):
    """A bad record next to a unit boundary is read by the unit before it, and counted once."""
    records = _responses(40)
    for i in (5, 17, 29):
        records[i] = records[i].replace(b"Content-Length: ", b"Content-Length: x", 1)
    path = write_warc(tmp_path / name, records)
    for split in (1 << 30, 1 << 12):
        docs, reader = read_reader([path], split_bytes=split, tasks=0)
        c = counters(reader)
        assert len(docs) == 37 and c["dropped_corrupt_warc"] == 3 and c["documents_in"] == 40


# -- invalid JSON lines ----------------------------------------------------------------------------------------
def test_invalid_json_lines_are_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"text": prose(1)},
            '{"text": "unterminated',
            "[1, 2, 3]",
            {"title": "no text field"},
            {"text": "   "},
            {"text": prose(2)},
        ],
    )
    docs, reader = read_reader([path])
    c = counters(reader)
    assert len(docs) == 2
    assert (c["dropped_invalid_json"], c["dropped_missing_text"], c["dropped_empty_text"]) == (2, 1, 1)
    assert c["documents_in"] == 6


def test_json_nested_deeper_than_the_stack_is_invalid_json(tmp_path):
    path = write_jsonl(
        tmp_path / "deep.jsonl", [{"text": prose(1)}, '{"a": ' + "[" * 100_000, {"text": prose(2)}]
    )
    docs, reader = read_reader([path])
    assert len(docs) == 2 and counters(reader)["dropped_invalid_json"] == 1


@pytest.mark.timeout(60)  # the bug this guards was an endless loop
@pytest.mark.parametrize("size", [b"-6", b"+6", b"0x6", b"6_0", b"zz"])
def test_bad_chunk_size_loses_only_its_record(tmp_path, size):
    """Chunk sizes are hex digits only; a negative one used to copy the body forever."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
    page = html_page(prose(3)).encode()
    bad = head + size + b"\r\n" + page[:6] + b"\r\n0\r\n\r\n"
    good = head + f"{len(page):x}".encode() + b"\r\n" + page + b"\r\n0\r\n\r\n"
    records = [warc_record(bad, url="https://e.org/bad"), warc_record(good, url="https://e.org/good")]
    docs, reader = read_reader([write_warc(tmp_path / "chunked.warc.gz", records)])
    assert counters(reader)["dropped_decode_error"] == 1
    assert [d.metadata["url"] for d in docs] == ["https://e.org/good"] and "Report" in docs[0].text


def test_byte_order_mark_opening_jsonl(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + write_jsonl(path, [{"text": prose(i)} for i in range(3)]).read_bytes())
    docs, reader = read_reader([path])
    assert [d.text for d in docs] == [prose(i) for i in range(3)] and counters(reader)["documents_in"] == 3


# -- non-UTF-8 bytes and mislabelled charsets ------------------------------------------------------------------
def test_non_utf8_bytes_in_jsonl_are_replaced_and_counted(tmp_path):
    line = b'{"text": "Caf\xe9 au lait ' + prose(3).replace("\n", " ").encode() + b'"}'
    path = write_jsonl(tmp_path / "latin1.jsonl", [line])
    docs, reader = read_reader([path])
    assert counters(reader)["repaired_invalid_utf8"] == 1
    assert len(docs) == 1 and docs[0].text.startswith("Caf\ufffd au lait")


def test_lone_surrogate_escapes_are_replaced_and_counted(tmp_path):
    """`\\ud800` is valid JSON but not encodable text: fastText and the Parquet writer would fail the rank."""
    good = {"text": prose(1), "url": "https://e.org/1"}
    bad = {"text": prose(2) + " \ud800 end", "url": "https://e.org/\udc00", "date": "2024\ud83d\ude00"}
    path = write_jsonl(tmp_path / "s.jsonl", [json.dumps(good), json.dumps(bad)])  # ASCII escapes
    docs, reader = read_reader([path])
    assert len(docs) == 2 and counters(reader)["repaired_invalid_utf8"] == 1
    text, url, date = docs[1].text, docs[1].metadata["url"], docs[1].metadata["crawl_date"]
    assert text.endswith(" \ufffd end") and url == "https://e.org/\ufffd" and date == "2024😀"
    assert all(f"{d.text}{d.metadata['url']}{d.metadata['crawl_date']}".encode() for d in docs)


def test_file_name_that_is_not_utf8(tmp_path):
    """The OS hands undecodable name bytes back as surrogates; in ids and sources they failed the Parquet write."""
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jsonl"), "wb") as f:
        f.write((json.dumps({"text": prose(1)}) + "\n{not json}\n").encode())
    docs, _ = read_reader([folder])
    assert [d.text for d in docs] == [prose(1)]
    assert docs[0].metadata["source"].endswith("caf\ufffd.jsonl") and docs[0].id.encode()

    # the dropped line reaches the exclusions (orjson refuses surrogates) and strict mode's message
    from pipelines.curate.inputs import make_plan
    from pipelines.curate.readers import CurateReader
    from pipelines.curate.settings import ReadSettings

    plan = make_plan([str(folder)], tasks=1, workers=1, split_bytes=64 << 20, min_split_bytes=1 << 12)
    reader = CurateReader(plan, ReadSettings(), exclusion_dir=str(tmp_path / "excluded"))
    assert len(list(reader.run(None, 0, 1))) == 1
    with gzip.open(next((tmp_path / "excluded" / "read").glob("*.jsonl.gz")), "rt") as f:
        excluded = [json.loads(line) for line in f]
    assert [e["metadata"]["filter_reason"] for e in excluded] == ["invalid_json"]
    assert excluded[0]["metadata"]["source"].endswith("caf\ufffd.jsonl")
    with pytest.raises(BadInputError, match="caf\ufffd.jsonl at offset"):
        read_reader([folder], strict=True)


def test_invalid_utf8_in_parquet_strings_is_replaced_and_counted(tmp_path):
    values = [prose(1).encode(), b"Caf\xe9 " + prose(2).encode()]
    table = pa.table({"text": pa.array(values, pa.binary()).view(pa.string())})  # unvalidated writer
    pq.write_table(table, tmp_path / "bad.parquet")
    docs, reader = read_reader([tmp_path / "bad.parquet"])
    assert len(docs) == 2 and docs[1].text.startswith("Caf\ufffd ")
    assert counters(reader)["repaired_invalid_utf8"] == 1


@pytest.mark.parametrize(
    ("declared", "encoding"),
    [("utf-8", "cp1252"), ("iso-8859-1", "utf-8"), ("windows-1251", "utf-8")],
)
def test_mislabelled_charset_in_warc(tmp_path, declared, encoding):
    text = "Crème brûlée für Gäste. " + prose(4)
    body = html_page(text, charset_meta=None).encode(encoding)
    path = write_warc(
        tmp_path / "mis.warc.gz", [warc_record(http_response(body, f"text/html; charset={declared}"))]
    )
    docs, reader = read_reader([path])
    assert counters(reader)["repaired_mislabelled_charset"] == 1
    assert "Crème brûlée für Gäste" in docs[0].text


@pytest.mark.parametrize("declared", ["utf-16", "utf-16be", "utf-16le"])
def test_utf16_label_on_utf8_bytes_is_mislabelled(tmp_path, declared):
    """UTF-8 bytes of even length decode 'successfully' as UTF-16 into CJK mojibake: no NULs, no BOM, no UTF-16."""
    body = html_page("Crème brûlée für Gäste. " + prose(6), charset_meta=None).encode()
    body += b" " * (len(body) % 2)
    path = write_warc(
        tmp_path / "u16.warc.gz", [warc_record(http_response(body, f"text/html; charset={declared}"))]
    )
    docs, reader = read_reader([path])
    assert counters(reader)["repaired_mislabelled_charset"] == 1
    assert "Crème brûlée für Gäste" in docs[0].text


@pytest.mark.parametrize(
    ("declared", "encoding"), [("utf-16", "utf-16"), ("utf-16be", "utf-16-be"), ("utf-16le", "utf-16-le")]
)
def test_real_utf16_is_still_read(tmp_path, declared, encoding):
    body = html_page("Crème brûlée für Gäste. " + prose(6), charset_meta=None).encode(encoding)
    path = write_warc(
        tmp_path / "u16.warc.gz", [warc_record(http_response(body, f"text/html; charset={declared}"))]
    )
    docs, reader = read_reader([path])
    assert "Crème brûlée für Gäste" in docs[0].text and "repaired_mislabelled_charset" not in counters(reader)


def test_correctly_labelled_charset_is_not_a_repair(tmp_path):
    body = html_page("Crème brûlée. " + prose(5), charset_meta="windows-1252").encode("cp1252")
    (tmp_path / "ok.html").write_bytes(body)
    docs, reader = read_reader([tmp_path / "ok.html"])
    assert "Crème brûlée" in docs[0].text
    assert not any(k.startswith("repaired_") for k in counters(reader))


@pytest.mark.parametrize(
    ("declared", "encoding", "text"),
    [
        ("iso-8859-1", "latin-1", "Un café crème, s'il vous plaît. Très bien, merci à vous."),
        ("windows-1252", "cp1252", "Crème brûlée für Gäste – “quoted”."),
        ("koi8-r", "koi8-r", "Добрый день, соседи. Спасибо за помощь."),
    ],
)
def test_text_plain_response_is_decoded_with_its_declared_charset(tmp_path, declared, encoding, text):
    """text/plain bodies were always read as UTF-8: every accent became U+FFFD, counted as invalid UTF-8."""
    body = f"{text}\n{prose(2)}".encode(encoding)
    path = write_warc(
        tmp_path / "tp.warc.gz",
        [warc_record(http_response(body, f"text/plain; charset={declared}"), url="https://e.org/a.txt")],
    )
    docs, reader = read_reader([path])
    assert len(docs) == 1 and docs[0].text.startswith(text) and docs[0].metadata["kind"] == "text"
    assert "\ufffd" not in docs[0].text
    assert not any(k.startswith("repaired_") for k in counters(reader))


def test_text_plain_response_with_a_utf8_charset_and_wrong_bytes_is_still_repaired(tmp_path):
    body = "Crème brûlée für Gäste. ".encode("cp1252") + prose(3).encode()
    path = write_warc(
        tmp_path / "tp.warc.gz", [warc_record(http_response(body, "text/plain; charset=utf-8"))]
    )
    docs, reader = read_reader([path])
    assert docs[0].text.startswith("Crème brûlée für Gäste.")
    assert counters(reader)["repaired_mislabelled_charset"] == 1


PAGE = "<html><body><p>Café crème à la française, très jolie. Ünïcödé</p></body></html>"


@pytest.mark.parametrize("stray", [b"\x81", b"\x8d", b"\x8f", b"\x90", b"\x9d"])
@pytest.mark.parametrize(
    ("declared", "prefix"),
    [
        ("iso-8859-1", ""),
        ("windows-1252", ""),
        (None, ""),
        (None, '<meta charset="windows-1252">'),
        ("utf-8", ""),
    ],
)
def test_a_byte_undefined_in_cp1252_costs_only_itself(declared, prefix, stray):
    """Python's cp1252 rejects the five bytes WHATWG maps to C1 controls; one of them made the whole
    windows-1252 page fall back to UTF-8, turning every accent into U+FFFD."""
    from pipelines.curate.charset import INVALID_BYTES, decode_html

    page = prefix + PAGE
    cut = page.index("à")  # single-byte: the same index in bytes and characters
    data = page.encode("cp1252")
    text, problem = decode_html(data[:cut] + stray + data[cut:], declared)
    assert text == page[:cut] + "\ufffd" + page[cut:]
    assert problem == INVALID_BYTES


@pytest.mark.parametrize("declared", ["iso-8859-1", "windows-1252"])
@pytest.mark.parametrize("stray", [b"\xff", b"\x81"])
def test_utf8_under_a_single_byte_label_with_a_stray_byte_stays_readable(declared, stray):
    """Cyrillic UTF-8 holds bytes cp1252 leaves undefined: one stray byte turned the page into mojibake."""
    from pipelines.curate.charset import INVALID_BYTES, decode_html

    page = "<p>Добрый день! Спасибо всем соседям за помощь в саду.</p>"
    text, problem = decode_html(page.encode() + stray, declared)
    assert text == page + "\ufffd" and problem == INVALID_BYTES


def test_a_stray_cp1252_byte_in_a_warc_page_is_counted_once(tmp_path):
    body = html_page("Crème brûlée für Gäste. " + prose(4), charset_meta=None).encode("cp1252")
    body = body.replace(b"</body>", b"\x81</body>")
    path = write_warc(
        tmp_path / "s.warc.gz", [warc_record(http_response(body, "text/html; charset=iso-8859-1"))]
    )
    docs, reader = read_reader([path])
    assert "Crème brûlée für Gäste" in docs[0].text and docs[0].text.count("\ufffd") == 1
    assert counters(reader)["repaired_invalid_bytes"] == 1


def test_crawler_metadata_records_are_not_documents(tmp_path):
    """wget writes its log and arguments as `resource` records with `metadata://` URIs: not pages, and not bad
    input either (a strict run must not fail on them)."""
    log = (
        b"Opening WARC file 'sample.warc.gz'.\n--2024-01-02--  https://example.org/\nResolving example.org...\n"
        * 20
    )
    records = [
        warc_record(
            log,
            url="metadata://gnu.org/software/wget/warc/wget.log",
            kind="resource",
            content_type="text/plain",
        ),  # fmt: skip
        warc_record(http_response(html_page(prose(1)).encode()), url="https://example.org/page"),
    ]
    path = write_warc(tmp_path / "wget.warc.gz", records)
    docs, reader = read_reader([path], strict=True)
    assert [d.metadata["url"] for d in docs] == ["https://example.org/page"]
    c = counters(reader)
    assert c["documents_in"] == 1 and c["warc_crawler_metadata_skipped"] == 1


# -- empty files -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.warc.gz", "e.warc", "e.html", "e.parquet"])
def test_empty_files(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"") if name == "e.jsonl.gz" else b"")
    docs, reader = read_reader([path])
    c = counters(reader)
    assert docs == [] and c["file_error_empty_file"] == 1 and c.get("documents_in", 0) == 0


@pytest.mark.parametrize("name", ["b.jsonl", "b.jsonl.gz"])
def test_jsonl_of_blank_lines_is_an_empty_file(tmp_path, name):
    """Blank lines are no records: such a file is as empty as one with no bytes (it raised no file error)."""
    path = tmp_path / name
    blank = b"\n  \n\r\n\t\n"
    path.write_bytes(gzip.compress(blank) if name.endswith(".gz") else blank)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert docs == [] and c["file_error_empty_file"] == 1 and c.get("documents_in", 0) == 0
    with pytest.raises(BadInputError, match="empty file"):
        read_reader([path], strict=True)


@pytest.mark.parametrize("name", ["g.jsonl", "g.jsonl.gz", "g.parquet", "g.html", "g.warc.gz"])
def test_file_gone_since_planning_is_a_file_error(tmp_path, name):
    """Deleted, made unreadable or turned into a broken link after the plan: counted, and the rank goes on."""
    from pipelines.curate.inputs import make_plan
    from pipelines.curate.readers import CurateReader
    from pipelines.curate.settings import ReadSettings

    gone = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.table({"text": [prose(1)]}), gone)
    elif name.endswith(".html"):
        gone.write_text(html_page(prose(1)))
    elif name.endswith(".warc.gz"):
        write_warc(gone, _responses(1))
    else:
        write_jsonl(gone, [{"text": prose(1)}])
    write_jsonl(tmp_path / "kept.jsonl", [{"text": prose(2)}])
    plan = make_plan([str(tmp_path)], tasks=1, workers=1, split_bytes=1 << 20, min_split_bytes=1 << 12)
    gone.unlink()
    reader = CurateReader(plan, ReadSettings())
    docs = list(reader.run(None, 0, 1))
    assert [d.text for d in docs] == [prose(2)] and counters(reader)["file_error_unreadable"] == 1
    # it reaches the rank's counts, and the state store does not mark it seen (the next refresh retries it)
    from pipelines.curate.output import rank_counts
    from pipelines.graph import committed_inputs

    unreadable = rank_counts([reader])["unreadable_inputs"]
    assert unreadable == [str(gone)]
    batch = {str(gone): {"size": 1}, str(tmp_path / "kept.jsonl"): {"size": 2}}
    assert list(committed_inputs(batch, {"unreadable_inputs": unreadable})) == [str(tmp_path / "kept.jsonl")]


# -- a 50 MB single document -----------------------------------------------------------------------------------
def test_50mb_jsonl_line_is_dropped_without_stopping(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps({"text": prose(1)}).encode() + b"\n")
        f.write(b'{"text": "' + b"word " * (FIFTY_MB // 5) + b'"}\n')
        f.write(json.dumps({"text": prose(2)}).encode() + b"\n")
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["dropped_too_large"] == 1 and len(docs) == 2 and c["documents_in"] == 3
    assert docs[1].metadata["source_offset"] > FIFTY_MB, "offsets continue after the skipped line"


def test_50mb_warc_record_is_dropped(tmp_path):
    big = http_response(b"<html><body>" + b"<p>x</p>" * (FIFTY_MB // 8) + b"</body></html>")
    small = http_response(html_page(prose(7)).encode())
    path = write_warc(
        tmp_path / "big.warc.gz", [warc_record(big, url="https://e.org/big"), warc_record(small)]
    )
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["dropped_too_large"] == 1 and len(docs) == 1


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_content_encoded_body_over_the_limit_is_dropped(tmp_path, encoding):
    """A 30 KB compressed body that decodes to 5 MB is too large for a 1 MB limit, and is never held whole."""
    import zlib

    import brotli

    big = b"<html><body><p>" + b"hello world " * 400_000 + b"</p></body></html>"
    packed = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding]
    small = html_page(prose(7)).encode()
    records = [
        warc_record(
            http_response(packed(big), extra=f"Content-Encoding: {encoding}\r\n"), url="https://e.org/bomb"
        ),
        warc_record(
            http_response(packed(small), extra=f"Content-Encoding: {encoding}\r\n"), url="https://e.org/ok"
        ),
    ]
    docs, reader = read_reader([write_warc(tmp_path / "bomb.warc.gz", records)], max_document_bytes=1 << 20)
    c = counters(reader)
    assert c["dropped_too_large"] == 1 and [d.metadata["url"] for d in docs] == ["https://e.org/ok"]
    assert "Report" in docs[0].text


def test_50mb_html_file_is_dropped(tmp_path):
    (tmp_path / "big.html").write_bytes(b"<html>" + b"a" * FIFTY_MB + b"</html>")
    docs, reader = read_reader([tmp_path / "big.html"])
    assert docs == [] and counters(reader)["dropped_too_large"] == 1


# -- a WARC record with no HTTP payload ------------------------------------------------------------------------
def test_warc_response_without_payload(tmp_path):
    headers_only = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 0\r\n\r\n"
    not_http = b"this block is not an HTTP response at all"
    records = [
        warc_record(headers_only, url="https://e.org/empty"),
        warc_record(not_http, url="https://e.org/garbage"),
        warc_record(b"", url="https://e.org/zero"),
        warc_record(http_response(html_page(prose(8)).encode()), url="https://e.org/good"),
    ]
    path = write_warc(tmp_path / "nopayload.warc.gz", records)
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["dropped_no_payload"] == 3 and [d.metadata["url"] for d in docs] == ["https://e.org/good"]


def test_warc_other_drops(tmp_path):
    records = [
        warc_record(http_response(b"%PDF-1.4 binary", "application/pdf"), url="https://e.org/a.pdf"),
        warc_record(http_response(b"<p>gone</p>", status=404), url="https://e.org/404"),
        warc_record(
            b"GET / HTTP/1.1\r\n\r\n", kind="request", content_type="application/http; msgtype=request"
        ),
    ]
    docs, reader = read_reader([write_warc(tmp_path / "o.warc.gz", records)])
    c = counters(reader)
    assert docs == [] and c["dropped_unsupported_content_type"] == 1 and c["dropped_http_status"] == 1
    assert c["documents_in"] == 2, "request records are not documents"


# -- a Parquet file with the wrong schema ----------------------------------------------------------------------
def test_parquet_wrong_schema_counts_every_row(tmp_path):
    pq.write_table(pa.table({"content": [1, 2, 3], "url": ["a", "b", "c"]}), tmp_path / "wrong.parquet")
    pq.write_table(pa.table({"text": [4, 5]}), tmp_path / "wrongtype.parquet")
    pq.write_table(pa.table({"text": [prose(9)]}), tmp_path / "right.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 this is not parquet")
    docs, reader = read_reader([tmp_path])
    c = counters(reader)
    assert len(docs) == 1
    assert c["dropped_wrong_schema"] == 5 and c["file_error_wrong_schema"] == 2
    assert c["file_error_unreadable_parquet"] == 1


def test_corrupt_parquet_page_loses_only_its_row_group(tmp_path):
    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [prose(i) for i in range(2000)]}), path, row_group_size=500)
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 200):  # inside the second row group's data page
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    docs, reader = read_reader([path])
    c = counters(reader)
    assert c["file_error_corrupt_parquet"] == 1 and c["dropped_corrupt_parquet"] == 500
    assert len(docs) == 1500 and c["documents_in"] == 2000
    assert [d.metadata["source_offset"] for d in docs] == [*range(500), *range(1000, 2000)]


# -- strict mode: fail fast naming file and offset -------------------------------------------------------------
def _bad_inputs(tmp_path):
    return {
        "truncated": _truncate(html_warc(tmp_path / "t.warc.gz", 4, gzip_members=False), 0.8),
        "invalid_json": write_jsonl(tmp_path / "j.jsonl", [{"text": prose(1)}, "{oops"]),
        "utf8": write_jsonl(tmp_path / "u.jsonl", [b'{"text": "\xff\xfe bad"}']),
        "charset": write_warc(
            tmp_path / "c.warc.gz",
            [warc_record(http_response("é".encode("cp1252") * 10, "text/html; charset=utf-8"))],
        ),
        "empty": write_jsonl(tmp_path / "e.jsonl", []).write_bytes(b"") or tmp_path / "e.jsonl",
        "no_payload": write_warc(tmp_path / "n.warc.gz", [warc_record(b"HTTP/1.1 200 OK\r\n\r\n")]),
        "schema": (pq.write_table(pa.table({"body": ["x"]}), tmp_path / "s.parquet"), tmp_path / "s.parquet")[
            1
        ],
    }


@pytest.mark.parametrize(
    "case", ["truncated", "invalid_json", "utf8", "charset", "empty", "no_payload", "schema"]
)
def test_strict_fails_naming_file_and_offset(tmp_path, case):
    path = _bad_inputs(tmp_path)[case]
    with pytest.raises(BadInputError) as info:
        read_reader([path], strict=True)
    assert str(path) in str(info.value) and "offset" in str(info.value)


def test_strict_fails_fast_through_dask(tmp_path, dask_client):
    """`strict: true` on the cluster: the run fails with the file and offset in the error."""
    from pipelines.executor import RankFailed

    good = write_jsonl(tmp_path / "in" / "good.jsonl", [{"text": prose(i)} for i in range(3)])
    bad = write_jsonl(tmp_path / "in" / "bad.jsonl", [{"text": prose(10)}, "{not json"])
    with pytest.raises(RankFailed) as info:
        run_stage(tmp_path / "out", [good.parent], dask_client, "strict=true")
    first_line = bad.read_bytes().index(b"\n") + 1
    assert f"{bad} at offset {first_line}" in str(info.value) and "invalid JSON" in str(info.value)
