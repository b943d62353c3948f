"""release-held against a bucket another run is releasing from at the same time (moto in-process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from throughline.capture.forms import parse_submission
from throughline.capture.held import Selection, accepted_since, held_posts


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield client


def held(s3, submission_id: str, at: datetime = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)) -> str:
    key = f"raw/held/date={at.astimezone(UTC):%Y-%m-%d}/form=contact/{submission_id}.json"
    submission = parse_submission(
        "contact",
        {"name": "Анна", "phone": "+79261110001"},
        submission_id=submission_id,
        received_at=at,
        origin=None,
        default_region="RU",
        zone=ZoneInfo("Europe/Moscow"),
    )
    record = {"message": submission.to_message(), "held": {"reason": "ip"}}
    s3.put_object(Bucket="data", Key=key, Body=json.dumps(record).encode())
    return key


def test_a_held_post_released_by_another_run_after_this_one_listed_it_is_skipped_not_a_crash(s3):
    first, second, third = held(s3, "a1"), held(s3, "b2"), held(s3, "c3")
    posts = held_posts(s3, "data", Selection())
    assert next(posts).key == first
    s3.delete_object(Bucket="data", Key=second)  # the other run released (and deleted) it meanwhile
    assert [post.key for post in posts] == [third]


class RawIndex:
    """The writer's index of raw copies (``JourneyStore.raw_keys``): here, every key under the one person."""

    def __init__(self, keys, marks=None):
        self.keys = keys
        self.marks = marks or {}  # person key → erasure time

    def forgotten(self, person_keys):  # as ``JourneyStore.forgotten``: (erasure time, whether it named e-mails)
        return {key: (self.marks[key], False) for key in person_keys if key in self.marks}

    def raw_keys(self, person_keys):
        assert list(person_keys)  # asked by the post's phone's key
        return set(self.keys)


def accepted_copy(s3, submission_id: str, at: datetime, comment: str = "", form: str = "contact", builder=None) -> str:
    submission = parse_submission(
        form,
        {"name": "Анна", "phone": "+79261110001", **({"comment": comment} if comment else {})},
        submission_id=submission_id,
        received_at=at,
        origin=None,
        default_region="RU",
        zone=ZoneInfo("Europe/Moscow"),
    )
    key = f"raw/forms/date={at:%Y-%m-%d}/form={form}/{submission_id}.json"
    record = {"message": submission.to_message(), **({"builder": builder} if builder else {})}
    s3.put_object(Bucket="data", Key=key, Body=json.dumps(record).encode())
    return key


def test_the_content_accepted_after_the_post_was_held_is_found_among_the_persons_raw_copies(s3):
    key = held(s3, "held-1")  # 2026-11-30 10:00 UTC
    [post] = held_posts(s3, "data", Selection())
    keys = [
        accepted_copy(s3, "days-before", datetime(2026, 11, 27, 9, 0, tzinfo=UTC)),  # an earlier request: not it
        accepted_copy(s3, "other-text", datetime(2026, 11, 30, 12, 0, tzinfo=UTC), comment="другое"),
        accepted_copy(s3, "other-form", datetime(2026, 11, 30, 12, 0, tzinfo=UTC), form="callback"),
        "raw/forms/date=2026-11-30/form=contact/gone.json",  # filed, then deleted by forget: skipped
        key.replace("raw/held/", "raw/forms/"),  # its own copy (a release that died before deleting the held one)
    ]
    s3.put_object(Bucket="data", Key=keys[-1], Body=json.dumps(post.record).encode())
    assert accepted_since(s3, "data", RawIndex(keys), "secret", post, 600) is None
    # The window before it counts (a twin answered while this one was held by the limit it raced); before that, not.
    keys.append(accepted_copy(s3, "minute-before", datetime(2026, 11, 30, 9, 59, tzinfo=UTC)))
    assert accepted_since(s3, "data", RawIndex(keys), "secret", post, 600) == "minute-before"
    assert accepted_since(s3, "data", RawIndex(keys), "secret", post, 30) is None
    keys.append(accepted_copy(s3, "next-day", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)))
    assert accepted_since(s3, "data", RawIndex(keys[:-2] + keys[-1:]), "secret", post, 600) == "next-day"


