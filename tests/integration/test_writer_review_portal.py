"""A hostile review of the writer after issue 5, against the Bitrix24 sandbox and moto: each test failed before its
fix."""

from __future__ import annotations

import json

import boto3
import requests

from local.stack import sqs_record
from tests.integration.test_writer_hardening import Session, post, receive, submissions_of
from tests.integration.test_writer_hardening import writer_with as hardened_writer_with

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


def drain(stack) -> None:
    source = stack.resources.queue_sources[0]
    sqs = boto3.client("sqs")
    while messages := receive(stack):
        result = stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in messages]})
        assert result["batchItemFailures"] == []
        for message in messages:
            sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])


def writer_with(session=None, **options):
    return hardened_writer_with(session, **{"retry_pause": 0, **options})


def deliver_until_done(messages: list[dict], first_session, rounds: int = 4) -> list:
    """The queue's deliveries: the first through ``first_session``, the next ones through a healthy portal."""
    submissions = submissions_of(messages)
    outcomes = list(writer_with(first_session, attempts=1).write(submissions).values())
    history = [outcomes]
    while not all(outcome.ok for outcome in outcomes) and len(history) < rounds:
        outcomes = list(writer_with().write(submissions).values())
        history.append(outcomes)
    return history


def test_a_timeline_comment_that_surely_never_reached_the_portal_is_not_lost(stack):
    # The repeat line is in, then the comment's request cannot even connect (or is refused by the leaky bucket): the
    # manager's notice surely did not run. It was marked "sent" all the same and the message deleted: no notice, ever.
    post(stack, {"phone": "+79160009001", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    post(stack, {"phone": "+79160009001", "comment": "перезвоните", "utm_source": "vk", "utm_medium": "cpc"})

    def never_connects(session, url, kwargs, hits):
        raise requests.ConnectTimeout("connect timed out")

    session = Session("crm.timeline.comment.add", never_connects)
    history = deliver_until_done(receive(stack), session)
    assert session.hits >= 1
    assert all(outcome.ok for outcome in history[-1])
    [lead] = stack.sandbox.entities("lead")
    assert len(lead[JOURNEY].split("\n")) == 2  # the line once
    assert len(stack.sandbox.timeline_comments()) == 1  # the notice once


def test_a_simple_mode_deal_is_never_filed_as_the_lead_of_the_same_number(stack):
    # Simple CRM mode writes deals; the journey wiring filed every created or appended record as LEAD#<id>. Leads made
    # before an administrator switched the mode keep their numbers, so deal 1 of one person was indexed as lead 1 of
    # another: once the portal is back in classic mode, the deal's person's next request lands in that stranger's lead.
    from throughline.writer.queued import reset_portal_states

    post(stack, {"phone": "+79160009101", "utm_source": "yandex", "utm_medium": "cpc"})
    drain(stack)
    [stranger] = stack.sandbox.entities("lead")
    stack.sandbox.crm_mode = "simple"
    reset_portal_states()
    stack.sandbox.set_outbound_drop_rate(1.0)  # outbound events are not guaranteed: nothing repairs the wiring's filing
    post(stack, {"phone": "+79160009202", "utm_source": "google", "utm_medium": "cpc"})
    drain(stack)
    post(stack, {"phone": "+79160009202", "utm_source": "vk", "utm_medium": "cpc"}, form_id="callback")
    drain(stack)
    [deal] = stack.sandbox.entities("deal")
    assert str(deal["ID"]) == str(stranger["ID"])  # the numbers meet, as on a real portal
    [lead] = stack.sandbox.entities("lead")
    assert lead[JOURNEY] == stranger[JOURNEY]  # the stranger's lead was not touched
    stack.sandbox.crm_mode = "classic"
    reset_portal_states()
    post(stack, {"phone": "+79160009202", "utm_source": "vk", "utm_medium": "cpc"}, form_id="again")
    drain(stack)
    by_id = {str(lead["ID"]): lead for lead in stack.sandbox.entities("lead")}
    assert by_id[str(stranger["ID"])][JOURNEY] == stranger[JOURNEY]  # no stranger's line in it
    assert [p["VALUE"] for p in by_id[str(stranger["ID"])]["PHONE"]] == ["+79160009101"]


def test_a_simple_mode_deal_is_never_written_without_the_contact_that_holds_the_phone(make_stack):
    # In simple mode the phone and e-mail live on the contact; the deal only links it. Contact and deal went in one
    # batch (halt=0, CONTACT_ID = $result[contact…]): when the contact add failed, the portal ran the deal add with
    # an empty reference, and the deal was reported created without any way to reach the customer.
    stack = make_stack(poll_queues=False, sandbox_options={"crm_mode": "simple"})
    post(stack, {"name": "Пётр", "phone": "+79160009303", "utm_source": "yandex", "utm_medium": "cpc"})

    def refuse_the_contact(session, url, kwargs, hits):
        if hits > 1:
            return session.post(url, **kwargs)
        text = json.dumps(kwargs["json"]).replace("crm.contact.add?", "crm.contact.refused?")
        return session.post(url, **{**kwargs, "json": json.loads(text)})

    session = Session("crm.contact.add", refuse_the_contact)
    history = deliver_until_done(receive(stack), session)
    assert session.hits >= 1
    assert all(outcome.ok for outcome in history[-1])
    [deal] = stack.sandbox.entities("deal")
    contacts = {str(contact["ID"]): contact for contact in stack.sandbox.entities("contact")}
    assert str(deal.get("CONTACT_ID") or "") in contacts
    assert [p["VALUE"] for p in contacts[str(deal["CONTACT_ID"])]["PHONE"]] == ["+79160009303"]


def test_a_lookup_the_portal_refuses_for_one_person_fails_that_person_alone(stack):
    # The portal refused one person's crm.duplicate.findbycomm (a value it will not take): the whole round failed,
    # every time, and the nine others in the batch went to the DLQ with that one.
    for index in range(3):
        post(stack, {"phone": f"+7916000950{index}", "utm_source": "yandex", "utm_medium": "cpc"})
    messages = receive(stack)
    assert len(messages) == 3

    def refuse_one_value(session, url, kwargs, hits):
        text = json.dumps(kwargs["json"]).replace("type=PHONE&values%5B0%5D=%2B79160009501", "type=BAD&values%5B0%5D=x")
        return session.post(url, **{**kwargs, "json": json.loads(text)})

    session = Session("crm.duplicate.findbycomm", refuse_one_value)
    outcomes = writer_with(session).write(submissions_of(messages))
    assert session.hits >= 1
    by_phone = {s.phone: outcomes[s.submission_id] for s in submissions_of(messages)}
    assert not by_phone["+79160009501"].ok
    assert [by_phone[f"+7916000950{index}"].action for index in (0, 2)] == ["created", "created"]
    assert sorted(lead["PHONE"][0]["VALUE"] for lead in stack.sandbox.entities("lead")) == [
        "+79160009500",
        "+79160009502",
    ]
