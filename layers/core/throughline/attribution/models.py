"""The eight attribution models over a path table, each splitting exactly the total conversions and revenue.

Heuristic models credit the touches of each converting path:

- ``first_click`` / ``last_click``: all to the first / last touch;
- ``last_non_direct``: all to the last touch that is not direct, or to direct when the path is all direct;
- ``linear``: 1/n to each of the n touches (a channel touched twice gets 2/n, as in ChannelAttribution);
- ``time_decay``: touch i gets 2^(−Δtᵢ/h) / Σⱼ 2^(−Δtⱼ/h), Δt = time from the touch to the conversion, h = half-life;
- ``position_based``: 40 % first, 40 % last, 20 % split over the middle; one touch 100 %, two touches 50/50.

``markov`` (removal effects, :mod:`.markov`) and ``shapley`` (:mod:`.shapley`) are data-driven. Each model yields a
weight per label for conversions and one for revenue; the totals are then apportioned exactly by largest remainder
(:mod:`.rounding`): conversions in units of 0.0001, revenue in kopecks, so every model's column sums to the totals.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import NamedTuple

from throughline.attribution import markov, shapley
from throughline.attribution.paths import CONVERSION_PLACES, MONEY_PLACES, PathTable, conversion_units, money_units
from throughline.attribution.rounding import apportion

ALL_MODELS = (
    "first_click",
    "last_click",
    "last_non_direct",
    "linear",
    "time_decay",
    "position_based",
    "markov",
    "shapley",
)
TIMED_MODELS = frozenset({"time_decay"})
DEFAULT_HALF_LIFE_DAYS = 7.0


class ChannelCredit(NamedTuple):
    """What one model credits to one channel (or source, or campaign: whatever the path table's labels are)."""

    channel: str
    conversions: Decimal
    revenue: Decimal


Weights = tuple[dict[str, float], dict[str, float]]


def attribute(
    table: PathTable,
    models: Iterable[str] = ALL_MODELS,
    *,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    markov_order: int = 1,
) -> dict[str, list[ChannelCredit]]:
    """Credits per model, one row per label of the table (sorted by label), summing exactly to the table's totals.

    ``time_decay`` needs touch times (:func:`build_paths` keeps them; a path file may lack them): asking for it on
    a table without times is an error.
    """
    models = list(models)
    unknown = [model for model in models if model not in ALL_MODELS]
    if unknown:
        raise ValueError(f"unknown model {', '.join(unknown)}; known: {', '.join(ALL_MODELS)}")
    if "time_decay" in models and not table.has_times:
        raise ValueError("time_decay needs touch times, and these paths have none")
    if half_life_days <= 0:
        raise ValueError("the half-life must be positive")
    compute: dict[str, Callable[[], Weights]] = {
        "first_click": lambda: _per_path(table, _first),
        "last_click": lambda: _per_path(table, _last),
        "last_non_direct": lambda: _per_path(table, _last_non_direct(table.direct_label)),
        "linear": lambda: _per_path(table, _linear),
        "time_decay": lambda: _time_decay(table, half_life_days),
        "position_based": lambda: _per_path(table, _position_based),
        "markov": lambda: markov.removal_effects(table, markov_order),
        "shapley": lambda: shapley.shapley_values(table),
    }
    return {model: credits(table, *compute[model]()) for model in models}


def credits(table: PathTable, by_conversion: dict[str, float], by_revenue: dict[str, float]) -> list[ChannelCredit]:
    """The table's totals apportioned over its labels by the given weights (negative rounding noise counts as 0)."""
    labels = table.labels
    conversions = apportion(_weights(labels, by_conversion), conversion_units(table.total_conversions))
    revenue = apportion(_weights(labels, by_revenue), money_units(table.total_revenue))
    return [
        ChannelCredit(label, conversions[label] * CONVERSION_PLACES, revenue[label] * MONEY_PLACES) for label in labels
    ]


def _weights(labels: list[str], weights: dict[str, float]) -> dict[str, float]:
    return {label: max(0.0, weights.get(label, 0.0)) for label in labels}


Shares = Callable[[tuple[str, ...]], Iterable[tuple[str, float]]]


def _per_path(table: PathTable, shares: Shares) -> Weights:
    by_conversion: dict[str, float] = defaultdict(float)
    by_revenue: dict[str, float] = defaultdict(float)
    for path, conversions, revenue in zip(table.paths, table.conversions, table.revenue, strict=True):
        if conversions or revenue:
            for label, share in shares(path):
                by_conversion[label] += share * conversions
                by_revenue[label] += share * revenue
    return by_conversion, by_revenue


def _first(path: tuple[str, ...]) -> Iterable[tuple[str, float]]:
    return ((path[0], 1.0),)


def _last(path: tuple[str, ...]) -> Iterable[tuple[str, float]]:
    return ((path[-1], 1.0),)


def _last_non_direct(direct: str) -> Shares:
    def shares(path: tuple[str, ...]) -> Iterable[tuple[str, float]]:
        for label in reversed(path):
            if label != direct:
                return ((label, 1.0),)
        return ((direct, 1.0),)

    return shares


def _linear(path: tuple[str, ...]) -> Iterable[tuple[str, float]]:
    share = 1.0 / len(path)
    return ((label, share) for label in path)


def _position_based(path: tuple[str, ...]) -> Iterable[tuple[str, float]]:
    if len(path) == 1:
        return ((path[0], 1.0),)
    if len(path) == 2:
        return ((path[0], 0.5), (path[1], 0.5))
    middle = 0.2 / (len(path) - 2)
    return ((path[0], 0.4), *((label, middle) for label in path[1:-1]), (path[-1], 0.4))


def _time_decay(table: PathTable, half_life_days: float) -> Weights:
    by_conversion: dict[str, float] = defaultdict(float)
    by_revenue: dict[str, float] = defaultdict(float)
    for timed in table.timed or ():
        path = table.paths[timed.path_index]
        # Relative to the newest touch, so that old journeys do not underflow to 0 / 0.
        newest = min(timed.ages_days)
        decays = [2.0 ** (-(age - newest) / half_life_days) for age in timed.ages_days]
        whole = sum(decays)
        for label, decay in zip(path, decays, strict=True):
            by_conversion[label] += decay / whole * timed.conversions
            by_revenue[label] += decay / whole * timed.revenue
    return by_conversion, by_revenue
