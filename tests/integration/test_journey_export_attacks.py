"""A hostile reviewer's attacks on the journey export: whose touches they are, when the CRM told us in an odd order."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime

import boto3

from tests.integration.test_journey_events import store
from throughline.config import get_settings
from throughline.contacts import normalize_phone
from throughline.journey.export import export_journeys
from throughline.journey.lines import Touch
from throughline.person_keys import person_key


def read(bucket: str, key: str) -> list[dict]:
    body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def test_a_deal_of_a_contact_seen_after_it_is_keyed_by_that_contact(stack):
    journeys, settings = store(), get_settings()
    key = person_key(normalize_phone("8 (916) 123-45-67"), settings.person_key_secret)
    # The deal (no lead) was handled before its contact's event: its #meta names the contact but no person key.
    journeys.put_meta("DEAL#5", {"kind": "deal", "id": 5, "contact_id": 9, "lead_id": None, "person_key": None})
    journeys.put_meta("CONTACT#9", {"kind": "contact", "id": 9, "person_key": key})
    won = Touch(touch_id="deal:5:history:3", at=datetime(2026, 11, 20, tzinfo=UTC), kind="won", channel="crm",
                source="crm", medium="stage", detail="«Сделка успешна» 🎉")  # fmt: skip
    journeys.new_touches("DEAL#5", [won])
    latest = export_journeys(journeys, settings.data_bucket, date(2026, 11, 30), segments=2)
    [line] = [row for part in latest["parts"] for row in read(settings.data_bucket, part)]
    assert line["person_key"] == key and line["detail"] == "«Сделка успешна» 🎉"
    entities = read(settings.data_bucket, "journeys/snapshot=2026-11-30/entities.json.gz")
    assert next(row for row in entities if row["entity_type"] == "deal")["person_key"] == key