def test_the_same_content_accepted_days_after_the_post_was_held_is_a_request_of_its_own_not_its_resend(s3):
    # Held on Monday (the office's address over its limit; a builder's post is even answered 200), nobody releases it;
    # on Friday the customer sends the same short form again for a new order and gets through. Before the fix the
    # Monday post was dropped on release as «already accepted»: Monday's request was lost (no repeat request, no
    # notice to the manager). A resend because of the hold comes within a day; later, the held post is released.
    held(s3, "held-1")  # 2026-11-30 10:00 UTC
    [post] = held_posts(s3, "data", Selection())
    friday = accepted_copy(s3, "friday", datetime(2026, 12, 4, 10, 0, tzinfo=UTC))
    assert accepted_since(s3, "data", RawIndex([friday]), "secret", post, 600) is None
    evening = accepted_copy(s3, "evening", datetime(2026, 11, 30, 21, 0, tzinfo=UTC))  # resent the same evening
    assert accepted_since(s3, "data", RawIndex([friday, evening]), "secret", post, 600) == "evening"
    next_morning = accepted_copy(s3, "morning", datetime(2026, 12, 1, 10, 10, tzinfo=UTC))  # a day + the window
    assert accepted_since(s3, "data", RawIndex([friday, next_morning]), "secret", post, 600) == "morning"


def test_a_held_post_timed_in_another_offset_finds_the_copy_in_the_utc_day_partition(s3):
    # Raw copies are partitioned by the UTC day (forms.raw_key); a held time written with an offset (+03:00, past
    # Moscow's midnight) named the next day and skipped the copy accepted minutes later, filed under the UTC day.
    held(s3, "held-1", at=datetime(2026, 12, 1, 1, 0, tzinfo=ZoneInfo("Europe/Moscow")))  # 2026-11-30 22:00 UTC
    [post] = held_posts(s3, "data", Selection())
    assert post.submission.received_at.utcoffset().total_seconds() == 3 * 3600
    copy = accepted_copy(s3, "minutes-later", datetime(2026, 11, 30, 22, 5, tzinfo=UTC))
    assert accepted_since(s3, "data", RawIndex([copy]), "secret", post, 600) == "minutes-later"


