"""Shared pieces of the offline-conversion tests: moto tables, the three sandboxes, a journey with won deals."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto import mock_aws

from local.ad_sandboxes.data_manager import DataManagerSandbox
from local.ad_sandboxes.google_ads import GoogleAdsSandbox
from local.ad_sandboxes.metrica import MetricaSandbox
from local.ad_sandboxes.vk_tracker import VkTrackerSandbox
from throughline.adapters import aws
from throughline.adapters.journey_store import JourneyStore
from throughline.config import load_settings
from throughline.conversions.ledger import Ledger
from throughline.journey.lines import Touch

REGION = "eu-central-1"
JOURNEY = "journey"
LEDGER = "conversions"
BUCKET = "data"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
ACTION = "customers/1234567890/conversionActions/555"


class FakeCrm:
    """crm.deal.list / crm.contact.list by ``@ID``, as the Bitrix24 client's ``list_all`` yields them."""

    def __init__(self, deals: dict[int, dict[str, Any]], contacts: dict[int, dict[str, Any]] | None = None):
        self.deals = deals
        self.contacts = contacts or {}
        self.calls: list[tuple[str, dict]] = []

    def list_all(self, method: str, params: dict | None = None, *, id_key: str = "ID") -> Iterator[dict]:
        self.calls.append((method, params or {}))
        table = self.deals if method == "crm.deal.list" else self.contacts
        for id_ in (params or {}).get("filter", {}).get("@ID", []):
            if id_ in table:
                yield {"ID": str(id_), **table[id_]}


def form(touch_id: str, at: datetime, **extra: str) -> Touch:
    return Touch(touch_id, at, "form", "paid", "yandex", "cpc", campaign="c1", extra={"form_id": "f", **extra})


def stage(touch_id: str, at: datetime, kind: str, stage_id: str) -> Touch:
    return Touch(touch_id, at, kind, "crm", "crm", "stage", extra={"stage_id": stage_id})


@dataclass
class World:
    dynamodb: Any
    journey: JourneyStore
    ledger: Ledger
    google: GoogleAdsSandbox
    data_manager: DataManagerSandbox
    metrica: MetricaSandbox
    vk: VkTrackerSandbox

    def settings(self, **overrides: str):
        environment = {
            "JOURNEY_TABLE": JOURNEY, "CONVERSIONS_TABLE": LEDGER, "DATA_BUCKET": BUCKET,
            "METRICA_TOKEN": self.metrica.token, "METRICA_COUNTER_ID": self.metrica.counter_id,
            "METRICA_GOAL": "deal_won", "METRICA_API_URL": self.metrica.api_url,
            "GOOGLE_ADS_CLIENT_ID": self.google.client[0], "GOOGLE_ADS_CLIENT_SECRET": self.google.client[1],
            "GOOGLE_ADS_REFRESH_TOKEN": next(iter(self.google.refresh_tokens)),
            "GOOGLE_OAUTH_TOKEN_URL": self.google.token_url,
            "GOOGLE_DATA_MANAGER_API_URL": self.data_manager.api_url, "GOOGLE_ADS_CONVERSION_ACTION": ACTION,
            "VK_ADS_PIXEL_ID": self.vk.pixel_id, "VK_ADS_GOAL": "deal_won", "VK_ADS_TRACKER_URL": self.vk.tracker_url,
        }  # fmt: skip
        environment.update(overrides)
        return load_settings({key: value for key, value in environment.items() if value is not None})


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setattr("throughline.conversions.platforms.backoff", lambda attempt: 0.01)  # retries without waiting
    aws.reset_clients()
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=JOURNEY,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("entity", "touch")],
            KeySchema=[{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "touch", "KeyType": "RANGE"}],
        )
        dynamodb.create_table(
            TableName=LEDGER,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        )
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        google = GoogleAdsSandbox().start()
        data_manager = DataManagerSandbox(google).start()
        metrica = MetricaSandbox().start()
        vk = VkTrackerSandbox().start()
        for sandbox in (data_manager, metrica):
            sandbox.clock = lambda: NOW
        try:
            yield World(dynamodb, JourneyStore(JOURNEY, dynamodb, clock=lambda: NOW),
                        Ledger(LEDGER, dynamodb, clock=lambda: NOW), google, data_manager, metrica, vk)  # fmt: skip
        finally:
            for sandbox in (vk, metrica, data_manager, google):
                sandbox.stop()
            aws.reset_clients()
