"""Builders for the curate tests' self-made inputs: English/German prose, WARC records, JSONL, Parquet, HTML.

Documents are built from a bank of plain sentences so that each passes the quality filters (enough words,
sentences, stop words; no repeated lines), and each is distinct (exact dedup must not merge them).
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from pipelines.config import load_config
from pipelines.context import RunContext

EN_SENTENCES = [
    "The volunteers met at the library on Saturday morning to plan the new reading programme.",
    "Several parents offered to bring books that their own children had outgrown over the years.",
    "A retired teacher explained how she helps nervous readers feel confident about reading aloud.",
    "The group agreed that every child should be able to choose the book they want to read.",
    "Some of the older students said they would like to help the younger ones after school.",
    "The librarian thanked everyone for giving up their time and promised to keep the room open late.",
    "They also discussed how to reach families who rarely visit the library or the community centre.",
    "One volunteer suggested printing a short leaflet in several languages for the local shops.",
    "The council has agreed to pay for new shelves if the programme is still running next spring.",
    "Most of the people at the meeting had never met before, but they quickly found common ground.",
    "A local bakery offered to provide bread and pastries for the first few sessions free of charge.",
    "Everyone left the meeting with a list of small tasks to finish before the programme begins.",
    "The garden behind the school has become a quiet place where neighbours stop to talk in the evening.",
    "Children planted beans and sunflowers there in April, and the first flowers opened in early July.",
    "An elderly man who lives nearby waters the beds every morning before the heat of the day.",
    "The harvest is shared with a food bank that supports more than sixty families in the district.",
    "Teachers say the pupils who work in the garden are more curious about science and nature.",
    "A carpenter from the next street built a wooden bench so that visitors can rest in the shade.",
    "The project began with a single conversation between two neighbours who wanted to do something useful.",
    "Anyone who would like to help is welcome to visit on Wednesday afternoons and ask questions.",
]
DE_SENTENCES = [
    "Die Nachbarn treffen sich jeden Samstag im Hof, um gemeinsam den kleinen Garten zu pflegen.",
    "Eine ältere Frau aus dem vierten Stock hat den anderen gezeigt, wie man Tomaten richtig anbaut.",
    "Die Kinder aus dem Haus haben Schilder gemalt und an die Beete gehängt.",
    "Im Sommer wird die Ernte mit einer Tafel geteilt, die viele Familien im Viertel unterstützt.",
    "Wer keine Zeit zum Gärtnern hat, bringt oft Kuchen oder Kaffee für die Helfer mit.",
    "Der Hausmeister hat eine Regentonne aufgestellt, damit das Wasser nicht verschwendet wird.",
    "Viele Bewohner sagen, dass sie ihre Nachbarn erst durch den Garten richtig kennengelernt haben.",
    "Im nächsten Jahr soll ein zweiter Garten auf dem Parkplatz hinter der Schule entstehen.",
]
FR_SENTENCES = [
    "Les voisins se retrouvent chaque samedi dans la cour pour entretenir le petit jardin partagé.",
    "Une dame du quatrième étage a montré aux enfants comment planter des tomates et des haricots.",
    "La récolte est partagée avec une association qui aide les familles du quartier.",
    "Beaucoup d'habitants disent qu'ils ont enfin appris à connaître leurs voisins grâce au jardin.",
    "La mairie a promis de financer de nouveaux bacs si le projet continue au printemps prochain.",
    "Les enseignants remarquent que les élèves qui jardinent sont plus curieux de la nature.",
]


def prose(seed: int, sentences: list[str] = EN_SENTENCES, n: int = 8) -> str:
    """A distinct paragraph-per-sentence text of `n` sentences (deterministic in `seed`)."""
    rng = random.Random(seed)
    picked = rng.sample(sentences, min(n, len(sentences)))
    picked.insert(
        0, f"This is report number {seed} from the neighbourhood association, written for the newsletter."
    )
    return "\n".join(picked)


def html_page(text: str, title: str = "Report", charset_meta: str | None = "utf-8", lang: str = "en") -> str:
    meta = f'<meta charset="{charset_meta}">' if charset_meta else ""
    paragraphs = "".join(f"<p>{line}</p>\n" for line in text.split("\n"))
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head>{meta}<title>{title}</title></head>'
        f'<body><nav><a href="/">Home</a> <a href="/news">News</a></nav><main><article><h1>{title}</h1>\n'
        f"{paragraphs}</article></main><footer>Footer links</footer></body></html>"
    )


def http_response(
    body: bytes, content_type: str = "text/html; charset=utf-8", status: int = 200, extra: str = ""
) -> bytes:
    reason = "OK" if status == 200 else "Other"
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


def warc_record(
    block: bytes,
    url: str = "https://example.org/page",
    kind: str = "response",
    date: str = "2024-01-02T03:04:05Z",
    content_type: str = "application/http; msgtype=response",
    declared_length: int | None = None,
) -> bytes:
    length = len(block) if declared_length is None else declared_length
    head = (
        f"WARC/1.0\r\nWARC-Type: {kind}\r\nWARC-Target-URI: {url}\r\nWARC-Date: {date}\r\n"
        f"WARC-Record-ID: <urn:uuid:{random.Random(url + kind).getrandbits(128):032x}>\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    )
    return head.encode() + block + b"\r\n\r\n"


def write_warc(path: Path, records: list[bytes], gzip_members: bool = True) -> Path:
    """One gzip member per record (as Common Crawl writes them), or plain when the name has no .gz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz") and gzip_members:
        path.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records))
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(b"".join(records), mtime=0))
    else:
        path.write_bytes(b"".join(records))
    return path


