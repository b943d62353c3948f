"""The schedule-based rules over hand-made histories: each fires exactly once (a rerun sends nothing new) and stays
silent just below its threshold. Figures come from the report's own builder, so the tests hold its definitions."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import count
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from throughline.adapters.alert_ledger import AlertLedger
from throughline.alerts.checks import ReportData, percentile, run_checks
from throughline.alerts.delivery import Notifier
from throughline.alerts.rules import DEFAULT_YAML, parse_rules
from throughline.report.build import ReportOptions
from throughline.report.rates import RateBook

MSK = ZoneInfo("Europe/Moscow")
DAY = date(2026, 12, 6)  # a Sunday: the weekly lost-deals rule runs too
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=MSK)
STATUSES = [
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "Новая", "SORT": "10", "SEMANTICS": None},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "PREPARATION", "NAME": "Подготовка КП", "SORT": "20", "SEMANTICS": None},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Сделка успешна", "SORT": "30", "SEMANTICS": "S"},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "LOSE", "NAME": "Дорого", "SORT": "40", "SEMANTICS": "F"},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "APOLOGY", "NAME": "Выбрали конкурента", "SORT": "50", "SEMANTICS": "F"},
]
_ids = count(1)


class FakeBitrix:
    """Records the notifications a batch carries; activities per lead for the hot-lead check."""

    def __init__(self, activities: dict[str, list] | None = None):
        self.sent: list[dict] = []
        self.calls = 0
        self.activities = activities or {}

    def batch(self, commands):
        self.calls += 1
        results = {}
        for key, (method, params) in commands.items():
            if method == "im.notify.system.add":
                self.sent.append(params)
                results[key] = len(self.sent)
            else:
                results[key] = self.activities.get(str(params["filter"]["OWNER_ID"]), [])

        class Result:
            def get(self, key):
                return results[key]

        return Result()


@pytest.fixture
def ledger(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        key = {"AttributeName": "id", "KeyType": "HASH"}
        client.create_table(TableName="alerts", AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                            KeySchema=[key], BillingMode="PAY_PER_REQUEST")  # fmt: skip
        yield AlertLedger("alerts", client, clock=lambda: NOW.timestamp())


def only(*rules: str):
    """The default rules with all but ``rules`` switched off."""
    config = parse_rules(DEFAULT_YAML)
    return config.model_copy(update={"rules": {k: v for k, v in config.rules.items() if k in rules}})


def lead(day: date, campaign: str = "winter", source: str = "yandex", **fields) -> dict:
    return {"ID": str(next(_ids)), "DATE_CREATE": f"{day.isoformat()}T10:00:00+03:00", "STATUS_ID": "NEW",
            "UTM_SOURCE": source, "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": campaign, **fields}  # fmt: skip


def deal(of: dict | None, created: date, stage: str = "NEW", semantic: str = "P", **fields) -> dict:
    return {"ID": str(next(_ids)), "LEAD_ID": of["ID"] if of else None, "DATE_CREATE": f"{created}T12:00:00+03:00",
            "STAGE_ID": stage, "STAGE_SEMANTIC_ID": semantic, "CLOSEDATE": fields.pop("CLOSEDATE", ""),
            "OPPORTUNITY": "1000", "CURRENCY_ID": "RUB", "CATEGORY_ID": "0", **fields}  # fmt: skip


def spend(day: date, cost: str, campaign: str = "winter") -> dict:
    return {"date": day.isoformat(), "platform": "yandex_direct", "account_id": "acc", "campaign_id": campaign,
            "campaign_name": campaign, "impressions": 1000, "clicks": 10, "cost": Decimal(cost), "currency": "RUB",
            "include_vat": False}  # fmt: skip


def data(leads=(), deals=(), spend_rows=(), history=()) -> ReportData:
    return ReportData(list(leads), list(deals), list(history), list(spend_rows), RateBook("RUB"), STATUSES,
                      ReportOptions())  # fmt: skip


def run(ledger, config, report_data, bitrix=None):
    bitrix = bitrix or FakeBitrix()
    notifier = Notifier(config, ledger, bitrix, webhook_url="https://p.bitrix24.ru/rest/1/secret/")
    result = run_checks(report_data, DAY, NOW, config, notifier, webhook_url="https://p.bitrix24.ru/rest/1/secret/")
    return result, bitrix


# ---- CPL spike: 14 days at CPL 1 000 (2 000 ₽, 2 leads), yesterday 3 leads at CPL 1 400 (+40 %) or 1 390 (+39 %)


def cpl_history(yesterday_cost: str):
    leads, rows = [], []
    for back in range(1, 15):
        day = DAY - timedelta(days=back)
        rows.append(spend(day, "2000"))
        leads += [lead(day), lead(day)]
    rows.append(spend(DAY, yesterday_cost))
    leads += [lead(DAY) for _ in range(3)]
    return data(leads, [], rows)


def test_cpl_spike_fires_once_at_40_percent(ledger):
    config = only("cpl_spike", "spend_without_leads")
    result, bitrix = run(ledger, config, cpl_history("4200"))  # CPL 1 400 against the median 1 000
    assert result.fired == ["cpl_spike yandex_direct:winter 2026-12-06"]
    assert (
        "выросла на 40 %" in bitrix.sent[0]["MESSAGE"]
        and "CPL 1\u00a0400 при медиане 1\u00a0000" in bitrix.sent[0]["MESSAGE"]
    )
    again, _ = run(ledger, config, cpl_history("4200"))  # the hourly rerun; restated spend of the same day
    assert again.fired == []


def test_a_spike_the_import_restates_away_is_withdrawn_once_through_the_same_tag(ledger):
    config = only("cpl_spike")
    first, bitrix = run(ledger, config, cpl_history("4200"))
    assert first.fired == ["cpl_spike yandex_direct:winter 2026-12-06"]
    restated = cpl_history("3000")  # the 7-day lookback brought the day's final spend: CPL 1 000, no spike
    notifier = Notifier(config, ledger, bitrix, webhook_url="https://p.bitrix24.ru/rest/1/secret/")
    later = [run_checks(restated, DAY + timedelta(days=1), NOW, config, notifier) for _ in range(2)]
    assert later[0].fired == ["withdrawn cpl_spike yandex_direct:winter 2026-12-06"] and later[1].fired == []
    assert len(bitrix.sent) == 2 and bitrix.sent[1]["TAG"] == bitrix.sent[0]["TAG"]  # the correction replaces it
    assert bitrix.sent[1]["MESSAGE"].startswith("Отбой: после уточнения расхода рост стоимости лида «winter»")


def test_an_alert_recorded_in_quiet_mode_is_never_withdrawn_aloud(ledger):
    quiet = only("cpl_spike")
    quiet = quiet.model_copy(update={"settings": quiet.settings.model_copy(update={"quiet": True})})
    _, bitrix = run(ledger, quiet, cpl_history("4200"))
    assert bitrix.sent == [] and ledger.state("cpl_spike", "yandex_direct:winter", "2026-12-06") == "sent"
    loud = only("cpl_spike")  # quiet switched off the next day: the spike nobody was told of is not «called off»
    notifier = Notifier(loud, ledger, bitrix, webhook_url="https://p.bitrix24.ru/rest/1/secret/")
    later = run_checks(cpl_history("3000"), DAY + timedelta(days=1), NOW, loud, notifier)
    assert later.fired == [] and bitrix.sent == []


class RefusingBitrix(FakeBitrix):
    def batch(self, commands):
        from throughline.bitrix24 import BitrixError

        raise BitrixError("ACCESS_DENIED", "no im scope", 403, "batch")


def test_an_alert_delivered_by_telegram_is_withdrawn_by_telegram(ledger):
    config = only("cpl_spike")
    texts: list[str] = []
    bitrix = RefusingBitrix()
    notifier = Notifier(config, ledger, bitrix, webhook_url="https://p.bitrix24.ru/rest/1/secret/",
                        telegram=texts.append)  # fmt: skip
    assert run_checks(cpl_history("4200"), DAY, NOW, config, notifier).fired == [
        "cpl_spike yandex_direct:winter 2026-12-06"
    ]
    later = run_checks(cpl_history("3000"), DAY + timedelta(days=1), NOW, config, notifier)
    assert later.fired == ["withdrawn cpl_spike yandex_direct:winter 2026-12-06"]
    assert len(texts) == 2 and texts[1].startswith("Отбой: после уточнения расхода рост стоимости лида «winter»")


def test_cpl_spike_stays_silent_just_below_and_under_the_minimum_volume(ledger):
    config = only("cpl_spike")
    assert run(ledger, config, cpl_history("4170"))[0].fired == []  # +39 %
    small = cpl_history("4200")
    small.leads = [item for item in small.leads if not item["DATE_CREATE"].startswith(DAY.isoformat())]
    small.leads += [lead(DAY), lead(DAY)]  # 2 leads: under the minimum of 3 (CPL 2 100, +110 %)
    assert run(ledger, config, small)[0].fired == []


def test_spend_without_leads_fires_once_from_1000_rub(ledger):
    config = only("spend_without_leads")
    history = data([], [], [spend(DAY, "1000")])
    assert run(ledger, config, history)[0].fired == ["spend_without_leads yandex_direct:winter 2026-12-06"]
    assert run(ledger, config, history)[0].fired == []
    assert run(ledger, config, data([], [], [spend(DAY, "999.99", "other")]))[0].fired == []


# ---- conversion drop: 28 days with 20 of 40 leads converted (50 %), the last 7 with 7 of 20 (35 %: −30 %) or 8 (−20 %)


def conversion_history(converted_now: int):
    leads, deals = [], []
    for index in range(40):
        item = lead(DAY - timedelta(days=7 + index % 28))
        leads.append(item)
        if index < 20:
            deals.append(deal(item, DAY - timedelta(days=6)))
    for index in range(20):
        item = lead(DAY - timedelta(days=index % 7))
        leads.append(item)
        if index < converted_now:
            deals.append(deal(item, DAY))
    return data(leads, deals)


def test_conversion_drop_fires_once_at_30_percent(ledger):
    config = only("conversion_drop")
    result, bitrix = run(ledger, config, conversion_history(7))
    assert result.fired == ["conversion_drop paid_search:yandex 2026-12-06"]
    assert "упала на 30 %: 35 % за 30.11.2026 – 06.12.2026 против 50 %" in bitrix.sent[0]["MESSAGE"]
    assert run(ledger, config, conversion_history(7))[0].fired == []


def test_conversion_drop_stays_silent_just_below(ledger):
    config = only("conversion_drop")
    assert run(ledger, config, conversion_history(8))[0].fired == []  # 40 %: −20 %
    few = conversion_history(0)
    few.leads = few.leads[:40] + few.leads[41:]  # 19 leads in the week: under the minimum volume
    assert run(ledger, config, few)[0].fired == []


# ---- data quality: 20 leads, 18 with a source (90 % < 95 %) → fires; 19 of 20 (95 %) → silent


def quality_history(without_source: int):
    leads = [lead(DAY - timedelta(days=index % 7)) for index in range(20 - without_source)]
    leads += [lead(DAY, source="", UTM_MEDIUM="", UTM_CAMPAIGN="") for _ in range(without_source)]
    return data(leads)


def test_data_quality_fires_once_under_95_percent(ledger):
    config = only("data_quality")
    result, bitrix = run(ledger, config, quality_history(2))
    assert result.fired == ["data_quality 2026-12-06"]
    assert "источник известен у 90 % лидов (цель 95 %)" in bitrix.sent[0]["MESSAGE"]
    assert run(ledger, config, quality_history(2))[0].fired == []


def test_data_quality_stays_silent_at_95_percent(ledger):
    assert run(ledger, only("data_quality"), quality_history(1))[0].fired == []


# ---- stalled deal: 10 stays in «Подготовка КП» of 1…10 days (P90 = 9 days); a deal there 9.5 days fires, 8.5 not


def stalled_history(days_in_stage: float):
    history, deals = [], []
    for length in range(1, 11):
        item = deal(None, DAY - timedelta(days=30), stage="WON", semantic="S")
        entered = NOW - timedelta(days=20)
        history += [
            {"ID": str(next(_ids)), "OWNER_ID": item["ID"], "STAGE_ID": "PREPARATION",
             "CREATED_TIME": entered.isoformat()},
            {"ID": str(next(_ids)), "OWNER_ID": item["ID"], "STAGE_ID": "WON",
             "CREATED_TIME": (entered + timedelta(days=length)).isoformat()},
        ]  # fmt: skip
        deals.append(item)
    waiting = deal(None, DAY - timedelta(days=30), stage="PREPARATION", TITLE="Поставка")
    history.append({"ID": str(next(_ids)), "OWNER_ID": waiting["ID"], "STAGE_ID": "PREPARATION",
                    "CREATED_TIME": (NOW - timedelta(days=days_in_stage)).isoformat()})  # fmt: skip
    return data([], [*deals, waiting], [], history), waiting["ID"]


def test_p90_is_the_nearest_rank():
    assert percentile([float(n) for n in range(1, 11)], 0.9) == 9.0


def test_stalled_deal_fires_once_above_the_stage_p90(ledger):
    config = only("stalled_deal")
    history, deal_id = stalled_history(9.5)
    result, bitrix = run(ledger, config, history)
    assert result.fired == [f"stalled_deal {deal_id}"]
    assert "стоит на стадии «Подготовка КП» 9,5 дн. (обычно не дольше 9 дн.)" in bitrix.sent[0]["MESSAGE"]
    assert run(ledger, config, history)[0].fired == []


def test_stalled_deal_stays_silent_under_the_p90(ledger):
    assert run(ledger, only("stalled_deal"), stalled_history(8.5)[0])[0].fired == []


# ---- lost deals: weekly on the week's Sunday, per source and failure stage


def lost_history(on: date):
    yandex, google = lead(on - timedelta(days=20)), lead(on - timedelta(days=20), source="google")
    deals = [
        deal(yandex, on - timedelta(days=10), stage="LOSE", semantic="F", CLOSEDATE=f"{on}T00:00:00+03:00"),
        deal(yandex, on - timedelta(days=10), stage="APOLOGY", semantic="F", CLOSEDATE=f"{on}T00:00:00+03:00"),
        deal(google, on - timedelta(days=10), stage="LOSE", semantic="F", CLOSEDATE=f"{on}T00:00:00+03:00"),
        deal(google, on - timedelta(days=10), stage="LOSE", semantic="F", CLOSEDATE="2026-11-20T00:00:00+03:00"),
    ]
    return data([yandex, google], deals)


def test_lost_deals_fire_once_a_week_per_source(ledger):
    config = only("lost_deals")
    result, bitrix = run(ledger, config, lost_history(DAY))
    assert result.fired == ["lost_deals 30.11.2026 – 06.12.2026"]
    text = bitrix.sent[0]["MESSAGE"]
    assert "Проигранные сделки за неделю 30.11.2026 – 06.12.2026: 3" in text
    assert "Яндекс: 2 (Выбрали конкурента 1, Дорого 1)" in text or "Яндекс: 2 (Дорого 1, Выбрали конкурента 1)" in text
    assert "Google: 1 (Дорого 1)" in text
    assert run(ledger, config, lost_history(DAY))[0].fired == []


def test_lost_deals_stay_silent_on_other_days_and_without_losses(ledger):
    config = only("lost_deals")
    assert run(ledger, config, data([], []))[0].fired == []


# ---- hot lead without a call by its deadline


def test_a_hot_lead_without_a_call_tells_the_supervisor_once(ledger):
    config = only("hot_lead_missed")
    due = int((NOW - timedelta(minutes=1)).timestamp())
    ledger.add_pending("hot_lead", "lead:41", due, {"title": "Заявка с сайта", "created": str(due - 300)})
    ledger.add_pending("hot_lead", "lead:42", due, {"title": "Позвонили", "created": str(due - 300)})
    ledger.add_pending("hot_lead", "lead:43", due + 3600, {"title": "Ещё рано", "created": str(due)})
    ledger.add_pending("hot_lead", "lead:44", due, {"title": "Вторая", "created": str(due - 600)})
    result, bitrix = run(ledger, config, None, FakeBitrix({"42": [{"ID": "9"}]}))
    assert result.fired == ["hot_lead_missed lead:41", "hot_lead_missed lead:44"]
    assert bitrix.calls == 2  # one batch of activity lists, one notification for both
    assert bitrix.sent[0]["MESSAGE"].splitlines() == [
        "Лиды без звонка и письма в срок (2):",
        "• лид Заявка с сайта: 6 мин после поступления — https://p.bitrix24.ru/crm/lead/details/41/",
        "• лид Вторая: 11 мин после поступления — https://p.bitrix24.ru/crm/lead/details/44/",
    ]
    assert run(ledger, config, None)[0].fired == []


def test_a_hot_lead_another_run_is_still_telling_stays_pending_until_it_is_told(ledger):
    """The hourly and the 5-minute schedules meet at :00: the run that loses the claim must not drop the follow-up,
    or the winner's failed delivery (released for a retry) would leave nothing to retry."""
    config = only("hot_lead_missed")
    due = int((NOW - timedelta(minutes=1)).timestamp())
    ledger.add_pending("hot_lead", "lead:51", due, {"title": "Гонка", "created": str(due - 300)})
    other = ledger.claim("hot_lead_missed", "lead:51", "once", 0)  # the other run, mid-delivery
    result, bitrix = run(ledger, config, None)
    assert result.fired == [] and bitrix.sent == []
    assert [item["obj"] for item in ledger.due_pending("hot_lead", int(NOW.timestamp()))] == ["lead:51"]
    ledger.release(other)  # the other run's delivery failed
    retry, bitrix = run(ledger, config, None)
    assert retry.fired == ["hot_lead_missed lead:51"] and len(bitrix.sent) == 1
    assert ledger.due_pending("hot_lead", int(NOW.timestamp())) == []


