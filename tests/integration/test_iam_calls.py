"""Every AWS call each function makes on the local stack is allowed by its own role in template.yaml.

The local stack does not enforce IAM, so a call a role lacks (a new S3 prefix, a DynamoDB operation, a queue) passes
every other test and fails only in production. Here each function is run on its real paths (a form, a held post, the
writer, CRM events, the sweep, the spend import with a manual file, offline conversions of a won deal and the hourly
run, segments, the report, forget), every botocore call made
while a function runs is recorded, mapped to the IAM action and resource it needs, and checked against the
statements of that function's role: action, resource and the ``s3:prefix`` condition.

Secrets Manager is left out: on the local stack one process reads the settings (and so every secret) once for all
functions; the template test checks which secrets each function may read.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import requests
from botocore.client import BaseClient

from local.ad_sandboxes import MetricaSandbox, VkAdsSandbox, VkTrackerSandbox, YandexAudienceSandbox
from local.stack import LocalStack
from local.template import load_template
from tests.integration.test_journey_events import manager_lead, settle
from throughline.adapters.journey_store import JourneyStore
from throughline.journey.lines import Touch

RESOURCES = load_template()["Resources"]
TODAY = date(2026, 12, 1)
_running = threading.local()


@pytest.fixture
def calls(monkeypatch) -> list[tuple[str, str, str, dict]]:
    """(function, service, operation, params) of every call made while a function runs on this thread."""
    recorded: list[tuple[str, str, str, dict]] = []
    make_call, invoke = BaseClient._make_api_call, LocalStack.invoke

    def recording_call(client, operation, params):
        function = getattr(_running, "function", None)
        if function:
            recorded.append((function, client.meta.service_model.service_name, operation, dict(params)))
        return make_call(client, operation, params)

    def recording_invoke(stack, function, event):
        outer = getattr(_running, "function", None)
        _running.function = function
        try:
            return invoke(stack, function, event)
        finally:
            _running.function = outer

    def submit(pool, fn, /, *args, **kwargs):  # a function's worker threads (the export's parallel scan) are its own
        function = getattr(_running, "function", None)

        def run():
            _running.function = function
            try:
                return fn(*args, **kwargs)
            finally:
                _running.function = None

        return pool_submit(pool, run)

    pool_submit = ThreadPoolExecutor.submit
    monkeypatch.setattr(BaseClient, "_make_api_call", recording_call)
    monkeypatch.setattr(LocalStack, "invoke", recording_invoke)
    monkeypatch.setattr(ThreadPoolExecutor, "submit", submit)
    return recorded


def needs(service: str, operation: str, params: dict, queues: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(IAM action, resource, condition keys) one call needs; resources as ``s3:<bucket>/<key>``,
    ``dynamodb:table/<name>``, ``sqs:<queue name>``."""
    if service == "s3":
        bucket = params["Bucket"]
        obj = lambda key: f"s3:{bucket}/{key}"  # noqa: E731
        if operation in ("ListObjectsV2", "ListObjects"):
            return [("s3:ListBucket", f"s3:{bucket}", {"s3:prefix": params.get("Prefix")})]
        if operation == "ListObjectVersions":
            return [("s3:ListBucketVersions", f"s3:{bucket}", {"s3:prefix": params.get("Prefix")})]
        if operation == "CopyObject":
            source = params["CopySource"]
            return [
                ("s3:GetObject", f"s3:{source['Bucket']}/{source['Key']}", {}),
                ("s3:PutObject", obj(params["Key"]), {}),
            ]
        if operation == "DeleteObjects":
            return [
                ("s3:DeleteObjectVersion" if "VersionId" in item else "s3:DeleteObject", obj(item["Key"]), {})
                for item in params["Delete"]["Objects"]
            ]
        if operation == "DeleteObject" and "VersionId" in params:
            return [("s3:DeleteObjectVersion", obj(params["Key"]), {})]
        action = {"HeadObject": "GetObject"}.get(operation, operation)
        return [(f"s3:{action}", obj(params["Key"]), {})]
    if service == "dynamodb" and operation == "TransactWriteItems":
        # Authorized item by item: a Put needs PutItem, an Update UpdateItem, a Delete DeleteItem on its table.
        actions = {
            "Put": "PutItem",
            "Update": "UpdateItem",
            "Delete": "DeleteItem",
            "ConditionCheck": "ConditionCheckItem",
        }
        return [
            (f"dynamodb:{actions[kind]}", f"dynamodb:table/{body['TableName']}", {})
            for item in params["TransactItems"]
            for kind, body in item.items()
        ]
    if service == "dynamodb":
        tables = list(params["RequestItems"]) if operation.startswith("Batch") else [params["TableName"]]
        return [(f"dynamodb:{operation}", f"dynamodb:table/{table}", {}) for table in tables]
    if service == "sqs":
        action = operation.removesuffix("Batch")
        return [(f"sqs:{action}", f"sqs:{urlsplit(params['QueueUrl']).path.rsplit('/', 1)[-1]}", {})]
    raise AssertionError(f"a function calls {service}:{operation}: add it to this test and to its role")


