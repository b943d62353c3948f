"""Tasks on segment moves against the Bitrix24 sandbox and a moto alerts ledger: two nights, a contact and a company
go to Спящий (one task each for their manager, bound to the record, due three days later at 18:00), a move that is
not configured gets none, a re-run of the night creates nothing, and a lost batch answer never makes a twin."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from benchmarks.segments import MemoryObjects
from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from throughline.bitrix24.client import Bitrix24Client
from throughline.bitrix24.errors import BitrixUnavailable
from throughline.report.crm import SnapshotOptions
from throughline.segments.fields import setup_report
from throughline.segments.job import STATE_KEY, SegmentOptions, build_segments
from throughline.segments.tasks import RULE, never_retaken

pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
MSK = ZoneInfo("Europe/Moscow")
NIGHT = datetime(2026, 12, 6, 5, 30, tzinfo=MSK)
OPTIONS = SegmentOptions(snapshot=SnapshotOptions(stage_history=False, person_key_secret="test-secret"))


@pytest.fixture
def ledger(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="alerts",
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield never_retaken("alerts", client)


def seed(sandbox: Sandbox) -> None:
    """Contact 1 (manager 2): one win on 7 June 2026 — 182 days on 6 December (Разовый), 183 on the 7th (Спящий).
    Company 1 (manager 3): the same for a B2B deal. Contact 2: one win in November (Разовый both nights). Contact 3:
    an open deal the first night (Потенциальный), won before the second (Разовый: a move no task is set for)."""
    seed_history(sandbox, "company", [{"TITLE": "ООО Ромашка", "ASSIGNED_BY_ID": 3,
                                       "DATE_CREATE": "2025-11-01T10:00:00+03:00"}])  # fmt: skip
    seed_history(sandbox, "contact", [
        {"NAME": f"К{n}", "ASSIGNED_BY_ID": 2, "DATE_CREATE": "2025-11-01T10:00:00+03:00"} for n in (1, 2, 3)
    ])  # fmt: skip
    won = {"STAGE_ID": "WON", "OPPORTUNITY": 5000, "DATE_CREATE": "2026-05-01T10:00:00+03:00"}
    seed_history(sandbox, "deal", [
        {**won, "TITLE": "Ж", "CONTACT_ID": 1, "CLOSEDATE": "2026-06-07"},
        {**won, "TITLE": "B2B", "COMPANY_ID": 1, "CLOSEDATE": "2026-06-07"},
        {**won, "TITLE": "Н", "CONTACT_ID": 2, "CLOSEDATE": "2026-11-10"},
        {"TITLE": "О", "CONTACT_ID": 3, "STAGE_ID": "NEW", "DATE_CREATE": "2026-11-20T10:00:00+03:00"},
    ])  # fmt: skip


def night(client, objects, ledger, at):
    return build_segments(client, objects, options=OPTIONS, now=lambda: at, ledger=ledger,
                          webhook_url=client._base)  # fmt: skip


def test_a_move_to_sleeping_makes_one_task_for_the_manager_and_a_rerun_none(ledger) -> None:
    with Sandbox(app_token="tok", seed=31) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        setup_report(client, objects)
        seed(sandbox)
        first = night(client, objects, ledger, NIGHT)
        assert "tasks" not in first and sandbox.tasks() == []  # a first night: no previous snapshot, no move
        state_after_first = objects.data[STATE_KEY]

        deal = next(row for row in sandbox.entities("deal") if row["TITLE"] == "О")
        client.call("crm.deal.update", {"id": deal["ID"], "fields": {"STAGE_ID": "WON", "OPPORTUNITY": 100,
                                                                     "CLOSEDATE": "2026-12-06"}})  # fmt: skip
        sandbox.reset_stats()
        second = night(client, objects, ledger, NIGHT + timedelta(days=1))
        tasks = sandbox.tasks()
        assert second["tasks"]["created"] == 2 and second["tasks"]["moves"] == 2
        by_link = {tuple(task["ufCrmTask"]): task for task in tasks}
        assert sorted(by_link) == [("CO_1",), ("C_1",)]  # contact 3's Потенциальный → Разовый: not configured
        contact, company = by_link[("C_1",)], by_link[("CO_1",)]
        assert (contact["responsibleId"], company["responsibleId"]) == ("2", "3")
        assert contact["deadline"] == "2026-12-10T18:00:00+03:00"
        assert contact["title"] == "Клиент перешёл в сегмент «Спящий»: контакт 1"
        assert contact["description"].startswith(
            "Клиент перешёл в сегмент «Спящий»: последняя покупка 183 дн. назад (07.06.2026)"
        )
        assert "«Разовый» → «Спящий», 07.12.2026" in contact["description"]
        assert company["title"] == "Клиент перешёл в сегмент «Спящий»: компания 1"
        assert ledger.record(RULE, "contact:1", "2026-12-07>SLEEPING")[0] == "sent"
        # REST calls of the second night: the snapshot batch, the enumerations batch, one tasks batch, one write-back
        by_method = sandbox.stats()["by_method"]
        assert by_method == {"batch": 4} and second["rest_calls"] == 4

        # The night run again (its state as after the first night): the same moves, no second task.
        objects.data[STATE_KEY] = state_after_first
        again = night(client, objects, ledger, NIGHT + timedelta(days=1))
        assert again["tasks"]["created"] == 0 and again["tasks"]["already"] == 2
        assert len(sandbox.tasks()) == 2
        # The same day once more: nothing at all.
        assert night(client, objects, ledger, NIGHT + timedelta(days=1))["rest_calls"] == 0


def test_a_lost_batch_answer_leaves_the_moves_claimed_and_never_makes_a_twin(ledger, monkeypatch) -> None:
    with Sandbox(app_token="tok", seed=32) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        setup_report(client, objects)
        seed(sandbox)
        night(client, objects, ledger, NIGHT)
        state_after_first = objects.data[STATE_KEY]
        real_batch = client.batch

        def crash_after_send(commands, **kwargs):
            result = real_batch(commands, **kwargs)
            if any(method == "tasks.task.add" for method, _ in commands.values()):
                raise BitrixUnavailable("READ_TIMEOUT", "no answer", None, "batch", maybe_executed=True)
            return result

        monkeypatch.setattr(client, "batch", crash_after_send)
        second = night(client, objects, ledger, NIGHT + timedelta(days=1))
        assert second["tasks"]["unconfirmed"] == 2 and len(sandbox.tasks()) == 2
        assert ledger.record(RULE, "contact:1", "2026-12-07>SLEEPING")[0] == "claimed"
        monkeypatch.setattr(client, "batch", real_batch)
        objects.data[STATE_KEY] = state_after_first
        again = night(client, objects, ledger, NIGHT + timedelta(days=1))
        assert again["tasks"]["already"] == 2 and len(sandbox.tasks()) == 2
        assert json.loads(objects.data[STATE_KEY])["tasks"]["done"] is True


def test_without_a_ledger_no_task_is_created_and_the_night_finishes() -> None:
    with Sandbox(app_token="tok", seed=33) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        objects = MemoryObjects()
        setup_report(client, objects)
        seed(sandbox)
        night(client, objects, None, NIGHT)
        second = night(client, objects, None, NIGHT + timedelta(days=1))
        assert second["status"] == "done" and second["tasks"]["skipped"] == "no ledger" and sandbox.tasks() == []


def test_a_customer_without_a_valid_manager_gets_a_task_for_the_webhook_s_user(ledger) -> None:
    from datetime import date

    from throughline.segments.rules import default_rules
    from throughline.segments.tasks import create_move_tasks

    with Sandbox(app_token="tok", seed=34) as sandbox:
        client = Bitrix24Client(sandbox.webhook_url)
        moves = [{"customer": f"contact:{n}", "kind": "contact", "id": n, "from": "ONE_TIME", "to": "SLEEPING",
                  "assigned_by_id": manager} for n, manager in ((1, None), (2, "abc"), (3, "999"))]  # fmt: skip
        counts, finished = create_move_tasks(client, ledger, moves, {}, default_rules(), today=date(2026, 12, 7),
                                             zone=MSK, currency="RUB", webhook_url=sandbox.webhook_url)  # fmt: skip
        webhook_user = str(sandbox.user_id)
        # User 999 does not exist (ERROR_CORE for that command): its task goes to the webhook's user in a second batch.
        assert finished and (counts.created, counts.failed, counts.calls) == (3, 0, 2)
        assert [task["responsibleId"] for task in sandbox.tasks()] == [webhook_user] * 3
        assert sorted(task["ufCrmTask"][0] for task in sandbox.tasks()) == ["C_1", "C_2", "C_3"]
        # A re-run of the night creates nothing.
        again, _ = create_move_tasks(client, ledger, moves, {}, default_rules(), today=date(2026, 12, 7), zone=MSK,
                                     currency="RUB", webhook_url=sandbox.webhook_url)  # fmt: skip
        assert (again.created, again.already, again.failed) == (0, 3, 0)
