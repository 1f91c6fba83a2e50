"""Properties of the factor solver: caps hold, and budgets and top-tier shares are met when reachable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.mix.solver import MIN_FACTOR, solve_factors, water_fill

tokens_st = st.lists(st.integers(0, 10**9), min_size=1, max_size=6)
factor_st = st.floats(0.0, 10.0, allow_nan=False)


@st.composite
def tiers(draw):
    tokens = draw(tokens_st)
    factors = draw(st.lists(factor_st, min_size=len(tokens), max_size=len(tokens)))
    return tokens, factors


@given(tiers(), st.integers(1, 8))
def test_without_targets_factors_are_the_profile_capped(t, cap):
    tokens, factors = t
    sol = solve_factors(tokens, factors, cap)
    for g, f, n in zip(sol.factors, factors, tokens, strict=True):
        assert g == (min(f, cap) if n > 0 and f >= MIN_FACTOR else 0.0)


@given(tiers(), st.integers(1, 8), st.floats(1.0, 1e10))
def test_budget_is_met_or_everything_is_capped(t, cap, budget):
    tokens, factors = t
    sol = solve_factors(tokens, factors, cap, token_budget=budget)
    assert all(0 <= g <= cap + 1e-9 for g in sol.factors)
    active = [i for i, (n, f) in enumerate(zip(tokens, factors, strict=True)) if n > 0 and f >= MIN_FACTOR]
    if sol.feasible:
        if active:
            assert sol.total_tokens == pytest.approx(budget, rel=1e-9)
        # factors keep their ratios among tiers below the cap
        free = [i for i in active if sol.factors[i] < cap - 1e-9]
        for i in free:
            for j in free:
                assert sol.factors[i] * factors[j] == pytest.approx(sol.factors[j] * factors[i], rel=1e-6)
    else:
        assert all(sol.factors[i] == cap for i in active)
        assert sol.total_tokens < budget


@given(tiers(), st.integers(1, 8), st.floats(0.01, 0.99), st.none() | st.floats(1e3, 1e11))
@settings(max_examples=300)
def test_top_share_is_met_when_reachable(t, cap, share, budget):
    tokens, factors = t
    sol = solve_factors(tokens, factors, cap, token_budget=budget, top_share=share)
    assert all(0 <= g <= cap * (1 + 1e-9) for g in sol.factors)
    others = any(n > 0 and f >= MIN_FACTOR for n, f in zip(tokens[1:], factors[1:], strict=True))
    if tokens[0] > 0 and others and sol.total_tokens > 0:
        assert sol.shares[0] == pytest.approx(share, rel=1e-6)
        if budget is not None and sol.feasible:
            assert sol.total_tokens == pytest.approx(budget, rel=1e-6)
        if budget is not None and not sol.feasible:
            assert sol.total_tokens < budget * (1 + 1e-9)
    else:
        assert not sol.feasible


def test_share_with_capped_top_tier_scales_the_others_down():
    # top tier: 100 tokens, others 1000 at factor 1; 50% share would need 10 epochs of the top tier
    sol = solve_factors([100, 1000], [3.0, 1.0], 4, top_share=0.5)
    assert sol.factors[0] == 4.0
    assert sol.factors[1] == pytest.approx(0.4)
    assert sol.shares[0] == pytest.approx(0.5)


def test_water_fill_closed_form():
    g, reached = water_fill([100, 100], [1.0, 3.0], 4.0, 600.0)
    # a*3 hits the cap at a=4/3 (sum 100*4/3+400=533 < 600), so tier 1 sits at 4 and tier 0 takes 2
    assert reached and g == pytest.approx([2.0, 4.0])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="top_share"):
        solve_factors([1], [1], 4, top_share=1.5)
    with pytest.raises(ValueError, match="token_budget"):
        solve_factors([1], [1], 4, token_budget=0)
