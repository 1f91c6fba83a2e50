"""The built-in tiny model (tokenizer, chat template, weights) and model-id resolution."""

from __future__ import annotations

import pytest

from synthetic.tiny_model import TINY_MODEL_ID, ensure_tiny_llama, resolve_model


def test_tiny_model_is_a_real_hf_folder_with_a_chat_template(tiny_model, model_cache):
    from transformers import AutoConfig, AutoTokenizer

    assert resolve_model(TINY_MODEL_ID) == str(tiny_model)
    assert ensure_tiny_llama(model_cache) == tiny_model  # cached: built once
    config = AutoConfig.from_pretrained(tiny_model)
    assert config.model_type == "llama" and config.hidden_size // config.num_attention_heads >= 32
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = 'Olá! {"exchanges": [{"user": "é ü 東京"}]}'
    assert (
        tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    )  # byte-level: lossless
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        tokenize=False,
        add_generation_prompt=False,
    )
    assert chat == "<s><|user|>\nhi<|end|>\n<|assistant|>\nhello<|end|>\n"


def test_model_ids_pass_through():
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert resolve_model("/models/llama") == "/models/llama"
    with pytest.raises(ValueError, match="unknown builtin"):
        resolve_model("builtin:gpt-5")
    with pytest.raises(ValueError, match="no model configured"):
        resolve_model("")


def test_default_settings_pass_preflight():
    from pipelines.config import load_config
    from pipelines.synthesize import preflight

    config = load_config(None, [])
    assert config.synthetic.model == TINY_MODEL_ID and config.synthetic.target > 0
    preflight(config.synthetic)