class ActivitiesByOwner(FakeBitrix):
    """Activities per (owner type, owner id): a deal's call is not a lead's."""

    def batch(self, commands):
        self.calls += 1
        results = {key: self.activities.get((params["filter"]["OWNER_TYPE_ID"], str(params["filter"]["OWNER_ID"])), [])
                   for key, (method, params) in commands.items() if method == "crm.activity.list"}  # fmt: skip
        for key, (method, params) in commands.items():
            if method == "im.notify.system.add":
                self.sent.append(params)
                results[key] = len(self.sent)

        class Result:
            def get(self, key):
                return results[key]

        return Result()


def test_a_hot_deal_of_the_simple_crm_mode_is_looked_up_as_a_deal(ledger):
    """Simple CRM mode: a form makes a deal, the writer's hot-lead follow-up is ``deal:<id>``; the call made on the
    deal closes it (no false alarm), and one without a call links to the deal's card."""
    config = only("hot_lead_missed")
    due = int((NOW - timedelta(minutes=1)).timestamp())
    ledger.add_pending("hot_lead", "deal:77", due, {"title": "№77", "created": str(due - 300)})
    ledger.add_pending("hot_lead", "deal:78", due, {"title": "№78", "created": str(due - 300)})
    bitrix = ActivitiesByOwner({(2, "77"): [{"ID": "5"}], (1, "78"): [{"ID": "6"}]})  # 78's "call" is a lead's
    result, bitrix = run(ledger, config, None, bitrix)
    assert result.fired == ["hot_lead_missed deal:78"]
    assert bitrix.sent[0]["MESSAGE"].endswith("https://p.bitrix24.ru/crm/deal/details/78/")


