"""The vLLM engine's guided-decoding grammar: real text inside bounded strings, nothing else."""

from __future__ import annotations

import json

import pytest
import xgrammar
from xgrammar.testing import _is_grammar_accept_string

from synthetic.engine import Request
from synthetic.grammar import json_schema_grammar
from synthetic.scenarios import dialogue_schema


@pytest.fixture(scope="module")
def grammar() -> xgrammar.Grammar:
    """The grammar of the schema text exactly as requests carry it to the engine."""
    schema = dialogue_schema(min_turns=2, max_turns=4, max_chars=20)
    request = Request.make([{"role": "user", "content": "x"}], schema, 1.0, 1.0, 64, run_seed=0, model="m")
    return xgrammar.Grammar.from_ebnf(json_schema_grammar(request.json_schema))


def dialogue(*exchanges: tuple[str, str]) -> str:
    """Compact JSON as the grammar writes it (", " and ": " separators)."""
    items = [{"user": u, "assistant": a} for u, a in exchanges]
    return json.dumps({"exchanges": items}, separators=(", ", ": "), ensure_ascii=False)


@pytest.mark.parametrize(
    ("user", "assistant"),
    [
        ("hi", "hello"),
        ('she said "no"', "first line\nsecond"),  # quotes and line breaks: impossible with stock maxLength
        ("a\\b and a/b", "tab\there"),
        ("x" * 20, "caf\u00e9 \u2014 ok"),  # maxLength counts decoded characters
    ],
)
def test_text_with_escapes_is_accepted(grammar, user, assistant):
    assert _is_grammar_accept_string(grammar, dialogue((user, assistant)))


@pytest.mark.parametrize(
    "text",
    [
        '{"exchanges": [{"user": "ctl\x01", "assistant": "x"}]}',  # a raw control character
        dialogue(("ctl\x01", "x")),  # the same escaped as \u0001
        dialogue(("del\x7f", "x")),
        dialogue(("x" * 21, "y")),  # over maxLength
        dialogue(("", "y")),  # under minLength
        dialogue(("a", "b"), ("c", "d"), ("e", "f")),  # more exchanges than max_turns // 2
        '{"exchanges": []}',
        # the user speaks first: the decoder writes the user's message before the assistant's answer
        '{"exchanges": [{"assistant": "b", "user": "a"}]}',
        '{"exchanges": [{"user": "a\\q", "assistant": "b"}]}',  # not a JSON escape
    ],
)
def test_everything_else_is_refused(grammar, text):
    assert not _is_grammar_accept_string(grammar, text)


def test_stock_xgrammar_still_refuses_quotes_so_the_rewrite_matters():
    """If a new xgrammar admits escapes in maxLength strings itself, this rewrite can go (and this fails)."""
    schema = json.dumps(dialogue_schema(min_turns=2, max_turns=4, max_chars=20))
    stock = xgrammar.Grammar.from_json_schema(schema, any_whitespace=False)
    assert not _is_grammar_accept_string(stock, dialogue(('say "hi"', "ok")))
    assert _is_grammar_accept_string(stock, '{"exchanges": [{"user": "ctl\x01", "assistant": "ok"}]}')


def test_single_character_strings_and_unbounded_schemas_compile():
    """xgrammar inlines maxLength 1 and has no bounded rule without maxLength: nothing to rewrite, no error."""
    for schema in (
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 1}}, "required": ["a"]},
        {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
    ):
        grammar = xgrammar.Grammar.from_ebnf(json_schema_grammar(json.dumps(schema)))
        assert _is_grammar_accept_string(
            grammar, '{"a": ' + ('"x"' if "maxLength" in str(schema) else "3") + "}"
        )
