"""LLM engines behind one small interface: offline vLLM (one engine per worker process) or an HTTP endpoint.

`Engine.generate(requests)` takes every request of a task at once and returns one `Completion` per request, in
order. The vLLM engine hands the whole list to one `LLM.chat` call so vLLM's scheduler keeps the device full
(continuous batching); the OpenAI-compatible engine keeps `concurrency` requests in flight, retries transient
failures with exponential backoff and jitter, and applies a timeout per request. A request that still fails
comes back as a Completion with `error` set: the caller counts it, it is never silently dropped. A prompt
longer than the model's context is refused per request (error `prompt_too_long: ...`), never the whole
batch: vLLM rejects a whole `LLM.chat` call for one such prompt, so the vLLM engine sets the offenders
aside and sends the rest again.

Engines are cached per process (`get_engine`), keyed by everything that changes the loaded model, so the Dask
tasks of a worker share one vLLM engine (~20 s to start, ~3 GB on CPU) instead of loading one each. At most
one engine is kept per process: asking for a different one closes the old one first.
"""

from __future__ import annotations

import concurrent.futures
import gc
import hashlib
import json
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from synthetic.tiny_model import resolve_model

# the prefix of a Completion's error when the engine refused the prompt for being longer than the context
PROMPT_TOO_LONG = "prompt_too_long"
# the prefix when the engine refused the request itself for another reason (its own validation)
ENGINE_REFUSED = "engine_refused"
# errors a rerun would get again: the request is attempted and final, never retried (its chunk can finish)
FINAL_ERRORS = (PROMPT_TOO_LONG, ENGINE_REFUSED)


def context_length_error(message: str) -> bool:
    """Whether an engine's refusal says the prompt does not fit (vLLM's and OpenAI's wordings)."""
    return "maximum context length" in message or "maximum model length" in message


@dataclass(frozen=True)
class Request:
    """One chat request. `id` is a content hash; it keys the request cache and derives the sampling seed."""

    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), hashable
    json_schema: str | None  # JSON text of the schema for guided decoding, or None
    temperature: float
    top_p: float
    max_tokens: int
    seed: int

    @classmethod
    def make(
        cls,
        messages: list[dict[str, str]],
        json_schema: dict[str, Any] | None,
        temperature: float,
        top_p: float,
        max_tokens: int,
        run_seed: int,
        model: str,
        salt: Any = None,
    ) -> Request:
        """`salt` (e.g. the scenario index) keeps two identical prompts apart: own id, own sampling seed."""
        msgs = tuple((m["role"], m["content"]) for m in messages)
        # key order kept: guided decoding writes properties in schema order (user before assistant, reason
        # before score), so sorting the keys would make the model answer before it reads the question
        schema_text = json.dumps(json_schema) if json_schema is not None else None
        key = json.dumps(
            [model, msgs, schema_text, temperature, top_p, max_tokens, run_seed, salt], sort_keys=True
        )
        digest = hashlib.sha256(key.encode()).hexdigest()
        return cls(digest[:32], msgs, schema_text, temperature, top_p, max_tokens, int(digest[32:40], 16))

    def chat_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def sampling_record(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


@dataclass
class Completion:
    request_id: str
    text: str
    finish_reason: str | None  # "stop", "length", ... or None on error
    output_tokens: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "text": self.text,
            "finish_reason": self.finish_reason,
            "output_tokens": self.output_tokens,
            "error": self.error,
        }


# Finish reasons of completions the engine did not finish, which a rerun asks for again (engine errors). vLLM
# aborts the requests in flight when its engine shuts down (the driver's SIGTERM releases the workers' engines
# while a task is inside `LLM.chat`) and returns them cut off with `abort`; it returns `error` for a retryable
# internal error (e.g. a grammar that failed to compile). Kept as successes, they were cached and their chunk
# saved as finished, so a rerun replayed them: 232 of 240 dialogues were lost for good, with exit 0.
UNFINISHED = {
    "abort": "aborted: the engine stopped the request before it finished (finish_reason 'abort')",
    "error": "engine_failed: the engine failed the request with a retryable error (finish_reason 'error')",
}


