"""upload_conversions on the local stack: the template's table and settings, the Bitrix24 sandbox's amounts, the
three conversion sandboxes; a platform outage fails the run (the alarm, the DLQ) and the next hourly run sends what
was kept (issue 19)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import boto3
import pytest

from local.ad_sandboxes import GoogleAdsSandbox, start_conversion_sandboxes
from throughline.adapters.journey_store import JourneyStore
from throughline.config import reset_settings_cache
from throughline.conversions.ledger import Ledger
from throughline.journey.lines import Touch

CLIENT_ID = "1700000000999000111"
GCLID = "Cj0KCQiA-function-test"


@pytest.fixture
def sandboxes():
    google = GoogleAdsSandbox().start()
    servers, environment = start_conversion_sandboxes(google)
    environment |= {"GOOGLE_ADS_CLIENT_ID": google.client[0], "GOOGLE_ADS_CLIENT_SECRET": google.client[1],
                    "GOOGLE_ADS_REFRESH_TOKEN": next(iter(google.refresh_tokens)),
                    "GOOGLE_OAUTH_TOKEN_URL": google.token_url, "GOOGLE_ADS_LOGIN_CUSTOMER_ID": ""}  # fmt: skip
    yield servers, environment
    for server in [*servers, google]:
        server.stop()


SECRET_KEYS = ("METRICA_TOKEN", "GOOGLE_ADS_CLIENT_ID", "GOOGLE_ADS_CLIENT_SECRET", "GOOGLE_ADS_REFRESH_TOKEN")


def test_the_hourly_run_sends_a_won_deal_and_keeps_it_through_an_outage(make_stack, sandboxes):
    (metrica, data_manager, tracker), environment = sandboxes
    # The credentials go where an operator puts them, the ads secret (template.yaml's AdsSecret), not the environment.
    secret = {key: environment.pop(key) for key in SECRET_KEYS}
    stack = make_stack(poll_queues=False, environment=environment)
    ads = stack.resources.physical["AdsSecret"]
    boto3.client("secretsmanager").put_secret_value(SecretId=ads, SecretString=json.dumps(secret))
    reset_settings_cache()
    deal = stack.sandbox.call("crm.deal.add", {"fields": {"TITLE": "Кухня", "OPPORTUNITY": 120000,
                                                          "CURRENCY_ID": "RUB"}})  # fmt: skip
    store = JourneyStore(stack.resources.physical["JourneyTable"])
    now = datetime.now(UTC).replace(microsecond=0)  # the function runs on the real clock; dates are relative to it
    store.put_meta(f"DEAL#{deal}", {"kind": "DEAL", "id": int(deal)})
    store.new_touches(f"DEAL#{deal}", [
        Touch("f1:form", now - timedelta(days=2), "form", "paid", "google", "cpc",
              extra={"ym_client_id": CLIENT_ID, "gclid": GCLID, "rb_clickid": "rb-77"}),
        Touch("d1:won", now - timedelta(days=1), "won", "crm", "crm", "stage", extra={"stage_id": "WON"}),
    ])  # fmt: skip
    tracker.faults = [503] * 12  # VK's tracker is down for longer than a run's retries
    with pytest.raises(Exception, match="not delivered"):
        stack.invoke("upload_conversions", {})
    assert [row["ClientId"] for row in metrica.rows()] == [CLIENT_ID]
    [(_, _, transaction)] = data_manager.conversions  # the portal's key, then the deal: <8 hex>:won#DEAL#<id>
    assert re.fullmatch(rf"[0-9a-f]{{8}}:won#DEAL#{deal}", transaction), transaction
    ledger = Ledger(stack.resources.physical["ConversionsTable"])
    assert ledger.get(f"vk_ads#deal_won#won#DEAL#{deal}")["state"] == "failed"
    tracker.faults = []
    summary = stack.invoke("upload_conversions", {})  # the next hour
    assert summary["platforms"]["vk_ads"]["states"] == {"accepted": 1}
    assert summary["platforms"]["yandex_metrica"]["already_done"] == 1
    assert tracker.events == [{"goal": "deal_won", "value": "120000", "rb_clickid": "rb-77"}]
    assert metrica.rows()[0]["Price"] == "120000.00" and len(metrica.rows()) == 1


def test_the_sample_events_run_and_say_which_platforms_are_not_configured(make_stack):
    from pathlib import Path

    stack = make_stack(poll_queues=False)
    events = Path(__file__).resolve().parents[2] / "events"
    for name in ("upload_conversions_range.json", "upload_conversions_schedule.json"):
        summary = stack.invoke("upload_conversions", json.loads((events / name).read_text(encoding="utf-8")))
        assert summary["platforms"]["yandex_metrica"] == {
            "skipped": "missing METRICA_TOKEN, METRICA_COUNTER_ID, METRICA_GOAL"
        }
        assert set(summary["platforms"]) == {"yandex_metrica", "google_ads", "vk_ads"}
