"""The Athena views (report/sql/) on DuckDB over the objects a report run reads — the CRM snapshot, spend/ and
rates/ as moto's S3 holds them after build_roi_report — against that run's roi.json, to the kopeck."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from athena_duckdb import download, with_views
from test_report_function import put_spend, spend_row

from local.bitrix24_sandbox.server import seed_history

METRICS = ("impressions", "clicks", "spend", "leads", "deals", "won_deals", "revenue", "new_customers", "ctr", "cpc",
           "cpm", "cpl", "average_check", "cpo", "cac", "romi", "roi", "roas", "drr", "sales_cycle_days")  # fmt: skip
NOVEMBER = date(2026, 11, 1)


@pytest.fixture
def report_run(make_stack, tmp_path: Path):
    """A month with matched and unmatched spend, a renamed campaign, a second currency, unpaid revenue inside a paid
    channel, CRM sources without tags and a deal without a lead; the report run, then the bucket copied locally."""
    import boto3

    stack = make_stack(poll_queues=False)
    bucket = stack.resources.physical["DataBucket"]
    s3 = boto3.session.Session().client("s3")
    for platform, day, campaign_id, name, cost, extra in (
        ("yandex_direct", "2026-11-02", "777", "Поиск", "80000.00", {}),
        ("yandex_direct", "2026-11-05", "778", "Ретаргет старый", "1000.10", {}),
        ("yandex_direct", "2026-11-06", "778", "Ретаргет", "2000.20", {}),
        ("vk_ads", "2026-11-02", "55", "Зима", "29999.99", {}),
        ("google_ads", "2026-11-04", "9", "Brand", "100.005", {"currency": "USD"}),
        ("google_ads", "2026-12-02", "9", "Brand", "5", {}),
        ("manual", "2026-11-03", "", "", "0.01", {"utm_source": "flyer", "utm_medium": "offline", "utm_campaign": "x"}),
        ("yandex_direct", "2026-11-04", "779", "Ёлка", "1220.00", {"include_vat": True}),  # net: 1 000
        ("vk_ads", "2026-11-07", "56", "Весна", "1000", {"currency": "UZS"}),  # no rate anywhere: «нет курса»
    ):
        put_spend(s3, bucket, platform, day, f"acc-{platform}-{day}", [spend_row(platform, day, campaign_id, name,
                                                                                 cost, **extra)])  # fmt: skip
    s3.put_object(Bucket=bucket, Key="rates/date=2026-11-01/rates.json",
                  Body=json.dumps({"date": "2026-11-01", "base": "RUB", "rates": {"USD": "92.12"}, "source": "cbr",
                                   "fetched_at": "2026-11-01T00:00:00Z"}))  # fmt: skip

    def leads(count: int, day: str, **tags) -> list[dict]:
        return [{"DATE_CREATE": f"{day}T10:00:00+03:00", **tags} for _ in range(count)]

    ids = seed_history(
        stack.sandbox,
        "lead",
        leads(100, "2026-11-05", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")
        + leads(50, "2026-11-06", UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима")
        + leads(3, "2026-11-07", UTM_SOURCE="google", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand_typo")
        + leads(2, "2026-11-08", UTM_SOURCE="Yandex.Direct", UTM_MEDIUM="CPC", UTM_CAMPAIGN=" ретаргет СТАРЫЙ ")
        + leads(4, "2026-11-09", UTM_SOURCE="google", UTM_MEDIUM="organic")
        + leads(2, "2026-11-10", SOURCE_ID="CALL")
        + leads(1, "2026-11-10", SOURCE_ID="OTHER")
        + leads(1, "2026-11-11", UTM_SOURCE="l.facebook.com", UTM_MEDIUM="")
        + leads(1, "2026-10-20", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="777")
        + leads(
            2, "2026-11-14", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="{campaign_name}", UTM_CONTENT="779"
        )  # the campaign id in utm_content
        + leads(1, "2026-11-14", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="%D0%81%D0%BB%D0%BA%D0%B0")
        + leads(1, "2026-11-15", UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="весна"),
    )

    def won(lead: int | None, amount, closed: str, **fields) -> dict:
        return {"DATE_CREATE": "2026-11-12T10:00:00+03:00", "LEAD_ID": lead, "STAGE_ID": "WON", "OPPORTUNITY": amount,
                "CURRENCY_ID": "RUB", "CLOSEDATE": closed, **fields}  # fmt: skip

    seed_history(
        stack.sandbox,
        "deal",
        [won(ids[n], 20000, "2026-11-20", CONTACT_ID=str(1000 + n)) for n in range(25)]
        + [won(ids[100 + n], 15000, "2026-11-21") for n in range(5)]
        + [won(ids[150], 5000, "2026-11-22")]  # brand_typo: revenue without spend in a paid channel
        + [won(ids[153], 100, "2026-11-25", CURRENCY_ID="USD")]  # the renamed campaign, in dollars
        + [won(ids[155], 7000, "2026-11-26")]  # organic
        + [won(None, 3000, "2026-11-27", UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима", CONTACT_ID="1000")]
        + [{"DATE_CREATE": "2026-11-13T10:00:00+03:00", "LEAD_ID": ids[159], "STAGE_ID": "NEW", "OPPORTUNITY": 1}]
        + [won(ids[163], 999, "2026-10-25", DATE_CREATE="2026-10-21T10:00:00+03:00")]  # October
        + [won(ids[164], 4000, "2026-11-23", COMPANY_ID="77"), won(ids[165], 6000, "2026-11-24", COMPANY_ID="77")]
        + [won(ids[166], -500, "2026-11-24"), won(ids[167], "abc", "2026-11-25")]  # no money: won, no revenue
        + [won(ids[167], 2500, "2026-11-26")],  # «Весна»: spend with no rate — revenue neither paid nor unpaid
    )
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    report = json.loads(s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read())
    download(bucket, ("crm/snapshot/", "spend/", "rates/"), tmp_path)
    return report, with_views(tmp_path, currency="RUB", timezone="Europe/Moscow")


def _number(value) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _dicts(db, query: str) -> list[dict]:
    cursor = db.execute(query)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def test_roi_by_campaign_equals_the_reports_campaign_rows(report_run) -> None:
    report, db = report_run
    views = {(r["channel"], r["source"], r["platform"], r["campaign_id"], r["campaign"], r["matched"] == "no_rate"): r
             for r in _dicts(db, f"SELECT * FROM roi_by_campaign WHERE month = DATE '{NOVEMBER}'")}  # fmt: skip
    rows = {(r["channel"], r["source"], r["platform"], r["campaign_id"], r["campaign"], r["matched"] == "no_rate"): r
            for r in report["rows"] if r["level"] == "campaign"}  # fmt: skip
    active = {key for key, row in rows.items() if row["unconverted_spend"] or any(
        _number(row["metrics"][name]) for name in ("spend", "leads", "deals", "won_deals"))}  # fmt: skip
    assert set(views) == active, set(views) ^ active
    assert len(views) >= 11
    for key, view in views.items():
        row = rows[key]
        assert view["matched"] == row["matched"], key
        for name in METRICS:
            assert view[name] == _number(row["metrics"][name]), (key, name, view[name], row["metrics"][name])
        unconverted = {view["unconverted_currency"]: view["unconverted_spend"]} if view["unconverted_currency"] else {}
        assert unconverted == {code: _number(amount) for code, amount in row["unconverted_spend"].items()}, key
        if view["leads_with_deal"] == view["deals"]:  # the cohort CR equals deals / leads here
            assert view["cr"] == _number(row["metrics"]["cr"]), key
    fir = views[("paid_search", "yandex", "yandex_direct", "779", "Ёлка", False)]  # by utm_content and by name
    assert (fir["spend"], fir["leads"], fir["won_deals"], fir["revenue"]) == (Decimal("1000.00"), 3, 3, Decimal(10000))
    assert fir["new_customers"] == 2 and fir["average_check"] == Decimal("5000.00")  # company 77 once; −500 out
    spring = views[("social", "vk", "vk_ads", "56", "Весна", True)]
    assert (spring["matched"], spring["unconverted_currency"], spring["unconverted_spend"]) == (
        "no_rate", "UZS", Decimal("1000.00"))  # fmt: skip
    assert (spring["spend"], spring["leads"], spring["won_deals"], spring["revenue"]) == (0, 1, 2, Decimal(2500))
    renamed = views[("paid_search", "yandex", "yandex_direct", "778", "Ретаргет", False)]
    assert renamed["leads"] == 2 and renamed["spend"] == Decimal("3000.30") and renamed["revenue"] == Decimal("9212.00")
    assert views[("paid_search", "google", "google_ads", "9", "Brand", False)]["spend"] == Decimal(
        "9212.46"
    )  # 100.005 × 92.12


def test_roi_by_channel_equals_the_reports_aggregates_and_applies_the_paid_rule(report_run) -> None:
    report, db = report_run
    views = {(r["level"], r["channel"], r["source"]): r
             for r in _dicts(db, f"SELECT * FROM roi_by_channel WHERE month = DATE '{NOVEMBER}'")}  # fmt: skip
    rows = {(r["level"], r["channel"], r["source"] if r["level"] == "source" else None): r["metrics"]
            for r in report["rows"] if r["level"] in ("channel", "source")}  # fmt: skip
    rows[("total", None, None)] = report["headline"]
    active = {key for key, metrics in rows.items() if any(metrics[n] for n in ("spend", "leads", "deals", "won_deals"))}
    assert set(views) == active, set(views) ^ active
    compared = 0
    for key, view in views.items():
        metrics = rows[key]
        for name in METRICS:  # the cost ratios by the paid rule on both sides
            assert view[name] == _number(metrics[name]), (key, name, view[name], metrics[name])
        for name in ("paid_revenue", "unpaid_revenue", "no_rate_revenue"):  # beside the ratios
            assert view[name] == _number(metrics[name]), (key, name, view[name], metrics[name])
        compared += 1
    assert compared == len(views) >= 10
    # Paid search by hand: Yandex 777 (80 000; 25 × 20 000), 778 (3 000.30; 9 212.00), 779 (1 220 with VAT: 1 000
    # net; 3 leads, 3 won: 4 000 + 6 000 + one of −500 without revenue), Google Brand (9 212.46, no leads) carry
    # spend; the brand_typo leads (3, one won 5 000) carry none and stay beside the ratios.
    paid = views[("channel", "paid_search", None)]
    assert paid["spend"] == Decimal("93212.76") and paid["revenue"] == Decimal("524212.00")
    assert (paid["paid_leads"], paid["paid_won_deals"], paid["paid_revenue"]) == (105, 29, Decimal("519212.00"))
    assert (paid["unpaid_leads"], paid["unpaid_won_deals"], paid["unpaid_revenue"]) == (3, 1, Decimal("5000.00"))
    assert paid["romi"] == Decimal("457.02")  # (519 212 − 93 212.76) / 93 212.76
    assert paid["cpl"] == Decimal("887.74") and paid["cpo"] == Decimal("3214.23")  # 93 212.76 / 105, / 29
    total = views[("total", None, None)]
    assert total["spend"] == _number(report["headline"]["spend"]) == Decimal("123212.76")
    # «Весна» (1 000 UZS, no rate): its 2 500 are «нет курса» revenue — neither paid nor unpaid, on both sides.
    social = views[("channel", "social", None)]
    assert (social["no_rate_revenue"], total["no_rate_revenue"]) == (Decimal(2500), Decimal(2500))
    assert social["revenue"] == social["paid_revenue"] + social["unpaid_revenue"] + social["no_rate_revenue"]
