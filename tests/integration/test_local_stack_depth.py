"""The local stack's idle check counts a consumed queue's messages in moto's backend: the same as SQS's three
approximate counts (visible, in flight, delayed), without GetQueueAttributes walking every message each 0.2 s."""

from __future__ import annotations

import boto3

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
