"""Publishing the report: the dated folder first, then ``latest/``, which a failure at any write leaves as it was;
one run at a time."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from throughline.adapters.report_store import LOCK_KEY, REPORT_PREFIX, ReportBusy, S3Objects, publish, run_lock
from throughline.report.job import LOCK_LEASE, LOCK_MARGIN, lock_lease

BUCKET = "data"
NAMES = ("roi.json", "roi.csv", "index.html")


class Flaky:
    """An S3 client whose write of one key fails, as S3 or the network may at any of the report's writes."""

    def __init__(self, client, method: str, key: str):
        self._client, self._method, self._key = client, method, key

    def __getattr__(self, name):
        call = getattr(self._client, name)
        if name != self._method:
            return call

        def failing(**kwargs):
            if kwargs["Key"] == self._key:
                raise ConnectionError(f"{name} {kwargs['Key']} failed")
            return call(**kwargs)

        return failing


def files(run: str) -> dict[str, bytes]:
    return {name: f"{run} {name}".encode() for name in NAMES}


def latest(s3) -> dict[str, bytes]:
    return {name: s3.get_object(Bucket=BUCKET, Key=f"{REPORT_PREFIX}latest/{name}")["Body"].read() for name in NAMES}


@pytest.mark.parametrize(
    ("method", "name"),
    [("put_object", name) for name in NAMES] + [("copy_object", name) for name in NAMES],
)
def test_latest_is_the_previous_report_whichever_write_fails(method: str, name: str) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-central-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        publish(S3Objects(BUCKET, s3), date(2026, 11, 30), files("old"))
        failing_key = f"{REPORT_PREFIX}{'2026-12-01' if method == 'put_object' else 'latest'}/{name}"
        with pytest.raises(ConnectionError):
            publish(S3Objects(BUCKET, Flaky(s3, method, failing_key)), date(2026, 12, 1), files("new"))
        assert latest(s3) == files("old")
        publish(S3Objects(BUCKET, s3), date(2026, 12, 1), files("new"))  # the retry publishes all three
        assert latest(s3) == files("new")


# ---- one run at a time ------------------------------------------------------------------------------------------

NOW = datetime(2026, 12, 1, 5, 0, tzinfo=ZoneInfo("Europe/Moscow"))
LEASE = timedelta(minutes=20)


class Blind:
    """A client that does not see the lock yet: the other run read before this one wrote."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        if name == "get_object":

            def missing(**kwargs):
                raise self._client.exceptions.NoSuchKey({"Error": {"Code": "NoSuchKey"}}, "GetObject")

            return missing
        return getattr(self._client, name)


def test_a_second_run_waits_for_the_first_and_a_crashed_runs_lease_runs_out() -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-central-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        objects = S3Objects(BUCKET, s3)
        with run_lock(objects, "first", NOW, LEASE):
            later = NOW + timedelta(minutes=5)
            with pytest.raises(ReportBusy, match="first"), run_lock(objects, "second", later, LEASE):
                pass
            blind = S3Objects(BUCKET, Blind(s3))  # both saw no lock: S3's conditional write lets one win
            with pytest.raises(ReportBusy, match="same moment"), run_lock(blind, "third", NOW, LEASE):
                pass
        with run_lock(objects, "after", NOW + timedelta(minutes=6), LEASE):  # released: free again
            pass

        crashed = {"owner": "crashed", "since": NOW.isoformat(), "until": (NOW + LEASE).isoformat()}
        s3.put_object(Bucket=BUCKET, Key=LOCK_KEY, Body=json.dumps(crashed).encode())  # taken, never released
        with pytest.raises(ReportBusy), run_lock(objects, "too early", NOW + timedelta(minutes=19), LEASE):
            pass
        with run_lock(objects, "later", NOW + timedelta(minutes=21), LEASE):
            held = json.loads(s3.get_object(Bucket=BUCKET, Key=LOCK_KEY)["Body"].read())
            assert held["owner"] == "later"


def test_the_lease_ends_soon_after_the_invocation_must_have() -> None:
    assert lock_lease(float("inf")) == LOCK_LEASE  # the CLI: no deadline
    assert lock_lease(840.0) == timedelta(seconds=840) + LOCK_MARGIN  # Lambda: 14 min left → free 2 min after
    assert lock_lease(-5.0) == LOCK_MARGIN
    assert lock_lease(10_000.0) == LOCK_LEASE
