"""Inputs and helpers of the refresh tests: distinct English JSONL documents, a planted near-duplicate, a
one-tier profile (every kept document appears once in the mixture), and `corpus` subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from openai_stub import ChatServer, completion_body

CORPUS = str(Path(sys.executable).with_name("corpus"))

NAMES = [
    "Amara",
    "Bruno",
    "Chen",
    "Dalia",
    "Emeka",
    "Farah",
    "Goran",
    "Hana",
    "Ivo",
    "Jun",
    "Kofi",
    "Lena",
    "Mateo",
    "Nadia",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sami",
    "Tomas",
    "Uma",
    "Viktor",
    "Wen",
    "Yara",
    "Zeno",
    "Aiko",
    "Bela",
    "Cyra",
    "Dov",
    "Elif",
]
ADJECTIVES = [
    "small",
    "heavy",
    "bright",
    "old",
    "warm",
    "blue",
    "quiet",
    "sturdy",
    "spare",
    "clean",
    "yellow",
    "wooden",
    "handmade",
    "second",
    "donated",
    "folded",
]
THINGS = [
    "blankets",
    "books",
    "bicycles",
    "seedlings",
    "lanterns",
    "recipes",
    "maps",
    "tools",
    "letters",
    "paintings",
    "coats",
    "radios",
    "quilts",
    "chairs",
    "kites",
    "baskets",
    "tables",
    "jars",
    "shoes",
    "benches",
]
VERBS = [
    "repaired",
    "collected",
    "shared",
    "sorted",
    "delivered",
    "painted",
    "cleaned",
    "labelled",
    "carried",
    "donated",
    "built",
    "mended",
    "packed",
]
PLACES = [
    "library",
    "harbour",
    "mill",
    "clinic",
    "market",
    "school",
    "garden",
    "river",
    "bakery",
    "station",
    "kitchen",
    "museum",
    "farm",
    "chapel",
    "square",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
REASONS = [
    "neighbours asked for help",
    "the winter was coming",
    "a family had moved in",
    "the old ones had broken",
    "the children wanted to learn",
    "the shelter was full",
    "a storm had passed",
    "the festival was near",
    "the roof was leaking",
    "a teacher had an idea",
    "the bus was late again",
    "the new clinic opened",
]


def document(seed: int) -> str:
    """A distinct ~180-word English report (passes the curate filters; 5-gram Jaccard to others < 0.1)."""
    rng = random.Random(seed)
    lines = [f"Report {seed} from the volunteers of district {rng.randint(100, 999)}."]
    for reason in rng.sample(REASONS, 10):  # each reason once: no repeated phrases inside a document
        lines.append(
            f"{rng.choice(NAMES)} and {rng.choice(NAMES)} {rng.choice(VERBS)} {rng.randint(2, 99)} "
            f"{rng.choice(ADJECTIVES)} {rng.choice(THINGS)} at the {rng.choice(PLACES)} on {rng.choice(DAYS)}, "
            f"because {reason}."
        )
    return "\n".join(lines)


def near_duplicate(text: str) -> str:
    """The same report with one word changed: a near-duplicate (MinHash), not an exact one."""
    words = text.split(" ")
    words[len(words) // 2] = "gladly"
    return " ".join(words)


def write_shard(path: Path, seeds: list[int], extra: list[dict[str, Any]] = ()) -> Path:
    rows = [{"text": document(s), "url": f"https://volunteers.example/{s}"} for s in seeds] + list(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


PROFILE = """\
name: flat
description: every document once (tests)
weights: {care: 1.0, respect: 1.0, constructiveness: 1.0, virtue: 1.0}
tiers:
  - {name: all, min_score: 0.0, factor: 1.0}
"""


def base_overrides(
    out: Path, inputs: Path, bundle: Path, profile: Path, address: str, *extra: str
) -> list[str]:
    return [
        f"out={out}",
        f"input={inputs}",
        f"classifier.bundle={bundle}",
        f"profile={profile}",
        "cluster.kind=address",
        f"cluster.address={address}",
        "synthetic.enabled=false",
        *extra,
    ]


def corpus(
    command: str, overrides: list[str], fault: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run `corpus <command>` in its own process group; with `fault`, it SIGKILLs itself at that point."""
    env = dict(os.environ)
    env.pop("PROSOCIAL_FAULT", None)
    if fault:
        env["PROSOCIAL_FAULT"] = fault
    proc = subprocess.Popen(
        [CORPUS, command, *overrides, "--log-level", "WARNING"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with_group_killed(proc)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def with_group_killed(proc: subprocess.Popen) -> None:
    """Kill what is left of the process group we started (a SIGKILLed driver cannot clean up after itself)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def summary_of(result: subprocess.CompletedProcess) -> dict[str, Any]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    )
    return json.loads(result.stdout)


def pretrain_texts(version: Path) -> list[str]:
    files = sorted((version / "pretrain").glob("*.parquet"))
    return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]


# -- a scripted OpenAI-compatible endpoint for the synthetic top-up --------------------------------------------
def dialogue_json(seed: int) -> str:
    """A distinct four-turn English dialogue in the generator's `exchanges` format, chosen by `seed`.

    Messages reuse the report sentences, whose slots make any two dialogues far from near-duplicates."""
    lines = document(seed).split("\n")[1:]
    exchanges = [
        {"user": f"{lines[0]} How can we help them more?", "assistant": f"Thank you for caring. {lines[1]}"},
        {"user": f"{lines[2]} Is that kind enough?", "assistant": f"Yes, and please be patient. {lines[3]}"},
    ]
    return json.dumps({"exchanges": exchanges})


class DialogueServer(ChatServer):
    """An OpenAI-style chat endpoint answering every request with `dialogue_json(request seed)`."""

    def __init__(self):
        super().__init__(
            lambda body, n: (200, completion_body(dialogue_json(int(body.get("seed") or 0)), 80), 0.0)
        )

    @property
    def requests(self) -> int:
        return self.count