def finished(request_id: str, text: str, finish_reason: str | None, tokens: int) -> Completion:
    """A Completion from an engine's answer; an `UNFINISHED` finish reason makes it an engine error (retried)."""
    if finish_reason in UNFINISHED:
        return Completion(request_id, "", None, tokens, UNFINISHED[finish_reason])
    return Completion(request_id, text, finish_reason, tokens)


@dataclass
class EngineSpec:
    """Everything that decides which engine object a process needs (the engine cache key)."""

    kind: str  # "vllm" | "openai"
    model: str
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = True
    cpu_kvcache_gb: int = 1
    openai: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True, default=str)

    @classmethod
    def from_settings(cls, settings: Any) -> EngineSpec:
        return cls(
            kind=settings.engine,
            model=settings.model,
            dtype=settings.dtype,
            tensor_parallel_size=settings.tensor_parallel_size,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=settings.enforce_eager,
            cpu_kvcache_gb=settings.cpu_kvcache_gb,
            openai=settings.openai.model_dump(),
        )


OnResult = Callable[[Completion], None]


class Engine:
    """The interface both engines implement."""

    model_id: str

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Completion]:
        """One Completion per request, in order; `on_result` is called for each one when it is available:
        as each finishes (openai), or for all of them once the whole batch has finished (vllm)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the model / connections."""


# -- vLLM ---------------------------------------------------------------------------------------------------
def vllm_environment(cpu_kvcache_gb: int = 1) -> None:
    """Defaults vLLM needs on these machines (measured, see DESIGN.md); values already set are kept."""
    scratch = os.path.join(tempfile.gettempdir(), f"prosocial-vllm-{os.getuid()}")
    os.makedirs(os.path.join(scratch, "tmp"), exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cpu_kvcache_gb))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CACHE_ROOT", os.path.join(scratch, "cache"))
    os.environ.setdefault("TMPDIR", os.path.join(scratch, "tmp"))
    tempfile.tempdir = None  # re-read TMPDIR


