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


# Managed policies SAM attaches to a function's generated role (none when the function names its own Role), and
# the ones AWS defines with "Resource": "*" — which would reach every queue, stream, table or log group of the account.
SAM_EVENT_POLICIES = {
    "SQS": "AWSLambdaSQSQueueExecutionRole",
    "Kinesis": "AWSLambdaKinesisExecutionRole",
    "DynamoDB": "AWSLambdaDynamoDBExecutionRole",
    "MQ": "AWSLambdaMQExecutionRole",
}
ALL_RESOURCES_POLICIES = {
    "AWSLambdaSQSQueueExecutionRole",
    "AWSLambdaKinesisExecutionRole",
    "AWSLambdaDynamoDBExecutionRole",
    "AWSLambdaMQExecutionRole",
    "AWSLambdaBasicExecutionRole",
    "AWSLambdaExecute",
    "AWSXrayWriteOnlyAccess",
    "AWSXRayDaemonWriteAccess",
    "AmazonSQSFullAccess",
    "AmazonDynamoDBFullAccess",
    "AmazonS3FullAccess",
    "SecretsManagerReadWrite",
}


def _role(function: str) -> dict | None:
    role = FUNCTIONS[function]["Properties"].get("Role")
    if role is None:
        return None
    assert role == {"Fn::GetAtt": [role["Fn::GetAtt"][0], "Arn"]}, "a function's role is a role of this template"
    return RESOURCES[role["Fn::GetAtt"][0]]


def _statements(function: str) -> list[dict]:
    role = _role(function)
    if role is not None:
        documents = [policy["PolicyDocument"] for policy in role["Properties"].get("Policies", [])]
    else:
        documents = [p for p in FUNCTIONS[function]["Properties"].get("Policies", []) if isinstance(p, dict)]
    return [statement for document in documents for statement in document.get("Statement", [])]


def _managed_policies(function: str) -> set[str]:
    """Managed policies on the function's role: named ones, and the ones SAM adds to a role it generates."""
    props = FUNCTIONS[function]["Properties"]
    role = _role(function)
    if role is not None:
        return {str(arn).rsplit("/", 1)[-1] for arn in role["Properties"].get("ManagedPolicyArns", [])}
    names = {policy for policy in props.get("Policies", []) if isinstance(policy, str)}
    names.add("AWSLambdaBasicExecutionRole")
    if props.get("Tracing", TEMPLATE["Globals"]["Function"].get("Tracing")) == "Active":
        names.add("AWSXrayWriteOnlyAccess")
    for event in props.get("Events", {}).values():
        if event["Type"] in SAM_EVENT_POLICIES:
            names.add(SAM_EVENT_POLICIES[event["Type"]])
    return names


# What every function's own role grants beside its work: its log group, and X-Ray (which has no resources).
RUNTIME_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def _actions(function: str) -> set[str]:
    """The actions the function's code needs: every action of its role but its logging and tracing."""
    actions: set[str] = set()
    for statement in _statements(function):
        value = statement["Action"]
        actions |= {value} if isinstance(value, str) else set(value)
    return actions - RUNTIME_ACTIONS


def _resources(value: object) -> list:
    return value if isinstance(value, list) else [value]


