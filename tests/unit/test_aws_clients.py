"""One boto3 session for every cached client: the second client reuses what the first one's loader read (the cold
start of capture_form builds four clients on its first call)."""

from __future__ import annotations

import pytest

from throughline.adapters import aws


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    aws.reset_clients()
    yield
    aws.reset_clients()


def test_clients_of_different_services_share_one_session_and_its_loader():
    s3, sqs, dynamodb = aws.client("s3"), aws.client("sqs"), aws.client("dynamodb")
    assert s3._loader is sqs._loader is dynamodb._loader
    assert aws.client("s3") is s3  # one client per service


def test_reset_forgets_the_session_too():
    before, session = aws.client("s3"), aws._session()
    aws.reset_clients()
    after = aws.client("s3")
    # The session itself (its endpoints, credentials and region) is built again; tests/conftest.py shares botocore's
    # data loader between the sessions of a test process, so the loader is not what tells them apart.
    assert after is not before and aws._session() is not session
