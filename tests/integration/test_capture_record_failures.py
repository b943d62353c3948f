"""The claim of a post's content may fail to be marked completed after the raw copy and the message are stored (or an
attempt may die between the two): the sender still gets its submission id, and a retry of the same post stores the
same submission again — one raw copy, one queued message — never a second lead. And a new post costs one DynamoDB
write for it (issue 15 #9: the claim carries the double-submit answer the Powertools idempotency record gave)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.exceptions import ClientError

from throughline.adapters import aws
from throughline.adapters.submission_claims import SubmissionClaims
from throughline.adapters.writes_queue import WritesQueue
from throughline.capture.receive import capture_from_settings
from throughline.config import get_settings

BODY = json.dumps({"name": "Иван", "phone": "+79161234567", "utm_source": "yandex"}).encode()
THROTTLED = ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}}, "op")


def receive(capture, body: bytes = BODY, source_ip: str | None = None):
    return capture.receive("contact", body, "application/json", {}, source_ip=source_ip)


def depth(stack) -> int:
    return stack.queue_depth(boto3.client("sqs"), stack.resources.physical["WritesQueue"])


def raw_copies(bucket: str) -> list[str]:
    return [item["Key"] for item in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def capture(stack):
    settings = get_settings()
    return capture_from_settings(settings)


def test_a_claim_not_marked_completed_still_answers_and_a_retry_queues_nothing(stack, capture, monkeypatch):
    settings = get_settings()

    def fail(*args, **kwargs):
        raise THROTTLED

    with monkeypatch.context() as patch:
        patch.setattr(SubmissionClaims, "complete", fail)
        first = receive(capture)  # was (issue 15 #15): answered 503, so the site posted again
    assert first.submission_id and not first.duplicate
    assert depth(stack) == 1 and raw_copies(settings.data_bucket) == []  # the copy travels in the message

    retry = receive(capture)  # finds the claim not completed: stores the same submission again
    assert retry.submission_id == first.submission_id  # the same submission, not a second one
    assert depth(stack) == 1  # the FIFO queue dropped the repeat (same deduplication id)
    assert raw_copies(settings.data_bucket) == []
    assert receive(capture).submission_id == first.submission_id  # and the claim now answers doubles again
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
    assert set(claim) == {"id", "submission_id", "received_at", "expiration", "state"}
    assert claim["state"] == {"S": "completed"}
    assert "79161234567" not in json.dumps(claim) and "Иван" not in json.dumps(claim, ensure_ascii=False)
    assert len(claim["id"]["S"]) == len("claim#") + 64
    assert 0 < int(claim["expiration"]["N"]) - time.time() <= settings.double_submit_window_seconds


@pytest.fixture
def calls(stack):
    """The AWS operations the capture's clients make from here on."""
    counted: Counter = Counter()
    clients = [aws.client(service) for service in ("dynamodb", "sqs")]
    for client in clients:
        client.meta.events.register(
            "before-call", lambda model, **kwargs: counted.update([model.name]), unique_id="count-calls"
        )
    yield counted
    for client in clients:
        client.meta.events.unregister("before-call", unique_id="count-calls")


def test_a_new_post_costs_the_two_counters_one_claim_its_mark_and_one_message(stack, capture, calls):
    first = receive(capture, source_ip="203.0.113.7")
    # was: PutItem ×2 (the Powertools record, the claim) and UpdateItem ×3 (the counters, the record's completion)
    assert calls == {"UpdateItem": 3, "PutItem": 1, "SendMessage": 1}
    calls.clear()
    double = receive(capture, source_ip="203.0.113.7")
    assert double.duplicate and double.submission_id == first.submission_id
    assert calls == {"UpdateItem": 2, "PutItem": 1}  # the counters, then the claim answers: nothing stored
    assert depth(stack) == 1


