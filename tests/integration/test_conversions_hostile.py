"""Hostile review of the offline conversions (issue 19): amounts, times and Metrica statuses the happy path missed."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, date, datetime, timedelta

from tests.integration.conversions_helpers import ACTION, NOW, FakeCrm, World, form, stage
from throughline.bitrix24 import Deadline
from throughline.conversions import data_manager, metrica
from throughline.conversions.ledger import ACCEPTED, REFUSED, SENT
from throughline.conversions.run import execute

pytest_plugins = ["tests.integration.conversions_helpers"]  # the world fixture


def won_deal(world: World, crm: FakeCrm, deal: int, won_at: datetime, amount: str, **ids: str) -> None:
    crm.deals[deal] = {"OPPORTUNITY": amount, "CURRENCY_ID": "RUB"}
    world.journey.put_meta(f"DEAL#{deal}", {"kind": "DEAL", "id": deal})
    world.journey.new_touches(f"DEAL#{deal}", [
        form(f"s{deal}:form", won_at - timedelta(days=1), **ids),
        stage(f"d{deal}:won", won_at, "won", "WON"),
    ])  # fmt: skip


def run(world: World, crm: FakeCrm, now: datetime = NOW):
    return execute(world.settings(), date_from=date(2026, 11, 1), date_to=date(2026, 11, 30), crm=crm,
                   now=lambda: now, sleep=lambda seconds: None)  # fmt: skip


def test_a_negative_amount_is_refused_alone_and_never_rejects_the_other_rows_of_a_metrica_file(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "150000.50", ym_client_id="1700000000000000001")
    won_deal(world, crm, 2, datetime(2026, 11, 18, 13, tzinfo=UTC), "-500", ym_client_id="1700000000000000002",
             gclid="Cj0Kneg", rb_clickid="rbc-neg")  # fmt: skip
    result = run(world, crm).platforms
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == ACCEPTED
    for platform, goal in (("yandex_metrica", "deal_won"), ("google_ads", ACTION), ("vk_ads", "deal_won")):
        row = world.ledger.get(f"{platform}#{goal}#won#DEAL#2")
        assert row["state"] == REFUSED and row["reason"] == "its amount is negative", platform
        assert result[platform].reasons["its amount is negative"] == 1
    assert [row["ClientId"] for row in world.metrica.rows()] == ["1700000000000000001"]
    assert world.data_manager.conversions == {} and world.vk.events == []


def test_a_conversion_ahead_of_the_runs_clock_is_left_for_a_later_run_not_refused_for_ever(world):
    crm = FakeCrm({})
    ahead = NOW + timedelta(minutes=3)  # the CRM's clock a few minutes ahead of ours
    won_deal(world, crm, 1, ahead, "1000", ym_client_id="1700000000000000001", gclid="Cj0Kahead", rb_clickid="rbc")
    first = run(world, crm).platforms
    for platform, goal in (("yandex_metrica", "deal_won"), ("google_ads", ACTION), ("vk_ads", "deal_won")):
        assert world.ledger.get(f"{platform}#{goal}#won#DEAL#1") is None, platform
        assert first[platform].reasons["its time is less than two minutes ago: a later run sends it"] == 1
    assert world.metrica.uploads == {} and world.data_manager.conversions == {} and world.vk.events == []
    later = NOW + timedelta(hours=1)
    world.metrica.clock = world.data_manager.clock = lambda: later
    second = run(world, crm, now=later).platforms
    assert {name: dict(result.states) for name, result in second.items()} == {
        "yandex_metrica": {ACCEPTED: 1}, "google_ads": {ACCEPTED: 1}, "vk_ads": {ACCEPTED: 1}}  # fmt: skip


def test_a_metrica_status_the_client_does_not_know_leaves_the_upload_followed(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    world.metrica.processing_polls = 50
    run(world, crm)
    item_id = "yandex_metrica#deal_won#won#DEAL#1"
    assert world.ledger.get(item_id)["state"] == SENT
    world.metrica.uploads[1]["status"] = ""  # an answer without a status (or one the docs add later)
    run(world, crm)
    assert world.ledger.get(item_id)["state"] == SENT  # still followed, never final on a status it cannot read
    world.metrica.uploads[1]["status"] = "PROCESSED"
    run(world, crm)
    assert world.ledger.get(item_id)["state"] == ACCEPTED


def test_a_run_that_died_after_uploading_to_metrica_never_uploads_the_file_twice(world, monkeypatch):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    won_deal(world, crm, 2, datetime(2026, 11, 18, 13, tzinfo=UTC), "2000", ym_client_id="1700000000000000002")
    settle = world.ledger.settle

    def dies_after_the_upload(item_id: str, state: str, **attributes):
        if state == SENT:
            raise RuntimeError("the function timed out")
        return settle(item_id, state, **attributes)

    monkeypatch.setattr(
        "throughline.conversions.ledger.Ledger.settle", lambda self, *a, **k: dies_after_the_upload(*a, **k)
    )
    with contextlib.suppress(RuntimeError):
        run(world, crm)
    monkeypatch.undo()
    assert len(world.metrica.uploads) == 1
    later = NOW + timedelta(minutes=30)  # the dead run's claims are stale by now
    world.metrica.clock = lambda: later
    world.ledger.clock = lambda: later
    run(world, crm, now=later)
    assert len(world.metrica.uploads) == 1 and len(world.metrica.rows()) == 2  # found, not uploaded again
    for deal in (1, 2):
        row = world.ledger.get(f"yandex_metrica#deal_won#won#DEAL#{deal}")
        assert row["state"] == ACCEPTED and row["upload_id"] == "1"


def test_an_upload_metrica_received_though_the_answer_was_lost_is_not_uploaded_again(world, monkeypatch):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    handle = world.metrica.handle

    def answer_lost(method, path, headers, body):
        answer = handle(method, path, headers, body)
        if method == "POST" and "offline_conversions/upload" in path:
            return 504, {"Content-Type": "text/plain"}, b"gateway timeout"  # stored, but the answer never came
        return answer

    world.metrica.handle = answer_lost
    run(world, crm)  # the upload is answered 504 every time: it is looked for, found, and never sent again
    assert len(world.metrica.uploads) == 1
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["upload_id"] == "1"
    world.metrica.handle = handle
    later = NOW + timedelta(hours=1)
    world.metrica.clock = lambda: later
    run(world, crm, now=later)
    assert len(world.metrica.rows()) == len(world.metrica.uploads) == 1  # the first file, found by its comment
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == ACCEPTED


def test_user_data_is_normalized_and_hashed_as_the_data_manager_formatting_guide_shows():
    # developers.google.com/data-manager/api/devguides/concepts/formatting: its own examples, byte for byte.
    assert data_manager.normalize_email("cloudy.sanfrancisco+shopping@gmail.com") == "cloudysanfrancisco@gmail.com"
    assert data_manager.normalize_email("user.name+NYC@Example.com") == "user.name+nyc@example.com"
    assert data_manager.normalize_email(" Jo.Hn +Deals@GoogleMail.com ") == "john@googlemail.com"  # whitespace trimmed
    assert data_manager.user_identifiers(("cloudy.sanfrancisco+shopping@gmail.com", "+1 (800) 555-0100")) == [
        {"emailAddress": hashlib.sha256(b"cloudysanfrancisco@gmail.com").hexdigest()},
        {"phoneNumber": hashlib.sha256(b"+18005550100").hexdigest()},
    ]
    assert data_manager.user_identifiers(("Cloudy.SanFrancisco+shopping@gmail.com",)) == [
        {"emailAddress": "223ebda6f6889b1494551ba902d9d381daf2f642bae055888e96343d53e9f9c4"}  # SHA-256, lower-case hex
    ]


def test_metricas_join_window_boundary_is_exactly_the_counters_days(world):
    crm = FakeCrm({})
    edge = NOW - timedelta(days=21)
    for deal, visit in ((1, edge), (2, edge - timedelta(seconds=1))):
        crm.deals[deal] = {"OPPORTUNITY": "1000.10", "CURRENCY_ID": "RUB"}
        world.journey.put_meta(f"DEAL#{deal}", {"kind": "DEAL", "id": deal})
        world.journey.new_touches(f"DEAL#{deal}", [
            form(f"s{deal}:form", visit, ym_client_id=f"170000000000000000{deal}"),
            stage(f"d{deal}:won", visit, "won", "WON"),
        ])  # fmt: skip
    result = execute(world.settings(), date_from=date(2026, 10, 29), date_to=date(2026, 11, 30), crm=crm,
                     now=lambda: NOW, sleep=lambda seconds: None).platforms["yandex_metrica"]  # fmt: skip
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == ACCEPTED  # exactly 21 days: joins
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#2")["state"] == REFUSED  # one second more: refused
    assert result.reasons == {"older than the counter's 21-day window for joining conversions to visits": 1}
    assert world.metrica.rows() == [
        {
            "ClientId": "1700000000000000001",
            "Target": "deal_won",
            "DateTime": str(int(edge.timestamp())),
            "Price": "1000.10",
            "Currency": "RUB",
        }
    ]


def test_the_data_manager_sandbox_reads_hashes_in_the_encoding_the_request_names(world):
    import base64
    import json
    import time

    world.google.access_tokens["t"] = time.monotonic() + 600
    digest = hashlib.sha256(b"john@example.com").digest()

    def ingest(encoding: str, hashed: str) -> int:
        body = {"destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                                  "productDestinationId": "555"}],
                "events": [{"transactionId": "won#DEAL#1", "eventTimestamp": "2026-11-18T12:00:00Z",
                            "userData": {"userIdentifiers": [{"emailAddress": hashed}]}}],
                "encoding": encoding, "validateOnly": True}  # fmt: skip
        status, _, _ = world.data_manager.handle("POST", "/v1/events:ingest", {"authorization": "Bearer t"},
                                                 json.dumps(body).encode())  # fmt: skip
        return status

    assert ingest("HEX", digest.hex()) == 200
    assert ingest("BASE64", base64.b64encode(digest).decode()) == 200
    assert ingest("BASE64", digest.hex()) == 400  # hex is not what the request said
    assert ingest("HEX", base64.b64encode(digest).decode()) == 400


def test_a_metrica_upload_stuck_in_processing_for_two_days_is_rejected_with_its_reason(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    world.metrica.processing_polls = 10**6  # never ends
    run(world, crm)
    item_id = "yandex_metrica#deal_won#won#DEAL#1"
    day_later = NOW + timedelta(days=1)
    world.metrica.clock = lambda: day_later
    run(world, crm, now=day_later)
    assert world.ledger.get(item_id)["state"] == SENT  # still within reason: followed
    later = NOW + timedelta(days=2, minutes=1)
    world.metrica.clock = lambda: later
    result = run(world, crm, now=later).platforms["yandex_metrica"]
    row = world.ledger.get(item_id)
    assert row["state"] == "rejected"
    assert row["reason"] == "Metrica had not finished processing the upload two days after it (status UPLOADED)"
    assert result.reasons[row["reason"]] == 1 and len(world.metrica.uploads) == 1


def test_a_currency_that_is_not_an_iso_code_is_refused_alone(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    won_deal(world, crm, 2, datetime(2026, 11, 18, 13, tzinfo=UTC), "2000", ym_client_id="1700000000000000002")
    crm.deals[2]["CURRENCY_ID"] = "руб"  # a custom currency of the portal
    result = run(world, crm).platforms["yandex_metrica"]
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == ACCEPTED
    row = world.ledger.get("yandex_metrica#deal_won#won#DEAL#2")
    assert row["state"] == REFUSED and row["reason"] == "its currency is not an ISO 4217 code"
    assert result.reasons["its currency is not an ISO 4217 code"] == 1


def test_the_metrica_sandbox_joins_a_conversion_only_to_a_visit_within_the_window(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    world.metrica.known_visitors = {"1700000000000000001": NOW - timedelta(days=22)}  # came back once, long ago
    run(world, crm)
    assert world.metrica.uploads[1]["status"] == "LINKAGE_FAILURE"
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == "rejected"


def test_an_earlier_file_is_found_past_the_first_page_of_metricas_uploads(world, monkeypatch):
    monkeypatch.setattr("throughline.conversions.metrica.LIST_PAGE", 2)
    for n in range(1, 6):
        world.metrica.uploads[n] = {"id": n, "rows": [], "joined": 0, "status": "PROCESSED", "polls": 0,
                                    "client_id_type": "CLIENT_ID", "comment": f"throughline file{n}"}  # fmt: skip
    client = metrica.MetricaClient(world.metrica.token, world.metrica.counter_id, world.metrica.api_url)
    assert client.find_upload("throughline file5", Deadline())["id"] == 5
    assert client.find_upload("throughline other", Deadline()) is None


def test_a_run_that_died_after_google_ingested_sends_the_same_transaction_id_again(world, monkeypatch):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", gclid="Cj0Kdied")
    settle = world.ledger.settle

    def dies_after_ingest(item_id: str, state: str, **attributes):
        if state == ACCEPTED and item_id.startswith("google_ads#"):
            raise RuntimeError("the function timed out")
        return settle(item_id, state, **attributes)

    monkeypatch.setattr("throughline.conversions.ledger.Ledger.settle", lambda _, *a, **k: dies_after_ingest(*a, **k))
    with contextlib.suppress(RuntimeError):
        run(world, crm)
    monkeypatch.undo()
    later = NOW + timedelta(minutes=30)
    world.data_manager.clock = lambda: later
    run(world, crm, now=later)
    assert world.data_manager.requests_ingested == 2  # sent again: Google deduplicates on the transactionId
    portal = data_manager.portal_key(None, None)  # world.settings() names no portal
    assert list(world.data_manager.conversions) == [("1234567890", "555", f"{portal}:won#DEAL#1")]
    assert world.ledger.get(f"google_ads#{ACTION}#won#DEAL#1")["state"] == ACCEPTED


def test_two_portals_never_share_a_transaction_id_and_what_was_sent_before_keeps_its_own(world, monkeypatch):
    """Two portals (two stacks) feed one Google Ads account: deal 1 of each is another conversion, so the id carries
    the portal. A conversion first tried before that (its ledger item has no transaction_id) is retried under the id
    it had — «won#DEAL#2» — so Google drops it as the duplicate it may be, never counts it twice."""
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", gclid="Cj0Kportal")
    won_deal(world, crm, 2, datetime(2026, 11, 18, 13, tzinfo=UTC), "2000", gclid="Cj0Klegacy")
    # What a run before the change left: deal 2 claimed, sent (or perhaps sent), failed on the answer.
    world.ledger.claim(f"google_ads#{ACTION}#won#DEAL#2", {"platform": "google_ads"})
    world.ledger.settle(f"google_ads#{ACTION}#won#DEAL#2", "failed", reason="timeout")
    first = world.settings(BITRIX24_DOMAIN="first.bitrix24.ru")
    execute(first, date_from=date(2026, 11, 1), date_to=date(2026, 11, 30), crm=crm, now=lambda: NOW,
            sleep=lambda seconds: None)  # fmt: skip
    mark = data_manager.portal_key("first.bitrix24.ru", None)
    assert mark == hashlib.sha256(b"first.bitrix24.ru").hexdigest()[:8]
    assert sorted(key[2] for key in world.data_manager.conversions) == [f"{mark}:won#DEAL#1", "won#DEAL#2"]
    assert world.ledger.get(f"google_ads#{ACTION}#won#DEAL#2")["transaction_id"] == "won#DEAL#2"
    # The second portal's deal 1, in a ledger of its own (its own stack): another transaction.
    world.dynamodb.delete_item(TableName=world.ledger.table, Key={"id": {"S": f"google_ads#{ACTION}#won#DEAL#1"}})
    second = world.settings(BITRIX24_WEBHOOK_URL="https://Second.bitrix24.kz/rest/1/abc/")
    execute(second, date_from=date(2026, 11, 1), date_to=date(2026, 11, 30), crm=crm, now=lambda: NOW,
            sleep=lambda seconds: None)  # fmt: skip
    other = data_manager.portal_key(None, "https://Second.bitrix24.kz/rest/1/abc/")
    assert other != mark and f"{other}:won#DEAL#1" in {key[2] for key in world.data_manager.conversions}


def test_a_conversion_seconds_old_waits_for_a_later_run_so_a_platforms_clock_behind_ours_cannot_refuse_the_file(world):
    crm = FakeCrm({})
    won_deal(world, crm, 1, datetime(2026, 11, 18, 12, tzinfo=UTC), "1000", ym_client_id="1700000000000000001")
    won_deal(world, crm, 2, NOW - timedelta(seconds=5), "2000", ym_client_id="1700000000000000002")
    world.metrica.clock = lambda: NOW - timedelta(seconds=10)  # Yandex's clock 10 s behind ours
    result = run(world, crm).platforms["yandex_metrica"]
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["state"] == ACCEPTED  # not refused with DEAL#2
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#2") is None
    assert result.reasons["its time is less than two minutes ago: a later run sends it"] == 1
