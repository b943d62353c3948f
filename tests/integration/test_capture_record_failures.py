"""The idempotency record may fail to save after the raw copy and the message are stored (or an attempt may die
between the two): the sender still gets its submission id, and a retry of the same post stores the same submission
again — one raw copy, one queued message — never a second lead."""

from __future__ import annotations

import json
import time

import boto3
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from botocore.exceptions import ClientError

from throughline.adapters.writes_queue import WritesQueue
from throughline.capture.receive import capture_from_settings
from throughline.config import get_settings

BODY = json.dumps({"name": "Иван", "phone": "+79161234567", "utm_source": "yandex"}).encode()
THROTTLED = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "op")


def receive(capture):
    return capture.receive("contact", BODY, "application/json", {})


def depth(stack) -> int:
    return stack.queue_depth(boto3.client("sqs"), stack.resources.physical["WritesQueue"])


def raw_copies(bucket: str) -> list[str]:
    return [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


def forget_powertools_records(table: str) -> None:
    """What a retry meets once the stuck in-progress record has expired: Powertools runs the post afresh."""
    dynamodb = boto3.client("dynamodb")
    for item in dynamodb.scan(TableName=table)["Items"]:
        if not item["id"]["S"].startswith("claim#"):
            dynamodb.delete_item(TableName=table, Key={"id": item["id"]})


@pytest.fixture
def capture(stack):
    settings = get_settings()
    return capture_from_settings(settings)[0]


def test_a_record_that_fails_to_save_after_the_message_is_queued_still_answers_and_a_retry_queues_nothing(
    stack, capture, monkeypatch
):
    settings = get_settings()

    def fail(*args, **kwargs):
        raise THROTTLED

    with monkeypatch.context() as patch:
        patch.setattr(DynamoDBPersistenceLayer, "_update_record", fail)
        first = receive(capture)  # was: IdempotencyPersistenceLayerError, answered 503, so the site posted again
    assert first.submission_id and not first.duplicate
    assert depth(stack) == 1 and raw_copies(settings.data_bucket) == []  # the copy travels in the message

    forget_powertools_records(settings.idempotency_table)
    retry = receive(capture)
    assert retry.submission_id == first.submission_id  # the same submission, not a second one
    assert depth(stack) == 1
    assert raw_copies(settings.data_bucket) == []
    assert receive(capture).submission_id == first.submission_id  # and the record now answers doubles again
    assert depth(stack) == 1


def test_an_attempt_that_died_after_the_raw_copy_is_redone_under_the_same_submission(stack, capture, monkeypatch):
    settings = get_settings()

    def fail(self, *args, **kwargs):
        raise THROTTLED

    with monkeypatch.context() as patch:
        patch.setattr(WritesQueue, "send", fail)
        with pytest.raises(ClientError):
            receive(capture)  # answered 503: the site retries
    [orphan] = raw_copies(settings.data_bucket)  # the copy of a post the queue refused is kept in S3
    retry = receive(capture)
    assert orphan.endswith(f"/{retry.submission_id}.json")  # the copy already stored is the one the retry completes
    assert raw_copies(settings.data_bucket) == [orphan] and depth(stack) == 1
    message = json.loads(
        boto3.client("sqs").receive_message(QueueUrl=stack.resources.physical["WritesQueue"])["Messages"][0]["Body"]
    )
    assert message["submission"]["submission_id"] == retry.submission_id
    assert message["submission"]["raw_key"] == orphan


def test_claims_hold_no_personal_data_and_expire_with_the_window(stack, capture):
    settings = get_settings()
    receive(capture)
    items = boto3.client("dynamodb").scan(TableName=settings.idempotency_table)["Items"]
    [claim] = [item for item in items if item["id"]["S"].startswith("claim#")]
    assert set(claim) == {"id", "submission_id", "received_at", "expiration"}
    assert "79161234567" not in json.dumps(claim) and "Иван" not in json.dumps(claim, ensure_ascii=False)
    assert len(claim["id"]["S"]) == len("claim#") + 64
    assert 0 < int(claim["expiration"]["N"]) - time.time() <= settings.double_submit_window_seconds
