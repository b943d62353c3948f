"""Segments against the Bitrix24 sandbox: bitrix-setup's fields and rules file, a night's run (snapshot, segments,
transitions, write-back of only what changed), a second night, and a write-back resumed after a deadline."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from benchmarks.segments import MemoryObjects, open_deal, won_deal
from benchmarks.segments import seed_customers as seed_builder
from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from throughline.bitrix24.client import Bitrix24Client, Deadline
from throughline.report import jsonlines
from throughline.report.crm import SnapshotOptions, read_snapshot
from throughline.segments.fields import RFM_FIELD, SEGMENT_FIELD, SINCE_FIELD, SIZE_FIELD, setup_report
from throughline.segments.job import STATE_KEY, SegmentOptions, build_segments, snapshot_key, transitions_key
from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML

pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
MSK = ZoneInfo("Europe/Moscow")
NIGHT = datetime(2026, 12, 6, 5, 30, tzinfo=MSK)
OPTIONS = SegmentOptions(snapshot=SnapshotOptions(stage_history=False, person_key_secret="test-secret"))


def update_batches(count: int) -> int:
    """Batches for ``count`` updates: 15 in the first (the client's 2 s guess per unknown method within its 30 s
    budget), 50 in each after the portal's answer showed their cost."""
    return 0 if count <= 0 else 1 + math.ceil(max(0, count - 15) / 50)


def seed_customers(sandbox: Sandbox, contacts: int) -> None:
    """Contacts 1..n created a year ago; contact n gets two big wins (VIP), every 5th two small wins (Активный),
    every 7th one win (Разовый), every 11th an open deal (Потенциальный); company 1 (large by revenue) one win."""
    seed_history(sandbox, "company", [{"TITLE": "ООО Крупная", "DATE_CREATE": "2025-11-01T10:00:00+03:00",
                                       "EMPLOYEES": "EMPLOYEES_1", "REVENUE": 150_000_000}])  # fmt: skip

    def deals_of(n: int) -> list[dict]:
        if n == contacts:
            wins = [("2026-11-20", 900_000), ("2026-12-01", 900_000)]
        elif n % 5 == 0:
            wins = [("2026-10-01", 1000), ("2026-11-01", 1000)]
        elif n % 7 == 0:
            wins = [("2026-09-01", 5000)]
        else:
            wins = []
        opened = [open_deal(n)] if n % 11 == 0 and not wins else []
        return [won_deal(n, day, amount, "2025-12-01T10:00:00+03:00") for day, amount in wins] + opened

    b2b = {"TITLE": "B2B", "COMPANY_ID": 1, "CONTACT_ID": 1, "STAGE_ID": "WON", "OPPORTUNITY": 10,
           "CLOSEDATE": "2026-11-15", "DATE_CREATE": "2026-11-01T10:00:00+03:00"}  # fmt: skip
    seed_builder(sandbox, contacts, deals_of=deals_of, created=lambda n: "2025-11-01T10:00:00+03:00", extra_deals=[b2b])


def test_setup_writes_the_rules_once_and_creates_the_fields() -> None:
    with Sandbox(app_token="tok", seed=21) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        first = setup_report(client, objects)
        assert objects.data[CONFIG_KEY] == DEFAULT_RULES_YAML.encode()
        assert f"segment field {SEGMENT_FIELD} on contacts: created" in first
        assert "  EMPLOYEES_1      менее 50         → small" in first.splitlines()
        segment = client.call("crm.contact.userfield.list", {"filter": {"FIELD_NAME": SEGMENT_FIELD}}).result[0]
        assert [(item["XML_ID"], item["VALUE"]) for item in segment["LIST"]] == [
            ("VIP", "VIP"), ("SLEEPING", "Спящий"), ("ACTIVE", "Активный"), ("ONE_TIME", "Разовый"),
            ("POTENTIAL", "Потенциальный"), ("NEWCOMER", "Новичок"),
        ]  # fmt: skip
        since = client.call("crm.contact.userfield.list", {"filter": {"FIELD_NAME": SINCE_FIELD}}).result[0]
        assert since["USER_TYPE_ID"] == "date"
        size = client.call("crm.company.userfield.list", {"filter": {"FIELD_NAME": SIZE_FIELD}}).result[0]
        assert [item["XML_ID"] for item in size["LIST"]] == ["SMALL", "MEDIUM", "LARGE"]
        # B2B customers carry their segment too: the same three fields on companies.
        for name in (SEGMENT_FIELD, RFM_FIELD, SINCE_FIELD):
            [company_field] = client.call("crm.company.userfield.list", {"filter": {"FIELD_NAME": name}}).result
            assert company_field["USER_TYPE_ID"] == {SEGMENT_FIELD: "enumeration", RFM_FIELD: "string"}.get(
                name, "date"
            )
        assert f"segment field {SEGMENT_FIELD} on companies: created" in first
        objects.data[CONFIG_KEY] = DEFAULT_RULES_YAML.replace("window_days: 365", "window_days: 300").encode()
        again = setup_report(client, objects)
        assert "kept as edited" in again and b"window_days: 300" in objects.data[CONFIG_KEY]
        assert f"segment field {SEGMENT_FIELD} on contacts: already there (enumeration)" in again


