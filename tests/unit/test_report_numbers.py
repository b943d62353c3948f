"""Issue 13: the report's numbers a finance director would sign, each hand-computed (test_report_build's helpers)."""

from __future__ import annotations

import csv
import io
import json
from datetime import date
from decimal import Decimal

from tests.unit.test_report_attribution import entity, export, touch
from tests.unit.test_report_build import PERIOD, STATUSES, build, deal, lead, row, spend
from throughline.report.attribution import read_journeys
from throughline.report.build import ReportOptions, build_report, default_periods
from throughline.report.funnel import StageBook
from throughline.report.models import Period
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_html, render_json


def organic_won(amount: str, **tags):
    item = lead(**(tags or {"UTM_SOURCE": "yandex", "UTM_MEDIUM": "organic"}))
    return item, deal(item, won=True, amount=amount)


# ---- 1. paid ROMI ----------------------------------------------------------------------------------------------------


def test_headline_romi_counts_only_revenue_of_rows_with_spend() -> None:
    paid = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    organic, sale = organic_won("1000000")
    report = build([paid, organic], [sale], [spend("yandex_direct", "100000", campaign_id="1", name="A")])
    head = report.headline
    assert head.romi == Decimal("-100.00")  # (0 − 100 000) / 100 000, not (1 000 000 − 100 000) / 100 000 = 900 %
    assert head.revenue == Decimal("1000000.00")  # total revenue still shown
    assert head.paid_revenue == Decimal("0.00") and head.unpaid_revenue == Decimal("1000000.00")
    assert head.cpl == Decimal("100000.00")  # one paid lead, the organic one does not cheapen it
    assert head.roas == Decimal("0.00") and head.drr is None and head.cpo is None
    page = render_html(report).decode()
    assert "ROMI платных каналов" in page and "выручка без расхода" in page.lower()


def test_unpaid_source_does_not_lift_its_channel() -> None:
    vk_leads = [lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима") for _ in range(10)]
    tg_leads = [lead(UTM_SOURCE="telegram", UTM_MEDIUM="social") for _ in range(20)]
    deals = [deal(vk_leads[0], won=True, amount="18120"), deal(tg_leads[0], won=True, amount="50000")]
    report = build(vk_leads + tg_leads, deals, [spend("vk_ads", "30000", campaign_id="55", name="Зима")])
    social = row(report, "channel", channel="social")
    assert row(report, "source", source="vk").metrics.romi == Decimal("-39.60")  # (18 120 − 30 000) / 30 000
    assert social.metrics.romi == Decimal("-39.60")  # not (68 120 − 30 000) / 30 000 = 127.07
    assert social.metrics.cpl == Decimal("3000.00")  # 30 000 / 10 paid leads, not / 30
    assert social.metrics.cpo == Decimal("30000.00") and social.metrics.cac == Decimal("30000.00")
    assert social.metrics.revenue == Decimal("68120.00") and social.metrics.unpaid_revenue == Decimal("50000.00")
    assert row(report, "source", source="telegram").metrics.romi is None


def test_seed_example_still_holds() -> None:
    from tests.unit.test_report_build import seed_records

    report = build(*seed_records())
    assert row(report, "channel", channel="paid_search").metrics.romi == Decimal("525.00")
    assert row(report, "channel", channel="social").metrics.romi == Decimal("150.00")
    assert row(report, "channel", channel="paid_search").metrics.cr == Decimal("25.00")
    assert row(report, "channel", channel="social").metrics.cr == Decimal("10.00")


# ---- 2. won deals with a bad amount ----------------------------------------------------------------------------------


def test_won_deals_with_negative_empty_or_text_amounts_are_flagged_not_lost() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    good = deal(item, won=True, amount="1000")
    negative = deal(item, won=True, amount="-500")
    empty = deal(item, won=True, amount="")
    text = deal(item, won=True, amount="abc")
    objects = export([touch("p1", "2026-11-05T07:00:00+00:00", "paid_search", entity=("lead", int(item["ID"])))],
                     [entity("lead", item["ID"], "p1")])  # fmt: skip
    report = build_report(period=PERIOD, previous=PERIOD, leads=[item], deals=[good, negative, empty, text],
                          spend=[spend("yandex_direct", "100", campaign_id="1")], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), journeys=read_journeys(objects))  # fmt: skip
    head = report.headline
    assert head.revenue == Decimal("1000.00") and head.won_deals == 4
    assert head.average_check == Decimal("1000.00")  # only the deal with an amount
    quality = report.data_quality
    assert quality.deals_without_amount == 1
    flagged = {item.deal_id: item.problem for item in quality.bad_amount_deals}
    assert flagged == {int(negative["ID"]): "negative", int(empty["ID"]): "empty", int(text["ID"]): "not_a_number"}
    assert report.attribution is not None and report.attribution.revenue == Decimal("1000.00")


