"""Shapley attribution, exact.

The coalition value is the one of Zhao et al. (2018) and of DP6's marketing-attribution-models with
``value_column="conversions"``: v(S) = the conversions (separately: the revenue) of the paths whose set of
channels is a subset of S. v(∅) = 0 and v(all channels) = the total, so the Shapley values split the total exactly.

Up to ``EXACT_LIMIT`` (12) channels the values are computed from the definition over all 2ⁿ coalitions: the path
totals by channel set R(T) are summed over subsets with a zeta transform over bitmasks (v = Σ_{T⊆S} R(T)), then
φ_c = Σ_{S∌c} |S|!(n−|S|−1)!/n! · (v(S∪{c}) − v(S)) — 4 096 coalitions, instant.

Above 12 channels nothing is grouped or approximated: this v is a sum of unanimity games (one per channel set T,
with dividend R(T)), so its Shapley value is exactly φ_c = Σ_{T∋c} R(T)/|T| — each path's conversions split equally
over its distinct channels. That formula is linear in the number of paths and is used as is; a test checks it
against the 2ⁿ computation. (Up to 12 channels the two agree to rounding; the definition is kept there as the
reference the formula is checked against.)
"""

from __future__ import annotations

from math import factorial

import numpy as np

from throughline.attribution.paths import PathTable

EXACT_LIMIT = 12


def shapley_values(table: PathTable, *, exact_limit: int = EXACT_LIMIT) -> tuple[dict[str, float], dict[str, float]]:
    """Shapley values of every label, for conversions and for revenue."""
    labels = table.labels
    converting = np.flatnonzero((table.conversions > 0) | (table.revenue > 0))  # v ignores the other paths
    sets = [frozenset(table.paths[index]) for index in converting]
    conversions, revenue = table.conversions[converting], table.revenue[converting]
    if len(labels) <= exact_limit:
        return _by_coalitions(labels, sets, conversions), _by_coalitions(labels, sets, revenue)
    return _by_dividends(labels, sets, conversions), _by_dividends(labels, sets, revenue)


def _by_coalitions(labels: list[str], sets: list[frozenset[str]], amounts: np.ndarray) -> dict[str, float]:
    n = len(labels)
    bit = {label: 1 << position for position, label in enumerate(labels)}
    masks = np.array([sum(bit[label] for label in channel_set) for channel_set in sets], dtype=np.int64)
    value = np.bincount(masks, weights=amounts, minlength=1 << n).astype(np.float64)
    for position in range(n):  # zeta transform: value[S] = Σ_{T ⊆ S} R(T)
        blocks = value.reshape(-1, 2, 1 << position)
        blocks[:, 1, :] += blocks[:, 0, :]
    everyone = np.arange(1 << n)
    size = np.zeros(1 << n, dtype=np.int64)
    for position in range(n):
        size += (everyone >> position) & 1
    weight = np.array([factorial(s) * factorial(n - s - 1) / factorial(n) for s in range(n)] + [0.0])
    result = {}
    for position, label in enumerate(labels):
        without = everyone[(everyone >> position) & 1 == 0]
        gains = value[without | (1 << position)] - value[without]
        result[label] = float(np.dot(weight[size[without]], gains))
    return result


def _by_dividends(labels: list[str], sets: list[frozenset[str]], amounts: np.ndarray) -> dict[str, float]:
    result = dict.fromkeys(labels, 0.0)
    for channel_set, amount in zip(sets, amounts, strict=True):
        if amount:
            share = float(amount) / len(channel_set)
            for label in channel_set:
                result[label] += share
    return result
