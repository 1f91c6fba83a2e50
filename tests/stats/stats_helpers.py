"""Self-made inputs for the stats tests, and a headless Chromium driven over the DevTools protocol.

Inputs: JSONL web documents built from sentence banks (kind, neutral, hostile), so that each passes the
quality filters, the tiny classifier bundle spreads them over the profile's tiers, and a few planted documents
are dropped for known reasons (too short, German, an exact duplicate).

Chromium: `--remote-debugging-port=0` writes the chosen port to `DevToolsActivePort` in the profile folder; we
attach to the page target with a websocket, enable the Runtime, Log and Page domains, navigate, wait for the
load event and collect console errors, uncaught exceptions and failed requests before taking a screenshot.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import random
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.config import load_config

KIND = [
    "Thank you so much for helping the neighbours clean the park, we really appreciate your kindness.",
    "I hope you feel better soon, and please let me know if there is anything I can do to help.",
    "We listened to each other carefully and found a fair solution that everyone could support.",
    "The volunteers were patient and generous, and they made every new member feel welcome.",
    "She thanked the nurses for their care and promised to share the lessons with her friends.",
    "Because the evidence was honest and clear, the council agreed to consider the proposal together.",
    "Happy to help with the reading programme, it is wonderful to see the children so hopeful.",
    "He apologised for the mistake, asked for their view, and suggested a better way forward.",
    "Our community garden is a friendly place where people share food and support one another.",
    "Thanks for the thoughtful reply, I understand your reasons and I respect your position.",
    "The students encouraged each other and celebrated every small step with genuine care.",
    "Please remember that kindness costs nothing and can make a real difference in someone's day.",
]
NEUTRAL = [
    "The meeting took place in the library on the second floor of the old town hall building.",
    "The weather report for the weekend predicts light rain in the morning and sun in the afternoon.",
    "The train to the city leaves every thirty minutes from the platform next to the market.",
    "The article describes the history of the bridge and the materials that were used to build it.",
    "Prices for fresh vegetables at the market changed very little during the last season.",
    "The museum will open a new exhibition about maps and travel at the beginning of next month.",
    "Most of the houses on the street were built in the early years of the last century.",
    "The report lists the number of visitors, the opening hours and the cost of the tickets.",
    "A new road will connect the village with the highway by the end of the coming year.",
    "The book contains forty short chapters and a long appendix with tables of historical data.",
    "The football season starts in August and the first game is played at the home stadium.",
    "The phone shop on the corner sells cables, chargers and a small range of used devices.",
]
HOSTILE = [
    "You are a stupid worthless idiot and everyone in this town hates your pathetic ideas.",
    "Shut up, you lying fool, nobody cares about the garbage you keep posting here.",
    "Those people are disgusting scum and they should be thrown out of the meeting.",
    "What a pathetic loser, only a moron would believe such dumb and vile nonsense.",
    "I despise these greedy cheats, they are lazy, selfish and completely shameful.",
    "Your comment is trash, you ugly liar, and you should be ashamed of yourself.",
]
GERMAN = (
    "Die Nachbarn treffen sich jeden Samstag im Hof, um gemeinsam den kleinen Garten zu pflegen.\n"
    "Eine ältere Frau aus dem vierten Stock hat den anderen gezeigt, wie man Tomaten richtig anbaut.\n"
    "Die Kinder aus dem Haus haben Schilder gemalt und an die Beete gehängt, damit jeder sie sieht.\n"
    "Im Sommer wird die Ernte mit einer Tafel geteilt, die viele Familien im Viertel unterstützt.\n"
    "Wer keine Zeit zum Gärtnern hat, bringt oft Kuchen oder Kaffee für die fleißigen Helfer mit.\n"
    "Der Hausmeister hat eine Regentonne aufgestellt, damit das Wasser nicht verschwendet wird.\n"
    "Viele Bewohner sagen, dass sie ihre Nachbarn erst durch den Garten richtig kennengelernt haben."
)
DOMAINS = ["news.example.org", "blog.example.com", "forum.example.net", "www.city.example"]


def document(seed: int, mood: str) -> str:
    """A distinct English text of 9-12 lines; `mood` picks the mix of kind, neutral and hostile sentences."""
    rng = random.Random(seed)
    share = {"kind": (6, 4, 0), "neutral": (1, 9, 0), "hostile": (0, 5, 5), "mixed": (3, 5, 2)}[mood]
    lines = rng.sample(KIND, share[0]) + rng.sample(NEUTRAL, share[1]) + rng.sample(HOSTILE, share[2])
    rng.shuffle(lines)
    lines.insert(0, f"This is post number {seed} in the community newsletter, written for our readers.")
    return "\n".join(lines)


def write_inputs(
    folder: Path, files: int = 2, per_file: int = 14, seed: int = 0, planted: bool = True
) -> list[Path]:
    """JSONL files of web documents (`text`, `url`); with `planted`, the first file also holds one too-short,
    one German and one exactly duplicated document. Returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    moods = itertools.cycle(["kind", "neutral", "hostile", "mixed", "kind", "neutral"])
    paths = []
    for f in range(files):
        rows = []
        for i in range(per_file):
            n = seed * 10_000 + f * 1000 + i
            rows.append(
                {"text": document(n, next(moods)), "url": f"https://{DOMAINS[n % len(DOMAINS)]}/post/{n}"}
            )
        if planted and f == 0:
            rows.append({"text": "Too short to keep.", "url": "https://short.example/1"})
            rows.append({"text": GERMAN, "url": "https://garten.example.de/1"})
            rows.append(dict(rows[0]))  # an exact duplicate of the first document
        path = folder / f"web-{seed:02d}-{f:02d}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        paths.append(path)
    return paths