# ---- 3. attribution columns add up -----------------------------------------------------------------------------------


def test_attributed_columns_add_up_and_spend_without_touches_is_minus_100() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="organic")
    sale = deal(item, won=True, amount="19550.55")
    objects = export(
        [touch("p9", "2026-11-05T07:00:00+00:00", "email", entity=("lead", 999999))], [entity("lead", 999999, "p9")]
    )  # the won deal's lead is unknown to the export
    report = build_report(period=PERIOD, previous=PERIOD, leads=[item], deals=[sale],
                          spend=[spend("vk_ads", "3000", campaign_id="5", name="X")], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), journeys=read_journeys(objects))  # fmt: skip
    last = {r.channel: r for r in report.attribution.models["last_click"]}
    assert last["social"].revenue == Decimal("0") and last["social"].romi == Decimal("-100.00")
    for rows in report.attribution.models.values():
        assert sum((r.revenue for r in rows), Decimal(0)) == Decimal("19550.55")
    table = list(csv.reader(io.StringIO(render_csv(report).decode("utf-8-sig")), delimiter=";"))
    header = table[0]
    revenue = header.index("Выручка (модель)")
    channel_rows = [line for line in table[1:] if line[0] == "Канал" and line[revenue]]
    assert sum(Decimal(line[revenue].replace(",", ".")) for line in channel_rows) == Decimal("19550.55")
    assert any(line[1] == "Без касаний" for line in channel_rows)


# ---- 5. customers of a company ---------------------------------------------------------------------------------------


def test_two_won_deals_of_one_company_are_one_new_customer() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    deals = [deal(item, won=True, amount="100", COMPANY_ID="42"),
             deal(item, won=True, amount="200", day="2026-11-12", COMPANY_ID="42")]  # fmt: skip
    report = build([item], deals, [])
    assert report.headline.won_deals == 2 and report.headline.new_customers == 1


def test_snapshot_reads_company_id() -> None:
    from throughline.report.crm import DEAL_FIELDS

    assert "COMPANY_ID" in DEAL_FIELDS


# ---- 7. manual spend without a campaign ------------------------------------------------------------------------------


def test_manual_spend_without_campaign_meets_leads_without_campaign() -> None:
    leads = [lead(UTM_SOURCE="telegram", UTM_MEDIUM="cpc") for _ in range(4)]
    report = build(leads, [], [spend("manual", "2000", utm_source="tg", utm_medium="cpc")])
    matched = row(report, "campaign", platform="manual")
    assert matched.metrics.leads == 4 and matched.metrics.cpl == Decimal("500.00")
    assert matched.matched == "spend_and_leads"


# ---- 10. data-quality counters of the period only --------------------------------------------------------------------


