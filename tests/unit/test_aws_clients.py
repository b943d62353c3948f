"""One boto3 session for every cached client: the second client reuses what the first one's loader read (the cold
start of capture_form builds four clients on its first call)."""

from __future__ import annotations

import pytest
from botocore.exceptions import DataNotFoundError, UnknownServiceError
from botocore.loaders import Loader

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


SERVICES = ("secretsmanager", "dynamodb", "s3", "sqs")


@pytest.mark.parametrize("type_name", ["service-2", "endpoint-rule-set-1", "paginators-1"])
def test_the_model_loader_loads_what_botocores_loads_without_scanning_every_service(type_name, monkeypatch):
    expected = {service: Loader().load_service_model(service, type_name) for service in SERVICES}

    def scan(self, kind):
        raise AssertionError(f"every service's folder scanned for {kind}")

    monkeypatch.setattr(Loader, "list_available_services", scan)
    ours = aws.ModelLoader()
    assert {service: ours.load_service_model(service, type_name) for service in SERVICES} == expected


def test_a_service_botocore_does_not_know_still_raises_its_error():
    with pytest.raises(UnknownServiceError, match="no-such-service"):
        aws.ModelLoader().load_service_model("no-such-service", "service-2")
    with pytest.raises(DataNotFoundError):
        aws.ModelLoader().load_service_model("sqs", "service-2", api_version="1999-01-01")


def test_the_session_of_the_clients_uses_the_model_loader():
    assert isinstance(aws._session().get_component("data_loader"), aws.ModelLoader)
    assert aws.client("sqs").meta.service_model.service_name == "sqs"
