"""template.yaml as deployed shape (issue 15, items 8 and 10-13), read from the file alone: schedules without fixed
names, a prod stage that needs AlarmEmail, an optional concurrency reservation, explicit roles naming each function's
own log group and secrets, aws:SourceAccount on service principals, retained state, alarms wired to the topic, and a
dashboard showing metrics the code really emits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]
FUNCTIONS = {name: r["Properties"] for name, r in RESOURCES.items() if r["Type"] == "AWS::Serverless::Function"}

# What each function's code reads from Secrets Manager (config.SECRET_NAMES by consumer):
PERSON_KEY, CRM, EVENTS, ADS, ALERTS = "Secrets", "CrmSecret", "EventsSecret", "AdsSecret", "AlertsSecret"
SECRETS_OF = {
    "CaptureFormFunction": [PERSON_KEY],  # message group ids
    "BitrixEventsFunction": [EVENTS],  # BITRIX24_APP_TOKENS
    "BitrixWriterFunction": [CRM, PERSON_KEY],
    "JourneySweepFunction": [CRM, PERSON_KEY],
    "BuildRoiReportFunction": [CRM, PERSON_KEY],  # the snapshot's person keys
    "ImportAdSpendFunction": [ADS, CRM],  # crm.currency.list for the rates
    "ForgetPersonFunction": [PERSON_KEY],
    # METRICA_TOKEN and the Google OAuth keys; the deals' amounts and contacts (Google's user data is plain SHA-256).
    "UploadConversionsFunction": [ADS, CRM],
    "CheckAlertsFunction": [CRM, ALERTS],  # notifications through the webhook; Telegram, SES
    "SendDigestsFunction": [CRM, ALERTS],
    "AppReportFunction": [],  # public: the token is checked at https://BITRIX24_DOMAIN, never with the webhook
    # the write-back; the person keys of the snapshot it refreshes; the ad audiences' tokens
    "BuildSegmentsFunction": [ADS, CRM, PERSON_KEY],
}


def _role(function: str) -> dict:
    role = FUNCTIONS[function]["Role"]
    assert role == {"Fn::GetAtt": [role["Fn::GetAtt"][0], "Arn"]}
    resource = RESOURCES[role["Fn::GetAtt"][0]]
    assert resource["Type"] == "AWS::IAM::Role"
    return resource["Properties"]


def _statements(role: dict) -> list[dict]:
    return [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def _list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def _refs(value: object) -> list[str]:
    """Logical ids of ``!Ref X`` or ``!Join [",", [!Ref X, ...]]``."""
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, items = value["Fn::Join"]
        assert separator == ","
        return [item["Ref"] for item in items]
    return [item["Ref"] for item in _list(value)]


# -- 11: schedules, reserved concurrency, prod needs AlarmEmail ------------------------------------------------------


def test_no_schedule_has_a_fixed_name():
    schedules = [
        (name, event["Properties"])
        for name, props in FUNCTIONS.items()
        for event in props.get("Events", {}).values()
        if event["Type"] in ("ScheduleV2", "Schedule")
    ]
    # spend, report, sweep, conversions; check_alerts hourly and every 5 minutes; three digests; build_segments
    assert len(schedules) == 10
    for name, props in schedules:
        assert props.get("OmitName") is True and "Name" not in props, name
    assert not [r for r in RESOURCES.values() if r["Type"] == "AWS::Scheduler::Schedule" and "Name" in r["Properties"]]


def test_reserved_concurrency_is_an_optional_parameter_off_by_default():
    parameter = TEMPLATE["Parameters"]["SpendImportReservedConcurrency"]
    assert parameter["Default"] == 0
    for name, props in FUNCTIONS.items():
        value = props.get("ReservedConcurrentExecutions")
        assert value is None or isinstance(value, dict), f"{name}: a fixed reservation fails on a quota of 10"
    value = FUNCTIONS["ImportAdSpendFunction"]["ReservedConcurrentExecutions"]
    condition, when_on, when_off = value["Fn::If"]
    assert (when_on, when_off) == ({"Ref": "SpendImportReservedConcurrency"}, {"Ref": "AWS::NoValue"})
    assert TEMPLATE["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SpendImportReservedConcurrency"}, 0]}]
    }


def test_a_prod_stage_cannot_be_deployed_without_an_alarm_email():
    [rule] = TEMPLATE["Rules"].values()
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}
    assert "AlarmEmail" in assertion["AssertDescription"]


# -- 12: IAM as narrow as the code -----------------------------------------------------------------------------------


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_every_function_has_its_own_role_logging_only_to_its_own_log_group(function):
    props = FUNCTIONS[function]
    assert "Policies" not in props  # SAM would generate a role with AWSLambdaBasicExecutionRole (logs on "*")
    role = _role(function)
    assert not role.get("ManagedPolicyArns")
    logs = [s for s in _statements(role) if any(a.startswith("logs:") for a in _list(s["Action"]))]
    assert len(logs) == 1
    assert sorted(_list(logs[0]["Action"])) == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert logs[0]["Resource"] == {"Fn::GetAtt": [props["LoggingConfig"]["LogGroup"]["Ref"], "Arn"]}
    for statement in _statements(role):
        actions = _list(statement["Action"])
        assert not [a for a in actions if a == "*" or a.endswith(":*")], (function, actions)
        if statement["Resource"] == "*":  # X-Ray has no resource-level permissions
            assert set(actions) <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}, (function, actions)


@pytest.mark.parametrize("function", sorted(SECRETS_OF))
def test_each_function_reads_only_its_own_secrets(function):
    expected = SECRETS_OF[function]
    reads = [s for s in _statements(_role(function)) if "secretsmanager:GetSecretValue" in _list(s["Action"])]
    if not expected:
        assert not reads and "SECRETS_ARN" not in FUNCTIONS[function]["Environment"]["Variables"]
        statements = _statements(_role(function))
        assert not [s for s in statements if any(a.startswith("secretsmanager:") for a in _list(s["Action"]))]
        return
    assert [_list(s["Action"]) for s in reads] == [["secretsmanager:GetSecretValue"]]
    assert _refs(reads[0]["Resource"]) == expected
    assert _refs(FUNCTIONS[function]["Environment"]["Variables"]["SECRETS_ARN"]) == expected
    # No other statement reaches a secret.
    others = [s for s in _statements(_role(function)) if s not in reads]
    assert not [s for s in others if any(a.startswith("secretsmanager:") for a in _list(s["Action"]))]


def test_public_functions_never_read_the_crm_webhook_or_the_ad_platforms():
    for function, props in FUNCTIONS.items():
        if any(event["Type"] == "HttpApi" for event in props.get("Events", {}).values()):
            assert CRM not in SECRETS_OF[function] and ADS not in SECRETS_OF[function], function
    assert set(SECRETS_OF) == set(FUNCTIONS)


def test_the_journey_table_is_never_granted_get_item_which_the_code_never_calls():
    # get_item is called on the double-submit table only (adapters/submission_claims.py and Powertools' idempotency),
    # and by the conversions ledger's Ledger.get, which tests and operators use, never upload_conversions' runs.
    callers = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "layers/core/throughline").rglob("*.py")
        if ".get_item(" in path.read_text(encoding="utf-8")
    }
    # The alerts ledger reads a sent alert's record (withdrawals) and the hot-lead index: check_alerts only.
    assert callers == {"layers/core/throughline/adapters/submission_claims.py",
                       "layers/core/throughline/conversions/ledger.py",
                       "layers/core/throughline/adapters/alert_ledger.py"}  # fmt: skip
    granted = set()
    for name, resource in RESOURCES.items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for statement in _statements(resource["Properties"]):
            if "dynamodb:GetItem" in _list(statement["Action"]):
                table = statement["Resource"]["Fn::GetAtt"][0]
                assert table in ("IdempotencyTable", "AlertsTable"), name
                granted.add((name, table))
    assert {name for name, table in granted if table == "AlertsTable"} == {"CheckAlertsRole"}


def _service_statements():
    """Allow statements naming an AWS service principal other than Lambda, in roles' trust and resource policies."""
    for name, resource in RESOURCES.items():
        props = resource.get("Properties", {})
        documents = []
        if resource["Type"] == "AWS::IAM::Role":
            documents.append(props["AssumeRolePolicyDocument"])
        if resource["Type"] in ("AWS::SQS::QueuePolicy", "AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy"):
            documents.append(props["PolicyDocument"])
        if resource["Type"] == "AWS::KMS::Key":
            documents.append(props["KeyPolicy"])
        for document in documents:
            for statement in document["Statement"]:
                principal = statement.get("Principal")
                services = _list(principal.get("Service", [])) if isinstance(principal, dict) else []
                if statement["Effect"] == "Allow" and set(services) - {"lambda.amazonaws.com"}:
                    yield name, statement


