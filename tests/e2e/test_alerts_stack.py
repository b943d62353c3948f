"""Alerts end to end on the local stack: spend with a CPL spike → one notification however often check_alerts runs;
a big deal → one notification to its responsible; a form's new lead → a task «Обработать в течение 5 минут» for its
responsible; a digest → once, in the chat and as a notification, linking to the Bitrix24 application page."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import boto3
import requests
import yaml

from throughline.adapters.spend_store import SpendStore
from throughline.alerts.rules import DEFAULT_YAML

MSK = ZoneInfo("Europe/Moscow")
DAY = date(2026, 11, 20)


def rules(chat: str) -> bytes:
    config = yaml.safe_load(DEFAULT_YAML)
    for rule_id, rule in config["rules"].items():
        rule["enabled"] = rule_id in ("cpl_spike", "big_deal", "hot_lead", "digest_daily")
    config["rules"]["big_deal"]["threshold"] = 300000
    config["rules"]["digest_daily"]["channels"] = ["chat"]
    config["settings"]["chat_dialog_id"] = chat
    config["settings"]["report_url"] = "https://sandbox.bitrix24.ru/marketplace/app/7/"
    return yaml.safe_dump(config, allow_unicode=True).encode()


def test_alerts_arrive_once_tasks_follow_new_leads_and_the_digest_reads_well(make_stack):
    stack = make_stack(poll_queues=True)
    sandbox, env = stack.sandbox, stack.resources.environment()
    bucket = env["DATA_BUCKET"]
    s3 = boto3.client("s3")
    chat = sandbox.add_chat("Маркетинг", users=[1, 2])
    s3.put_object(Bucket=bucket, Key="config/alerts.yaml", Body=rules(chat))
    stack.invoke("check_alerts", {"date": (DAY - timedelta(days=30)).isoformat()})  # publishes the real-time rules
    assert json.loads(s3.get_object(Bucket=bucket, Key="config/alerts.realtime.json")["Body"].read())["rules"]

    # 14 days at CPL 1 000 ₽ (2 leads, 2 000 ₽), then DAY: 3 leads for 4 500 ₽ (CPL 1 500: +50 %)
    spend = SpendStore(bucket)
    for back in range(15):
        day = DAY - timedelta(days=back)
        cost = Decimal("4500") if back == 0 else Decimal("2000")
        row = {
            "date": day.isoformat(),
            "platform": "yandex_direct",
            "account_id": "acc",
            "campaign_id": "555",
            "campaign_name": "zima_sale",
            "impressions": 1000,
            "clicks": 50,
            "cost": str(cost),
            "currency": "RUB",
            "include_vat": False,
            "account_timezone": "Europe/Moscow",
            "ingested_at": "2026-11-21T03:00:00Z",
        }
        spend.write_partition("yandex_direct", day, "acc", [json.dumps(row)])
        sandbox.set_clock(datetime.combine(day, datetime.min.time(), MSK) + timedelta(hours=11))
        for _ in range(3 if back == 0 else 2):
            sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок", "UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc",
                                                     "UTM_CAMPAIGN": "555"}})  # fmt: skip
    sandbox.set_clock(datetime.now(MSK))
    stack.invoke("build_roi_report", {"date_from": (DAY - timedelta(days=20)).isoformat(), "date_to": DAY.isoformat()})
    sandbox.reset_stats()
    first = stack.invoke("check_alerts", {"date": DAY.isoformat()})
    again = stack.invoke("check_alerts", {"date": DAY.isoformat()})
    assert first["fired"] == ["cpl_spike yandex_direct:555 2026-11-20"] and again["fired"] == []
    spikes = [note for note in sandbox.notifications() if "Стоимость лида" in note["MESSAGE"]]
    assert len(spikes) == 1 and "«zima_sale»" in spikes[0]["MESSAGE"] and "выросла на 50 %" in spikes[0]["MESSAGE"]
    assert first["bitrix_calls"] == 1 and again["bitrix_calls"] == 0  # one batch for the alert; nothing after

    # a big deal: the outbound webhook → bitrix_events → the writer → its real-time hook
    deal_id = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Внедрение", "OPPORTUNITY": 450000,
                                                       "CURRENCY_ID": "RUB", "ASSIGNED_BY_ID": 2}})  # fmt: skip
    sandbox.call("crm.deal.update", {"id": deal_id, "fields": {"COMMENTS": "счёт выставлен"}})
    sandbox.wait_for_outbound(10)
    assert stack.wait_until_idle(timeout=60)
    big = [note for note in sandbox.notifications() if note["MESSAGE"].startswith("Крупная сделка")]
    assert [note["USER_ID"] for note in big] == [2]

    # a new lead from a form: its task
    post = {"name": "Пётр", "phone": "+79161234567", "utm_source": "google", "utm_medium": "cpc"}
    answer = requests.post(stack.url + "/v1/forms/contact/submissions", json=post, timeout=10)
    assert answer.status_code == 202
    assert stack.wait_until_idle(timeout=60)
    tasks = [task for task in sandbox.tasks() if task["title"].startswith("Обработать в течение 5 минут")]
    assert len(tasks) == 1 and tasks[0]["ufCrmTask"][0].startswith("L_")

    digest = stack.invoke("send_digests", {"kind": "daily", "date": (DAY + timedelta(days=1)).isoformat()})
    repeat = stack.invoke("send_digests", {"kind": "daily", "date": (DAY + timedelta(days=1)).isoformat()})
    assert (digest["sent"], digest["channel"], repeat["sent"]) == (True, "chat", False)
    [message] = sandbox.chat_messages()
    assert message["DIALOG_ID"] == chat and message["MESSAGE"].startswith("Ежедневный отчёт за 20.11.2026")
    assert (
        "Новых лидов: 3" in message["MESSAGE"]
        and "Отчёт: https://sandbox.bitrix24.ru/marketplace/app/7/" in message["MESSAGE"]
    )
    # the 5-minute schedule: hot leads only, nothing due yet (the task is due in five minutes), no data read, no call
    quick = stack.invoke("check_alerts", {"only": "hot_leads"})
    assert (quick["report_data"], quick["bitrix_calls"], quick["fired"]) == (False, 0, [])
