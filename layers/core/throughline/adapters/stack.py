"""A deployed stack's outputs (CloudFormation), for the operator commands' ``--stack-name``."""

from __future__ import annotations

from typing import Any


def stack_outputs(stack_name: str) -> dict[str, Any]:
    """``OutputKey → OutputValue`` of the stack (SecretsArn, DataBucketName, JourneyTableName, …)."""
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}
