"""The alerts ledger (moto in-process): once per (rule, object, period), cooldowns, two runs at once, a retried
invocation after a crash, and a failed delivery that the next run sends."""

from __future__ import annotations

import threading

import pytest

from tests.moto_atomic import AtomicCalls
from tests.moto_tables import id_keyed_table
from throughline.adapters.alert_ledger import AlertLedger


@pytest.fixture
def client(monkeypatch):
    with id_keyed_table(monkeypatch, "alerts") as client:
        yield client


def test_an_alert_is_sent_once_per_period(client):
    ledger = AlertLedger("alerts", client, clock=lambda: 1_000_000.0)
    claim = ledger.claim("cpl_spike", "yandex_direct:42", "2026-12-05")
    assert claim is not None
    ledger.mark_sent(claim)
    assert ledger.claim("cpl_spike", "yandex_direct:42", "2026-12-05") is None  # the hourly rerun, restated spend
    assert ledger.state("cpl_spike", "yandex_direct:42", "2026-12-05") == "sent"
    assert ledger.claim("cpl_spike", "yandex_direct:43", "2026-12-05") is not None  # another campaign


def test_a_cooldown_holds_the_next_period_back_until_it_ends(client):
    now = [1_000_000.0]
    ledger = AlertLedger("alerts", client, clock=lambda: now[0])
    first = ledger.claim("conversion_drop", "yandex", "2026-12-05", cooldown_seconds=7 * 86400)
    ledger.mark_sent(first)
    now[0] += 86400
    assert ledger.claim("conversion_drop", "yandex", "2026-12-06", cooldown_seconds=7 * 86400) is None
    now[0] += 6 * 86400 - 1
    assert ledger.claim("conversion_drop", "yandex", "2026-12-12", cooldown_seconds=7 * 86400) is None
    now[0] += 1
    assert ledger.claim("conversion_drop", "yandex", "2026-12-12", cooldown_seconds=7 * 86400) is not None


def test_two_runs_at_once_send_one_alert(client):
    # moto in-process does not apply a transaction atomically across threads (3 of 8 claimed in one CI run): each
    # call runs alone, as DynamoDB applies it; a read-then-write claim would still race.
    atomic = AtomicCalls(client)
    ledgers = [AlertLedger("alerts", atomic, clock=lambda: 1_000_000.0) for _ in range(8)]
    start = threading.Barrier(len(ledgers))
    won: list[object] = []

    def run(ledger: AlertLedger) -> None:
        start.wait()
        claim = ledger.claim("big_deal", "deal:7", "once", cooldown_seconds=3600)
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=run, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1


def test_a_retried_invocation_after_a_crash_retakes_the_claim_only_after_its_lease(client):
    now = [1_000_000.0]
    ledger = AlertLedger("alerts", client, clock=lambda: now[0], lease_seconds=300)
    crashed = ledger.claim("stalled_deal", "deal:9", "C1:NEW", cooldown_seconds=86400)
    assert crashed is not None  # the run died before sending
    now[0] += 60
    assert ledger.claim("stalled_deal", "deal:9", "C1:NEW", cooldown_seconds=86400) is None  # Lambda's quick retry
    now[0] += 241
    retry = ledger.claim("stalled_deal", "deal:9", "C1:NEW", cooldown_seconds=86400)
    assert retry is not None  # the cooldown item is held by this very alert: a retry is no new alert
    ledger.mark_sent(crashed)  # a late word from the dead run changes nothing
    assert ledger.state("stalled_deal", "deal:9", "C1:NEW") == "claimed"
    ledger.mark_sent(retry)
    assert ledger.state("stalled_deal", "deal:9", "C1:NEW") == "sent"


def test_a_failed_delivery_is_released_and_sent_by_the_next_run(client):
    ledger = AlertLedger("alerts", client, clock=lambda: 1_000_000.0)
    claim = ledger.claim("data_quality", "all", "2026-W49", cooldown_seconds=7 * 86400)
    ledger.release(claim)
    assert ledger.state("data_quality", "all", "2026-W49") is None
    assert ledger.claim("data_quality", "all", "2026-W49", cooldown_seconds=7 * 86400) is not None


def test_pending_follow_ups_come_due_once(client):
    ledger = AlertLedger("alerts", client)
    ledger.add_pending("hot_lead", "lead:5", 1000, {"responsible": "3", "title": "Заявка"})
    ledger.add_pending("hot_lead", "lead:5", 2000, {"responsible": "4", "title": "другая"})  # a redelivery: kept
    ledger.add_pending("hot_lead", "lead:6", 5000, {"responsible": "3", "title": "Позже"})
    assert ledger.due_pending("hot_lead", 999) == []
    due = ledger.due_pending("hot_lead", 1500)
    assert due == [{"obj": "lead:5", "due_at": 1000, "responsible": "3", "title": "Заявка"}]
    ledger.done_pending("hot_lead", "lead:5")
    assert ledger.due_pending("hot_lead", 1500) == []


class NoScan:
    """The DynamoDB client with Scan forbidden: the ledger keeps a year of sent alerts, and the 5-minute schedule
    must not read them all to find the few follow-ups due."""

    def __init__(self, client):
        self.client = client

    def __getattr__(self, name):
        if name == "scan":
            raise AssertionError("the ledger scanned the whole table")
        return getattr(self.client, name)


def test_due_follow_ups_are_found_without_reading_the_whole_ledger(client):
    ledger = AlertLedger("alerts", NoScan(client), clock=lambda: 1000)
    for n in range(30):  # sent alerts the table keeps for a year
        ledger.mark_sent(ledger.claim("cpl_spike", f"campaign:{n}", "2026-12-01"), "bitrix")
    ledger.add_pending("hot_lead", "lead:7", 1000, {"title": "Заявка"})
    ledger.add_pending("hot_lead", "lead:8", 4000, {"title": "Позже"})
    ledger.add_pending("hot_lead", "lead:7", 1000, {"title": "повтор"})  # a redelivery: kept as it was
    assert ledger.due_pending("hot_lead", 1500) == [{"obj": "lead:7", "due_at": 1000, "title": "Заявка"}]
    ledger.done_pending("hot_lead", "lead:7")
    assert ledger.due_pending("hot_lead", 1500) == []
    assert [item["obj"] for item in ledger.due_pending("hot_lead", 4000)] == ["lead:8"]
    client.delete_item(TableName="alerts", Key={"id": {"S": "pending|hot_lead|lead:8"}})  # expired by the TTL
    assert ledger.due_pending("hot_lead", 4000) == []
