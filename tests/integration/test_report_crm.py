"""Reading the CRM for the report against the sandbox: REST calls for N deals, a constant for a run with no changes,
incremental merges, deletion marks, the periodic full rescan, and fast_bitrix24's get_all on the same data."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from fast_bitrix24 import Bitrix

from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from tests.memory_objects import MemoryObjects
from throughline.bitrix24.client import Bitrix24Client
from throughline.report.crm import (
    SNAPSHOT_VERSION,
    STATE_KEY,
    SnapshotOptions,
    read_snapshot,
    refresh_snapshot,
    snapshot_key,
)

pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
MSK = ZoneInfo("Europe/Moscow")
DEALS = 6_000
LEADS = 120
# The N-deal budget is about deals; history is tested below.
DEALS_ONLY = SnapshotOptions(stage_history=False, person_key_secret="test-secret")


@pytest.fixture(scope="module")
def portal() -> Iterator[Sandbox]:
    with Sandbox(app_token="tok", seed=8) as sandbox:
        seed_history(
            sandbox,
            "lead",
            [
                {"TITLE": f"Лид {n}", "DATE_CREATE": "2026-11-02T10:00:00+03:00", "UTM_SOURCE": "yandex",
                 "PHONE": [{"VALUE": f"8 916 000-{n:04d}"[:15], "VALUE_TYPE": "WORK"}]}
                for n in range(LEADS)
            ],
        )  # fmt: skip
        seed_history(
            sandbox,
            "deal",
            [
                {"TITLE": f"Сделка {n}", "DATE_CREATE": "2026-11-03T10:00:00+03:00", "OPPORTUNITY": 1000 + n,
                 "STAGE_ID": "WON" if n % 4 == 0 else "NEW", "LEAD_ID": n % LEADS + 1}
                for n in range(DEALS)
            ],
        )  # fmt: skip
        yield sandbox


def client_for(sandbox: Sandbox) -> Bitrix24Client:
    return Bitrix24Client(sandbox.webhook_url)


def test_a_simple_mode_portal_says_so_and_its_deals_are_read() -> None:
    with Sandbox(app_token="tok", seed=9, crm_mode="simple") as sandbox:
        seed_history(sandbox, "deal", [{"TITLE": "Заявка", "DATE_CREATE": "2026-11-03T10:00:00+03:00",
                                        "UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc"}])  # fmt: skip
        objects = MemoryObjects()
        data = refresh_snapshot(client_for(sandbox), objects, now=lambda: datetime.now(MSK), options=DEALS_ONLY)
    assert data.info["crm_mode"] == "simple" and data.info["deals"] == 1 and data.info["leads"] == 0


def test_full_then_unchanged_then_changed_and_deleted(portal: Sandbox) -> None:
    objects = MemoryObjects()
    start = datetime.now(MSK)
    portal.reset_stats()
    began = time.perf_counter()
    first = refresh_snapshot(client_for(portal), objects, now=lambda: start, options=DEALS_ONLY)
    full_seconds = time.perf_counter() - began
    stats = portal.stats()
    budget = math.ceil(DEALS / 2500) + 1
    assert stats["requests"] == first.info["rest_calls"] <= budget, stats
    assert stats["by_method"] == {"batch": stats["requests"]}
    assert first.info["mode"] == "full" and first.info["crm_mode"] == "classic"  # in the first batch, no extra call
    deals = list(read_snapshot(objects, "deal"))
    leads = list(read_snapshot(objects, "lead"))
    assert [int(deal["ID"]) for deal in deals] == list(range(1, DEALS + 1))  # all, once, in order
    assert len(leads) == LEADS and all("PHONE" not in lead and lead["PERSON_KEYS"] for lead in leads)
    assert all(lead["PERSON_KEY"] in lead["PERSON_KEYS"] and len(lead["PERSON_KEY"]) == 64 for lead in leads)
    assert deals[0]["LEAD_ID"] == "1" and deals[0]["STAGE_SEMANTIC_ID"] == "S" and "TITLE" not in deals[0]
    assert {row["ENTITY_ID"] for row in first.statuses} == {"STATUS", "DEAL_STAGE"}
    assert {row["CURRENCY"] for row in first.currencies} >= {"RUB", "USD"}

    # Nothing changed: one batch (dictionaries + empty change scans), and no snapshot bucket rewritten.
    portal.reset_stats()
    objects.puts.clear()
    second = refresh_snapshot(client_for(portal), objects, now=lambda: datetime.now(MSK), options=DEALS_ONLY)
    assert second.info["mode"] == "incremental" and portal.stats()["requests"] == 1
    assert (second.info["leads_read"], second.info["deals_read"]) == (0, 0)
    assert objects.puts == [STATE_KEY]
    print(f"\nreport CRM read: full {DEALS} deals + {LEADS} leads = {first.info['rest_calls']} REST calls in "
          f"{full_seconds:.2f} s; unchanged run = {second.info['rest_calls']} call")  # fmt: skip

    # One deal moved, one lead deleted (the journey issue's mark): only those read and merged.
    client = client_for(portal)
    client.call("crm.deal.update", {"id": 2, "fields": {"STAGE_ID": "WON"}})
    objects.put("crm/deleted/lead/5.json", b"{}")
    portal.reset_stats()
    later = datetime.now(MSK)
    third = refresh_snapshot(client_for(portal), objects, now=lambda: later, options=DEALS_ONLY)
    assert third.info["deals_read"] == 1 and portal.stats()["requests"] == 1
    deals = {int(deal["ID"]): deal for deal in read_snapshot(objects, "deal")}
    assert deals[2]["STAGE_SEMANTIC_ID"] == "S" and len(deals) == DEALS
    assert 5 not in {int(lead["ID"]) for lead in read_snapshot(objects, "lead")}
    assert third.info["leads"] == LEADS - 1

    # After REPORT_FULL_RESCAN_DAYS the next run scans everything again.
    fourth = refresh_snapshot(
        client_for(portal),
        objects,
        now=lambda: later + timedelta(days=8),
        options=replace(DEALS_ONLY, full_rescan_days=7),
    )
    assert fourth.info["mode"] == "full" and fourth.info["deals_read"] == DEALS


def test_fast_bitrix24_get_all_on_the_same_portal(portal: Sandbox) -> None:
    """The comparison for the report note: calls and wall time of fast_bitrix24's get_all against our scan."""
    select = ["ID", "DATE_CREATE", "STAGE_ID", "OPPORTUNITY", "LEAD_ID"]
    portal.reset_stats()
    began = time.perf_counter()
    rows = Bitrix(portal.webhook_url, verbose=False).get_all("crm.deal.list", {"select": select})
    theirs = time.perf_counter() - began
    their_calls = portal.stats()["requests"]
    assert len(rows) == DEALS

    from throughline.report.crm import _Scan, scan

    portal.reset_stats()
    began = time.perf_counter()
    found: list[dict] = []
    scan(client_for(portal), [_Scan("deal", "crm.deal.list", tuple(select), sink=found.extend)])
    ours = time.perf_counter() - began
    our_calls = portal.stats()["requests"]
    assert len(found) == DEALS and our_calls <= math.ceil(DEALS / 2500) + 1
    print(f"\n{DEALS} deals: fast_bitrix24 get_all {their_calls} REST calls {theirs:.2f} s; "
          f"throughline scan {our_calls} calls {ours:.2f} s")  # fmt: skip


