"""Settings of the synthetic stage (the `synthetic:` section of the run config).

`model`, `target`, `min_score` (and the root `out`) are command-line contracts of `corpus synth`; everything
else has a default that runs offline on a fresh clone with CPU vLLM and the built-in tiny random model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from classifiers.yamlconfig import did_you_mean


@lru_cache(maxsize=1)
def _lid_labels() -> frozenset[str]:
    """The codes lid.176 can return; empty when the model is missing (curate's preflight says so)."""
    from classifiers.langid import lid_languages, lid_model_path

    try:
        return frozenset(lid_languages(lid_model_path()))
    except (FileNotFoundError, ValueError, OSError):
        return frozenset()


class SamplingSettings(BaseModel):
    """Sampling of the generator. Each request also gets its own seed, derived from the run seed and its id."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(
        3072, ge=16, description="Output token cap per dialogue (a truncated JSON is rejected)."
    )


class OpenAISettings(BaseModel):
    """The `openai` engine: any OpenAI-compatible chat-completions endpoint (e.g. `vllm serve`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_url: str = Field(
        "http://127.0.0.1:8000/v1", description="Endpoint root (the part before /chat/completions)."
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable holding the API key (may be unset)."
    )
    concurrency: int = Field(8, ge=1, description="Requests in flight at once per task.")
    timeout_s: float = Field(300.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    max_retries: int = Field(
        4, ge=0, description="Retries of a request on timeouts, connection errors, 429 and 5xx."
    )
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry (with jitter).")
    structured: Literal["json_schema", "none"] = Field(
        "json_schema",
        description="Send the JSON schema as response_format (vLLM serve and most servers accept it).",
    )


class SyntheticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = Field(True, description="Run the synthesize stage inside `corpus run`.")
    model: str = Field(
        "builtin:tiny-random-llama",
        description="Hub id or local path of the generator model; builtin:tiny-random-llama builds a tiny random "
        "model offline (noise: validation rejects nearly everything, which exercises the code path).",
    )
    target: int = Field(
        16,
        ge=0,
        description="Dialogues attempted; a refresh attempts only what the runs since the last `corpus run` have not.",
    )
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="One classifier threshold for every dimension.")
    min_scores: dict[str, float] = Field(
        default_factory=dict,
        description="Per-dimension thresholds that override min_score, e.g. {care: 0.7}.",
    )

    # -- engine -------------------------------------------------------------------------------------------
    engine: Literal["vllm", "openai"] = Field(
        "vllm", description="Offline vLLM in each worker, or an HTTP endpoint."
    )
    dtype: str = Field("auto", description="vLLM dtype (auto, bfloat16, float16, float32).")
    tensor_parallel_size: int = Field(1, ge=1, description="vLLM tensor-parallel size (GPUs per engine).")
    max_model_len: int = Field(4096, ge=256, description="vLLM context length (prompt + output tokens).")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="vLLM share of GPU memory (GPU only)."
    )
    enforce_eager: bool = Field(True, description="Skip CUDA-graph / torch.compile capture (faster start).")
    cpu_kvcache_gb: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE (GiB) when vLLM runs on CPU.")
    openai: OpenAISettings = Field(default_factory=OpenAISettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)

    # -- scenarios ------------------------------------------------------------------------------------------
    grid: str = Field(
        "configs/synthetic/grid.yaml", description="Scenario grid YAML (relative: cwd, then repo)."
    )
    dimensions: list[str] = Field(
        default_factory=list, description="Dimensions to generate for; empty: the grid's."
    )
    seed: int = Field(0, description="Seed of scenario sampling and of every request's sampling seed.")
    chunk_size: int = Field(
        256,
        ge=1,
        description="Dialogues per task: one vLLM batch and one resumable unit. Keep it large (>= 256): "
        "smaller batches leave the device idle (64 dialogues in 4 chunks ran at 0.46x the one-batch rate on CPU).",
    )
    grounding_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of scenarios given a document excerpt."
    )
    grounding_input: str = Field(
        "",
        description="Scored Parquet glob/folder to take excerpts from; empty: this run's dedup/curate output.",
    )
    grounding_top_k: int = Field(
        200, ge=1, description="Excerpts come from the top-K documents by `prosocial`."
    )
    excerpt_chars: int = Field(800, ge=50, description="Longest grounding excerpt, in characters.")

    # -- generation and validation --------------------------------------------------------------------------
    min_turns: int = Field(4, ge=2, description="Fewest messages (user and assistant alternate, user first).")
    max_turns: int = Field(8, ge=2, description="Most messages; also the JSON schema's maxItems.")
    min_chars: int = Field(20, ge=1, description="Shortest message, in characters.")
    max_chars: int = Field(600, ge=20, description="Longest message; also the JSON schema's maxLength.")
    language: str = Field("en", description="Expected lid.176 language of every message.")
    min_language_score: float = Field(0.5, ge=0.0, le=1.0, description="Lowest lid.176 probability accepted.")
    character_checks: bool = Field(
        True, description="Reject junk code points and, for Latin-script languages, letters of other scripts."
    )
    near_dup_threshold: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="MinHash Jaccard above which a dialogue is a near-duplicate of an earlier one.",
    )
    strict: bool = Field(
        False, description="Fail the stage when a task fails instead of counting and continuing."
    )

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str) -> str:
        """Every message is checked against this lid.176 code: `english` or `EN` would reject every dialogue."""
        labels = _lid_labels()
        if labels and value not in labels:
            raise ValueError(
                "expected a lid.176 language code such as 'en', 'de' or 'fr', "
                f"got {value!r}{did_you_mean(value.lower(), labels, n=3)}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> SyntheticSettings:
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) must be <= max_turns ({self.max_turns})")
        if 2 * (self.max_turns // 2) < self.min_turns:
            # dialogues are whole user/assistant exchanges: an even number of turns
            raise ValueError(
                f"min_turns ({self.min_turns}) to max_turns ({self.max_turns}) holds no even number of turns"
            )
        if self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be <= max_chars ({self.max_chars})")
        bad = {k: v for k, v in self.min_scores.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"min_scores: thresholds must be in [0, 1], got {bad}")
        return self

    def threshold(self, dimension: str) -> float:
        """The classifier threshold of one dimension (min_scores overrides min_score)."""
        return float(self.min_scores.get(dimension, self.min_score))
