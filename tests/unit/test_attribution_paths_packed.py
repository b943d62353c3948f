"""build_paths packs each touch in one integer (time and label code) to save memory: the path table must be the one
the (datetime, label) tuples gave — same paths, weights and touch ages, ties at one instant ordered by label."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from throughline.attribution.paths import SECONDS_PER_DAY, UNTRACKED, Conversion, TouchPoint, build_paths

LABELS = ("social", "direct", "paid_search", "email", "organic_search", "referral")  # first seen out of order


def reference(touches, conversions):
    """The tuple-based cut of build_paths before packing: {path: [conversions, revenue, nulls, [ages...]]}."""
    journeys = defaultdict(list)
    for touch in touches:
        journeys[touch.person_key].append((touch.at, touch.channel))
    won = defaultdict(list)
    for conversion in conversions:
        won[conversion.person_key].append((conversion.at, conversion.revenue))
    table: dict = defaultdict(lambda: [0, Decimal(0), 0, []])
    for person, journey in journeys.items():
        journey.sort()
        instants = Counter()
        money = defaultdict(Decimal)
        for at, revenue in won.pop(person, []):
            instants[at] += 1
            money[at] += revenue
        start = 0
        for at in sorted(instants):
            end = start
            while end < len(journey) and journey[end][0] <= at:
                end += 1
            window = journey[start:end]
            path = tuple(label for _, label in window) or (UNTRACKED,)
            ages = tuple((at - moment).total_seconds() / SECONDS_PER_DAY for moment, _ in window) or (0.0,)
            row = table[path]
            row[0] += instants[at]
            row[1] += money[at]
            row[3].append(ages)
            start = end
        if start < len(journey):
            table[tuple(label for _, label in journey[start:])][2] += 1
    for person_won in won.values():  # converted without a single touch: one path per instant
        instants = Counter(at for at, _ in person_won)
        row = table[(UNTRACKED,)]
        for _at, revenue in person_won:
            row[0] += 1
            row[1] += revenue
        row[3].extend([(0.0,)] * len(instants))
    return table


@pytest.mark.parametrize("seed", range(5))
def test_packed_journeys_give_the_tuple_paths(seed: int) -> None:
    rng = random.Random(seed)
    zones = (UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5)))
    base = datetime(2026, 11, 1, tzinfo=UTC)
    touches, conversions = [], []
    for person in range(300):
        moments = [base + timedelta(minutes=rng.randrange(0, 40_000), microseconds=rng.randrange(3)) for _ in range(4)]
        for _ in range(rng.randrange(0, 7)):
            at = rng.choice(moments).astimezone(rng.choice(zones))  # ties at one instant, written in other zones
            touches.append(TouchPoint(f"p{person}", at, rng.choice(LABELS)))
        for _ in range(rng.choice((0, 0, 1, 2))):
            at = rng.choice(moments) + timedelta(minutes=rng.choice((0, 0, 5)))
            conversions.append(Conversion(f"p{person}", at, Decimal(rng.randrange(100, 10_000))))
    expected = reference(touches, conversions)
    table = build_paths(touches, conversions)
    assert {path for path, row in expected.items()} == set(table.paths)
    for index, path in enumerate(table.paths):
        conv, revenue, nulls, _ = expected[path]
        assert (table.conversions[index], table.revenue[index], table.nulls[index]) == (conv, float(revenue), nulls)
    got_ages = Counter((table.paths[item.path_index], item.ages_days) for item in table.timed or [])
    assert got_ages == Counter((path, ages) for path, row in expected.items() for ages in row[3])


def test_naive_times_are_read_as_utc_and_labels_beyond_channels_work() -> None:
    naive = datetime(2026, 11, 5, 10)
    touches = [TouchPoint("a", naive, "social", "vk", "Зима"), TouchPoint("a", naive, "direct"),
               TouchPoint("a", naive - timedelta(days=1), "paid_search", "yandex", "777")]  # fmt: skip
    table = build_paths(touches, [Conversion("a", naive + timedelta(hours=12), Decimal(10))], by="campaign")
    assert table.paths == [("yandex / 777", "direct", "vk / Зима")]  # same instant: by label
    assert table.timed[0].ages_days == (1.5, 0.5, 0.5)