def test_a_twin_that_finds_the_claim_in_progress_stores_the_same_submission(stack, capture):
    """Two posts of one content at once: the second finds the first's claim not yet completed and stores that same
    submission (the queue drops the repeat) instead of a second one."""
    settings = get_settings()
    body = json.dumps({"phone": "+79161234599"}).encode()
    first = receive(capture, body)
    # What the twin meets while the first is between its claim and its mark: the claim without the mark.
    dynamodb = boto3.client("dynamodb")
    [claim] = [
        item
        for item in dynamodb.scan(TableName=settings.idempotency_table)["Items"]
        if item["id"]["S"].startswith("claim#")
    ]
    dynamodb.update_item(
        TableName=settings.idempotency_table, Key={"id": claim["id"]}, UpdateExpression="REMOVE #s",
        ExpressionAttributeNames={"#s": "state"},
    )  # fmt: skip
    twin = receive(capture, body)
    assert twin.submission_id == first.submission_id and twin.duplicate
    assert depth(stack) == 1
    [message] = boto3.client("sqs").receive_message(QueueUrl=stack.resources.physical["WritesQueue"])["Messages"]
    assert json.loads(message["Body"])["submission"]["submission_id"] == first.submission_id


def test_a_completed_claim_past_its_window_gives_way_to_a_new_submission(stack):
    settings = get_settings()
    now = [1_780_000_000.0]
    claims = SubmissionClaims(settings.idempotency_table, settings.person_key_secret, 600, clock=lambda: now[0])
    first = claims.claim("fingerprint", "first", "2026-06-01T10:00:00+00:00")
    assert (first.submission_id, first.completed) == ("first", False)
    claims.complete("fingerprint", "first")
    now[0] += 600  # the last second of the window: still the first one, queued
    assert claims.claim("fingerprint", "second", "2026-06-01T10:10:00+00:00").submission_id == "first"
    assert claims.claim("fingerprint", "second", "2026-06-01T10:10:00+00:00").completed
    now[0] += 1  # past it: a new submission, not yet queued (the mark went with the old item)
    later = claims.claim("fingerprint", "second", "2026-06-01T10:10:01+00:00")
    assert (later.submission_id, later.completed) == ("second", False)
    assert claims.claimed("fingerprint") == "second"


def test_a_late_mark_does_not_complete_a_newer_claim_of_the_content(stack):
    """An attempt slower than the window (a short DOUBLE_SUBMIT_WINDOW_SECONDS, the queue's retries) marks its own
    claim only: marking the newer submission that replaced it would answer that one's retry (after a 503) as a
    double of a submission never queued: its id answered 202, nothing stored."""
    settings = get_settings()
    now = [1_780_000_000.0]
    claims = SubmissionClaims(settings.idempotency_table, settings.person_key_secret, 10, clock=lambda: now[0])
    assert claims.claim("fingerprint", "slow", "2026-06-01T10:00:00+00:00").submission_id == "slow"
    now[0] += 11  # the slow attempt is still sending when the same content is posted anew, past the window
    newer = claims.claim("fingerprint", "newer", "2026-06-01T10:00:11+00:00")
    assert (newer.submission_id, newer.completed) == ("newer", False)
    with pytest.raises(ClientError, match="ConditionalCheckFailed"):  # capture logs it; the sender still gets 202
        claims.complete("fingerprint", "slow")  # the slow attempt's mark arrives: not its claim any more
    retry = claims.claim("fingerprint", "retry", "2026-06-01T10:00:12+00:00")  # the newer one's retry after a 503
    assert (retry.submission_id, retry.completed) == ("newer", False)  # stores it again, not answered as queued
    claims.complete("fingerprint", "newer")
    assert claims.claim("fingerprint", "double", "2026-06-01T10:00:13+00:00").completed


def test_identical_posts_at_once_make_one_submission_and_one_message(stack, capture):
    """A double click's posts arriving together (threads against the local stack): whichever claims first, every post
    is answered with that one submission and the queue holds one message."""
    body = json.dumps({"phone": "+79161234588", "name": "Пётр"}).encode()
    start = threading.Barrier(6)

    def post(_):
        start.wait()
        return receive(capture, body, source_ip="203.0.113.9")

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(post, range(6)))
    assert len({answer.submission_id for answer in answers}) == 1
    assert sum(not answer.duplicate for answer in answers) == 1  # the one that claimed it
    assert depth(stack) == 1
