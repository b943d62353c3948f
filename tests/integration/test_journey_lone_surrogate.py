"""A lone surrogate in CRM text (JSON's "\\ud83d": an emoji cut in half by a portal's truncation of a title or an
activity's subject) reaches no store as such: it becomes U+FFFD where the text enters a touch and the CRM snapshot,
so the record's journey, the night's export, the report and the journey field all go on."""

from __future__ import annotations

import gzip
import json
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import boto3
import pytest

from tests.integration.test_journey_events import JOURNEY, PORTAL_START, call, lines, settle, store
from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.report_store import S3Objects
from throughline.config import get_settings
from throughline.journey.export import export_journeys
from throughline.journey.lines import Touch
from throughline.report.crm import read_rows, read_snapshot

CUT = "\ud83d"  # the first half of 🔥 (U+1F525): a str json.loads makes of "\ud83d", with no UTF-8 form
PERIOD = {"date_from": "2026-10-01", "date_to": "2026-11-30"}


def exported(bucket: str, latest: dict) -> list[dict]:
    """Every touch line of the journey export ``latest`` names."""
    s3 = boto3.client("s3")
    parts = [gzip.decompress(s3.get_object(Bucket=bucket, Key=part)["Body"].read()) for part in latest["parts"]]
    return [json.loads(line) for part in parts for line in part.splitlines()]


@pytest.fixture
def live(make_stack):
    stack = make_stack()
    stack.sandbox.set_clock(PORTAL_START)
    return stack


def test_a_cut_emoji_in_a_title_and_a_subject_flows_to_the_store_the_export_the_report_and_the_field(live):
    tagged = live.sandbox.call("crm.lead.add", {"fields": {
        "TITLE": f"Заявка {CUT}", "UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": f"brand{CUT}",
        "SOURCE_ID": "ADVERTISING", "PHONE": [{"VALUE": "+79990000001"}]}})  # fmt: skip
    untagged = live.sandbox.call("crm.lead.add", {"fields": {
        "TITLE": "Звонок", "SOURCE_ID": "CALL", "SOURCE_DESCRIPTION": f"Звонок {CUT} с сайта",
        "PHONE": [{"VALUE": "+79990000002"}]}})  # fmt: skip
    call(live, (1, tagged), f"Консультация {CUT}", start="2026-11-17T12:00:00+03:00")
    # A stage added by an integration, its code and name cut too: the stage line, #meta and the report's funnel.
    live.sandbox.call("crm.status.add", {"fields": {"ENTITY_ID": "STATUS", "STATUS_ID": f"UC_CUT{CUT}",
                                                    "NAME": f"Думает {CUT}", "SORT": 15}})  # fmt: skip
    live.sandbox.call("crm.lead.update", {"id": untagged, "fields": {"STATUS_ID": f"UC_CUT{CUT}"}})
    settle(live)
    deal = live.sandbox.convert_lead(tagged, {"OPPORTUNITY": "1000.00", "CURRENCY_ID": "RUB"})
    live.sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "WON", "CLOSEDATE": "2026-11-20"}})
    settle(live)

    # The store: every text as sent, the half emoji replaced.
    touches = {touch.touch_id: touch for touch in store().journey(f"LEAD#{tagged}")}
    assert touches[f"lead:{tagged}:created"].campaign == "brand\ufffd"
    assert touches[f"lead:{tagged}:created"].detail == "Заявка \ufffd"
    [activity] = [touch for touch in touches.values() if touch.touch_id.startswith("activity:")]
    assert activity.detail == "Консультация \ufffd"
    [created] = [touch for touch in store().journey(f"DEAL#{deal}") if touch.kind == "deal_created"]
    assert created.detail == "«Заявка \ufffd»"
    first, moved = store().journey(f"LEAD#{untagged}")
    assert first.detail == "Звонок \ufffd с сайта" and moved.detail == "«Думает \ufffd»"
    assert moved.extra["stage_id"] == "UC_CUT\ufffd"
    assert store().metas([f"LEAD#{untagged}"])[f"LEAD#{untagged}"]["stage"] == "UC_CUT\ufffd"

    # The journey fields in Bitrix24.
    assert lines(live, "lead", tagged)[0].endswith(" — Яндекс — CPC — «brand\ufffd»")
    assert "17.11.2026 — Телефон — Исходящий звонок — Консультация \ufffd" in lines(live, "lead", tagged)
    assert lines(live, "lead", untagged)[0].endswith(" — Звонок \ufffd с сайта")
    assert lines(live, "lead", untagged)[1].endswith(" — «Думает \ufffd»")
    assert any(line.endswith(" — «Заявка \ufffd»") for line in lines(live, "deal", deal))
    assert all(CUT not in (row.get(JOURNEY) or "") for row in live.sandbox.entities("lead"))

    # The night: the export, the CRM snapshot and the report.
    run = live.invoke("build_roi_report", PERIOD)
    assert run["period"] == PERIOD
    s3 = boto3.client("s3")
    bucket = get_settings().data_bucket
    latest = json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())
    assert {"brand\ufffd", "Заявка \ufffd", "Консультация \ufffd", "«Заявка \ufffd»", "Звонок \ufffd с сайта"} <= {
        row.get(name) for row in exported(bucket, latest) for name in ("campaign", "detail")
    }
    objects = S3Objects(bucket)
    leads = {int(row["ID"]): row for row in read_snapshot(objects, "lead")}
    assert leads[tagged]["UTM_CAMPAIGN"] == "brand\ufffd"
    rows = read_rows(objects, "lead")
    assert {row[0] for row in rows} >= {str(tagged), str(untagged)} and rows.from_copy >= 1 and rows.from_json == 0
    report = json.loads(s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read())
    assert report["headline"]["won_deals"] == 1 and Decimal(report["attribution"]["conversions"]) == 1
    campaigns = json.dumps(report, ensure_ascii=False)
    assert "brand\ufffd" in campaigns and "Думает \ufffd" in campaigns and CUT not in campaigns


