"""Faults on the local stack that no other test injects: AWS errors (S3, SQS, DynamoDB) on each path, the writer dying
between «lead created» and «message deleted», a webhook lost because its queue was down, an ad platform down in the
middle of an import, and S3 failing half-way through the spend partitions. After each: every submission one lead,
every touch once, spend partitions whole. The index of every fault and its test (here or elsewhere) is
docs/faults.md.

AWS errors are raised in-process, where the code calls botocore (``BaseClient._make_api_call``), after botocore's own
retries would have given up: the error the handler really sees. Each test takes seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal

import boto3
import botocore.client
import pytest
import requests
from botocore.exceptions import ClientError

from local.ad_sandboxes import GoogleAdsSandbox, VkAdsSandbox, YandexDirectSandbox
from local.stack import sqs_record
from tests.integration.test_report_function import report_stack  # noqa: F401 (a fixture)
from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings
from throughline.spend.importer import SpendImportFailed

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"


# -- fault injection ------------------------------------------------------------------------------------------------


class AwsFaults:
    """Fail the next ``times`` calls of ``service``'s ``operations`` with an AWS error code (counted in ``raised``)."""

    def __init__(self) -> None:
        self.rules: list[dict] = []
        self.raised: dict[str, int] = {}

    def fail(
        self,
        service: str,
        operations: set[str],
        code: str,
        times: int = 10**6,
        after: int = 0,
        when: Callable[[], bool] = lambda: True,
    ) -> None:
        """``after``: let that many matching calls through first; ``when``: fail only while it says so."""
        self.rules.append(
            {"service": service, "operations": operations, "code": code, "times": times, "skip": after, "when": when}
        )

    def clear(self) -> None:
        self.rules.clear()

    def check(self, service: str, operation: str) -> None:
        for rule in self.rules:
            if rule["service"] != service or operation not in rule["operations"] or rule["times"] <= 0:
                continue
            if not rule["when"]():
                continue
            if rule["skip"] > 0:
                rule["skip"] -= 1
                return
            rule["times"] -= 1
            self.raised[operation] = self.raised.get(operation, 0) + 1
            status = 400 if rule["code"].endswith("Exception") or rule["code"] == "ThrottlingException" else 503
            error = {"Code": rule["code"], "Message": "injected"}
            raise ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@pytest.fixture
def aws_faults(monkeypatch) -> AwsFaults:
    faults = AwsFaults()
    original = botocore.client.BaseClient._make_api_call

    def make_api_call(client, operation_name, api_params):
        faults.check(client.meta.service_model.service_name, operation_name)
        return original(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    return faults


class Crash(BaseException):
    """The Lambda runtime killing the invocation (a timeout, out of memory): nothing after it runs, no except
    Exception catches it."""


def _text_of(request) -> str:
    body = request.body or b""
    return (request.url or "") + (body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body))


@contextlib.contextmanager
def crash_after_the_portal_answers(method: str) -> Iterator[list[str]]:
    """The first request to the portal calling ``method`` is done and answered, then the invocation dies."""
    original = requests.Session.send
    crashed: list[str] = []

    def send(session, request, **kwargs):
        response = original(session, request, **kwargs)
        if not crashed and method in _text_of(request):
            crashed.append(method)
            raise Crash(f"killed after {method} answered")
        return response

    requests.Session.send = send
    try:
        yield crashed
    finally:
        requests.Session.send = original


# -- helpers --------------------------------------------------------------------------------------------------------


def post(stack, body: dict) -> requests.Response:
    return requests.post(f"{stack.url}/v1/forms/contact/submissions", json=body)


def receive(stack, visibility: int = 1) -> list[dict]:
    source = stack.resources.queue_sources[0]
    return (
        boto3.client("sqs")
        .receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=visibility,
            MessageSystemAttributeNames=["All"],
        )
        .get("Messages", [])
    )


def invoke(stack, messages: list[dict]) -> set[str]:
    """The SQS event source: invoke, delete what succeeded; the failed (or a dead invocation's) come back."""
    source = stack.resources.queue_sources[0]
    result = stack.invoke("bitrix_writer", {"Records": [sqs_record(m, source) for m in messages]})
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    for message in messages:
        if message["MessageId"] not in failed:
            boto3.client("sqs").delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return failed


