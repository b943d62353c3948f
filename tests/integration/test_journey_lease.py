"""The CRM-events writer takes the form writer's leases (issue 14): while a repeat request holds a person or their
lead, an event's store commit and field redraw wait (the message comes back shortly), so the two never interleave."""

from __future__ import annotations

import threading
import time

import boto3
from journey_events_helpers import deliver_event

from local.stack import sqs_record
from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import Locks
from throughline.config import get_settings

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


def queued_event(stack, event: str, record_id: int) -> dict:
    deliver_event(stack, event, record_id)
    source = stack.resources.queue_sources[0]
    [message] = boto3.client("sqs").receive_message(QueueUrl=source.queue_url, VisibilityTimeout=0,
                                                    MessageSystemAttributeNames=["All"])["Messages"]  # fmt: skip
    return sqs_record(message, source)


def test_an_event_waits_while_the_form_writer_holds_the_lead(stack) -> None:
    stack.sandbox.outbound_url = None  # this test delivers the event itself
    lead = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок", "SOURCE_ID": "CALL",
                                                          "PHONE": [{"VALUE": "8 (916) 123-45-67"}]}})  # fmt: skip
    record = queued_event(stack, "ONCRMLEADADD", lead)
    settings = get_settings()
    locks = Locks.for_settings(settings)
    assert locks is not None
    # What the form writer holds while it writes a repeat request to this lead (writer.leads: contact, then lead).
    lease = locks.acquire(["contact:+79161234567", f"lead:{lead}"])
    assert lease is not None
    answer = stack.invoke("bitrix_writer", {"Records": [record]})
    assert answer == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}  # back to the queue, busy
    store = JourneyStore(settings.journey_table or "")
    assert store.journey(f"LEAD#{lead}") == []  # nothing committed, nothing drawn
    assert not next(row for row in stack.sandbox.entities("lead") if int(row["ID"]) == lead).get(JOURNEY)
    locks.release(lease)
    assert stack.invoke("bitrix_writer", {"Records": [record]}) == {"batchItemFailures": []}
    field = next(row for row in stack.sandbox.entities("lead") if int(row["ID"]) == lead)[JOURNEY]
    assert field.startswith("Первичный контакт: ")
    # The event writer gave its leases back: the form writer can take them at once.
    again = locks.acquire([f"lead:{lead}", "contact:+79161234567"])
    assert again is not None
    locks.release(again)


def test_a_lease_released_within_seconds_is_waited_for_not_retried(stack) -> None:
    stack.sandbox.outbound_url = None
    lead = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок", "SOURCE_ID": "CALL"}})
    record = queued_event(stack, "ONCRMLEADADD", lead)
    locks = Locks.for_settings(get_settings())
    assert locks is not None
    lease = locks.acquire([f"lead:{lead}"])
    threading.Timer(1.0, locks.release, args=(lease,)).start()  # the form writer finishes its round
    started = time.monotonic()
    assert stack.invoke("bitrix_writer", {"Records": [record]}) == {"batchItemFailures": []}
    assert time.monotonic() - started >= 0.9  # it waited for the lease
    assert next(row for row in stack.sandbox.entities("lead") if int(row["ID"]) == lead)[JOURNEY]