def run_corpus(dask_client, out: Path, inputs: list[str], bundle: Path, *extra: str) -> dict:
    """`corpus run out=... input=...` through run_graph, on the session cluster (cluster.kind=address)."""
    from pipelines.graph import run_graph

    config = load_config(
        None,
        [
            f"out={out}",
            f"input={','.join(inputs)}",
            f"classifier.bundle={bundle}",
            "cluster.kind=address",
            f"cluster.address={dask_client.scheduler.address}",
            "synthetic.target=0",
            *extra,
        ],
    )
    return run_graph(config)


def stage_results(out: Path, summary: dict) -> dict:
    """What each stage function returned (`ctx.results`), as the manifest of the version records it."""
    manifest = json.loads((out / "versions" / summary["version"] / "manifest.json").read_text())
    return manifest["results"]


# -- headless Chromium over the DevTools protocol ------------------------------------------------------------
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    loaded: bool = False


def open_page(
    url: str, profile_dir: Path, width: int = 1200, height: int = 900, timeout: float = 60.0
) -> PageResult:
    """Load `url` in a fresh headless Chromium; return console errors, exceptions, failed loads and a screenshot."""
    from websockets.sync.client import connect

    binary = chromium_binary()
    if binary is None:
        raise RuntimeError(
            "chromium not installed (make setup installs it from Debian: apt-get install chromium)"
        )
    profile_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile_dir}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    result = PageResult()
    try:
        port_file = profile_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit code {process.poll()})")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        targets = []
        while not targets:
            targets = [
                t
                for t in json.loads(opener.open(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
                if t.get("type") == "page"
            ]
            if time.monotonic() > deadline:
                raise RuntimeError("chromium has no page target")
            time.sleep(0.1)
        with connect(targets[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            ids = itertools.count(1)

            def send(method: str, **params) -> int:
                message_id = next(ids)
                ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
                return message_id

            def pump(until_id: int | None = None, until_event: str | None = None, seconds: float = timeout):
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    try:
                        message = json.loads(ws.recv(timeout=max(0.05, end - time.monotonic())))
                    except TimeoutError:
                        return None
                    method = message.get("method")
                    params = message.get("params", {})
                    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                        args = " ".join(
                            str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
                        )
                        result.console_errors.append(f"console.{params['type']}: {args}")
                    elif method == "Runtime.exceptionThrown":
                        details = params.get("exceptionDetails", {})
                        result.console_errors.append(
                            f"exception: {details.get('exception', {}).get('description') or details.get('text')}"
                        )
                    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                        entry = params["entry"]
                        result.console_errors.append(
                            f"log: {entry.get('text')} {entry.get('url', '')}".strip()
                        )
                    elif method == "Network.loadingFailed":
                        result.console_errors.append(f"network: {params.get('errorText')}")
                    if until_event and method == until_event:
                        return message
                    if until_id is not None and message.get("id") == until_id:
                        if "error" in message:
                            raise RuntimeError(f"DevTools error: {message['error']}")
                        return message
                return None

            for domain in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
                pump(until_id=send(domain))
            pump(
                until_id=send(
                    "Emulation.setDeviceMetricsOverride",
                    width=width,
                    height=height,
                    deviceScaleFactor=1,
                    mobile=False,
                )
            )
            pump(until_id=send("Page.navigate", url=url))
            result.loaded = pump(until_event="Page.loadEventFired") is not None
            pump(seconds=1.0)  # late console messages
            shot = pump(until_id=send("Page.captureScreenshot", format="png", captureBeyondViewport=True))
            result.screenshot = base64.b64decode(shot["result"]["data"]) if shot else b""
            with contextlib.suppress(Exception):
                send("Browser.close")
    finally:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return result


# -- reconciliation of the stats with the files -------------------------------------------------------------
def reconcile(out: Path, summary: dict) -> tuple[list[str], int]:
    """Check the stats of a published version against its manifest and the run's work Parquet.

    Returns (problems, shards checked). Checks, for every stage and shard: rows in the stats == rows in the
    Parquet file (manifest rows for version files, the Parquet footer for work files), no Parquet file left out
    of the stats, stage totals == sum of their shards, in == out + dropped where the input is known, and
    per-shard histograms / languages / tiers summing to the shard's rows.
    """
    import pyarrow.parquet as pq

    from pipelines.stats import load

    version = out / "versions" / summary["version"]
    work = Path(summary["work"])  # run_graph files the finished run's work folder under work/done/
    manifest = json.loads((version / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    tables = load(version)
    shards, stages = tables["shards"], tables["stages"]
    problems: list[str] = []
    for row in shards.itertuples():
        if row.location == "version":
            entry = listed.get(row.path)
            rows = entry.get("rows") if entry else None
            where = f"manifest {row.path}"
        else:
            file = work / row.path
            rows = pq.ParquetFile(file).metadata.num_rows if file.is_file() else None
            where = f"work {row.path}"
        if rows != row.rows:
            problems.append(
                f"{row.stage}/{row.dataset}/{row.shard}: stats say {row.rows} rows, {where} has {rows}"
            )
        if pd_notna(row.unaccounted) and row.unaccounted != 0:
            problems.append(f"{row.stage}/{row.dataset}/{row.shard}: {row.unaccounted} documents unaccounted")
    data_files = {p for p, f in listed.items() if "rows" in f and not p.startswith("stats/")}
    in_stats = set(shards.loc[shards["location"] == "version", "path"])
    for missing in sorted(data_files - in_stats):
        problems.append(f"manifest file {missing} has no row in the stats")
    for sub in ("curate/output", "dedup/output"):
        for file in sorted((work / sub).glob("*.parquet")) if (work / sub).is_dir() else []:
            if not file.name.startswith(".") and f"{sub}/{file.name}" not in set(shards["path"]):
                problems.append(f"work file {sub}/{file.name} has no row in the stats")
    for row in stages.itertuples():
        part = shards[(shards["stage"] == row.stage) & (shards["dataset"] == row.dataset)]
        if int(part["rows"].sum()) != row.rows:
            problems.append(
                f"{row.stage}/{row.dataset}: stage rows {row.rows} != sum of shards {part['rows'].sum()}"
            )
        if pd_notna(row.unaccounted) and row.unaccounted != 0:
            problems.append(f"{row.stage}/{row.dataset}: {row.unaccounted} documents unaccounted")
    hist = tables["histograms"]
    prosocial = hist[hist["column"] == "prosocial"].groupby(["stage", "dataset", "shard"])["rows"].sum()
    langs = tables["languages"].groupby(["stage", "dataset", "shard"])["documents"].sum()
    tiers = tables["tier_shards"].groupby(["stage", "dataset", "shard"])["rows"].sum()
    for row in shards.itertuples():
        key = (row.stage, row.dataset, row.shard)
        if row.stage in ("curate", "dedup", "mix") and row.rows:
            if prosocial.get(key, 0) != row.rows:
                problems.append(
                    f"{key}: prosocial histogram holds {prosocial.get(key, 0)} of {row.rows} rows"
                )
            if langs.get(key, 0) != row.documents:
                problems.append(f"{key}: languages hold {langs.get(key, 0)} of {row.documents} documents")
        if row.stage == "mix" and tiers.get(key, 0) != row.rows:
            problems.append(f"{key}: tiers hold {tiers.get(key, 0)} of {row.rows} rows")
    return problems, len(shards)


def pd_notna(value) -> bool:
    import pandas as pd

    return value is not None and not pd.isna(value)
