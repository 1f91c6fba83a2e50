"""Real CPU vLLM on the tiny model with a small `max_model_len`: a prompt longer than the context is refused
on its own (`prompt_too_long`), and the other prompts of the batch still get their completions.

One engine for the module (~20 s start), closed at the module's end so it is never alive at the same time as
another module's engine.
"""

from __future__ import annotations

import pytest

from synthetic.settings import SyntheticSettings

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def engine(tiny_model):
    from synthetic.engine import EngineSpec, close_engine, get_engine

    spec = EngineSpec(kind="vllm", model=SyntheticSettings().model, max_model_len=MAX_MODEL_LEN)
    yield get_engine(spec)
    close_engine()


def request(text: str, salt: int):
    from synthetic.engine import Request

    return Request.make(
        [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": text}],
        None,
        0.7,
        0.9,
        8,
        run_seed=0,
        model="tiny",
        salt=salt,
    )


def test_an_over_long_prompt_is_refused_alone(engine):
    from synthetic.validate import parse_dialogue

    long_text = " ".join(f"word{i}" for i in range(MAX_MODEL_LEN))  # well over 512 tokens
    requests = [
        request("Say hello to my neighbour.", 0),
        request(long_text, 1),
        request("How do I thank a friend?", 2),
    ]
    seen = []
    completions = engine.generate(requests, on_result=seen.append)
    assert engine.prompt_tokens(requests[1]) > MAX_MODEL_LEN > engine.prompt_tokens(requests[0])
    assert [c.request_id for c in completions] == [r.id for r in requests]
    assert {c.request_id for c in seen} == {r.id for r in requests}
    refused = completions[1]
    assert refused.error is not None and refused.error.startswith("prompt_too_long: the prompt has ")
    assert parse_dialogue(refused.text, refused.finish_reason, refused.error).reason == "prompt_too_long"
    for completion in (completions[0], completions[2]):
        assert completion.error is None and completion.output_tokens > 0 and completion.finish_reason
    # the same requests without the long one give the same texts: seeded, and sent as one batch again
    again = engine.generate([requests[0], requests[2]])
    assert [c.text for c in again] == [completions[0].text, completions[2].text]


def test_prompt_length_matches_what_vllm_counts(engine):
    r = request("Please help me plan a difficult conversation with my sister about money.", 3)
    [output] = engine.llm.chat([r.chat_messages()], [engine.sampling_params(r)], use_tqdm=False)
    assert engine.prompt_tokens(r) == len(output.prompt_token_ids)


def test_refusals_the_tokenizer_misses_are_isolated_by_splitting_the_batch(engine):
    """The fallback that does not trust our token count: vLLM's own refusal, found by halving the batch."""
    long_text = " ".join(f"word{i}" for i in range(MAX_MODEL_LEN))
    requests = [request(f"Say {i} kind words.", 10 + i) for i in range(4)]
    requests.insert(2, request(long_text, 20))
    results = engine._chat_isolating(requests)
    refused = results[requests[2].id]
    assert refused.error.startswith("prompt_too_long: ") and "maximum" in refused.error
    assert all(
        results[r.id].error is None and results[r.id].output_tokens > 0
        for r in requests
        if r is not requests[2]
    )
