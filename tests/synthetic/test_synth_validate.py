"""Validation checks: each failure records its reason (parse, structure, language, leakage, refusal, near-dup)."""

from __future__ import annotations

import json

from synthetic.engine import Completion
from synthetic.generate import RequestCache
from synthetic.validate import (
    NearDuplicates,
    detect_language,
    leakage,
    parse_dialogue,
    refusal,
    structure_reasons,
)

GOOD = [
    {"role": "user", "content": "I keep arguing with my brother about our mother's care and I am exhausted."},
    {
        "role": "assistant",
        "content": "That sounds draining. What does each of you most want for her right now?",
    },
    {"role": "user", "content": "He wants a care home, I want her to stay at home with help."},
    {
        "role": "assistant",
        "content": "Both aim at her safety. Would it help to ask her, and a nurse, what matters most?",
    },
]


def exchanges_json(turns):
    pairs = [
        {"user": turns[i]["content"], "assistant": turns[i + 1]["content"]} for i in range(0, len(turns), 2)
    ]
    return json.dumps({"exchanges": pairs})


def test_parse_exchanges_turns_and_failures():
    parsed = parse_dialogue(exchanges_json(GOOD), "stop", None)
    assert parsed.reason is None and parsed.turns == GOOD
    legacy = parse_dialogue(json.dumps({"turns": GOOD}), "stop", None)
    assert legacy.turns == GOOD
    assert parse_dialogue('{"exchanges": [{"user": "hi", "assis', "length", None).reason == "truncated"
    assert parse_dialogue("Sure! Here is a dialogue", "stop", None).reason == "unparseable"
    assert parse_dialogue('{"exchanges": [{"user": 3}]}', "stop", None).reason == "unparseable"
    assert parse_dialogue("", None, "HTTP 500").reason == "engine_error"


def test_control_characters_are_replaced_and_counted():
    raw = '{"exchanges": [{"user": "a\x01b\x02c", "assistant": "ok\x1f \u0085x\u009b"}]}'  # C0 and C1
    parsed = parse_dialogue(raw, "stop", None)
    assert parsed.turns[0]["content"] == "a b c" and parsed.replaced_control_chars == 5
    assert parsed.turns[1]["content"] == "ok   x "


def test_structure_reasons():
    assert structure_reasons(GOOD, 4, 8, 10, 600) == []
    swapped = [GOOD[1], GOOD[0], GOOD[3], GOOD[2]]
    reasons = structure_reasons(swapped, 4, 8, 10, 600)
    assert "first_turn_not_user" in reasons and "last_turn_not_assistant" in reasons
    assert "roles_not_alternating" in structure_reasons([GOOD[0], GOOD[2], GOOD[1], GOOD[3]], 4, 8, 10, 600)
    assert structure_reasons(GOOD[:2], 4, 8, 10, 600) == ["too_few_turns"]
    assert structure_reasons(GOOD * 3, 4, 8, 10, 600) == ["too_many_turns"]
    assert "message_too_short" in structure_reasons(
        GOOD[:1] + [{"role": "assistant", "content": "ok"}] + GOOD[2:], 4, 8, 10, 600
    )
    assert "message_too_long" in structure_reasons(GOOD, 4, 8, 10, 40)
    # an engine that ignores the schema can send system or tool turns: they are not dialogue
    for role in ("system", "tool"):
        odd = [GOOD[0], {"role": role, "content": "You are a helpful assistant."}, GOOD[0], GOOD[1]]
        assert "unknown_role" in structure_reasons(odd, 4, 8, 10, 600)


def test_leakage_and_refusal():
    prompt = "Write a conversation in English between a user and an assistant, in the style of casual chat about work."
    assert not leakage(GOOD, prompt)
    copied = GOOD[:3] + [
        {
            "role": "assistant",
            "content": "I will write a conversation in English between a user and an assistant, in the style of casual chat.",
        }
    ]
    assert leakage(copied, prompt)
    assert leakage(GOOD[:3] + [{"role": "assistant", "content": 'Sure: "exchanges": [...]'}], prompt)
    assert leakage(GOOD[:3] + [{"role": "assistant", "content": "<|assistant|> hello"}], prompt)
    assert not refusal(GOOD)
    assert refusal(
        GOOD[:3] + [{"role": "assistant", "content": "As an AI language model, I cannot help with that."}]
    )
    assert refusal(
        GOOD[:3] + [{"role": "assistant", "content": "I'm sorry, but I can't assist with family matters."}]
    )


