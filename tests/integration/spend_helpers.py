"""Shared pieces of the spend integration tests: a moto bucket, deadlines, reading what was stored."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import boto3
import pytest
from moto import mock_aws

from throughline.adapters.spend_store import SpendStore
from throughline.config import load_settings

NOW = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)  # 03:30 in Moscow
BUCKET = "spend-test-bucket"


class Clock:
    """A deadline that runs out after a number of checks, or never."""

    def __init__(self, seconds: float = 900.0, checks_allowed: int | None = None):
        self.seconds = seconds
        self.checks_allowed = checks_allowed

    def seconds_left(self) -> float:
        if self.checks_allowed is None:
            return self.seconds
        self.checks_allowed -= 1
        return self.seconds if self.checks_allowed >= 0 else 0.0


@pytest.fixture
def store() -> Iterator[SpendStore]:
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-central-1")
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield SpendStore(BUCKET, client=s3)


def settings(**environ: str):
    return load_settings({"DATA_BUCKET": BUCKET, **environ}, fetch_secret=lambda arn: {})


def stored_rows(store: SpendStore, platform: str) -> list[dict]:
    rows = []
    for key in sorted(store.keys(f"spend/platform={platform}/")):
        body = store.get_bytes(key) or b""
        for line in gzip.decompress(body).decode().splitlines():
            rows.append(json.loads(line, parse_float=Decimal))
    return rows


def stored_objects(store: SpendStore, prefix: str = "spend/platform=") -> dict[str, bytes]:
    return {key: store.get_bytes(key) or b"" for key in sorted(store.keys(prefix))}


def total(rows: list[dict], account: str | None = None) -> Decimal:
    return sum((row["cost"] for row in rows if account is None or row["account_id"] == account), Decimal(0))


def days(first: str, last: str) -> tuple[date, date]:
    return date.fromisoformat(first), date.fromisoformat(last)