def test_data_quality_counts_the_report_period_only() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    deals = [deal(item, won=True, amount="1", day="2026-10-15", CURRENCY_ID="KZT"),
             deal(item, won=True, amount="", day="2026-10-16")]  # fmt: skip
    rows = [spend("yandex_direct", "1", campaign_id="1", day="2026-10-20", include_vat=True)]
    quality = build([item], deals, rows).data_quality
    assert (quality.deals_without_rate, quality.deals_without_amount, quality.spend_rows_with_vat) == (0, 0, 0)


# ---- 11. comparison like for like ------------------------------------------------------------------------------------


def test_month_to_date_compares_with_the_same_days_of_the_previous_month() -> None:
    current, previous = default_periods(date(2026, 11, 16))
    assert (current.date_from, current.date_to) == (date(2026, 11, 1), date(2026, 11, 15))
    assert (previous.date_from, previous.date_to) == (date(2026, 10, 1), date(2026, 10, 15))
    current, previous = default_periods(date(2026, 3, 31))  # 1–30 Mar against 1–28 Feb (no 29–30 Feb)
    assert (previous.date_from, previous.date_to) == (date(2026, 2, 1), date(2026, 2, 28))
    current, previous = default_periods(date(2026, 12, 1))  # a whole month against the whole month before
    assert (previous.date_from, previous.date_to) == (date(2026, 10, 1), date(2026, 10, 31))


def test_page_names_the_comparison() -> None:
    current, previous = default_periods(date(2026, 11, 16))
    report = build_report(period=current, previous=previous, leads=[], deals=[], spend=[], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES))  # fmt: skip
    assert report.comparison == "same_days_previous_month"
    assert "те же дни прошлого месяца" in render_html(report).decode()


# ---- decisions -------------------------------------------------------------------------------------------------------


def test_cr_is_the_share_of_the_periods_leads_that_became_deals() -> None:
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc") for _ in range(2)]
    old = lead(day="2026-10-05", UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    deals = [deal(leads[0], won=False), deal(leads[0], won=False), deal(old, won=False), deal(old, won=False)]
    report = build([*leads, old], deals, [])
    source = row(report, "source", source="yandex")
    assert source.metrics.cr == Decimal("50.00")  # one of the period's two leads got a deal (two deals: still one)
    assert source.metrics.deals_per_lead == Decimal("200.00")  # the old ratio: 4 deals / 2 leads


def test_campaign_names_match_after_normalising() -> None:
    names = ["%D0%97%D0%B8%D0%BC%D0%B0+%D1%91%D0%BB%D0%BA%D0%B8", "ЗИМА   ЁЛКИ", "зима\u00a0елки", "Ｚима ёлки"]
    leads = [lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN=name) for name in names]
    report = build(leads, [], [spend("vk_ads", "4000", campaign_id="9", name="Зима ёлки")])
    assert row(report, "campaign", campaign_id="9").metrics.leads == 3  # "Ｚима": Z is Latin after NFKC
    leads = [lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN=name) for name in names[:3]]
    assert row(build(leads, [], [spend("vk_ads", "4000", campaign_id="9", name="Зима ёлки")]), "campaign",
               campaign_id="9").metrics.cpl == Decimal("1333.33")  # fmt: skip


def test_campaign_id_in_utm_content_matches() -> None:
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand_search", UTM_CONTENT="70001"),
             lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="x", UTM_CONTENT="80001")]  # fmt: skip
    report = build(leads, [], [spend("yandex_direct", "100", campaign_id="70001", name="Поиск"),
                               spend("google_ads", "100", campaign_id="80001", name="G")])  # fmt: skip
    assert row(report, "campaign", campaign_id="70001").metrics.leads == 1
    assert row(report, "campaign", campaign_id="80001").metrics.leads == 1


def test_empty_profit_field_is_unknown_not_zero() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    deals = [deal(item, won=True, amount="9000", UF_PROFIT="5000"), deal(item, won=True, amount="9000")]
    report = build([item], deals, [spend("yandex_direct", "1000", campaign_id="1")], profit_field="UF_PROFIT")
    assert report.headline.roi == Decimal("400.00")  # (5 000 − 1 000) / 1 000; the unknown deal is left out
    assert report.data_quality.deals_without_profit == 1
    only_unknown = build([item], deals[1:], [spend("yandex_direct", "1000", campaign_id="1")], profit_field="UF_PROFIT")
    assert only_unknown.headline.roi is None  # not −100 %


