"""Real-time rules against the Bitrix24 sandbox: a hot lead's task for its responsible (once, however often the
message is redelivered), a repeat request's task, a big deal's notification at the threshold and not below it."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tests.moto_tables import id_keyed_table
from throughline.adapters.alert_ledger import AlertLedger
from throughline.alerts.realtime import after_writes
from throughline.alerts.rules import DEFAULT_YAML, parse_rules, realtime_json
from throughline.bitrix24 import Bitrix24Client, BitrixError

MSK = ZoneInfo("Europe/Moscow")
NOW = 1_796_003_600.0  # 2026-11-30 04:53:20 in Moscow


@dataclass
class Settings:
    bitrix24_webhook_url: str
    alerts_table: str = "alerts"
    data_bucket: str = "bucket"
    report_currency: str = "RUB"
    zone: ZoneInfo = MSK


@dataclass
class Out:
    submission_id: str
    ok: bool
    action: str
    lead_id: int | None = None
    entity: str | None = None


@pytest.fixture
def ledger(monkeypatch):
    with id_keyed_table(monkeypatch, "alerts") as client:
        yield AlertLedger("alerts", client, clock=lambda: NOW)


def rules(text: str = DEFAULT_YAML) -> dict:
    import json

    return json.loads(realtime_json(parse_rules(text)))["rules"]


def form(action: str, lead_id: int, submission: str) -> tuple[dict, Out]:
    return {"type": "form_submission"}, Out(submission, True, action, lead_id, f"LEAD#{lead_id}")


def test_a_hot_lead_gets_one_task_for_its_responsible_due_in_five_minutes(sandbox, ledger):
    lead_id = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Заявка", "ASSIGNED_BY_ID": 3}})
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    body, outcome = form("created", lead_id, "s1")
    for _ in range(2):  # the same message redelivered
        after_writes(settings, client, {"m1": body}, {"m1": outcome}, ledger=ledger, rules=rules(), now=lambda: NOW)
    [task] = sandbox.tasks()
    assert task["title"] == f"Обработать в течение 5 минут: лид №{lead_id}"
    assert task["responsibleId"] == "3" and task["ufCrmTask"] == [f"L_{lead_id}"]
    assert task["deadline"] == "2026-11-30T04:58:20+03:00"  # NOW + 5 minutes in Moscow
    assert client.calls == 1  # the lead's responsible and the task in one batch; nothing on the redelivery
    assert [item["obj"] for item in ledger.due_pending("hot_lead", int(NOW) + 300)] == [f"lead:{lead_id}"]
    assert ledger.due_pending("hot_lead", int(NOW) + 299) == []


def test_a_repeat_request_gets_a_task_once_and_the_cooldown_holds_the_next(sandbox, ledger):
    lead_id = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Старый лид", "ASSIGNED_BY_ID": 2}})
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    for submission in ("s1", "s1", "s2"):  # s1 redelivered; s2 an hour's cooldown later... not yet
        body, outcome = form("appended", lead_id, submission)
        after_writes(settings, client, {"m": body}, {"m": outcome}, ledger=ledger, rules=rules(), now=lambda: NOW)
    [task] = sandbox.tasks()
    assert task["title"] == f"Повторное обращение: лид №{lead_id}" and task["responsibleId"] == "2"


def test_a_big_deal_notifies_its_responsible_and_the_head_of_sales_once(sandbox, ledger):
    text = DEFAULT_YAML.replace(
        "    enabled: false\n    trigger: realtime\n    metric: opportunity\n    threshold: null",
        "    enabled: true\n    trigger: realtime\n    metric: opportunity\n    threshold: 500000",
    )
    text = text.replace(
        '    also_notify: []\n    channels: [bitrix]\n    message: "Крупная',
        '    also_notify: [3]\n    channels: [bitrix]\n    message: "Крупная',
    )
    big = sandbox.call(
        "crm.deal.add",
        {"fields": {"TITLE": "Поставка", "OPPORTUNITY": 500000, "CURRENCY_ID": "RUB", "ASSIGNED_BY_ID": 2}},
    )
    small = sandbox.call(
        "crm.deal.add",
        {"fields": {"TITLE": "Мелочь", "OPPORTUNITY": "499999.99", "CURRENCY_ID": "RUB", "ASSIGNED_BY_ID": 2}},
    )
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    bodies = {
        f"e{deal}": {"type": "bitrix_event", "entity": "deal", "event": "ONCRMDEALUPDATE", "id": deal}
        for deal in (big, small)
    }
    outcomes = {key: Out(key, True, "event") for key in bodies}
    for _ in range(2):
        after_writes(settings, client, bodies, outcomes, ledger=ledger, rules=rules(text), now=lambda: NOW)
    notes = sandbox.notifications()
    assert sorted(note["USER_ID"] for note in notes) == [2, 3]
    assert notes[0]["MESSAGE"].startswith("Крупная сделка: Поставка на 500\u00a0000 RUB")
    assert Decimal(str(sandbox.entities("deal")[1]["OPPORTUNITY"])) < 500000


def test_nothing_happens_without_rules_or_a_ledger(sandbox):
    settings = Settings(sandbox.webhook_url, alerts_table="")
    assert after_writes(settings, None, {}, {}) == {}


class ThrottledLedger:
    """The ledger with DynamoDB throttling the n-th claim (and every one after it)."""

    def __init__(self, ledger: AlertLedger, fail_from: int):
        self.ledger, self.fail_from, self.claims = ledger, fail_from, 0

    def __getattr__(self, name):
        return getattr(self.ledger, name)

    def claim(self, *args, **kwargs):
        from botocore.exceptions import ClientError

        self.claims += 1
        if self.claims >= self.fail_from:
            error = {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}}
            raise ClientError(error, "TransactWriteItems")
        return self.ledger.claim(*args, **kwargs)


def test_a_throttled_claim_costs_only_its_own_lead_never_the_task_of_a_lead_claimed_before_it(sandbox, ledger):
    first = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Первый", "ASSIGNED_BY_ID": 3}})
    second = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Второй", "ASSIGNED_BY_ID": 2}})
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    (body1, out1), (body2, out2) = form("created", first, "s1"), form("created", second, "s2")
    done = after_writes(settings, client, {"m1": body1, "m2": body2}, {"m1": out1, "m2": out2},
                        ledger=ThrottledLedger(ledger, fail_from=2), rules=rules(), now=lambda: NOW)  # fmt: skip
    assert [task["ufCrmTask"] for task in sandbox.tasks()] == [[f"L_{first}"]]
    assert done["tasks"] == 1
    assert ledger.state("hot_lead", f"lead:{first}", "once") == "sent"
    assert ledger.state("hot_lead", f"lead:{second}", "once") is None  # not claimed: nothing stuck


class FailingNotifications:
    """The writer's client, with the batch of notifications refused by the portal (not run)."""

    def __init__(self, client: Bitrix24Client):
        self.client = client

    def __getattr__(self, name):
        return getattr(self.client, name)

    def batch(self, commands):

        if any(method == "im.notify.system.add" for method, _ in commands.values()):
            raise BitrixError("INTERNAL_SERVER_ERROR", "refused", 500, "batch")
        return self.client.batch(commands)