class VLLMEngine(Engine):
    """Offline `vllm.LLM`; one `LLM.chat` call per task with every prompt, so vLLM batches them all."""

    def __init__(self, spec: EngineSpec):
        vllm_environment(spec.cpu_kvcache_gb)
        from vllm import LLM

        # vLLM's ZeroMQ sockets (ipc://) are files it never deletes: 7 per engine, and a nightly run starts
        # engines every night. Unless the user chose a folder, they go into this engine's own, removed in close().
        self._rpc_dir = None
        if "VLLM_RPC_BASE_PATH" not in os.environ:
            self._rpc_dir = os.environ["VLLM_RPC_BASE_PATH"] = tempfile.mkdtemp(prefix="rpc-")
        self.spec = spec
        self.model_id = spec.model
        path = resolve_model(spec.model)
        kwargs: dict[str, Any] = {
            "model": path,
            "dtype": spec.dtype,
            "tensor_parallel_size": spec.tensor_parallel_size,
            "max_model_len": spec.max_model_len,
            "enforce_eager": spec.enforce_eager,
            "seed": 0,
            # compact JSON: without it a weak model can pad guided JSON with whitespace until max_tokens
            "structured_outputs_config": {"backend": "xgrammar", "disable_any_whitespace": True},
        }
        from vllm.platforms import current_platform

        if current_platform.is_cpu():
            # vLLM-CPU crashes ("CPU Generator does not use offset") when a seeded request's prefill is
            # chunked across steps; whole-prompt prefill avoids it and per-request seeds keep working.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(spec.max_model_len, 8192)
        else:
            kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
        try:
            self.llm = LLM(**kwargs)
        except BaseException:
            self.close()  # its socket folder too
            raise
        self._watchdog = start_orphan_watchdog()

    def sampling_params(self, request: Request):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=json.loads(request.json_schema))
        return SamplingParams(
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            seed=request.seed,
            structured_outputs=structured,
        )

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Completion]:
        """All requests in one `LLM.chat` call (vLLM batches them); `on_result` sees the completions only
        when that call returns, because `LLM.chat` returns nothing earlier: a task killed mid-batch keeps
        none of the batch in the request cache.

        A prompt vLLM refuses (longer than `max_model_len`, or any other per-request validation error)
        fails the whole call. Then the over-long prompts are found with the model's chat template and
        tokenizer and come back as `prompt_too_long` errors, and the rest is sent again as one batch.
        Whatever still fails is split in halves until each refused request is alone, so one bad prompt
        never costs the others their completions. The happy path pays nothing for this.
        """
        if not requests:
            return []
        from vllm.exceptions import VLLMValidationError

        results: dict[str, Completion] = {}
        try:
            results = self._chat(requests)
        except VLLMValidationError:
            limit = self.spec.max_model_len
            send = []
            for request in requests:
                n = self.prompt_tokens(request)
                if n >= limit:  # vLLM needs room for at least one output token
                    results[request.id] = Completion(
                        request.id,
                        "",
                        None,
                        0,
                        f"{PROMPT_TOO_LONG}: the prompt has {n} tokens, max_model_len is {limit}",
                    )
                else:
                    send.append(request)
            results.update(self._chat_isolating(send))
        completions = [results[r.id] for r in requests]
        if on_result is not None:
            for completion in completions:
                on_result(completion)
        return completions

    def _chat(self, requests: list[Request]) -> dict[str, Completion]:
        if not requests:
            return {}
        outputs = self.llm.chat(
            [r.chat_messages() for r in requests],
            [self.sampling_params(r) for r in requests],
            use_tqdm=False,
        )
        results = {}
        for request, output in zip(requests, outputs, strict=True):
            choice = output.outputs[0]
            results[request.id] = finished(
                request.id, choice.text, choice.finish_reason, len(choice.token_ids)
            )
        return results

    def _chat_isolating(self, requests: list[Request]) -> dict[str, Completion]:
        """`_chat`, splitting the batch in halves while vLLM refuses it, down to the refused requests."""
        from vllm.exceptions import VLLMValidationError

        try:
            return self._chat(requests)
        except VLLMValidationError as exc:
            if len(requests) == 1:
                message = str(exc)
                prefix = PROMPT_TOO_LONG if context_length_error(message) else ENGINE_REFUSED
                error = f"{prefix}: {message}"
                return {requests[0].id: Completion(requests[0].id, "", None, 0, error[:500])}
            half = len(requests) // 2
            return {**self._chat_isolating(requests[:half]), **self._chat_isolating(requests[half:])}

    def prompt_tokens(self, request: Request) -> int:
        """The prompt's length in tokens, rendered with the model's chat template as `LLM.chat` renders it."""
        tokenizer = self.llm.get_tokenizer()
        text = tokenizer.apply_chat_template(
            request.chat_messages(), tokenize=False, add_generation_prompt=True
        )
        return len(tokenizer.encode(text, add_special_tokens=False))

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        self.llm = None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        gc.collect()
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None and watchdog.poll() is None:
            watchdog.kill()
            watchdog.wait()
        rpc_dir = getattr(self, "_rpc_dir", None)
        if rpc_dir:
            shutil.rmtree(rpc_dir, ignore_errors=True)
            if os.environ.get("VLLM_RPC_BASE_PATH") == rpc_dir:  # children started later (a vLLM server)
                del os.environ["VLLM_RPC_BASE_PATH"]  # must not inherit a folder that is gone


_WATCHDOG = """
import os, sys, time
import psutil
parent = int(sys.argv[1])
procs = []
for spec in sys.argv[2:]:
    pid, created = spec.split(":")
    try:
        proc = psutil.Process(int(pid))
        if abs(proc.create_time() - float(created)) < 1e-3:
            procs.append(proc)
    except psutil.Error:
        pass
while psutil.pid_exists(parent) and psutil.Process(parent).status() != psutil.STATUS_ZOMBIE:
    time.sleep(1.0)
for proc in procs:
    try:
        proc.kill()
    except psutil.Error:
        pass
"""


def start_orphan_watchdog():
    """Kill this process's vLLM children (EngineCore, ...) if this process dies without closing the engine.

    vLLM's engine-core processes outlive a Dask worker that is killed (or torn down without a graceful engine
    shutdown) and would hold ~3 GB each until someone notices. A tiny separate process (its own session, so a
    signal to our process group does not take it down first) waits for our pid to disappear, then kills the
    children it was given, by pid and creation time (never a recycled pid).
    """
    import subprocess
    import sys

    import psutil

    children = psutil.Process().children(recursive=True)
    if not children:
        return None
    specs = [f"{c.pid}:{c.create_time()}" for c in children]
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), *specs],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