def test_a_night_writes_only_what_changed_and_the_next_night_almost_nothing() -> None:
    contacts = 230
    with Sandbox(app_token="tok", seed=22) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        setup_report(client, objects)
        seed_customers(sandbox, contacts)
        sandbox.reset_stats()
        summary = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT)
        rows = {row["customer"]: row for row in jsonlines.decode(objects.data[snapshot_key("2026-12-06")])}
        assert rows[f"contact:{contacts}"]["segment"] == "VIP"
        assert rows["contact:5"]["segment"] == "ACTIVE" and rows["contact:7"]["segment"] == "ONE_TIME"
        assert rows["contact:11"]["segment"] == "POTENTIAL" and rows["contact:1"]["segment"] is None
        assert rows["company:1"]["segment"] == "ONE_TIME" and rows["company:1"]["size"] == "large"
        # Contacts with a segment or an RFM score, and the company's size: those and only those are written.
        changed = sum(1 for row in rows.values() if row["kind"] == "contact" and (row["segment"] or row["rfm"])) + 1
        assert summary["writeback"]["written"] == summary["writeback"]["total"] == changed
        # 1 snapshot batch + 1 enumerations batch + the update batches.
        assert summary["rest_calls"] == sandbox.stats()["requests"] == 2 + update_batches(changed)
        portal = {int(row["ID"]): row for row in sandbox.entities("contact")}
        vip_id = client.call("crm.contact.userfield.list", {"filter": {"FIELD_NAME": SEGMENT_FIELD}}).result[0]
        vip_item = next(item["ID"] for item in vip_id["LIST"] if item["XML_ID"] == "VIP")
        assert str(portal[contacts][SEGMENT_FIELD]) == vip_item and portal[contacts][SINCE_FIELD].startswith(
            "2026-12-06"
        )
        assert portal[contacts][RFM_FIELD] == rows[f"contact:{contacts}"]["rfm"]
        assert portal[1][SEGMENT_FIELD] in (None, "") and portal[1][RFM_FIELD] in (None, "")
        # Company 1 (B2B, one win): its segment, RFM and start date beside its size; its contact 1 (named on the
        # company's deal, none of its own) has no segment of its own.
        [company] = sandbox.entities("company")
        one_time = client.call("crm.company.userfield.list", {"filter": {"FIELD_NAME": SEGMENT_FIELD}}).result[0]
        one_time_item = next(item["ID"] for item in one_time["LIST"] if item["XML_ID"] == "ONE_TIME")
        assert str(company[SEGMENT_FIELD]) == one_time_item and company[RFM_FIELD] == rows["company:1"]["rfm"]
        assert company[SINCE_FIELD].startswith("2026-12-06") and company[SIZE_FIELD]
        assert objects.data[transitions_key("2026-12-06")] == jsonlines.encode([])  # no earlier night: no moves

        # The same day again: nothing to do, no REST call.
        sandbox.reset_stats()
        assert build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT)["rest_calls"] == 0
        assert sandbox.stats()["requests"] == 0

        # Next night: contact 3 buys once; the snapshot reads back our own writes and only contact 3 (and the RFM
        # scores its purchase shifts) is written.
        client.call("crm.deal.add", {"fields": {"TITLE": "Новая", "CONTACT_ID": 3, "STAGE_ID": "WON",
                                                "OPPORTUNITY": 700, "CLOSEDATE": "2026-12-06"}})  # fmt: skip
        sandbox.reset_stats()
        second = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT + timedelta(days=1))
        rows2 = {row["customer"]: row for row in jsonlines.decode(objects.data[snapshot_key("2026-12-07")])}
        moves = jsonlines.decode(objects.data[transitions_key("2026-12-07")])
        assert [(move["customer"], move["from"], move["to"]) for move in moves] == [("contact:3", None, "ONE_TIME")]
        rescored = sum(1 for key, row in rows2.items() if row["kind"] == "contact" and row["rfm"] != rows[key]["rfm"])
        assert second["writeback"]["total"] == rescored and rescored < changed
        assert rows2["contact:5"]["since"] == "2026-12-06"  # unchanged segment: its start date stays


