"""The local stack's idle check counts a consumed queue's messages in moto's backend: the same as SQS's three
approximate counts (visible, in flight, delayed), without GetQueueAttributes walking every message each 0.2 s."""

from __future__ import annotations

import threading
import time

import boto3
import requests

from local.stack import LocalStack


def test_the_backend_count_equals_the_apis_visible_in_flight_and_delayed(stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="depth-check")["QueueUrl"]
    assert stack._depth(sqs, url) == LocalStack.queue_depth(sqs, url) == 0
    for n in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"visible {n}")
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=600)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=600)["Messages"]
    assert len(received) == 1  # one in flight, two visible, one delayed
    assert stack._depth(sqs, url) == LocalStack.queue_depth(sqs, url) == 4
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    assert stack._depth(sqs, url) == LocalStack.queue_depth(sqs, url) == 3
    assert stack._depth(None, url) == 3  # counted in the backend: no API call (no client to make one)
    sqs.purge_queue(QueueUrl=url)
    assert stack._depth(sqs, url) == LocalStack.queue_depth(sqs, url) == 0


def test_the_pollers_ask_moto_only_when_a_message_is_receivable(make_stack, monkeypatch) -> None:
    """An idle consumed queue costs no ReceiveMessage (it cost one per poller every 0.2 s, each walking every message
    in flight with two clock reads); a form posted is received and written all the same."""
    from moto.sqs.models import SQSBackend

    receives: list[str] = []
    original = SQSBackend.receive_message

    def counted(self, queue_name, *args, **kwargs):
        receives.append(queue_name)
        return original(self, queue_name, *args, **kwargs)

    monkeypatch.setattr(SQSBackend, "receive_message", counted)
    stack = make_stack()  # its two pollers consume the writes queue
    time.sleep(1.5)  # the former pollers asked about 2 x 7 times in this while
    assert receives == []
    form = {"name": "Вера", "phone": "+7 916 700-00-02"}
    assert requests.post(f"{stack.url}/v1/forms/contact/submissions", json=form, timeout=30).status_code == 202
    assert stack.wait_until_idle(timeout=60)
    [lead] = stack.sandbox.entities("lead")
    assert lead["PHONE"][0]["VALUE"] == "+79167000002"
    # The message's receive and the two pollers' races for it: 2 or 3 as a rule, 4 once on a loaded CI machine. The
    # former pollers asked about 2 x 5 times a second whatever the queue held.
    assert receives and len(receives) <= 4


def test_receivable_means_visible_and_not_delayed(stack: LocalStack) -> None:
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="receivable-check")["QueueUrl"]
    assert stack._receivable(url, pause=False) is False  # empty
    sqs.send_message(QueueUrl=url, MessageBody="delayed", DelaySeconds=600)
    assert stack._receivable(url, pause=False) is False
    sqs.send_message(QueueUrl=url, MessageBody="visible")
    assert stack._receivable(url, pause=False) is True
    [message] = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)["Messages"]
    assert message["Body"] == "visible"
    assert stack._receivable(url, pause=False) is False  # in flight
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)
    time.sleep(0.01)
    assert stack._receivable(url, pause=False) is True  # visible again
    sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    assert stack._receivable(url, pause=False) is False
    sender = threading.Timer(0.05, lambda: sqs.send_message(QueueUrl=url, MessageBody="sent while it waits"))
    sender.start()
    # seen by the call waiting when it lands (on a busy machine the send may take longer than one call's 0.2 s)
    seen = any(stack._receivable(url, pause=False) for _ in range(50))
    sender.join()
    assert seen


def test_moto_looks_up_the_backend_of_a_host_once(make_stack, monkeypatch) -> None:
    """moto's server found the backend for each request's host by listing its package's folders (a stat each) and
    matching every service's URL patterns: the stack's dispatcher keeps the answer per host."""
    from moto import backends

    listings: list[int] = []
    original = backends.list_of_moto_modules
    monkeypatch.setattr(backends, "list_of_moto_modules", lambda: listings.append(1) or original())
    stack = make_stack(poll_queues=False)  # provisioning calls S3, SQS, DynamoDB, Secrets Manager, ...
    after_start = len(listings)
    assert 0 < after_start <= 12  # once per service host, not once per request
    sqs, dynamodb = boto3.client("sqs"), boto3.client("dynamodb")
    for _ in range(5):
        assert stack.resources.physical["WritesQueue"] in sqs.list_queues()["QueueUrls"]
        assert stack.resources.physical["JourneyTable"] in dynamodb.list_tables()["TableNames"]
    assert len(listings) == after_start


def test_moto_counts_a_queues_messages_at_one_instant(stack: LocalStack, monkeypatch) -> None:
    """The counts equal the API's (visible, in flight, delayed), and each reads the clock once, not once or twice per
    message: a FIFO SendMessage builds them four times, so a backlog made every send slower."""
    from moto.sqs import models

    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="instant-check.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for n in range(30):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{n}", MessageGroupId=f"g{n}", MessageDeduplicationId=f"d{n}")
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)["Messages"]
    assert len(received) == 10
    standard = sqs.create_queue(QueueName="instant-check-delays")["QueueUrl"]
    for n in range(4):
        sqs.send_message(QueueUrl=standard, MessageBody=f"later {n}", DelaySeconds=600)
    sqs.send_message(QueueUrl=standard, MessageBody="now")
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    counts = {
        queue_url: [
            int(v)
            for v in map(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"].get, names)
        ]
        for queue_url in (url, standard)
    }
    # 20 visible and 10 in flight; 1 visible and 4 delayed (not counted in flight, as in SQS)
    assert counts == {url: [20, 10, 0], standard: [1, 0, 4]}

    reads: list[int] = []
    clock = models.unix_time_millis
    monkeypatch.setattr(models, "unix_time_millis", lambda *args: reads.append(1) or clock(*args))
    queue = stack._backend_queue(url)
    assert (len(queue.messages), queue.approximate_number_of_messages_not_visible) == (20, 10)
    assert queue.approximate_number_of_messages_delayed == 0
    assert len(reads) == 3
