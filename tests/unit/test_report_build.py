"""The report from CRM records and spend rows: matching, rows of their own for unmatched money, the seed example."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from itertools import count

from throughline.report.build import ReportOptions, build_report, default_periods, previous_period
from throughline.report.funnel import StageBook
from throughline.report.models import Period
from throughline.report.rates import RateBook

PERIOD = Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))
PREVIOUS = previous_period(PERIOD)
STATUSES = [
    {"ENTITY_ID": "STATUS", "STATUS_ID": "NEW", "NAME": "Не обработан", "SORT": "10", "SEMANTICS": None},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "CONVERTED", "NAME": "Качественный лид", "SORT": "40", "SEMANTICS": "S"},
    {"ENTITY_ID": "STATUS", "STATUS_ID": "JUNK", "NAME": "Некачественный лид", "SORT": "50", "SEMANTICS": "F"},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "Новая", "SORT": "10", "SEMANTICS": None},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "EXECUTING", "NAME": "В работе", "SORT": "20", "SEMANTICS": None},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Сделка успешна", "SORT": "30", "SEMANTICS": "S"},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LOSE", "NAME": "Сделка провалена", "SORT": "40", "SEMANTICS": "F"},
]
_ids = count(1)


def lead(day: str = "2026-11-05", **fields) -> dict:
    return {"ID": str(next(_ids)), "DATE_CREATE": f"{day}T10:00:00+03:00", "STATUS_ID": "CONVERTED",
            "STATUS_SEMANTIC_ID": "S", **fields}  # fmt: skip


def deal(of: dict | None, *, won: bool, amount: str = "0", day: str = "2026-11-10", **fields) -> dict:
    return {
        "ID": str(next(_ids)),
        "LEAD_ID": of["ID"] if of else None,
        "DATE_CREATE": f"{day}T12:00:00+03:00",
        "STAGE_ID": "WON" if won else "EXECUTING",
        "STAGE_SEMANTIC_ID": "S" if won else "P",
        "CLOSEDATE": f"{day}T00:00:00+03:00",
        "OPPORTUNITY": amount,
        "CURRENCY_ID": "RUB",
        "CATEGORY_ID": "0",
        **fields,
    }


def spend(platform: str, cost: str, *, campaign_id: str = "", name: str = "", day: str = "2026-11-03", **extra):
    return {"date": day, "platform": platform, "account_id": "acc", "campaign_id": campaign_id,
            "campaign_name": name, "impressions": 1000, "clicks": 10, "cost": Decimal(cost), "currency": "RUB",
            "include_vat": False, **extra}  # fmt: skip


def build(leads, deals, spend_rows, *, acquisitions=None, **options):
    """``acquisitions``: filled with the period's new customers and their source's CAC when given."""
    return build_report(
        acquisitions=acquisitions,
        period=PERIOD,
        previous=PREVIOUS,
        leads=leads,
        deals=deals,
        spend=spend_rows,
        rates=RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "90.5"}, "source": "cbr"}]),
        stages=StageBook(STATUSES),
        options=ReportOptions(**options),
        now=lambda: datetime(2026, 12, 1, 5, 0),
    )


def row(report, level, **match):
    found = [r for r in report.rows if r.level == level and all(getattr(r, k) == v for k, v in match.items())]
    assert len(found) == 1, (level, match, [(r.level, r.channel, r.source, r.campaign) for r in report.rows])
    return found[0]


def seed_records():
    leads, deals = [], []
    for index in range(100):  # Yandex Direct: 100 leads, 25 won deals, 500 000
        item = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")
        leads.append(item)
        if index < 25:
            deals.append(deal(item, won=True, amount="20000"))
    for index in range(50):  # social: 50 leads, 5 won deals, 75 000
        item = lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима")
        leads.append(item)
        if index < 5:
            deals.append(deal(item, won=True, amount="15000"))
    spend_rows = [spend("yandex_direct", "80000", campaign_id="777", name="Поиск"),
                  spend("vk_ads", "30000", campaign_id="55", name="Зима")]  # fmt: skip
    return leads, deals, spend_rows


def test_seed_example_through_the_whole_report() -> None:
    report = build(*seed_records())
    yandex = row(report, "channel", channel="paid_search")
    social = row(report, "channel", channel="social")
    assert (yandex.metrics.leads, yandex.metrics.won_deals, yandex.metrics.revenue) == (100, 25, Decimal(500000))
    assert yandex.metrics.romi == Decimal("525.00")
    assert social.metrics.romi == Decimal("150.00")
    assert yandex.channel_label == "Контекстная реклама" and social.channel_label == "Социальные сети"
    # Campaign id tag (Yandex {campaign_id}) and campaign name tag (VK) both matched their spend.
    assert row(report, "campaign", campaign_id="777").matched == "spend_and_leads"
    assert row(report, "campaign", campaign_id="55").metrics.leads == 50
    assert report.headline.spend == Decimal(110000) and report.headline.revenue == Decimal(575000)
    assert report.headline.romi == Decimal("422.73")  # (575 000 − 110 000) / 110 000
    assert report.rows[0].channel == "paid_search"  # most spend first


def test_unmatched_spend_and_unmatched_leads_are_rows_of_their_own() -> None:
    leads = [lead(UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand_typo")]
    report = build(leads, [], [spend("google_ads", "1234.56", campaign_id="9", name="Brand")])
    spend_only = row(report, "campaign", campaign_id="9")
    assert spend_only.matched == "spend_only" and spend_only.metrics.leads == 0 and spend_only.metrics.cpl is None
    leads_only = row(report, "campaign", campaign="brand_typo")
    assert leads_only.matched == "leads_only" and leads_only.metrics.spend == 0
    assert report.data_quality.unmatched_spend == Decimal("1234.56")
    assert report.headline.spend == Decimal("1234.56") and report.headline.leads == 1  # nothing dropped


def test_manual_spend_matches_by_its_tags() -> None:
    leads = [lead(UTM_SOURCE="telegram", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Posev_1") for _ in range(4)]
    manual = spend("manual", "2000", utm_source="tg", utm_medium="cpc", utm_campaign="posev_1")
    report = build(leads, [], [manual])
    matched = row(report, "campaign", platform="manual")
    assert matched.metrics.leads == 4 and matched.metrics.cpl == Decimal("500.00")
    assert matched.channel == "social" and matched.source == "telegram"


def test_untagged_records_go_by_crm_source_and_unknown_is_visible() -> None:
    leads = [lead(SOURCE_ID="CALL"), lead(SOURCE_ID="CALL"), lead(SOURCE_ID="OTHER"), lead(),
             lead(UTM_SOURCE="weird-partner-xyz", UTM_MEDIUM="")]  # fmt: skip
    report = build(leads, [], [])
    assert row(report, "channel", channel="offline").metrics.leads == 2
    assert row(report, "channel", channel="unknown").metrics.leads == 2
    quality = report.data_quality
    assert (quality.leads, quality.leads_with_source, quality.leads_without_source) == (5, 3, 2)
    assert quality.known_source_share == Decimal("60.00") and quality.meets_target is False
    assert [tag.utm_source for tag in quality.unknown_tags] == ["weird-partner-xyz"]


def test_deals_follow_their_lead_and_currency_and_new_customers_and_cycle() -> None:
    first = lead(day="2026-11-01", UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    deals = [
        deal(first, won=True, amount="100", day="2026-11-11", CURRENCY_ID="USD", CONTACT_ID="7"),
        deal(first, won=True, amount="1000", day="2026-11-21", CONTACT_ID="7"),  # the same customer again
        deal(None, won=True, amount="500", day="2026-10-15", UTM_SOURCE="yandex", UTM_MEDIUM="cpc"),  # previous
    ]
    report = build([first], deals, [])
    yandex = row(report, "source", source="yandex")
    assert yandex.metrics.revenue == Decimal("10050.00")  # 100 × 90.5 + 1000
    assert yandex.metrics.won_deals == 2 and yandex.metrics.new_customers == 1
    assert yandex.metrics.sales_cycle_days == Decimal("15.0")  # (10 + 20) / 2
    assert yandex.previous is not None and yandex.previous.revenue == Decimal(500)
    assert yandex.change is not None and yandex.change.revenue_pct == Decimal("1910.00")
    assert [rate.currency for rate in report.currency_rates] == ["USD"]


def test_funnel_from_current_stages() -> None:
    leads = [lead(), lead(STATUS_ID="JUNK", STATUS_SEMANTIC_ID="F")]
    deals = [deal(None, won=True), deal(None, won=False), deal(None, won=False, STAGE_ID="LOSE", STAGE_SEMANTIC_ID="F")]
    report = build(leads, deals, [])
    pipeline = next(p for p in report.funnels if p.entity == "deal")
    stages = {stage.stage_id: stage for stage in pipeline.stages}
    assert (pipeline.total, pipeline.won, pipeline.lost) == (3, 1, 1)
    assert [stages[s].reached for s in ("NEW", "EXECUTING", "WON")] == [3, 2, 1]
    assert stages["EXECUTING"].conversion_from_previous == Decimal("66.67")
    assert pipeline.loss_reasons == {"Сделка провалена": 1}


def test_suspected_duplicates_by_person_keys() -> None:
    leads = [lead(PERSON_KEYS=["p1"]), lead(PERSON_KEYS=["p2", "e1"]), lead(PERSON_KEYS=["e1"])]
    assert build(leads, [], []).data_quality.suspected_duplicates == 1
    # One key (the common case, a lookup and an add) and several keys (isdisjoint and update), mixed either way.
    keys = (["e1"], ["p2", "e1"], ["p2"], ["p3"], [], ["p4", "p5"], ["p5"], ["p6"])
    leads = [lead(PERSON_KEYS=person_keys) for person_keys in keys]
    assert build(leads, [], []).data_quality.suspected_duplicates == 3


def test_default_periods() -> None:
    current, previous = default_periods(date(2026, 11, 20))
    assert (current.date_from, current.date_to) == (date(2026, 11, 1), date(2026, 11, 19))
    assert (previous.date_from, previous.date_to) == (date(2026, 10, 1), date(2026, 10, 19))  # like for like
    current, previous = default_periods(date(2026, 12, 1))
    assert (current.date_from, current.date_to, previous.date_from) == (date(2026, 11, 1), date(2026, 11, 30),
                                                                         date(2026, 10, 1))  # fmt: skip


def test_portal_sources_read_back_through_the_writers_source_map() -> None:
    leads = [lead(SOURCE_ID="UC_DIRECT"), lead(SOURCE_ID="UC_UNMAPPED"), lead(SOURCE_ID="TRADE_SHOW")]
    report = build(leads, [], [], source_map={"paid_search/yandex": "UC_DIRECT", "paid": "ADVERTISING"})
    assert row(report, "source", source="yandex").channel == "paid_search"
    assert row(report, "source", source="UC_UNMAPPED").channel == "unknown"  # kept visible, not guessed
    assert row(report, "source", source="trade_show").source_label == "Выставка"


def test_spend_in_another_currency_uses_the_rate_of_its_day() -> None:
    report = build([], [], [spend("google_ads", "100", campaign_id="1", currency="USD")])
    assert report.headline.spend == Decimal("9050.00")  # 100 × 90.5 (rates of 2026-11-01)
    assert report.data_quality.unmatched_spend == Decimal("9050.00")


def test_spend_in_a_currency_without_a_rate_is_shown_not_crashed_on() -> None:
    rows = [spend("yandex_direct", "1000", campaign_id="7", currency="KZT"),
            spend("yandex_direct", "250.50", campaign_id="8", currency="KZT"),
            spend("yandex_direct", "300", campaign_id="9")]  # fmt: skip
    report = build([], [], rows)
    assert report.headline.spend == Decimal("300.00")  # the KZT rows are left out of the money, not guessed
    assert report.data_quality.spend_without_rate == {"KZT": Decimal("1250.50")}


def test_funnel_from_stage_history_counts_where_lost_deals_fell_out_and_time_in_stage() -> None:
    won = deal(None, won=True, day="2026-11-02")
    lost = deal(None, won=False, day="2026-11-02", STAGE_ID="LOSE", STAGE_SEMANTIC_ID="F")
    fresh = deal(None, won=False, day="2026-11-02", STAGE_ID="NEW")
    moves = [(won, "NEW", "02"), (won, "EXECUTING", "04"), (won, "WON", "09"), (lost, "NEW", "02"),
             (lost, "EXECUTING", "03"), (lost, "LOSE", "06"), (fresh, "NEW", "02")]  # fmt: skip
    history = [{"ID": index, "OWNER_ID": item["ID"], "STAGE_ID": stage, "CREATED_TIME": f"2026-11-{day}T10:00:00+03:00"}
               for index, (item, stage, day) in enumerate(moves, start=1)]  # fmt: skip
    report = build_report(
        period=PERIOD, previous=PREVIOUS, leads=[], deals=[won, lost, fresh], spend=[], rates=RateBook("RUB"),
        stages=StageBook(STATUSES), stage_history=history, now=lambda: datetime(2026, 12, 1),
    )  # fmt: skip
    [pipeline] = report.funnels
    stages = {stage.stage_id: stage for stage in pipeline.stages}
    assert pipeline.source == "stage_history"
    assert [stages[s].reached for s in ("NEW", "EXECUTING", "WON")] == [3, 2, 1]  # the lost deal got to EXECUTING
    assert stages["NEW"].mean_days_in_stage == Decimal("1.5")  # (2 + 1) / 2; the fresh deal has not left NEW
    assert stages["EXECUTING"].mean_days_in_stage == Decimal("4.0")  # (5 + 3) / 2
    assert stages["WON"].mean_days_in_stage is None
    assert pipeline.loss_reasons == {"Сделка провалена": 1}


def test_stage_history_is_read_once_and_its_odd_entries_still_reach_the_funnel() -> None:
    # The job's reader of the snapshot is called once (it was called twice: the wins, then the funnel, a million
    # entries JSON-decoded twice a night). Entries with an ID written as text, a naive time or a deal ID as text are
    # kept whole beside the compact copy; a malformed one is skipped. The figures are the funnel test's above.
    won = deal(None, won=True, day="2026-11-02", CLOSEDATE="")
    lost = deal(None, won=False, day="2026-11-02", STAGE_ID="LOSE", STAGE_SEMANTIC_ID="F")
    fresh = deal(None, won=False, day="2026-11-02", STAGE_ID="NEW")
    history = [
        {"ID": 1, "OWNER_ID": won["ID"], "STAGE_ID": "NEW", "CREATED_TIME": "2026-11-02T10:00:00+03:00"},
        {"ID": "2", "OWNER_ID": won["ID"], "STAGE_ID": "EXECUTING", "CREATED_TIME": "2026-11-04T10:00:00+03:00"},
        {"ID": 3, "OWNER_ID": str(won["ID"]), "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
         "CREATED_TIME": "2026-11-09T10:00:00"},  # naive: the report's zone (Moscow, +03:00)
        {"ID": 4, "OWNER_ID": lost["ID"], "STAGE_ID": "NEW", "CREATED_TIME": "2026-11-02T10:00:00+03:00"},
        {"ID": 5, "OWNER_ID": lost["ID"], "STAGE_ID": "EXECUTING", "CREATED_TIME": "2026-11-03T10:00:00+03:00"},
        {"ID": 6, "OWNER_ID": lost["ID"], "STAGE_ID": "LOSE", "CREATED_TIME": "2026-11-06T10:00:00+03:00"},
        {"ID": 7, "OWNER_ID": fresh["ID"], "STAGE_ID": "NEW", "CREATED_TIME": "2026-11-02T10:00:00+03:00"},
        {"ID": 8, "OWNER_ID": fresh["ID"], "STAGE_ID": "EXECUTING", "CREATED_TIME": "не дата"},  # skipped
        {"ID": 9, "OWNER_ID": "x", "STAGE_ID": "WON", "CREATED_TIME": "2026-11-05T10:00:00+03:00"},  # skipped
        {"ID": 10, "OWNER_ID": fresh["ID"], "STAGE_ID": "EXECUTING", "CREATED_TIME": ""},  # skipped
    ]  # fmt: skip
    calls, wins = [], {}

    def read() -> Iterator[dict]:
        calls.append(1)
        return iter(history)

    report = build_report(
        period=PERIOD, previous=PREVIOUS, leads=[], deals=[won, lost, fresh], spend=[], rates=RateBook("RUB"),
        stages=StageBook(STATUSES), stage_history=read, now=lambda: datetime(2026, 12, 1), wins=wins,
    )  # fmt: skip
    assert len(calls) == 1
    assert wins == {int(won["ID"]): "2026-11-09T10:00:00"}  # as last_wins dates it: the segments section's wins
    [pipeline] = report.funnels
    stages = {stage.stage_id: stage for stage in pipeline.stages}
    assert [stages[s].reached for s in ("NEW", "EXECUTING", "WON")] == [3, 2, 1]
    assert stages["NEW"].mean_days_in_stage == Decimal("1.5")
    assert stages["EXECUTING"].mean_days_in_stage == Decimal("4.0")
    assert report.headline.won_deals == 1  # dated by its win in the history (no CLOSEDATE): 9 Nov, in the period


def test_mytarget_and_vk_ads_tags_meet_vk_ads_spend_by_campaign_name() -> None:
    leads = [lead(UTM_SOURCE="mytarget", UTM_MEDIUM="cpm", UTM_CAMPAIGN="Лето"),
             lead(UTM_SOURCE="vk_ads", UTM_MEDIUM="cpc", UTM_CAMPAIGN="лето ")]  # fmt: skip
    report = build(leads, [], [spend("vk_ads", "3000", campaign_id="9001", name="Лето")])
    campaign = row(report, "campaign", campaign_id="9001")
    assert campaign.metrics.leads == 2 and campaign.metrics.cpl == Decimal("1500.00")
    assert campaign.matched == "spend_and_leads" and campaign.channel == "social"


def test_the_kept_copy_of_the_stage_history_gives_the_funnel_what_the_entries_give_it() -> None:
    # Hostile entries (IDs as text, floats, booleans, beyond 64 bits, missing fields, lone surrogates, bad times):
    # the funnel's paths from the compact copy equal those from the entries themselves, errors included.
    import random

    from throughline.report.build import _Builder, _history, _Moves

    rng = random.Random(7)
    choices = {"ID": [1, 2, 3, "4", "x", None, 2**70, 5.0, True], "OWNER_ID": [1, 2, 3, "2", "x", None, 0, 2**70, 3.0],
               "STAGE_ID": ["NEW", "WON", "", None, 5, "Ё"],
               "CREATED_TIME": ["2026-11-02T10:00:00+03:00", "2026-11-02T10:00:00", "не дата", "", None, 5,
                                "2026-11-03T01:00:00Z", "\ud800"]}  # fmt: skip
    builder = _Builder(PERIOD, PREVIOUS, RateBook("RUB"), ReportOptions())
    builder.period_deals = {1: (0, "NEW"), 2: (0, "WON"), 3: (1, "NEW")}

    def paths(history):
        try:
            return builder.deal_paths(history)
        except Exception as error:  # the same error either way is what is compared
            return type(error).__name__

    for _ in range(500):
        rows = [{key: rng.choice(values) for key, values in choices.items() if rng.random() < 0.9}
                for _ in range(rng.randrange(12))]  # fmt: skip
        moves = _Moves()
        assert len(list(moves.kept(_history(rows)))) == len(rows)  # as tuples, the columnar copy's or the JSON rows'
        assert paths(moves) == paths(rows)
