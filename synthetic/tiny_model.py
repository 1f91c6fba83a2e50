"""A tiny random-initialised Llama with its own tokenizer and chat template, built offline at run time.

No generative weights can be downloaded on the machines this project is developed and tested on, yet the
synthetic stage must run end to end there (tests, `make corpus` on a fresh clone). This module builds a real
Hugging Face model folder that vLLM loads like any other: a 2-layer Llama with random weights, a byte-level
BPE tokenizer trained on a small built-in English text (so any Unicode text round-trips), and a chat
template. Its output is noise, which is what the validation checks are expected to reject, with reasons.

The folder is built once per machine into a cache folder (atomically: a half-built folder is never visible),
so several Dask workers asking for it at once all get the same finished copy. Select it with the model id
`builtin:tiny-random-llama` anywhere a model id or path is accepted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

BUILTIN_PREFIX = "builtin:"
TINY_MODEL_ID = "builtin:tiny-random-llama"
# Bump when the recipe changes, so stale cache folders are never reused.
TINY_MODEL_VERSION = "v2"

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# A Jinja chat template in the style of Hugging Face's: one turn per message, then the assistant header.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Training text for the tokenizer: English prose plus the JSON punctuation guided decoding emits, so that
# common words and JSON structure get their own tokens. Bytes never seen still encode (byte-level BPE).
_TOKENIZER_TEXT = """
The assistant listens carefully, asks what the person wants, and respects their right to decide.
It offers options with honest uncertainty, admits mistakes and corrects itself, and presents several views.
People talk about work, family, health, civic life, online communities, learning and ecology.
A user says: I feel overwhelmed at work and I do not know whether to talk to my manager.
The assistant replies: That sounds hard. What would a good outcome look like for you?
Kindness, empathy, support and hope. Civility, politeness and respect. Reasoned, constructive dialogue.
Honesty, fairness and responsibility. Epistemic humility, autonomy support, truth-seeking, pluralism.
{"exchanges": [{"user": "Hello, can you help?", "assistant": "Hi, what would help most right now?"}]}
{"score": 3, "reason": "The text shows care for others."} 0 1 2 3 4 5 6 7 8 9 , . ; : ! ? ' " ( ) [ ] { }
"""


def cache_root() -> Path:
    """`PROSOCIAL_MODEL_CACHE`, else `$XDG_CACHE_HOME/prosocial-corpus/models` (default ~/.cache/...)."""
    env = os.environ.get("PROSOCIAL_MODEL_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "prosocial-corpus" / "models"


def build_tiny_llama(folder: str | Path, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Write a tiny random Llama (config, safetensors weights, tokenizer, chat template) into `folder`.

    Deterministic for a given seed. Takes a few seconds on one CPU core; the folder is about 1 MB.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([line for line in _TOKENIZER_TEXT.splitlines() if line.strip()] * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "</s>"],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,  # head_dim 32: the smallest head size vLLM's CPU attention supports
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder, safe_serialization=True)
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": fast.bos_token_id, "eos_token_id": fast.eos_token_id, "do_sample": True})
    )
    (folder / "README.md").write_text(
        "Tiny random-initialised Llama built by synthetic/tiny_model.py for offline tests. Output is noise.\n"
    )
    return folder


def ensure_tiny_llama(root: str | Path | None = None) -> Path:
    """Return the cached tiny model folder, building it first if needed (atomic, safe under concurrency)."""
    root = Path(root) if root else cache_root()
    target = root / f"tiny-random-llama-{TINY_MODEL_VERSION}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-random-llama-", dir=root))
    try:
        build_tiny_llama(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache is shared by every worker process
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished first: use its copy
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(model: str) -> str:
    """Map a model id to what vLLM/transformers load: `builtin:*` to a built folder, else unchanged.

    Hub ids (`org/name`) and local paths pass through untouched; vLLM resolves both.
    """
    if model.startswith(BUILTIN_PREFIX):
        if model != TINY_MODEL_ID:
            raise ValueError(f"unknown builtin model '{model}' (known: {TINY_MODEL_ID})")
        return str(ensure_tiny_llama())
    if not model:
        raise ValueError(
            f"no model configured: set synthetic.model to a hub id, a local path or {TINY_MODEL_ID}"
        )
    return model