def test_won_deal_without_closedate_is_dated_by_its_win_not_date_modify() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    sale = deal(item, won=True, amount="700", CLOSEDATE="", DATE_MODIFY="2026-12-03T10:00:00+03:00")
    history = [{"ID": 1, "OWNER_ID": sale["ID"], "STAGE_ID": "NEW", "STAGE_SEMANTIC_ID": "P",
                "CREATED_TIME": "2026-11-10T12:00:00+03:00"},
               {"ID": 2, "OWNER_ID": sale["ID"], "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
                "CREATED_TIME": "2026-11-20T12:00:00+03:00"}]  # fmt: skip
    report = build_report(period=PERIOD, previous=Period(date_from=date(2026, 10, 1), date_to=date(2026, 10, 31)),
                          leads=[item], deals=[sale], spend=[], rates=RateBook("RUB"), stages=StageBook(STATUSES),
                          stage_history=history)  # fmt: skip
    assert report.headline.revenue == Decimal("700.00")
    december = build_report(period=Period(date_from=date(2026, 12, 1), date_to=date(2026, 12, 31)), previous=PERIOD,
                            leads=[item], deals=[sale], spend=[], rates=RateBook("RUB"), stages=StageBook(STATUSES),
                            stage_history=history)  # fmt: skip
    assert december.headline.revenue == Decimal("0.00") and december.headline_previous.revenue == Decimal("700.00")


def test_cohorts_group_by_channel_and_source() -> None:
    paid, organic = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc"), lead(UTM_SOURCE="yandex", UTM_MEDIUM="organic")
    deals = [deal(paid, won=True, amount="100", CONTACT_ID="1"), deal(organic, won=True, amount="50", CONTACT_ID="2")]
    cohorts = build([paid, organic], deals, []).cohorts
    assert sorted((c.channel, c.source, c.customers) for c in cohorts) == [("organic_search", "yandex", 1),
                                                                          ("paid_search", "yandex", 1)]  # fmt: skip


def test_roi_json_money_is_exact_decimal_strings() -> None:
    from tests.unit.test_report_build import seed_records

    data = json.loads(render_json(build(*seed_records())))
    yandex = next(r for r in data["rows"] if r["level"] == "channel" and r["channel"] == "paid_search")
    assert yandex["metrics"]["spend"] == "80000.00" and yandex["metrics"]["romi"] == "525.00"
    assert data["headline"]["revenue"] == "575000.00"


# ---- 4. one channel per deal -----------------------------------------------------------------------------------------


def test_a_crm_typed_deal_has_one_channel_in_the_table_and_under_last_click() -> None:
    other = lead(SOURCE_ID="OTHER")
    mapped = lead(SOURCE_ID="UC_DIRECT")
    deals = [deal(other, won=True, amount="300"), deal(mapped, won=True, amount="700")]
    objects = export([touch("p1", "2026-11-05T07:00:00+00:00", "offline", kind="crm_lead",
                            entity=("lead", int(other["ID"]))),
                      touch("p2", "2026-11-05T07:00:00+00:00", "offline", kind="crm_lead",
                            entity=("lead", int(mapped["ID"])))],
                     [entity("lead", other["ID"], "p1"), entity("lead", mapped["ID"], "p2")])  # fmt: skip
    report = build_report(period=PERIOD, previous=PERIOD, leads=[other, mapped], deals=deals, spend=[],
                          rates=RateBook("RUB"), stages=StageBook(STATUSES), journeys=read_journeys(objects),
                          options=ReportOptions(source_map={"paid_search/yandex": "UC_DIRECT"}))  # fmt: skip
    assert row(report, "channel", channel="unknown").metrics.revenue == Decimal("300.00")
    assert row(report, "channel", channel="paid_search").metrics.revenue == Decimal("700.00")
    last = {r.channel: r.revenue for r in report.attribution.models["last_click"]}
    assert last == {"unknown": Decimal("300.00"), "paid_search": Decimal("700.00")}