def test_the_write_back_resumes_after_a_deadline_and_finishes_without_rewriting() -> None:
    contacts = 400
    with Sandbox(app_token="tok", seed=23) as sandbox:
        objects = MemoryObjects()
        setup_report(Bitrix24Client(sandbox.webhook_url), objects)
        seed_customers(sandbox, contacts)
        sandbox.reset_stats()
        budget = {"calls": 4}  # the snapshot, the enumerations and two update batches, then the deadline is near

        def remaining() -> float:
            return 900.0 if sandbox.stats()["requests"] < budget["calls"] else 10.0

        client = Bitrix24Client(sandbox.webhook_url, deadline=Deadline(remaining, reserve=0.0))
        first = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT)
        assert first["status"] == "unfinished" and first["writeback"]["position"] == 65
        total = first["writeback"]["total"]
        sandbox.reset_stats()
        budget["calls"] = 10**9
        client = Bitrix24Client(sandbox.webhook_url, deadline=Deadline(remaining, reserve=0.0))
        second = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT + timedelta(minutes=15))
        assert second["status"] == "done" and second["writeback"]["written"] == total
        assert sandbox.stats()["requests"] == update_batches(total - 65)  # only the rest: no recompute
        assert sandbox.stats()["by_method"] == {"batch": sandbox.stats()["requests"]}
        import json

        assert json.loads(objects.data[STATE_KEY])["writeback"]["done"] is True


def test_without_the_fields_the_segments_are_stored_and_nothing_is_written() -> None:
    with Sandbox(app_token="tok", seed=24) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        seed_customers(sandbox, 20)
        summary = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT)
        assert summary["status"] == "done" and "writeback" not in summary and summary["customers"] == 21
        assert snapshot_key("2026-12-06") in objects.data
        assert not [row for row in sandbox.entities("contact") if row.get(SEGMENT_FIELD)]


def test_a_clock_behind_the_last_night_changes_nothing() -> None:
    objects = MemoryObjects()
    objects.put(STATE_KEY, b'{"last": "2026-12-06", "writeback": {"done": true}}')
    client = Bitrix24Client("http://127.0.0.1:9/rest/1/x/")  # never called: nothing listens there
    summary = build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT - timedelta(days=1))
    assert summary == {"date": "2026-12-05", "status": "done", "rest_calls": 0} and client.calls == 0
    assert list(objects.data) == [STATE_KEY]


def test_amounts_in_another_currency_use_the_spend_import_s_rate_files() -> None:
    with Sandbox(app_token="tok", seed=25) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        objects.put("rates/date=2026-11-30/rates.json",
                    b'{"date": "2026-11-30", "base": "RUB", "rates": {"USD": "100"}, "source": "cbr"}')  # fmt: skip
        seed_history(sandbox, "contact", [{"NAME": "К", "DATE_CREATE": "2025-11-01T10:00:00+03:00"}])
        deal = {"CONTACT_ID": 1, "STAGE_ID": "WON", "OPPORTUNITY": 10, "CURRENCY_ID": "USD", "CLOSEDATE": "2026-12-01",
                "DATE_CREATE": "2026-11-01T10:00:00+03:00"}  # fmt: skip
        seed_history(sandbox, "deal", [deal])
        build_segments(client, objects, options=OPTIONS, now=lambda: NIGHT)
        [row] = jsonlines.decode(objects.data[snapshot_key("2026-12-06")])
        # 10 $ at the file's 100, not the CRM's 90
        assert Decimal(row["revenue_total"]) == 1000 and row["average_check"] == "1000.00"


def test_a_night_dates_a_win_without_closedate_by_the_stage_history_not_by_a_later_edit() -> None:
    """The job reads the stage history it snapshots: won on 21 May (moved to WON then), edited yesterday."""
    with Sandbox(app_token="tok", seed=26) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        seed_history(sandbox, "contact", [{"NAME": "К", "DATE_CREATE": "2025-11-01T10:00:00+03:00"}])
        deal = {"CONTACT_ID": 1, "STAGE_ID": "NEW", "OPPORTUNITY": 700, "CURRENCY_ID": "RUB", "CLOSEDATE": "",
                "DATE_CREATE": "2026-05-01T10:00:00+03:00", "STAGE_MOVES": [("WON", "2026-05-21T02:30:00+03:00")],
                "DATE_MODIFY": "2026-12-05T12:00:00+03:00"}  # fmt: skip
        seed_history(sandbox, "deal", [deal])
        options = SegmentOptions(snapshot=SnapshotOptions(person_key_secret="test-secret"))
        build_segments(client, objects, options=options, now=lambda: NIGHT)
        [stored] = read_snapshot(objects, "deal")
        assert not stored.get("CLOSEDATE") and stored["DATE_MODIFY"].startswith("2026-12-05")
        [row] = jsonlines.decode(objects.data[snapshot_key("2026-12-06")])
        assert (row["last_win"], row["segment"]) == ("2026-05-21", "SLEEPING")  # 199 days; not Разовый of yesterday