def test_junk_characters_and_unexpected_script():
    from synthetic.validate import character_reasons

    assert character_reasons(GOOD, "en") == []
    accents = [{"role": "user", "content": "Café in Zürich — naïve façade, 東京 once."}] + GOOD[1:]
    assert character_reasons(accents, "en") == []  # Latin accents, punctuation, a rare foreign word: fine
    noise = [{"role": "user", "content": "carefu over humilityts \ue648 ꛚ ك ֶ"}] + GOOD[1:]
    assert character_reasons(noise, "en") == ["junk_characters"]
    mixed = [{"role": "user", "content": "ꛚꛚꛚ ꛛꛜ ꛝꛞ كك words"}] + GOOD[1:]
    assert character_reasons(mixed, "en") == ["unexpected_script"]
    assert character_reasons(mixed, "ar") == []  # only judged for Latin-script languages


def test_language_detection_uses_lid176():
    (en, p_en), (de, _), (fr, _) = detect_language(
        [
            "The assistant listens carefully and helps the user weigh both options.",
            "Der Assistent hört aufmerksam zu und hilft dem Nutzer, beide Möglichkeiten abzuwägen.",
            "L'assistant écoute attentivement et aide l'utilisateur à peser les deux options.",
        ]
    )
    assert (en, de, fr) == ("en", "de", "fr") and p_en > 0.5


def test_near_duplicates_across_the_run():
    dedup = NearDuplicates(threshold=0.8)
    text = " ".join(t["content"] for t in GOOD)
    assert dedup.check("a", text) is None
    assert dedup.check("b", text.replace("exhausted", "exhausted,")) == "a"  # punctuation-only change
    other = (
        "We talked about composting kitchen waste in a small flat and whether worms would smell in summer."
    )
    assert dedup.check("c", other) is None
    assert dedup.check("d", "hi") is None and dedup.check("e", "hi") == "d"  # shorter than one shingle


def test_a_foreign_message_in_a_dialogue_is_mixed_language():
    from synthetic.validate import language_reasons

    french = "Je pense que vous devriez en parler avec lui."
    mixed = GOOD[:3] + [{"role": "assistant", "content": french}]
    short = GOOD[:3] + [{"role": "assistant", "content": "Thanks so much!"}]  # lid.176: Spanish, 0.99
    detected, reasons = language_reasons([GOOD, mixed, short], "en", 0.5)
    assert detected[1][0] == "en" and detected[1][1] >= 0.5  # the whole-dialogue check alone passes it
    assert reasons == [[], ["mixed_language"], []]


def test_leakage_ignores_the_scenario_line_but_not_the_instructions():
    from synthetic.scenarios import ScenarioSampler, build_messages, instruction_wording, load_grid

    grid = load_grid("configs/synthetic/grid.yaml")
    scenario = ScenarioSampler(grid, seed=0).sample(0)
    prompt = build_messages(scenario, grid, 4, 8, 500)[-1]["content"]
    wording = instruction_wording(prompt)
    natural = GOOD[:3] + [
        {"role": "assistant", "content": f"You are {scenario.persona} who {scenario.situation}."}
    ]
    assert not leakage(natural, wording)
    copied = GOOD[:3] + [
        {"role": "assistant", "content": "Each message is plain text of one to a few sentences."}
    ]
    assert leakage(copied, wording)
    assert "3 to 4 exchanges" in build_messages(scenario, grid, 5, 8, 500)[-1]["content"]  # 2 would fail 5


def test_request_cache_survives_a_torn_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = RequestCache(path)
    cache.add(Completion("r1", "{}", "stop", 3))
    cache.add(Completion("r2", "", None, 0, error="HTTP 503"))  # errors are not cached
    assert "r1" in RequestCache(path)  # readable before sync(): flushed at once
    cache.sync()
    with open(path, "a") as handle:
        handle.write('{"request_id": "r3", "text": "{\\"exch')  # a writer killed mid-line
    again = RequestCache(path)
    assert "r1" in again and "r2" not in again and "r3" not in again and len(again) == 1
    again.add(Completion("r4", "{}", "stop", 3))  # appended after the torn line, not merged into it
    again.sync()
    assert "r4" in RequestCache(path)
