"""A hostile reviewer's attacks on the journey's exactly-once promise: lost events made up by the sweep, stage moves
seen through another entity's event; each CRM change is one touch, whichever path saw it first."""

from __future__ import annotations

from collections import Counter

import boto3

from local.stack import sqs_record
from tests.integration.test_journey_events import (  # noqa: F401
    MANAGER_PHONE,
    body,
    call,
    lines,
    live,
    manager_lead,
    post_event,
    settle,
    store,
)
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.contacts import normalize_phone
from throughline.journey.events import CrmEvent
from throughline.person_keys import person_key
from throughline.writer.crm_events import SWEEP_TS
from throughline.writer.journey_wiring import crm_event_writer


def stage_counts(kind: str, record_id: int) -> Counter:
    touches = store().journey(f"{kind.upper()}#{record_id}")
    return Counter(touch.extra.get("stage_id") for touch in touches if touch.medium == "stage")


def test_a_stage_move_the_sweep_restored_is_not_added_again_by_the_next_event(live):  # noqa: F811
    live.sandbox.set_clock_offset(0)  # the sweep reads by the portal's clock
    lead = manager_lead(live)
    settle(live)
    live.sandbox.set_outbound_drop_rate(1.0, seed=1)  # this move's event is lost
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    settle(live)
    live.sandbox.set_outbound_drop_rate(0.0)
    assert live.invoke("journey_sweep", {})["touches_added"] == 1
    settle(live)
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "PROCESSED"}})
    settle(live)
    assert stage_counts("lead", lead) == {"IN_PROCESS": 1, "PROCESSED": 1}
    text = lines(live, "lead", lead)
    assert len(text) == 3, text
    assert live.invoke("journey_sweep", {})["touches_added"] == 0


def run_queue(stack) -> None:
    source = stack.resources.queue_sources[0]
    sqs = boto3.client("sqs")
    while messages := sqs.receive_message(
        QueueUrl=source.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60, MessageSystemAttributeNames=["All"]
    ).get("Messages", []):
        assert stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in messages]}) == {
            "batchItemFailures": []
        }
        for message in messages:
            sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])


def test_a_deal_whose_event_comes_before_its_leads_still_inherits_the_first_contact(stack):
    stack.sandbox.outbound_url = None  # this test delivers the events itself, in the order a race could
    lead = manager_lead(stack)
    deal = stack.sandbox.convert_lead(lead)
    post_event(stack, body("ONCRMDEALADD", deal, ts=1))  # the deal's group ran first
    run_queue(stack)
    post_event(stack, body("ONCRMLEADADD", lead, ts=1))
    run_queue(stack)
    deal_lines = lines(stack, "deal", deal)
    assert deal_lines[0] == lines(stack, "lead", lead)[0]
    assert deal_lines[0].startswith("Первичный контакт: ") and "Звонок на номер с сайта" in deal_lines[0]
    assert store().metas([f"DEAL#{deal}"])[f"DEAL#{deal}"]["lead_id"] == lead


def test_a_call_with_a_contact_who_has_no_lead_or_deal_is_kept_in_the_store(live):  # noqa: F811
    contact = live.sandbox.call(
        "crm.contact.add", {"fields": {"NAME": "Олег", "PHONE": [{"VALUE": "8 (916) 555-44-33", "VALUE_TYPE": "WORK"}]}}
    )
    call(live, (3, contact), "Звонок контакту", direction=1, start="2026-11-21T10:00:00+03:00")
    settle(live)
    [touch] = store().journey(f"CONTACT#{contact}")
    assert (touch.kind, touch.channel, touch.detail) == ("incoming_call", "offline", "Звонок контакту")
    meta = store().metas([f"CONTACT#{contact}"])[f"CONTACT#{contact}"]
    assert len(meta["person_key"]) == 64  # the export keys the touch by the contact's person


def test_a_stage_of_another_pipeline_is_named_from_that_pipelines_dictionary(live):  # noqa: F811
    for status_id, name in (("NEW", "Заявка на опт"), ("PREPARATION", "Расчёт оптовой цены"), ("UC_TEST", "Тест")):
        live.sandbox.call("crm.status.add", {"fields": {"ENTITY_ID": "DEAL_STAGE_1", "STATUS_ID": status_id,
                                                        "NAME": name, "SORT": 10}})  # fmt: skip
    deal = live.sandbox.call("crm.deal.add", {"fields": {"TITLE": "Опт", "CATEGORY_ID": 1, "STAGE_ID": "C1:NEW"}})
    settle(live)
    live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "C1:PREPARATION"}})
    settle(live)
    live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "C1:UC_TEST"}})
    settle(live)
    assert lines(live, "deal", deal)[-2:] == [
        lines(live, "deal", deal)[-2].split(" — ")[0] + " — CRM — Стадия — «Расчёт оптовой цены»",
        lines(live, "deal", deal)[-1].split(" — ")[0] + " — CRM — Стадия — «Тест»",
    ]


def test_a_record_read_before_its_deletion_does_not_bring_it_back(live):  # noqa: F811
    settings = get_settings()
    lead = manager_lead(live)
    settle(live)
    [row] = live.sandbox.call("crm.lead.list", {"filter": {"ID": lead}, "select": ["*", "UF_*", "PHONE", "EMAIL"]})
    live.sandbox.call("crm.lead.delete", {"id": lead})  # the sweep read the row just before the manager deleted it
    settle(live)
    writer = crm_event_writer(settings, bitrix_client(settings), store())
    writer.handle([CrmEvent("ONCRMLEADUPDATE", "lead", lead, ts=SWEEP_TS)], records={("lead", lead): row})
    assert store().metas([f"LEAD#{lead}"])[f"LEAD#{lead}"]["deleted"] is True
    key = person_key(normalize_phone(MANAGER_PHONE), settings.person_key_secret)
    assert f"LEAD#{lead}" not in store().index_lookup([key])  # the person index does not point at a dead lead