def claims_table_and_queue() -> tuple[Any, Any, str]:
    """In the test's moto: the claims table (keyed by ``id``, as the template's idempotency table), the writes FIFO
    queue; their clients and the queue's URL."""
    dynamodb, sqs = boto3.client("dynamodb"), boto3.client("sqs")
    dynamodb.create_table(
        TableName="claims",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue = sqs.create_queue(QueueName="writes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    return dynamodb, sqs, queue


def test_a_release_that_finds_the_content_claimed_by_a_new_request_days_later_queues_the_held_post_as_its_own(s3):
    # Held on Monday; on Friday the customer sends the same form for a new order, and the operator releases Monday's
    # post minutes later, within the double-submit window: the claim is Friday's. Before the fix the held post was
    # dropped as «already accepted» (a completed claim) or queued under Friday's id (one in progress): Monday's request
    # was lost either way. The claim's arrival time is a day past the held one: a request of its own.
    from throughline.adapters.submission_claims import SubmissionClaims
    from throughline.capture.held import content_fingerprint, release

    dynamodb, sqs, queue = claims_table_and_queue()
    friday = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    claims = SubmissionClaims("claims", "secret", 600, client=dynamodb, clock=lambda: friday.timestamp() + 300)
    for submission_id, completed in (("held-1", True), ("held-2", False)):
        held(s3, submission_id)  # 2026-11-30 10:00 UTC
        [post] = held_posts(s3, "data", Selection())
        fingerprint = content_fingerprint(post)
        dynamodb.delete_item(TableName="claims", Key={"id": {"S": claims._key_of(fingerprint)}})
        assert claims.claim(fingerprint, "friday", friday.isoformat()).submission_id == "friday"
        if completed:
            claims.complete(fingerprint, "friday")
        released = release(s3, sqs, "data", queue, "secret", post, now=friday, claims=claims, index=RawIndex([]))
        assert released.queued and released.submission_id == submission_id
        [message] = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
        assert json.loads(message["Body"])["submission"]["submission_id"] == submission_id
        assert s3.get_object(Bucket="data", Key=f"raw/forms/date=2026-11-30/form=contact/{submission_id}.json")
        assert claims.claim(fingerprint, "later", friday.isoformat()).submission_id == "friday"  # still Friday's
        assert not s3.list_objects_v2(Bucket="data", Prefix="raw/held/").get("KeyCount")


def test_a_held_copy_released_in_another_run_is_the_same_form_not_a_request_of_its_own(s3):
    # The snippet retried a 429 half an hour later and was held again; one operator releases the first copy (by its
    # submission id), another the rest (by phone). The second must drop its copy as one run does: found by the
    # released copy among the raw copies, or by the claim the first release put (its arrival half an hour earlier).
    from throughline.adapters.submission_claims import SubmissionClaims
    from throughline.capture.held import content_fingerprint, release

    held(s3, "retry", at=datetime(2026, 11, 30, 10, 30, tzinfo=UTC))
    [post] = held_posts(s3, "data", Selection())
    first = accepted_copy(s3, "first", datetime(2026, 11, 30, 10, 0, tzinfo=UTC))
    assert accepted_since(s3, "data", RawIndex([first]), "secret", post, 600) is None  # a captured one: earlier
    record = json.loads(s3.get_object(Bucket="data", Key=first)["Body"].read())
    s3.put_object(Bucket="data", Key=first, Body=json.dumps({**record, "released": {"reason": "ip"}}).encode())
    assert accepted_since(s3, "data", RawIndex([first]), "secret", post, 600) == "first"  # a released copy

    dynamodb, sqs, queue = claims_table_and_queue()
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    claims = SubmissionClaims("claims", "secret", 600, client=dynamodb, clock=now.timestamp)
    claims.claim(content_fingerprint(post), "first", "2026-11-30T10:00:00+00:00")
    claims.complete(content_fingerprint(post), "first")  # the first run's release, not yet filed by the writer
    released = release(s3, sqs, "data", queue, "secret", post, now=now, claims=claims, index=RawIndex([]))
    assert (released.submission_id, released.queued) == ("first", False)
    assert "Messages" not in sqs.receive_message(QueueUrl=queue)


def test_releasing_a_post_held_days_ago_leaves_the_content_unclaimed_for_a_new_request_sent_meanwhile(s3):
    # Monday's post is released on Friday; minutes later the customer sends the same short form for a new order.
    # Before the fix the release claimed the content (completed) for the double-submit window: Friday's post was
    # answered as a double submission of Monday's and nothing was queued for it — that request was lost. A release
    # claims only what a capture now could be a resend of (a post held within a day).
    from throughline.adapters.submission_claims import SubmissionClaims
    from throughline.capture.held import content_fingerprint, release

    dynamodb, sqs, queue = claims_table_and_queue()
    friday = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    claims = SubmissionClaims("claims", "secret", 600, client=dynamodb, clock=friday.timestamp)
    held(s3, "monday")  # 2026-11-30 10:00 UTC
    [post] = held_posts(s3, "data", Selection())
    released = release(s3, sqs, "data", queue, "secret", post, now=friday, claims=claims, index=RawIndex([]))
    assert (released.submission_id, released.queued) == ("monday", True)
    claim = claims.claim(content_fingerprint(post), "friday", (friday + timedelta(minutes=5)).isoformat())
    assert (claim.submission_id, claim.completed) == ("friday", False)  # the new post is a submission of its own

    # Held yesterday evening, released this morning: still claimed (the customer's resend now is the same request).
    evening = datetime(2026, 12, 3, 20, 0, tzinfo=UTC)
    held(s3, "evening", at=evening)
    [post] = held_posts(s3, "data", Selection(submission_ids=("evening",)))
    released = release(s3, sqs, "data", queue, "secret", post, now=friday, claims=claims, index=RawIndex([]))
    fingerprint = content_fingerprint(post)
    assert claims.claim(fingerprint, "resend", friday.isoformat()).submission_id == released.submission_id


def test_a_held_post_of_a_person_erased_after_it_arrived_is_deleted_not_queued(s3):
    # forget deletes held posts, but a release-held run that listed this one before (or a hold racing forget) must not
    # queue it: the erasure mark of its phone says the person was erased after the post arrived.
    from throughline.capture.held import release
    from throughline.person_keys import person_key

    sqs = boto3.client("sqs")
    s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
    queue = sqs.create_queue(QueueName="writes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    key = held(s3, "held-1")  # 2026-11-30 10:00 UTC
    [post] = held_posts(s3, "data", Selection())
    mark = {person_key("+79261110001", "secret"): datetime(2026, 11, 30, 10, 0, tzinfo=UTC)}  # the same instant
    released = release(s3, sqs, "data", queue, "secret", post, index=RawIndex([], mark))
    assert released.erased and not released.queued
    assert "Messages" not in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
    assert "Versions" not in s3.list_object_versions(Bucket="data", Prefix=key)  # every version
    assert not s3.list_objects_v2(Bucket="data", Prefix="raw/forms/").get("KeyCount")  # no raw copy put


def test_a_held_post_sent_after_the_erasure_is_released(s3):
    from throughline.capture.held import release
    from throughline.person_keys import person_key

    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName="writes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    held(s3, "held-1")  # 2026-11-30 10:00 UTC
    [post] = held_posts(s3, "data", Selection())
    mark = {person_key("+79261110001", "secret"): datetime(2026, 11, 30, 9, 59, tzinfo=UTC)}  # a minute before
    released = release(s3, sqs, "data", queue, "secret", post, index=RawIndex([], mark))
    assert released.queued and not released.erased
