"""Records the webhook's user may not see (issue 14): a webhook works with its creator's rights, and Bitrix24 answers
«Access denied» per record. One such record must not fail the events read with it, nor a field write beside it."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import boto3
import pytest
from journey_events_helpers import deliver_event

from local.stack import sqs_record
from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.journey.events import CrmEvent
from throughline.journey.export import export_journeys
from throughline.journey.lines import Touch
from throughline.report.attribution import read_journeys
from throughline.writer.journey_wiring import crm_event_writer

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    from throughline.observability import logger

    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logger, "warning", lambda message, *a, **k: seen.append((message, k.get("extra") or {})))
    return seen


def lead_with_call(stack, title: str, subject: str) -> tuple[int, int]:
    lead = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": title, "SOURCE_ID": "CALL"}})
    activity = stack.sandbox.call("crm.activity.add", {"fields": {
        "OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "DIRECTION": 2, "SUBJECT": subject, "RESPONSIBLE_ID": 1,
        "START_TIME": "2026-11-03T12:00:00+03:00", "END_TIME": "2026-11-03T12:05:00+03:00", "COMPLETED": "Y",
        "COMMUNICATIONS": [{"VALUE": "+79161234567", "ENTITY_TYPE_ID": 1, "ENTITY_ID": lead}]}})  # fmt: skip
    return lead, activity


def field(stack, lead: int) -> str:
    return next(row for row in stack.sandbox.entities("lead") if int(row["ID"]) == lead).get(JOURNEY) or ""


def test_an_event_for_a_record_the_webhook_cannot_see_is_skipped_and_its_batch_mates_are_written(stack, warnings):
    stack.sandbox.outbound_url = None  # this test delivers the events itself
    seen, seen_call = lead_with_call(stack, "Видно", "Консультация")
    hidden, hidden_call = lead_with_call(stack, "Чужой лид", "Чужой звонок")
    stack.sandbox.set_access(hidden={"lead": [hidden]})
    for event, record in (("ONCRMLEADADD", seen), ("ONCRMLEADADD", hidden), ("ONCRMACTIVITYADD", seen_call),
                          ("ONCRMACTIVITYADD", hidden_call)):  # fmt: skip
        deliver_event(stack, event, record)
    source = stack.resources.queue_sources[0]
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(QueueUrl=source.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                   MessageSystemAttributeNames=["All"])["Messages"]  # fmt: skip
    assert len(messages) == 4
    answer = stack.invoke("bitrix_writer", {"Records": [sqs_record(message, source) for message in messages]})
    assert answer == {"batchItemFailures": []}  # nobody retries into the DLQ
    assert "Исходящий звонок — Консультация" in field(stack, seen)
    assert field(stack, hidden) == ""  # never read, never written
    assert ("records skipped: access denied", {"records": 2}) in warnings  # the hidden lead and its call
    store = JourneyStore(get_settings().journey_table or "")
    assert store.journey(f"LEAD#{hidden}") == []
    # Counted where the report reads it: the journey export's latest.json, then the report's data quality.
    assert store.access_denied() == 2
    bucket = get_settings().data_bucket or ""
    export_journeys(store, bucket, date(2026, 11, 30))
    latest = boto3.client("s3").get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read()
    assert json.loads(latest)["access_denied"] == 2
    objects = {"journeys/latest.json": latest}
    journeys = read_journeys(objects)  # type: ignore[arg-type]
    assert journeys is not None and journeys.access_denied == 2


def test_a_field_the_webhook_may_not_write_does_not_stop_the_others(stack):
    stack.sandbox.outbound_url = None
    seen = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Видно"}})
    hidden = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Скрыто"}})
    settings = get_settings()
    client = bitrix_client(settings)
    writer = crm_event_writer(settings, client, JourneyStore(settings.journey_table or ""))
    for lead in (seen, hidden):
        labels = {"label_source": "Телефон", "label_medium": "Исходящий звонок"}
        at = datetime(2026, 11, 3, 9, tzinfo=UTC)
        touch = Touch(f"test:{lead}", at, "call", "crm", "phone", "outgoing_call", detail="Звонок", extra=labels)
        writer.store.new_touches(f"LEAD#{lead}", [touch])
        writer.store.bump_version(f"LEAD#{lead}")
    stack.sandbox.set_access(hidden={"lead": [hidden]})
    assert writer.projector.project([f"LEAD#{seen}", f"LEAD#{hidden}"]) == 1
    assert field(stack, seen).endswith("Телефон — Исходящий звонок — Звонок") and field(stack, hidden) == ""
    assert client.access_denied == 1
    assert [t.touch_id for t in writer.store.journey(f"LEAD#{hidden}")] == [f"test:{hidden}"]  # kept in the store


def test_a_deleted_duplicate_whose_twin_the_webhook_cannot_see_fails_nothing(stack):
    """A merge's DELETE event: the deleted lead's touches go to the live lead sharing its phone, read first to be sure
    it lives. When the webhook's user may not see that lead, «Access denied» must not fail the event for ever (the
    queue would retry it into the DLQ): it is skipped and counted, as any other record the user cannot read."""
    stack.sandbox.outbound_url = None
    phone = [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}]
    twin = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Скрыто", "PHONE": phone}})
    duplicate = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Дубль", "PHONE": phone}})
    settings = get_settings()
    client = bitrix_client(settings)
    writer = crm_event_writer(settings, client, JourneyStore(settings.journey_table or ""))
    writer.handle([CrmEvent("ONCRMLEADADD", "lead", twin, "1"), CrmEvent("ONCRMLEADADD", "lead", duplicate, "1")])
    stack.sandbox.call("crm.lead.delete", {"id": duplicate})
    stack.sandbox.set_access(hidden={"lead": [twin]})
    writer.handle([CrmEvent("ONCRMLEADDELETE", "lead", duplicate, "2")])
    assert client.access_denied == 1
    assert writer.store.metas([f"LEAD#{duplicate}"])[f"LEAD#{duplicate}"]["deleted"] is True
