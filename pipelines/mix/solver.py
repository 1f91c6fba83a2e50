"""Solve the upsampling factor of each tier from a token budget and a top-tier share, under the epoch cap.

A profile gives each tier a factor f_t (copies per document). Users often care about two numbers instead:
how many tokens the mixture should have (B) and what share of them the top tier should supply (s). Guessing
factors to hit them is error-prone, so we solve for them, in closed form:

* no budget, no share: g_t = min(f_t, E), where E = max_epochs;
* budget only: g_t = min(E, a * f_t), with the scale a found by water-filling (sum_t g_t T_t = B is
  piecewise linear and increasing in a; T_t = tokens of tier t);
* share only: the other tiers keep min(f_t, E); the top tier gets g_0 = s/(1-s) * R / T_0 where R is their
  tokens. If that exceeds E, the top tier is capped at E and the others are water-filled down (a < 1) to
  honour the share;
* budget and share: the top tier gets s*B tokens, the others (1-s)*B by water-filling their relative factors.

When the cap makes a target unreachable, the share wins over the budget (it is the community's choice; the
budget is an upper bound on compute) and `feasible` is False with a note saying what was reached.
Factors are real numbers: the mix stage realises the fractional part by giving one more copy to a
token-weighted fraction of the tier's documents, so the tier's token total matches g_t * T_t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

MIN_FACTOR = 1e-9  # smaller factors count as 0 (dropped): they would only produce float noise


@dataclass
class Solution:
    factors: list[float]
    target_tokens: list[float]
    feasible: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> float:
        return float(sum(self.target_tokens))

    @property
    def shares(self) -> list[float]:
        total = self.total_tokens
        return [t / total if total else 0.0 for t in self.target_tokens]


def water_fill(
    tokens: Sequence[float], factors: Sequence[float], cap: float, target: float
) -> tuple[list[float], bool]:
    """Scale `factors` by one a >= 0 so that sum(min(cap, a*f) * T) == target; return (g, reached).

    Tiers with f == 0 or T == 0 stay at 0. When even a -> inf falls short, every active tier sits at the cap
    and `reached` is False.
    """
    active = [i for i, (t, f) in enumerate(zip(tokens, factors, strict=True)) if t > 0 and f > 0]
    out = [0.0] * len(tokens)
    if target <= 0 or not active:
        return out, target <= 0
    maximum = sum(cap * tokens[i] for i in active)
    if target >= maximum:
        for i in active:
            out[i] = float(cap)
        return out, target <= maximum * (1 + 1e-12)
    # breakpoints a_i = cap / f_i, in increasing order: tiers saturate one by one. Between two breakpoints
    # the sum is saturated + a * linear; sums are recomputed (not updated) so tiny factors stay exact.
    order = sorted(active, key=lambda i: cap / factors[i])
    scale = math.inf
    for k, i in enumerate(order):
        saturated = sum(cap * tokens[j] for j in order[:k])
        linear = sum(factors[j] * tokens[j] for j in order[k:])
        if linear <= 0:
            continue
        candidate = (target - saturated) / linear
        if candidate <= cap / factors[i]:
            scale = candidate
            break
    for i in active:
        out[i] = min(float(cap), scale * factors[i])
    return out, True


def solve_factors(
    tokens: Sequence[float],
    factors: Sequence[float],
    max_epochs: float,
    token_budget: float | None = None,
    top_share: float | None = None,
) -> Solution:
    """Per-tier factors (tier 0 is the top tier) that honour the cap, and the budget/share when given."""
    if len(tokens) != len(factors):
        raise ValueError(f"tokens ({len(tokens)}) and factors ({len(factors)}) differ in length")
    if any(t < 0 for t in tokens) or any(f < 0 for f in factors):
        raise ValueError("tokens and factors must be >= 0")
    if top_share is not None and not 0 < top_share <= 1:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    if token_budget is not None and token_budget <= 0:
        raise ValueError(f"token_budget must be > 0, got {token_budget}")
    cap = float(max_epochs)
    tokens = [float(t) for t in tokens]
    factors = [float(f) if f >= MIN_FACTOR else 0.0 for f in factors]
    base = [min(f, cap) for f in factors]
    notes: list[str] = []
    feasible = True

    if top_share is not None and tokens[0] <= 0:
        notes.append("top tier has no documents: top_share ignored")
        feasible = False
        top_share = None

    if top_share is None:
        if token_budget is None:
            g = base
        else:
            g, reached = water_fill(tokens, factors, cap, token_budget)
            if not reached:
                feasible = False
                notes.append(
                    f"token_budget {token_budget:.0f} exceeds what the cap allows; every tier is at {cap:g} epochs"
                )
        return _solution(tokens, g, feasible, notes)

    s = float(top_share)
    rest_tokens = [0.0, *tokens[1:]]
    rest_factors = [0.0, *factors[1:]]
    if s >= 1.0:
        top = min(token_budget / tokens[0], cap) if token_budget is not None else (base[0] or 1.0)
        if token_budget is not None and token_budget / tokens[0] > cap:
            feasible = False
            notes.append(f"token_budget unreachable from the top tier alone at {cap:g} epochs")
        return _solution(tokens, [top] + [0.0] * (len(tokens) - 1), feasible, notes)
    rest_max = sum(cap * t for t, f in zip(rest_tokens, rest_factors, strict=True) if f > 0 and t > 0)
    if rest_max <= 0:
        notes.append("no other tier has documents (or a factor): the top tier is the whole mixture")
        top = min(token_budget / tokens[0], cap) if token_budget is not None else (base[0] or 1.0)
        return _solution(tokens, [top] + [0.0] * (len(tokens) - 1), False, notes)

    if token_budget is None:
        rest = sum(f * t for f, t in zip(base[1:], tokens[1:], strict=True))
        top = s / (1 - s) * rest / tokens[0]
        if top <= cap:
            return _solution(tokens, [top, *base[1:]], True, notes)
        g_rest, _ = water_fill(rest_tokens, rest_factors, cap, (1 - s) / s * cap * tokens[0])
        notes.append(f"top tier capped at {cap:g} epochs: the other tiers were scaled down to keep the share")
        return _solution(tokens, [cap, *g_rest[1:]], True, notes)

    top_tokens = s * token_budget
    if top_tokens > cap * tokens[0]:
        top_tokens = cap * tokens[0]
        feasible = False
        notes.append(
            f"top tier capped at {cap:g} epochs: budget reduced to {top_tokens / s:.0f} tokens to keep the share"
        )
    rest_target = top_tokens * (1 - s) / s
    g_rest, reached = water_fill(rest_tokens, rest_factors, cap, rest_target)
    if not reached:
        feasible = False
        top_tokens = s / (1 - s) * rest_max
        notes.append(
            f"other tiers capped at {cap:g} epochs: budget reduced to {rest_max / (1 - s):.0f} tokens to keep the share"
        )
    return _solution(tokens, [top_tokens / tokens[0], *g_rest[1:]], feasible, notes)


def _solution(tokens: list[float], g: list[float], feasible: bool, notes: list[str]) -> Solution:
    g = [0.0 if t <= 0 else float(x) for t, x in zip(tokens, g, strict=True)]
    return Solution(
        factors=g,
        target_tokens=[x * t for x, t in zip(g, tokens, strict=True)],
        feasible=feasible,
        notes=notes,
    )