def drain(stack, *, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages := receive(stack):
            invoke(stack, messages)
        elif not stack.queue_depth(boto3.client("sqs"), stack.resources.queue_sources[0].queue_url):
            return
        else:
            time.sleep(0.2)  # in flight: waiting out a visibility timeout
    raise AssertionError("the queue did not drain")


def touches(lead: dict) -> list:
    return JourneyStore(get_settings().journey_table or "").journey(f"LEAD#{lead['ID']}")


def assert_one_lead_and_one_touch_each(stack, phones: list[str]) -> None:
    leads = stack.sandbox.entities("lead")
    assert sorted(lead["PHONE"][0]["VALUE"] for lead in leads) == sorted(phones)  # each exactly once
    for lead in leads:
        assert len(lead[JOURNEY].splitlines()) == 1, lead[JOURNEY]
        assert [touch.kind for touch in touches(lead)] == ["form"]
    assert stack.sandbox.timeline_comments() == []  # no repeat request was imagined


PHONES = [f"+7916555000{index}" for index in range(3)]


def post_people(stack) -> None:
    for phone in PHONES:
        assert post(stack, {"phone": phone, "utm_source": "yandex", "utm_medium": "cpc"}).status_code == 202


# -- the writer -----------------------------------------------------------------------------------------------------


def test_the_writer_killed_after_the_leads_are_created_and_before_the_messages_are_deleted_makes_each_once(stack):
    post_people(stack)
    messages = receive(stack)
    assert len(messages) == 3
    with crash_after_the_portal_answers("crm.lead.add") as crashed, pytest.raises(Crash):
        invoke(stack, messages)  # the leads exist; nothing was deleted, nothing recorded after the answer
    assert crashed == ["crm.lead.add"] and len(stack.sandbox.entities("lead")) == 3
    drain(stack)  # the same messages, after their visibility timeout
    assert_one_lead_and_one_touch_each(stack, PHONES)


@contextlib.contextmanager
def watch_the_portal(method: str) -> Iterator[list[str]]:
    """Notes (in the list it yields) each answered request to the portal calling ``method``."""
    original = requests.Session.send
    answered: list[str] = []

    def send(session, request, **kwargs):
        response = original(session, request, **kwargs)
        if method in _text_of(request):
            answered.append(method)
        return response

    requests.Session.send = send
    try:
        yield answered
    finally:
        requests.Session.send = original


@pytest.mark.parametrize("moment", ["before the portal", "after the leads are created"])
def test_dynamodb_throttling_in_the_writer_retries_the_messages_into_one_lead_and_one_touch_each(
    stack, aws_faults, moment
):
    post_people(stack)
    writes = {"PutItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem", "DeleteItem"}
    throttled = "ProvisionedThroughputExceededException"
    messages = receive(stack)
    with watch_the_portal("crm.lead.add") as added:
        if moment == "before the portal":  # throttled all along: the per-person leases cannot even be taken
            aws_faults.fail("dynamodb", writes, throttled)
        else:  # the leads exist; the first three writes after it (their bookkeeping) are throttled
            aws_faults.fail("dynamodb", writes, throttled, times=3, when=lambda: bool(added))
        failed = invoke(stack, messages)
    assert aws_faults.raised and failed == {m["MessageId"] for m in messages}  # none was taken as written
    assert len(stack.sandbox.entities("lead")) == (0 if moment == "before the portal" else 3)
    aws_faults.clear()
    drain(stack)
    assert_one_lead_and_one_touch_each(stack, PHONES)


def test_an_sqs_error_on_the_writers_retry_scheduling_loses_nothing(stack, aws_faults):
    # The portal is down, so the writer fails the batch and tries to set each message's retry delay (SQS
    # ChangeMessageVisibility): that fails too. The messages still come back and end as one lead each.
    post_people(stack)
    messages = receive(stack)
    stack.sandbox.start_outage()
    aws_faults.fail("sqs", {"ChangeMessageVisibility", "ChangeMessageVisibilityBatch"}, "ServiceUnavailable")
    assert invoke(stack, messages) == {m["MessageId"] for m in messages}
    aws_faults.clear()
    stack.sandbox.end_outage()
    drain(stack, timeout=90)
    assert_one_lead_and_one_touch_each(stack, PHONES)


def test_the_portals_operating_time_limit_defers_the_writes_a_minute_or_more_and_then_each_is_one_lead(
    make_stack, monkeypatch
):
    # 429 OPERATION_TIME_LIMIT: crm.lead.add has used its 480 s of the last ten minutes. The writer must not retry
    # within the invocation nor on its usual back-off (1-8 s locally): with no answer of ours that said when the
    # basket drops out (the limit came inside a batch, before any crm.lead.add of ours), it waits a minute, doubling.
    stack = make_stack(poll_queues=False, sandbox_options={"operating_limit_seconds": 480.0})
    stack.sandbox._operating.record("crm.lead.add", 481.0)  # the portal's own busy ten minutes (white box)
    post_people(stack)
    delays: list[int] = []
    original = botocore.client.BaseClient._make_api_call

    def make_api_call(client, operation_name, api_params):
        if operation_name == "ChangeMessageVisibility":
            delays.append(api_params["VisibilityTimeout"])
        return original(client, operation_name, api_params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", make_api_call)
    messages = receive(stack, visibility=30)
    assert invoke(stack, messages) == {m["MessageId"] for m in messages}
    assert stack.sandbox.entities("lead") == [] and stack.sandbox.stats()["operation_time_limited"] > 0
    assert len(delays) == 3 and all(delay >= 60 for delay in delays)  # the penalty, not the usual back-off
    # Ten minutes later: the basket dropped out (the portal) and the messages are visible again (the queue).
    stack.sandbox._operating.reset()
    sqs = boto3.client("sqs")
    for message in messages:
        sqs.change_message_visibility(
            QueueUrl=stack.resources.queue_sources[0].queue_url, ReceiptHandle=message["ReceiptHandle"],
            VisibilityTimeout=0,
        )  # fmt: skip
    drain(stack)
    assert_one_lead_and_one_touch_each(stack, PHONES)


# -- capture --------------------------------------------------------------------------------------------------------


def test_s3_down_when_a_form_is_posted_is_not_seen_by_the_site_and_the_writer_waits_for_the_copy(stack, aws_faults):
    # The raw copy travels in the message: capture does not touch S3, the writer puts the copy before the lead, and
    # an S3 error there returns the message (copy included) until the copy is stored; then one lead.
    body = {"phone": PHONES[0], "utm_source": "yandex", "utm_medium": "cpc"}
    aws_faults.fail("s3", {"PutObject"}, "SlowDown", times=1)
    accepted = post(stack, body)
    assert accepted.status_code == 202 and aws_faults.raised == {}
    [message] = receive(stack)
    assert invoke(stack, [message]) == {message["MessageId"]}  # the copy could not be put: no lead yet
    assert aws_faults.raised == {"PutObject": 1} and stack.sandbox.entities("lead") == []
    drain(stack)
    assert_one_lead_and_one_touch_each(stack, PHONES[:1])
    key = json.loads(message["Body"])["submission"]["raw_key"]
    bucket = stack.resources.physical["DataBucket"]
    copy = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())
    assert copy["submission_id"] == accepted.json()["submission_id"]


@pytest.mark.parametrize("operation", ["PutItem"])  # the idempotency record and the content's claim
def test_dynamodb_down_for_the_idempotency_claim_answers_503_and_the_retry_makes_one_lead(stack, aws_faults, operation):
    body = {"phone": PHONES[1], "utm_source": "yandex", "utm_medium": "cpc"}
    aws_faults.fail("dynamodb", {operation}, "InternalServerError", times=1)
    first = post(stack, body)
    assert (first.status_code, aws_faults.raised) == (503, {operation: 1})  # nothing could be saved
    assert receive(stack, visibility=0) == []  # and nothing was queued without it
    assert post(stack, body).status_code == 202
    drain(stack)
    assert_one_lead_and_one_touch_each(stack, PHONES[1:2])


def test_dynamodb_down_for_the_rate_limit_counters_lets_the_post_pass_once(stack, aws_faults):
    """The rate limits are a defence, not a gate: a counter that cannot be counted must not turn a real lead away."""
    body = {"phone": PHONES[2], "utm_source": "yandex", "utm_medium": "cpc"}
    aws_faults.fail("dynamodb", {"UpdateItem"}, "InternalServerError", times=2)  # the IP's and the contact's counter
    assert post(stack, body).status_code == 202
    assert aws_faults.raised == {"UpdateItem": 2}
    drain(stack)
    assert_one_lead_and_one_touch_each(stack, PHONES[2:3])


# -- the journey ----------------------------------------------------------------------------------------------------


def test_webhooks_refused_while_the_queue_is_down_are_restored_by_the_sweep_once(make_stack, aws_faults):
    from datetime import datetime
    from zoneinfo import ZoneInfo

    stack = make_stack()
    stack.sandbox.set_clock(datetime(2026, 10, 25, 12, 0, tzinfo=ZoneInfo("Europe/Moscow")))
    lead = stack.sandbox.call(
        "crm.lead.add", {"fields": {"TITLE": "Звонок", "SOURCE_ID": "CALL", "PHONE": [{"VALUE": "+79997770000"}]}}
    )
    stack.sandbox.wait_for_outbound(10)
    assert stack.wait_until_idle(60)
    stack.sandbox.set_clock_offset(0)
    aws_faults.fail("sqs", {"SendMessage", "SendMessageBatch"}, "ServiceUnavailable")  # bitrix_events answers 503
    for index in range(3):
        stack.sandbox.call(
            "crm.activity.add",
            {
                "fields": {
                    "OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "DIRECTION": 2, "SUBJECT": f"Звонок {index}",
                    "RESPONSIBLE_ID": 1, "START_TIME": f"2026-11-0{index + 1}T10:00:00+03:00", "COMPLETED": "Y",
                    "COMMUNICATIONS": [{"VALUE": "+79997770000", "ENTITY_TYPE_ID": 1, "ENTITY_ID": lead}],
                }
            },
        )  # fmt: skip
    stack.sandbox.wait_for_outbound(10)
    assert aws_faults.raised  # the webhooks came and were refused: Bitrix24 does not send them again
    aws_faults.clear()
    assert stack.wait_until_idle(60)
    store = JourneyStore(get_settings().journey_table or "")
    assert not any(touch.kind == "outgoing_call" for touch in store.journey(f"LEAD#{lead}"))
    assert stack.invoke("journey_sweep", {})["touches_added"] >= 3
    for _ in range(3):
        stack.sandbox.wait_for_outbound(10)
        assert stack.wait_until_idle(60)
    assert stack.invoke("journey_sweep", {})["touches_added"] == 0  # a second sweep finds nothing more
    for _ in range(2):
        stack.sandbox.wait_for_outbound(10)
        assert stack.wait_until_idle(60)
    calls = [touch for touch in store.journey(f"LEAD#{lead}") if touch.kind == "outgoing_call"]
    assert sorted(touch.extra.get("subject", touch.detail) for touch in calls) == [f"Звонок {i}" for i in range(3)]
    [record] = [row for row in stack.sandbox.entities("lead") if int(row["ID"]) == lead]
    assert len(record[JOURNEY].splitlines()) == len(store.journey(f"LEAD#{lead}"))  # every touch once in the field


# -- the spend import -----------------------------------------------------------------------------------------------

GOOGLE_CUSTOMER = "1112223334"
FIRST, LAST = date(2026, 6, 1), date(2026, 6, 10)


@pytest.fixture
def ads():
    with (
        YandexDirectSandbox({"client-one": ("RUB", 4)}, online_max_rows=100, offline_polls=1, retry_in=0) as direct,
        GoogleAdsSandbox({GOOGLE_CUSTOMER: ("RUB", "Europe/Moscow", 4)}) as google,
        VkAdsSandbox(campaigns=4) as vk,
    ):
        yield direct, google, vk


@pytest.fixture
def spend_stack(make_stack, ads):
    direct, google, vk = ads
    environment = {
        "YANDEX_DIRECT_TOKEN": "agency-token", "YANDEX_DIRECT_API_URL": direct.api_url,
        "YANDEX_DIRECT_CLIENT_LOGINS": "client-one",
        "GOOGLE_ADS_CLIENT_ID": "sandbox-client-id", "GOOGLE_ADS_CLIENT_SECRET": "sandbox-client-secret",
        "GOOGLE_ADS_REFRESH_TOKEN": "sandbox-refresh-token", "GOOGLE_ADS_CUSTOMER_IDS": GOOGLE_CUSTOMER,
        "GOOGLE_ADS_API_URL": google.api_url("v26"), "GOOGLE_OAUTH_TOKEN_URL": google.token_url,
        "VK_ADS_CLIENT_ID": "vk-sandbox-client", "VK_ADS_CLIENT_SECRET": "vk-sandbox-secret",
        "VK_ADS_API_URL": vk.api_url,
    }  # fmt: skip
    return make_stack(poll_queues=False, environment=environment)


def partitions(stack) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack.resources.physical["DataBucket"]
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="spend/platform=")
    keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def day_cost(body: bytes) -> Decimal:
    """A partition's spend; a torn object fails to decompress here."""
    lines = gzip.decompress(body).decode().splitlines()
    return sum((json.loads(line, parse_float=Decimal)["cost"] for line in lines), Decimal(0))


