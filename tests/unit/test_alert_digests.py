"""The digests as they read, from hand-made records (figures by the report's builder), and their periods."""

from __future__ import annotations

from datetime import date

import pytest

from tests.unit.test_alert_checks import NOW, FakeBitrix, data, deal, lead, ledger, spend  # noqa: F401
from throughline.alerts.digests import digest_text, periods
from throughline.alerts.rules import DEFAULT_YAML, parse_rules

SENT = date(2026, 12, 7)  # a Monday
YESTERDAY = date(2026, 12, 6)


def records():
    leads = [lead(YESTERDAY) for _ in range(4)] + [lead(YESTERDAY, source="google", campaign="g1")]
    deals = [
        deal(leads[0], YESTERDAY, stage="WON", semantic="S", CLOSEDATE=f"{YESTERDAY}T00:00:00+03:00",
             OPPORTUNITY="50000", ASSIGNED_BY_ID="2"),
        deal(leads[1], YESTERDAY, stage="LOSE", semantic="F", CLOSEDATE=f"{YESTERDAY}T00:00:00+03:00",
             ASSIGNED_BY_ID="3"),
    ]  # fmt: skip
    return data(leads, deals, [spend(YESTERDAY, "6000"), spend(date(2026, 12, 5), "3000")])


def test_periods_of_the_three_digests():
    assert periods("daily", SENT)[2] == "2026-12-06"
    week, before, key = periods("weekly", SENT)
    assert (week.date_from, week.date_to, before.date_from, key) == (date(2026, 11, 30), YESTERDAY,
                                                                     date(2026, 11, 23), "2026-W49")  # fmt: skip
    month, before, key = periods("monthly", date(2026, 12, 1))
    assert (month.date_from, month.date_to, before.date_from, before.date_to, key) == (
        date(2026, 11, 1),
        date(2026, 11, 30),
        date(2026, 10, 1),
        date(2026, 10, 31),
        "2026-11",
    )
    with pytest.raises(ValueError):
        periods("hourly", SENT)


def test_the_daily_digest_reads_as_the_team_sees_it():
    text, key = digest_text("daily", SENT, records(), report_url="https://p.bitrix24.ru/marketplace/app/7/")
    assert key == "2026-12-06"
    assert text.splitlines() == [
        "Ежедневный отчёт за 06.12.2026",
        "Новых лидов: 5",
        "Сделок выиграно: 1 на 50\u00a0000 ₽; проиграно: 1",
        "Расход: 6\u00a0000 ₽ (+100 %); CPL: 1\u00a0500 ₽",
        "По источникам:",
        "• Яндекс (Контекстная реклама): лидов 4, выиграно 1 на 50\u00a0000 ₽, расход 6\u00a0000 ₽, CPL 1\u00a0500 ₽",
        "• Google (Контекстная реклама): лидов 1, выиграно 0 на 0 ₽, расход 0 ₽, CPL —",
        "Отчёт: https://p.bitrix24.ru/marketplace/app/7/",
    ]


def test_the_weekly_digest_names_campaigns_funnel_and_managers():
    text, key = digest_text("weekly", SENT, records(), users={"2": "Анна Смирнова"})
    assert key == "2026-W49"
    assert "• Яндекс «winter»: 9\u00a0000 ₽, 4, 2\u00a0250 ₽, 1, 455,6 %" in text
    assert "• Анна Смирнова: 1, 1, 50\u00a0000 ₽, 0" in text
    assert "• пользователь 3: 1, 0, 0 ₽, 1" in text


def test_the_monthly_digest_compares_channels_with_the_month_before():
    text, key = digest_text("monthly", date(2027, 1, 1), records())
    assert key == "2026-12"
    assert "Расход: 9\u00a0000 ₽" in text and "Выручка: 50\u00a0000 ₽" in text
    assert "• Контекстная реклама: 9\u00a0000 ₽, 50\u00a0000 ₽, 455,6 %, 455,6 %" in text


