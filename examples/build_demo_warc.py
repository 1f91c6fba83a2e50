"""Rebuild examples/demo/crawl.warc.gz, the demo's small WARC file (written for the prosocial-corpus project).

The demo input must exercise the WARC path of the curate stage without any real crawl data, so this script
wraps two hand-written pages in HTTP responses, one gzip member per record as Common Crawl writes them, plus
a request record (skipped by the reader) and a 404 response (dropped as `http_status`).

    .venv/bin/python examples/build_demo_warc.py
"""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path

OUT = Path(__file__).resolve().parent / "demo" / "crawl.warc.gz"
DATE = "2024-05-06T10:00:00Z"

PAGES = {
    "https://demo.prosocial-corpus.example/library-volunteers": (
        200,
        "Reading buddies at the public library",
        [
            "Every Wednesday afternoon, the children's corner of the public library fills with pairs of readers. "
            "Each pair is a child who is learning to read and a volunteer who listens, helps with difficult "
            "words and asks questions about the story.",
            "The programme began with six volunteers and now has more than forty. Most are retired teachers or "
            "parents, but there are also teenagers from the secondary school who earn community service hours "
            "and, according to the librarian, often turn out to be the most patient listeners of all.",
            "Teachers at the nearby primary school say that the children who take part read more often at home "
            "and are less anxious about reading aloud in class. The volunteers say they gain just as much: a "
            "weekly hour of calm, a sense of purpose, and friendships that last beyond the programme.",
            "New volunteers attend a short training session on how to encourage a reluctant reader without "
            "taking over. The key, the trainers explain, is to praise effort rather than speed and to let the "
            "child choose the book whenever possible.",
            "Anyone who would like to join can leave their name at the front desk. The library also welcomes "
            "donations of children's books in good condition, which are given to families who do not have many "
            "books at home.",
        ],
    ),
    "https://demo.prosocial-corpus.example/missing-page": (404, "Not found", ["This page does not exist."]),
}


def _record(headers: dict[str, str], block: bytes) -> bytes:
    lines = ["WARC/1.0", *(f"{k}: {v}" for k, v in headers.items()), f"Content-Length: {len(block)}"]
    return gzip.compress(("\r\n".join(lines) + "\r\n\r\n").encode() + block + b"\r\n\r\n", mtime=0)


def main() -> None:
    members = [
        _record(
            {
                "WARC-Type": "warcinfo",
                "WARC-Date": DATE,
                "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'warcinfo')}>",
                "Content-Type": "application/warc-fields",
            },
            b"software: examples/build_demo_warc.py (prosocial-corpus demo, not a real crawl)\r\n",
        )
    ]
    for url, (status, title, paragraphs) in PAGES.items():
        body = "".join(f"<p>{p}</p>\n" for p in paragraphs)
        html = (
            f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            '<meta name="description" content="Demo page written for the prosocial-corpus project."></head>\n'
            f'<body><nav><a href="/">Home</a></nav><main><article><h1>{title}</h1>\n{body}</article></main>'
            "<footer>Demo content, Apache-2.0.</footer></body></html>\n"
        ).encode()
        request = f"GET {url.split('example', 1)[1]} HTTP/1.1\r\nHost: demo.prosocial-corpus.example\r\n\r\n".encode()
        members.append(
            _record(
                {
                    "WARC-Type": "request",
                    "WARC-Target-URI": url,
                    "WARC-Date": DATE,
                    "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'request ' + url)}>",
                    "Content-Type": "application/http; msgtype=request",
                },
                request,
            )
        )
        reason = "OK" if status == 200 else "Not Found"
        response = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {len(html)}\r\n\r\n"
        ).encode() + html
        members.append(
            _record(
                {
                    "WARC-Type": "response",
                    "WARC-Target-URI": url,
                    "WARC-Date": DATE,
                    "WARC-Record-ID": f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'response ' + url)}>",
                    "Content-Type": "application/http; msgtype=response",
                },
                response,
            )
        )
    OUT.write_bytes(b"".join(members))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(members)} records)")


if __name__ == "__main__":
    main()
