"""Text normalisation shared by training and scoring, and the chunking of long documents.

Why one module: a fastText model only sees the tokens its training file had, so any difference between how
seeds were written out and how web pages are scored is silent accuracy loss. Both sides call `normalize`,
and the bundle manifest records `NORMALIZATION_VERSION`; a bundle trained with another version refuses to
load rather than score quietly wrong.

What it does, and why:
- NFKC + lower case + HTML entities: tweets carry `&amp;`, web pages carry fancy quotes.
- Source fingerprints are removed, not mapped to tokens: `RT @user:`, `@mentions`, `[NAME]` (GoEmotions),
  `<url>` (Stanford politeness) and URLs occur in one or two seed sources only. Kept as tokens, they teach the
  model "looks like Davidson's tweets = hostile" instead of anything about the text.
- Punctuation is split from words (fastText splits on whitespace only), runs of `!`, `?` and `.` are capped
  at three, digits become `0` (numbers keep their length, not their value), and whitespace (including
  newlines, which fastText treats as end of example) collapses to one space.

It must stay cheap: the scoring step runs it on every chunk of every document (see benchmarks/score_throughput.py).
"""

from __future__ import annotations

import html
import re
import unicodedata

NORMALIZATION_VERSION = "1"

_FINGERPRINTS = re.compile(
    r"(?:https?://|www\.)\S+"  # URLs
    r"|<url>"  # Stanford politeness placeholder
    r"|\[(?:name|religion)\]"  # GoEmotions placeholders (after lower-casing)
    r"|\brt\s+@\w+:?"  # retweet headers
    r"|@\w+"  # mentions / @user
)
_FINGERPRINT_HINTS = ("@", "http", "www.", "<url>", "[name]", "[religion]")
# Split from words. str.replace per character is ~10x faster than one regex here, and this runs on every
# chunk the scoring step sees. Hyphens and apostrophes stay inside words ("well-known", "don't").
_SPLIT = tuple('.,!?;:"()[]{}*/|<>+=~^$%#…“”«»–—•')
_CAP = ("!!!!", "????", "....")
_ASCII_DIGITS = str.maketrans("123456789", "000000000")  # str.translate is fast on ASCII text only
_DIGITS = re.compile(r"[1-9]")
_LABEL = "__label__"


# Lone UTF-16 surrogates: JSON `\ud800` escapes decode to them, and neither fastText nor any UTF-8 writer
# accepts them. Readers and `corpus score` repair them rather than lose the document.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def has_lone_surrogates(value: str) -> bool:
    # readers call this on every record: ASCII text (most of it) skips the regex scan
    return not value.isascii() and _SURROGATE.search(value) is not None


def without_surrogates(value: str) -> str:
    """`value` with each lone surrogate replaced by U+FFFD (a well-formed pair becomes its character)."""
    return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def normalize(text: str) -> str:
    """One line of normalised, space-separated tokens (may be empty)."""
    return " ".join(normalize_tokens(text))


def normalize_tokens(text: str) -> list[str]:
    """The normalised tokens of `text` (what `normalize` joins); the scorer chunks this list directly."""
    if not text:
        return []
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
    if "&" in text:
        text = html.unescape(text)
    text = text.lower()
    if any(hint in text for hint in _FINGERPRINT_HINTS):
        text = _FINGERPRINTS.sub(" ", text)
    if text.isascii():
        text = text.translate(_ASCII_DIGITS)
    else:
        text = _DIGITS.sub("0", text).replace("’", "'").replace("‘", "'")
    for run in _CAP:  # "!!!!!!" -> "! ! !": a shouted run adds evidence, not a new token per character
        while run in text:
            text = text.replace(run, run[:-1])
    for char in _SPLIT:
        if char in text:
            text = text.replace(char, f" {char} ")
    if _LABEL in text:  # a literal fastText label prefix inside text would be read as a label
        text = text.replace(_LABEL, " ")
    return text.split()


def chunk_tokens(normalized: str | list[str], chunk_words: int, min_last: int | None = None) -> list[str]:
    """Split a normalised text (or its token list) into windows of about `chunk_words` tokens.

    Windows are contiguous and non-overlapping. A short remainder (< min_last tokens, default a third of a
    window) joins the previous window, so no chunk is a lone fragment whose score says little.
    """
    tokens = normalized.split(" ") if isinstance(normalized, str) else normalized
    if len(tokens) <= chunk_words:
        return [" ".join(tokens)]
    min_last = chunk_words // 3 if min_last is None else min_last
    bounds = list(range(0, len(tokens), chunk_words))
    if len(tokens) - bounds[-1] < min_last:
        bounds.pop()
    bounds.append(len(tokens))
    return [" ".join(tokens[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