def previous_night_without_segments(bucket: str) -> None:
    """Rewrite segments/ as if the last night were yesterday with every customer out of any segment, and configure a
    task for a move into each segment: the next run recomputes today and claims a task per customer."""
    from throughline.report import jsonlines
    from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML

    s3 = boto3.client("s3")
    state = json.loads(s3.get_object(Bucket=bucket, Key="segments/state.json")["Body"].read())
    today = date.fromisoformat(state["last"])
    yesterday = (today - timedelta(days=1)).isoformat()
    rows = jsonlines.decode(
        s3.get_object(Bucket=bucket, Key=f"segments/snapshot={today}/customers.json.gz")["Body"].read()
    )
    assert any(row["segment"] for row in rows)
    body = jsonlines.encode({**row, "segment": None, "since": None} for row in rows)
    s3.put_object(Bucket=bucket, Key=f"segments/snapshot={yesterday}/customers.json.gz", Body=body)
    state.update({"last": yesterday, "previous": None, "writeback": {"done": True}, "tasks": None})
    s3.put_object(Bucket=bucket, Key="segments/state.json", Body=json.dumps(state).encode())
    every = "task_on_moves: [VIP, SLEEPING, ACTIVE, ONE_TIME, POTENTIAL, NEWCOMER]"
    s3.put_object(
        Bucket=bucket, Key=CONFIG_KEY, Body=DEFAULT_RULES_YAML.replace("task_on_moves: [SLEEPING, VIP]", every).encode()
    )


def resolve(resource: Any, physical: dict[str, str]) -> list[str]:
    if isinstance(resource, list):
        return [pattern for item in resource for pattern in resolve(item, physical)]
    if resource == "*":
        return ["*"]
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical = resource["Fn::GetAtt"][0]
        kind = RESOURCES[logical]["Type"]
        if kind == "AWS::DynamoDB::Table":
            return [f"dynamodb:table/{physical[logical]}"]
        if kind == "AWS::SQS::Queue":
            return [f"sqs:{physical[logical].rsplit('/', 1)[-1]}"]
        if kind == "AWS::S3::Bucket":
            return [f"s3:{physical[logical]}"]
        return [f"other:{logical}"]
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        text = resource["Fn::Sub"]
        assert text.startswith("${DataBucket.Arn}"), text
        return [f"s3:{physical['DataBucket']}{text.removeprefix('${DataBucket.Arn}')}"]
    return [f"other:{resource}"]


