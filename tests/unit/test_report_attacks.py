"""Hostile cases against the report's money, matching and outputs (each one failed before its fix)."""

from __future__ import annotations

import csv
import io
import json
import re
import tracemalloc
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator
from test_report_build import PERIOD, PREVIOUS, STATUSES, build, deal, lead, row, seed_records, spend
from test_report_render import SCHEMA

from throughline.report.build import build_report
from throughline.report.crm import _Scan
from throughline.report.funnel import StageBook
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_html, render_json


def _rows_sum(report, level: str, name: str) -> Decimal:
    return sum((getattr(r.metrics, name) for r in report.rows if r.level == level), Decimal(0))


def test_rows_add_up_to_the_headline_to_the_kopeck() -> None:
    # Three campaigns of 0.005 each (converted or imported with half-kopecks): each row shows 0.01, so must the total.
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN=str(n)) for n in range(3)]
    deals = [deal(item, won=True, amount="100.005") for item in leads]
    rows = [spend("yandex_direct", "0.005", campaign_id=str(n), name=f"c{n}") for n in range(3)]
    report = build(leads, deals, rows)
    for name in ("spend", "revenue"):
        headline = getattr(report.headline, name)
        assert _rows_sum(report, "campaign", name) == _rows_sum(report, "channel", name) == headline
    assert report.headline.revenue == Decimal("300.03")


def test_usd_spend_rows_add_up_to_the_kopeck() -> None:
    leads = [lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN=str(n)) for n in range(7)]
    rows = [spend("google_ads", "0.11", campaign_id=str(n), name=f"g{n}", currency="USD") for n in range(7)]
    report = build(leads, [], rows)  # 0.11 USD × 90.5 = 9.955 RUB a campaign
    assert _rows_sum(report, "campaign", "spend") == report.headline.spend


def test_a_rate_of_zero_is_no_rate() -> None:
    rates = RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "0"}, "source": "cbr"}])
    assert rates.convert(Decimal(10), "USD", "2026-11-05") is None
    zero_base = RateBook("USD", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "90", "EUR": "0"}}])
    assert zero_base.convert(Decimal(10), "EUR", "2026-11-05") is None
    # A zero on one day does not hide the good rate of the day before.
    both = RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "90"}},
                            {"date": "2026-11-02", "base": "RUB", "rates": {"USD": "0"}}])  # fmt: skip
    assert both.convert(Decimal(1), "USD", "2026-11-05") == Decimal(90)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-Infinity", "sNaN", "1e400"])
