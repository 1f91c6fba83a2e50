"""Inputs that used to fail whole chunks or slip through validation (reviewer reproductions): lone surrogates,
a check crashing on one dialogue, system-prompt echoes, U+FFFD, over-long prompts refused by an HTTP engine.

The chunk tests run `run_chunk` with the openai engine against a real HTTP server on 127.0.0.1, real lid.176
and the real tiny classifier bundle, and write the rows with the stage's Parquet schema.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from openai_stub import completion_body

from synthetic.settings import OpenAISettings, SyntheticSettings
from synthetic.validate import character_reasons, leakage, parse_dialogue

PAIRS = [
    (
        "My neighbour is struggling after her husband died and I do not know how to help her.",
        "Thank you for caring about her. You could ask what would help, and offer specific support like a meal.",
    ),
    (
        "I brought soup and she cried. Was that wrong of me?",
        "Not at all, tears can mean she felt cared for. Please be gentle with yourself, and keep visiting her.",
    ),
]
OTHER = [
    (
        "Our team keeps missing deadlines and my manager blames me in meetings every single week.",
        "That sounds stressful. Perhaps ask for a short meeting to understand what she expects, and share your view.",
    ),
    (
        "I am worried she will get angry if I bring it up with her directly.",
        "That is understandable. You know her best, so consider whether email or a talk feels safer; it is your choice.",
    ),
]


def dialogue(pairs) -> str:
    return json.dumps({"exchanges": [{"user": u, "assistant": a} for u, a in pairs]})


def turns(pairs) -> list[dict[str, str]]:
    out = []
    for u, a in pairs:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out


# a lone surrogate as a JSON escape inside the completion text (what the reviewer saw replayed from the cache)
ESCAPED_SURROGATE = dialogue(
    [(PAIRS[0][0], PAIRS[0][1] + " \ud800 and some more words here"), PAIRS[1]]
)  # json.dumps writes the lone surrogate as the escape \ud800
# the same, but the surrogate is a real character of the completion text (an endpoint that JSON-escaped it in
# its HTTP body, which httpx decodes to a lone surrogate in `content`)
RAW_SURROGATE = dialogue(PAIRS).replace("offer specific", "offer \ud800 specific")


def test_lone_surrogates_are_invalid_unicode():
    assert "\\ud800" in ESCAPED_SURROGATE and ESCAPED_SURROGATE.isascii()
    assert parse_dialogue(ESCAPED_SURROGATE, "stop", None).reason == "invalid_unicode"
    assert parse_dialogue(RAW_SURROGATE, "stop", None).reason == "invalid_unicode"
    legacy = json.dumps({"turns": [{"role": "user\udfff", "content": "hello there"}]})
    assert parse_dialogue(legacy, "stop", None).reason == "invalid_unicode"
    # a surrogate *pair* escape is a valid character (an emoji), not junk
    emoji = dialogue([(PAIRS[0][0] + " \U0001f600", PAIRS[0][1]), PAIRS[1]])
    assert "\\ud83d\\ude00" in emoji and parse_dialogue(emoji, "stop", None).reason is None


def chunk_settings(server, n: int, **update) -> SyntheticSettings:
    return SyntheticSettings(
        engine="openai",
        model="test-model",
        target=n,
        chunk_size=n,
        min_score=0.0,
        openai=OpenAISettings(base_url=server.base_url, concurrency=2, max_retries=0),
        **update,
    )


def run_scripted_chunk(chat_server, contents: list, cache, bundle, **update):
    """run_chunk on an HTTP server answering request i (in scenario order) with contents[i]: a completion
    text, or a (status, body) pair."""
    from synthetic.engine import EngineSpec
    from synthetic.generate import make_requests, run_chunk
    from synthetic.scenarios import ScenarioSampler, load_grid

    by_seed: dict[int, object] = {}

    def respond(body, n):
        answer = by_seed[body["seed"]]
        if isinstance(answer, tuple):
            return answer[0], answer[1], 0
        return 200, completion_body(answer, 50), 0

    server = chat_server(respond)
    settings = chunk_settings(server, len(contents), **update)
    grid = load_grid(settings.grid)
    sampler = ScenarioSampler(grid, seed=0)
    requests = make_requests(settings, grid, sampler.sample_range(0, len(contents)))
    by_seed.update({r.seed: c for r, c in zip(requests, contents, strict=True)})
    result = run_chunk(settings, grid, sampler, 0, cache, bundle, EngineSpec.from_settings(settings))
    return server, result


def write_rows(result, path):
    """What pipelines/synthesize.py does with a chunk's rows: the attempts schema, one Parquet file."""
    from synthetic.schema import dialogue_schema

    table = pa.Table.from_pylist(result.rows, schema=dialogue_schema(result.dimensions, attempts=True))
    pq.write_table(table, path)
    return pq.read_table(path).to_pylist()


