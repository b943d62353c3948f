"""The nightly order: the report (05:00) computes tonight's segments on the CRM snapshot it has just refreshed, under
its run lock, so its segments section is of the same night; build_segments (05:10 on) then finds them computed and
only creates the tasks and writes back. Before, the section read the previous night's snapshot (a night behind)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from throughline.adapters.report_store import S3Objects
from throughline.bitrix24.client import Bitrix24Client
from throughline.config import Settings
from throughline.report.job import run_report
from throughline.segments.fields import setup_report
from throughline.segments.job import STATE_KEY, run_segments, snapshot_key

pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
MSK = ZoneInfo("Europe/Moscow")
REPORT = datetime(2026, 12, 6, 5, 0, tzinfo=MSK)
SEGMENTS = REPORT + timedelta(minutes=10)


@pytest.fixture
def objects(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
        yield S3Objects("data", s3)


def test_the_report_reads_the_segments_of_its_own_night(objects) -> None:
    with Sandbox(app_token="tok", seed=41) as sandbox:
        settings = Settings(data_bucket="data", bitrix24_webhook_url=sandbox.webhook_url, person_key_secret="k" * 32)
        client = Bitrix24Client(sandbox.webhook_url)
        setup_report(client, objects)
        # One win on 7 June: Разовый on 6 December (182 days), Спящий on the 7th (183).
        seed_history(sandbox, "contact", [{"NAME": "К", "DATE_CREATE": "2025-11-01T10:00:00+03:00"}])
        won = {"TITLE": "Ж", "CONTACT_ID": 1, "STAGE_ID": "WON", "OPPORTUNITY": 5000, "CLOSEDATE": "2026-06-07"}
        seed_history(sandbox, "deal", [{**won, "DATE_CREATE": "2026-05-01T10:00:00+03:00"}])

        for night, expected in ((0, "Разовый"), (1, "Спящий")):
            day = (REPORT + timedelta(days=night)).date().isoformat()
            result = run_report(settings, client, objects, now=lambda n=night: REPORT + timedelta(days=n))
            section = result.report.segments
            assert section is not None and section.snapshot == day
            assert {row.label: row.customers for row in section.rows}[expected] == 1
            published = json.loads(result.files["roi.json"])
            assert published["segments"]["snapshot"] == day
            assert objects.get(snapshot_key(day)) is not None
            # build_segments at 05:10: nothing recomputed (no "customers" in its summary), only the write-back.
            summary = run_segments(settings, client, objects, now=lambda n=night: SEGMENTS + timedelta(days=n))
            assert "customers" not in summary and summary["status"] == "done", summary
            assert summary["writeback"]["written"] == 1
            assert json.loads(objects.get(STATE_KEY))["last"] == day
        assert [(move.from_label, move.to_label) for move in section.moves] == [("Разовый", "Спящий")]


def test_an_unfinished_earlier_night_is_not_replaced_by_the_report(objects) -> None:
    from throughline.segments.job import compute_for_report, segment_options

    objects.put(STATE_KEY, json.dumps({"last": "2026-12-05", "writeback": {"day": "2026-12-05", "done": False,
                                                                           "position": 3}}).encode())  # fmt: skip
    client = Bitrix24Client("http://127.0.0.1:9/rest/1/x/")  # never called: nothing listens there
    done = compute_for_report(client, objects, options=segment_options(Settings()), started=REPORT)
    assert done == "waiting" and client.calls == 0
    assert json.loads(objects.get(STATE_KEY))["last"] == "2026-12-05"
