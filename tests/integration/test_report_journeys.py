"""build_roi_report with a journey export: journeys made from Bitrix24 events, exported by the report run itself
(``export_journeys`` over the journey table), credited by every attribution model; a report without a journey
table says why its attribution section is empty."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal

import boto3
import pytest

from tests.integration.test_journey_events import manager_lead, settle
from throughline.config import get_settings
from throughline.journey.export import export_journeys


@pytest.fixture
def live(make_stack):
    stack = make_stack()
    stack.sandbox.set_clock_offset(-20 * 86400)
    return stack


def won_deal(stack, lead: int, amount: str, currency: str = "RUB") -> int:
    deal = stack.sandbox.convert_lead(lead)
    today = (datetime.now() - timedelta(days=20)).date().isoformat()
    stack.sandbox.call("crm.deal.update", {"id": deal, "fields": {"OPPORTUNITY": amount, "CURRENCY_ID": currency}})
    stack.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON", "CLOSEDATE": today}})
    return deal


def roi(bucket: str) -> dict:
    body = boto3.client("s3").get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read()
    return json.loads(body, parse_float=Decimal)


def test_every_model_splits_the_won_revenue_to_the_kopeck(live) -> None:
    bucket = get_settings().data_bucket
    period = {"date_from": (date.today() - timedelta(days=40)).isoformat(), "date_to": date.today().isoformat()}
    yandex = manager_lead(live, UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="brand", SOURCE_ID="ADVERTISING",
                          PHONE=[{"VALUE": "+79990000001"}])  # fmt: skip
    vk = manager_lead(live, UTM_SOURCE="vk", UTM_MEDIUM="social", PHONE=[{"VALUE": "+79990000002"}])
    manager_lead(live, UTM_SOURCE="google", UTM_MEDIUM="cpc", PHONE=[{"VALUE": "+79990000003"}])  # never buys
    settle(live)
    won_deal(live, yandex, "12345.67")
    won_deal(live, vk, "99.99", "USD")
    settle(live)

    run = live.invoke("build_roi_report", period)  # exports the journey table, then reads the export
    assert run["period"] == period
    assert boto3.client("s3").get_object(Bucket=bucket, Key="journeys/latest.json")
    report = roi(bucket)
    section = report["attribution"]
    revenue = Decimal(report["headline"]["revenue"])  # money in roi.json: exact decimal strings
    assert revenue > Decimal("12345.67") and report["headline"]["won_deals"] == 2
    assert section is not None and Decimal(section["revenue"]) == revenue and Decimal(section["conversions"]) == 2
    assert set(section["models"]) == {"first_click", "last_click", "last_non_direct", "linear", "time_decay",
                                      "position_based", "markov", "shapley"}  # fmt: skip
    for model, rows in section["models"].items():
        assert sum(Decimal(row["revenue"]) for row in rows) == revenue, model
        assert sum(Decimal(row["conversions"]) for row in rows) == 2, model
    last = {row["channel"]: Decimal(row["revenue"]) for row in section["models"]["last_click"]}
    assert last["paid_search"] == Decimal("12345.67")  # the yandex lead's own first touch
    assert last["social"] == revenue - Decimal("12345.67")  # 99.99 USD at the portal's rate
    assert last["paid_search"] + last["social"] == revenue and last.get("crm") is None  # sales touches take nothing
    assert section["deals_without_person"] == 0 and section["non_converting_journeys"] >= 1  # the google lead
    assert report["data_quality"]["journeys"] is None
    [cohort] = [row for row in report["cohorts"] if row["source"] == "yandex"]
    assert cohort["customers"] == 1 and Decimal(cohort["ltv"][-1]) == Decimal("12345.67")
    csv_text = boto3.client("s3").get_object(Bucket=bucket, Key="reports/roi/latest/roi.csv")["Body"].read()
    assert "Последний клик" in csv_text.decode("utf-8-sig")


def test_without_a_journey_export_the_report_says_why_attribution_is_missing(live, monkeypatch) -> None:
    monkeypatch.delenv("JOURNEY_TABLE")
    from throughline.config import reset_settings_cache

    reset_settings_cache()
    period = {"date_from": (date.today() - timedelta(days=40)).isoformat(), "date_to": date.today().isoformat()}
    live.invoke("build_roi_report", period)
    report = roi(get_settings().data_bucket)
    assert report["attribution"] is None and "journeys/latest.json" in report["data_quality"]["journeys"]
    assert export_journeys  # the exporter the report runs when JOURNEY_TABLE is set
