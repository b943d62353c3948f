"""``python -m throughline conversions --stack-name``: the counter, goals and conversion action are the stack's
parameters (template.yaml gives them to upload_conversions' environment), read with describe_stacks like its outputs."""

from __future__ import annotations

import argparse
import io
import json
from datetime import date

import boto3
import pytest
from moto import mock_aws

from throughline.adapters.stack import CONVERSIONS_PARAMETERS

REGION = "eu-central-1"
SETTINGS = (*CONVERSIONS_PARAMETERS.values(), "SECRETS_ARN", "DATA_BUCKET", "JOURNEY_TABLE", "CONVERSIONS_TABLE")


def test_the_stacks_parameters_configure_the_command(monkeypatch) -> None:
    from throughline.config import reset_settings_cache
    from throughline.conversions import cli, run

    for name in SETTINGS:  # absent now, and absent again after the test whatever the command sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("VK_ADS_GOAL", "from_the_environment")  # the environment still wins
    seen = {}

    def execute(settings, **kwargs):
        seen["settings"] = settings
        return run.RunResult(kwargs["date_from"], kwargs["date_to"], [], {}, True)

    monkeypatch.setattr(run, "execute", execute)
    with mock_aws():
        secret = boto3.client("secretsmanager").create_secret(Name="ads", SecretString=json.dumps({}))["ARN"]
        parameters = {"MetricaCounterId": "98765432", "MetricaGoal": "deal_won,deal_qualified",
                      "GoogleAdsConversionAction": "customers/1234567890/conversionActions/555",
                      "GoogleAdsLoginCustomerId": "",
                      "VkAdsPixelId": "3330001", "VkAdsGoal": "deal_won", "ConversionQualifiedStages": "QUAL",
                      "TimeZone": "Asia/Yekaterinburg", "ReportCurrency": "RUB"}  # fmt: skip
        template = {
            "Parameters": {name: {"Type": "String", "Default": ""} for name in parameters},
            "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
            "Outputs": {"SecretsArn": {"Value": secret}, "DataBucketName": {"Value": "data"},
                        "JourneyTableName": {"Value": "journey"}, "ConversionsTableName": {"Value": "ledger"}},
        }  # fmt: skip
        boto3.client("cloudformation").create_stack(
            StackName="throughline-prod",
            TemplateBody=json.dumps(template),
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in parameters.items()],
        )
        reset_settings_cache()
        args = argparse.Namespace(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30), dry_run=True,
                                  stack_name="throughline-prod")  # fmt: skip
        assert cli.run(args, io.StringIO()) == 0
    settings = seen["settings"]
    assert settings.metrica_counter_id == "98765432"
    assert settings.metrica_goal == ("deal_won", "deal_qualified")
    assert settings.google_ads_conversion_action and settings.vk_ads_pixel_id == "3330001"
    assert settings.conversion_qualified_stages == ("QUAL",)
    assert settings.vk_ads_goal == ("from_the_environment",)
    assert settings.timezone == "Asia/Yekaterinburg" and settings.conversions_table == "ledger"
    assert settings.google_ads_login_customer_id in (None, "")  # an empty parameter sets nothing


@pytest.mark.parametrize("value", ["", "****"])
def test_an_empty_or_hidden_parameter_sets_nothing(monkeypatch, value) -> None:
    from throughline.adapters.stack import use_parameters

    monkeypatch.setenv("METRICA_COUNTER_ID", "")
    monkeypatch.delenv("METRICA_COUNTER_ID")
    use_parameters({"MetricaCounterId": value}, {"MetricaCounterId": "METRICA_COUNTER_ID"})
    import os

    assert "METRICA_COUNTER_ID" not in os.environ
