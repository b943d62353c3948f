"""release-held against a bucket another run is releasing from at the same time (moto in-process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from throughline.capture.forms import parse_submission
from throughline.capture.held import Selection, held_posts


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield client


def held(s3, submission_id: str) -> str:
    key = f"raw/held/date=2026-11-30/form=contact/{submission_id}.json"
    submission = parse_submission(
        "contact",
        {"name": "Анна", "phone": "+79261110001"},
        submission_id=submission_id,
        received_at=datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
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
