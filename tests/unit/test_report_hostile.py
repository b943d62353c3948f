"""Issue 13, a hostile review: hand-computed cases against the fixed report (each number computed by hand below)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal

from tests.unit.test_report_attribution import entity, export, touch
from tests.unit.test_report_build import PERIOD, PREVIOUS, STATUSES, build, deal, lead, row, spend
from throughline.report.attribution import read_journeys
from throughline.report.build import build_report, default_periods
from throughline.report.funnel import StageBook
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_html, render_json


def csv_rows(report) -> list[list[str]]:
    data = render_csv(report)
    assert data.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig")), delimiter=";"))


def test_period_without_spend_has_no_romi_anywhere() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="organic")
    report = build([item], [deal(item, won=True, amount="1000")], [])
    head = report.headline
    assert head.romi is None and head.roas is None and head.drr is None and head.cpl is None and head.roi is None
    assert head.revenue == Decimal("1000.00") and head.unpaid_revenue == Decimal("1000.00")
    total = csv_rows(report)[-1]
    header = csv_rows(report)[0]
    assert total[header.index("ROMI, %")] == ""
    assert json.loads(render_json(report))["headline"]["romi"] is None


def test_negative_spend_has_no_ratios() -> None:
    # A platform's correction larger than the month's cost: spend −100, one paid lead, a won deal of 1 000.
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    report = build([item], [deal(item, won=True, amount="1000")], [spend("yandex_direct", "-100", campaign_id="1")])
    campaign = row(report, "campaign", campaign_id="1")
    assert campaign.metrics.spend == Decimal("-100.00")  # shown as it is
    # (1 000 − (−100)) / (−100) = −1 100 % and CPL −100 are nonsense: no ratio of a row whose spend is not positive.
    for values in (campaign.metrics, report.headline):
        assert values.romi is None and values.roas is None and values.cpl is None and values.cpo is None
        assert values.drr is None and values.cac is None


def test_negative_spend_row_does_not_carry_revenue_into_the_paid_part() -> None:
    a = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    b = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="2")
    deals = [deal(a, won=True, amount="500"), deal(b, won=True, amount="10000")]
    rows = [spend("yandex_direct", "1000", campaign_id="1"), spend("yandex_direct", "-50", campaign_id="2")]
    report = build([a, b], deals, rows)
    head = report.headline
    # Paid part: campaign 1 only (campaign 2's spend is not positive). Spend of the headline: 1 000 − 50 = 950.
    assert head.spend == Decimal("950.00")
    assert head.paid_revenue == Decimal("500.00") and head.unpaid_revenue == Decimal("10000.00")
    assert head.romi == Decimal("-47.37")  # (500 − 950) / 950 = −47.368…


def test_spend_only_in_a_foreign_currency_without_rate() -> None:
    item = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="9")
    rows = [spend("google_ads", "100", campaign_id="9", currency="EUR")]
    report = build([item], [deal(item, won=True, amount="5000")], rows)
    head = report.headline
    assert head.spend == Decimal("0.00") and head.romi is None and head.cpl is None
    assert report.data_quality.spend_without_rate == {"EUR": Decimal("100.00")}
    campaign = row(report, "campaign", campaign_id="9")
    assert campaign.matched == "no_rate" and campaign.unconverted_spend == {"EUR": Decimal("100.00")}
    page = render_html(report).decode()
    assert "без курса" in page


def test_usd_spend_and_revenue_round_half_up_per_row_to_the_kopeck() -> None:
    # 0.05 USD × 90.5 = 4.525 → 4.53 half-up (banker's would give 4.52); three such rows: 13.59, not round(13.575)=13.58
    item = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="9")
    rows = [spend("google_ads", "0.05", campaign_id="9", currency="USD", day=f"2026-11-0{d}") for d in (2, 3, 4)]
    sale = deal(item, won=True, amount="0.15", CURRENCY_ID="USD")  # 0.15 × 90.5 = 13.575 → 13.58
    report = build([item], [sale], rows)
    campaign = row(report, "campaign", campaign_id="9")
    assert campaign.metrics.spend == Decimal("13.59") and report.headline.spend == Decimal("13.59")
    assert campaign.metrics.revenue == Decimal("13.58")
    assert campaign.metrics.romi == Decimal("-0.07")  # (13.58 − 13.59) / 13.59 = −0.0736 %


def test_vat_on_mixed_rows_net_and_gross() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    rows = [spend("yandex_direct", "122", campaign_id="1", include_vat=True),  # 122 / 1.22 = 100.00
            spend("yandex_direct", "100", campaign_id="1", day="2026-11-04", include_vat=True),  # 81.967… → 81.97
            spend("yandex_direct", "50", campaign_id="1", day="2026-11-05")]  # fmt: skip
    net = build([item], [], rows)
    assert row(net, "campaign", campaign_id="1").metrics.spend == Decimal("231.97")
    assert net.data_quality.spend_rows_vat_converted == 2 and net.data_quality.spend_rows_with_vat == 2
    gross = build([item], [], rows, spend_with_vat=True)  # 122 + 100 + 50 × 1.22 = 283
    assert row(gross, "campaign", campaign_id="1").metrics.spend == Decimal("283.00")
    assert gross.data_quality.spend_rows_vat_converted == 1
    # A USD row with VAT: 12.2 USD / 1.22 = 10 USD × 90.5 = 905.00
    usd = build([item], [], [spend("google_ads", "12.2", campaign_id="7", currency="USD", include_vat=True)])
    assert usd.headline.spend == Decimal("905.00")


def test_lead_from_the_previous_period_converted_now_keeps_cr_within_100() -> None:
    old = lead(day="2026-10-20", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    new = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1") for _ in range(2)]
    deals = [deal(old, won=True, amount="100"), deal(new[0], won=False)]
    report = build([old, *new], deals, [spend("yandex_direct", "10", campaign_id="1")])
    m = row(report, "campaign", campaign_id="1").metrics
    assert (m.leads, m.deals) == (2, 2)
    assert m.cr == Decimal("50.00")  # 1 of the 2 November leads became a deal
    assert m.deals_per_lead == Decimal("100.00")
    assert report.headline.cr == Decimal("50.00")


def test_deal_won_then_reopened_is_not_revenue() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    reopened = deal(item, won=False, amount="700")  # CLOSEDATE still set, the stage is back in progress
    history = [{"ID": "1", "OWNER_ID": reopened["ID"], "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
                "CREATED_TIME": "2026-11-10T12:00:00+03:00"},
               {"ID": "2", "OWNER_ID": reopened["ID"], "STAGE_ID": "EXECUTING", "STAGE_SEMANTIC_ID": "P",
                "CREATED_TIME": "2026-11-12T12:00:00+03:00"}]  # fmt: skip
    report = build_report(period=PERIOD, previous=PREVIOUS, leads=[item], deals=[reopened],
                          spend=[spend("yandex_direct", "100", campaign_id="1")], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), stage_history=history)  # fmt: skip
    head = report.headline
    assert head.won_deals == 0 and head.revenue == 0 and head.romi == Decimal("-100.00")


def test_campaign_id_equal_to_another_campaigns_name() -> None:
    by_id = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")
    by_name = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Поиск")
    rows = [spend("yandex_direct", "300", campaign_id="888", name="777"),  # read first: its name is the other's id
            spend("yandex_direct", "200", campaign_id="777", name="Поиск")]  # fmt: skip
    report = build([by_id, by_name], [], rows)
    assert row(report, "campaign", campaign_id="777").metrics.leads == 2
    assert row(report, "campaign", campaign_id="888").metrics.leads == 0


def test_utm_content_with_a_non_id_keeps_the_lead_on_its_tags() -> None:
    content = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand", UTM_CONTENT="banner_1")
    by_id = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand", UTM_CONTENT="555")
    report = build([content, by_id], [], [spend("yandex_direct", "100", campaign_id="555", name="Other")])
    assert row(report, "campaign", campaign_id="555").metrics.leads == 1
    assert row(report, "campaign", campaign="brand").metrics.leads == 1
    assert report.headline.leads == 2


def test_csv_format_and_formula_injection() -> None:
    evil = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN='=HYPERLINK("x")')
    rows = [
        spend("google_ads", "1234.5", campaign_id="-1+1", name="@SUM(A1)"),
        spend("manual", "10", utm_source="google", utm_medium="cpc", utm_campaign="+cmd", currency="=X"),
    ]
    report = build([evil], [], rows)
    table = csv_rows(report)
    cells = [cell for line in table for cell in line]
    header = table[0]
    assert not [cell for cell in cells if cell[:1] in ("=", "+", "@")]
    spend_cells = [line[header.index("Расход")] for line in table[1:]]
    assert "1234,50" in spend_cells
    raw = render_csv(report).decode("utf-8-sig")
    assert "\r\n" in raw and raw.split("\r\n")[0].count(";") == len(header) - 1


def test_comparison_periods_at_month_ends() -> None:
    period, previous = default_periods(date(2026, 3, 31))  # through 30 Mar against all 28 days of Feb
    assert (period.date_from, period.date_to) == (date(2026, 3, 1), date(2026, 3, 30))
    assert (previous.date_from, previous.date_to) == (date(2026, 2, 1), date(2026, 2, 28))
    period, previous = default_periods(date(2028, 3, 1))  # whole leap February against whole January
    assert (period.date_from, period.date_to) == (date(2028, 2, 1), date(2028, 2, 29))
    assert (previous.date_from, previous.date_to) == (date(2028, 1, 1), date(2028, 1, 31))
    period, previous = default_periods(date(2028, 3, 30))  # 1–29 Mar 2028 against 1–29 Feb 2028
    assert previous.date_to == date(2028, 2, 29) and period.date_to == date(2028, 3, 29)
    period, previous = default_periods(date(2026, 1, 1))
    assert (period.date_from, period.date_to, previous.date_from, previous.date_to) == (
        date(2025, 12, 1),
        date(2025, 12, 31),
        date(2025, 11, 1),
        date(2025, 11, 30),
    )


def test_attribution_rows_sum_to_total_in_every_model_with_no_touches_and_spend_only_channel() -> None:
    a = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    b = lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима")
    c = lead(UTM_SOURCE="google", UTM_MEDIUM="organic")
    deals = [deal(a, won=True, amount="1000.01"), deal(b, won=True, amount="333.33"), deal(c, won=True, amount="0.01")]
    touches = [touch("p1", "2026-11-02T07:00:00+00:00", "paid_search", entity=("lead", int(a["ID"]))),
               touch("p1", "2026-11-03T07:00:00+00:00", "organic", entity=("lead", int(a["ID"]))),
               touch("p1", "2026-11-04T07:00:00+00:00", "email", entity=("lead", int(a["ID"]))),
               touch("p2", "2026-11-02T07:00:00+00:00", "social", entity=("lead", int(b["ID"])))]  # fmt: skip
    objects = export(touches, [entity("lead", a["ID"], "p1"), entity("lead", b["ID"], "p2")])
    report = build_report(period=PERIOD, previous=PREVIOUS, leads=[a, b, c], deals=deals,
                          spend=[spend("yandex_direct", "100", campaign_id="1"),
                                 spend("google_ads", "50", campaign_id="g")],
                          rates=RateBook("RUB"), stages=StageBook(STATUSES),
                          journeys=read_journeys(objects))  # fmt: skip
    section = report.attribution
    assert section.revenue == Decimal("1333.35") == report.headline.revenue
    for model, rows in section.models.items():
        assert sum((r.revenue for r in rows), Decimal(0)) == Decimal("1333.35"), model
        assert sum((r.conversions for r in rows), Decimal(0)) == 3, model
        labels = {r.channel_label for r in rows}
        assert "Без касаний" in labels, model
    # CSV: channel rows of the attributed revenue add up to «Итого».
    table = csv_rows(report)
    header = table[0]
    column = header.index("Выручка (модель)")
    channel_rows = [line for line in table[1:-1] if line[0] == "Канал" and line[column]]
    total = sum(Decimal(line[column].replace(",", ".")) for line in channel_rows)
    assert total == Decimal(table[-1][column].replace(",", ".")) == Decimal("1333.35")


def test_attribution_romi_of_a_channel_with_negative_spend_is_empty() -> None:
    a = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    objects = export([touch("p1", "2026-11-02T07:00:00+00:00", "paid_search", entity=("lead", int(a["ID"])))],
                     [entity("lead", a["ID"], "p1")])  # fmt: skip
    report = build_report(period=PERIOD, previous=PREVIOUS, leads=[a], deals=[deal(a, won=True, amount="1000")],
                          spend=[spend("yandex_direct", "-100", campaign_id="1")], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), journeys=read_journeys(objects))  # fmt: skip
    for model, rows in report.attribution.models.items():
        paid = [r for r in rows if r.channel == "paid_search"]
        assert paid and paid[0].romi is None, model  # not (1 000 + 100) / −100 = −1 100 %


def test_hidden_columns_keep_columns_whose_value_is_zero_percent() -> None:
    # Spend 100, no revenue: ROAS is 0 % — data, not an empty column.
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    report = build([item], [], [spend("yandex_direct", "100", campaign_id="1")])
    page = render_html(report).decode()
    assert "ROAS" in page and "CR" in page
    # Revenue exactly equals spend: ROMI 0 % is a result, not a hidden column.
    sale = deal(item, won=True, amount="100")
    even = render_html(build([item], [sale], [spend("yandex_direct", "100", campaign_id="1")])).decode()
    table = even[even.index('<table class="main">') :]
    assert "<th>ROMI, %</th>" in table


def test_simple_crm_mode_hand_computed() -> None:
    # No leads: 4 requests (deals) in November from Yandex campaign 1, one won for 2 000; one October deal won now.
    tags = {"UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "1"}
    deals = [deal(None, won=True, amount="2000", **tags)] + [deal(None, won=False, **tags) for _ in range(3)]
    deals.append(deal(None, won=True, amount="1000", day="2026-10-20", CLOSEDATE="2026-11-02T00:00:00+03:00", **tags))
    report = build([], deals, [spend("yandex_direct", "400", campaign_id="1")])
    m = row(report, "campaign", campaign_id="1").metrics
    assert report.simple_crm is True
    assert (m.leads, m.deals, m.won_deals, m.revenue) == (4, 4, 2, Decimal("3000.00"))
    assert m.cpl == Decimal("100.00")  # 400 / 4 requests
    assert m.cr == Decimal("25.00")  # 1 of the 4 November requests was won
    assert m.romi == Decimal("650.00")  # (3 000 − 400) / 400
    header = csv_rows(report)[0]
    assert "Обращения" in header and "Лиды" not in header


def test_one_name_in_two_accounts_hand_computed() -> None:
    by_name = [lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима") for _ in range(3)]
    by_id = lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="66")
    rows = [spend("vk_ads", "300.10", campaign_id="55", name="Зима", account_id="a1"),
            spend("vk_ads", "99.90", campaign_id="66", name="Зима", account_id="a2")]  # fmt: skip
    deals = [deal(by_name[0], won=True, amount="1000"), deal(by_id, won=True, amount="500")]
    report = build([*by_name, by_id], deals, rows)
    campaigns = [r for r in report.rows if r.level == "campaign"]
    assert len(campaigns) == 1
    m = campaigns[0].metrics
    assert (m.spend, m.leads, m.revenue) == (Decimal("400.00"), 4, Decimal("1500.00"))
    assert m.romi == Decimal("275.00") and m.cpl == Decimal("100.00")  # (1 500 − 400) / 400; 400 / 4
    assert report.headline.spend == Decimal("400.00")
    assert [s.campaign_ids for s in report.data_quality.shared_campaign_names] == [["55", "66"]]


def test_won_deal_without_closedate_is_dated_in_the_report_zone() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    late = deal(item, won=True, amount="900", CLOSEDATE="", DATE_MODIFY="2026-11-15T10:00:00+03:00")
    history = [{"ID": "1", "OWNER_ID": late["ID"], "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
                "CREATED_TIME": "2026-10-31T21:30:00+00:00"}]  # 1 Nov 00:30 in Moscow  # fmt: skip
    report = build_report(period=PERIOD, previous=PREVIOUS, leads=[item], deals=[late],
                          spend=[spend("yandex_direct", "100", campaign_id="1")], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), stage_history=history)  # fmt: skip
    assert report.headline.revenue == Decimal("900.00") and report.headline.romi == Decimal("800.00")
    assert report.headline_previous.revenue == Decimal("0.00")


def test_quality_counters_ignore_the_comparison_period() -> None:
    old = lead(day="2026-10-10", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    deals = [deal(old, won=True, amount="", day="2026-10-12"), deal(old, won=True, amount="-1", day="2026-10-12"),
             deal(old, won=True, amount="10", day="2026-10-12", CURRENCY_ID="EUR")]  # fmt: skip
    rows = [spend("yandex_direct", "5", campaign_id="1", day="2026-10-03", currency="EUR", include_vat=True)]
    report = build([old, lead(day="2026-10-11", SOURCE_ID="OTHER")], deals, rows)
    q = report.data_quality
    assert (q.leads, q.deals_without_amount, q.deals_invalid_amount, q.deals_without_rate) == (0, 0, 0, 0)
    assert (q.spend_rows_with_vat, q.spend_rows_vat_converted, q.spend_without_rate) == (0, 0, {})
    assert q.bad_amount_deals == [] and q.unknown_tags == []


def test_lead_with_two_deals_in_two_periods_is_one_conversion() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    deals = [deal(item, won=True, amount="100"), deal(item, won=False, day="2026-11-20")]
    report = build([item], deals, [spend("yandex_direct", "10", campaign_id="1")])
    m = report.headline
    assert m.cr == Decimal("100.00") and m.deals_per_lead == Decimal("200.00") and m.deals == 2


def test_page_rounds_whole_roubles_half_up_like_the_report() -> None:
    from throughline.report.render import format_number

    # 1 000,50 → 1 001 (half-up, as every kopeck of the report is rounded), not 1 000 (banker's rounding of format()).
    assert format_number(Decimal("1000.50"), "money") == "1\u202f001"
    assert format_number(Decimal("1002.50"), "money") == "1\u202f003"
    assert format_number(Decimal("-2500.50"), "money") == "-2\u202f501"
    assert format_number(Decimal("0.25"), "days") == "0,3"
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    report = build([item], [], [spend("yandex_direct", "1000.50", campaign_id="1")])
    page = render_html(report).decode()
    assert "1\u202f001 RUB" in page and "1\u202f000 RUB" not in page


def test_demo_prints_roi_json_decimal_strings_half_up() -> None:
    from local.demo import _money, _percent

    assert _money("1000.50") == "1 001" and _money(None) == "—" and _money("-2.50") == "-3"
    assert _percent("150.50") == "151 %" and _percent("-39.50") == "-40 %" and _percent(None) == "—"


def test_a_ratio_that_rounds_to_zero_is_zero_not_minus_zero() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    sale = deal(item, won=True, amount="99999.99")
    report = build([item], [sale], [spend("yandex_direct", "100000", campaign_id="1")])
    # (99 999.99 − 100 000) / 100 000 × 100 = −0.00001 % → 0.00, never "-0.00" in roi.json, roi.csv or the page.
    assert str(report.headline.romi) == "0.00"
    assert json.loads(render_json(report))["headline"]["romi"] == "0.00"
    header, *_, total = csv_rows(report)
    assert total[header.index("ROMI, %")] == "0,00"
    assert "-0,00" not in render_html(report).decode()


def test_campaign_id_in_utm_content_meets_spend_without_a_rate_too() -> None:
    # As utm_campaign=9 would: the lead belongs to the «нет курса» row of campaign 9, not to a row of its own.
    by_content = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="{campaign}", UTM_CONTENT="9")
    by_campaign = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="9")
    report = build([by_content, by_campaign], [], [spend("google_ads", "100", campaign_id="9", currency="EUR")])
    campaigns = [r for r in report.rows if r.level == "campaign"]
    assert [(r.campaign_id, r.matched, r.metrics.leads) for r in campaigns] == [("9", "no_rate", 2)]


def test_simple_mode_set_by_the_portal_counts_each_request_once_despite_old_leads() -> None:
    # The portal switched to simple mode on 10 Nov: its two November leads were converted into deals then. The deals
    # are the requests (2), not the leads plus their deals (4); one more request came as a deal on 20 Nov.
    tags = {"UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "1"}
    leads = [lead(day="2026-11-03", **tags), lead(day="2026-11-04", **tags)]
    deals = [deal(leads[0], won=True, amount="500", **tags), deal(leads[1], won=False, **tags),
             deal(None, won=False, day="2026-11-20", **tags)]  # fmt: skip
    report = build(leads, deals, [spend("yandex_direct", "300", campaign_id="1")], simple_crm=True)
    m = report.headline
    assert (m.leads, m.deals, m.won_deals) == (3, 3, 1)
    assert m.cpl == Decimal("100.00") and m.cr == Decimal("33.33")  # 300 / 3; 1 of 3 requests won
    assert report.data_quality.leads == 3


def test_spend_without_a_rate_rows_add_up_to_its_total_after_vat() -> None:
    # Two campaigns of 100 EUR with VAT each, no EUR rate: 100 / 1.22 = 81.967… → 81.97 each; the total is their sum,
    # 163.94, not round(163.934…) = 163.93.
    rows = [spend("google_ads", "100", campaign_id=str(n), currency="EUR", include_vat=True) for n in (1, 2)]
    report = build([], [], rows)
    campaigns = [r for r in report.rows if r.level == "campaign"]
    assert [r.unconverted_spend for r in campaigns] == [{"EUR": Decimal("81.97")}] * 2
    assert row(report, "channel", channel="paid_search").unconverted_spend == {"EUR": Decimal("163.94")}
    assert report.data_quality.spend_without_rate == {"EUR": Decimal("163.94")}


def test_roi_json_decimals_are_plain_never_exponents() -> None:
    # A rates file with base USD where 1 RUB = 0.01 USD: the USD rate is 1 / 0.01, which Decimal writes "1E+2".
    rates = RateBook("RUB", [{"date": "2026-11-01", "base": "USD", "rates": {"RUB": Decimal("0.01")}, "source": "x"}])
    report = build_report(period=PERIOD, previous=PREVIOUS, leads=[], deals=[], rates=rates, stages=StageBook(STATUSES),
                          spend=[spend("google_ads", "5", campaign_id="1", currency="USD")])  # fmt: skip
    data = json.loads(render_json(report))
    assert data["currency_rates"][0]["rate"] == "100" and data["headline"]["spend"] == "500.00"


def test_seed_example_with_a_margin_gives_roi_beside_romi() -> None:
    from tests.unit.test_report_build import seed_records

    organic = lead(UTM_SOURCE="google", UTM_MEDIUM="organic")
    leads, deals, rows = seed_records()
    report = build([*leads, organic], [*deals, deal(organic, won=True, amount="100000")], rows, margin=Decimal("0.3"))
    search = row(report, "channel", channel="paid_search")
    assert (search.metrics.romi, search.metrics.roi) == (Decimal("525.00"), Decimal("87.50"))  # 150 000 − 80 000
    social = row(report, "channel", channel="social")
    assert (social.metrics.romi, social.metrics.roi) == (Decimal("150.00"), Decimal("-25.00"))  # 22 500 − 30 000
    head = report.headline  # paid: 575 000 (× 0.3 = 172 500) against 110 000; organic 100 000 beside
    assert (head.romi, head.roi) == (Decimal("422.73"), Decimal("56.82"))
    assert head.revenue == Decimal("675000.00") and head.unpaid_revenue == Decimal("100000.00")
    assert head.cpl == Decimal("733.33") and head.cpo == Decimal("3666.67")  # 110 000 / 150 leads; / 30 won deals
    assert head.roas == Decimal("522.73") and head.drr == Decimal("19.13")  # 575 000 / 110 000; 110 000 / 575 000
    assert head.cr == Decimal("20.53")  # 31 of 151 leads became a deal (30 paid, the organic one)
    assert "<th>ROI, %</th>" in render_html(report).decode()


def test_page_shows_spend_without_a_rate_in_its_own_currency_on_its_row() -> None:
    item = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="9")
    rows = [spend("google_ads", "100", campaign_id="9", name="Поиск EUR", currency="EUR"),
            spend("yandex_direct", "1500", campaign_id="1", name="Директ")]  # fmt: skip
    page = render_html(build([item], [], rows)).decode()
    table = page[page.index('<table class="main">') :]
    campaign = table[table.index("Поиск EUR") : table.index("</tr>", table.index("Поиск EUR"))]
    assert "<td>100,00 EUR (нет курса)</td>" in campaign  # not a spend of 0
    total = table[table.index('<tr class="total">') :]
    assert "<td>1\u202f500 + 100,00 EUR (нет курса)</td>" in total
    only = render_html(build([item], [], rows[:1])).decode()  # no rated spend at all: the spend column still shows it
    assert "<th>Расход</th>" in only and "100,00 EUR (нет курса)" in only


def test_seed_example_in_the_csv_to_the_kopeck() -> None:
    from tests.unit.test_report_build import seed_records

    header, *lines = csv_rows(build(*seed_records()))
    search = next(line for line in lines if line[0] == "Канал" and line[1] == "Контекстная реклама")
    cells = {name: search[header.index(name)] for name in ("Расход", "Лиды", "CPL", "CR, %", "Выручка", "Средний чек",
                                                            "CPO", "ROMI, %", "ROAS, %", "ДРР, %")}  # fmt: skip
    assert cells == {"Расход": "80000,00", "Лиды": "100", "CPL": "800,00", "CR, %": "25,00", "Выручка": "500000,00",
                     "Средний чек": "20000,00", "CPO": "3200,00", "ROMI, %": "525,00", "ROAS, %": "625,00",
                     "ДРР, %": "16,00"}  # fmt: skip
    social = next(line for line in lines if line[0] == "Канал" and line[1] == "Социальные сети")
    assert [social[header.index(name)] for name in ("CPL", "CR, %", "CPO", "ROMI, %", "ROAS, %", "ДРР, %")] == [
        "600,00", "10,00", "6000,00", "150,00", "250,00", "40,00"]  # fmt: skip
    total = lines[-1]
    assert total[0] == "Итого" and total[header.index("ROMI, %")] == "422,73"  # (575 000 − 110 000) / 110 000
