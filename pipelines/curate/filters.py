"""Language ID and quality filters: datatrove's steps, made offline, multilingual and countable by reason.

What is changed from datatrove, and why:
- Language ID loads lid.176 from `classifiers.langid.lid_model_path()`: datatrove's LanguageFilter has no
  model-path argument and would download at run time. Its drop reason is `language`.
- Word and sentence splitting use a fast, offline regex tokenizer passed to the filters as their "language".
  datatrove maps English to spaCy, which is not installed and would be slow; the regex splits words and
  punctuation the way the Gopher rules expect.
- Gopher's stop-word rule uses the stop words of the document's detected language (config
  `gopher_quality.stop_words`), so German pages are not dropped for lacking "the".
- Every drop reason carries its filter's prefix (`gopher_*`, `gopher_repetition_*`, `c4_*`, `fineweb_*`),
  so the counts say which rule fired.
- A last step drops documents the filters left without text (`empty_after_cleaning`): C4's line cleaning can
  remove every line and still keep the document, which then got constant scores, and the dedup stage's
  datatrove reader skipped it silently (counted there as a near-duplicate removal).
"""

from __future__ import annotations

import regex
from datatrove.data import Document
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
    LanguageFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.lid import FT176LID
from datatrove.utils.text import TERMINAL_PUNCTUATION
from datatrove.utils.word_tokenizers import WordTokenizer, simple_span_tokenize, strip_strings

from pipelines.curate.settings import (
    C4Settings,
    FineWebSettings,
    GopherQualitySettings,
    GopherRepetitionSettings,
)

_WORDS = regex.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]+", regex.UNICODE)
_SENTENCES = regex.compile(
    rf"(?:(?:\p{{Lu}}\.)|.)+?(?:[{regex.escape(''.join(TERMINAL_PUNCTUATION))}]+[\"'”’)\]]*(?=\s|$)|\n|$)",
    regex.UNICODE | regex.DOTALL,
)


class RegexWordTokenizer(WordTokenizer):
    """Language-independent word/sentence splitter for scripts that separate words with spaces.

    Words are runs of letters/digits (with inner hyphens, apostrophes and dots: "don't", "e.g", "3.5");
    punctuation runs are separate tokens, as spaCy and NLTK emit them.
    """

    def __init__(self):
        super().__init__("xx")

    def word_tokenize(self, text: str) -> list[str]:
        return _WORDS.findall(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return strip_strings(_SENTENCES.findall(text))

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return list(simple_span_tokenize(text, self.sent_tokenize(text)))


class OfflineFT176LID(FT176LID):
    """datatrove's lid.176 wrapper, loading the model from a local file instead of downloading it."""

    def __init__(self, languages: list[str] | None, model_path: str, k: int = -1):
        super().__init__(languages, k=k)
        self.model_path = model_path

    @property
    def model(self):
        if self._model is None:
            from fasttext.FastText import _FastText

            self._model = _FastText(self.model_path)
        return self._model


class OfflineLanguageFilter(LanguageFilter):
    """Record `language`/`language_score` (lid.176) and keep only the configured languages."""

    name = "🌍 Language ID (lid.176, offline)"

    def __init__(
        self,
        languages: list[str],
        model_path: str,
        language_threshold: float = 0.65,
        exclusion_writer: DiskWriter | None = None,
    ):
        super().__init__(
            languages=languages, language_threshold=language_threshold, exclusion_writer=exclusion_writer
        )
        # With a threshold >= 0.5 only the top label can pass, so predicting the top label alone gives the same
        # decisions, language and score as datatrove's k=-1 (all 176 labels), at 1.7x the speed.
        self.model = OfflineFT176LID(self.languages, model_path, k=1 if language_threshold >= 0.5 else -1)

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if super().filter(doc) else (False, "language")


class _Prefixed:
    """Mixin: prefix the drop reason of a datatrove filter with the filter family."""

    reason_prefix = ""

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        try:
            result = super().filter(doc)
        except ZeroDivisionError:  # ratio rules on a text with no words or lines
            return False, self.reason_prefix + "empty"
        if result is True:
            return True
        reason = result[1] if isinstance(result, tuple) else "other"
        if not reason.startswith(self.reason_prefix):
            reason = self.reason_prefix + reason
        return False, reason


class RepetitionFilter(_Prefixed, GopherRepetitionFilter):
    reason_prefix = "gopher_repetition_"


class QualityFilter(_Prefixed, GopherQualityFilter):
    """Gopher quality with the stop words of each document's language."""

    reason_prefix = "gopher_"

    def __init__(self, stop_words_by_language: dict[str, list[str]], **kwargs):
        super().__init__(**kwargs)
        self.stop_words_by_language = {k: set(v) for k, v in stop_words_by_language.items()}
        self.min_stop_words_configured = self.min_stop_words

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        words = self.stop_words_by_language.get(doc.metadata.get("language", ""))
        self.stop_words = words or set()
        self.min_stop_words = self.min_stop_words_configured if words else None
        return super().filter(doc)


class C4LineFilter(_Prefixed, C4QualityFilter):
    reason_prefix = "c4_"


class FineWebFilter(_Prefixed, FineWebQualityFilter):
    reason_prefix = "fineweb_"


class EmptyTextFilter(BaseFilter):
    """Drop documents whose text is empty or whitespace after the filters cleaned it (`empty_after_cleaning`)."""

    name = "🕳 Empty after cleaning"
    reason = "empty_after_cleaning"

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return True if doc.text.strip() else (False, self.reason)


def quality_steps(
    gopher_repetition: GopherRepetitionSettings,
    gopher_quality: GopherQualitySettings,
    c4: C4Settings,
    fineweb: FineWebSettings,
    exclusion: callable | None = None,
) -> list:
    """The enabled quality filters in FineWeb's order: Gopher repetition, Gopher quality, C4, FineWeb, then
    the `EmptyTextFilter` (always: the steps after it, scoring and writing, need text).

    `exclusion(step_name)` returns an exclusion writer for that step (or None).
    """
    tok = RegexWordTokenizer()
    excl = exclusion or (lambda _name: None)
    steps: list = []
    if gopher_repetition.enabled:
        g = gopher_repetition.model_dump(exclude={"enabled"})
        steps.append(
            RepetitionFilter(
                dup_line_frac=g["dup_line_frac"],
                dup_para_frac=g["dup_para_frac"],
                dup_line_char_frac=g["dup_line_char_frac"],
                dup_para_char_frac=g["dup_para_char_frac"],
                top_n_grams=tuple(tuple(x) for x in g["top_n_grams"]),
                dup_n_grams=tuple(tuple(x) for x in g["dup_n_grams"]),
                exclusion_writer=excl("gopher_repetition"),
                language=tok,
            )
        )
    if gopher_quality.enabled:
        g = gopher_quality.model_dump(exclude={"enabled", "stop_words"})
        steps.append(
            QualityFilter(
                gopher_quality.stop_words, exclusion_writer=excl("gopher_quality"), language=tok, **g
            )
        )
    if c4.enabled:
        steps.append(
            C4LineFilter(exclusion_writer=excl("c4"), language=tok, **c4.model_dump(exclude={"enabled"}))
        )
    if fineweb.enabled:
        f = fineweb.model_dump(exclude={"enabled"})
        steps.append(FineWebFilter(exclusion_writer=excl("fineweb"), language=tok, **f))
    steps.append(EmptyTextFilter(exclusion_writer=excl(EmptyTextFilter.reason)))
    return steps