def html_warc(path: Path, n: int, start: int = 0, **kwargs: Any) -> Path:
    """A WARC of `n` HTML responses with distinct English prose."""
    records = [
        warc_record(
            http_response(html_page(prose(start + i)).encode()), url=f"https://example.org/p{start + i}"
        )
        for i in range(n)
    ]
    return write_warc(path, records, **kwargs)


def write_jsonl(path: Path, records: list[dict[str, Any] | str | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for r in records:
        if isinstance(r, bytes):
            lines.append(r)
        elif isinstance(r, str):
            lines.append(r.encode())
        else:
            lines.append(json.dumps(r, ensure_ascii=False).encode())
    data = b"\n".join(lines) + b"\n"
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


def run_stage(out: Path, inputs: list[str | Path], client, *overrides: str) -> tuple[dict[str, Any], Path]:
    """Run the curate stage through the real Dask cluster; return (summary, stage folder)."""
    from pipelines.curate.stage import preflight, run_curate

    config = load_config(
        None, [f"out={out}", "input=" + ",".join(str(i) for i in inputs), "curate.score=false", *overrides]
    )
    preflight(config)
    ctx = RunContext(config=config, client=client, run_id="run-test")
    return run_curate(ctx, config.input), ctx.stage_dir("curate")


def read_counts(stage: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((stage / "counts").glob("*.json"))]


def read_reader(units_source: list[str | Path], **settings: Any):
    """Run the CurateReader in-process over inputs (one rank); return (documents, reader step)."""
    from pipelines.curate.inputs import make_plan
    from pipelines.curate.readers import CurateReader
    from pipelines.curate.settings import ReadSettings

    strict = settings.pop("strict", False)
    split = settings.pop("split_bytes", 64 << 20)
    tasks = settings.pop("tasks", 1)
    plan = make_plan(
        [str(u) for u in units_source], tasks=tasks, workers=1, split_bytes=split, min_split_bytes=1 << 12
    )
    reader = CurateReader(plan, ReadSettings(**settings), strict=strict)
    docs = []
    for rank in range(plan.world_size):
        docs += list(reader.run(None, rank, plan.world_size))
    return docs, reader


def counters(step) -> dict[str, int]:
    return {k: int(v.total) for k, v in step.stats.stats.items()}


def mixed_folder(root: Path, documents: int = 3) -> Path:
    """A folder as users have them: JSONL documents beside a broken link, a FIFO, a JSON array, a note and a CSV."""
    import os

    folder = root / "mixed"
    write_jsonl(
        folder / "a.jsonl", [{"text": prose(i), "url": f"https://a.org/{i}"} for i in range(documents)]
    )
    os.symlink(root / "nowhere.jsonl", folder / "broken.jsonl")
    os.mkfifo(folder / "fifo.jsonl")
    (folder / "arr.json").write_text(json.dumps([{"text": "one"}, {"text": "two"}]))
    (folder / "notes.txt").write_text("a note")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    return folder
