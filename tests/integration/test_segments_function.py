"""The segments function and command on the local stack (moto S3, the Bitrix24 sandbox): bitrix-setup writes the
rules and fields, the function computes and writes back, the command continues or reports done, and the next report
carries the segments section."""

from __future__ import annotations

import json

import boto3

from local.bitrix24_sandbox.server import seed_history
from throughline.bitrix24.client import Bitrix24Client
from throughline.segments.fields import SEGMENT_FIELD, SIZE_FIELD
from throughline.segments.rules import CONFIG_KEY


def test_setup_function_command_and_report_on_the_local_stack(make_stack, capsys) -> None:
    from throughline.__main__ import main

    stack = make_stack(poll_queues=False)
    bucket = stack.resources.physical["DataBucket"]
    s3 = boto3.session.Session().client("s3")
    seed_history(stack.sandbox, "contact", [{"NAME": f"К{n}", "DATE_CREATE": "2026-01-10T10:00:00+03:00"}
                                            for n in range(1, 5)])  # fmt: skip
    seed_history(stack.sandbox, "deal", [
        {"CONTACT_ID": 1, "STAGE_ID": "WON", "OPPORTUNITY": 1000, "CLOSEDATE": "2026-11-20",
         "DATE_CREATE": "2026-11-01T10:00:00+03:00"},
        {"CONTACT_ID": 2, "STAGE_ID": "NEW", "DATE_CREATE": "2026-11-01T10:00:00+03:00"},
    ])  # fmt: skip

    assert main(["bitrix-setup"]) == 0
    out = capsys.readouterr().out
    assert f"segment rules: {CONFIG_KEY} written with the documented defaults" in out
    assert s3.get_object(Bucket=bucket, Key=CONFIG_KEY)["Body"].read().startswith(b"# Throughline customer segments")
    # ... beside the alerts' rules (and the writer's pre-validated copy): one bitrix-setup writes both defaults.
    assert "config/alerts.yaml" in out
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="config/")["Contents"]}
    assert keys == {CONFIG_KEY, "config/alerts.yaml", "config/alerts.realtime.json"}
    client = Bitrix24Client(stack.sandbox.webhook_url)
    for entity, field in (("contact", SEGMENT_FIELD), ("company", SIZE_FIELD)):
        found = client.call(f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": field}}).result
        assert [row["FIELD_NAME"] for row in found] == [field], entity

    result = stack.invoke("build_segments", {})
    assert result["status"] == "done" and result["segments"] == {"ONE_TIME": 1, "POTENTIAL": 1, "": 2}
    assert result["writeback"]["written"] == 2
    contacts = {int(row["ID"]): row for row in stack.sandbox.entities("contact")}
    assert contacts[1][SEGMENT_FIELD] and contacts[2][SEGMENT_FIELD] and not contacts[3][SEGMENT_FIELD]

    assert main(["segments"]) == 0  # the same day: done already, no REST call
    out = capsys.readouterr().out
    assert "status done; REST calls 0" in out
    assert main(["segments", "--audiences"]) == 0  # none configured: nothing exported, nothing run
    assert "no ad audience exported yet" in capsys.readouterr().out

    assert main(["report"]) == 0
    capsys.readouterr()
    latest = json.loads(s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read())
    rows = {row["label"]: row for row in latest["segments"]["rows"]}
    assert rows["Разовый"]["customers"] == 1 and rows["Потенциальный"]["customers"] == 1
    page = s3.get_object(Bucket=bucket, Key="reports/roi/latest/index.html")["Body"].read().decode()
    assert "<h2>Сегменты клиентов</h2>" in page


def test_a_run_while_the_report_holds_the_lock_is_busy_and_touches_nothing(make_stack) -> None:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    from throughline.adapters.report_store import S3Objects, run_lock

    stack = make_stack(poll_queues=False)
    bucket = stack.resources.physical["DataBucket"]
    s3 = boto3.session.Session().client("s3")
    objects = S3Objects(bucket, s3)
    stack.sandbox.reset_stats()
    with run_lock(objects, "the nightly report", datetime.now(ZoneInfo("Europe/Moscow")), timedelta(minutes=20)):
        result = stack.invoke("build_segments", {})
    assert result == {"date": result["date"], "status": "busy", "rest_calls": 0}
    assert stack.sandbox.stats()["requests"] == 0
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="segments/").get("Contents")