# ---- 6. simple CRM mode ----------------------------------------------------------------------------------------------


def test_simple_crm_mode_counts_requests_from_deals() -> None:
    deals = [deal(None, won=index < 2, amount="5000", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
             for index in range(4)]  # fmt: skip
    report = build([], deals, [spend("yandex_direct", "2000", campaign_id="1")])
    head = report.headline
    assert (head.leads, head.deals, head.won_deals) == (4, 4, 2)  # before: 0 leads, CPL and CR empty
    assert report.simple_crm is True
    assert head.cpl == Decimal("500.00") and head.cr == Decimal("50.00")  # 2 000 / 4; 2 of 4 requests won
    assert report.data_quality.leads == 4
    assert "Обращения" in render_html(report).decode()
    assert "Обращения" in render_csv(report).decode("utf-8-sig").splitlines()[0]


# ---- 8. one campaign name in two accounts ----------------------------------------------------------------------------


def test_one_name_in_two_accounts_is_one_row_with_both_spends() -> None:
    by_name = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Бренд") for _ in range(4)]
    by_id = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="102")
    rows = [spend("yandex_direct", "1000", campaign_id="101", name="Бренд", account_id="a1"),
            spend("yandex_direct", "3000", campaign_id="102", name="Бренд", account_id="a2")]  # fmt: skip
    report = build([*by_name, by_id], [], rows)
    campaigns = [r for r in report.rows if r.level == "campaign"]
    assert len(campaigns) == 1
    assert campaigns[0].metrics.spend == Decimal("4000.00") and campaigns[0].metrics.leads == 5
    assert campaigns[0].metrics.cpl == Decimal("800.00")
    [shared] = report.data_quality.shared_campaign_names
    assert shared.campaign_ids == ["101", "102"]
    only_ids = build([by_id], [], rows)  # no lead matched by the shared name alone: rows stay apart
    assert row(only_ids, "campaign", campaign_id="102").metrics.leads == 1
    assert only_ids.data_quality.shared_campaign_names == []


# ---- 9. spend without an exchange rate -------------------------------------------------------------------------------


def test_spend_without_a_rate_is_its_own_row_out_of_every_ratio() -> None:
    leads = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="7")]
    sale = deal(leads[0], won=True, amount="9000")
    paid = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="9")
    rows = [spend("yandex_direct", "1000", campaign_id="7", currency="KZT"),
            spend("yandex_direct", "250.50", campaign_id="7", currency="KZT"),
            spend("yandex_direct", "300", campaign_id="9")]  # fmt: skip
    report = build([*leads, paid], [sale], rows)
    kzt = row(report, "campaign", campaign_id="7")
    assert kzt.matched == "no_rate" and kzt.unconverted_spend == {"KZT": Decimal("1250.50")}
    assert kzt.metrics.romi is None and kzt.metrics.cpl is None
    assert report.headline.spend == Decimal("300.00") and report.headline.romi == Decimal("-100.00")
    # The 9 000 of the KZT campaign had spend (with no rate): never «выручка без расхода», out of every ratio.
    assert (report.headline.unpaid_revenue, report.headline.no_rate_revenue) == (Decimal("0.00"), Decimal("9000.00"))
    source = row(report, "source", source="yandex")
    assert (source.metrics.paid_revenue, source.metrics.unpaid_revenue) == (Decimal("0.00"), Decimal("0.00"))
    assert source.metrics.no_rate_revenue == Decimal("9000.00")
    page = render_html(report).decode()
    assert "нет курса" in page and "KZT без курса" in page and "лиды без расхода" not in page
    assert "выручка без расхода: 0 RUB" in page and "выручка кампаний с расходом без курса: 9\u202f000 RUB" in page
    # roi.csv: the 9 000 in a column of its own, so revenue = paid + «без расхода» + «без курса» there too.
    lines = [line.split(";") for line in render_csv(report).decode("utf-8-sig").splitlines()]
    header = lines[0]
    column = header.index("Выручка без курса")
    by_level = {(line[0], line[2], line[3]): line for line in lines[1:]}
    assert by_level[("Источник", "Яндекс", "")][column] == "9000,00"
    assert by_level[("Итого", "", "")][column] == "9000,00"
    assert by_level[("Итого", "", "")][header.index("Выручка без расхода")] == "0,00"