# -- OpenAI-compatible HTTP ----------------------------------------------------------------------------------
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIEngine(Engine):
    """Chat completions over HTTP with bounded concurrency, retries with backoff, and per-request timeouts."""

    def __init__(self, spec: EngineSpec):
        import httpx

        options = spec.openai
        self.spec = spec
        self.model_id = spec.model
        self.base_url = options.get("base_url", "http://127.0.0.1:8000/v1").rstrip("/")
        self.concurrency = int(options.get("concurrency", 8))
        self.max_retries = int(options.get("max_retries", 4))
        self.backoff_s = float(options.get("backoff_s", 1.0))
        self.structured = options.get("structured", "json_schema")
        key = os.environ.get(options.get("api_key_env", "OPENAI_API_KEY") or "", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(
            timeout=httpx.Timeout(float(options.get("timeout_s", 300.0))),
            headers=headers,
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )
        self.attempts = 0  # HTTP requests sent, retries included (tests and logs read it)
        self._lock = threading.Lock()

    def _body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": request.chat_messages(),
            "temperature": request.temperature,
            "top_p": request.top_p,
            "max_tokens": request.max_tokens,
            "seed": request.seed,
        }
        if request.json_schema is not None and self.structured == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": json.loads(request.json_schema), "strict": True},
            }
        return body

    def _one(self, request: Request) -> Completion:
        import httpx

        body = self._body(request)
        error = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                delay = self.backoff_s * (2 ** (attempt - 1))
                time.sleep(delay * (0.5 + random.random() / 2))
            with self._lock:
                self.attempts += 1
            try:
                response = self.client.post(f"{self.base_url}/chat/completions", json=body)
            except httpx.TimeoutException as exc:
                error = f"timeout ({type(exc).__name__})"
                continue
            except httpx.TransportError as exc:
                error = f"connection error ({type(exc).__name__}: {exc})"
                continue
            if response.status_code in RETRY_STATUS:
                error = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code == 400 and context_length_error(response.text):
                    error = f"{PROMPT_TOO_LONG}: {error}"  # vLLM's and OpenAI's wording
                return Completion(request.id, "", None, 0, error)
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                tokens = int((data.get("usage") or {}).get("completion_tokens") or 0)
                completion = finished(request.id, text, choice.get("finish_reason"), tokens)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                return Completion(
                    request.id, "", None, 0, f"malformed response ({type(exc).__name__}: {exc})"
                )
            if (
                completion.error is not None
            ):  # aborted or failed by the server (draining, restarting): transient
                error = completion.error
                continue
            return completion
        return Completion(request.id, "", None, 0, f"gave up after {self.max_retries + 1} attempts: {error}")

    def generate(self, requests: list[Request], on_result: OnResult | None = None) -> list[Completion]:
        results: dict[str, Completion] = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, r): r for r in requests}
            for future in concurrent.futures.as_completed(futures):
                completion = future.result()
                results[futures[future].id] = completion
                if on_result is not None:
                    on_result(completion)
        return [results[r.id] for r in requests]

    def close(self) -> None:
        self.client.close()


# -- per-process cache -----------------------------------------------------------------------------------
_ENGINE: tuple[str, Engine] | None = None
_ENGINE_LOCK = threading.Lock()


def make_engine(spec: EngineSpec) -> Engine:
    if spec.kind == "vllm":
        return VLLMEngine(spec)
    if spec.kind == "openai":
        return OpenAIEngine(spec)
    raise ValueError(f"synthetic.engine: unknown engine '{spec.kind}' (expected vllm or openai)")


def get_engine(spec: EngineSpec) -> Engine:
    """This process's engine for `spec`, loaded on first use and reused by every later task."""
    global _ENGINE
    key = spec.key()
    with _ENGINE_LOCK:
        if _ENGINE is not None and _ENGINE[0] == key:
            return _ENGINE[1]
        if _ENGINE is not None:
            _ENGINE[1].close()
            _ENGINE = None
        engine = make_engine(spec)
        _ENGINE = (key, engine)
        return engine


def loaded_engine_key() -> str | None:
    """The cache key of the engine this process holds, if any (tests check reuse with it)."""
    return _ENGINE[0] if _ENGINE is not None else None


def close_engine() -> None:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is not None:
            _ENGINE[1].close()
            _ENGINE = None
