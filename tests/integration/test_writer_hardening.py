"""The writer under hostile conditions (issue 5): poison messages, equal repeat lines, one person in two FIFO groups,
writes that time out, refused updates, simple CRM mode. Each test failed before its fix."""

from __future__ import annotations

import json
import threading
import time

import boto3
import pytest
import requests

from local.stack import sqs_record
from tests.integration.test_bitrix_writer import invoke, post, receive
from throughline.bitrix24.client import new_session
from throughline.capture.submissions import Submission
from throughline.config import get_settings
from throughline.writer.queued import lead_writer

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


def drain(stack, timeout: float = 60) -> None:
    """Run the writer until the queue is empty (failed messages come back after their retry delay)."""
    sqs = boto3.client("sqs")
    url = stack.resources.queue_sources[0].queue_url
    deadline = time.monotonic() + timeout
    while stack.queue_depth(sqs, url) and time.monotonic() < deadline:
        if messages := receive(stack):
            invoke(stack, messages)
        else:
            time.sleep(0.3)
    assert stack.queue_depth(sqs, url) == 0, "the queue did not drain"


def submissions_of(messages: list[dict]) -> list[Submission]:
    return [Submission.from_message(json.loads(m["Body"])) for m in messages]


def writer_with(session=None, **options):
    writer = lead_writer(get_settings())
    if session is not None:
        writer.bitrix.session = session
    for key, value in options.items():
        setattr(writer, key, value)
    return writer


class Session:
    """A requests session that lets a test change what happens to the request calling ``method``."""

    def __init__(self, method: str, action):
        self.method = method
        self.action = action
        self.hits = 0
        self._session = new_session()
        self.headers = self._session.headers

    def post(self, url, **kwargs):
        if self.method in json.dumps(kwargs.get("json", {})):
            self.hits += 1
            return self.action(self._session, url, kwargs, self.hits)
        return self._session.post(url, **kwargs)


# -- 1. poison messages -------------------------------------------------------------------------------------------


def poison_bodies(good_body: str) -> dict[str, str]:
    """One of each class of message the writer cannot write: not JSON, JSON but not an object, an unknown type,
    a form submission whose planning crashes (a year-1 first visit, a year-1 receive time, a wrong field type)."""
    message = json.loads(good_body)
    year_one = json.loads(good_body)
    year_one["submission"]["submission_id"] = "poison-year-one"
    year_one["submission"]["first_visit"] = {"utm_source": "google", "seen_at": "0001-01-01T00:00:00+14:00"}
    received_year_one = json.loads(good_body)
    received_year_one["submission"]["submission_id"] = "poison-received"
    received_year_one["submission"]["received_at"] = "0001-01-01T00:00:00+14:00"
    wrong_type = json.loads(good_body)
    wrong_type["submission"]["submission_id"] = "poison-type"
    wrong_type["submission"]["last_visit"] = ["not", "a", "visit"]
    no_id = {**message, "submission": {**message["submission"], "submission_id": None}}
    return {
        "not-json": "{not json",
        "null": "null",
        "list": "[]",
        "string": '"x"',
        "number": "1e400",
        "unknown-type": json.dumps({"type": "something_else"}),
        "year-one": json.dumps(year_one),
        "received-year-one": json.dumps(received_year_one),
        "wrong-type": json.dumps(wrong_type),
        "no-id": json.dumps(no_id),
    }


def test_a_poison_message_fails_alone_and_its_batch_mates_are_written(stack):
    post(stack, {"phone": "+79160001001", "utm_source": "yandex", "utm_medium": "cpc"})
    post(stack, {"email": "good@example.ru", "utm_source": "google", "utm_medium": "cpc"})
    good = receive(stack)
    assert len(good) == 2
    source = stack.resources.queue_sources[0]
    poison = [
        {
            **good[0],
            "MessageId": f"poison-{name}",
            "Body": body,
            "Attributes": {**good[0]["Attributes"], "MessageGroupId": f"group-{name}"},
        }
        for name, body in poison_bodies(good[0]["Body"]).items()
    ]
    # Ten messages per batch at most: the two good ones ride with eight poison ones, then two more poison ones alone.
    for batch in ([*poison[:4], good[0], *poison[4:8], good[1]], poison[8:]):
        result = stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in batch]})
        failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
        assert failed == {m["MessageId"] for m in batch if m["MessageId"].startswith("poison-")}
    assert len(stack.sandbox.entities("lead")) == 2


