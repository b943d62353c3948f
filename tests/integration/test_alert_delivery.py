"""Alert delivery against the Bitrix24 sandbox: notifications with TAG (and CLIENT_ID) replace instead of piling up,
each alert once through the ledger, a missing scope falls back to the next channel, tasks link CRM records, and the
sandbox's im/task/scope/app.info methods as the docs show them."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.moto_tables import id_keyed_table
from throughline.adapters.alert_ledger import AlertLedger
from throughline.alerts.delivery import DeliveryFailed, Notifier, split_text, webhook_user_id
from throughline.alerts.rules import DEFAULT_YAML, parse_rules
from throughline.bitrix24 import Bitrix24Client


@pytest.fixture
def ledger(monkeypatch):
    with id_keyed_table(monkeypatch, "alerts") as client:
        yield AlertLedger("alerts", client)


def rest(sandbox, method, params=None, auth=None):
    url = f"{sandbox.base_url}/rest/{method}.json" if auth else sandbox.webhook_url + method + ".json"
    body = {**(params or {}), **({"auth": auth} if auth else {})}
    return requests.post(url, json=body, timeout=10)


def test_the_sandbox_answers_the_documented_shapes_and_errors(sandbox):
    assert rest(sandbox, "im.notify.system.add", {"USER_ID": 0, "MESSAGE": "x"}).json()["error"] == "USER_ID_EMPTY"
    assert rest(sandbox, "im.notify.system.add", {"USER_ID": 1, "MESSAGE": "  "}).json()["error"] == "MESSAGE_EMPTY"
    big = {"USER_ID": 1, "MESSAGE": "x", "ATTACH": "y" * 40000}
    assert rest(sandbox, "im.notify.system.add", big).json()["error"] == "ATTACH_OVERSIZE"
    assert rest(sandbox, "im.notify.system.add", {"USER_ID": 999, "MESSAGE": "x"}).json()["result"] is False
    assert rest(sandbox, "tasks.task.add", {}).json()["error"] == "100"
    answer = rest(sandbox, "tasks.task.add", {"fields": {"TITLE": "t", "RESPONSIBLE_ID": 999}}).json()
    assert answer["error"] == "ERROR_CORE" and "Assignee" in answer["error_description"]
    task = rest(sandbox, "tasks.task.add", {"fields": {"TITLE": "t", "RESPONSIBLE_ID": 2, "UF_CRM_TASK": ["L_4"]}})
    assert task.json()["result"]["task"]["ufCrmTask"] == ["L_4"] and task.json()["result"]["task"]["id"] == "1"
    assert rest(sandbox, "im.message.add", {"DIALOG_ID": "chat77", "MESSAGE": "x"}).json()["error"] == "ACCESS_ERROR"
    chat = sandbox.add_chat("Маркетинг")
    assert isinstance(rest(sandbox, "im.message.add", {"DIALOG_ID": chat, "MESSAGE": "x"}).json()["result"], int)
    assert "basic" not in rest(sandbox, "scope").json()["result"]
    assert len(rest(sandbox, "scope", {"full": True}).json()["result"]) > len(rest(sandbox, "scope").json()["result"])
    # app.info needs an application token; a forged or expired one is refused as OAuth refuses it
    # common/system/app-info.md: over a webhook 400 ACCESS_DENIED «Application context required»; ID is a number
    outside = rest(sandbox, "app.info")
    assert outside.status_code == 400 and outside.json() == {
        "error": "ACCESS_DENIED", "error_description": "Access denied! Application context required"}  # fmt: skip
    token = sandbox.issue_app_token(user_id=2)
    info = rest(sandbox, "app.info", auth=token).json()["result"]
    assert info["STATUS"] == "L" and info["CODE"] == sandbox.app_client_id and isinstance(info["ID"], int)
    assert {"VERSION", "INSTALLED", "PAYMENT_EXPIRED", "DAYS", "LANGUAGE_ID", "LICENSE", "LICENSE_TYPE",
            "LICENSE_FAMILY"} <= set(info)  # fmt: skip
    assert rest(sandbox, "user.current", auth=token).json()["result"]["ID"] == "2"  # the token's user
    assert rest(sandbox, "app.info", auth="forged").status_code == 401
    assert rest(sandbox, "app.info", auth="forged").json()["error"] == "invalid_token"
    expired = sandbox.issue_app_token(expires_in=-1)
    assert rest(sandbox, "app.info", auth=expired).json()["error"] == "expired_token"
    sandbox.set_access(scopes=["crm", "user"])
    refused = rest(sandbox, "im.notify.system.add", {"USER_ID": 1, "MESSAGE": "x"})
    assert refused.status_code == 401 and refused.json()["error"] == "insufficient_scope"


def test_a_tag_replaces_only_with_a_client_id(sandbox):
    for text in ("first", "second"):
        rest(sandbox, "im.notify.system.add", {"USER_ID": 1, "MESSAGE": text, "TAG": "T1", "CLIENT_ID": "c"})
    assert [n["MESSAGE"] for n in sandbox.notifications()] == ["second"]
    for text in ("third", "fourth"):  # over a webhook without CLIENT_ID the tag does not count: they pile up
        rest(sandbox, "im.notify.system.add", {"USER_ID": 1, "MESSAGE": text, "TAG": "T1"})
    assert [n["MESSAGE"] for n in sandbox.notifications()] == ["second", "third", "fourth"]


def test_an_alert_reaches_its_recipients_once_and_a_missing_scope_falls_back(sandbox, ledger):
    config = parse_rules(DEFAULT_YAML.replace("  cpl_spike:", "  cpl_spike:\n    recipients: [2, 3]"))
    sent_to_telegram: list[str] = []
    notifier = Notifier(config, ledger, Bitrix24Client(sandbox.webhook_url), webhook_url=sandbox.webhook_url,
                        telegram=sent_to_telegram.append)  # fmt: skip
    values = {"campaign": "Весна", "source": "Яндекс", "day": "05.12.2026", "cpl": 1500, "median": 1000, "rise": 50,
              "spend": 4500, "leads": 3}  # fmt: skip
    first = notifier.send("cpl_spike", "yandex_direct:1", "2026-12-05", values)
    again = notifier.send("cpl_spike", "yandex_direct:1", "2026-12-05", values)
    assert (first.sent, first.channel, again.sent) == (True, "bitrix", False)
    notes = sandbox.notifications()
    assert [n["USER_ID"] for n in notes] == [2, 3]
    assert notes[0]["TAG"] == "throughline|cpl_spike|yandex_direct:1|2" and notes[0]["MESSAGE"].startswith("Стоимость")
    assert notifier.calls == 1  # both recipients in one batch
    sandbox.set_access(scopes=["crm", "user"])  # the webhook lost «im»: Telegram takes over
    assert notifier.send("cpl_spike", "yandex_direct:2", "2026-12-05", values).channel == "telegram"
    assert len(sent_to_telegram) == 1 and len(sandbox.notifications()) == 2
    only_bitrix = parse_rules(DEFAULT_YAML.replace("channels: [bitrix, telegram, email]", "channels: [bitrix]"))
    lonely = Notifier(only_bitrix, ledger, Bitrix24Client(sandbox.webhook_url), webhook_url=sandbox.webhook_url)
    with pytest.raises(DeliveryFailed, match="insufficient_scope"):
        lonely.send("cpl_spike", "yandex_direct:3", "2026-12-05", values)
    assert ledger.state("cpl_spike", "yandex_direct:3", "2026-12-05") is None  # released: the next run tries again


def test_a_task_links_the_lead_and_is_created_once(sandbox, ledger):
    notifier = Notifier(parse_rules(DEFAULT_YAML), ledger, Bitrix24Client(sandbox.webhook_url),
                        webhook_url=sandbox.webhook_url)  # fmt: skip
    deadline = datetime(2026, 12, 5, 12, 5, tzinfo=ZoneInfo("Europe/Moscow"))
    for _ in range(2):
        notifier.task("hot_lead", "lead:4", title="Обработать в течение 5 минут: Заявка", responsible=2,
                      deadline=deadline, links=[("lead", 4)])  # fmt: skip
    tasks = sandbox.tasks()
    assert len(tasks) == 1
    assert tasks[0]["ufCrmTask"] == ["L_4"] and tasks[0]["responsibleId"] == "2"
    assert tasks[0]["deadline"] == "2026-12-05T12:05:00+03:00"


def test_helpers():
    assert webhook_user_id("https://p.bitrix24.ru/rest/17/abc/") == 17
    assert webhook_user_id(None) is None
    parts = split_text("a" * 10 + "\n" + "b" * 10, 12)
    assert parts == ["a" * 10, "b" * 10]
    assert all(len(part) <= 4096 for part in split_text("x" * 10000, 4096))


def test_a_notification_cut_to_the_limit_still_ends_with_the_report_link():
    from throughline.alerts.delivery import NOTIFY_LIMIT, fit_notification

    link = "Отчёт: https://portal.bitrix24.ru/marketplace/app/7/"
    text = "\n".join(["Источник: 12 лидов, CPL 1 234,5 ₽"] * 2000 + [link])  # ≈ 70 000 characters
    cut = fit_notification(text)
    assert len(cut) <= NOTIFY_LIMIT and cut.endswith("\n…\n" + link)
    assert fit_notification("короткое\n" + link) == "короткое\n" + link
