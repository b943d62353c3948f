"""template.yaml is the one description of the bundle: the local stack builds from it, and its promises (least
privilege, retention, alarms, FIFO with a DLQ, concurrency cap) are checked here."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]
FUNCTIONS = {name: r for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}


def _statements(function: str) -> list[dict]:
    return [s for policy in FUNCTIONS[function]["Properties"].get("Policies", []) for s in policy.get("Statement", [])]


def _actions(function: str) -> set[str]:
    actions: set[str] = set()
    for statement in _statements(function):
        value = statement["Action"]
        actions |= {value} if isinstance(value, str) else set(value)
    return actions


def test_every_function_has_its_own_log_group_with_retention():
    for name, function in FUNCTIONS.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup", name
        assert RESOURCES[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_capture_form_may_only_write_raw_copies_enqueue_and_guard_double_submits():
    assert _actions("CaptureFormFunction") == {
        "s3:PutObject",
        "sqs:SendMessage",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    }
    resources = [s["Resource"] for s in _statements("CaptureFormFunction")]
    assert {"Fn::Sub": "${DataBucket.Arn}/raw/*"} in resources  # not the whole bucket
    assert all(resource != "*" for resource in resources)


def test_writer_reads_the_secret_and_the_journey_store_and_writes_only_deletion_markers_to_the_bucket():
    actions = _actions("BitrixWriterFunction")
    assert "secretsmanager:GetSecretValue" in actions
    s3 = [s for s in _statements("BitrixWriterFunction") if str(s["Action"]).startswith("s3:")]
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:PutObject", {"Fn::Sub": "${DataBucket.Arn}/crm/deleted/*"})
    ]
    assert all(statement["Resource"] != "*" for statement in _statements("BitrixWriterFunction"))
    assert "secretsmanager:GetSecretValue" not in _actions("CaptureFormFunction")


def test_events_receiver_may_only_read_the_secret_and_enqueue():
    assert _actions("BitrixEventsFunction") == {"secretsmanager:GetSecretValue", "sqs:SendMessage"}
    resources = [s["Resource"] for s in _statements("BitrixEventsFunction")]
    assert resources == [{"Ref": "Secrets"}, {"Fn::GetAtt": ["WritesQueue", "Arn"]}]
    [event] = FUNCTIONS["BitrixEventsFunction"]["Properties"]["Events"].values()
    assert (event["Properties"]["Method"], event["Properties"]["Path"]) == ("POST", "/v1/bitrix/events")


def test_the_sweep_runs_on_a_schedule():
    [event] = FUNCTIONS["JourneySweepFunction"]["Properties"]["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert not any(action.startswith("sqs:") for action in _actions("JourneySweepFunction"))


def test_writer_consumes_the_fifo_queue_with_partial_failures_and_a_concurrency_cap():
    event = FUNCTIONS["BitrixWriterFunction"]["Properties"]["Events"]["Writes"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["BatchSize"] == 10
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WriterMaxConcurrency"}
    queue = RESOURCES["WritesQueue"]["Properties"]
    assert queue["FifoQueue"] is True
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["WritesDeadLetterQueue", "Arn"]}
    assert queue["VisibilityTimeout"] >= 6 * FUNCTIONS["BitrixWriterFunction"]["Properties"]["Timeout"]
    assert RESOURCES["WritesDeadLetterQueue"]["Properties"]["FifoQueue"] is True


def test_bucket_is_encrypted_private_versioned_and_tls_only():
    bucket = RESOURCES["DataBucket"]["Properties"]
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"]["Status"] == "Enabled"
    policy = RESOURCES["DataBucketTlsOnly"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert policy["Effect"] == "Deny"
    assert policy["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_alarms_watch_the_dead_letter_queue_the_backlog_and_every_function():
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    watched = {(a["MetricName"], str(a["Dimensions"][0]["Value"])) for a in alarms}
    dead_letters = str({"Fn::GetAtt": ["WritesDeadLetterQueue", "QueueName"]})
    assert ("ApproximateNumberOfMessagesVisible", dead_letters) in watched
    assert ("ApproximateAgeOfOldestMessage", str({"Fn::GetAtt": ["WritesQueue", "QueueName"]})) in watched
    for name in FUNCTIONS:
        assert ("Errors", str({"Ref": name})) in watched


def test_idempotency_table_expires_records():
    table = RESOURCES["IdempotencyTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


def test_layer_is_built_by_sam_for_python313_arm64_with_the_same_pins_as_development():
    layer = RESOURCES["CoreLayer"]
    assert layer["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert TEMPLATE["Globals"]["Function"]["Runtime"] == "python3.13"
    assert TEMPLATE["Globals"]["Function"]["Architectures"] == ["arm64"]

    def pins(path: Path) -> set[str]:
        lines = path.read_text().splitlines()
        return {line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))}

    assert pins(ROOT / "layers/core/requirements.txt") == pins(ROOT / "requirements.txt")


@pytest.mark.parametrize("name", ["capture_form", "bitrix_writer"])
def test_every_handler_named_in_design_exists(name):
    assert (ROOT / "functions" / name / "app.py").exists()
    assert any(f["Properties"]["CodeUri"] == f"functions/{name}/" for f in FUNCTIONS.values())


def test_local_stack_builds_the_template_resources(stack):
    resources = stack.resources
    session = boto3.session.Session()
    sqs = session.client("sqs")
    queue = sqs.get_queue_attributes(QueueUrl=resources.physical["WritesQueue"], AttributeNames=["All"])["Attributes"]
    assert queue["FifoQueue"] == "true"
    assert '"maxReceiveCount": 10' in queue["RedrivePolicy"]
    assert resources.physical["WritesDeadLetterQueue"].endswith(".fifo")
    dynamodb = session.client("dynamodb")
    keys = dynamodb.describe_table(TableName=resources.physical["JourneyTable"])["Table"]["KeySchema"]
    assert keys == [{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "touch", "KeyType": "RANGE"}]
    s3 = session.client("s3")
    assert s3.get_bucket_versioning(Bucket=resources.physical["DataBucket"])["Status"] == "Enabled"

    capture_env = resources.functions["capture_form"].environment
    assert capture_env["DATA_BUCKET"] == resources.physical["DataBucket"]
    assert capture_env["WRITES_QUEUE_URL"] == resources.physical["WritesQueue"]
    assert capture_env["TIMEZONE"] == "Europe/Moscow"
    writer_env = resources.functions["bitrix_writer"].environment
    assert writer_env["SECRETS_ARN"].startswith("arn:aws:secretsmanager:")
    assert writer_env["BITRIX24_JOURNEY_FIELD"] == "UF_CRM_CUSTOMER_JOURNEY"
    [source] = resources.queue_sources
    assert (source.function, source.batch_size, source.maximum_concurrency) == ("bitrix_writer", 10, 2)
    assert {(route.method, route.path) for route in resources.routes} >= {
        ("POST", "/v1/forms/{form_id}/submissions"),
        ("OPTIONS", "/v1/forms/{form_id}/submissions"),
    }
