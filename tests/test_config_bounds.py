"""Settings that used to pass validation and preflight, then failed hours later or silently dropped everything.

Each case here was accepted before: a bad second profile (found only by the mix stage), a misspelt MinHash
tokenizer or a negative seed (found inside a dedup worker), and filter thresholds outside what the rule can
compute (every document dropped, reported only in the run's counts).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from classifiers.profiles import ProfileError
from pipelines.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "demo"
CORPUS = str(Path(sys.executable).with_name("corpus"))


def _preflight(*overrides: str) -> None:
    from pipelines.curate.stage import preflight

    preflight(load_config(None, [f"input={DEMO}", *overrides]))


# -- profiles ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides",
    [
        ["profile=default,no_such_profile"],  # only the first profile was loaded
        ["profile=no_such_profile", "curate.score=false"],  # none was loaded without scoring
    ],
)
def test_preflight_loads_every_profile(overrides):
    with pytest.raises(ProfileError, match="unknown profile 'no_such_profile' \\(known: .*default"):
        _preflight(*overrides)


def test_preflight_validates_a_later_profile_file_and_unique_names(tmp_path):
    broken = tmp_path / "mine.yaml"
    broken.write_text("weights: {care: 1}\ntiers:\n  - {name: top, min_scor: 0.5, factor: 2}\n")
    with pytest.raises(ProfileError, match=f"^{broken}: unknown key 'tiers.0.min_scor'"):
        _preflight(f"profile=default,{broken}", "curate.score=false")
    # the mix writes each profile to a folder named after it: two profiles named 'default' would collide
    with pytest.raises(ConfigError, match="profile: .* are both named 'default'"):
        _preflight(f"profile=default,{REPO / 'configs' / 'profiles' / 'default.yaml'}", "curate.score=false")
    _preflight("profile=default,civic,education", "curate.score=false")  # the shipped ones pass


def test_preflight_checks_every_profile_against_the_bundle(tmp_path, tiny_bundle_path):
    """A later profile weighting a dimension the bundle does not score failed in the mix (missing ps_*)."""
    plural = tmp_path / "plural.yaml"
    plural.write_text("weights: {pluralism: 1}\ntiers:\n  - {name: top, min_score: 0.5, factor: 2}\n")
    bundle = f"classifier.bundle={tiny_bundle_path}"
    with pytest.raises(ConfigError, match=r"profile: '.*plural.yaml' weights dimensions \['pluralism'\]"):
        _preflight(f"profile=default,{plural}", bundle)
    _preflight("profile=default", bundle)


@pytest.mark.parametrize("value", ["", ",", " , "])
def test_empty_profile_list_is_a_config_error(tmp_path, value):
    expected = "key 'profile': expected at least one profile name or YAML path"
    with pytest.raises(ConfigError, match=f"^command line: {expected}"):
        load_config(None, [f"profile={value}"])
    path = tmp_path / "c.yaml"
    path.write_text("profile: []\n")
    with pytest.raises(ConfigError, match=f"^{path}: {expected}"):
        load_config(path)


# -- dedup ------------------------------------------------------------------------------------------------
def test_dedup_tokenizer_is_checked_at_load():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["dedup.tokenizer=englsh"])
    assert str(info.value).startswith(
        "command line: key 'dedup.tokenizer': expected 'whitespace' or a language code with a datatrove word "
        "tokenizer (e.g. en, de, zh, eng_Latn), got 'englsh'"
    )
    for ok in ("whitespace", "en", "de", "eng_Latn"):
        assert load_config(None, [f"dedup.tokenizer={ok}"]).dedup.tokenizer == ok


@pytest.mark.skipif(importlib.util.find_spec("pythainlp") is not None, reason="pythainlp is installed")
def test_dedup_tokenizer_without_its_package_is_a_config_error_only_when_dedup_runs():
    with pytest.raises(ConfigError, match="key 'dedup.tokenizer': 'th' needs a package .*pythainlp"):
        load_config(None, ["dedup.tokenizer=th"])
    assert load_config(None, ["dedup.enabled=false", "dedup.tokenizer=th"]).dedup.tokenizer == "th"


def test_dedup_seed_bounds_are_numpys():
    """MinHash parameters come from np.random.RandomState(seed), which takes 0 .. 2**32-1 only."""
    with pytest.raises(ValueError):
        np.random.RandomState(-1)
    with pytest.raises(ValueError):
        np.random.RandomState(2**32)
    for bad in (-1, 2**32):
        with pytest.raises(
            ConfigError, match=f"key 'dedup.seed': expected a value >= 0 and < 4294967296, got {bad}"
        ):
            load_config(None, [f"dedup.seed={bad}"])
    for good in (0, 2**32 - 1):
        seed = load_config(None, [f"dedup.seed={good}"]).dedup.seed
        np.random.RandomState(seed)  # accepted by the library too


# -- curate filter thresholds and mix ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("curate.fineweb.line_punct_thr=7", "key 'curate.fineweb.line_punct_thr': expected a value from 0 to 1, got 7"),
        ("curate.fineweb.short_line_thr=-0.1", "key 'curate.fineweb.short_line_thr': expected a value from 0 to 1"),
        ("curate.fineweb.char_duplicates_ratio=2", "key 'curate.fineweb.char_duplicates_ratio': expected a value from 0 to 1"),
        ("curate.fineweb.new_line_ratio=-1", "key 'curate.fineweb.new_line_ratio': expected a value greater than or equal to 0"),
        ("curate.fineweb.short_line_length=-1", "key 'curate.fineweb.short_line_length': expected a value greater than or equal to 0"),
        ("curate.c4.min_num_sentences=-9", "key 'curate.c4.min_num_sentences': expected a value greater than or equal to -1, got -9"),
        ("curate.c4.min_words_per_line=-2", "key 'curate.c4.min_words_per_line': expected a value greater than or equal to -1"),
        ("curate.c4.max_word_length=0", "key 'curate.c4.max_word_length': expected -1 (off) or a length of at least 1, got 0"),
        ("curate.c4.max_word_length=-5", "key 'curate.c4.max_word_length': expected a value greater than or equal to -1"),
        ("curate.gopher_quality.min_doc_words=-1", "key 'curate.gopher_quality.min_doc_words': expected a value greater than or equal to 0"),
        ("curate.gopher_quality.max_non_alpha_words_ratio=1.5", "key 'curate.gopher_quality.max_non_alpha_words_ratio': expected a value from 0 to 1"),
        ("curate.gopher_quality.max_bullet_lines_ratio=2", "key 'curate.gopher_quality.max_bullet_lines_ratio': expected a value from 0 to 1"),
        ("curate.gopher_quality.max_symbol_word_ratio=-0.1", "key 'curate.gopher_quality.max_symbol_word_ratio': expected a value greater than or equal to 0"),
        ("curate.gopher_quality.min_stop_words=-1", "key 'curate.gopher_quality.min_stop_words': expected a value greater than or equal to 0"),
        ("curate.gopher_quality.min_doc_words=200000", "key 'curate.gopher_quality': min_doc_words=200000 is above max_doc_words=100000"),
        ("curate.gopher_quality.min_avg_word_length=12", "key 'curate.gopher_quality': min_avg_word_length=12 is above max_avg_word_length=10"),
        ("curate.gopher_repetition.dup_line_frac=1.5", "key 'curate.gopher_repetition.dup_line_frac': expected a value from 0 to 1"),
        ("curate.gopher_repetition.dup_para_char_frac=-0.2", "key 'curate.gopher_repetition.dup_para_char_frac': expected a value from 0 to 1"),
        ("curate.gopher_repetition.top_n_grams=[[0, 0.2]]", "key 'curate.gopher_repetition.top_n_grams.0.0': expected a value greater than or equal to 1, got 0"),
        ("curate.gopher_repetition.dup_n_grams=[[5, 1.5]]", "key 'curate.gopher_repetition.dup_n_grams.0.1': expected a value from 0 to 1, got 1.5"),
        ("mix.max_epochs=32768", "key 'mix.max_epochs': expected a value from 1 to 32767, got 32768"),
        ("mix.blocksize=abc", "key 'mix.blocksize': expected a positive size such as 64MB or 512KiB, got 'abc'"),
    ],
)  # fmt: skip
def test_out_of_range_settings_name_key_and_range(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(f"command line: {expected}"), str(info.value)


@pytest.mark.parametrize(
    "override",
    [
        "curate.c4.min_num_sentences=-1",  # -1: off, as datatrove documents
        "curate.c4.min_words_per_line=-1",
        "curate.c4.max_word_length=-1",
        "curate.c4.max_word_length=1",
        "curate.fineweb.line_punct_thr=0",
        "curate.fineweb.line_punct_thr=1",
        "curate.fineweb.new_line_ratio=2.5",  # newlines per word: may exceed 1
        "curate.gopher_quality.max_doc_words=null",  # null: rule off
        "curate.gopher_quality.min_doc_words=0",
        "curate.gopher_quality.max_symbol_word_ratio=3",
        "curate.gopher_repetition.dup_line_frac=null",
        "curate.gopher_repetition.top_n_grams=[[1, 0], [2, 1]]",
        "mix.max_epochs=32767",
        "mix.blocksize=512KiB",
        "mix.seed=-5",  # hashed into SipHash keys: any integer works
    ],
)
def test_in_range_edges_are_accepted(override):
    key, value = override.split("=", 1)
    node = load_config(None, [override]).model_dump(mode="json")
    for part in key.split("."):
        node = node[part]
    assert node == yaml.safe_load(value)


def test_max_epochs_cap_fits_repeat_index():
    """repeat_index is written as int16: the largest copy number the cap allows must fit."""
    from pipelines.mix.settings import MixConfig

    cap = MixConfig.model_fields["max_epochs"].metadata
    largest = max(rule.le for rule in cap if hasattr(rule, "le"))
    assert largest - 1 <= np.iinfo(np.int16).max


def test_max_document_bytes_says_characters_for_jsonl_and_parquet_texts():
    """readers.py compares a JSONL/Parquet text field's len(str), i.e. characters, not bytes."""
    from pipelines.curate.settings import ReadSettings

    description = ReadSettings.model_fields["max_document_bytes"].description
    assert "raw bytes" not in description
    assert "characters for the text field of a JSONL record or Parquet row" in description


# -- the command line -------------------------------------------------------------------------------------
def test_cli_out_of_range_is_one_line_and_no_work(tmp_path):
    result = subprocess.run(
        [CORPUS, "run", f"out={tmp_path}", "curate.fineweb.line_punct_thr=7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: command line: key 'curate.fineweb.line_punct_thr': expected a value from 0 to 1, got 7"
    ]
    assert not (tmp_path / "work").exists()


def test_cli_bad_second_profile_fails_before_any_work(tmp_path):
    result = subprocess.run(
        [CORPUS, "run", f"out={tmp_path}", f"input={DEMO}", "profile=default,no_such_profile"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: unknown profile 'no_such_profile'"), lines
    assert not list((tmp_path / "work").glob("*/curate"))
