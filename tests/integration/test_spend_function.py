"""import_ad_spend through the local stack (template.yaml's resources, moto S3, the Bitrix24 sandbox) against the
three ad sandboxes: a 90-day back-fill, idempotent reruns, a failing platform, the nightly window, rates."""

from __future__ import annotations

import gzip
import json
from datetime import date, timedelta
from decimal import Decimal

import boto3
import pytest
import requests

from local.ad_sandboxes import GoogleAdsSandbox, VkAdsSandbox, YandexDirectSandbox
from local.ad_sandboxes.base import daily_stats
from tests.integration.test_report_function import emitted_metrics
from throughline.spend.importer import RunResult, SpendImportFailed

GOOGLE_CUSTOMER = "1112223334"


@pytest.fixture
def ads():
    with (
        YandexDirectSandbox({"client-one": ("RUB", 4), "client-two": ("RUB", 3)}, online_max_rows=100,
                            offline_polls=1, retry_in=0) as direct,
        GoogleAdsSandbox({GOOGLE_CUSTOMER: ("RUB", "Europe/Moscow", 4)}) as google,
        VkAdsSandbox(campaigns=8) as vk,
    ):  # fmt: skip
        yield direct, google, vk


def _environment(direct, google, vk, **changes) -> dict[str, str]:
    return {
        "YANDEX_DIRECT_TOKEN": "agency-token", "YANDEX_DIRECT_API_URL": direct.api_url,
        "YANDEX_DIRECT_CLIENT_LOGINS": "client-one,client-two",
        "GOOGLE_ADS_CLIENT_ID": "sandbox-client-id", "GOOGLE_ADS_CLIENT_SECRET": "sandbox-client-secret",
        "GOOGLE_ADS_REFRESH_TOKEN": "sandbox-refresh-token", "GOOGLE_ADS_CUSTOMER_IDS": GOOGLE_CUSTOMER,
        "GOOGLE_ADS_API_URL": google.api_url("v26"), "GOOGLE_OAUTH_TOKEN_URL": google.token_url,
        "VK_ADS_CLIENT_ID": "vk-sandbox-client", "VK_ADS_CLIENT_SECRET": "vk-sandbox-secret",
        "VK_ADS_API_URL": vk.api_url, **changes,
    }  # fmt: skip


def _objects(stack) -> dict[str, bytes]:
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="spend/platform=")
            for o in page.get("Contents", [])]  # fmt: skip
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys)}


def _rows(body: bytes) -> list[dict]:
    rows = [json.loads(line, parse_float=Decimal) for line in gzip.decompress(body).decode().splitlines()]
    return [{k: v for k, v in row.items() if k != "ingested_at"} for row in rows]


def _totals(objects: dict[str, bytes]) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = {}
    for key, body in objects.items():
        platform = key.split("/")[1].removeprefix("platform=")
        for line in gzip.decompress(body).decode().splitlines():
            totals[platform] = totals.get(platform, Decimal(0)) + json.loads(line, parse_float=Decimal)["cost"]
    return totals


def test_a_90_day_backfill_is_complete_and_a_rerun_changes_nothing(make_stack, ads):
    direct, google, vk = ads
    stack = make_stack(poll_queues=False, environment=_environment(direct, google, vk))
    first, last = date(2026, 6, 1), date(2026, 8, 29)  # 90 days
    event = {"date_from": first.isoformat(), "date_to": last.isoformat()}
    summary = stack.invoke("import_ad_spend", event)
    assert summary["ok"] is True
    objects = _objects(stack)
    totals = _totals(objects)
    assert totals["yandex_direct"] == direct.expected_cost("client-one", first, last) + direct.expected_cost(
        "client-two", first, last
    )
    assert totals["google_ads"] == Decimal(google.expected_micros(GOOGLE_CUSTOMER, first, last)) / 1_000_000
    assert totals["vk_ads"] == vk.expected_cost(first, last)
    assert len(objects) == 90 * (2 + 1 + 1)  # one object per day per account
    # Run it again (a retried back-fill): the same objects with the same rows (only ingested_at moves on).
    stack.invoke("import_ad_spend", event)
    again = _objects(stack)
    assert again.keys() == objects.keys()
    assert {key: _rows(body) for key, body in again.items()} == {key: _rows(body) for key, body in objects.items()}
    assert _totals(again) == totals
    assert vk.tokens_issued == 1 and google.tokens_issued == 2  # VK's token came from the bucket the second time


def test_a_failing_platform_does_not_block_the_others_and_the_run_fails_naming_it(make_stack, ads, capsys):
    direct, google, vk = ads
    stack = make_stack(poll_queues=False, environment=_environment(direct, google, vk,
                                                                   GOOGLE_ADS_REFRESH_TOKEN="revoked"))  # fmt: skip
    with pytest.raises(SpendImportFailed) as failed:
        stack.invoke("import_ad_spend", {"date_from": "2026-11-01", "date_to": "2026-11-05"})
    message = str(failed.value)
    assert "google_ads" in message and "invalid_grant" in message
    assert "yandex_direct" not in message and "vk_ads" not in message
    assert "revoked" not in message.replace("expired or was revoked", "")  # never the secret itself
    platforms = {key.split("/")[1] for key in _objects(stack)}
    assert platforms == {"platform=yandex_direct", "platform=vk_ads"}
    # An incomplete import is no import for the SpendImportNotRun alarm; its failures are counted.
    metrics = emitted_metrics(capsys.readouterr().out)
    assert "SpendImportsCompleted" not in metrics and metrics["SpendFailures"] == [1]