def test_a_big_deal_whose_notification_failed_is_released_so_the_next_event_sends_it(sandbox, ledger):
    text = DEFAULT_YAML.replace(
        "    enabled: false\n    trigger: realtime\n    metric: opportunity\n    threshold: null",
        "    enabled: true\n    trigger: realtime\n    metric: opportunity\n    threshold: 500000",
    )
    deal = sandbox.call(
        "crm.deal.add",
        {"fields": {"TITLE": "Поставка", "OPPORTUNITY": 600000, "CURRENCY_ID": "RUB", "ASSIGNED_BY_ID": 2}},
    )
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    bodies = {"e": {"type": "bitrix_event", "entity": "deal", "event": "ONCRMDEALUPDATE", "id": deal}}
    outcomes = {"e": Out("e", True, "event")}
    with pytest.raises(BitrixError):  # the handler logs it; the writes stand
        after_writes(settings, FailingNotifications(client), bodies, outcomes, ledger=ledger, rules=rules(text),
                     now=lambda: NOW)  # fmt: skip
    assert ledger.state("big_deal", f"deal:{deal}", "once") is None
    after_writes(settings, client, bodies, outcomes, ledger=ledger, rules=rules(text), now=lambda: NOW)
    assert [note["USER_ID"] for note in sandbox.notifications()] == [2]


def test_the_hook_starts_nothing_when_the_writer_is_near_its_timeout(sandbox, ledger):
    from throughline.bitrix24 import Deadline

    lead_id = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Поздно", "ASSIGNED_BY_ID": 3}})
    settings = Settings(sandbox.webhook_url)
    late = Bitrix24Client(sandbox.webhook_url, deadline=Deadline(lambda: 30.0))  # 25 s left after the reserve
    body, outcome = form("created", lead_id, "s1")
    done = after_writes(settings, late, {"m1": body}, {"m1": outcome}, ledger=ledger, rules=rules(), now=lambda: NOW)
    assert done == {"skipped": 1} and late.calls == 0 and sandbox.tasks() == []
    assert ledger.state("hot_lead", f"lead:{lead_id}", "once") is None
    roomy = Bitrix24Client(sandbox.webhook_url, deadline=Deadline(lambda: 60.0))
    after_writes(settings, roomy, {"m1": body}, {"m1": outcome}, ledger=ledger, rules=rules(), now=lambda: NOW)
    assert len(sandbox.tasks()) == 1


def test_quiet_mode_makes_no_task_and_sends_no_notification_from_the_writer(sandbox, ledger):
    lead_id = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Тихо", "ASSIGNED_BY_ID": 3}})
    settings, client = Settings(sandbox.webhook_url), Bitrix24Client(sandbox.webhook_url)
    quiet = rules(DEFAULT_YAML.replace("  quiet: false", "  quiet: true", 1))
    body, outcome = form("created", lead_id, "s1")
    after_writes(settings, client, {"m1": body}, {"m1": outcome}, ledger=ledger, rules=quiet, now=lambda: NOW)
    assert sandbox.tasks() == [] and client.calls == 0  # a dry run delivers nothing, the writer's hook included