class _OlderStore(JourneyStore):
    """A journey table holding a lone surrogate in a touch's texts (written before touches were made storable; a
    store that took it): what the export reads of ``DEAL#5``."""

    def _aged(self, item: dict) -> dict:
        if item.get("entity") == "DEAL#5" and not str(item.get("touch", "#")).startswith("#"):
            return {**item, "detail": f"«Сделка {CUT}»", "campaign": f"brand{CUT}"}
        return item

    def scan(self, segment: int = 0, total_segments: int = 1):
        return (self._aged(item) for item in super().scan(segment, total_segments))

    def entity_items(self, entity: str) -> list[dict]:
        return [self._aged(item) for item in super().entity_items(entity)]


def test_a_stored_lone_surrogate_does_not_stop_the_export_full_or_incremental(stack):
    settings = get_settings()
    journeys = _OlderStore(settings.journey_table or "")
    journeys.put_meta("DEAL#5", {"kind": "deal", "id": 5, "lead_id": None, "person_key": None})
    won = Touch(touch_id="deal:5:history:3", at=datetime(2026, 11, 20, tzinfo=UTC), kind="won", channel="crm",
                source="crm", medium="stage", detail="«Сделка»")  # fmt: skip
    journeys.new_touches("DEAL#5", [won])
    for day in (date(2026, 11, 29), date(2026, 11, 30)):  # the first run is full, the next one incremental
        journeys.new_touches("DEAL#5", [replace(won, touch_id=f"deal:5:history:{day.day}")])  # a change to export
        latest = export_journeys(journeys, settings.data_bucket, day, segments=2)
        rows = exported(settings.data_bucket, latest)
        assert rows and {row["detail"] for row in rows} == {"«Сделка \ufffd»"}, latest["mode"]
        assert {row["campaign"] for row in rows} == {"brand\ufffd"}
    assert latest["mode"] == "incremental"