# ---- 12. the page shows what the README promises ---------------------------------------------------------------------


def test_page_shows_roi_cpo_cpm_impressions_new_customers_and_hides_empty_columns() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    report = build([item], [deal(item, won=True, amount="5000", CONTACT_ID="1")],
                   [spend("yandex_direct", "1000", campaign_id="1")], margin=Decimal("0.5"))  # fmt: skip
    table = render_html(report).decode().split('<table class="main">')[1].split("</thead>")[0]
    for header in ("ROI, %", "CPO", "CPM", "Показы", "Новые клиенты"):
        assert f"<th>{header}</th>" in table, header
    bare = build([lead(SOURCE_ID="CALL")], [], [])
    table = render_html(bare).decode().split('<table class="main">')[1].split("</thead>")[0]
    for header in ("Показы", "CPM", "Расход", "ROI, %", "Новые клиенты"):
        assert f"<th>{header}</th>" not in table, header
    assert "<th>Лиды</th>" in table


# ---- VAT -------------------------------------------------------------------------------------------------------------


def test_spend_on_one_vat_basis_net_by_default() -> None:
    rows = [spend("yandex_direct", "1220", campaign_id="1", include_vat=True),
            spend("yandex_direct", "1000", campaign_id="1", include_vat=False)]  # fmt: skip
    net = build([], [], rows)
    assert net.headline.spend == Decimal("2000.00")  # 1 220 / 1.22 + 1 000
    assert (net.data_quality.spend_vat_basis, net.data_quality.spend_rows_vat_converted) == ("net", 1)
    gross = build([], [], rows, spend_with_vat=True, vat_rate=Decimal("0.2"))
    assert gross.headline.spend == Decimal("2420.00")  # 1 220 + 1 000 × 1.2
    assert gross.data_quality.spend_vat_basis == "gross"


def test_settings_read_vat() -> None:
    from throughline.config import load_settings

    settings = load_settings({"REPORT_SPEND_WITH_VAT": "true", "VAT_RATE": "0.2"})
    assert settings.report_spend_with_vat is True and settings.vat_rate == Decimal("0.2")
    assert load_settings({}).vat_rate == Decimal("0.22")


def test_a_malformed_stage_history_entry_dates_nothing_and_crashes_nothing() -> None:
    item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    sale = deal(item, won=True, amount="700", CLOSEDATE="")
    history = [{"ID": 1, "OWNER_ID": sale["ID"], "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S", "CREATED_TIME": "вчера"},
               {"ID": 2, "OWNER_ID": "x", "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
                "CREATED_TIME": "2026-11-20T12:00:00+03:00"},
               {"ID": 3, "OWNER_ID": sale["ID"], "STAGE_ID": "WON",
                "CREATED_TIME": "2026-11-21T12:00:00+03:00"}]  # fmt: skip
    report = build_report(period=PERIOD, previous=PERIOD, leads=[item], deals=[sale], spend=[], rates=RateBook("RUB"),
                          stages=StageBook(STATUSES), stage_history=iter(history))  # fmt: skip
    assert report.headline.revenue == Decimal("700.00")  # dated by the one readable win (a success stage by name)