# ---- big deals the writer's hook leaves to the daily check: another currency, or missed by the hook -----------------


def test_a_big_deal_in_another_currency_fires_once_at_the_day_rate_and_not_just_below(ledger):
    config = only("big_deal")
    big_deal = config.rules["big_deal"].model_copy(update={"threshold": Decimal(500000), "enabled": True})
    config = config.model_copy(update={"rules": {"big_deal": big_deal}})
    usd = [{"CURRENCY": "RUB", "AMOUNT": "1", "AMOUNT_CNT": "1", "BASE": "Y"},
           {"CURRENCY": "USD", "AMOUNT": "90", "AMOUNT_CNT": "1"}]  # fmt: skip
    modified = {"DATE_MODIFY": f"{DAY}T15:00:00+03:00"}
    big = deal(None, DAY - timedelta(days=3), TITLE="Экспорт", OPPORTUNITY="5555.56", CURRENCY_ID="USD",
               ASSIGNED_BY_ID="7", **modified)  # 500 000,4 ₽  # fmt: skip
    small = deal(None, DAY - timedelta(days=3), TITLE="Мелкий", OPPORTUNITY="5555.55", CURRENCY_ID="USD",
                 **modified)  # 499 999,5 ₽  # fmt: skip
    stale = deal(None, DAY - timedelta(days=30), TITLE="Старый", OPPORTUNITY="9000", CURRENCY_ID="USD",
                 DATE_MODIFY=f"{DAY - timedelta(days=20)}T15:00:00+03:00")  # not touched on the day  # fmt: skip
    report_data = ReportData([], [big, small, stale], [], [], RateBook("RUB", (), usd), STATUSES, ReportOptions())
    result, bitrix = run(ledger, config, report_data)
    assert result.fired == [f"big_deal {big['ID']}"]
    assert [note["USER_ID"] for note in bitrix.sent] == [7]
    assert bitrix.sent[0]["MESSAGE"].startswith("Крупная сделка: Экспорт на 5\u00a0556 USD")
    again, _ = run(ledger, config, report_data)  # the hourly rerun, or the writer's hook that told it already
    assert again.fired == []