def allowed(role: str, action: str, resource: str, condition: dict, physical: dict[str, str]) -> bool:
    for policy in RESOURCES[role]["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            if statement["Effect"] != "Allow" or not any(fnmatch.fnmatchcase(action, a) for a in actions):
                continue
            if not any(fnmatch.fnmatchcase(resource, p) for p in resolve(statement["Resource"], physical)):
                continue
            like = (statement.get("Condition") or {}).get("StringLike", {})
            if all(
                condition.get(key) is not None and any(fnmatch.fnmatchcase(condition[key], p) for p in patterns)
                for key, patterns in like.items()
            ):
                return True
    return False


@pytest.fixture
def conversion_sandboxes():
    """Metrica and the VK tracker (Google's Data Manager would hand the spend import Google credentials too)."""
    metrica = MetricaSandbox(goals={"deal_won": "action"}).start()
    tracker = VkTrackerSandbox(goals={"deal_won"}).start()
    # The ad audiences' platforms (build_segments): VK's token is cached in the bucket beside the spend import's.
    vk, audience = VkAdsSandbox(campaigns=2).start(), YandexAudienceSandbox().start()
    yield {
        "METRICA_TOKEN": metrica.token, "METRICA_COUNTER_ID": metrica.counter_id, "METRICA_GOAL": "deal_won",
        "METRICA_API_URL": metrica.api_url,
        "VK_ADS_PIXEL_ID": tracker.pixel_id, "VK_ADS_GOAL": "deal_won", "VK_ADS_TRACKER_URL": tracker.tracker_url,
        "VK_ADS_CLIENT_ID": vk.client[0], "VK_ADS_CLIENT_SECRET": vk.client[1], "VK_ADS_API_URL": vk.api_url,
        "YANDEX_AUDIENCE_TOKEN": audience.token, "YANDEX_AUDIENCE_API_URL": audience.api_url,
    }  # fmt: skip
    audience.stop()
    vk.stop()
    tracker.stop()
    metrica.stop()


def test_every_call_each_function_makes_is_allowed_by_its_own_role(make_stack, calls, conversion_sandboxes):
    stack = make_stack(parameters={"RateLimitPerContact": "1"}, environment=conversion_sandboxes)
    form = f"{stack.url}/v1/forms/contact/submissions"
    ivan = {"name": "Иван", "phone": "+79161234567", "email": "ivan@example.ru", "utm_source": "yandex"}
    assert requests.post(form, json=ivan, timeout=60).status_code == 202
    assert requests.post(form, json={**ivan, "comment": "ещё"}, timeout=60).status_code == 429  # held
    lead = manager_lead(stack)  # the portal's own lead: an outbound event through bitrix_events
    settle(stack)
    stack.sandbox.call("crm.lead.delete", {"id": lead})  # the writer marks it deleted (crm/deleted/)
    settle(stack)
    bucket = stack.resources.physical["DataBucket"]
    csv = "date;utm_source;utm_medium;utm_campaign;cost;currency\n2026-11-20;flyer;offline;metro;1500,00;RUB\n"
    boto3.client("s3").put_object(Bucket=bucket, Key="spend/manual/inbox/leaflets.csv", Body=csv.encode())
    stack.invoke("import_ad_spend", {"date_from": str(TODAY - timedelta(days=14)), "date_to": str(TODAY)})
    stack.invoke("journey_sweep", {})
    # A deal won in January 2026 (its amount from the sandbox portal): a range run claims, sends and records it, and
    # exports the ledger; the hourly run reads the change log and the ledger's failed conversions.
    deal = stack.sandbox.call("crm.deal.add", {"fields": {"TITLE": "Кухня", "OPPORTUNITY": 120000}})
    store = JourneyStore(stack.resources.physical["JourneyTable"])
    store.put_meta(f"DEAL#{deal}", {"kind": "DEAL", "id": int(deal)})
    store.new_touches(f"DEAL#{deal}", [
        Touch("f1:form", datetime(2026, 1, 10, 9, tzinfo=UTC), "form", "paid", "yandex", "cpc",
              extra={"ym_client_id": "1700000000999000111", "rb_clickid": "rb-77"}),
        Touch("d1:won", datetime(2026, 1, 12, 9, tzinfo=UTC), "won", "crm", "crm", "stage", extra={"stage_id": "WON"}),
    ])  # fmt: skip
    sent = stack.invoke("upload_conversions", {"date_from": "2026-01-01", "date_to": "2026-01-31"})
    assert sent["platforms"]["vk_ads"]["states"] == {"accepted": 1}
    stack.invoke("upload_conversions", {})
    # Audiences configured: too few customers for either platform, but the export reads the contacts, VK's cached
    # token (private/vk_ads/) and writes its state (segments/audiences/).
    from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML

    audiences = "audiences:\n  - {name: A, platform: yandex, segments: [NEWCOMER]}\n" \
                "  - {name: B, platform: vk, segments: [NEWCOMER]}\n"  # fmt: skip
    boto3.client("s3").put_object(Bucket=bucket, Key=CONFIG_KEY,
                                  Body=DEFAULT_RULES_YAML.replace("audiences: []\n", audiences).encode())  # fmt: skip
    stack.sandbox.call("crm.contact.add", {"fields": {"NAME": "Новичок"}})  # a segment (Новичок) tonight
    # The report computes tonight's segments first (its role writes segments/); build_segments then finds them.
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-12-31"})
    segments = stack.invoke("build_segments", {})
    assert segments["status"] == "done"
    assert set(segments["audiences"]["failed"]) == {"A", "B"}
    assert "at least 2000" in segments["audiences"]["failed"]["B"]["error"]  # after the token: IAM exercised
    # The night again as if yesterday's customers had no segment and every move made a task: build_segments computes
    # (the CRM snapshot, segments/) and claims the tasks in the alerts ledger.
    previous_night_without_segments(stack.resources.physical["DataBucket"])
    again = stack.invoke("build_segments", {})
    assert again["tasks"]["created"] >= 1, again
    stack.invoke("forget_person", {"phone": "+79161234567"})
    # A post of Ivan's received before the erasure reaches the writer only now (it sat in the DLQ, say): the writer
    # drops it and deletes the raw copy capture stored, every version (privacy.erasure).
    from dataclasses import replace
    from zoneinfo import ZoneInfo

    from throughline.capture.forms import parse_submission, raw_key

    late = parse_submission("contact", ivan, submission_id="late-1", received_at=datetime(2026, 1, 5, tzinfo=UTC),
                            origin=None, default_region="RU", zone=ZoneInfo("Europe/Moscow"))  # fmt: skip
    late = replace(late, raw_key=raw_key(late))
    boto3.client("s3").put_object(Bucket=bucket, Key=late.raw_key, Body=b"{}")
    boto3.client("sqs").send_message(QueueUrl=stack.resources.physical["WritesQueue"], MessageBody=json.dumps(
        late.to_message()), MessageGroupId="late", MessageDeduplicationId="late-1")  # fmt: skip
    settle(stack)
    assert ("bitrix_writer", "s3", "DeleteObjects") in {call[:3] for call in calls}

    physical = stack.resources.physical
    queues = {url.rsplit("/", 1)[-1]: logical for logical, url in physical.items() if str(url).startswith("http")}
    ran = {function for function, *_ in calls}
    assert ran >= {
        "capture_form", "bitrix_writer", "bitrix_events", "import_ad_spend", "journey_sweep", "build_roi_report",
        "forget_person", "upload_conversions", "build_segments",
    }  # fmt: skip
    assert ("bitrix_writer", "s3", "PutObject") in {call[:3] for call in calls}  # the deletion marker
    denied = set()
    for function, service, operation, params in calls:
        if service == "secretsmanager":
            continue
        role = RESOURCES[stack.resources.functions[function].logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        for action, resource, condition in needs(service, operation, params, queues):
            if not allowed(role, action, resource, condition, physical):
                denied.add(f"{function}: {action} on {resource} {condition or ''}".strip())
    assert not denied, "\n".join(sorted(denied))
