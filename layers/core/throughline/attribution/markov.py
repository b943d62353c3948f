"""Markov attribution, exact: removal effects from the absorbing chain, solved as linear systems (no simulation).

States follow ChannelAttribution's encoding: ``(start)``, then for order k the windows of k consecutive channels of
a path (a path shorter than k is one state), consecutive equal states merged, then ``(conversion)`` or ``(null)``.
A path with c conversions and n nulls adds weight c + n to each of its transitions, c to the last state →
conversion and n to the last state → null. Transition probabilities are the row-normalized weights.

P = probability of absorption in ``(conversion)`` from ``(start)``: x = (I − Q)⁻¹ b with Q the transient part and b
the one-step conversion probabilities. Removing channel c makes every state containing c lead to ``(null)``, i.e.
drops those states from the system; RE_c = 1 − P₋c / P, clipped at 0.

Revenue: each transition into ``(conversion)`` carries the mean revenue of the conversions leaving that state (as
ChannelAttribution samples it), so V = expected revenue per journey from ``(start)`` solves the same system with that
reward, and the revenue removal effect is 1 − V₋c / V. Credits are proportional to the removal effects.
"""

from __future__ import annotations

import numpy as np

from throughline.attribution.paths import PathTable

MAX_STATES = 2_000


def removal_effects(table: PathTable, order: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """Removal effects of every label, for conversions and for revenue."""
    if order < 1:
        raise ValueError("the Markov order must be at least 1")
    chain = _Chain(table, order)
    conversion = chain.absorption(chain.to_conversion)
    value = chain.absorption(chain.to_value)
    by_conversion, by_value = {}, {}
    for label in table.labels:
        keep = chain.states_without(label)
        by_conversion[label] = _effect(chain.absorption(chain.to_conversion, keep), conversion)
        by_value[label] = _effect(chain.absorption(chain.to_value, keep), value)
    return by_conversion, by_value


def _effect(without: float, whole: float) -> float:
    return max(0.0, 1.0 - without / whole) if whole > 0 else 0.0


class _Chain:
    """The transient part of the chain: state 0 is (start), then every observed state."""

    def __init__(self, table: PathTable, order: int) -> None:
        self.states: dict[tuple[str, ...], int] = {(): 0}
        sources: list[int] = []
        targets: list[int] = []
        weights: list[float] = []
        last_states: list[int] = []
        used: list[int] = []
        for index, path in enumerate(table.paths):
            weight = table.conversions[index] + table.nulls[index]
            if weight <= 0:
                continue
            previous = 0
            for state in _encode(path, order):
                current = self.states.setdefault(state, len(self.states))
                if current != previous:
                    sources.append(previous)
                    targets.append(current)
                    weights.append(weight)
                    previous = current
            last_states.append(previous)
            used.append(index)
        size = len(self.states)
        if size > MAX_STATES:
            raise ValueError(
                f"the order-{order} chain has {size} states (more than {MAX_STATES}): use a lower order or fewer labels"
            )
        flow = np.bincount(
            np.asarray(sources, dtype=np.int64) * size + np.asarray(targets, dtype=np.int64),
            weights=np.asarray(weights, dtype=np.float64),
            minlength=size * size,
        ).reshape(size, size)
        ends = np.asarray(last_states, dtype=np.int64)
        converted = np.bincount(ends, weights=table.conversions[used], minlength=size)
        lost = np.bincount(ends, weights=table.nulls[used], minlength=size)
        earned = np.bincount(ends, weights=table.revenue[used], minlength=size)
        outgoing = flow.sum(axis=1) + converted + lost
        safe = np.where(outgoing > 0, outgoing, 1.0)
        self.transient = flow / safe[:, None]
        self.to_conversion = converted / safe
        self.to_value = earned / safe
        self.labels_of = [set(state) for state in self.states]

    def states_without(self, label: str) -> np.ndarray:
        return np.array([label not in labels for labels in self.labels_of])

    def absorption(self, reward: np.ndarray, keep: np.ndarray | None = None) -> float:
        """Expected reward collected on the way to absorption, from (start)."""
        q, b = self.transient, reward
        if keep is not None:
            q, b = q[np.ix_(keep, keep)], b[keep]
        return float(np.linalg.solve(np.eye(len(b)) - q, b)[0])


def _encode(path: tuple[str, ...], order: int) -> list[tuple[str, ...]]:
    if len(path) <= order:
        return [path]
    return [path[start : start + order] for start in range(len(path) - order + 1)]