# ---- a day the CRM snapshot does not cover yet is not checked --------------------------------------------------------


class Objects:
    def __init__(self, items: dict[str, bytes]):
        self.items = dict(items)
        self.bucket = "bucket"

    def get(self, key):
        return self.items.get(key)

    def put(self, key, body, content_type=None):
        self.items[key] = body

    def keys(self, prefix, start_after=None):
        return iter(sorted(key for key in self.items if key.startswith(prefix) and key > (start_after or "")))

    def prefixes(self, prefix):
        return iter(sorted({prefix + key[len(prefix):].split("/")[0] + "/" for key in self.items
                            if key.startswith(prefix) and "/" in key[len(prefix):]}))  # fmt: skip


def test_a_day_the_crm_snapshot_does_not_cover_yet_is_not_checked(ledger, monkeypatch):
    """Spend imports at 03:30, the report (and the CRM snapshot) at 05:00, check_alerts hourly: at 04:20 yesterday's
    spend is in but yesterday's leads after the last snapshot (05:00 the day before) are not — every campaign would
    look like spend without leads. Such a run checks hot leads only; after the report it checks the day."""
    import json

    from throughline.alerts import job
    from throughline.config import load_settings

    settings = load_settings({"ALERTS_TABLE": "alerts", "DATA_BUCKET": "bucket", "TIMEZONE": "Europe/Moscow"})
    seen = []
    monkeypatch.setattr(job, "notifier_for", lambda *a: Notifier(only("spend_without_leads"), ledger, FakeBitrix()))
    monkeypatch.setattr("throughline.alerts.checks.run_checks",
                        lambda data, *a, **k: seen.append(data) or __import__("types").SimpleNamespace(
                            fired=[], failed=[]))  # fmt: skip
    dictionaries = json.dumps({"statuses": STATUSES, "currencies": [], "info": {"crm_mode": "classic"}}).encode()

    def snapshot_at(moment: str) -> Objects:
        return Objects({"crm/snapshot/dictionaries.json": dictionaries,
                        "crm/snapshot/state.json": json.dumps({"last_run_started": moment}).encode()})  # fmt: skip

    early = datetime(2026, 12, 7, 4, 20, tzinfo=MSK)
    stale = job.run_check_alerts(settings, snapshot_at("2026-12-06T05:00:00+03:00"), None, now=early)
    assert stale["date"] == "2026-12-06" and stale["report_data"] is False and seen == [None]
    fresh = job.run_check_alerts(settings, snapshot_at("2026-12-07T05:00:00+03:00"), None,
                                 now=early + timedelta(hours=1))  # fmt: skip
    assert fresh["report_data"] is True and seen[-1] is not None