def test_stage_history_is_read_once_then_only_new_entries() -> None:
    with Sandbox(app_token="tok", seed=9) as sandbox:
        seed_history(
            sandbox,
            "deal",
            [
                {"DATE_CREATE": "2026-11-02T10:00:00+03:00", "OPPORTUNITY": 100,
                 "STAGE_MOVES": [("PREPARATION", "2026-11-04T10:00:00+03:00"), ("WON", "2026-11-09T10:00:00+03:00")]}
                for _ in range(40)
            ],
        )  # fmt: skip
        objects = MemoryObjects()
        first = refresh_snapshot(client_for(sandbox), objects, now=lambda: datetime.now(MSK))
        history = list(read_snapshot(objects, "deal_history"))
        assert first.info["stage_history_read"] == 120 and len(history) == 120
        assert [(row["STAGE_ID"], row["CREATED_TIME"][:10]) for row in history if row["OWNER_ID"] == 1] == [
            ("NEW", "2026-11-02"), ("PREPARATION", "2026-11-04"), ("WON", "2026-11-09")]  # fmt: skip
        sandbox.reset_stats()
        client = client_for(sandbox)
        client.call("crm.deal.update", {"id": 3, "fields": {"STAGE_ID": "LOSE"}})
        second = refresh_snapshot(client_for(sandbox), objects, now=lambda: datetime.now(MSK))
        assert second.info["stage_history_read"] == 1 and second.info["rest_calls"] == 1
        assert len(list(read_snapshot(objects, "deal_history"))) == 121


