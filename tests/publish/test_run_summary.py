"""The run summary printed (and logged) after a publish, read back from the run's journal as a resumed run does."""

from __future__ import annotations

from pipelines.graph import run_summary
from pipelines.publish.state import read_journal, write_journal


def test_summary_rows_and_tiers_are_the_primary_profiles_after_the_journal_round_trip(tmp_path):
    """`profile=default,civic`: the journal is saved with sorted keys, so 'civic' comes back first; the summary's
    top-level `mixture_rows` and `tiers` must still describe `pretrain/`, the primary (default) profile's."""
    profiles = {
        "default": {"primary": True, "rows": 598, "tiers": {"exemplary": 26, "prosocial": 94}},
        "civic": {"primary": False, "rows": 223, "tiers": {"civic": 40}},
    }
    write_journal(tmp_path, {"mode": "run", "version": "v1", "results": {"mix": {"profiles": profiles}}})
    journal = read_journal(tmp_path)
    assert next(iter(journal["results"]["mix"]["profiles"])) == "civic"  # the order that hid the bug
    summary = run_summary(journal)
    assert summary["mixture_rows"] == 598
    assert summary["tiers"] == {"exemplary": 26, "prosocial": 94}
