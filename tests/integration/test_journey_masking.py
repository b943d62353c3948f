"""A touch's detail reaches the journey store and its export with phones and e-mails masked: the store/export
boundary masks whatever the touch builders copied from the portal (activity subjects, titles, source descriptions)."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime

import boto3

from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings
from throughline.journey.export import export_journeys
from throughline.journey.lines import Touch

SUBJECT = "Перезвонить 8 (916) 123-45-67, копия на ivan.petrov@example.ru"
MASKED = "Перезвонить +7*******67, копия на i***@example.ru"


def test_details_are_masked_in_the_store_and_in_the_export(stack):
    settings = get_settings()
    store = JourneyStore(settings.journey_table)
    at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    touch = Touch("a1", at, "outgoing_call", "crm", "crm", "crm", detail=SUBJECT)
    store.put("LEAD#1", [touch], state="applied", lines={"a1": f"20.11.2026 — CRM — Звонок — {SUBJECT}"})
    [item] = [  # the touch itself, not the change log's mark beside it
        item
        for item in store.client.scan(TableName=store.table)["Items"]
        if item["entity"]["S"] == "LEAD#1" and not item["touch"]["S"].startswith("#")
    ]
    assert item["detail"]["S"] == MASKED
    assert item["line"]["S"] == f"20.11.2026 — CRM — Звонок — {MASKED}"
    assert store.journey("LEAD#1")[0].detail == MASKED
    # A touch stored before masking existed is masked on its way out.
    store.client.put_item(
        TableName=store.table,
        Item={
            "entity": {"S": "LEAD#2"},
            "touch": {"S": "2026-11-21T10:00:00.000000Z#b1"},
            "touch_id": {"S": "b1"},
            "at": {"S": "2026-11-21T10:00:00+00:00"},
            "kind": {"S": "activity"},
            "channel": {"S": "crm"},
            "source": {"S": "crm"},
            "medium": {"S": "crm"},
            "detail": {"S": "Клиент +7 903 555-01-01"},
        },
    )
    latest = export_journeys(store, settings.data_bucket, date(2026, 12, 1), segments=1)
    s3 = boto3.client("s3")
    details = []
    for part in latest["parts"]:
        body = s3.get_object(Bucket=settings.data_bucket, Key=part)["Body"].read()
        details += [json.loads(line)["detail"] for line in gzip.decompress(body).decode().splitlines()]
    details.sort()
    assert details == ["Клиент +7*******01", MASKED]