def test_a_lone_surrogate_rejects_its_dialogue_not_the_chunk(chat_server, tiny_bundle_path, tmp_path):
    contents = [dialogue(PAIRS), ESCAPED_SURROGATE, RAW_SURROGATE, dialogue(OTHER)]
    cache = tmp_path / "cache.jsonl"
    server, result = run_scripted_chunk(chat_server, contents, cache, tiny_bundle_path)
    reasons = [r["validation"]["reasons"] for r in result.rows]
    assert reasons[1] == ["invalid_unicode"] and reasons[2] == ["invalid_unicode"]
    assert reasons[0] == [] and reasons[3] == [], reasons  # the others are judged as usual
    assert result.rows[0]["validation"]["language"] == "en" and result.rows[0]["ps_care"] is not None
    assert result.counts["reason:invalid_unicode"] == 2 and result.counts["passed_checks"] == 2
    rows = write_rows(result, tmp_path / "chunk.parquet")
    assert "\\ud800" in rows[2]["raw"]  # stored visibly escaped: Parquet takes no lone surrogate

    # the cache replays both bad completions (they are deterministic answers, not transport errors) and the
    # verdicts are the same, without a request
    again = run_chunk_from_cache(server, result, cache, tiny_bundle_path, len(contents))
    assert again.counts["generated"] == 0 and again.counts["cached"] == 4
    assert [r["validation"]["reasons"] for r in again.rows] == reasons


def run_chunk_from_cache(server, result, cache, bundle, n):
    from synthetic.engine import EngineSpec
    from synthetic.generate import run_chunk
    from synthetic.scenarios import ScenarioSampler, load_grid

    settings = chunk_settings(server, n)
    grid = load_grid(settings.grid)
    return run_chunk(
        settings, grid, ScenarioSampler(grid, seed=0), 0, cache, bundle, EngineSpec.from_settings(settings)
    )


def test_a_check_crashing_on_one_dialogue_rejects_only_that_dialogue(
    chat_server, tiny_bundle_path, tmp_path, monkeypatch
):
    """An input no check foresaw (simulated: fastText and the classifier blow up on one marker text)."""
    import synthetic.generate as generate
    from classifiers.bundle import cached_bundle

    real_language, bundle = generate.language_reasons, cached_bundle(tiny_bundle_path)
    real_score = type(bundle).score

    def language_reasons(dialogues, *args):
        if any("BOOM" in t["content"] for d in dialogues for t in d):
            raise TypeError("multilinePredict(): incompatible function arguments")
        return real_language(dialogues, *args)

    def score(self, texts, *args, **kwargs):
        if any("ZAPZAP" in t for t in texts):
            raise ValueError("the classifier cannot read this")
        return real_score(self, texts, *args, **kwargs)

    monkeypatch.setattr(generate, "language_reasons", language_reasons)
    monkeypatch.setattr(type(bundle), "score", score)
    boom = [(PAIRS[0][0] + " BOOM", PAIRS[0][1]), PAIRS[1]]
    zap = [OTHER[0], (OTHER[1][0], OTHER[1][1] + " ZAPZAP")]
    contents = [dialogue(PAIRS), dialogue(boom), dialogue(zap), dialogue(OTHER)]
    _, result = run_scripted_chunk(chat_server, contents, tmp_path / "cache.jsonl", tiny_bundle_path)
    reasons = [r["validation"]["reasons"] for r in result.rows]
    assert reasons == [[], ["validation_error"], ["validation_error"], []]
    assert result.rows[1]["validation"]["language"] is None and result.rows[1]["ps_care"] is not None
    assert result.rows[2]["validation"]["language"] == "en" and result.rows[2]["ps_care"] is None
    assert result.rows[0]["validation"]["language"] == "en" and result.rows[3]["ps_care"] is not None
    notes = "\n".join(result.notes)
    assert "language check failed: TypeError: multilinePredict()" in notes
    assert "classifier check failed: ValueError" in notes
    write_rows(result, tmp_path / "chunk.parquet")


