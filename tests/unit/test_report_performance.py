"""What keeps the 365-day report inside a Lambda's CPU and memory, without changing a figure: the dynamics book holds
a long period's days under their weeks, and the cyclic collector is paused only while the report is built."""

from __future__ import annotations

import gc
from datetime import date, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from test_report_build import STATUSES, lead

from throughline.report.build import build_report, previous_period
from throughline.report.dynamics import LEADS, SPEND, DynamicsBook
from throughline.report.funnel import StageBook
from throughline.report.models import Period
from throughline.report.rates import RateBook

YEAR = Period(date_from=date(2025, 12, 3), date_to=date(2026, 12, 1))  # Wednesday to Tuesday: both ends clipped


def test_a_long_period_keeps_one_cell_a_week_and_the_same_points() -> None:
    row = SimpleNamespace(channel="paid_search")
    weekly, daily = DynamicsBook(YEAR), DynamicsBook()
    day = YEAR.date_from
    while day <= YEAR.date_to:
        for book in (weekly, daily):
            book.add(SPEND, [(row, day.toordinal(), Decimal("10.01"))])
            book.add(LEADS, [(row, day.toordinal(), 2)])
            book.won(row, day.toordinal(), Decimal("100"))
        day += timedelta(days=1)
    for book in (weekly, daily):  # a day either side of the period is in no point, kept under no week
        book.add(SPEND, [(row, (YEAR.date_from - timedelta(days=1)).toordinal(), Decimal("1"))])
        book.add(SPEND, [(row, (YEAR.date_to + timedelta(days=1)).toordinal(), Decimal("1"))])
    assert len(weekly._rows[id(row)].days) == 53 + 2  # 53 weeks (clipped at both ends) + the two days outside
    assert YEAR.days == 364 and len(daily._rows[id(row)].days) == 364 + 2
    first, second = weekly.section(YEAR, lambda _: True), daily.section(YEAR, lambda _: True)
    assert first == second
    assert first.points[0].spend == Decimal("50.05") and first.points[0].leads == 10  # Wed 3 – Sun 7 Dec: 5 days
    assert first.points[-1].spend == Decimal("20.02") and first.points[-1].won_deals == 2  # Mon 30 Nov – Tue 1 Dec


def _build(leads: list) -> None:
    build_report(
        period=YEAR,
        previous=previous_period(YEAR),
        leads=leads,
        deals=[],
        spend=[],
        rates=RateBook("RUB", []),
        stages=StageBook(STATUSES),
        now=lambda: datetime(2026, 12, 2, 5),
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_paused_during_the_build_only_and_left_as_it_was(enabled: bool) -> None:
    seen = []

    def leads():
        seen.append(gc.isenabled())
        yield lead("2026-01-05", UTM_SOURCE="yandex", UTM_MEDIUM="cpc")

    (gc.enable if enabled else gc.disable)()
    try:
        _build(list(leads()) and leads())  # type: ignore[arg-type]
        assert seen == [enabled, False] and gc.isenabled() is enabled
        with pytest.raises(KeyError):  # a lead without an ID fails the build: the collector comes back all the same
            _build([{"DATE_CREATE": "2026-01-05T10:00:00+03:00"}])
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
