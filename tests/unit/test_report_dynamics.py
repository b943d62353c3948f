"""report.dynamics: the period by day (by ISO week past 62 days) and ROMI by channel by week, hand-computed."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal

from test_report_build import STATUSES, deal, lead, spend

from throughline.report.build import build_report, previous_period
from throughline.report.funnel import StageBook
from throughline.report.models import Period
from throughline.report.rates import RateBook
from throughline.report.render import render_html, render_json

NOVEMBER = Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))


def build(period: Period, leads, deals, spend_rows):
    return build_report(
        period=period,
        previous=previous_period(period),
        leads=leads,
        deals=deals,
        spend=spend_rows,
        rates=RateBook("RUB", []),
        stages=StageBook(STATUSES),
        now=lambda: datetime(2026, 12, 1, 5, 0),
    )


def november():
    yandex = [lead("2026-11-03", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777") for _ in range(2)]
    organic = lead("2026-11-10", UTM_SOURCE="google", UTM_MEDIUM="organic")
    unpaid = lead("2026-11-09", UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand")  # no spend matches it
    october = lead("2026-10-20", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")
    deals = [
        deal(yandex[0], won=True, amount="3000", day="2026-11-10"),
        deal(organic, won=True, amount="7000", day="2026-11-11"),
        deal(unpaid, won=True, amount="10000", day="2026-11-12"),
        deal(october, won=True, amount="999", day="2026-10-25"),  # the previous period: not in the points
    ]
    spend_rows = [
        spend("yandex_direct", "1000", campaign_id="777", name="Поиск", day="2026-11-03"),
        spend("yandex_direct", "500.55", campaign_id="777", name="Поиск", day="2026-11-10"),
        spend("yandex_direct", "400", campaign_id="777", name="Поиск", day="2026-10-31"),  # previous period
    ]
    return build(NOVEMBER, [*yandex, organic, unpaid, october], deals, spend_rows)


def test_daily_points_hold_each_days_figures_and_add_up_to_the_headline() -> None:
    report = november()
    section = report.dynamics
    assert section is not None and section.granularity == "day"
    assert len(section.points) == 30 and section.points[0].label == "2026-11-01"
    by_day = {p.date_from.day: (p.spend, p.leads, p.won_deals, p.revenue) for p in section.points if p.leads or
              p.spend or p.won_deals}  # fmt: skip
    assert by_day == {
        3: (Decimal("1000.00"), 2, 0, Decimal(0)),
        9: (Decimal(0), 1, 0, Decimal(0)),
        10: (Decimal("500.55"), 1, 1, Decimal("3000.00")),
        11: (Decimal(0), 0, 1, Decimal("7000.00")),
        12: (Decimal(0), 0, 1, Decimal("10000.00")),
    }
    head = report.headline
    assert sum(p.spend for p in section.points) == head.spend == Decimal("1500.55")
    assert sum(p.leads for p in section.points) == head.leads == 4
    assert sum(p.won_deals for p in section.points) == head.won_deals == 3
    assert sum(p.revenue for p in section.points) == head.revenue == Decimal(20000)


def test_romi_by_channel_by_iso_week_counts_paid_rows_only() -> None:
    section = november().dynamics
    # 1 Nov 2026 is a Sunday: W44 is that one day, then Monday-to-Sunday weeks, W49 is Monday 30 Nov alone.
    assert [(w.label, w.date_from.day, w.date_to.day) for w in section.weeks] == [
        ("2026-W44", 1, 1), ("2026-W45", 2, 8), ("2026-W46", 9, 15), ("2026-W47", 16, 22), ("2026-W48", 23, 29),
        ("2026-W49", 30, 30)]  # fmt: skip
    assert [row.channel for row in section.romi_by_channel] == ["paid_search"]  # organic has no spend: no line
    paid = section.romi_by_channel[0]
    assert paid.spend == [0, Decimal("1000.00"), Decimal("500.55"), 0, 0, 0]
    # W46: the «brand» deal (10 000, paid search but no spend on its row) stays out; (3000 − 500.55) / 500.55
    assert paid.revenue == [0, 0, Decimal("3000.00"), 0, 0, 0]
    assert paid.romi == [None, Decimal("-100.00"), Decimal("499.34"), None, None, None]


def test_a_period_over_62_days_goes_by_iso_week() -> None:
    quarter = Period(date_from=date(2026, 1, 1), date_to=date(2026, 3, 31))  # 90 days, Thursday to Tuesday
    rows = [
        spend("vk_ads", cost, campaign_id="5", name="Зима", day=day)
        for cost, day in (("10", "2026-01-02"), ("20", "2026-01-04"), ("40", "2026-01-05"), ("80", "2026-03-31"))
    ]
    leads = [lead("2026-01-04", UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима")]
    section = build(quarter, leads, [deal(leads[0], won=True, amount="100", day="2026-01-06")], rows).dynamics
    assert section.granularity == "week" and len(section.points) == 14
    assert [(w.date_from, w.date_to, w.label) for w in section.weeks] == [
        (p.date_from, p.date_to, p.label) for p in section.points]  # fmt: skip
    first, second, last = section.points[0], section.points[1], section.points[-1]
    assert (first.label, first.date_from, first.date_to) == ("2026-W01", date(2026, 1, 1), date(2026, 1, 4))
    assert (first.spend, first.leads) == (Decimal("30.00"), 1)
    assert (second.date_from, second.spend, second.won_deals, second.revenue) == (
        date(2026, 1, 5), Decimal("40.00"), 1, Decimal("100.00"))  # fmt: skip
    assert (last.label, last.date_from, last.date_to, last.spend) == ("2026-W14", date(2026, 3, 30),
                                                                      date(2026, 3, 31), Decimal("80.00"))  # fmt: skip
    social = section.romi_by_channel[0]
    assert social.channel == "social" and social.romi[:2] == [Decimal("-100.00"), Decimal("150.00")]


def test_62_days_are_still_daily() -> None:
    sixty_two = Period(date_from=date(2026, 1, 1), date_to=date(2026, 3, 3))
    section = build(sixty_two, [], [], []).dynamics
    assert section.granularity == "day" and len(section.points) == 62 and section.romi_by_channel == []
    assert all(p.spend == 0 and p.leads == 0 for p in section.points)


def test_the_json_and_the_page_carry_the_series() -> None:
    report = november()
    data = json.loads(render_json(report))
    assert data["dynamics"]["points"][2] == {"date_from": "2026-11-03", "date_to": "2026-11-03",
                                             "label": "2026-11-03", "spend": "1000.00", "leads": 2, "won_deals": 0,
                                             "revenue": "0.00"}  # fmt: skip
    paid = data["dynamics"]["romi_by_channel"][0]  # money and percentages are exact decimal strings (schema v2)
    assert (paid["spend"][1], paid["revenue"][2], paid["romi"][2]) == ("1000.00", "3000.00", "499.34")
    page = render_html(report).decode()
    assert 'id="chart-dynamics"' in page and 'id="chart-romi-weeks"' in page
    embedded = page.split('<script type="application/json" id="report-data">')[1].split("</script>")[0]
    chart = json.loads(embedded)["dynamics"]
    assert chart["labels"][2] == "03.11" and chart["spend"][2] == 1000.0 and chart["leads"][2] == 2
    assert chart["weeks"][1] == "02.11–08.11" and chart["romi"][0]["values"][2] == 499.34


def test_spend_reaches_the_dynamics_once_per_campaign_and_day_with_every_row_s_kopecks(monkeypatch) -> None:
    # Two accounts' rows of one campaign on one day, a row in dollars (90.5 ₽), a zero row of another campaign and
    # a row of the previous period: the dynamics gets each (campaign, day) once, as the sum of its rows' kopecks.
    from throughline.report import dynamics

    calls: list[tuple[str, int, Decimal]] = []
    real = dynamics.DynamicsBook.add

    def counted(self, position, items):
        items = list(items)
        if position == dynamics.SPEND:
            calls.extend((row.campaign, day, cost) for row, day, cost in items)
        return real(self, position, items)

    monkeypatch.setattr(dynamics.DynamicsBook, "add", counted)
    rows = [
        spend("yandex_direct", "100.10", campaign_id="777", name="Поиск", day="2026-11-03"),
        spend("yandex_direct", "0.015", campaign_id="777", name="Поиск", day="2026-11-03", account_id="b"),
        spend("yandex_direct", "2", campaign_id="777", name="Поиск", day="2026-11-03", currency="USD"),
        spend("yandex_direct", "50", campaign_id="777", name="Поиск", day="2026-11-04"),
        spend("vk_ads", "0", campaign_id="9", name="Ноль", day="2026-11-03"),
        spend("yandex_direct", "400", campaign_id="777", name="Поиск", day="2026-10-31"),
    ]
    report = build_report(
        period=NOVEMBER, previous=previous_period(NOVEMBER), leads=[], deals=[], spend=rows,
        rates=RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "90.5"}, "source": "cbr"}]),
        stages=StageBook(STATUSES), now=lambda: datetime(2026, 12, 1, 5, 0),
    )  # fmt: skip
    third, fourth = date(2026, 11, 3).toordinal(), date(2026, 11, 4).toordinal()
    # 100.10 + 0.02 (0.015 to the kopeck, half-up) + 181.00 (2 × 90.5) on the 3rd; 50 on the 4th; 0 for «Ноль».
    assert calls == [("Поиск", third, Decimal("281.12")), ("Поиск", fourth, Decimal("50.00")),
                     ("Ноль", third, Decimal("0.00"))]  # fmt: skip
    points = {p.date_from.day: p.spend for p in report.dynamics.points if p.spend}
    assert points == {3: Decimal("281.12"), 4: Decimal("50.00")} and report.headline.spend == Decimal("331.12")


def test_many_cells_at_once_are_the_cells_one_at_a_time() -> None:
    # A 365-day period (by ISO week), days on both sides of it, two rows interleaved: add() fills the cells one at a
    # time would, cell for cell; by hand, Monday 2026-11-30's week starts that day, the period's first days its own.
    import random

    from throughline.report import dynamics

    year = Period(date_from=date(2025, 12, 1), date_to=date(2026, 11, 30))
    rng = random.Random(3)
    first, second = object(), object()
    start = year.date_from.toordinal()
    items = [(rng.choice((first, second)), start + rng.randrange(-10, 375), rng.randrange(1, 5)) for _ in range(500)]
    one, many = dynamics.DynamicsBook(year), dynamics.DynamicsBook(year)
    for row, day, count in items:
        one._cell(row, day)[dynamics.LEADS] += count
        one._cell(row, day)[dynamics.SPEND] += Decimal(count) / 4
    many.add(dynamics.LEADS, items)
    many.add(dynamics.SPEND, [(row, day, Decimal(count) / 4) for row, day, count in items])
    assert [(key, cells.days) for key, cells in one._rows.items()] == [
        (key, cells.days) for key, cells in many._rows.items()
    ]
    hand = dynamics.DynamicsBook(year)
    hand.add(
        dynamics.LEADS,
        [
            (first, date(2026, 11, 30).toordinal(), 1),
            (first, date(2026, 11, 29).toordinal(), 2),
            (first, date(2025, 12, 3).toordinal(), 4),
            (first, date(2025, 11, 30).toordinal(), 8),
        ],
    )
    assert hand._rows[id(first)].days == {date(2026, 11, 30).toordinal(): [0, 1, 0, 0],
                                          date(2026, 11, 23).toordinal(): [0, 2, 0, 0],
                                          date(2025, 12, 1).toordinal(): [0, 4, 0, 0],
                                          date(2025, 11, 30).toordinal(): [0, 8, 0, 0]}  # fmt: skip