# -- 4. a repeat line equal to an earlier one ---------------------------------------------------------------------


def refuse(session, url, kwargs, hits):
    raise requests.ConnectionError("Connection refused")  # never reached the portal


def test_a_repeat_line_equal_to_an_earlier_one_is_still_written_after_a_failed_first_write(stack):
    post(stack, {"phone": "+79160002002", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    same = {"phone": "+79160002002", "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "brand"}
    post(stack, same, form_id="callback")
    drain(stack)
    [lead] = stack.sandbox.entities("lead")
    assert len(lead[JOURNEY].split("\n")) == 2
    # The same person, the same day, source, campaign and form: the new line reads exactly like the last one.
    post(stack, {**same, "email": "new@example.ru", "comment": "третий раз"}, form_id="callback")
    messages = receive(stack)
    session = Session("crm.lead.update", refuse)
    [outcome] = writer_with(session, attempts=1).write(submissions_of(messages)).values()
    assert session.hits and not outcome.ok  # marked pending, then the write never reached the portal
    [outcome] = writer_with().write(submissions_of(messages)).values()  # the queue's next delivery
    assert (outcome.ok, outcome.action) == (True, "appended")
    [lead] = stack.sandbox.entities("lead")
    lines = lead[JOURNEY].split("\n")
    assert len(lines) == 3 and lines[1] == lines[2]
    assert "new@example.ru" in [email["VALUE"] for email in lead["EMAIL"]]
    assert len(stack.sandbox.timeline_comments()) == 2


# -- 5. one person in two FIFO groups, two writer instances ------------------------------------------------------


def run_concurrently(stack, messages: list[dict]) -> None:
    threads = [threading.Thread(target=invoke, args=(stack, [message])) for message in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.fixture
def slow_stack(make_stack):
    stack = make_stack(poll_queues=False)
    stack.sandbox.set_faults(latency_ms=1500)
    return stack


def test_one_person_in_two_groups_written_at_once_makes_one_lead_with_both_lines(slow_stack):
    stack = slow_stack
    post(stack, {"phone": "+79160003003", "email": "both@example.ru", "utm_source": "yandex", "utm_medium": "cpc"})
    post(stack, {"email": "both@example.ru", "utm_source": "vk", "utm_medium": "cpc"})
    messages = receive(stack)
    assert len({m["Attributes"]["MessageGroupId"] for m in messages}) == 2  # two groups: SQS lets both go at once
    run_concurrently(stack, messages)
    drain(stack)
    [lead] = stack.sandbox.entities("lead")
    assert len(lead[JOURNEY].split("\n")) == 2


def test_a_lead_with_phone_and_email_keeps_both_lines_of_two_concurrent_posts(slow_stack):
    stack = slow_stack
    post(stack, {"phone": "+79160004004", "email": "pair@example.ru", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    post(stack, {"phone": "+79160004004", "utm_source": "vk", "utm_medium": "cpc"})
    post(stack, {"email": "pair@example.ru", "utm_source": "google", "utm_medium": "cpc"})
    messages = receive(stack)
    assert len(messages) == 2
    run_concurrently(stack, messages)
    drain(stack)
    [lead] = stack.sandbox.entities("lead")
    lines = lead[JOURNEY].split("\n")
    assert len(lines) == 3
    assert any("ВКонтакте" in line or "VK" in line for line in lines[1:]) and any("Google" in line for line in lines)


# -- 6. a write that times out ----------------------------------------------------------------------------------


def test_a_write_that_timed_out_is_not_repeated_in_the_invocation(stack):
    post(stack, {"phone": "+79160005005", "utm_source": "yandex", "utm_medium": "cpc"})
    messages = receive(stack)
    late: list[threading.Thread] = []

    def commit_late(session, url, kwargs, hits):
        # A slow portal: our client gives up waiting, the portal commits the lead a little later.
        thread = threading.Thread(target=lambda: (time.sleep(1.0), session.post(url, **kwargs)))
        thread.start()
        late.append(thread)
        raise requests.ReadTimeout("Read timed out")

    session = Session("crm.lead.add", commit_late)
    [outcome] = writer_with(session, retry_pause=0.1, settle_seconds=60).write(submissions_of(messages)).values()
    assert session.hits == 1  # not sent again one second later
    assert (outcome.ok, outcome.in_doubt) == (False, True)
    assert outcome.retry_at >= time.time() + 55  # back from the queue once the portal surely finished (60 s)
    for thread in late:
        thread.join()
    [outcome] = writer_with().write(submissions_of(messages)).values()
    assert (outcome.ok, outcome.action) == (True, "already_done")
    assert len(stack.sandbox.entities("lead")) == 1


# -- 8. the timeline comment of a refused update ------------------------------------------------------------------


def test_a_refused_update_adds_no_timeline_comment_and_the_retry_adds_one(stack):
    post(stack, {"phone": "+79160006006", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    post(stack, {"phone": "+79160006006", "comment": "ещё раз", "utm_source": "vk", "utm_medium": "cpc"})
    messages = receive(stack)
    [lead] = stack.sandbox.entities("lead")

    def point_the_update_elsewhere(session, url, kwargs, hits):
        # The portal refuses the update (as for a lead deleted or locked meanwhile); halt=0 runs the rest.
        text = json.dumps(kwargs["json"]).replace(f"id={lead['ID']}&", "id=999999&")
        return session.post(url, **{**kwargs, "json": json.loads(text)})

    session = Session("crm.lead.update", point_the_update_elsewhere)
    [outcome] = writer_with(session, attempts=1).write(submissions_of(messages)).values()
    assert session.hits == 1 and not outcome.ok
    assert stack.sandbox.timeline_comments() == []
    [outcome] = writer_with().write(submissions_of(messages)).values()
    assert outcome.action == "appended"
    [comment] = stack.sandbox.timeline_comments()
    assert comment["ENTITY_ID"] == lead["ID"]


# -- 16. simple CRM mode ----------------------------------------------------------------------------------------


def test_simple_mode_writes_a_contact_and_a_deal_and_a_repeat_request_goes_to_the_open_deal(make_stack):
    stack = make_stack(poll_queues=False, sandbox_options={"crm_mode": "simple"})
    submission_id = post(
        stack,
        {"name": "Ольга", "phone": "+79160007007", "email": "olga@example.ru", "utm_source": "yandex",
         "utm_medium": "cpc", "utm_campaign": "zima"},
    )  # fmt: skip
    drain(stack)
    post(stack, {"phone": "+79160007007", "utm_source": "google", "utm_medium": "cpc"}, form_id="callback")
    post(stack, {"email": "olga@example.ru", "utm_source": "vk", "utm_medium": "cpc"}, form_id="callback")
    drain(stack)
    assert stack.sandbox.entities("lead") == []
    [deal] = stack.sandbox.entities("deal")
    [contact] = stack.sandbox.entities("contact")
    assert (deal["ORIGINATOR_ID"], deal["ORIGIN_ID"]) == ("throughline", submission_id)
    assert (deal["UTM_SOURCE"], deal["UTM_MEDIUM"], deal["UTM_CAMPAIGN"]) == ("yandex", "cpc", "zima")
    assert deal["SOURCE_ID"] == "ADVERTISING"
    assert str(deal["CONTACT_ID"]) == str(contact["ID"])
    assert contact["NAME"] == "Ольга"
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+79160007007"]
    lines = deal[JOURNEY].split("\n")
    assert len(lines) == 3 and lines[0].startswith("Первичный контакт: ")
    assert len(stack.sandbox.timeline_comments()) == 2


# -- 17. a batch the portal cuts off part-way -------------------------------------------------------------------


def test_a_batch_cut_off_at_60_seconds_part_way_is_completed_without_duplicates(make_stack):
    # 20 s per create (simulated; the sandbox sleeps a hundredth of it): a cold writer's first batch of seven creates
    # runs into the portal's 60 s limit after three. The three stay done, the rest not; the client sees a 500.
    stack = make_stack(
        poll_queues=False,
        sandbox_options={"method_seconds": {"crm.lead.add": 20.0}, "time_scale": 0.01},
    )
    phones = [f"+7916000800{index}" for index in range(7)]
    for phone in phones:
        post(stack, {"phone": phone, "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack, timeout=120)
    assert stack.sandbox.stats()["cut_off"] >= 1
    assert sorted(lead["PHONE"][0]["VALUE"] for lead in stack.sandbox.entities("lead")) == phones
