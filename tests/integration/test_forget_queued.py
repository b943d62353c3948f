"""forget reaches posts it cannot find: still in the writes queue, or dead-lettered and redriven after the erasure.
The writer is paused (poll_queues=False) and driven by the test."""

from __future__ import annotations

import boto3

from tests.integration.test_bitrix_writer import drain, leads, receive
from tests.integration.test_forget import IVAN, OLGA, post
from throughline.__main__ import main
from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings
from throughline.dlq import replay_dead_letters
from throughline.person_keys import person_key


def raw_copies(bucket: str) -> list[dict]:
    page = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix="raw/forms/")
    return [*page.get("Versions", []), *page.get("DeleteMarkers", [])]


def test_a_post_still_queued_when_forget_runs_is_dropped_and_a_new_post_after_it_is_a_lead(make_stack, capsys):
    stack = make_stack(poll_queues=False)
    post(stack, IVAN)
    post(stack, OLGA)
    settings = get_settings()
    store, secret = JourneyStore(settings.journey_table), settings.person_key_secret
    ivan = [person_key("+79161234567", secret), person_key("ivan@example.ru", secret)]
    assert main(["forget", "--phone", "+79161234567"]) == 0
    assert "erasure marks: 1" in capsys.readouterr().out
    drain(stack)
    assert [lead["NAME"] for lead in leads(stack)] == ["Ольга"]  # Ivan's queued post wrote nothing
    assert store.index_lookup(ivan) == set() and store.raw_keys(ivan) == set()
    olga_copies = store.raw_keys([person_key("+79035550101", secret)])
    assert {version["Key"] for version in raw_copies(settings.data_bucket)} == olga_copies  # no copy of Ivan's

    post(stack, {**IVAN, "comment": "я снова с вами"})  # he came back: a new consent
    drain(stack)
    assert sorted(lead["NAME"] for lead in leads(stack)) == ["Иван", "Ольга"]
    assert len(store.index_lookup(ivan)) == 1 and len(store.raw_keys(ivan)) == 1


def test_a_dead_lettered_post_redriven_after_forget_is_dropped(make_stack):
    stack = make_stack(poll_queues=False)
    post(stack, IVAN)
    sqs, queue_url = boto3.client("sqs"), stack.resources.queue_sources[0].queue_url
    dlq_url = sqs.create_queue(QueueName="forget-test-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    [message] = receive(stack)  # the portal was down: the post ends in the DLQ
    sqs.send_message(
        QueueUrl=dlq_url,
        MessageBody=message["Body"],
        MessageGroupId=message["Attributes"]["MessageGroupId"],
        MessageDeduplicationId=message["Attributes"]["MessageDeduplicationId"],
    )
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert main(["forget", "--email", "ivan@example.ru"]) == 0
    assert replay_dead_letters(sqs, dead_letter_queue_url=dlq_url, queue_url=queue_url).moved == 1
    drain(stack)
    assert leads(stack) == []
    assert raw_copies(get_settings().data_bucket) == []


def test_a_colleagues_post_queued_from_the_erased_persons_office_phone_is_still_a_lead(make_stack):
    # Ivan's phone is his office's switchboard; Olga posted from the same office (that phone, her own e-mail) just
    # before Ivan asked to be forgotten by his phone and e-mail. Her post is her lead: written, not dropped.
    stack = make_stack(poll_queues=False)
    post(stack, IVAN)
    post(stack, {**OLGA, "phone": IVAN["phone"]})
    post(stack, {"name": "Секретарь", "phone": IVAN["phone"]})  # the phone alone: cannot be told from Ivan's
    assert main(["forget", "--phone", "+79161234567", "--email", "ivan@example.ru"]) == 0
    drain(stack)
    assert [lead["NAME"] for lead in leads(stack)] == ["Ольга"]
