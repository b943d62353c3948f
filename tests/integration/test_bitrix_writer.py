"""bitrix_writer against the Bitrix24 sandbox and moto: leads, repeat requests, idempotency, failures."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
import requests

from local.stack import sqs_record
from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24.client import new_session
from throughline.config import get_settings
from throughline.writer.queued import lead_writer

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


def post(stack, body: dict, form_id: str = "contact") -> str:
    response = requests.post(f"{stack.url}/v1/forms/{form_id}/submissions", json=body)
    assert response.status_code == 202, response.text
    return response.json()["submission_id"]


def receive(stack, visibility: int = 30) -> list[dict]:
    source = stack.resources.queue_sources[0]
    messages = boto3.client("sqs").receive_message(
        QueueUrl=source.queue_url,
        MaxNumberOfMessages=10,
        VisibilityTimeout=visibility,
        MessageSystemAttributeNames=["All"],
    )
    return messages.get("Messages", [])


def invoke(stack, messages: list[dict]) -> set[str]:
    """Run the writer on these messages as the SQS event source does; returns the ids it reported failed."""
    source = stack.resources.queue_sources[0]
    result = stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in messages]})
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    sqs = boto3.client("sqs")
    for message in messages:
        if message["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return failed


# Capture keeps a first visit up to two years old: the test's visit is a month before the day it runs.
FIRST_SEEN = (datetime.now(ZoneInfo("Europe/Moscow")) - timedelta(days=30)).replace(
    hour=12, minute=0, second=0, microsecond=0
)


def drain(stack) -> None:
    while messages := receive(stack):
        assert invoke(stack, messages) == set()


def leads(stack) -> list[dict]:
    return stack.sandbox.entities("lead")


def test_new_lead_carries_contacts_tags_source_and_journey(stack):
    submission_id = post(
        stack,
        {
            "name": "Иван Петров",
            "phone": "8 (916) 123-45-67",
            "email": "Ivan@Example.ru",
            "comment": "Перезвоните после 18:00",
            "company": "ООО Ромашка",
            "landing_url": "https://shop.example.ru/l?utm_source=yandex&utm_medium=cpc&utm_campaign=zima&utm_term=crm",
            "first_referrer": "https://www.google.com/",
            "first_seen_at": FIRST_SEEN.isoformat(),
        },
    )
    drain(stack)
    [lead] = leads(stack)
    assert lead["TITLE"] == "Заявка с формы «contact»"
    assert lead["NAME"] == "Иван Петров"
    assert [p["VALUE"] for p in lead["PHONE"]] == ["+79161234567"]
    assert [e["VALUE"] for e in lead["EMAIL"]] == ["ivan@example.ru"]
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"], lead["UTM_TERM"]) == (
        "yandex",
        "cpc",
        "zima",
        "crm",
    )
    assert lead["SOURCE_ID"] == "ADVERTISING"
    assert lead["SOURCE_DESCRIPTION"].startswith("Контекстная реклама: Яндекс, кампания «zima»")
    assert lead["COMMENTS"] == "Перезвоните после 18:00\n\ncompany: ООО Ромашка"
    assert (lead["ORIGINATOR_ID"], lead["ORIGIN_ID"]) == ("throughline", submission_id)
    first, second = lead[JOURNEY].split("\n")
    assert first == f"Первичный контакт: {FIRST_SEEN:%d.%m.%Y} — Google — Органический поиск — Первый визит"
    assert second.endswith(" — Яндекс — CPC — «zima»")

    touches = JourneyStore(get_settings().journey_table).journey(f"LEAD#{lead['ID']}")
    assert [(t.kind, t.channel, t.source) for t in touches] == [
        ("first_visit", "organic_search", "google"),
        ("form", "paid_search", "yandex"),
    ]
    assert touches[1].term == "crm"


def test_source_and_responsible_follow_the_configured_maps(make_stack):
    stack = make_stack(
        poll_queues=False,
        parameters={
            "SourceMap": json.dumps({"paid_search/yandex": "UC_DIRECT", "social": "UC_SMM"}),
            "ResponsibleMap": json.dumps({"paid_search": 5}),
            "DefaultResponsibleId": "3",
        },
    )
    post(stack, {"phone": "+79160000001", "utm_source": "yandex", "utm_medium": "cpc"})
    post(stack, {"phone": "+79160000002", "utm_source": "google", "utm_medium": "cpc"})
    post(stack, {"phone": "+79160000003", "referrer": "https://vk.com/club1"})
    post(stack, {"phone": "+79160000004", "referrer": "https://yandex.ru/"})
    drain(stack)
    by_phone = {lead["PHONE"][0]["VALUE"]: lead for lead in leads(stack)}
    assert [
        (by_phone[f"+7916000000{i}"]["SOURCE_ID"], by_phone[f"+7916000000{i}"]["ASSIGNED_BY_ID"]) for i in (1, 2, 3, 4)
    ] == [
        ("UC_DIRECT", "5"),
        ("ADVERTISING", "5"),
        ("UC_SMM", "3"),
        ("WEB", "3"),
    ]
    # An organic visit without tags still says where it came from, GA-style.
    assert (by_phone["+79160000004"]["UTM_SOURCE"], by_phone["+79160000004"]["UTM_MEDIUM"]) == ("yandex", "organic")


def test_repeat_request_adds_a_journey_line_to_the_open_lead(stack):
    post(stack, {"name": "Анна", "phone": "+7 916 555-44-33", "utm_source": "vk", "utm_medium": "cpc"})
    drain(stack)
    post(
        stack,
        {"phone": "8 916 555 44 33", "email": "anna@example.ru", "comment": "Есть ли доставка?", "utm_source": "google",
         "utm_medium": "cpc", "utm_campaign": "brand"},
        form_id="callback",
    )  # fmt: skip
    drain(stack)
    [lead] = leads(stack)
    lines = lead[JOURNEY].split("\n")
    assert len(lines) == 2
    assert lines[1].endswith(" — Google — CPC — Повторное обращение: «brand»")
    assert lead["UTM_SOURCE"] == "vk"  # the lead keeps its first attribution
    assert [e["VALUE"] for e in lead["EMAIL"]] == ["anna@example.ru"]  # a new contact detail is added
    [comment] = stack.sandbox.timeline_comments()
    assert comment["ENTITY_ID"] == lead["ID"]
    assert "Повторное обращение через форму «callback»" in comment["COMMENT"]
    assert "Есть ли доставка?" in comment["COMMENT"]


def test_a_closed_lead_and_a_known_contact_make_a_returning_customer_lead(stack):
    webhook = stack.sandbox.webhook_url
    contact = requests.post(
        webhook + "crm.contact.add", json={"fields": {"NAME": "Олег", "PHONE": [{"VALUE": "+79167770011"}]}}
    ).json()["result"]
    old = requests.post(
        webhook + "crm.lead.add",
        json={"fields": {"TITLE": "old", "STATUS_ID": "CONVERTED", "PHONE": [{"VALUE": "+79167770011"}]}},
    ).json()["result"]
    post(stack, {"phone": "+7 916 777-00-11", "utm_source": "newsletter", "utm_medium": "email"})
    drain(stack)
    new = [lead for lead in leads(stack) if int(lead["ID"]) != old]
    assert len(new) == 1
    assert new[0]["CONTACT_ID"] == str(contact)
    assert new[0]["IS_RETURN_CUSTOMER"] == "Y"


def test_a_redelivered_message_makes_one_lead(stack):
    post(stack, {"phone": "+79161112233", "utm_source": "yandex", "utm_medium": "cpc"})
    [message] = receive(stack, visibility=0)
    assert invoke(stack, [message]) == set()
    assert invoke(stack, [message]) == set()  # SQS delivers at least once
    assert len(leads(stack)) == 1


def test_same_person_twice_in_one_batch_is_one_lead_and_one_repeat_line(stack):
    post(stack, {"phone": "+79162223344", "utm_source": "yandex", "utm_medium": "cpc"})
    post(stack, {"phone": "+79162223344", "comment": "второй раз", "utm_source": "google", "utm_medium": "cpc"})
    messages = receive(stack)
    assert len(messages) == 2  # one FIFO group, both in one batch
    assert invoke(stack, messages) == set()
    [lead] = leads(stack)
    assert len(lead[JOURNEY].split("\n")) == 2


def test_ten_new_people_cost_two_rest_calls(stack):
    # A warm writer: it has seen what a create takes on this portal (a cold one sizes its first batch for a slow
    # portal, seven creates at most).
    post(stack, {"phone": "+79163334499", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    for index in range(10):
        post(stack, {"phone": f"+7916333440{index}", "utm_source": "yandex", "utm_medium": "cpc"})
    messages = receive(stack)
    assert len(messages) == 10
    stack.sandbox.reset_stats()
    assert invoke(stack, messages) == set()
    assert len(leads(stack)) == 11
    stats = stack.sandbox.stats()
    assert stats["requests"] == 2  # one lookup batch, one write batch (the CRM mode is known: asked every 10 min)
    assert stats["batch_commands"]["crm.lead.add"] == 10


class LosesOneAnswer:
    """A session that delivers the first request calling ``method`` and then loses the portal's answer, like a
    dropped connection after the portal has done the work."""

    def __init__(self, method: str):
        self.method = method
        self.lost = 0
        self._session = new_session()
        self.headers = self._session.headers

    def post(self, url, **kwargs):
        response = self._session.post(url, **kwargs)
        if not self.lost and self.method in json.dumps(kwargs.get("json", {})):
            self.lost += 1
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        return response


def write_with(stack, session, submissions=None) -> tuple[dict, list]:
    from throughline.capture.submissions import Submission

    if submissions is None:
        submissions = [Submission.from_message(json.loads(m["Body"])) for m in receive(stack)]
    writer = lead_writer(get_settings())
    writer.bitrix.session = session
    writer.retry_pause = 0
    return writer.write(submissions), submissions


def test_a_create_whose_answer_was_lost_is_not_made_twice(stack):
    post(stack, {"phone": "+79164445566", "utm_source": "yandex", "utm_medium": "cpc"})
    session = LosesOneAnswer("crm.lead.add")
    outcomes, submissions = write_with(stack, session)
    [outcome] = outcomes.values()
    assert session.lost == 1
    # Not repeated in the invocation: the message goes back to the queue until the portal has surely finished.
    assert (outcome.ok, outcome.in_doubt) == (False, True)
    [outcome] = write_with(stack, session, submissions)[0].values()  # the queue's next delivery
    assert (outcome.ok, outcome.action) == (True, "already_done")  # found by ORIGIN_ID
    assert len(leads(stack)) == 1


def test_a_repeat_line_whose_answer_was_lost_is_not_added_twice(stack):
    post(stack, {"phone": "+79165556677", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    post(stack, {"phone": "+79165556677", "comment": "ещё", "utm_source": "vk", "utm_medium": "cpc"})
    session = LosesOneAnswer("crm.lead.update")
    outcomes, submissions = write_with(stack, session)
    assert session.lost == 1
    assert [outcome.in_doubt for outcome in outcomes.values()] == [True]
    [outcome] = write_with(stack, session, submissions)[0].values()
    assert (outcome.ok, outcome.action) == (True, "already_done")  # its own line is in: the count grew
    [lead] = leads(stack)
    assert len(lead[JOURNEY].split("\n")) == 2
    assert len(stack.sandbox.timeline_comments()) == 1


def test_outage_returns_the_messages_later_and_nothing_is_lost(stack):
    for index in range(3):
        post(stack, {"phone": f"+7916666000{index}", "utm_source": "yandex", "utm_medium": "cpc"})
    messages = receive(stack)
    stack.sandbox.start_outage()
    started = time.monotonic()
    failed = invoke(stack, messages)
    assert failed == {m["MessageId"] for m in messages}
    assert time.monotonic() - started < 60  # gave up within the invocation's time, did not hang
    assert receive(stack) == []  # each failed message waits out its retry delay, invisible
    stack.sandbox.end_outage()
    deadline = time.monotonic() + 30
    while len(leads(stack)) < 3 and time.monotonic() < deadline:
        if messages := receive(stack):
            invoke(stack, messages)
        time.sleep(0.3)
    assert len(leads(stack)) == 3


def test_an_unreadable_message_fails_alone_and_its_group_waits(stack):
    post(stack, {"phone": "+79167778899", "utm_source": "yandex", "utm_medium": "cpc"})
    [good] = receive(stack)
    source = stack.resources.queue_sources[0]
    poison = {**good, "MessageId": "poison-1", "Body": "{not json"}
    other_group = {
        **good,
        "MessageId": "poison-2",
        "Body": json.dumps({"type": "something_else"}),
        "Attributes": {**good["Attributes"], "MessageGroupId": "another"},
    }
    result = stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in (poison, good, other_group)]})
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    # The poison fails; the good message of the same group is held back to keep the group's order.
    assert failed == {"poison-1", good["MessageId"], "poison-2"}


@pytest.mark.parametrize("fault", ["error_rate", "lost_response_rate"])
def test_random_portal_faults_end_in_exactly_one_lead_per_person(stack, fault):
    for index in range(10):
        post(stack, {"phone": f"+7916888000{index}", "utm_source": "google", "utm_medium": "cpc"})
    stack.sandbox.set_faults(**{fault: 0.4})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and stack.queue_depth(
        boto3.client("sqs"), stack.resources.queue_sources[0].queue_url
    ):
        if messages := receive(stack, visibility=2):
            invoke(stack, messages)
        time.sleep(0.2)
    stack.sandbox.set_faults(**{fault: 0.0})
    phones = sorted(lead["PHONE"][0]["VALUE"] for lead in leads(stack))
    assert phones == [f"+7916888000{index}" for index in range(10)]


def test_the_raw_copy_travels_in_the_message_and_the_writer_puts_it_first_or_the_lead_waits(stack, monkeypatch):
    from botocore.exceptions import ClientError

    from throughline.adapters.raw_store import RawStore

    s3, bucket = boto3.client("s3"), stack.resources.physical["DataBucket"]
    submission_id = post(stack, {"name": "Анна", "phone": "+79165550011", "comment": "позвоните"})
    assert s3.list_objects_v2(Bucket=bucket, Prefix="raw/forms/").get("KeyCount") == 0  # capture built no S3 client
    [message] = receive(stack)
    body = json.loads(message["Body"])
    copy = json.loads(body["raw_copy"])
    assert copy["submission_id"] == submission_id and json.loads(copy["body"])["comment"] == "позвоните"

    def refuse(self, key, data, content_type="application/json"):
        raise ClientError({"Error": {"Code": "SlowDown", "Message": "slow down"}}, "PutObject")

    with monkeypatch.context() as patch:
        patch.setattr(RawStore, "put", refuse)
        assert invoke(stack, [message]) == {message["MessageId"]}  # comes back later, copy included
    assert leads(stack) == []  # the lead waits for its copy
    assert invoke(stack, [message]) == set()
    assert len(leads(stack)) == 1
    key = body["submission"]["raw_key"]
    assert key.startswith("raw/forms/date=") and key.endswith(f"/form=contact/{submission_id}.json")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body["raw_copy"].encode()


def test_a_copy_too_large_to_travel_is_put_by_capture(stack):
    s3, bucket = boto3.client("s3"), stack.resources.physical["DataBucket"]
    # 62 000 bytes posted (under the 64 KiB body limit): a backslash doubles in JSON, once more in the copy's text
    # and again in the message's; the message with its copy would be over SQS's 262 144 bytes.
    fields = {"comment": "\\" * 9_000} | {f"field{index}": "\\" * 1_100 for index in range(20)}
    submission_id = post(stack, {"name": "Анна", "phone": "+79165550012", **fields})
    [message] = receive(stack)
    body = json.loads(message["Body"])
    assert "raw_copy" not in body and len(message["Body"].encode()) < 240_000
    [item] = s3.list_objects_v2(Bucket=bucket, Prefix="raw/forms/")["Contents"]
    assert item["Key"] == body["submission"]["raw_key"] and submission_id in item["Key"]
    assert invoke(stack, [message]) == set()
    assert len(leads(stack)) == 1
