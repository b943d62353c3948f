"""Unit tests of acquisition cohorts: a hand-computed table."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from throughline.attribution import Cohort, CohortDeal, acquisition_cohorts

D = Decimal
DEALS = [
    CohortDeal("ann", datetime(2026, 1, 10, tzinfo=UTC), D(1000), "yandex"),
    CohortDeal("ann", datetime(2026, 1, 25, tzinfo=UTC), D(500), "google"),  # a repeat: ann stays in yandex
    CohortDeal("ann", datetime(2026, 3, 1, tzinfo=UTC), D(200), "yandex"),
    CohortDeal("bob", datetime(2026, 1, 31, 23, 30, tzinfo=UTC), D(300), "yandex"),  # 1 February in Moscow
    CohortDeal("cat", datetime(2026, 2, 5, tzinfo=UTC), D(700), "google"),
    CohortDeal("dan", datetime(2026, 2, 20, tzinfo=UTC), D(100), "yandex"),
    CohortDeal("dan", datetime(2026, 4, 1, tzinfo=UTC), D(900), "yandex"),  # after as_of: not counted
    CohortDeal("eve", datetime(2026, 1, 5, tzinfo=UTC), D(400), "yandex"),
]
AS_OF = datetime(2026, 3, 15, tzinfo=UTC)


def test_cohorts_by_first_deal_month_and_source_with_cumulative_revenue_and_ltv():
    assert acquisition_cohorts(DEALS, AS_OF) == [
        # ann, bob, eve: January 1000 + 500 + 300 + 400, nothing in February, ann's 200 in March.
        Cohort("2026-01", "yandex", 3, 1, (D(2200), D(2200), D(2400)), (D("733.33"), D("733.33"), D("800.00"))),
        Cohort("2026-02", "google", 1, 0, (D(700), D(700)), (D("700.00"), D("700.00"))),
        Cohort("2026-02", "yandex", 1, 0, (D(100), D(100)), (D("100.00"), D("100.00"))),
    ]
    assert acquisition_cohorts(DEALS, AS_OF)[0].repeat_rate == D("0.3333")


def test_months_are_counted_in_the_report_time_zone():
    moscow = acquisition_cohorts(DEALS, AS_OF, ZoneInfo("Europe/Moscow"))
    assert [(c.month, c.source, c.customers, c.revenue, c.ltv) for c in moscow] == [
        ("2026-01", "yandex", 2, (D(1900), D(1900), D(2100)), (D("950.00"), D("950.00"), D("1050.00"))),
        ("2026-02", "google", 1, (D(700), D(700)), (D("700.00"), D("700.00"))),
        ("2026-02", "yandex", 2, (D(400), D(400)), (D("200.00"), D("200.00"))),
    ]


def test_no_deals_no_cohorts():
    assert acquisition_cohorts([], AS_OF) == []
