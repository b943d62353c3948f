"""A deployed stack's outputs and parameters (CloudFormation), for the operator commands' ``--stack-name``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def describe_stack(stack_name: str) -> dict[str, Any]:
    """The stack as CloudFormation describes it (its ``Outputs`` and ``Parameters``)."""
    import boto3

    return boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"][0]


def stack_outputs(stack_name: str) -> dict[str, Any]:
    """``OutputKey → OutputValue`` of the stack (SecretsArn, DataBucketName, JourneyTableName, …)."""
    return {output["OutputKey"]: output["OutputValue"] for output in describe_stack(stack_name).get("Outputs", [])}


def stack_parameters(stack: Mapping[str, Any]) -> dict[str, str]:
    """``ParameterKey → ParameterValue`` of a described stack (the values the deploy gave, or their defaults)."""
    return {
        str(parameter["ParameterKey"]): str(parameter.get("ResolvedValue") or parameter.get("ParameterValue") or "")
        for parameter in stack.get("Parameters", [])
    }


# The stack's parameters upload_conversions reads from its environment (template.yaml), for the conversions command.
CONVERSIONS_PARAMETERS = {
    "MetricaCounterId": "METRICA_COUNTER_ID",
    "MetricaGoal": "METRICA_GOAL",
    "GoogleAdsConversionAction": "GOOGLE_ADS_CONVERSION_ACTION",
    "GoogleAdsLoginCustomerId": "GOOGLE_ADS_LOGIN_CUSTOMER_ID",
    "VkAdsPixelId": "VK_ADS_PIXEL_ID",
    "VkAdsGoal": "VK_ADS_GOAL",
    "ConversionQualifiedStages": "CONVERSION_QUALIFIED_STAGES",
    "TimeZone": "TIMEZONE",
    "ReportCurrency": "REPORT_CURRENCY",
}


def use_parameters(parameters: Mapping[str, str], settings: Mapping[str, str]) -> None:
    """Fill each setting from its stack parameter (``ParameterKey → SETTING``), unless the environment already holds
    it; an empty parameter (the feature off) or a NoEcho one (``****``) sets nothing."""
    for name, setting in settings.items():
        value = parameters.get(name) or ""
        if value and value != "****":
            os.environ.setdefault(setting, value)


# A deployed stack's outputs → the settings the functions read from their environment.
STACK_SETTINGS = {
    "SecretsArn": "SECRETS_ARN",
    "DataBucketName": "DATA_BUCKET",
    "JourneyTableName": "JOURNEY_TABLE",
    "WritesQueueUrl": "WRITES_QUEUE_URL",
    "IdempotencyTableName": "IDEMPOTENCY_TABLE",
    "ConversionsTableName": "CONVERSIONS_TABLE",
}


def use_stack(outputs: Mapping[str, Any], *names: str) -> None:
    """Point this process's settings at a deployed stack: each named output (``SecretsArn``, ``DataBucketName``,
    ``JourneyTableName``) fills its setting, unless the environment already holds one."""
    for name in names:
        os.environ.setdefault(STACK_SETTINGS[name], str(outputs[name]))
