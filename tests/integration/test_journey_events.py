"""The journey from Bitrix24 events: the receiver, events → touches → the field, the sweep, the person index, export."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from datetime import date, datetime
from zoneinfo import ZoneInfo

import boto3
import pytest
import requests

from local.bitrix24_sandbox.links import telephony_call
from local.bitrix24_sandbox.outbound import event_body
from local.stack import LOCAL_APP_TOKEN, sqs_record
from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings
from throughline.journey.export import export_journeys

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"
MANAGER_PHONE = "8 (916) 123-45-67"


# -- helpers --------------------------------------------------------------------------------------------------------


def body(event: str, record_id: int, *, token: str = LOCAL_APP_TOKEN, member_id: str = "m1", ts: int = 1766047124):
    return event_body(
        event=event, record_id=record_id, domain="sandbox.bitrix24.ru", member_id=member_id,
        application_token=token, timestamp=ts,
    )  # fmt: skip


def post_event(stack, data: bytes) -> requests.Response:
    return requests.post(
        f"{stack.url}/v1/bitrix/events", data=data, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )


def queued(stack) -> list[dict]:
    source = stack.resources.queue_sources[0]
    messages = boto3.client("sqs").receive_message(
        QueueUrl=source.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=0, MessageSystemAttributeNames=["All"]
    )
    return messages.get("Messages", [])


def settle(stack) -> None:
    for _ in range(3):  # our field writes come back as update events: let them run out
        stack.sandbox.wait_for_outbound(10)
        assert stack.wait_until_idle(120)


def store() -> JourneyStore:
    return JourneyStore(get_settings().journey_table or "")


def call(stack, lead_or_deal: tuple[int, int], subject: str, *, direction: int = 2, start: str, type_id: int = 2,
         completed: str = "Y"):  # fmt: skip
    """An activity a manager records (completed: a call made, an e-mail sent, a meeting held)."""
    owner_type, owner_id = lead_or_deal
    return stack.sandbox.call(
        "crm.activity.add",
        {
            "fields": {
                "OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id, "TYPE_ID": type_id, "DIRECTION": direction,
                "SUBJECT": subject, "RESPONSIBLE_ID": 1, "START_TIME": start, "COMPLETED": completed,
                "COMMUNICATIONS": [{"VALUE": "+79161234567", "ENTITY_TYPE_ID": owner_type, "ENTITY_ID": owner_id}],
            }
        },
    )  # fmt: skip


# The portal's clock when a test starts: a fixed instant, so the lines read the same whatever day the suite runs.
PORTAL_START = datetime(2026, 10, 25, 12, 0, tzinfo=ZoneInfo("Europe/Moscow"))


def manager_lead(stack, **fields) -> int:
    defaults = {"TITLE": "Входящий звонок", "SOURCE_ID": "CALL", "SOURCE_DESCRIPTION": "Звонок на номер с сайта",
                "PHONE": [{"VALUE": MANAGER_PHONE, "VALUE_TYPE": "WORK"}]}  # fmt: skip
    return stack.sandbox.call("crm.lead.add", {"fields": {**defaults, **fields}})


def lines(stack, kind: str, record_id: int) -> list[str]:
    record = next(row for row in stack.sandbox.entities(kind) if int(row["ID"]) == record_id)
    return (record.get(JOURNEY) or "").splitlines()


@pytest.fixture
def live(make_stack):
    """The whole stack with its queue consumed, the sandbox sending outbound webhooks to /v1/bitrix/events."""
    stack = make_stack()
    stack.sandbox.set_clock(PORTAL_START)  # records are created before the activities the tests date in November
    return stack


# -- the receiver ---------------------------------------------------------------------------------------------------


def test_receiver_queues_one_message_per_entity_group(stack):
    response = post_event(stack, body("ONCRMDEALUPDATE", 42))
    assert response.status_code == 200
    [message] = queued(stack)
    assert json.loads(message["Body"]) == {
        "type": "bitrix_event", "event": "ONCRMDEALUPDATE", "entity": "deal", "id": 42, "ts": "1766047124",
        "handler_id": "5",
    }  # fmt: skip
    assert message["Attributes"]["MessageGroupId"] == "DEAL#42"
    # Deduplicated by the API Gateway request id: a second update of deal 42 in the same second is its own message.
    assert post_event(stack, body("ONCRMDEALUPDATE", 42)).status_code == 200
    assert len({m["Attributes"]["MessageDeduplicationId"] for m in queued(stack)}) == 2


def test_receiver_reads_lower_case_names_data_id_and_base64_bodies(stack):
    comment = f"event=onCrmTimelineCommentAdd&data%5BID%5D=7&ts=1&auth%5Bapplication_token%5D={LOCAL_APP_TOKEN}"
    assert post_event(stack, comment.encode()).status_code == 200
    activity = body("ONCRMACTIVITYADD", 9).decode().replace("ONCRMACTIVITYADD", "onCrmActivityAdd")
    event = {
        "version": "2.0", "rawPath": "/v1/bitrix/events", "requestContext": {"http": {"method": "POST"}},
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": base64.b64encode(activity.encode()).decode(), "isBase64Encoded": True,
    }  # fmt: skip
    assert stack.invoke("bitrix_events", event)["statusCode"] == 200
    groups = sorted(m["Attributes"]["MessageGroupId"] for m in queued(stack))
    assert groups == ["ACTIVITY#9", "COMMENT#7"]


@pytest.mark.parametrize(
    "data",
    [
        body("ONCRMLEADADD", 1, token="wrong-token"),
        body("ONCRMLEADADD", 1).replace(b"auth%5Bapplication_token%5D=" + LOCAL_APP_TOKEN.encode(), b""),
        body("ONCRMLEADADD", 1, token=""),
    ],
    ids=["wrong token", "no token", "empty token"],
)
def test_forged_events_get_401_and_leave_nothing(stack, data):
    stack.sandbox.reset_stats()
    response = post_event(stack, data)
    assert response.status_code == 401
    assert queued(stack) == []
    assert stack.sandbox.stats()["requests"] == 0
    assert list(store().scan()) == []


def test_event_from_another_portal_is_refused_when_member_id_is_configured(make_stack):
    stack = make_stack(poll_queues=False, environment={"BITRIX24_MEMBER_ID": "our-member-id"})
    assert post_event(stack, body("ONCRMLEADADD", 1, member_id="their-member-id")).status_code == 401
    assert queued(stack) == []
    assert post_event(stack, body("ONCRMLEADADD", 1, member_id="our-member-id")).status_code == 200


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", f"event=ONCRMLEADADD&auth%5Bapplication_token%5D={LOCAL_APP_TOKEN}".encode(),
     f"data%5BFIELDS%5D%5BID%5D=1&auth%5Bapplication_token%5D={LOCAL_APP_TOKEN}".encode()],
    ids=["not utf-8", "no id", "no event"],
)  # fmt: skip
def test_malformed_bodies_get_400(stack, data):
    assert post_event(stack, data).status_code == 400
    assert queued(stack) == []


# -- events → touches → the field -----------------------------------------------------------------------------------


def test_lead_typed_by_a_manager_gets_its_journey_from_events(live):
    lead = manager_lead(live, SOURCE_DESCRIPTION="Звонок на номер с сайта")
    call(live, (1, lead), "Консультация", start="2026-11-17T12:00:00+03:00")
    # Telephony's own record says the call was missed (a failure code, no duration), not the subject's words.
    telephony_call(live.sandbox, (1, lead), incoming=True, start="2026-11-18T09:00:00+03:00", duration=0,
                   failed_code="304", subject="Пропущенный звонок")  # fmt: skip
    call(live, (1, lead), "Коммерческое предложение", type_id=4, start="2026-11-19T10:00:00+03:00")
    call(live, (1, lead), "Встреча в офисе", type_id=1, start="2026-11-20T15:00:00+03:00")
    settle(live)
    text = lines(live, "lead", lead)
    created = text[0]
    assert created.startswith("Первичный контакт: ") and created.endswith(
        " — Звонок — Offline-каналы — Звонок на номер с сайта"
    )
    assert text[1:] == [
        "17.11.2026 — Телефон — Исходящий звонок — Консультация",
        "18.11.2026 — Телефон — Пропущенный звонок — Пропущенный звонок",
        "19.11.2026 — Email — Исходящее письмо — Коммерческое предложение",
        "20.11.2026 — Встреча — Встреча — Встреча в офисе",
    ]
    touches = {touch.touch_id: touch for touch in store().journey(f"LEAD#{lead}")}
    first = touches[f"lead:{lead}:created"]
    assert (first.kind, first.channel, first.source, first.medium) == (
        "crm_lead",
        "offline",
        "call",
        "call",
    )  # the report's SOURCE_ID mapping
    missed = next(touch for touch in touches.values() if touch.kind == "missed_call")
    assert (missed.channel, missed.source, missed.detail) == ("offline", "phone", "Пропущенный звонок")
    meta = store().metas([f"LEAD#{lead}"])[f"LEAD#{lead}"]
    assert len(meta["person_key"]) == 64 and meta["stage"] == "NEW"


def test_lead_with_utm_tags_is_classified_from_them(live):
    lead = manager_lead(live, UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="crm_brand", SOURCE_ID="ADVERTISING")
    settle(live)
    [line] = lines(live, "lead", lead)
    assert line.startswith("Первичный контакт: ") and line.endswith(" — Яндекс — CPC — «crm_brand»")
    [touch] = store().journey(f"LEAD#{lead}")
    assert (touch.channel, touch.source, touch.medium, touch.campaign) == ("paid_search", "yandex", "cpc", "crm_brand")


def test_twenty_activities_of_one_deal_give_twenty_lines_in_order_and_duplicates_add_nothing(live):
    lead = manager_lead(live)
    settle(live)
    deal = live.sandbox.convert_lead(lead)
    settle(live)
    before = lines(live, "deal", deal)
    for index in range(20):
        call(live, (2, deal), f"Звонок {index + 1:02d}", start=f"2026-11-{index + 1:02d}T10:00:00+03:00")
    settle(live)
    after = lines(live, "deal", deal)
    added = [line for line in after if line not in before]
    assert [line.rsplit(" — ", 1)[1] for line in added] == [f"Звонок {index + 1:02d}" for index in range(20)]
    # Bitrix24 may deliver an event twice (and our own field writes come back): nothing changes.
    live.sandbox.reset_stats()
    for activity in range(1, 21):
        assert post_event(live, body("ONCRMACTIVITYADD", activity, ts=1766047999)).status_code == 200
        assert post_event(live, body("ONCRMDEALUPDATE", deal, ts=1766047999 + activity)).status_code == 200
    settle(live)
    assert lines(live, "deal", deal) == after
    calls = sum(live.sandbox.stats()["by_method"].values())
    print(f"REST calls for 40 duplicate events: {calls} ({calls / 40:.2f} per event)")
    assert calls < 40  # batched: below one REST call per event


def test_stage_moves_won_and_lost_with_reason(live):
    lead = manager_lead(live)
    settle(live)
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "JUNK", "STATUS_DESCRIPTION": "Дорого"}})
    settle(live)
    text = lines(live, "lead", lead)
    assert text[-2].endswith(" — CRM — Стадия — «В работе»")
    assert text[-1].endswith(" — CRM — Лид закрыт — «Некачественный лид»: Дорого")
    lost = [touch for touch in store().journey(f"LEAD#{lead}") if touch.kind == "lost"]
    assert [(touch.extra["stage_id"], touch.extra["reason"]) for touch in lost] == [("JUNK", "Дорого")]
    other = manager_lead(live, PHONE=[{"VALUE": "+79990001122"}])
    settle(live)
    deal = live.sandbox.convert_lead(other)
    live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "PREPARATION"}})
    live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON"}})
    settle(live)
    text = lines(live, "deal", deal)
    assert text[0].startswith("Первичный контакт: ")  # inherited from the lead
    assert text[-2].endswith(" — CRM — Стадия — «Подготовка документов»")  # two moves in one second: both kept
    assert text[-1].endswith(" — CRM — Сделка выиграна — «Сделка успешна»")
    assert store().metas([f"DEAL#{deal}"])[f"DEAL#{deal}"]["lead_id"] == other


def test_line_counts_are_stable_while_our_writes_come_back_as_events(live):
    lead = manager_lead(live)
    for index in range(5):
        call(live, (1, lead), f"Звонок {index}", start=f"2026-11-0{index + 1}T10:00:00+03:00")
    settle(live)
    count = len(lines(live, "lead", lead))
    version = store().versions([f"LEAD#{lead}"])[f"LEAD#{lead}"]
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"COMMENTS": "правка менеджера"}})
    settle(live)
    assert len(lines(live, "lead", lead)) == count == 6
    assert store().versions([f"LEAD#{lead}"])[f"LEAD#{lead}"] == version


def test_delete_marks_the_entity_and_keeps_its_touches(live):
    lead = manager_lead(live)
    settle(live)
    live.sandbox.call("crm.lead.delete", {"id": lead})
    settle(live)
    assert store().metas([f"LEAD#{lead}"])[f"LEAD#{lead}"]["deleted"] is True
    assert len(store().journey(f"LEAD#{lead}")) == 1
    marker = boto3.client("s3").get_object(Bucket=get_settings().data_bucket, Key=f"crm/deleted/lead/{lead}.json")
    assert json.loads(marker["Body"].read())["entity_id"] == lead


def test_sweep_restores_every_touch_lost_with_a_fifth_of_the_webhooks(live):
    live.sandbox.set_clock_offset(0)  # the sweep reads what changed since its last run by the portal's clock
    live.sandbox.set_outbound_drop_rate(0.2, seed=7)
    leads = [manager_lead(live, PHONE=[{"VALUE": f"+7999000{index:04d}"}]) for index in range(6)]
    for lead in leads:
        for index in range(3):
            call(live, (1, lead), f"Звонок {index}", start=f"2026-11-0{index + 1}T10:00:00+03:00")
        live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    deals = [live.sandbox.convert_lead(lead) for lead in leads[:3]]
    for deal in deals:
        live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "EXECUTING"}})
        live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON"}})
    settle(live)
    assert live.sandbox.stats()["outbound"]["failed"] > 0  # some were lost
    live.sandbox.set_outbound_drop_rate(0.0)
    result = live.invoke("journey_sweep", {})
    settle(live)
    for lead in leads:
        touches = store().journey(f"LEAD#{lead}")
        assert sum(touch.kind == "outgoing_call" for touch in touches) == 3
        assert any(touch.kind == "crm_lead" for touch in touches)
        assert any(touch.extra.get("stage_id") == "IN_PROCESS" for touch in touches)
        assert len(lines(live, "lead", lead)) == len(touches)
    for deal in deals:
        stages = [touch.extra.get("stage_id") for touch in store().journey(f"DEAL#{deal}")]
        assert "EXECUTING" in stages and "WON" in stages
    assert result["touches_added"] > 0
    assert result["scanned"]["lead"] == 6 and result["scanned"]["deal"] == 3 and result["scanned"]["activity"] == 18
    # A second sweep after a complete stream adds nothing.
    assert live.invoke("journey_sweep", {})["touches_added"] == 0


def test_form_from_e164_finds_the_lead_typed_by_hand(live):
    lead = manager_lead(live)
    settle(live)
    response = requests.post(
        f"{live.url}/v1/forms/contact/submissions",
        json={"name": "Иван", "phone": "+79161234567", "utm_source": "google", "utm_medium": "cpc"},
    )
    assert response.status_code == 202
    settle(live)
    assert [int(row["ID"]) for row in live.sandbox.entities("lead")] == [lead]
    assert lines(live, "lead", lead)[-1].endswith(" — Google — CPC — Повторное обращение: форма «contact»")


def test_repeat_request_and_activity_handled_at_once_both_end_in_the_field(stack):
    stack.sandbox.outbound_url = None  # this test delivers the events itself
    lead = manager_lead(stack)
    source = stack.resources.queue_sources[0]
    sqs = boto3.client("sqs")

    def run_queue() -> None:
        messages = sqs.receive_message(QueueUrl=source.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=60,
                                       MessageSystemAttributeNames=["All"]).get("Messages", [])  # fmt: skip
        if messages:
            stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in messages]})
            for message in messages:
                sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])

    post_event(stack, body("ONCRMLEADADD", lead))
    run_queue()  # the lead is known (indexed, first line)
    requests.post(f"{stack.url}/v1/forms/contact/submissions", json={"phone": "+79161234567", "utm_source": "vk"})
    [form] = sqs.receive_message(QueueUrl=source.queue_url, VisibilityTimeout=60,
                                 MessageSystemAttributeNames=["All"])["Messages"]  # fmt: skip
    call(stack, (1, lead), "Консультация", start="2026-11-29T10:00:00+03:00")
    event = {"type": "bitrix_event", "event": "ONCRMACTIVITYADD", "entity": "activity", "id": 1, "ts": "5"}
    activity = {**form, "MessageId": "activity-message", "Body": json.dumps(event)}
    barrier = threading.Barrier(2)

    def invoke(message):
        barrier.wait()
        stack.invoke("bitrix_writer", {"Records": [sqs_record(message, source)]})

    threads = [threading.Thread(target=invoke, args=(message,)) for message in (form, activity)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    text = "\n".join(lines(stack, "lead", lead))
    assert "Повторное обращение" in text and "Исходящий звонок — Консультация" in text


def test_export_writes_touches_entities_and_latest(live):
    lead = manager_lead(live)
    call(live, (1, lead), "Консультация", start="2026-11-17T12:00:00+03:00")
    settle(live)
    deal = live.sandbox.convert_lead(lead)
    settle(live)
    bucket = get_settings().data_bucket
    latest = export_journeys(store(), bucket, date(2026, 11, 30), segments=2)
    s3 = boto3.client("s3")
    assert (
        json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())["snapshot"] == "2026-11-30"
    )
    rows = [
        json.loads(line)
        for part in latest["parts"]
        for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=part)["Body"].read()).splitlines()
    ]
    call_row = next(row for row in rows if row["kind"] == "outgoing_call")
    assert call_row["entity_type"] == "lead" and call_row["entity_id"] == lead
    assert call_row["at"] == "2026-11-17T09:00:00Z" and len(call_row["person_key"]) == 64
    assert set(call_row) == {"person_key", "entity_type", "entity_id", "touch_id", "at", "kind", "channel", "source",
                             "medium", "campaign", "content", "term", "detail"}  # fmt: skip
    entities = gzip.decompress(
        s3.get_object(Bucket=bucket, Key="journeys/snapshot=2026-11-30/entities.json.gz")["Body"].read()
    ).splitlines()
    deal_row = next(json.loads(line) for line in entities if json.loads(line)["entity_type"] == "deal")
    assert deal_row["entity_id"] == deal and deal_row["lead_id"] == lead
    assert deal_row["person_key"] == call_row["person_key"]


def test_contact_activity_goes_to_the_open_deal_and_a_contacts_deal_inherits_the_lead(live):
    lead = manager_lead(live)
    settle(live)
    deal = live.sandbox.convert_lead(lead)
    settle(live)
    contact = int(next(row for row in live.sandbox.entities("deal") if int(row["ID"]) == deal)["CONTACT_ID"])
    call(live, (3, contact), "Звонок контакту", start="2026-11-21T10:00:00+03:00")
    settle(live)
    assert lines(live, "deal", deal)[-1] == "21.11.2026 — Телефон — Исходящий звонок — Звонок контакту"
    second = live.sandbox.call("crm.deal.add", {"fields": {"TITLE": "Повторная продажа", "CONTACT_ID": contact}})
    settle(live)
    assert store().metas([f"DEAL#{second}"])[f"DEAL#{second}"]["lead_id"] == lead
    text = lines(live, "deal", second)
    assert text[0].startswith("Первичный контакт: ") and text[0].endswith("Звонок на номер с сайта")
    assert text[-1].endswith(" — CRM — Сделка — «Повторная продажа»")


def test_a_manager_changing_a_phone_moves_the_person_index(live):
    lead = manager_lead(live)
    settle(live)
    settings = get_settings()
    from throughline.person_keys import person_key

    old, new = (
        person_key("+79161234567", settings.person_key_secret),
        person_key("+79035550011", settings.person_key_secret),
    )
    assert store().index_lookup([old]) == {f"LEAD#{lead}"}
    phone_id = next(row for row in live.sandbox.entities("lead") if int(row["ID"]) == lead)["PHONE"][0]["ID"]
    live.sandbox.call(
        "crm.lead.update", {"id": lead, "fields": {"PHONE": [{"ID": phone_id, "VALUE": "+7 903 555-00-11"}]}}
    )
    settle(live)
    assert store().index_lookup([old]) == set()
    assert store().index_lookup([new]) == {f"LEAD#{lead}"}
    live.sandbox.call("crm.lead.delete", {"id": lead})
    settle(live)
    assert store().index_lookup([new]) == set()


def test_index_seed_scans_every_lead_and_contact(stack):
    from throughline.bitrix24.portal import bitrix_client
    from throughline.journey.sweep import seed_index
    from throughline.person_keys import person_key
    from throughline.writer.journey_wiring import crm_event_writer

    stack.sandbox.outbound_url = None  # leads that existed before the webhook was registered
    for index in range(60):
        manager_lead(stack, PHONE=[{"VALUE": f"8 (916) 000-{index // 100:02d}-{index % 100:02d}"}])
    settings = get_settings()
    messages: list[str] = []
    counts = seed_index(crm_event_writer(settings, bitrix_client(settings), store()), progress=messages.append)
    assert counts == {"lead": 60, "contact": 0}
    assert messages[-1] == "indexed 60 leads, 0 contacts"
    assert store().index_lookup([person_key("+79160000059", settings.person_key_secret)]) == {"LEAD#60"}


def test_a_rescheduled_meeting_is_still_one_line(live):
    lead = manager_lead(live)
    meeting = call(live, (1, lead), "Встреча в офисе", type_id=1, start="2026-11-20T15:00:00+03:00")
    settle(live)
    before = lines(live, "lead", lead)
    live.sandbox.call("crm.activity.update", {"id": meeting, "fields": {"START_TIME": "2026-11-22T11:00:00+03:00"}})
    settle(live)
    assert lines(live, "lead", lead) == before
    assert len(store().journey(f"LEAD#{lead}")) == 2


def test_the_field_is_rendered_from_the_store_not_from_what_it_said(live):
    lead = manager_lead(live)
    call(live, (1, lead), "Консультация", start="2026-11-17T12:00:00+03:00")
    settle(live)
    rendered = lines(live, "lead", lead)
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {JOURNEY: "кто-то стёр путь"}})
    settle(live)
    assert lines(live, "lead", lead) == rendered


def test_sandbox_activities_follow_the_docs(sandbox):
    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    fields = {"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
              "COMMUNICATIONS": [{"VALUE": "+79161234567"}], "DIRECTION": 1}  # fmt: skip
    for missing in ("SUBJECT", "RESPONSIBLE_ID", "TYPE_ID", "COMMUNICATIONS"):
        with pytest.raises(Exception, match=missing):
            sandbox.call("crm.activity.add", {"fields": {k: v for k, v in fields.items() if k != missing}})
    with pytest.raises(Exception, match="Could not build binding"):
        sandbox.call("crm.activity.add", {"fields": {**fields, "OWNER_ID": 999}})
    activity = sandbox.call("crm.activity.add", {"fields": fields})
    record = sandbox.call("crm.activity.get", {"id": activity})
    assert (record["ID"], record["OWNER_TYPE_ID"], record["DIRECTION"], record["COMPLETED"]) == (
        str(activity),
        "1",
        "1",
        "N",
    )
    with pytest.raises(Exception, match=r"(?i)not found"):
        sandbox.call("crm.activity.userfield.list", {})
    sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    history = sandbox.call("crm.stagehistory.list", {"entityTypeId": 1, "filter": {"OWNER_ID": lead}})["items"]
    assert [(row["TYPE_ID"], row["STATUS_ID"]) for row in history] == [(1, "NEW"), (2, "IN_PROCESS")]
