"""What guided decoding lets through, checked on xgrammar's grammar for the schema text requests carry."""

from __future__ import annotations

import json

import pytest
import xgrammar
from xgrammar.testing import _is_grammar_accept_string

from synthetic.engine import Request
from synthetic.scenarios import dialogue_schema


@pytest.fixture(scope="module")
def grammar() -> xgrammar.Grammar:
    """The grammar vLLM compiles for a dialogue request (compact JSON: disable_any_whitespace)."""
    schema = dialogue_schema(min_turns=2, max_turns=4, max_chars=20)
    request = Request.make([{"role": "user", "content": "x"}], schema, 1.0, 1.0, 64, run_seed=0, model="m")
    return xgrammar.Grammar.from_json_schema(request.json_schema, any_whitespace=False)


def dialogue(*exchanges: tuple[str, str]) -> str:
    """Compact JSON as the grammar writes it (", " and ": " separators)."""
    items = [{"user": u, "assistant": a} for u, a in exchanges]
    return json.dumps({"exchanges": items}, separators=(", ", ": "), ensure_ascii=False)


@pytest.mark.parametrize(
    "text",
    [
        dialogue(("hi", "hello")),
        dialogue(("x" * 20, "caf\u00e9 \u2014 ok"), ("a", "b")),
    ],
)
def test_user_first_dialogues_within_bounds_are_accepted(grammar, text):
    assert _is_grammar_accept_string(grammar, text)


@pytest.mark.parametrize(
    "text",
    [
        # the decoder writes properties in schema order: the user's message before the assistant's answer
        # (Request.make once sorted the schema's keys, which put the assistant first)
        '{"exchanges": [{"assistant": "b", "user": "a"}]}',
        dialogue(("x" * 21, "y")),  # over maxLength
        dialogue(("", "y")),  # under minLength
        dialogue(("a", "b"), ("c", "d"), ("e", "f")),  # more exchanges than max_turns // 2
        '{"exchanges": []}',
    ],
)
def test_out_of_schema_output_is_refused(grammar, text):
    assert not _is_grammar_accept_string(grammar, text)


def test_bounded_strings_hold_no_quotes_or_line_breaks_but_let_control_characters_through(grammar):
    """The known limit the README states. When a new xgrammar admits escapes in maxLength strings, this fails:
    then drop the limit from the README and the control-character replacement from synthetic.validate."""
    assert not _is_grammar_accept_string(grammar, dialogue(('say "hi"', "ok")))
    assert not _is_grammar_accept_string(grammar, dialogue(("line\nnext", "ok")))
    assert _is_grammar_accept_string(grammar, '{"exchanges": [{"user": "ctl\x01", "assistant": "ok"}]}')
