"""Validation of generated dialogues. Every check that fails adds a reason; nothing is dropped silently.

Per-dialogue checks (run in the task that generated the dialogue):
- parse: `engine_error` (retried by a rerun), `prompt_too_long` (the prompt does not fit the model's context:
  the engine refused it), `engine_refused` (the engine refused the request for another reason; like
  `prompt_too_long`, final), `truncated` (hit max_tokens before the JSON closed), `unparseable`, `invalid_unicode` (text that is
  not valid UTF-8, e.g. a lone surrogate from a JSON escape `"\\ud800"`: no tokenizer or Parquet writer
  takes it);
- structure: `unknown_role` (a system or tool turn), `first_turn_not_user`, `roles_not_alternating`,
  `last_turn_not_assistant`, `too_few_turns`, `too_many_turns`, `message_too_short`, `message_too_long`,
  `control_characters` (left after parsing);
- language: `wrong_language` (lid.176 on the whole dialogue, below the score or another language),
  `mixed_language` (one message of 6+ words confidently in another language);
- characters: `junk_characters` (private-use / unassigned code points, U+FFFD and the noncharacters
  U+FFFE/U+FFFF), `unexpected_script` (letters of another script in a Latin-script language);
- template leakage: `template_leakage` (8 words of the prompt's instructions, system prompt included,
  chat-template markers or JSON keys in the text; the scenario's own description may be echoed);
- refusal boilerplate: `refusal_boilerplate`;
- classifier: `low_score_<dimension>` below the threshold, or `no_classifier` when thresholds are set but no
  bundle could be loaded.
- `validation_error`: one of the checks above crashed on this dialogue (a bug or an input no check
  foresaw); the dialogue is rejected and the chunk carries on (the note says which check and why).
Run-level check (after every task, in scenario order, after the dialogues a refresh carries):
`near_duplicate` (MinHash, `NearDuplicates`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthetic.engine import FINAL_ERRORS

# Raised whenever a rule changes what passes (2: invalid_unicode, validation_error, U+FFFD as junk, the system
# prompt in the leakage check). A stage that keys finished chunks by it re-judges them from the request cache
# instead of keeping verdicts made under the old rules.
VALIDATION_VERSION = 2

# -- parsing --------------------------------------------------------------------------------------------------


@dataclass
class Parsed:
    turns: list[dict[str, str]] | None
    reason: str | None  # None when parsed
    replaced_control_chars: int = 0


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and newline), DEL and C1


def _clean(text: str) -> tuple[str, int]:
    cleaned, n = _CONTROL.subn(" ", text)
    return cleaned, n


def is_valid_unicode(text: str) -> bool:
    """False for text holding lone surrogates, which JSON escapes (`"\\ud800"`) can smuggle into a `str`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """`text` as valid UTF-8 for Parquet and JSONL: each lone surrogate becomes its escape, visible and
    lossless to a reader (`\\ud800`)."""
    if is_valid_unicode(text):
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_dialogue(text: str, finish_reason: str | None, error: str | None) -> Parsed:
    """The messages of a guided-JSON completion, or the reason it cannot be used.

    Accepts the stage's `{"exchanges": [{"user", "assistant"}]}` and, from endpoints that ignore the schema,
    `{"turns": [{"role", "content"}]}`. `strict=False` and the control-character replacement: xgrammar's
    length-bounded strings admit raw control characters (strict JSON forbids them). They are invisible junk
    that real models do not produce, so they become spaces (counted) rather than poisoning the text.
    """
    if error:
        final = next((reason for reason in FINAL_ERRORS if error.startswith(reason)), None)
        return Parsed(None, final or "engine_error")
    try:
        data = json.loads(text, strict=False)
    except (json.JSONDecodeError, RecursionError):
        return Parsed(None, "truncated" if finish_reason == "length" else "unparseable")
    turns: list[dict[str, str]] | None = None
    if isinstance(data, dict) and isinstance(data.get("exchanges"), list):
        items = data["exchanges"]
        if all(
            isinstance(x, dict) and isinstance(x.get("user"), str) and isinstance(x.get("assistant"), str)
            for x in items
        ):
            turns = []
            for x in items:
                turns += [
                    {"role": "user", "content": x["user"]},
                    {"role": "assistant", "content": x["assistant"]},
                ]
    elif isinstance(data, dict) and isinstance(data.get("turns"), list):
        items = data["turns"]
        if all(
            isinstance(t, dict) and isinstance(t.get("role"), str) and isinstance(t.get("content"), str)
            for t in items
        ):
            turns = [{"role": t["role"], "content": t["content"]} for t in items]
    if turns is None:
        return Parsed(None, "unparseable")
    if not all(is_valid_unicode(t["role"]) and is_valid_unicode(t["content"]) for t in turns):
        return Parsed(None, "invalid_unicode")
    replaced = 0
    for turn in turns:
        turn["content"], n = _clean(turn["content"])
        replaced += n
    return Parsed(turns, None, replaced)