def test_an_echo_of_the_system_prompt_is_template_leakage(chat_server, tmp_path):
    from synthetic.scenarios import SYSTEM_PROMPT

    assert "example conversations" in SYSTEM_PROMPT
    echo = [
        PAIRS[0],
        (PAIRS[1][0], "Sure. I write realistic example conversations between a user and an AI assistant."),
    ]
    # the plural of the fixed marker, without 8 words of any prompt
    plural = [PAIRS[0], (PAIRS[1][0], "Here are two example conversations, as you asked me for earlier.")]
    assert leakage(turns(plural), "")
    assert leakage(turns([PAIRS[0], (PAIRS[1][0], "That is an example conversation.")]), "")
    contents = [dialogue(PAIRS), dialogue(echo), dialogue(plural)]
    _, result = run_scripted_chunk(chat_server, contents, tmp_path / "cache.jsonl", None)
    assert [r["validation"]["reasons"] for r in result.rows] == [
        [],
        ["template_leakage"],
        ["template_leakage"],
    ]


@pytest.mark.parametrize("junk", ["\ufffd", "\ufffe", "\uffff"])
def test_replacement_and_noncharacters_are_junk(junk):
    text = turns([(PAIRS[0][0].replace("husband", f"hus{junk}band"), PAIRS[0][1]), PAIRS[1]])
    assert character_reasons(turns(PAIRS), "en") == []
    assert character_reasons(text, "en") == ["junk_characters"]
    assert character_reasons(text, "ja") == ["junk_characters"]  # junk in every language


def test_an_over_long_prompt_over_http_is_prompt_too_long(chat_server, tmp_path):
    """vLLM's server (and OpenAI) answer HTTP 400 with this wording; the other requests are unaffected."""
    too_long = (
        400,
        {
            "error": {
                "message": "This model's maximum context length is 512 tokens. However, your prompt contains "
                "786 input tokens, which exceeds this limit even without any output tokens.",
                "type": "BadRequestError",
            }
        },
    )
    contents = [dialogue(PAIRS), too_long, (400, {"error": "unknown model"}), dialogue(OTHER)]
    _, result = run_scripted_chunk(chat_server, contents, tmp_path / "cache.jsonl", None)
    reasons = [r["validation"]["reasons"] for r in result.rows]
    assert reasons == [[], ["prompt_too_long"], ["engine_error"], []]
    assert result.rows[1]["finish_reason"].startswith("error: prompt_too_long: HTTP 400")


def test_sampling_settings_round_trip_exactly(tmp_path):
    """The published `sampling` record says what the run used: 0.8, not float32's 0.800000011920929."""
    from synthetic.schema import dialogue_schema

    row = {"id": "a", "sampling": {"temperature": 0.8, "top_p": 0.95, "max_tokens": 1024, "seed": 7}}
    pq.write_table(pa.Table.from_pylist([row], schema=dialogue_schema(["care"])), tmp_path / "d.parquet")
    [back] = pq.read_table(tmp_path / "d.parquet").to_pylist()
    assert back["sampling"] == row["sampling"]
