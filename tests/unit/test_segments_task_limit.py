"""The nightly cap on move tasks: a rules edit that moves thousands of customers at once gives tasks to the first
``task_limit`` moves only (those into the segment listed first in ``task_on_moves`` first), the rest are counted and
logged as over the limit, and a re-run of the night keeps to the same moves."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

from benchmarks.segments import MemoryObjects
from throughline.bitrix24.client import BatchResult, Deadline
from throughline.report import jsonlines
from throughline.segments.job import STATE_KEY, SegmentOptions, _move_tasks, snapshot_key, transitions_key
from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML, load_rules

MSK = ZoneInfo("Europe/Moscow")
NIGHT = datetime(2026, 12, 6, 5, 30, tzinfo=MSK)
DAY = "2026-12-06"


class FakeClient:
    def __init__(self) -> None:
        self.deadline = Deadline()
        self.sent: list[dict] = []

    def batch_capacity(self, methods):
        return 50

    def batch(self, commands):
        self.sent.extend(params["fields"] for _, params in commands.values())
        return BatchResult({name: {"task": {"id": n}} for n, name in enumerate(commands)}, {}, {}, {})


class FakeLedger:
    def __init__(self) -> None:
        self.claimed: set[tuple[str, str, str]] = set()

    def claim(self, rule: str, key: str, period: str):
        item = (rule, key, period)
        if item in self.claimed:
            return None
        self.claimed.add(item)
        return item

    def mark_sent(self, claim, note) -> None:
        pass

    def release(self, claim) -> None:
        self.claimed.discard(claim)


def night(objects: MemoryObjects, client: FakeClient, ledger: FakeLedger) -> dict:
    state = {"last": DAY, "tasks": {"day": DAY, "done": False}}
    return _move_tasks(client, objects, state, SegmentOptions(), ledger, None, NIGHT, lambda message: None)


def test_a_mass_move_gets_tasks_up_to_the_nightly_limit_in_list_order_and_a_rerun_keeps_to_them() -> None:
    objects = MemoryObjects()
    objects.put(CONFIG_KEY, (DEFAULT_RULES_YAML + "task_limit: 3\n").encode())
    assert load_rules(objects).task_limit == 3
    moves = [{"customer": f"contact:{n}", "kind": "contact", "id": n, "from": "ACTIVE", "to": "SLEEPING",
              "assigned_by_id": "2"} for n in range(1, 6)]  # fmt: skip
    moves.append({"customer": "contact:9", "kind": "contact", "id": 9, "from": "ACTIVE", "to": "VIP",
                  "assigned_by_id": "2"})  # fmt: skip
    objects.put(transitions_key(DAY), jsonlines.encode(moves))
    objects.put(snapshot_key(DAY), jsonlines.encode([]))
    client, ledger = FakeClient(), FakeLedger()
    tasks = night(objects, client, ledger)
    # task_on_moves lists SLEEPING before VIP: the order of the list is the order of priority.
    assert [fields["UF_CRM_TASK"] for fields in client.sent] == [["C_1"], ["C_2"], ["C_3"]]
    assert tasks["created"] == 3 and tasks["over_limit"] == 3 and tasks["done"] is True
    assert tasks["moves"] == 6
    assert json.loads(objects.get(STATE_KEY))["tasks"]["over_limit"] == 3
    again = night(objects, client, ledger)
    assert again["created"] == 0 and again["already"] == 3 and len(client.sent) == 3


def test_the_default_limit_is_two_hundred_and_zero_turns_tasks_off() -> None:
    objects = MemoryObjects()
    assert load_rules(objects).task_limit == 200
    objects.put(CONFIG_KEY, (DEFAULT_RULES_YAML + "task_limit: 0\n").encode())
    objects.put(transitions_key(DAY), jsonlines.encode([{"customer": "contact:1", "kind": "contact", "id": 1,
                                                         "from": "ACTIVE", "to": "VIP"}]))  # fmt: skip
    client = FakeClient()
    tasks = night(objects, client, FakeLedger())
    assert client.sent == [] and tasks["over_limit"] == 1 and tasks["created"] == 0


class RefusingClient(FakeClient):
    """A portal that refuses tasks for user 2 (fired: the method answers an error for that command only)."""

    def batch(self, commands):
        from throughline.bitrix24.errors import BitrixBadRequest

        results, errors = {}, {}
        for name, (_, params) in commands.items():
            if params["fields"]["RESPONSIBLE_ID"] == 2:
                errors[name] = BitrixBadRequest("ERROR_CORE", "responsible is not active")
            else:
                self.sent.append(params["fields"])
                results[name] = {"task": {"id": len(self.sent)}}
        return BatchResult(results, errors, {}, {})


def test_a_task_the_portal_refuses_for_a_fired_manager_goes_to_the_webhook_s_user_once() -> None:
    objects = MemoryObjects()
    moves = [{"customer": f"contact:{n}", "kind": "contact", "id": n, "from": "ACTIVE", "to": "SLEEPING",
              "assigned_by_id": str(manager)} for n, manager in ((1, 2), (2, 3))]  # fmt: skip
    objects.put(transitions_key(DAY), jsonlines.encode(moves))
    client, ledger = RefusingClient(), FakeLedger()
    state = {"last": DAY, "tasks": {"day": DAY, "done": False}}
    tasks = _move_tasks(client, objects, state, SegmentOptions(), ledger, "https://p.example/rest/1/secret/", NIGHT,
                        lambda message: None)  # fmt: skip
    assert sorted((fields["UF_CRM_TASK"][0], fields["RESPONSIBLE_ID"]) for fields in client.sent) == [
        ("C_1", 1), ("C_2", 3)]  # fmt: skip
    assert (tasks["created"], tasks["failed"], tasks["calls"]) == (2, 0, 2)
    # Without a webhook user to fall back on, the refusal is a failure and the claim is released (a re-run retries).
    client, ledger = RefusingClient(), FakeLedger()
    tasks = _move_tasks(client, objects, {"last": DAY, "tasks": {"day": DAY, "done": False}}, SegmentOptions(),
                        ledger, None, NIGHT, lambda message: None)  # fmt: skip
    assert (tasks["created"], tasks["failed"]) == (1, 1) and len(ledger.claimed) == 1
