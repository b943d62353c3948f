"""Journeys as paths: each person's touches, cut at each conversion, aggregated into a path table.

The cut rule: a conversion's path is the person's touches after their previous conversion and up to this one,
oldest first; a touch at the same instant as the conversion counts before it. Conversions of one person at the same
instant share one path. Touches after a person's last conversion (or of a person who never converted in the window)
form one non-converting path. A conversion with no touch in its window gets the one-touch path ``(UNTRACKED,)``, so
every conversion and every rouble reaches some channel.

Identical paths are aggregated, as in ChannelAttribution's path table (path, total_conversions,
total_conversion_value, total_null): models then run on distinct paths with weights. Touch times are kept only for
converting paths (time decay needs the age of each touch at its conversion).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np

DIRECT = "direct"
UNTRACKED = "(no touches)"
CONVERSION_PLACES = Decimal("0.0001")
MONEY_PLACES = Decimal("0.01")
SECONDS_PER_DAY = 86_400.0


class TouchPoint(NamedTuple):
    """One touch of a journey. Anything with these attributes will do."""

    person_key: str
    at: datetime
    channel: str
    source: str = ""
    campaign: str = ""


class Conversion(NamedTuple):
    """A conversion (a won deal; or a lead or created deal, as the caller decides), revenue in the report currency."""

    person_key: str
    at: datetime
    revenue: Decimal = Decimal(0)


@dataclass(frozen=True)
class TimedConversions:
    """Conversions on one distinct path that share the touch ages (days from each touch to the conversion)."""

    path_index: int
    ages_days: tuple[float, ...]
    conversions: float
    revenue: float


@dataclass(frozen=True)
class PathTable:
    """Distinct paths with their weights. Totals are exact (conversions to 4 places, revenue to kopecks)."""

    paths: list[tuple[str, ...]]
    conversions: np.ndarray
    revenue: np.ndarray
    nulls: np.ndarray
    total_conversions: Decimal
    total_revenue: Decimal
    timed: list[TimedConversions] | None = None
    direct_label: str = DIRECT
    labels: list[str] = field(default_factory=list)

    @property
    def has_times(self) -> bool:
        return self.timed is not None

    def __len__(self) -> int:
        return len(self.paths)


Label = Callable[[Any], str]
LABELS: dict[str, Label] = {
    "channel": lambda touch: touch.channel,
    "source": lambda touch: touch.source or touch.channel,
    "campaign": lambda touch: (
        f"{touch.source or touch.channel} / {touch.campaign}" if touch.campaign else touch.source or touch.channel
    ),
}


def build_paths(
    touches: Iterable[Any],
    conversions: Iterable[Any],
    *,
    by: str | Label = "channel",
    direct_channel: str = DIRECT,
    untracked_label: str = UNTRACKED,
) -> PathTable:
    """The path table of the given journeys (see the module docstring for the cut rule).

    ``by`` names what a touch is credited as: ``channel`` (default), ``source`` (falls back to the channel) or
    ``campaign`` (``source / campaign``, falling back to the source), or any function of a touch. A direct touch
    (``channel == direct_channel``) is always labelled ``direct_channel``, so last-non-direct works at every level.
    """
    by_person, names = _journeys(touches, by, direct_channel)
    rank, label_at = _ranks(names)
    journeys = (
        (person, sorted([touch & ~_LABEL_MASK | rank[touch & _LABEL_MASK] for touch in packed]))
        for person, packed in by_person.items()
    )
    return _cut(journeys, label_at, conversions, direct_channel, untracked_label)


def packed_paths(
    people: list[Any],
    person: np.ndarray,
    micros: np.ndarray,
    code: np.ndarray,
    names: list[str],
    conversions: Iterable[Any],
    *,
    direct_channel: str = DIRECT,
    untracked_label: str = UNTRACKED,
) -> PathTable:
    """:func:`build_paths` of touches given as columns, already labelled: touch ``i`` is person ``people[person[i]]``
    at ``micros[i]`` (microseconds since the epoch, UTC) labelled ``names[code[i]]``. People are taken in the order of
    their numbers, which should be the order of their first touch (the path table's order, as ``build_paths``'s)."""
    if len(names) > _LABEL_MASK + 1:
        raise ValueError(f"more than {_LABEL_MASK + 1} distinct labels")
    rank, label_at = _ranks(names)
    ranks = np.asarray(rank, dtype=np.int32)[np.asarray(code, dtype=np.int64)]
    order = np.lexsort((ranks, micros, person))
    owners, ranks, times = np.asarray(person)[order], ranks[order], np.asarray(micros)[order]
    del order
    starts = np.flatnonzero(np.concatenate(([True], owners[1:] != owners[:-1]))) if len(owners) else owners[:0]
    if len(starts) != len(people) or not np.array_equal(owners[starts], np.arange(len(people))):
        raise ValueError("people must be numbered 0, 1, … and each must have a touch")
    del owners
    labels = np.array(label_at, dtype=object)[ranks].tolist() if len(label_at) else []
    return _cut_columns(people, starts, labels, times, ranks, label_at, conversions, direct_channel, untracked_label)


def _cut_columns(
    people: list[Any],
    starts: np.ndarray,
    labels: list[str],
    times: np.ndarray,
    ranks: np.ndarray,
    label_at: list[str],
    conversions: Iterable[Any],
    direct_channel: str,
    untracked_label: str,
) -> PathTable:
    """``_cut`` over journeys given as sorted columns (person ``k``'s touches from ``starts[k]``): a journey that never
    converts needs only its labels; only a converting person's touches are packed in integers."""
    won: dict[Any, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for conversion in conversions:
        won[conversion.person_key].append((conversion.at, Decimal(conversion.revenue)))
    table = _Aggregate()
    nulls: Counter[tuple[str, ...]] = Counter()
    block = _BLOCK
    for first in range(0, len(starts), block):
        bounds = starts[first : first + block + 1].tolist()
        if first + block >= len(starts):
            bounds.append(len(labels))
        for person, start, end in zip(people[first : first + block], bounds, bounds[1:], strict=False):
            person_won = won.pop(person, None)
            if person_won is None:
                nulls[tuple(labels[start:end])] += 1
                continue
            journey = [
                at << _LABEL_BITS | label
                for at, label in zip(times[start:end].tolist(), ranks[start:end].tolist(), strict=True)
            ]
            _cut_one(journey, person_won, label_at, table, nulls, untracked_label)
    return _finish(won, table, nulls, untracked_label, direct_channel)


def _ranks(names: list[str]) -> tuple[list[int], list[str]]:
    """Label codes in the order of the labels themselves, so a plain sort of the packed touches orders each journey by
    time and, at one instant, by label: each code's rank, and the labels by rank."""
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = [0] * len(names)
    for position, code in enumerate(order):
        rank[code] = position
    return rank, [names[code] for code in order]


def _cut(
    journeys: Iterable[tuple[Any, list[int]]],
    label_at: list[str],
    conversions: Iterable[Any],
    direct_channel: str,
    untracked_label: str,
) -> PathTable:
    """The path table of each person's journey (touches packed with their label's rank, sorted), cut at their
    conversions."""
    won: dict[Any, list[tuple[datetime, Decimal]]] = defaultdict(list)
    for conversion in conversions:
        won[conversion.person_key].append((conversion.at, Decimal(conversion.revenue)))

    table = _Aggregate()
    nulls: Counter[tuple[str, ...]] = Counter()  # most journeys never convert: count them in one place
    for person, journey in journeys:
        person_won = won.pop(person, None)
        if person_won is None:
            nulls[tuple([label_at[touch & _LABEL_MASK] for touch in journey])] += 1
            continue
        _cut_one(journey, person_won, label_at, table, nulls, untracked_label)
    return _finish(won, table, nulls, untracked_label, direct_channel)


def _finish(
    won: dict[Any, list[tuple[datetime, Decimal]]],
    table: _Aggregate,
    nulls: Counter[tuple[str, ...]],
    untracked_label: str,
    direct_channel: str,
) -> PathTable:
    """The table, once every journey is cut: the conversions of people without a single touch, and the nulls."""
    for person_won in won.values():  # people who converted without a single touch
        for _, count, revenue in _by_instant(person_won):
            table.add_conversions((untracked_label,), (0.0,), count, revenue)
    for path, count in nulls.items():
        table.add_null(path, count)
    return table.build(direct_channel)


def _cut_one(
    journey: list[int],
    person_won: list[tuple[datetime, Decimal]],
    label_at: list[str],
    table: _Aggregate,
    nulls: Counter[tuple[str, ...]],
    untracked_label: str,
) -> None:
    """One converting person's journey (packed touches, sorted) cut at their conversions."""
    start = 0
    for at, count, revenue in _by_instant(person_won):
        moment = _micros(at)
        limit = moment << _LABEL_BITS | _LABEL_MASK  # every touch at or before the conversion
        end = start
        while end < len(journey) and journey[end] <= limit:
            end += 1
        window = journey[start:end]
        if window:
            path = tuple([label_at[touch & _LABEL_MASK] for touch in window])
            # as timedelta.total_seconds() / SECONDS_PER_DAY, to the last bit
            ages = tuple([(moment - (touch >> _LABEL_BITS)) / 1_000_000 / SECONDS_PER_DAY for touch in window])
        else:
            path, ages = (untracked_label,), (0.0,)
        table.add_conversions(path, ages, count, revenue)
        start = end
    if start < len(journey):
        nulls[tuple([label_at[touch & _LABEL_MASK] for touch in journey[start:]])] += 1


def path_table(
    rows: Iterable[tuple[tuple[str, ...], Decimal, Decimal, Decimal, tuple[float, ...] | None]],
    *,
    direct_label: str = DIRECT,
) -> PathTable:
    """A path table from already aggregated rows ``(path, conversions, revenue, nulls, ages_days or None)``,
    e.g. ChannelAttribution's path table. Rows with the same path are merged; the table has times only when every
    row with conversions gives them."""
    table = _Aggregate()
    for path, conversions, revenue, nulls, ages_days in rows:
        if not path:
            raise ValueError("a path needs at least one touch")
        if ages_days is not None and len(ages_days) != len(path):
            raise ValueError(f"{len(ages_days)} touch ages for a path of {len(path)} touches")
        table.add_conversions(path, ages_days, conversions, revenue)
        if nulls:
            table.add_null(path, float(nulls))
    return table.build(direct_label)


_BLOCK = 1 << 16  # people whose start offsets are made Python integers at a time (packed_paths)
_LABEL_BITS = 24  # a touch packed in one integer: microseconds since the epoch << 24 | the label's code
_LABEL_MASK = (1 << _LABEL_BITS) - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def _micros(at: datetime) -> int:
    """Exact microseconds since the epoch (a naive time is read as UTC)."""
    return (at - (_NAIVE_EPOCH if at.tzinfo is None else _EPOCH)) // _MICROSECOND


def _journeys(touches: Iterable[Any], by: str | Label, direct: str) -> tuple[dict[Any, list[int]], list[str]]:
    """Each person's touches, unsorted, each packed in one integer (time and label code: some 44 bytes a touch where a
    (datetime, label) tuple took 112 — the journeys are the attribution's memory); and the labels by code."""
    codes: dict[str, int] = {}
    names: list[str] = []

    def code(label: str) -> int:
        found = codes.get(label)
        if found is None:
            if len(names) > _LABEL_MASK:
                raise ValueError(f"more than {_LABEL_MASK + 1} distinct labels")
            found = codes[label] = len(names)
            names.append(label)
        return found

    by_person: dict[Any, list[int]] = defaultdict(list)
    label_of = None if by == "channel" else LABELS[by] if isinstance(by, str) else by
    epoch, naive_epoch, microsecond = _EPOCH, _NAIVE_EPOCH, _MICROSECOND
    for touch in touches:
        channel = touch.channel
        label = channel if label_of is None or channel == direct else label_of(touch)
        index = codes.get(label)
        at = touch.at  # _micros, inline: this loop runs once a touch, millions of times
        micros = (at - (naive_epoch if at.tzinfo is None else epoch)) // microsecond
        by_person[touch.person_key].append(micros << _LABEL_BITS | (code(label) if index is None else index))
    return by_person, names


def _at(item: tuple[datetime, Any]) -> datetime:
    return item[0]


def _by_instant(conversions: list[tuple[datetime, Decimal]]) -> Iterable[tuple[datetime, int, Decimal]]:
    conversions.sort(key=_at)
    index = 0
    while index < len(conversions):
        at, revenue, count = conversions[index][0], Decimal(0), 0
        while index < len(conversions) and conversions[index][0] == at:
            revenue += conversions[index][1]
            count += 1
            index += 1
        yield at, count, revenue


class _Aggregate:
    """Accumulates distinct paths; exact totals in integer units (1/10 000 conversion, kopecks)."""

    def __init__(self) -> None:
        self.index: dict[tuple[str, ...], int] = {}
        self.paths: list[tuple[str, ...]] = []
        self.conversion_units: list[int] = []
        self.kopecks: list[int] = []
        self.nulls: list[float] = []
        self.timed: list[TimedConversions] | None = []

    def _slot(self, path: tuple[str, ...]) -> int:
        slot = self.index.get(path)
        if slot is None:
            slot = self.index[path] = len(self.paths)
            self.paths.append(path)
            self.conversion_units.append(0)
            self.kopecks.append(0)
            self.nulls.append(0.0)
        return slot

    def add_null(self, path: tuple[str, ...], count: float = 1.0) -> None:
        self.nulls[self._slot(path)] += count

    def add_conversions(
        self, path: tuple[str, ...], ages_days: tuple[float, ...] | None, count: Decimal | int, revenue: Decimal
    ) -> None:
        if revenue < 0:
            raise ValueError(f"negative revenue {revenue} on path {' > '.join(path)}")
        units, kopecks = conversion_units(count), money_units(revenue)
        if kopecks and not units:
            raise ValueError(f"revenue {revenue} without a conversion on path {' > '.join(path)}")
        slot = self._slot(path)
        self.conversion_units[slot] += units
        self.kopecks[slot] += kopecks
        if ages_days is None:
            if units:
                self.timed = None
        elif self.timed is not None and units:
            self.timed.append(TimedConversions(slot, ages_days, units / 10_000, kopecks / 100))

    def build(self, direct_label: str) -> PathTable:
        labels = sorted({label for path in self.paths for label in path})
        return PathTable(
            paths=self.paths,
            conversions=np.array(self.conversion_units, dtype=np.float64) / 10_000,
            revenue=np.array(self.kopecks, dtype=np.float64) / 100,
            nulls=np.array(self.nulls, dtype=np.float64),
            total_conversions=Decimal(sum(self.conversion_units)) * CONVERSION_PLACES,
            total_revenue=Decimal(sum(self.kopecks)) * MONEY_PLACES,
            timed=self.timed,
            direct_label=direct_label,
            labels=labels,
        )


def conversion_units(count: Decimal | int | float) -> int:
    """Conversions in units of 1/10 000 (exact for whole counts; other counts rounded half-even)."""
    return int((Decimal(count) / CONVERSION_PLACES).to_integral_value())


def money_units(amount: Decimal | int | float) -> int:
    """An amount in kopecks, rounded half-even."""
    return int((Decimal(amount) / MONEY_PLACES).to_integral_value())