def test_every_service_principal_is_limited_to_this_account():
    found = list(_service_statements())
    services = {service for _, statement in found for service in _list(statement["Principal"]["Service"])}
    assert {"scheduler.amazonaws.com", "events.amazonaws.com", "logging.s3.amazonaws.com",
            "cloudwatch.amazonaws.com"} <= services  # fmt: skip
    for name, statement in found:
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}, name


def test_every_schedule_runs_with_its_own_role_that_may_invoke_only_its_function():
    for function, props in FUNCTIONS.items():
        for event in props.get("Events", {}).values():
            if event["Type"] != "ScheduleV2":
                continue
            role = RESOURCES[event["Properties"]["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
            invoke = [s for s in _statements(role) if s["Action"] == "lambda:InvokeFunction"]
            assert [s["Resource"] for s in invoke] == [{"Fn::GetAtt": [function, "Arn"]}]
            dead_letters = event["Properties"].get("DeadLetterConfig", {}).get("Arn")
            sends = [s["Resource"] for s in _statements(role) if s["Action"] == "sqs:SendMessage"]
            assert sends == ([dead_letters] if dead_letters else [])


# -- 8 and 10: secrets and retained state ------------------------------------------------------------------------------


def test_the_person_key_secret_keeps_its_logical_id_and_every_property_of_its_first_release():
    # CloudFormation generates a new value when GenerateSecretString or its template changes: a new key would start
    # every person's journey afresh. These are the properties the secret was created with; never change them.
    secret = RESOURCES["Secrets"]
    assert secret["Properties"] == {
        "Description": (
            "Throughline secrets as one JSON object: BITRIX24_WEBHOOK_URL, BITRIX24_APP_TOKENS, YANDEX_DIRECT_TOKEN,"
            " GOOGLE_ADS_CLIENT_ID, GOOGLE_ADS_CLIENT_SECRET, GOOGLE_ADS_REFRESH_TOKEN, GOOGLE_ADS_DEVELOPER_TOKEN,"
            " VK_ADS_CLIENT_ID, VK_ADS_CLIENT_SECRET, PERSON_KEY_SECRET (generated on create: the HMAC key of person"
            " keys and message group ids)\n"
        ),
        "GenerateSecretString": {
            "SecretStringTemplate": "{}",
            "GenerateStringKey": "PERSON_KEY_SECRET",
            "PasswordLength": 64,
            "ExcludePunctuation": True,
        },
    }
    for name in (PERSON_KEY, CRM, EVENTS, ADS, ALERTS):
        assert RESOURCES[name]["Type"] == "AWS::SecretsManager::Secret"
        assert "Name" not in RESOURCES[name]["Properties"]  # a generated name: dev and prod in one account
    for name in (CRM, EVENTS, ADS, ALERTS):  # created empty; the template never writes them again
        assert RESOURCES[name]["Properties"]["SecretString"] == "{}"


@pytest.mark.parametrize(
    "name",
    ["Secrets", "CrmSecret", "EventsSecret", "AdsSecret", "AlertsSecret", "JourneyTable", "DataBucket",
     "AccessLogsBucket", "WritesQueue", "WritesDeadLetterQueue", "ConversionsTable"],
)  # fmt: skip
def test_stateful_resources_are_retained_on_delete_and_replacement(name):
    assert RESOURCES[name]["DeletionPolicy"] == "Retain"
    assert RESOURCES[name]["UpdateReplacePolicy"] == "Retain"


def test_the_data_bucket_logs_access_to_a_private_bucket_that_expires_the_logs():
    logging = RESOURCES["DataBucket"]["Properties"]["LoggingConfiguration"]
    assert logging["DestinationBucketName"] == {"Ref": "AccessLogsBucket"}
    target = RESOURCES["AccessLogsBucket"]["Properties"]
    assert all(target["PublicAccessBlockConfiguration"].values())
    [rule] = target["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == {"Ref": "LogRetentionDays"}
    [grant] = [s for s in RESOURCES["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Allow"]  # fmt: skip
    assert grant["Resource"] == {"Fn::Sub": "${AccessLogsBucket.Arn}/" + logging["LogFilePrefix"] + "*"}
    assert grant["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${DataBucket}"}


def test_every_checkov_skip_gives_its_reason():
    skips = [
        (name, skip)
        for name, resource in RESOURCES.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), name
        assert len(skip.get("comment", "").split()) >= 5, (name, skip["id"])  # a reason, not a shrug


# -- 13: alarms and the dashboard --------------------------------------------------------------------------------------


def _alarms() -> dict[str, dict]:
    return {name: r["Properties"] for name, r in RESOURCES.items() if r["Type"] == "AWS::CloudWatch::Alarm"}


def test_every_alarm_notifies_the_alarm_topic():
    alarms = _alarms()
    assert len(alarms) >= 17
    wired = {"Fn::If": ["HasAlarmEmail", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]}
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == wired, name


def _emitted_metric_names(service: str | None = None) -> set[str]:
    """Names passed to ``metrics.add_metric(name="…")`` in a function's handler (or anywhere, service None)."""
    paths = [ROOT / "functions" / service / "app.py"] if service else [*(ROOT / "functions").rglob("*.py")]
    if service is None:
        paths += list((ROOT / "layers/core/throughline").rglob("*.py"))
    found: set[str] = set()
    for path in paths:
        found |= set(re.findall(r'add_metric\(\s*name="([A-Za-z]+)"', path.read_text(encoding="utf-8")))
    return found


def _own_metric(alarm: dict) -> tuple[str, str]:
    assert alarm["Namespace"] == "Throughline"
    [dimension] = alarm["Dimensions"]
    assert dimension["Name"] == "service"
    return alarm["MetricName"], dimension["Value"]


@pytest.mark.parametrize(
    ("alarm", "service"),
    [("ReportNotBuiltAlarm", "build_roi_report"), ("SpendImportNotRunAlarm", "import_ad_spend")],
)
def test_a_nightly_run_that_did_not_happen_alarms_from_its_success_metric(alarm, service):
    props = _alarms()[alarm]
    metric, dimension = _own_metric(props)
    assert dimension == service and metric in _emitted_metric_names(service)
    assert props["TreatMissingData"] == "breaching"  # no success reported is the signal
    assert props["ComparisonOperator"] == "LessThanThreshold" and props["Threshold"] == 1
    assert props["DatapointsToAlarm"] == props["EvaluationPeriods"]
    # CloudWatch: a period of an hour or more may be evaluated over up to seven days (under an hour: one day).
    assert props["Period"] >= 3600 and props["Period"] * props["EvaluationPeriods"] <= 7 * 86400
    # Nightly at 05:00; the next night's run lands later by `shift` hours. Up to six hours late: never in alarm.
    for shift in range(7):
        successes = [5, 24 + 5 + shift]
        # evaluated up to the hour the late run lands in (its datapoint not in yet)
        assert not _alarms_between(props, successes, 0, 24 + 5 + shift + 1), (alarm, shift)
    # The next night never comes: in alarm before the second day is out.
    assert _alarms_between(props, [5], 0, 48)
    assert not _alarms_between(props, [5], 0, 5 + 24)  # but not the moment a day has passed


def _alarms_between(props: dict, success_hours: list[int], start: int, end: int) -> bool:
    """Whether the alarm is in ALARM at any hourly evaluation in [start, end) (hours from a midnight), given one
    success in each hour of ``success_hours`` and breaching missing data (CloudWatch's rule: the last
    ``EvaluationPeriods`` periods, ``DatapointsToAlarm`` of them breaching; a success is a datapoint of 1, not < 1)."""
    hours = props["Period"] // 3600
    periods, needed = props["EvaluationPeriods"], props["DatapointsToAlarm"]
    first = min(success_hours)  # the stack existed from the first success on (before it, the new stack's case)
    for now in range(max(start, first + 1), end):
        window = range(now - periods * hours, now)
        breaching = sum(1 for hour in window if hour not in success_hours)
        if breaching >= needed:
            return True
    return False


def test_forged_events_throttles_and_client_errors_have_alarms():
    alarms = _alarms()
    metric, service = _own_metric(alarms["ForgedEventsAlarm"])
    assert (metric, service) == ("EventsForged", "bitrix_events") and metric in _emitted_metric_names(service)
    throttled = {
        m["MetricStat"]["Metric"]["Dimensions"][0]["Value"]["Ref"]
        for m in alarms["FunctionThrottlesAlarm"]["Metrics"]
        if "MetricStat" in m and m["MetricStat"]["Metric"]["MetricName"] == "Throttles"
    }
    assert throttled == set(FUNCTIONS)
    [expression] = [m["Expression"] for m in alarms["FunctionThrottlesAlarm"]["Metrics"] if m.get("ReturnData")]
    assert all(m["Id"] in expression for m in alarms["FunctionThrottlesAlarm"]["Metrics"] if "MetricStat" in m)
    client = alarms["ApiClientErrorsAlarm"]
    assert (client["Namespace"], client["MetricName"]) == ("AWS/ApiGateway", "4xx")  # 429 throttles included
    assert client["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}]
    assert client["Threshold"] == {"Ref": "ClientErrorAlarmThreshold"}


def _dashboard() -> dict:
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    # ${Resource} and ${Resource.Attribute} become the logical ids, so the JSON can be read here.
    return json.loads(re.sub(r"\$\{([A-Za-z:]+)(?:\.[A-Za-z]+)?\}", r"\1", body))


def test_the_dashboard_shows_only_metrics_that_exist():
    metrics = [metric for widget in _dashboard()["widgets"] for metric in widget["properties"]["metrics"]]
    services = {props["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"] for props in FUNCTIONS.values()}
    own = [metric for metric in metrics if metric[0] == "Throughline"]
    assert len(own) >= 10
    for _namespace, name, dimension, service in own:
        assert dimension == "service" and service in services, (name, service)
        # Emitted by that service's handler, or by the shared code it runs (PortalMoved, …).
        assert name in _emitted_metric_names(service) | _emitted_metric_names(None), name
    for metric in metrics:
        if metric[0] == "AWS/Lambda":
            assert metric[2] == "FunctionName" and metric[3] in FUNCTIONS
        elif metric[0] == "AWS/ApiGateway":
            assert metric[2:] == ["ApiId", "HttpApi"]
        elif metric[0] == "AWS/SQS":
            assert metric[2] == "QueueName" and RESOURCES[metric[3]]["Type"] == "AWS::SQS::Queue"
    shown = {metric[1] for metric in own}
    assert {"EventsForged", "ReportsBuilt", "SpendImportsCompleted", "LeadsCreated", "WritesFailed"} <= shown


# -- noticed at the last stop: pacing, the Glue database's name, prod without AlarmEmail ------------------------------

PACING = ("BITRIX24_RATE_PER_SECOND", "BITRIX24_BURST", "BITRIX24_WRITER_CONCURRENCY")


def test_every_function_that_reads_the_crm_webhook_paces_its_calls_to_the_portal():
    """import_ad_spend calls crm.currency.list with the webhook: it takes the process's share of the portal's rate like
    every other function that holds the webhook (not the library's defaults)."""
    for name, props in FUNCTIONS.items():
        if CRM not in SECRETS_OF[name]:
            continue
        variables = props["Environment"]["Variables"]
        assert {key: variables.get(key) for key in PACING} == {
            "BITRIX24_RATE_PER_SECOND": {"Ref": "BitrixRatePerSecond"},
            "BITRIX24_BURST": {"Ref": "BitrixBurst"},
            "BITRIX24_WRITER_CONCURRENCY": {"Ref": "WriterMaxConcurrency"},
        }, name


@pytest.mark.parametrize(("stack", "database"), [("throughline-prod", "throughline_prod"),
                                                 ("throughline-prod-b", "throughline_prod_b"),
                                                 ("throughline", "throughline")])  # fmt: skip
def test_the_glue_database_is_named_after_the_stack_so_two_stacks_of_one_stage_never_share_it(stack, database):
    from local.template import _Resolver

    name = RESOURCES["AnalyticsDatabase"]["Properties"]["DatabaseInput"]["Name"]
    resolver = _Resolver(TEMPLATE, stack, "eu-central-1", {"Stage": "prod"})
    assert resolver.resolve(name) == database
    assert re.fullmatch(r"[a-z0-9_]{1,255}", database)  # what Athena takes unquoted
    # Everything else names it through the resource (tables, the output the CLI reads), never by a stage.
    assert "throughline_${Stage}" not in (ROOT / "template.yaml").read_text()
    assert TEMPLATE["Outputs"]["AnalyticsDatabaseName"]["Value"] == {"Ref": "AnalyticsDatabase"}


def test_the_prod_profile_fails_for_want_of_an_alarm_email_and_the_readme_says_what_to_do():
    """samconfig.toml's prod profile carries no address (none may be invented): `sam deploy --config-env prod` stops
    at the template's Rules until one is given, and the README's deploy section says so and how."""
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    overrides = config["prod"]["deploy"]["parameters"]["parameter_overrides"]
    assert "Stage=prod" in overrides and "AlarmEmail" not in overrides
    [rule] = TEMPLATE["Rules"].values()
    readme = (ROOT / "README.md").read_text()
    section = " ".join(readme[readme.index("**Prod needs `AlarmEmail`**") :][:1200].split())
    assert rule["Assertions"][0]["AssertDescription"].split(" (")[0] in section  # the error the deploy stops with
    assert "--config-env prod --parameter-overrides" in section and "AlarmEmail=" in section
