"""In-process moto DynamoDB tables for the unit and integration tests of the adapters that keep one item per string
key (the alerts ledger, locks, rate limits): the tables the SAM template declares, keyed by ``id``, on demand."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import pytest
from moto import mock_aws


@contextmanager
def id_keyed_table(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[Any]:
    """A DynamoDB client in moto (no local stack's endpoint, a fixed region) with a table ``name`` keyed by the
    string attribute ``id``; everything is gone when the block ends."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName=name,
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield client