def test_a_deal_amount_that_is_no_money_is_left_out_not_fatal(amount: str) -> None:
    good, bad = (lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1") for _ in range(2))
    report = build([good, bad], [deal(good, won=True, amount="1000"), deal(bad, won=True, amount=amount)], [])
    assert report.headline.revenue == Decimal("1000.00") and report.headline.average_check == Decimal("1000.00")
    assert report.headline.won_deals == 2  # still a won deal, with no revenue (issue 13)
    assert report.data_quality.deals_invalid_amount == 1
    assert [item.problem for item in report.data_quality.bad_amount_deals] == ["not_a_number"]
    report.model_dump_json()  # still valid JSON


def test_amounts_in_exponent_form_and_with_more_decimals() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    other = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    report = build([item, other], [deal(item, won=True, amount="1e5"), deal(other, won=True, amount="0.125")], [])
    assert report.headline.revenue == Decimal("100000.13")


def test_campaign_id_that_is_another_campaigns_name_matches_the_id() -> None:
    # Campaign 555 is called "777"; campaign 777 is called "Бренд". A lead tagged 777 belongs to campaign 777,
    # whatever order the spend rows come in.
    for order in (1, -1):
        rows = [spend("yandex_direct", "100", campaign_id="555", name="777"),
                spend("yandex_direct", "200", campaign_id="777", name="Бренд")][::order]  # fmt: skip
        report = build([lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")], [], rows)
        assert row(report, "campaign", campaign_id="777").metrics.leads == 1
        assert row(report, "campaign", campaign_id="555").metrics.leads == 0


def test_two_wins_of_one_customer_on_one_day_are_one_new_customer() -> None:
    first = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    deals = [deal(first, won=True, amount="10", CONTACT_ID="5"), deal(first, won=True, amount="20", CONTACT_ID="5")]
    report = build([first], deals, [spend("yandex_direct", "100", campaign_id="1")])
    assert report.headline.won_deals == 2
    assert report.headline.new_customers == 1
    assert report.headline.cac == Decimal("100.00")


# ---- outputs ----------------------------------------------------------------------------------------------------

HOSTILE = ["=cmd|'/c calc'!A1", "+7 (916) 000", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1"]


def test_csv_text_cells_cannot_become_formulas_in_excel() -> None:
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN=name) for name in HOSTILE]
    leads.append(lead(UTM_SOURCE='=HYPERLINK("http://x")', UTM_MEDIUM="referral"))
    report = build(leads, [deal(leads[0], won=True, amount="-100")], [spend("yandex_direct", "50", campaign_id="9")])
    rows = list(csv.reader(io.StringIO(render_csv(report).decode("utf-8-sig")), delimiter=";"))
    header = rows[0]
    text_columns = range(header.index("ID кампании") + 2)
    for line in rows[1:]:
        for index in text_columns:
            assert not line[index] or line[index][0] not in "=+-@\t\r", line[index]
    names = {line[header.index("Кампания")] for line in rows}
    assert "'=cmd|'/c calc'!A1" in names and "'-2+3" in names  # kept readable, only disarmed
    romi = [line[header.index("ROMI, %")] for line in rows if line[0] == "Кампания" and line[4] == "9"]
    assert romi == ["-100,00"]  # numbers stay numbers, minus sign included


def test_names_in_the_page_data_cannot_end_or_comment_out_the_script() -> None:
    # "<!--<script>" in a script element makes the parser skip the next "</script>": the page data would swallow
    # Chart.js and no chart would render. Stage names come from the portal, so anyone with CRM settings can try.
    statuses = [{**item, "NAME": "<!--<script>" if item["STATUS_ID"] == "EXECUTING" else item["NAME"]}
                for item in STATUSES]  # fmt: skip
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="</script><!--")
    report = build_report(
        period=PERIOD,
        previous=PREVIOUS,
        leads=[item],
        deals=[deal(item, won=False)],
        spend=[],
        rates=RateBook("RUB"),
        stages=StageBook(statuses),
        now=lambda: datetime(2026, 12, 1),
    )
    page = render_html(report).decode("utf-8")
    data = page.split('id="report-data">')[1].split("</script>")[0]
    assert "<" not in data and ">" not in data
    assert "<!--<script>" in json.loads(data)["funnel"]["labels"]
    assert page.count("<script") == 3 and page.count("</script>") == 3


# ---- dates ------------------------------------------------------------------------------------------------------


def test_times_with_another_offset_count_on_the_report_time_zones_day() -> None:
    # 21:30 UTC on 30 November is 00:30 in Moscow on 1 December: outside a November report in Europe/Moscow;
    # 20:30 UTC is 23:30 in Moscow, still the last day of the period.
    late = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", DATE_CREATE="2026-11-30T21:30:00+00:00")
    last = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", DATE_CREATE="2026-11-30T20:30:00+00:00")
    moscow = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", DATE_CREATE="2026-11-30T23:30:00+03:00")
    early = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", DATE_CREATE="2026-11-01T01:00:00+05:00")
    report = build([late, last, moscow, early], [], [])
    assert report.headline.leads == 2  # last and moscow; early is 23:00 on 31 October in Moscow
    assert report.headline_previous.leads == 1
    zulu = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", DATE_CREATE="2026-11-30T22:00:00Z")
    assert build([zulu], [], []).headline.leads == 0
    # In a report kept in UTC the same records fall the other way: early is 20:00 on 31 October there.
    assert build([late, last, moscow, early], [], [], timezone="UTC").headline.leads == 3


def test_a_deal_created_at_another_offset_counts_on_the_report_day() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    made = deal(item, won=False, DATE_CREATE="2026-10-31T22:00:00+00:00")  # 01:00 on 1 November in Moscow
    assert build([item], [made], []).headline.deals == 1


def test_a_won_deal_without_closedate_or_win_in_history_is_in_no_period_and_counted() -> None:
    # Never by DATE_MODIFY: any later edit would move the revenue to another month (issue 13).
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    won = deal(item, won=True, amount="5000", CLOSEDATE="", DATE_MODIFY="2026-11-15T18:00:00+03:00")
    report = build([item], [won], [])
    assert (report.headline.won_deals, report.headline.revenue) == (0, Decimal("0.00"))
    assert report.data_quality.won_deals_without_date == 1


def test_lead_ids_far_apart_cost_no_memory_for_the_gap() -> None:
    # A migrated or on-premise portal may number leads from a billion: the per-ID arrays must not span the gap.
    tracemalloc.start()
    try:
        far = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1", ID="50000000")
        near = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="2", ID="7")
        won = deal(far, won=True, amount="100", UTM_SOURCE="", UTM_CAMPAIGN="")
        report = build([near, far], [won], [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MB"
    assert row(report, "source", source="yandex").metrics.revenue == Decimal("100.00")  # the deal still finds its lead


def test_loss_reasons_of_two_failure_stages_with_one_name_add_up() -> None:
    statuses = [*STATUSES, {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LOSE2", "NAME": "Сделка провалена", "SORT": "50",
                            "SEMANTICS": "F"}]  # fmt: skip
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    deals = [deal(item, won=False, STAGE_ID="LOSE", STAGE_SEMANTIC_ID="F"),
             deal(item, won=False, STAGE_ID="LOSE2", STAGE_SEMANTIC_ID="F")]  # fmt: skip
    report = build_report(
        period=PERIOD,
        previous=PREVIOUS,
        leads=[item],
        deals=deals,
        spend=[],
        rates=RateBook("RUB"),
        stages=StageBook(statuses),
        now=lambda: datetime(2026, 12, 1),
    )
    funnel = next(f for f in report.funnels if f.entity == "deal")
    assert funnel.lost == 2 and funnel.loss_reasons == {"Сделка провалена": 2}


@pytest.mark.parametrize("case", ["seed", "empty", "hostile"])
def test_roi_json_validates_against_the_committed_schema(case: str) -> None:
    leads, deals, spend_rows = seed_records() if case == "seed" else ([], [], [])
    if case == "hostile":
        item = lead(UTM_SOURCE="<b>", UTM_MEDIUM="cpc", UTM_CAMPAIGN="=1+1")
        leads, deals = [item], [deal(item, won=True, amount="NaN"), deal(item, won=True, amount="1e5")]
    data = json.loads(render_json(build(leads, deals, spend_rows)))
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    errors = [f"{list(error.path)}: {error.message}" for error in Draft202012Validator(schema).iter_errors(data)]
    assert errors == []


# ---- reading the CRM --------------------------------------------------------------------------------------------


def test_the_modified_since_filter_is_in_the_documented_datetime_format() -> None:
    # api-reference/data-types.md: datetime is YYYY-MM-DDThh:mm:ss±hh:mm — no fractions of a second, which a run's
    # clock (datetime.now) always has. Floored to the second, the window only grows: nothing is missed.
    since = datetime(2026, 11, 30, 4, 0, 0, 987654, tzinfo=ZoneInfo("Europe/Moscow"))
    params = _Scan("deal", "crm.deal.list", ("ID",), since).params(0)
    assert params["filter"][">=DATE_MODIFY"] == "2026-11-30T04:00:00+03:00"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", params["filter"][">=DATE_MODIFY"])


def test_leads_tagged_with_a_renamed_campaigns_new_name_meet_its_spend() -> None:
    rows = [spend("yandex_direct", "100", campaign_id="5", name="Осень", day="2026-11-03"),
            spend("yandex_direct", "100", campaign_id="5", name="Зима", day="2026-11-20")]  # fmt: skip
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN=name) for name in ("Осень", "зима ")]
    report = build(leads, [], rows)
    campaign = row(report, "campaign", campaign_id="5")
    assert (campaign.metrics.leads, campaign.matched, campaign.campaign) == (2, "spend_and_leads", "Зима")


def test_unknown_tags_group_case_and_space_variants_like_the_rows_do() -> None:
    variants = ("Partner-XYZ ", "partner-xyz", " PARTNER-xyz")
    leads = [lead(UTM_SOURCE=source, UTM_MEDIUM="referral") for source in variants]
    report = build(leads, [], [])
    assert [(tag.utm_source, tag.leads) for tag in report.data_quality.unknown_tags] == [("partner-xyz", 3)]
    assert row(report, "source", source="partner-xyz").metrics.leads == 3