def assert_whole(stack, expected: dict[str, Callable[[date], Decimal]], platforms: set[str]) -> None:
    """Every stored partition holds exactly its day's spend (never a part of it), for the given platforms."""
    stored = partitions(stack)
    assert {key.split("/")[1].removeprefix("platform=") for key in stored} == platforms
    for key, body in stored.items():
        platform = key.split("/")[1].removeprefix("platform=")
        day = date.fromisoformat(next(p for p in key.split("/") if p.startswith("date=")).removeprefix("date="))
        assert day_cost(body) == expected[platform](day), key


def expected_costs(ads) -> dict[str, Callable[[date], Decimal]]:
    direct, google, vk = ads
    return {
        "yandex_direct": lambda day: direct.expected_cost("client-one", day, day),
        "google_ads": lambda day: Decimal(google.expected_micros(GOOGLE_CUSTOMER, day, day)) / 1_000_000,
        "vk_ads": lambda day: vk.expected_cost(day, day),
    }


def test_a_platform_down_during_the_import_fails_it_alone_and_the_rerun_stores_whole_partitions(
    spend_stack, ads, monkeypatch
):
    direct, _, _ = ads
    # Its client waits the 10 s Yandex Direct advises between attempts: noted, not slept (the sandbox's time scale).
    from throughline.spend import yandex_direct

    waits: list[float] = []
    original = yandex_direct.YandexDirectSource.__init__
    monkeypatch.setattr(
        yandex_direct.YandexDirectSource,
        "__init__",
        lambda source, *args, **kwargs: original(source, *args, **{**kwargs, "sleep": waits.append}),
    )
    direct.faults = [(503, 1000)] * 50  # Yandex Direct answers «server error» to every report request
    event = {"date_from": FIRST.isoformat(), "date_to": LAST.isoformat()}
    with pytest.raises(SpendImportFailed, match="yandex_direct"):
        spend_stack.invoke("import_ad_spend", event)
    assert waits == [10.0] * 4  # five attempts, then it gave up on this platform for the run
    assert_whole(spend_stack, expected_costs(ads), {"google_ads", "vk_ads"})
    direct.faults = []  # it is back
    assert spend_stack.invoke("import_ad_spend", event)["ok"] is True
    assert_whole(spend_stack, expected_costs(ads), {"yandex_direct", "google_ads", "vk_ads"})
    assert len(partitions(spend_stack)) == 10 * 3


