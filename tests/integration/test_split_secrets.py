"""``split-secrets`` against moto's Secrets Manager: a stack from before «one secret per consumer» keeps every key in
the person-key secret; after the update and the command, each key is in its consumer's secret and the person key is
the very same value."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws

from throughline.config import load_settings
from throughline.operations import split_secrets as split_command
from throughline.secret_split import SplitRefused, split_secrets

REGION = "eu-central-1"
PERSON_KEY = "Kq7" * 21 + "x"  # 64 characters, as generated
WEBHOOK = "https://example.bitrix24.ru/rest/1/w3bh00ks3cr3t/"
OLD_SECRET = {
    "PERSON_KEY_SECRET": PERSON_KEY,
    "BITRIX24_WEBHOOK_URL": WEBHOOK,
    "BITRIX24_APP_TOKENS": "app-t0ken",
    "YANDEX_DIRECT_TOKEN": "y4ndex-t0ken",
    "VK_ADS_CLIENT_ID": "vk-id",
    "VK_ADS_CLIENT_SECRET": "vk-s3cret",
    "METRICA_TOKEN": "ym-t0ken",  # offline conversions
    "YANDEX_AUDIENCE_TOKEN": "ya-aud-t0ken",  # ad audiences
    "TELEGRAM_BOT_TOKEN": "123:tg-t0ken",
    "ALERT_EMAILS": "team@example.ru",
}


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, dict[str, str]]]:
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION), ("AWS_REGION", REGION)):  # fmt: skip
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    parameters.clear_caches()
    with mock_aws():
        client = boto3.client("secretsmanager", region_name=REGION)

        def create(name: str, value: dict) -> str:
            return client.create_secret(Name=name, SecretString=json.dumps(value))["ARN"]

        outputs = {
            "PersonKeySecretArn": create("Secrets-old", OLD_SECRET),  # the stack's one secret before the split
            "CrmSecretArn": create("CrmSecret-new", {}),
            "EventsSecretArn": create("EventsSecret-new", {}),
            "AdsSecretArn": create("AdsSecret-new", {}),
            "AlertsSecretArn": create("AlertsSecret-new", {}),
        }
        yield client, outputs
    parameters.clear_caches()


def _value(client: Any, arn: str) -> dict:
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])


def test_each_key_moves_to_its_consumers_secret_and_the_person_key_stays_the_same(stack, capsys) -> None:
    client, outputs = stack
    args = argparse.Namespace(stack_name="throughline-prod", dry_run=False)
    assert split_command(args, lambda name: outputs) == 0
    assert _value(client, outputs["PersonKeySecretArn"]) == {"PERSON_KEY_SECRET": PERSON_KEY}
    assert _value(client, outputs["CrmSecretArn"]) == {"BITRIX24_WEBHOOK_URL": WEBHOOK}
    assert _value(client, outputs["EventsSecretArn"]) == {"BITRIX24_APP_TOKENS": "app-t0ken"}
    assert _value(client, outputs["AdsSecretArn"]) == {
        "YANDEX_DIRECT_TOKEN": "y4ndex-t0ken", "VK_ADS_CLIENT_ID": "vk-id", "VK_ADS_CLIENT_SECRET": "vk-s3cret",
        "METRICA_TOKEN": "ym-t0ken", "YANDEX_AUDIENCE_TOKEN": "ya-aud-t0ken",
    }  # fmt: skip
    assert _value(client, outputs["AlertsSecretArn"]) == {
        "TELEGRAM_BOT_TOKEN": "123:tg-t0ken", "ALERT_EMAILS": "team@example.ru"
    }  # fmt: skip
    out = capsys.readouterr().out
    assert "moved BITRIX24_WEBHOOK_URL -> CrmSecretArn" in out
    assert "moved TELEGRAM_BOT_TOKEN -> AlertsSecretArn" in out
    for secret in (PERSON_KEY, "w3bh00ks3cr3t", "app-t0ken", "y4ndex-t0ken", "vk-s3cret", "ym-t0ken", "tg-t0ken",
                   "team@"):  # fmt: skip
        assert secret not in out  # names only, never values
    # What each function now loads with the SECRETS_ARN the template gives it.
    capture = load_settings({"SECRETS_ARN": outputs["PersonKeySecretArn"]})
    assert capture.person_key_secret == PERSON_KEY and capture.bitrix24_webhook_url is None
    assert capture.yandex_direct_token is None and capture.bitrix24_app_tokens == ()
    events = load_settings({"SECRETS_ARN": outputs["EventsSecretArn"]})
    assert events.bitrix24_app_tokens == ("app-t0ken",) and events.person_key_secret is None
    writer = load_settings({"SECRETS_ARN": f"{outputs['CrmSecretArn']},{outputs['PersonKeySecretArn']}"})
    assert (writer.bitrix24_webhook_url, writer.person_key_secret) == (WEBHOOK, PERSON_KEY)
    assert writer.vk_ads_client_secret is None and writer.telegram_bot_token is None
    conversions = load_settings({"SECRETS_ARN": f"{outputs['AdsSecretArn']},{outputs['CrmSecretArn']}"})
    assert (conversions.metrica_token, conversions.bitrix24_webhook_url) == ("ym-t0ken", WEBHOOK)
    segments = load_settings({"SECRETS_ARN": f"{outputs['AdsSecretArn']},{outputs['CrmSecretArn']},"
                                             f"{outputs['PersonKeySecretArn']}"})  # fmt: skip
    assert (segments.yandex_audience_token, segments.vk_ads_client_secret) == ("ya-aud-t0ken", "vk-s3cret")
    assert conversions.person_key_secret is None
    alerts = load_settings({"SECRETS_ARN": f"{outputs['CrmSecretArn']},{outputs['AlertsSecretArn']}"})
    assert (alerts.bitrix24_webhook_url, alerts.telegram_bot_token) == (WEBHOOK, "123:tg-t0ken")
    assert alerts.alert_emails == ("team@example.ru",) and alerts.person_key_secret is None
    # Again: nothing left to move, nothing changed.
    assert split_secrets(client, outputs).lines() == [
        "nothing to move: the person-key secret holds PERSON_KEY_SECRET only"
    ]
    assert _value(client, outputs["PersonKeySecretArn"]) == {"PERSON_KEY_SECRET": PERSON_KEY}


def test_a_dry_run_changes_nothing(stack) -> None:
    client, outputs = stack
    result = split_secrets(client, outputs, dry_run=True)
    assert "would move BITRIX24_APP_TOKENS -> EventsSecretArn" in result.lines()
    assert _value(client, outputs["PersonKeySecretArn"]) == OLD_SECRET
    assert _value(client, outputs["CrmSecretArn"]) == {}


def test_a_key_already_set_differently_in_its_new_secret_stops_before_anything_changes(stack) -> None:
    client, outputs = stack
    client.put_secret_value(SecretId=outputs["CrmSecretArn"], SecretString=json.dumps({"BITRIX24_WEBHOOK_URL": "x"}))
    with pytest.raises(SplitRefused, match="BITRIX24_WEBHOOK_URL differs"):
        split_secrets(client, outputs)
    assert _value(client, outputs["PersonKeySecretArn"]) == OLD_SECRET
    assert _value(client, outputs["EventsSecretArn"]) == {}


def test_a_key_copied_by_hand_already_is_just_removed_and_unknown_keys_stay(stack) -> None:
    client, outputs = stack
    crm = json.dumps({"BITRIX24_WEBHOOK_URL": WEBHOOK})
    client.put_secret_value(SecretId=outputs["CrmSecretArn"], SecretString=crm)
    client.put_secret_value(
        SecretId=outputs["PersonKeySecretArn"], SecretString=json.dumps({**OLD_SECRET, "MY_OWN_KEY": "mine"})
    )
    result = split_secrets(client, outputs)
    assert result.already_there == ["BITRIX24_WEBHOOK_URL"] and result.kept == ["MY_OWN_KEY"]
    assert _value(client, outputs["PersonKeySecretArn"]) == {"PERSON_KEY_SECRET": PERSON_KEY, "MY_OWN_KEY": "mine"}


def test_it_refuses_a_secret_without_the_person_key_or_a_stack_not_yet_updated(stack) -> None:
    client, outputs = stack
    no_key = json.dumps({"BITRIX24_APP_TOKENS": "t"})
    client.put_secret_value(SecretId=outputs["PersonKeySecretArn"], SecretString=no_key)
    with pytest.raises(SplitRefused, match="no PERSON_KEY_SECRET"):
        split_secrets(client, outputs)
    with pytest.raises(SplitRefused, match="deploy the updated template first"):
        split_secrets(client, {"PersonKeySecretArn": outputs["PersonKeySecretArn"]})
