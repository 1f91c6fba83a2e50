"""Guided-decoding grammar for vLLM from a request's JSON schema, with strings that can hold real text.

Why not hand the schema to vLLM as is: xgrammar compiles a string with `maxLength` to `[^"\\\r\n]{min, max}`:
no escapes at all, so a dialogue could never contain a double quote, a backslash or a line break (no
paragraphs, no lists), while raw control characters are allowed (the junk random weights produce).
`maxLength` is still needed: it bounds every message, so a completion can always close its JSON within
max_tokens. This module keeps xgrammar's own grammar for the schema and rewrites only those character rules
to "any printable character, or the escapes \\" \\\\ \\/ \\n \\t". The JSON schema stays the single description
of the output (the openai engine sends it as `response_format`).
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# xgrammar 0.2.x prints a length-bounded string's characters as this rule (tests pin the behaviour)
_BOUNDED_CHARACTERS = re.compile(r'^(\w+_characters) ::= \(\(\[\^\\"\\\\\\r\\n\]\)\)$', re.MULTILINE)
_TEXT_CHARACTERS = r' ::= (([^\0-\x1f\"\\\x7f]) | ("\\" [\"\\/nt]))'


class GrammarError(RuntimeError):
    """The installed xgrammar prints schemas in a form this module does not know (see the pinned version)."""


@functools.lru_cache(maxsize=64)
def json_schema_grammar(schema_text: str) -> str:
    """EBNF for `schema_text` (compact JSON, as with disable_any_whitespace) whose bounded strings admit
    printable text with escapes and no control characters."""
    from importlib.metadata import version

    import xgrammar

    grammar = str(xgrammar.Grammar.from_json_schema(schema_text, any_whitespace=False))
    rewritten, count = _BOUNDED_CHARACTERS.subn(lambda m: m.group(1) + _TEXT_CHARACTERS, grammar)
    if count == 0 and _has_bounded_strings(json.loads(schema_text)):
        raise GrammarError(
            f"xgrammar {version('xgrammar')} printed no bounded-string rule for a schema with maxLength; "
            "synthetic/grammar.py expects the version pinned in requirements/constraints.txt"
        )
    return rewritten


def _has_bounded_strings(node: Any) -> bool:
    """Whether a schema holds a string with maxLength > 1 (xgrammar inlines a single character as is)."""
    if isinstance(node, dict):
        if node.get("type") == "string" and int(node.get("maxLength", 0)) > 1:
            return True
        return any(_has_bounded_strings(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_bounded_strings(v) for v in node)
    return False