def test_a_new_pipeline_brings_its_stage_dictionary_once() -> None:
    with Sandbox(app_token="tok", seed=10) as sandbox:
        client = client_for(sandbox)
        for sort, (stage, name) in enumerate((("C1:NEW", "Заявка B2B"), ("C1:WON", "Оплачено")), start=1):
            fields = {"ENTITY_ID": "DEAL_STAGE_1", "STATUS_ID": stage, "NAME": name, "SORT": sort * 10}
            client.call("crm.status.add", {"fields": {**fields, "SEMANTICS": "S" if stage == "C1:WON" else None}})
        client.call("crm.deal.add", {"fields": {"TITLE": "B2B", "CATEGORY_ID": 1, "STAGE_ID": "C1:NEW"}})
        objects = MemoryObjects()
        sandbox.reset_stats()
        first = refresh_snapshot(client_for(sandbox), objects, now=lambda: datetime.now(MSK))
        assert first.info["rest_calls"] == 2  # the pipeline was new: one more call for its stages
        b2b = [row["NAME"] for row in first.statuses if row["ENTITY_ID"] == "DEAL_STAGE_1"]
        assert b2b == ["Заявка B2B", "Оплачено"]
        second = refresh_snapshot(client_for(sandbox), objects, now=lambda: datetime.now(MSK))
        assert second.info["rest_calls"] == 1  # known since: its dictionary rides in the first batch
        assert {row["ENTITY_ID"] for row in second.statuses} == {"STATUS", "DEAL_STAGE", "DEAL_STAGE_1"}


def test_contacts_and_companies_are_kept_beside_leads_and_deals() -> None:
    """Contacts (person keys, the segment fields written back) and companies (COMPANY_TYPE, EMPLOYEES, REVENUE) ride
    in the same batches; a changed company is merged, a contact's deletion mark applied, phones never stored."""
    with Sandbox(app_token="tok", seed=11) as sandbox:
        client = client_for(sandbox)
        seed_history(sandbox, "company", [
            {"TITLE": f"ООО {n}", "DATE_CREATE": "2026-10-01T10:00:00+03:00", "EMPLOYEES": f"EMPLOYEES_{n % 4 + 1}",
             "REVENUE": 5_000_000 * n, "COMPANY_TYPE": "CUSTOMER"} for n in range(1, 61)
        ])  # fmt: skip
        seed_history(sandbox, "contact", [
            {"NAME": f"Контакт {n}", "DATE_CREATE": "2026-10-02T10:00:00+03:00", "COMPANY_ID": n % 60 + 1,
             "PHONE": [{"VALUE": f"+7916{n:07d}", "VALUE_TYPE": "WORK"}]} for n in range(120)
        ])  # fmt: skip
        dictionary = client.call("crm.status.list", {"filter": {"ENTITY_ID": "EMPLOYEES"}}).result
        assert [row["STATUS_ID"] for row in dictionary] == ["EMPLOYEES_1", "EMPLOYEES_2", "EMPLOYEES_3", "EMPLOYEES_4"]
        objects = MemoryObjects()
        start = datetime.now(MSK)
        sandbox.reset_stats()
        first = refresh_snapshot(client, objects, now=lambda: start, options=DEALS_ONLY)
        assert sandbox.stats()["requests"] == first.info["rest_calls"] == 1  # everything fits the first batch
        assert (first.info["contacts"], first.info["companies"]) == (120, 60)
        companies = {int(row["ID"]): row for row in read_snapshot(objects, "company")}
        assert companies[7]["EMPLOYEES"] == "EMPLOYEES_4" and float(companies[7]["REVENUE"]) == 35_000_000
        assert companies[7]["COMPANY_TYPE"] == "CUSTOMER" and "TITLE" not in companies[7]
        contacts = {int(row["ID"]): row for row in read_snapshot(objects, "contact")}
        assert "PHONE" not in contacts[1] and len(contacts[1]["PERSON_KEY"]) == 64 and contacts[2]["COMPANY_ID"] == "2"

        client.call("crm.company.update", {"id": 7, "fields": {"EMPLOYEES": "EMPLOYEES_1", "REVENUE": 1000}})
        objects.put("crm/deleted/contact/3.json", b"{}")
        later = datetime.now(MSK)
        second = refresh_snapshot(client, objects, now=lambda: later, options=DEALS_ONLY)
        assert second.info["mode"] == "incremental" and second.info["companies_read"] == 1
        assert second.info["contacts"] == 119 and second.info["rest_calls"] == 1
        companies = {int(row["ID"]): row for row in read_snapshot(objects, "company")}
        assert companies[7]["EMPLOYEES"] == "EMPLOYEES_1" and float(companies[7]["REVENUE"]) == 1000