# -- structure ------------------------------------------------------------------------------------------------


def structure_reasons(
    turns: list[dict[str, str]], min_turns: int, max_turns: int, min_chars: int, max_chars: int
) -> list[str]:
    reasons = []
    roles = [t["role"] for t in turns]
    if any(role not in ("user", "assistant") for role in roles):
        reasons.append("unknown_role")  # system or tool turns must not reach midtrain as dialogue
    if roles and roles[0] != "user":
        reasons.append("first_turn_not_user")
    if any(a == b for a, b in zip(roles, roles[1:], strict=False)):
        reasons.append("roles_not_alternating")
    if roles and roles[-1] != "assistant":
        reasons.append("last_turn_not_assistant")
    if len(turns) < min_turns:
        reasons.append("too_few_turns")
    if len(turns) > max_turns:
        reasons.append("too_many_turns")
    lengths = [len(t["content"].strip()) for t in turns]
    if any(n < min_chars for n in lengths):
        reasons.append("message_too_short")
    if any(n > max_chars for n in lengths):
        reasons.append("message_too_long")
    if any(_CONTROL.search(t["content"]) for t in turns):
        reasons.append("control_characters")
    return reasons


# -- leakage and refusals -----------------------------------------------------------------------------------
_LEAK_MARKERS = re.compile(
    r"<\|[a-z_]+\|>|<<<|>>>|\"(?:exchanges|turns|user|assistant|role|content)\"\s*:|\bvalue in focus\b|\bmust not do\b|"
    r"\bthese instructions\b|\bsource excerpt\b|\bthis is an example\b|\bexample conversations?\b|\banswer with json\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\bas an ai\b|\bas a (?:large )?language model\b|\bi(?:'m| am) (?:just |only )?an ai\b|"
    r"\bi (?:cannot|can't|can not|am unable to|won't) (?:help|assist|provide|comply|fulfil+)\b|"
    r"\bi(?:'m| am) sorry,? but i (?:cannot|can't|am unable)\b|\bmy (?:knowledge|training) cut-?off\b|"
    r"\bopenai\b|\bagainst my (?:guidelines|programming|policy)\b",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z0-9']+")


def _shingles(text: str, n: int) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def leakage(turns: list[dict[str, str]], prompt_instructions: str, ngram: int = 8) -> bool:
    """True when the dialogue shows prompt machinery: markers, JSON keys, or 8 words copied from the prompt."""
    text = "\n".join(t["content"] for t in turns)
    if _LEAK_MARKERS.search(text):
        return True
    return bool(_shingles(text, ngram) & _shingles(prompt_instructions, ngram))


def refusal(turns: list[dict[str, str]]) -> bool:
    return any(t["role"] == "assistant" and _REFUSAL.search(t["content"]) for t in turns)


# -- characters -----------------------------------------------------------------------------------------------
# Languages written in Latin script: for them, letters of other scripts are a sign of noise, not of content.
LATIN_LANGUAGES = {
    "en",
    "de",
    "fr",
    "es",
    "it",
    "pt",
    "nl",
    "sv",
    "da",
    "no",
    "nb",
    "fi",
    "pl",
    "cs",
    "sk",
    "sl",
    "hr",
    "ro",
    "hu",
    "et",
    "lv",
    "lt",
    "id",
    "ms",
    "tr",
    "vi",
    "ca",
    "eu",
    "gl",
    "sw",
    "tl",
    "af",
}


# U+FFFD is what a decoder leaves for bytes that were not UTF-8 (a model splitting a multi-byte character
# across tokens, a broken detokenizer); U+FFFE/U+FFFF are noncharacters (category Cn, listed for clarity)
_JUNK = frozenset("\ufffd\ufffe\uffff")


def character_reasons(
    turns: list[dict[str, str]], language: str, max_foreign_letters: float = 0.02
) -> list[str]:
    """`junk_characters` (private-use, unassigned or surrogate code points, U+FFFD, U+FFFE, U+FFFF: never in
    real text) and
    `unexpected_script` (over 2 % of the letters outside the Latin script, for a Latin-script language).

    Random or broken generators emit exotic code points that lid.176 and bag-of-words classifiers shrug off;
    real dialogues in the target language practically never do.
    """
    import unicodedata

    reasons = []
    text = "".join(t["content"] for t in turns)
    if any(ch in _JUNK or unicodedata.category(ch) in {"Co", "Cn", "Cs"} for ch in text):
        reasons.append("junk_characters")
    if language in LATIN_LANGUAGES:
        letters = [ch for ch in text if ch.isalpha()]
        foreign = sum(1 for ch in letters if ord(ch) > 0x24F and "LATIN" not in unicodedata.name(ch, ""))
        if letters and foreign / len(letters) > max_foreign_letters:
            reasons.append("unexpected_script")
    return reasons


# -- language -----------------------------------------------------------------------------------------------
_LID: dict[str, Any] = {}
_LID_LOCK = threading.Lock()


def lid_model():
    """lid.176 loaded once per process (classifiers.langid knows where it is)."""
    from classifiers.langid import lid_model_path

    path = str(lid_model_path())
    with _LID_LOCK:
        if path not in _LID:
            import fasttext

            _LID[path] = fasttext.load_model(path)
        return _LID[path]


def detect_language(texts: list[str]) -> list[tuple[str, float]]:
    """(language, probability) per text with lid.176 (newlines joined: fastText predicts one line)."""
    if not texts:
        return []
    labels, probs = lid_model().predict([" ".join(t.split()) for t in texts], k=1)
    return [
        (lab[0].removeprefix("__label__") if lab else "", float(p[0]) if len(p) else 0.0)
        for lab, p in zip(labels, probs, strict=True)
    ]


# lid.176 probability above which one message counts as written in another language
FOREIGN_MESSAGE_SCORE = 0.8
FOREIGN_MESSAGE_WORDS = 6


def language_reasons(
    dialogues: list[list[dict[str, str]]], language: str, min_score: float
) -> tuple[list[tuple[str, float]], list[list[str]]]:
    """(language detected over each whole dialogue, its reasons): `wrong_language` when the dialogue is not
    confidently `language`; `mixed_language` when one of its messages confidently is another language.

    Why both: a French last turn in an English dialogue passes the whole-text check. Only messages of 6+
    words count, detected with probability >= 0.8: lid.176 calls "Thanks so much!" Spanish (0.99), and on
    3,000 English web sentences of 20-300 characters it flagged one, which was German.
    """
    whole = detect_language(["\n".join(t["content"] for t in turns) for turns in dialogues])
    reasons: list[list[str]] = [
        ["wrong_language"] if lang != language or prob < min_score else [] for lang, prob in whole
    ]
    messages = [
        (d, t["content"])
        for d, turns in enumerate(dialogues)
        for t in turns
        if len(t["content"].split()) >= FOREIGN_MESSAGE_WORDS
    ]
    for (d, _), (lang, prob) in zip(messages, detect_language([m for _, m in messages]), strict=True):
        if lang != language and prob >= FOREIGN_MESSAGE_SCORE and "mixed_language" not in reasons[d]:
            reasons[d].append("mixed_language")
    return whole, reasons


# -- classifier scores -----------------------------------------------------------------------------------
def assistant_text(turns: list[dict[str, str]]) -> str:
    """What the classifiers judge: the assistant's side, which is what mid-training teaches."""
    return "\n".join(t["content"] for t in turns if t["role"] == "assistant")


def load_bundle_or_none(path: str | Path | None) -> tuple[Any, str | None]:
    """(bundle, None) or (None, why it is unavailable)."""
    try:
        from classifiers.bundle import cached_bundle
    except ImportError as exc:  # pragma: no cover - the classifiers package always ships bundle.py
        return None, f"classifiers.bundle unavailable: {exc}"
    try:
        return cached_bundle(path), None
    except Exception as exc:  # BundleError, or a missing folder
        return None, str(exc)


def dimension_score(scores: dict[str, float], dimension: str) -> float | None:
    """The score a dialogue is judged by: its own dimension's when the bundle has it, else the mean of all."""
    if dimension in scores:
        return scores[dimension]
    values = [v for v in scores.values() if v is not None]
    return float(np.mean(values)) if values else None


# -- run-level near-duplicates ---------------------------------------------------------------------------
@dataclass
class NearDuplicates:
    """MinHash LSH over the dialogues of one run, using datatrove's shingling and signature code.

    `check(id, text)` returns the id of an earlier dialogue that shares an LSH bucket (estimated Jaccard over
    word 5-grams around `threshold` or more), else None and remembers the dialogue. Feed dialogues in a fixed
    order (scenario index) so the result does not depend on which task finished first.
    """

    threshold: float = 0.8
    n_grams: int = 5
    _seen: list[dict[tuple, str]] = field(default_factory=list)

    def __post_init__(self):
        import tempfile

        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

        buckets, per_bucket = _lsh_shape(self.threshold)
        self.config = MinhashConfig(n_grams=self.n_grams, num_buckets=buckets, hashes_per_bucket=per_bucket)
        # the step is only used for its shingling/signature methods; it writes nothing
        self._signer = MinhashDedupSignature(output_folder=tempfile.gettempdir(), config=self.config)
        # dialogues are short English turns: a regex word split shingles them like spaCy's English tokenizer
        # (datatrove's default) at a fraction of the cost, which keeps finalize cheap on large runs
        self._signer.word_tokenizer = _RegexWords()
        self._seen = [{} for _ in range(buckets)]

    def check(self, item_id: str, text: str) -> str | None:
        shingles = self._signer.get_shingles(text)
        if shingles.size == 0:  # shorter than one n-gram: compare on the text itself
            digest = hashlib.sha256(" ".join(text.split()).lower().encode()).digest()
            shingles = np.array([[int.from_bytes(digest[:4], "big")]], dtype=np.uint64)
        signature = self._signer.get_signature(shingles)
        for bucket, band in zip(self._seen, signature, strict=True):
            other = bucket.get(tuple(band))
            if other is not None:
                return other
        for bucket, band in zip(self._seen, signature, strict=True):
            bucket[tuple(band)] = item_id
        return None


class _RegexWords:
    _word = re.compile(r"\w+")

    def word_tokenize(self, text: str) -> list[str]:
        return self._word.findall(text)


def _lsh_shape(threshold: float) -> tuple[int, int]:
    """(bands, rows) with the LSH threshold (1/b)^(1/r) within 0.02 of `threshold` and the most hashes
    (b*r <= 128: more hashes, sharper S-curve), else the closest shape."""
    shapes = [(b, r) for r in range(1, 17) for b in range(1, 128 // r + 1)]
    gap = {(b, r): abs((1 / b) ** (1 / r) - threshold) for b, r in shapes}
    close = [shape for shape in shapes if gap[shape] <= 0.02]
    if close:
        return max(close, key=lambda s: (s[0] * s[1], -gap[s]))
    return min(shapes, key=lambda s: gap[s])
