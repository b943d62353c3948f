"""A deployed stack's outputs (CloudFormation), for the operator commands' ``--stack-name``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def stack_outputs(stack_name: str) -> dict[str, Any]:
    """``OutputKey → OutputValue`` of the stack (SecretsArn, DataBucketName, JourneyTableName, …)."""
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


# A deployed stack's outputs → the settings the functions read from their environment.
STACK_SETTINGS = {
    "SecretsArn": "SECRETS_ARN",
    "DataBucketName": "DATA_BUCKET",
    "JourneyTableName": "JOURNEY_TABLE",
    "WritesQueueUrl": "WRITES_QUEUE_URL",
    "ConversionsTableName": "CONVERSIONS_TABLE",
}


def use_stack(outputs: Mapping[str, Any], *names: str) -> None:
    """Point this process's settings at a deployed stack: each named output (``SecretsArn``, ``DataBucketName``,
    ``JourneyTableName``) fills its setting, unless the environment already holds one."""
    for name in names:
        os.environ.setdefault(STACK_SETTINGS[name], str(outputs[name]))