def test_a_digest_goes_out_once_per_period(ledger):  # noqa: F811
    from throughline.alerts.delivery import Notifier
    from throughline.alerts.digests import send_digest

    bitrix = FakeBitrix()
    notifier = Notifier(parse_rules(DEFAULT_YAML), ledger, bitrix, webhook_url="https://p.bitrix24.ru/rest/1/s/")
    first = send_digest("daily", SENT, records(), notifier)
    again = send_digest("daily", SENT, records(), notifier)
    assert (first["sent"], again["sent"]) == (True, False)
    assert len(bitrix.sent) == 1 and bitrix.sent[0]["USER_ID"] == 1
    assert NOW  # the shared fixtures' clock


# ---- a run killed after the post; a snapshot older than the period ---------------------------------------------------


def _digest_run(ledger, monkeypatch, clock, state: str):  # noqa: F811
    import json
    from datetime import datetime

    from tests.unit.test_alert_checks import MSK, Objects
    from throughline.adapters.alert_ledger import AlertLedger
    from throughline.alerts import checks, job
    from throughline.config import load_settings

    settings = load_settings({"ALERTS_TABLE": "alerts", "DATA_BUCKET": "bucket", "TIMEZONE": "Europe/Moscow",
                              "BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/rest/1/s/"})  # fmt: skip
    monkeypatch.setattr(checks, "load_report_data", lambda *a: records())
    monkeypatch.setattr(job, "AlertLedger", lambda table, lease_seconds: AlertLedger(
        table, ledger.client, clock=lambda: clock[0], lease_seconds=lease_seconds))  # fmt: skip
    objects = Objects({"crm/snapshot/state.json": json.dumps({"last_run_started": state}).encode()})
    bitrix = FakeBitrix()
    now = datetime(2026, 12, 7, 9, 0, tzinfo=MSK)
    return bitrix, lambda: job.run_send_digests(settings, objects, bitrix, kind="daily", now=now)


def test_a_run_killed_between_the_post_and_the_ledger_does_not_post_the_digest_twice(ledger, monkeypatch):  # noqa: F811
    """The 09:00 run posts the digest and dies (timeout) before the ledger says «sent». Lambda retries it minutes
    later — past the five-minute lease of an alert, within the digest's six hours: not posted again."""
    from throughline.adapters.alert_ledger import AlertLedger

    clock = [NOW.timestamp()]
    bitrix, run = _digest_run(ledger, monkeypatch, clock, "2026-12-07T05:00:00+03:00")
    with monkeypatch.context() as killed:
        killed.setattr(AlertLedger, "mark_sent", lambda *a, **k: (_ for _ in ()).throw(TimeoutError("killed")))
        with pytest.raises(TimeoutError):
            run()
    assert len(bitrix.sent) == 1
    clock[0] += 10 * 60  # Lambda's retry of the failed event
    retry = run()
    assert retry["sent"] is False and len(bitrix.sent) == 1
    clock[0] += 6 * 3600  # past the lease: a run by hand sends it (the post may have been lost before it was made)
    assert run()["sent"] is True and len(bitrix.sent) == 2


def test_a_digest_on_a_snapshot_older_than_its_period_says_so(ledger, monkeypatch):  # noqa: F811
    """The night's report failed: the CRM snapshot is from 05:00 of the day before yesterday ended. The 09:00 digest
    still goes out (no later run would send it) with a warning under its title; a fresh one has none."""
    clock = [NOW.timestamp()]
    _, run = _digest_run(ledger, monkeypatch, clock, "2026-12-06T05:00:00+03:00")
    stale = run()
    assert stale["sent"] is True and stale["snapshot_fresh"] is False
    assert stale["text"].splitlines()[:2] == [
        "Ежедневный отчёт за 06.12.2026",
        "⚠ Данные CRM последний раз обновлены 06.12.2026 05:00 — до конца 06.12.2026: ночной отчёт ещё не построен, "
        "лиды и сделки за период учтены не все.",
    ]
    _, run = _digest_run(ledger, monkeypatch, clock, "2026-12-07T05:01:00+03:00")  # after 06.12 ended
    fresh = run()  # already sent for 06.12: the ledger holds it; the text is built all the same
    assert fresh["snapshot_fresh"] is True and "⚠" not in fresh["text"] and fresh["sent"] is False