def test_every_function_has_its_own_log_group_with_retention():
    for name, function in FUNCTIONS.items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert RESOURCES[group]["Type"] == "AWS::Logs::LogGroup", name
        assert RESOURCES[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_capture_form_may_only_write_raw_copies_enqueue_guard_double_submits_and_read_the_person_key():
    assert _actions("CaptureFormFunction") == {
        "secretsmanager:GetSecretValue",
        "s3:PutObject",
        "sqs:SendMessage",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",  # no DeleteItem since issue 15 #9: nothing on the capture path deletes
    }
    resources = [s["Resource"] for s in _statements("CaptureFormFunction") if s["Sid"] != "Traces"]
    assert {"Fn::Sub": "${DataBucket.Arn}/raw/*"} in resources  # not the whole bucket
    assert all(resource != "*" for resource in resources)
    [secret_read] = [s for s in _statements("CaptureFormFunction") if s["Action"] == "secretsmanager:GetSecretValue"]
    assert secret_read["Resource"] == {"Ref": "Secrets"}  # the person-key secret, no other
    environment = FUNCTIONS["CaptureFormFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["SECRETS_ARN"] == {"Ref": "Secrets"}


def test_form_builders_post_to_the_capture_function_one_route_each_without_a_preflight():
    events = FUNCTIONS["CaptureFormFunction"]["Properties"]["Events"]
    routes = {(e["Properties"]["Method"], e["Properties"]["Path"]) for e in events.values() if e["Type"] == "HttpApi"}
    hooks = {route for route in routes if route[1].startswith("/v1/hooks/")}
    # A builder's server posts, not a browser: no OPTIONS route, so no CORS answer either.
    assert hooks == {
        ("POST", "/v1/hooks/tilda/{form_id}"),
        ("POST", "/v1/hooks/elementor/{form_id}"),
        ("POST", "/v1/hooks/json/{form_id}"),
    }
    environment = FUNCTIONS["CaptureFormFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["FORM_FIELD_MAPS"] == {"Ref": "FormFieldMaps"}
    assert environment["FORM_LABEL_ALIASES"] == {"Ref": "FormLabelAliases"}


def test_the_person_key_is_generated_on_deploy_with_no_manual_step():
    secret = RESOURCES["Secrets"]["Properties"]
    assert "SecretString" not in secret  # CloudFormation allows one of the two
    assert secret["GenerateSecretString"] == {
        "SecretStringTemplate": "{}",
        "GenerateStringKey": "PERSON_KEY_SECRET",
        "PasswordLength": 64,
        "ExcludePunctuation": True,
    }


def test_the_local_stack_generates_the_person_key_and_puts_the_sandbox_webhook_and_token_in_their_secrets(
    make_stack,
):
    import json

    stack = make_stack(poll_queues=False)
    client = boto3.client("secretsmanager")

    def secret(logical_id: str) -> dict:
        return json.loads(client.get_secret_value(SecretId=stack.resources.physical[logical_id])["SecretString"])

    assert secret("CrmSecret") == {"BITRIX24_WEBHOOK_URL": stack.sandbox.webhook_url}
    assert secret("EventsSecret") == {"BITRIX24_APP_TOKENS": stack.sandbox.app_token}
    assert secret("AdsSecret") == {}
    assert secret("AlertsSecret") == {}
    person = secret("Secrets")
    assert list(person) == ["PERSON_KEY_SECRET"]  # the public capture function's secret holds nothing else
    key = person["PERSON_KEY_SECRET"]
    assert len(key) == 64 and key.isalnum()  # generated as the template says: 64 characters, no punctuation
    # Locally the functions share one process, which reads every secret.
    arns = stack.resources.environment()["SECRETS_ARN"].split(",")
    assert sorted(arns) == sorted(stack.resources.physical[s] for s in ("CrmSecret", "EventsSecret", "AdsSecret",
                                                                         "AlertsSecret", "Secrets"))  # fmt: skip
    from throughline.config import get_settings

    settings = get_settings()
    assert settings.person_key_secret == key and settings.bitrix24_webhook_url == stack.sandbox.webhook_url


def test_writer_reads_the_secret_and_the_journey_store_and_writes_only_deletion_markers_and_raw_copies():
    actions = _actions("BitrixWriterFunction")
    assert "secretsmanager:GetSecretValue" in actions
    s3 = [s for s in _statements("BitrixWriterFunction") if str(s["Action"]).startswith("s3:")]
    assert [(s["Action"], s["Resource"]) for s in s3] == [
        ("s3:PutObject", {"Fn::Sub": "${DataBucket.Arn}/crm/deleted/*"}),
        ("s3:PutObject", {"Fn::Sub": "${DataBucket.Arn}/raw/forms/*"}),  # the raw copies queued with the forms
        # the raw copy of a post whose person was erased after it was received (privacy.erasure), every version
        ("s3:DeleteObjectVersion", {"Fn::Sub": "${DataBucket.Arn}/raw/forms/*"}),
        ("s3:ListBucketVersions", {"Fn::GetAtt": ["DataBucket", "Arn"]}),
        ("s3:GetObject", {"Fn::Sub": "${DataBucket.Arn}/config/alerts.realtime.json"}),  # real-time alert rules
    ]
    # Listing versions is confined to the raw copies (the bucket also holds snapshots and the CRM copy).
    [listing] = [s for s in s3 if s["Action"] == "s3:ListBucketVersions"]
    assert listing.get("Condition") == {"StringLike": {"s3:prefix": "raw/forms/*"}}
    for statement in _statements("BitrixWriterFunction"):
        if statement["Resource"] == "*":  # only X-Ray, which has no resource-level permissions
            assert set(statement["Action"]) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_events_receiver_may_only_read_the_application_tokens_and_enqueue():
    assert _actions("BitrixEventsFunction") == {"secretsmanager:GetSecretValue", "sqs:SendMessage"}
    resources = [s["Resource"] for s in _statements("BitrixEventsFunction") if s["Sid"] not in ("OwnLogs", "Traces")]
    assert resources == [{"Ref": "EventsSecret"}, {"Fn::GetAtt": ["WritesQueue", "Arn"]}]
    [event] = FUNCTIONS["BitrixEventsFunction"]["Properties"]["Events"].values()
    assert (event["Properties"]["Method"], event["Properties"]["Path"]) == ("POST", "/v1/bitrix/events")


def test_the_sweep_runs_on_a_schedule():
    [event] = FUNCTIONS["JourneySweepFunction"]["Properties"]["Events"].values()
    assert event["Type"] == "ScheduleV2"
    assert not any(action.startswith("sqs:") for action in _actions("JourneySweepFunction"))


def test_writer_role_names_its_own_queue_log_group_secret_and_tables():
    resources = {}
    for statement in _statements("BitrixWriterFunction"):
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        for action in actions:
            # The alerts ledger is the only other table it writes (real-time alerts); checked below.
            if statement["Resource"] != {"Fn::GetAtt": ["AlertsTable", "Arn"]}:
                resources[action] = statement["Resource"]
    queue = {"Fn::GetAtt": ["WritesQueue", "Arn"]}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"):
        assert resources[action] == queue
    assert resources["logs:PutLogEvents"] == {"Fn::GetAtt": ["BitrixWriterLogs", "Arn"]}
    assert "logs:CreateLogGroup" not in resources  # the template creates it, with retention
    assert resources["secretsmanager:GetSecretValue"] == [{"Ref": "CrmSecret"}, {"Ref": "Secrets"}]
    assert resources["dynamodb:Query"] == {"Fn::GetAtt": ["JourneyTable", "Arn"]}
    assert resources["dynamodb:DeleteItem"] == {"Fn::GetAtt": ["WriterLocksTable", "Arn"]}
    assert not any(action.endswith(":*") or action == "*" for action in resources)
    alerts_table = {"Fn::GetAtt": ["AlertsTable", "Arn"]}
    [ledger] = [s for s in _statements("BitrixWriterFunction") if s["Resource"] == alerts_table]
    assert sorted(ledger["Action"]) == ["dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]


def test_the_writer_carries_no_managed_policy():
    # SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole: receive and delete on every queue in the account.
    assert _managed_policies("BitrixWriterFunction") == set()


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_no_function_carries_a_managed_policy_for_every_queue_table_or_bucket(function):
    # Every function has its own role: not even Lambda's basic logging policy (logs on every log group).
    assert _managed_policies(function) == set()
    assert FUNCTIONS[function]["Properties"].get("Policies") is None  # SAM would generate a role with them


def test_locks_table_expires_leases():
    table = RESOURCES["WriterLocksTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    env = FUNCTIONS["BitrixWriterFunction"]["Properties"]["Environment"]["Variables"]
    assert env["LOCKS_TABLE"] == {"Ref": "WriterLocksTable"}


def test_alarm_topic_uses_a_key_cloudwatch_may_use():
    topic = RESOURCES["AlarmTopic"]["Properties"]
    # The AWS-managed aws/sns key's policy cannot admit CloudWatch: alarms would never be delivered.
    assert topic["KmsMasterKeyId"] == {"Ref": "AlarmTopicKey"}
    key = RESOURCES["AlarmTopicKey"]
    assert key["Type"] == "AWS::KMS::Key" and key["Properties"]["EnableKeyRotation"] is True
    assert key.get("Condition") == RESOURCES["AlarmTopic"].get("Condition")
    statements = key["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in statements if s["Principal"].get("Service") == "cloudwatch.amazonaws.com"]
    assert len(cloudwatch) == 1
    assert set(cloudwatch[0]["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch[0]["Effect"] == "Allow"


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
    watched = {(a["MetricName"], str(a["Dimensions"][0]["Value"])) for a in alarms if "MetricName" in a}
    dead_letters = str({"Fn::GetAtt": ["WritesDeadLetterQueue", "QueueName"]})
    assert ("ApproximateNumberOfMessagesVisible", dead_letters) in watched
    assert ("ApproximateAgeOfOldestMessage", str({"Fn::GetAtt": ["WritesQueue", "QueueName"]})) in watched
    for name in FUNCTIONS:
        assert ("Errors", str({"Ref": name})) in watched


def test_a_moved_portal_alarms_from_every_function_that_meets_it():
    alarm = RESOURCES["PortalMovedAlarm"]["Properties"]
    stats = [m["MetricStat"]["Metric"] for m in alarm["Metrics"] if "MetricStat" in m]
    assert {m["MetricName"] for m in stats} == {"PortalMoved"} and {m["Namespace"] for m in stats} == {"Throughline"}
    services = {m["Dimensions"][0]["Value"] for m in stats}
    names = {
        name: f["Properties"].get("Environment", {}).get("Variables", {}).get("POWERTOOLS_SERVICE_NAME")
        for name, f in FUNCTIONS.items()
    }
    # Every function whose Bitrix24Client may meet the redirect (app_report's app.info check uses no such client).
    expected = {names[f] for f in ("BitrixEventsFunction", "BitrixWriterFunction", "JourneySweepFunction",
                                    "BuildRoiReportFunction", "CheckAlertsFunction",
                                    "SendDigestsFunction", "BuildSegmentsFunction")}  # fmt: skip
    assert services == expected and None not in expected
    [expression] = [m["Expression"] for m in alarm["Metrics"] if m.get("ReturnData")]
    assert all(m["Id"] in expression for m in alarm["Metrics"] if "MetricStat" in m)
    assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"


def test_idempotency_table_expires_records():
    table = RESOURCES["IdempotencyTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]


HEAVY = ("numpy", "pydantic", "orjson")


def pins(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith(("#", "-r"))}


def test_layers_are_built_by_sam_for_python313_arm64_with_the_same_pins_as_development():
    for name in ("CoreLayer", "AnalyticsLayer"):
        assert RESOURCES[name]["Metadata"] == {"BuildMethod": "python3.13", "BuildArchitecture": "arm64"}
    assert TEMPLATE["Globals"]["Function"]["Runtime"] == "python3.13"
    assert TEMPLATE["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert TEMPLATE["Globals"]["Function"]["Layers"] == [{"Ref": "CoreLayer"}]
    core, analytics = pins(ROOT / "layers/core/requirements.txt"), pins(ROOT / "layers/analytics/requirements.txt")
    assert core | analytics == pins(ROOT / "requirements.txt") and not core & analytics
    assert not [pin for pin in core if pin.split("=")[0].split("[")[0] in HEAVY]  # the HTTP path's layer stays small


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_a_function_mounts_the_analytics_layer_exactly_when_its_code_imports_those_libraries(name):
    import subprocess
    import sys

    folder = FUNCTIONS[name]["Properties"]["CodeUri"].rstrip("/").split("/")[-1]
    probe = (
        f"import importlib, sys; importlib.import_module('functions.{folder}.app'); "
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    env = {"PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT}", "PATH": "/usr/bin:/bin"}
    env["AWS_DEFAULT_REGION"] = "eu-central-1"
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    mounts = FUNCTIONS[name]["Properties"].get("Layers", [])
    assert bool(out.stdout.split()) == ({"Ref": "AnalyticsLayer"} in mounts), (name, out.stdout)


@pytest.mark.parametrize(
    "name", ["capture_form", "bitrix_writer", "import_ad_spend", "build_roi_report", "build_segments"]
)
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
    ttl = dynamodb.describe_time_to_live(TableName=resources.physical["JourneyTable"])["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at"  # the change log's marks and the raw-copy index expire
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
        ("POST", "/v1/hooks/tilda/{form_id}"),
        ("POST", "/v1/hooks/elementor/{form_id}"),
        ("POST", "/v1/hooks/json/{form_id}"),
    }


def test_spend_import_may_touch_only_spend_and_rates_and_read_the_secret():
    statements = _statements("ImportAdSpendFunction")
    assert _actions("ImportAdSpendFunction") == {
        "secretsmanager:GetSecretValue",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
    }
    objects = next(s for s in statements if s.get("Sid") == "SpendAndRatesObjects")
    assert objects["Resource"] == [{"Fn::Sub": "${DataBucket.Arn}/spend/*"}, {"Fn::Sub": "${DataBucket.Arn}/rates/*"}]
    tokens = next(s for s in statements if s.get("Sid") == "PlatformTokens")
    assert tokens["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/private/vk_ads/*"}
    # No s3:prefix condition: GetObject of a missing key needs plain s3:ListBucket to be a 404, not a 403.
    listing = next(s for s in statements if s["Action"] == "s3:ListBucket")
    assert "Condition" not in listing and listing["Resource"] == {"Fn::GetAtt": ["DataBucket", "Arn"]}
    assert all(s["Resource"] != "*" for s in statements if s["Sid"] != "Traces")


def test_spend_import_runs_nightly_in_moscow_time_with_retries_and_a_dead_letter_queue():
    props = FUNCTIONS["ImportAdSpendFunction"]["Properties"]
    nightly = props["Events"]["Nightly"]
    assert nightly["Type"] == "ScheduleV2"
    assert nightly["Properties"]["ScheduleExpressionTimezone"] == {"Ref": "TimeZone"}
    assert TEMPLATE["Parameters"]["TimeZone"]["Default"] == "Europe/Moscow"
    assert nightly["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    dead_letters = {"Fn::GetAtt": ["ImportAdSpendDeadLetterQueue", "Arn"]}
    assert nightly["Properties"]["DeadLetterConfig"] == {"Arn": dead_letters}
    manual = props["Events"]["ManualSpendFile"]["Properties"]["Pattern"]
    assert manual["detail"]["object"]["key"] == [{"prefix": "spend/manual/inbox/"}]
    assert props["Timeout"] == 900


def test_athena_reads_spend_through_partition_projection_without_a_crawler():
    assert not [r for r in RESOURCES.values() if r["Type"] == "AWS::Glue::Crawler"]
    table = RESOURCES["SpendTable"]["Properties"]["TableInput"]
    parameters = table["Parameters"]
    assert parameters["projection.enabled"] == "true"
    assert parameters["projection.platform.values"].split(",") == ["yandex_direct", "google_ads", "vk_ads", "manual"]
    assert parameters["projection.date.type"] == "date"
    template = parameters["storage.location.template"]["Fn::Sub"]
    assert template == "s3://${DataBucket}/spend/platform=${!platform}/date=${!date}/"
    assert [key["Name"] for key in table["PartitionKeys"]] == ["platform", "date"]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
    columns = {c["Name"] for c in table["StorageDescriptor"]["Columns"]}
    assert {"campaign_id", "cost", "currency", "include_vat", "utm_source"} <= columns
    assert not columns & {"platform", "date"}  # partition keys cannot repeat as columns


def _lifecycle_rules() -> dict[str, dict]:
    rules = RESOURCES["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert all(rule["Status"] == "Enabled" for rule in rules)
    return {rule["Id"]: rule for rule in rules}


def test_raw_form_copies_expire_after_the_raw_retention_parameter_and_their_old_versions_a_day_later():
    parameter = TEMPLATE["Parameters"]["RawRetentionDays"]
    assert (parameter["Type"], parameter["Default"], parameter["MinValue"]) == ("Number", 30, 1)
    rule = _lifecycle_rules()["ExpireRawForms"]
    assert rule["Prefix"] == "raw/forms/"
    assert rule["ExpirationInDays"] == {"Ref": "RawRetentionDays"}
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    # The writer's index of a person's raw copies expires with them (RAW_RETENTION_DAYS, a setting).
    environment = FUNCTIONS["BitrixWriterFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["RAW_RETENTION_DAYS"] == {"Ref": "RawRetentionDays"}


def test_journey_snapshots_expire_after_seven_days_but_never_latest_json():
    rule = _lifecycle_rules()["ExpireJourneySnapshots"]
    assert rule["Prefix"] == "journeys/snapshot="
    assert not "journeys/latest.json".startswith(rule["Prefix"])
    # latest.json names the snapshot written the same night; the nightly report (a daily cron) replaces it long
    # before a 7-day-old snapshot expires.
    events = FUNCTIONS["BuildRoiReportFunction"]["Properties"]["Events"].values()
    assert {"Ref": "ReportSchedule"} in [event["Properties"].get("ScheduleExpression") for event in events]
    assert TEMPLATE["Parameters"]["ReportSchedule"]["Default"] == "cron(0 5 * * ? *)"  # every night
    assert rule["ExpirationInDays"] == 7
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
    # The touch parts' packed copies (journey/packed.py) expire with them, outside the Glue table's location.
    packed = _lifecycle_rules()["ExpireJourneyPackedCopies"]
    assert packed["Prefix"] == "journeys-packed/snapshot=" and not packed["Prefix"].startswith("journeys/")
    assert packed["ExpirationInDays"] == 7 and packed["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}


def test_incomplete_uploads_are_aborted_and_old_versions_and_dangling_delete_markers_go():
    rules = _lifecycle_rules()
    abort = rules["AbortIncompleteMultipartUploads"]
    assert abort["Prefix"] == "" and abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    versions = rules["ExpireOldVersions"]
    assert versions["Prefix"] == "" and versions["ExpiredObjectDeleteMarker"] is True
    assert versions["NoncurrentVersionExpiration"]["NoncurrentDays"] <= 30
    # Every prefix holding personal data has an expiry.
    prefixes = {rule["Prefix"] for rule in rules.values() if "ExpirationInDays" in rule}
    assert {"raw/forms/", "raw/rejected/", "raw/spam/", "journeys/snapshot=", "journeys-packed/snapshot="} <= prefixes


def test_the_local_bucket_gets_the_lifecycle_rules_with_the_retention_given(make_stack):
    stack = make_stack(poll_queues=False, parameters={"RawRetentionDays": "45"})
    s3 = boto3.session.Session().client("s3")
    rules = s3.get_bucket_lifecycle_configuration(Bucket=stack.resources.physical["DataBucket"])["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    assert by_id["ExpireRawForms"]["Expiration"] == {"Days": 45}
    assert by_id["ExpireRawForms"]["Filter"] == {"Prefix": "raw/forms/"}
    assert by_id["ExpireJourneySnapshots"]["Expiration"] == {"Days": 7}
    assert by_id["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert by_id["ExpireOldVersions"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert stack.resources.functions["bitrix_writer"].environment["RAW_RETENTION_DAYS"] == "45"


def test_forget_person_may_only_find_and_delete_a_persons_items_copies_and_snapshot_rows():
    assert _actions("ForgetPersonFunction") == {
        "secretsmanager:GetSecretValue",
        "dynamodb:Query",
        "dynamodb:BatchGetItem",
        "dynamodb:BatchWriteItem",
        "s3:ListBucket",
        "s3:ListBucketVersions",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "s3:GetObject",
        "s3:PutObject",
    }
    statements = {s["Sid"]: s for s in _statements("ForgetPersonFunction")}
    assert statements["DeleteRawCopies"]["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/raw/forms/*"}
    assert statements["RewriteSnapshots"]["Resource"] == [
        {"Fn::Sub": "${DataBucket.Arn}/journeys/snapshot=*"},
        {"Fn::Sub": "${DataBucket.Arn}/journeys-packed/snapshot=*"},  # the parts' packed copies
    ]
    assert statements["ListRawCopiesAndSnapshots"]["Condition"] == {
        "StringLike": {"s3:prefix": ["raw/forms/*", "raw/held/*", "journeys/snapshot=*", "journeys-packed/snapshot=*"]}
    }
    # Held posts (the flood limits, the captcha) are read for their contact and deleted; nothing else under raw/.
    assert statements["FindAndDeleteHeldPosts"]["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/raw/held/*"}
    assert "Events" not in FUNCTIONS["ForgetPersonFunction"]["Properties"]  # no route: an operator invokes it
    assert RESOURCES["JourneyTable"]["Properties"]["TimeToLiveSpecification"] == {
        "AttributeName": "expires_at",
        "Enabled": True,
    }


def test_every_setting_that_is_a_template_parameter_can_come_from_the_environment():
    from local.template import parameters_from_environment

    pairs = {
        (name, value["Ref"])
        for variables in [TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]]
        + [f["Properties"].get("Environment", {}).get("Variables", {}) for f in FUNCTIONS.values()]
        for name, value in variables.items()
        if isinstance(value, dict) and value.get("Ref") in TEMPLATE["Parameters"]
    }
    assert ("GOOGLE_ADS_CUSTOMER_IDS", "GoogleAdsCustomerIds") in pairs and len(pairs) >= 20
    for variable, parameter in pairs:
        assert parameters_from_environment(TEMPLATE, {variable: "from-env"}) == {parameter: "from-env"}, variable
    assert parameters_from_environment(TEMPLATE, {"UNRELATED": "x"}) == {}


def test_the_local_stack_takes_settings_from_the_environment_over_template_defaults(monkeypatch, make_stack):
    # monkeypatch before make_stack: the stack is stopped (restoring what it saw at start) before monkeypatch undoes
    # its settings, so none of them leaks into the next test of this process.
    from throughline.config import get_settings

    monkeypatch.setenv("GOOGLE_ADS_CUSTOMER_IDS", "111-222-3333,444-555-6666")
    monkeypatch.setenv("TIMEZONE", "Asia/Yekaterinburg")
    monkeypatch.setenv("BITRIX24_BURST", "250")
    monkeypatch.setenv("RAW_RETENTION_DAYS", "3")
    monkeypatch.setenv("BITRIX24_JOURNEY_FIELD", "UF_CRM_FROM_ENV")
    stack = make_stack(poll_queues=False, parameters={"JourneyField": "UF_CRM_GIVEN"})
    settings = get_settings()
    assert settings.google_ads_customer_ids == ("111-222-3333", "444-555-6666")
    assert settings.timezone == "Asia/Yekaterinburg" and settings.bitrix24_burst == 250
    assert settings.raw_retention_days == 3
    assert settings.bitrix24_journey_field == "UF_CRM_GIVEN"  # a parameter given to the stack wins over both
    assert stack.resources.functions["import_ad_spend"].environment["GOOGLE_ADS_CUSTOMER_IDS"] == (
        "111-222-3333,444-555-6666"
    )
    s3 = boto3.session.Session().client("s3")
    rules = s3.get_bucket_lifecycle_configuration(Bucket=stack.resources.physical["DataBucket"])["Rules"]
    assert {rule["ID"]: rule for rule in rules}["ExpireRawForms"]["Expiration"] == {"Days": 3}


def test_contacts_and_companies_of_the_crm_snapshot_have_glue_tables_with_every_snapshot_field():
    from throughline.report.crm import COMPANY_FIELDS, CONTACT_FIELDS

    for resource, entity, fields in (("CrmContactsTable", "contact", (*CONTACT_FIELDS, "PERSON_KEY", "PERSON_KEYS")),
                                     ("CrmCompaniesTable", "company", COMPANY_FIELDS)):  # fmt: skip
        table = RESOURCES[resource]["Properties"]["TableInput"]
        template = table["Parameters"]["storage.location.template"]["Fn::Sub"]
        assert template == f"s3://${{DataBucket}}/crm/snapshot/entity={entity}/bucket=${{!bucket}}/"
        columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
        assert columns == [field.lower() for field in fields]


def test_build_segments_reads_the_snapshot_and_rules_writes_only_snapshot_and_segments_and_runs_through_the_night():
    # DynamoDB: the alerts ledger's claims of tasks on segment moves (segments/tasks.py), on that table only.
    assert _actions("BuildSegmentsFunction") == {"secretsmanager:GetSecretValue", "s3:GetObject", "s3:ListBucket",
                                                 "s3:PutObject", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                                 "dynamodb:DeleteItem"}  # fmt: skip
    statements = {s["Sid"]: s for s in _statements("BuildSegmentsFunction")}
    assert statements["WriteSnapshotAndSegments"]["Resource"] == [
        {"Fn::Sub": "${DataBucket.Arn}/crm/snapshot/*"}, {"Fn::Sub": "${DataBucket.Arn}/segments/*"}
    ]  # fmt: skip
    assert {"Fn::Sub": "${DataBucket.Arn}/config/segments.yaml"} in statements["ReadInputs"]["Resource"]
    nightly = FUNCTIONS["BuildSegmentsFunction"]["Properties"]["Events"]["Nightly"]["Properties"]
    assert nightly["ScheduleExpression"] == "cron(10/15 5-8 * * ? *)"  # after the report's 05:00, every 15 minutes
    # The ads secret for the ad audiences; VK's cached token (shared with the spend import) and nothing else private.
    assert statements["ReadSecrets"]["Resource"] == [{"Ref": "AdsSecret"}, {"Ref": "CrmSecret"}, {"Ref": "Secrets"}]
    assert statements["PlatformTokens"]["Resource"] == {"Fn::Sub": "${DataBucket.Arn}/private/vk_ads/*"}
    assert set(statements["PlatformTokens"]["Action"]) == {"s3:GetObject", "s3:PutObject"}
    # The hashes kept between nights for Google and VK expire once the export stops using them.
    rules = {r["Id"]: r for r in RESOURCES["DataBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]}
    assert rules["ExpireAudienceHashes"]["Prefix"] == "segments/audiences/google/"
    assert rules["ExpireVkAudienceHashes"]["Prefix"] == "segments/audiences/vk/"
    assert rules["ExpireVkAudienceHashes"]["ExpirationInDays"] == 35
    # The report's segments section reads what build_segments stored and the rules' labels, on its own role.
    report = {s["Sid"]: s for s in _statements("BuildRoiReportFunction")}["ReadInputs"]["Resource"]
    assert {"Fn::Sub": "${DataBucket.Arn}/segments/snapshot=*"} in report
    assert {"Fn::Sub": "${DataBucket.Arn}/segments/transitions/*"} in report
    # Least privilege: the audiences' hashes (segments/audiences/google|vk/) are build_segments' alone.
    assert not [r for r in report if "segments/*" in r["Fn::Sub"] or "segments/audiences" in r["Fn::Sub"]]
    assert {"Fn::Sub": "${DataBucket.Arn}/config/segments.yaml"} in report
    # It computes tonight's segments first: reads their state, writes the night's files, never the audiences'.
    assert {"Fn::Sub": "${DataBucket.Arn}/segments/state.json"} in report
    writes = {s["Sid"]: s for s in _statements("BuildRoiReportFunction")}["WriteReportsSnapshotAndJourneys"]["Resource"]
    assert not [r for r in writes if "segments/*" in r["Fn::Sub"] or "segments/audiences" in r["Fn::Sub"]]
    assert {"Fn::Sub": "${DataBucket.Arn}/segments/writeback/*"} in writes
    ledger = {s["Sid"]: s for s in _statements("BuildSegmentsFunction")}["MoveTasksLedger"]
    assert ledger["Resource"] == {"Fn::GetAtt": ["AlertsTable", "Arn"]}
    env = FUNCTIONS["BuildSegmentsFunction"]["Properties"]["Environment"]["Variables"]
    assert env["ALERTS_TABLE"] == {"Ref": "AlertsTable"}
    assert nightly["ScheduleExpressionTimezone"] == {"Ref": "TimeZone"}


def test_segments_and_their_moves_have_glue_tables_with_every_field_the_job_writes():
    from datetime import date

    from throughline.segments.engine import Customer, assign
    from throughline.segments.rules import default_rules

    buyer = Customer("company", 1, created=date(2026, 1, 1))
    rows = assign({buyer.key: buyer}, default_rules(), date(2026, 12, 6), previous={"company:1": {"segment": "VIP"}})
    for resource, partition, fields in (("SegmentsTable", "snapshot", rows.rows[0]),
                                        ("SegmentTransitionsTable", "date", rows.transitions[0])):  # fmt: skip
        table = RESOURCES[resource]["Properties"]["TableInput"]
        columns = [c["Name"] for c in table["StorageDescriptor"]["Columns"]]
        assert [key["Name"] for key in table["PartitionKeys"]] == [partition]
        assert columns == [name for name in fields if name != partition]


def test_the_report_reads_and_writes_only_the_packed_copies_snapshots():
    # Least privilege: the packed copies live under journeys-packed/snapshot=<date>/ only (journey/packed.py); the
    # report's role once read and wrote the whole journeys-packed/ prefix.
    statements = {s["Sid"]: s for s in _statements("BuildRoiReportFunction")}
    for sid in ("ReadInputs", "WriteReportsSnapshotAndJourneys"):
        packed = [r["Fn::Sub"] for r in statements[sid]["Resource"] if "journeys-packed" in r["Fn::Sub"]]
        assert packed == ["${DataBucket.Arn}/journeys-packed/snapshot=*"]