def test_s3_failing_half_way_through_the_partitions_leaves_each_whole_and_the_rerun_completes(
    spend_stack, ads, aws_faults
):
    aws_faults.fail("s3", {"PutObject"}, "InternalError", after=12)  # the thirteenth partition write on fails
    event = {"date_from": FIRST.isoformat(), "date_to": LAST.isoformat()}
    with pytest.raises(SpendImportFailed):
        spend_stack.invoke("import_ad_spend", event)
    assert aws_faults.raised["PutObject"] > 0
    stored = partitions(spend_stack)
    assert 0 < len(stored) < 30
    assert_whole(spend_stack, expected_costs(ads), {key.split("/")[1].removeprefix("platform=") for key in stored})
    aws_faults.clear()
    assert spend_stack.invoke("import_ad_spend", event)["ok"] is True
    assert_whole(spend_stack, expected_costs(ads), {"yandex_direct", "google_ads", "vk_ads"})
    assert len(partitions(spend_stack)) == 30


# -- the report -----------------------------------------------------------------------------------------------------


def latest_report(s3, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/roi/latest/").get("Contents", [])]
    return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys)}


def test_a_report_dying_half_way_through_latest_leaves_the_previous_one_whole(report_stack, aws_faults):  # noqa: F811
    stack, s3, bucket = report_stack
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    before = latest_report(s3, bucket)
    assert len(before) >= 3  # the page, the JSON, the CSV
    aws_faults.fail("s3", {"CopyObject"}, "InternalError", after=1)  # one file of latest/ replaced, then S3 fails
    with pytest.raises(ClientError):
        stack.invoke("build_roi_report", {"date_from": "2026-11-10", "date_to": "2026-11-12"})
    assert aws_faults.raised == {"CopyObject": 1}
    assert latest_report(s3, bucket) == before  # all of the previous run's, none of the half-copied one's
    aws_faults.clear()
    stack.invoke("build_roi_report", {"date_from": "2026-11-10", "date_to": "2026-11-12"})
    after = latest_report(s3, bucket)
    assert after.keys() == before.keys() and after != before
    [folder] = {
        key.rsplit("/", 1)[0]
        for key in (o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/roi/")["Contents"])
        if "/latest/" not in key and key.endswith("roi.json")
    }  # the run's dated folder (the day it ran: both runs wrote it, the last one last)
    dated = {key.replace("reports/roi/latest", folder): body for key, body in after.items()}
    stored = {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in dated}
    assert stored == dated  # latest/ is that one run's, file for file