def test_the_nightly_event_imports_the_lookback_window_and_stores_rates(make_stack, ads, capsys):
    direct, google, vk = ads
    stack = make_stack(poll_queues=False, environment=_environment(direct, google, vk, SPEND_LOOKBACK_DAYS="3"))
    answer = requests.post(f"{stack.url}/_local/invoke/import_ad_spend", json={}, timeout=120)
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    from datetime import datetime
    from zoneinfo import ZoneInfo

    yesterday = datetime.now(ZoneInfo("Europe/Moscow")).date() - timedelta(days=1)
    assert (summary["date_from"], summary["date_to"]) == ((yesterday - timedelta(days=2)).isoformat(),
                                                          yesterday.isoformat())  # fmt: skip
    dates = {key.split("/")[2] for key in _objects(stack)}
    assert dates == {f"date={yesterday - timedelta(days=n)}" for n in range(3)}
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    [rates_key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="rates/")["Contents"]]
    rates = json.loads(s3.get_object(Bucket=bucket, Key=rates_key)["Body"].read())
    assert rates["base"] == "RUB" and rates["source"] == "bitrix24" and rates["rates"]["RUB"] == "1"
    assert Decimal(rates["rates"]["USD"]) > 1
    assert emitted_metrics(capsys.readouterr().out)["SpendImportsCompleted"] == [1]  # the alarm's heartbeat


def test_an_inbox_event_imports_manual_files_and_ignores_its_own_rejects(make_stack, ads, capsys):
    direct, google, vk = ads
    stack = make_stack(poll_queues=False, environment=_environment(direct, google, vk))
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    s3.put_object(Bucket=bucket, Key="spend/manual/inbox/radio.csv",
                  Body=b"date;utm_source;utm_medium;utm_campaign;cost;currency\n2026-11-01;radio;offline;a;10,5;RUB\n"
)  # fmt: skip
    event = {"source": "aws.s3", "detail-type": "Object Created",
             "detail": {"bucket": {"name": bucket}, "object": {"key": "spend/manual/inbox/radio.csv"}}}  # fmt: skip
    summary = stack.invoke("import_ad_spend", event)
    assert summary["platforms"]["manual"]["rows"] == 1 and set(summary["platforms"]) == {"manual"}
    assert "SpendImportsCompleted" not in emitted_metrics(capsys.readouterr().out)  # a file is not the nightly run
    rejects = {**event, "detail": {"object": {"key": "spend/manual/inbox/x.csv.rejects.txt"}}}
    assert stack.invoke("import_ad_spend", rejects) == {"ignored": "spend/manual/inbox/x.csv.rejects.txt"}


def test_a_refused_s3_write_shows_in_the_summary_with_the_rows_fetched_and_not_written(make_stack, ads, monkeypatch):
    # Before: the platform whose partition PUT failed showed 0 rows and no status, though rows had been fetched
    # (and some stored). S3 (moto) refuses VK's partitions from the fourth on, after botocore's retries.
    import botocore.client
    from botocore.exceptions import ClientError

    direct, google, vk = ads
    stack = make_stack(poll_queues=False, environment=_environment(direct, google, vk))
    original = botocore.client.BaseClient._make_api_call
    allowed = [3]

    def make_api_call(client, operation, params):
        if operation == "PutObject" and str(params.get("Key", "")).startswith("spend/platform=vk_ads/"):
            if allowed[0] <= 0:
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)
            allowed[0] -= 1
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    summaries: list[dict] = []  # what the function logs as «spend import finished» before it fails
    summary_of = RunResult.summary
    monkeypatch.setattr(RunResult, "summary", lambda result: summaries.append(summary_of(result)) or summaries[-1])
    first, last = date(2026, 11, 1), date(2026, 11, 5)
    with pytest.raises(SpendImportFailed) as failed:
        stack.invoke("import_ad_spend", {"date_from": first.isoformat(), "date_to": last.isoformat()})
    assert "vk_ads" in str(failed.value) and "storing failed" in str(failed.value)
    [summary] = summaries
    shown = summary["platforms"]["vk_ads"]
    stored = {key: body for key, body in _objects(stack).items() if "platform=vk_ads/" in key}
    stored_rows = sum(len(gzip.decompress(body).decode().splitlines()) for body in stored.values())
    fetched = len(list(daily_stats(str(vk.account_id), vk.campaigns(), first, last, names=vk.campaign_names)))
    assert len(stored) == 3 and stored_rows > 0
    assert shown["status"] == "failed" and shown["rows"] == stored_rows and shown["rows_fetched"] == fetched
    assert shown["rows_not_written"] == fetched - stored_rows > 0
    assert "InternalError" in shown["not_written"][0] and f"{fetched - stored_rows} of {fetched} rows" in \
        shown["not_written"][0]  # fmt: skip
    assert shown["pending"] and summary["ok"] is False
    assert summary["platforms"]["yandex_direct"]["status"] == "ok" == summary["platforms"]["google_ads"]["status"]
    # The state still names the chunk: the rerun (S3 back) stores it whole.
    s3 = boto3.session.Session().client("s3")
    bucket = stack.resources.physical["DataBucket"]
    state = json.loads(s3.get_object(Bucket=bucket, Key="spend/_state/vk_ads.json")["Body"].read())
    assert [(p["date_from"], p["date_to"]) for p in state["pending"]] == [(first.isoformat(), last.isoformat())]
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", original)
    assert stack.invoke("import_ad_spend", {"date_from": first.isoformat(), "date_to": last.isoformat()})["ok"]
    again = [body for key, body in _objects(stack).items() if "platform=vk_ads/" in key]
    assert sum(len(gzip.decompress(body).decode().splitlines()) for body in again) == fetched
    assert _totals(_objects(stack))["vk_ads"] == vk.expected_cost(first, last)