@pytest.mark.parametrize("added", ["deals' ASSIGNED_BY_ID only", "contacts and companies only"])
def test_a_version_4_snapshot_from_either_branch_is_rescanned_whole(added: str) -> None:
    """Two branches both called their snapshot version 4 (one added deals' ASSIGNED_BY_ID, the other contacts and
    companies); the merged version (5) makes a stack that ran either one scan everything once, so it gets both."""
    with Sandbox(app_token="tok", seed=12) as sandbox:
        client = client_for(sandbox)
        seed_history(sandbox, "company", [{"TITLE": "ООО Ромашка", "DATE_CREATE": "2026-10-01T10:00:00+03:00",
                                           "EMPLOYEES": "EMPLOYEES_2", "COMPANY_TYPE": "CUSTOMER"}])  # fmt: skip
        seed_history(sandbox, "contact", [{"NAME": "Контакт", "DATE_CREATE": "2026-10-02T10:00:00+03:00",
                                           "COMPANY_ID": 1}])  # fmt: skip
        seed_history(sandbox, "deal", [{"TITLE": "Сделка", "DATE_CREATE": "2026-10-03T10:00:00+03:00",
                                        "CONTACT_ID": 1, "ASSIGNED_BY_ID": 1}])  # fmt: skip
        objects = MemoryObjects()
        start = datetime.now(MSK)
        # What a version-4 run left: a recent full scan, so only the version can force a rescan.
        deal: dict[str, str] = {"ID": "1", "DATE_MODIFY": "2026-10-03T10:00:00+03:00"}
        deal_key = snapshot_key("deal", 0)
        if added.startswith("contacts"):
            refresh_snapshot(client, objects, now=lambda: start, options=DEALS_ONLY)
            assert [key for key in objects.data if key.startswith("crm/snapshot/entity=deal/")] == [deal_key]
            objects.put(deal_key, gzip.compress(json.dumps(deal).encode()))  # a version-4 deal: no ASSIGNED_BY_ID
        state = {"version": 4, "last_run_started": start.isoformat(), "last_full_scan": start.isoformat(),
                 "counts": {}, "history_last_id": 0, "categories": [0]}  # fmt: skip
        objects.put(STATE_KEY, json.dumps(state).encode())
        data = refresh_snapshot(client, objects, now=lambda: start + timedelta(minutes=5), options=DEALS_ONLY)
        assert data.info["mode"] == "full"
        assert (data.info["contacts"], data.info["companies"], data.info["deals"]) == (1, 1, 1)
        assert [row["ASSIGNED_BY_ID"] for row in read_snapshot(objects, "deal")] == ["1"]
        assert [row["EMPLOYEES"] for row in read_snapshot(objects, "company")] == ["EMPLOYEES_2"]
        assert json.loads(objects.data[STATE_KEY])["version"] == SNAPSHOT_VERSION
        # ... and the run after it is incremental again.
        later = refresh_snapshot(client, objects, now=lambda: start + timedelta(minutes=10), options=DEALS_ONLY)
        assert later.info["mode"] == "incremental"


def test_a_snapshot_written_before_texts_were_made_storable_is_rescanned_whole() -> None:
    """A stage code holding U+FFFF (a noncharacter: valid UTF-8, so a version-5 snapshot kept it as sent) is now
    U+FFFD in the stage dictionaries the report joins it with (``storable_values``), and in every row ``_compact``
    writes from now on. A bucket no change touches would keep the old code until the weekly full scan: its leads'
    stage missing from the funnel. The version after it makes the first run a full scan, which rewrites them all."""
    stage = "UC_CUT\uffff"
    with Sandbox(app_token="tok", seed=13) as sandbox:
        client = client_for(sandbox)
        client.call("crm.status.add", {"fields": {"ENTITY_ID": "STATUS", "STATUS_ID": stage, "NAME": "Думает",
                                                  "SORT": 15}})  # fmt: skip
        seed_history(sandbox, "lead", [{"TITLE": "Лид", "DATE_CREATE": "2026-10-02T10:00:00+03:00",
                                        "STATUS_ID": stage}])  # fmt: skip
        objects = MemoryObjects()
        start = datetime.now(MSK)
        # What a version-5 run left: the row as sent, a recent full scan, so only the version can force a rescan.
        objects.put(snapshot_key("lead", 0), gzip.compress(json.dumps(
            {"ID": "1", "DATE_CREATE": "2026-10-02T10:00:00+03:00", "STATUS_ID": stage}).encode()))  # fmt: skip
        state = {"version": 5, "last_run_started": start.isoformat(), "last_full_scan": start.isoformat(),
                 "counts": {}, "history_last_id": 0, "categories": [0]}  # fmt: skip
        objects.put(STATE_KEY, json.dumps(state).encode())
        data = refresh_snapshot(client, objects, now=lambda: start + timedelta(minutes=5), options=DEALS_ONLY)
        names = {row["STATUS_ID"] for row in data.statuses if row["ENTITY_ID"] == "STATUS"}
        assert "UC_CUT\ufffd" in names and stage not in names
        assert [row["STATUS_ID"] for row in read_snapshot(objects, "lead")] == ["UC_CUT\ufffd"]
        assert data.info["mode"] == "full"
