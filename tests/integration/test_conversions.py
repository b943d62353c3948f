"""Offline conversions through the Metrica, Data Manager and VK tracker sandboxes (issue 19)."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import boto3
import pytest

from tests.integration.conversions_helpers import ACTION, BUCKET, NOW, REGION, FakeCrm, World, form, stage
from throughline.bitrix24 import Deadline
from throughline.conversions import data_manager, metrica, vk
from throughline.conversions.collect import Conversion, collect_conversions
from throughline.conversions.ledger import ACCEPTED, FAILED, NO_IDENTIFIER, REFUSED, REJECTED, SENT
from throughline.conversions.platforms import Item
from throughline.conversions.run import execute

pytest_plugins = ["tests.integration.conversions_helpers"]  # the world fixture
PORTAL = data_manager.portal_key(None, None)  # world.settings() names no portal: the key of an empty host
MOSCOW = ZoneInfo("Europe/Moscow")
CLIENT_ID = "1700000000123456789"
GCLID = "Cj0KCQiA-abc123XYZ_def"


def seed(world: World) -> FakeCrm:
    """DEAL#1 from LEAD#10 (every id); DEAL#2 won, reopened, won again (a yclid); DEAL#3 won long ago (a ClientID);
    DEAL#4 won without any id; DEAL#5 still open."""
    store = world.journey
    store.new_touches("LEAD#10", [form("s1:form", datetime(2026, 11, 2, 10, tzinfo=UTC), ym_client_id=CLIENT_ID,
                                       yclid="7283746512", gclid=GCLID, rb_clickid="rbc-one")])  # fmt: skip
    store.put_meta("DEAL#1", {"kind": "DEAL", "id": 1, "lead_id": 10})
    store.new_touches("DEAL#1", [stage("d1:won", datetime(2026, 11, 18, 12, tzinfo=UTC), "won", "WON")])
    store.put_meta("DEAL#2", {"kind": "DEAL", "id": 2})
    store.new_touches("DEAL#2", [
        form("s2:form", datetime(2026, 11, 5, 9, tzinfo=UTC), yclid="9912"),
        stage("d2:won1", datetime(2026, 11, 10, 9, tzinfo=UTC), "won", "WON"),
        stage("d2:reopen", datetime(2026, 11, 11, 9, tzinfo=UTC), "stage", "EXECUTING"),
        stage("d2:won2", datetime(2026, 11, 19, 9, tzinfo=UTC), "won", "WON"),
    ])  # fmt: skip
    store.put_meta("DEAL#3", {"kind": "DEAL", "id": 3})
    store.new_touches("DEAL#3", [
        form("s3:form", datetime(2026, 10, 1, 9, tzinfo=UTC), ym_client_id="1600000000000000001"),
        stage("d3:won", datetime(2026, 10, 20, 9, tzinfo=UTC), "won", "WON"),
    ])  # fmt: skip
    store.put_meta("DEAL#4", {"kind": "DEAL", "id": 4})
    store.new_touches("DEAL#4", [stage("d4:won", datetime(2026, 11, 15, 9, tzinfo=UTC), "won", "WON")])
    store.put_meta("DEAL#5", {"kind": "DEAL", "id": 5})
    store.new_touches("DEAL#5", [form("s5:form", datetime(2026, 11, 15, 9, tzinfo=UTC), gclid=GCLID)])
    amounts = {1: "150000.50", 2: "80000", 3: "30000", 4: "5000"}
    return FakeCrm({deal: {"OPPORTUNITY": amount, "CURRENCY_ID": "RUB"} for deal, amount in amounts.items()})


def run(world: World, crm: FakeCrm, date_from: date = date(2026, 10, 1), date_to: date = date(2026, 11, 20), **kw):
    settings = kw.pop("settings", None) or world.settings()
    return execute(settings, date_from=date_from, date_to=date_to, crm=crm, now=lambda: NOW,
                   sleep=lambda seconds: None, **kw)  # fmt: skip


def item(conversion: Conversion, column: str, value: str, goal: str = "deal_won", platform: str = "p") -> Item:
    return Item(f"{platform}#{goal}#{conversion.kind}#{conversion.entity}", conversion, goal, (column, value))


# -- the documented formats on fixed examples ------------------------------------------------------------------


def test_metrica_csv_is_the_documented_file():
    conversion = Conversion("DEAL#1", "won", datetime(2026, 11, 18, 12, tzinfo=UTC), Decimal("150000.5"), "RUB")
    free = Conversion("DEAL#7", "won", datetime(2026, 11, 18, 13, tzinfo=UTC), Decimal("0"), "RUB")
    body = metrica.conversions_csv([item(conversion, "ClientId", CLIENT_ID), item(free, "ClientId", "42")])
    assert body == (
        b"ClientId,Target,DateTime,Price,Currency\n"
        b"1700000000123456789,deal_won,1795003200,150000.50,RUB\n"
        b"42,deal_won,1795006800,0.00,RUB\n"
    )
    with pytest.raises(ValueError):
        metrica.conversions_csv([item(conversion, "ClientId", "1"), item(free, "Yclid", "2")])


def test_data_manager_body_is_the_documented_request():
    conversion = Conversion("DEAL#1", "won", datetime(2026, 11, 18, 12, tzinfo=UTC), Decimal("150000.50"), "RUB")
    hashed = Conversion("DEAL#2", "won", datetime(2026, 11, 19, 9, tzinfo=UTC), Decimal("80000"), "RUB",
                        contacts=(" John.Doe@GMAIL.com ", "8 916 123-45-67"))  # fmt: skip
    body = data_manager.ingest_body(
        [item(conversion, "gclid", GCLID, ACTION, "google_ads"), item(hashed, "user_data", "x", ACTION, "google_ads")],
        "1234567890",
        "555",
        "9876543210",
        True,
    )
    assert body == {
        "destinations": [{"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                          "productDestinationId": "555",
                          "loginAccount": {"accountType": "GOOGLE_ADS", "accountId": "9876543210"}}],
        "events": [
            {"transactionId": "won#DEAL#1", "eventTimestamp": "2026-11-18T12:00:00Z", "eventSource": "OTHER",
             "currency": "RUB", "conversionValue": 150000.5, "adIdentifiers": {"gclid": GCLID}},
            {"transactionId": "won#DEAL#2", "eventTimestamp": "2026-11-19T09:00:00Z", "eventSource": "OTHER",
             "currency": "RUB", "conversionValue": 80000.0,
             "userData": {"userIdentifiers": [
                 {"emailAddress": hashlib.sha256(b"johndoe@gmail.com").hexdigest()},
                 {"phoneNumber": hashlib.sha256(b"+79161234567").hexdigest()}]}},
        ],
        "validateOnly": True,
        "encoding": "HEX",
    }  # fmt: skip
    too_many = [item(conversion, "gclid", GCLID)] * 2001
    with pytest.raises(ValueError):
        data_manager.ingest_body(too_many, "1", "2", None, False)


def test_vk_tracker_url_is_the_documented_request():
    conversion = Conversion("DEAL#1", "won", datetime(2026, 11, 18, 12, tzinfo=UTC), Decimal("150000.50"), "RUB")
    url = vk.tracker_url("https://top-fwz1.mail.ru/tracker", "3512345", item(conversion, "rb_clickid", "a b/c"))
    assert url == "https://top-fwz1.mail.ru/tracker?id=3512345;e=RG%3A150000.50/deal_won;rb_clickid=a%20b%2Fc"
    whole = Conversion("DEAL#2", "won", conversion.at, Decimal("80000"), "RUB")
    assert ";e=RG%3A80000/deal_won;" in vk.tracker_url("https://t/tracker", "1", item(whole, "rb_clickid", "x"))


# -- what is sent ---------------------------------------------------------------------------------------------


def test_collect_reads_wins_identifiers_and_amounts(world):
    crm = seed(world)
    found = collect_conversions(world.journey, crm, date_from=date(2026, 10, 1), date_to=date(2026, 11, 20),
                                zone=MOSCOW, today=date(2026, 11, 20))  # fmt: skip
    by_entity = {c.entity: c for c in found}
    assert sorted(by_entity) == ["DEAL#1", "DEAL#2", "DEAL#3", "DEAL#4"]  # DEAL#5 is open
    assert by_entity["DEAL#1"].identifiers == {"ym_client_id": CLIENT_ID, "yclid": "7283746512", "gclid": GCLID,
                                               "rb_clickid": "rbc-one"}  # fmt: skip
    assert by_entity["DEAL#1"].amount == Decimal("150000.50")
    assert by_entity["DEAL#2"].at == datetime(2026, 11, 10, 9, tzinfo=UTC)  # the first win: won twice is one
    assert by_entity["DEAL#4"].identifiers == {}
    # The range is about the conversion's day: the second win of DEAL#2 (19 Nov) does not make a second one.
    later = collect_conversions(world.journey, crm, date_from=date(2026, 11, 12), date_to=date(2026, 11, 20),
                                zone=MOSCOW, today=date(2026, 11, 20))  # fmt: skip
    assert [c.entity for c in later] == ["DEAL#4", "DEAL#1"]


def test_a_run_sends_each_conversion_once_per_platform(world):
    crm = seed(world)
    first = run(world, crm).summary()["platforms"]
    assert first["yandex_metrica"]["states"] == {ACCEPTED: 2, REFUSED: 1, NO_IDENTIFIER: 1}
    assert first["google_ads"]["states"] == {ACCEPTED: 1, NO_IDENTIFIER: 3}
    assert first["vk_ads"]["states"] == {ACCEPTED: 1, NO_IDENTIFIER: 3}
    assert sorted((r["ClientId"] if "ClientId" in r else r["Yclid"], r["Price"]) for r in world.metrica.rows()) == [
        (CLIENT_ID, "150000.50"),
        ("9912", "80000.00"),
    ]
    assert list(world.data_manager.conversions) == [("1234567890", "555", f"{PORTAL}:won#DEAL#1")]
    assert world.vk.events == [{"goal": "deal_won", "value": "150000.50", "rb_clickid": "rbc-one"}]
    # Again (the next hour; the deal reopened and won again in between): nothing new is sent.
    again = run(world, crm).summary()["platforms"]
    assert again["yandex_metrica"]["states"] == {NO_IDENTIFIER: 1}
    assert again["yandex_metrica"]["already_done"] == 3
    assert len(world.metrica.rows()) == 2 and len(world.vk.events) == 1
    assert world.data_manager.requests_ingested == 1


def test_an_expired_conversion_is_refused_with_its_reason(world):
    crm = seed(world)
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.reasons["older than the counter's 21-day window for joining conversions to visits"] == 1
    row = world.ledger.get("yandex_metrica#deal_won#won#DEAL#3")
    assert row["state"] == REFUSED and "21-day" in row["reason"]
    assert "1600000000000000001" not in {r.get("ClientId") for r in world.metrica.rows()}


def test_a_platform_outage_retries_and_nothing_is_lost(world):
    crm = seed(world)
    world.vk.faults = [503] * 12  # longer than one run's retries
    world.data_manager.faults = [503, 500]  # shorter: retried within the run
    result = run(world, crm)
    assert result.platforms["google_ads"].states[ACCEPTED] == 1
    assert result.platforms["vk_ads"].states[FAILED] == 1 and result.failures == 1
    assert world.ledger.get("vk_ads#deal_won#won#DEAL#1")["reason"] == "the VK tracker answered 503"
    world.vk.faults = []
    result = run(world, crm)  # the next hourly run sends what failed
    assert result.platforms["vk_ads"].states == {ACCEPTED: 1, NO_IDENTIFIER: 3}
    assert world.vk.events == [{"goal": "deal_won", "value": "150000.50", "rb_clickid": "rbc-one"}]
    assert result.failures == 0


def test_an_invalid_event_is_rejected_with_the_platforms_reason_and_the_rest_sent(world):
    crm = seed(world)
    world.journey.new_touches("DEAL#4", [form("s4:form", datetime(2026, 11, 14, 9, tzinfo=UTC), gclid="not a gclid!")])
    result = run(world, crm).platforms["google_ads"]
    assert result.states == {ACCEPTED: 1, REJECTED: 1, NO_IDENTIFIER: 2}
    assert result.reasons == {"the gclid cannot be decoded": 1}
    assert world.ledger.get("google_ads#" + ACTION + "#won#DEAL#4")["reason"].startswith("events[0].adIdentifiers")
    assert list(world.data_manager.conversions) == [("1234567890", "555", f"{PORTAL}:won#DEAL#1")]


def test_a_platform_without_its_settings_is_skipped_and_says_so(world):
    crm = seed(world)
    settings = world.settings(VK_ADS_PIXEL_ID="", METRICA_TOKEN="", METRICA_COUNTER_ID="")
    summary = run(world, crm, settings=settings).summary()["platforms"]
    assert summary["vk_ads"] == {"skipped": "missing VK_ADS_PIXEL_ID"}
    assert summary["yandex_metrica"] == {"skipped": "missing METRICA_TOKEN, METRICA_COUNTER_ID"}
    assert summary["google_ads"]["states"][ACCEPTED] == 1
    assert world.vk.events == [] and world.metrica.uploads == {}


def test_a_metrica_upload_still_processing_is_followed_by_the_next_run(world):
    crm = seed(world)
    world.metrica.processing_polls = 50
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.states[SENT] == 2
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1")["upload_id"] == "1"
    world.metrica.processing_polls = 0
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.states[ACCEPTED] == 2 and len(world.metrica.rows()) == 2


def test_metrica_refuses_a_goal_that_is_not_a_javascript_event(world):
    crm = seed(world)
    world.metrica.goals = {"deal_won": "url"}
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.states[FAILED] == 3
    assert next(iter(result.reasons)).startswith("goal deal_won is a url goal")
    assert world.metrica.uploads == {}


def test_two_runs_at_once_claim_a_conversion_once(world):
    first = world.ledger.claim("vk_ads#g#won#DEAL#1", {"platform": "vk_ads"})
    second = world.ledger.claim("vk_ads#g#won#DEAL#1", {"platform": "vk_ads"})
    assert (first, second) == (1, None)


def test_the_ledger_is_exported_for_the_report(world):
    crm = seed(world)
    run(world, crm)
    body = boto3.client("s3", region_name=REGION).get_object(Bucket=BUCKET, Key="conversions/ledger.json.gz")
    rows = [json.loads(line) for line in gzip.decompress(body["Body"].read()).splitlines()]
    assert len(rows) == 12 and {row["platform"] for row in rows} == {"yandex_metrica", "google_ads", "vk_ads"}
    assert all("contacts" not in row and "@" not in json.dumps(row).replace("#", "") for row in rows)


def test_dry_run_sends_and_records_nothing(world):
    crm = seed(world)
    result = run(world, crm, dry_run=True)
    assert result.platforms["google_ads"].states == {"would_send": 1, NO_IDENTIFIER: 3}
    assert world.ledger.get("google_ads#" + ACTION + "#won#DEAL#1") is None
    assert world.metrica.uploads == {} and world.vk.events == []


def test_the_hourly_run_looks_at_recently_changed_deals_whatever_their_conversions_date(world):
    from throughline.adapters.journey_store import JourneyStore

    earlier = JourneyStore("journey", world.dynamodb, clock=lambda: NOW - timedelta(days=10))
    earlier.put_meta("DEAL#20", {"kind": "DEAL", "id": 20})
    earlier.new_touches("DEAL#20", [stage("d20:won", NOW - timedelta(days=10), "won", "WON")])
    world.journey.put_meta("DEAL#21", {"kind": "DEAL", "id": 21})  # won 40 days ago, recorded today (a late sweep)
    world.journey.new_touches("DEAL#21", [stage("d21:won", NOW - timedelta(days=40), "won", "WON")])
    found = collect_conversions(world.journey, None, date_from=date(2026, 8, 22), date_to=date(2026, 11, 20),
                                zone=MOSCOW, today=date(2026, 11, 20), changed_since=date(2026, 11, 17))  # fmt: skip
    assert [c.entity for c in found] == ["DEAL#21"]


def test_a_conversion_recorded_late_in_the_utc_day_before_its_local_day_is_found(world):
    from throughline.adapters.journey_store import JourneyStore

    at = datetime(2026, 11, 16, 22, 30, tzinfo=UTC)  # 17 November, 01:30 in Moscow; the change log's day is the 16th
    late = JourneyStore("journey", world.dynamodb, clock=lambda: at)
    late.put_meta("DEAL#30", {"kind": "DEAL", "id": 30})
    late.new_touches("DEAL#30", [stage("d30:won", at, "won", "WON")])
    found = collect_conversions(world.journey, None, date_from=date(2026, 11, 17), date_to=date(2026, 11, 20),
                                zone=MOSCOW, today=date(2026, 11, 20))  # fmt: skip
    assert [c.entity for c in found] == ["DEAL#30"]


def test_metrica_identifiers_must_be_numbers_and_the_goal_its_event_identifier(world):
    assert metrica.identifier({"ym_client_id": "17x", "yclid": "123"}) == ("Yclid", "123")
    assert metrica.identifier({"yclid": "1,2\n3"}) is None
    client = metrica.MetricaClient(world.metrica.token, world.metrica.counter_id, world.metrica.api_url)
    assert client.check_goal("deal_won", Deadline()) is None
    assert "JavaScript event identifier" in client.check_goal("1000", Deadline())
    assert "does not exist" in client.check_goal("deal_lost", Deadline())


def test_the_cli_dry_run_prints_what_would_be_sent_without_the_ids(world, monkeypatch):
    import argparse
    import io

    from throughline.conversions import cli

    seed(world)
    environment = {"JOURNEY_TABLE": "journey", "METRICA_TOKEN": "t", "METRICA_COUNTER_ID": "1",
                   "METRICA_GOAL": "deal_won", "VK_ADS_PIXEL_ID": "", "GOOGLE_ADS_CLIENT_ID": ""}  # fmt: skip
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    out = io.StringIO()
    args = argparse.Namespace(date_from=date(2026, 11, 12), date_to=date(2026, 11, 20), dry_run=True, stack_name=None)
    assert cli.run(args, out) == 0
    text = out.getvalue()
    assert "yandex_metrica: no_identifier 1, would_send 1" in text
    assert "DEAL#1       won       deal_won 2026-11-18T12:00:00+00:00 0 RUB by ClientId" in text
    assert "vk_ads: skipped (missing VK_ADS_PIXEL_ID, VK_ADS_GOAL)" in text
    assert CLIENT_ID not in text and GCLID not in text
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#1") is None


def test_a_qualified_stage_is_its_own_goal_where_one_is_configured(world):
    crm = seed(world)
    world.journey.new_touches("DEAL#1", [stage("d1:qual", datetime(2026, 11, 15, 9, tzinfo=UTC), "stage", "QUAL")])
    world.metrica.goals["deal_qualified"] = "action"
    settings = world.settings(METRICA_GOAL="deal_won,deal_qualified", CONVERSION_QUALIFIED_STAGES="QUAL,OTHER")
    result = run(world, crm, date_from=date(2026, 11, 12), settings=settings)
    assert sorted((c.entity, c.kind) for c in result.conversions) == [
        ("DEAL#1", "qualified"), ("DEAL#1", "won"), ("DEAL#4", "won")]  # fmt: skip
    assert sorted(row["Target"] for row in world.metrica.rows()) == ["deal_qualified", "deal_won"]
    assert world.ledger.get("yandex_metrica#deal_qualified#qualified#DEAL#1")["state"] == ACCEPTED
    assert result.platforms["vk_ads"].reasons["no goal for qualified conversions"] == 1


def test_an_expired_google_token_is_renewed_once(world):
    crm = seed(world)
    run(world, crm)
    crm.deals[40] = {"OPPORTUNITY": "700", "CURRENCY_ID": "RUB"}
    world.journey.put_meta("DEAL#40", {"kind": "DEAL", "id": 40})
    world.journey.new_touches("DEAL#40", [
        form("s40:form", datetime(2026, 11, 19, 8, tzinfo=UTC), gclid="Cj0Kxyz"),
        stage("d40:won", datetime(2026, 11, 19, 10, tzinfo=UTC), "won", "WON"),
    ])  # fmt: skip
    world.google.expire_access_tokens()
    result = run(world, crm).platforms["google_ads"]
    assert result.states[ACCEPTED] == 1 and world.google.tokens_issued == 2
    assert ("1234567890", "555", f"{PORTAL}:won#DEAL#40") in world.data_manager.conversions


def test_a_recent_win_after_a_visit_older_than_metricas_window_is_refused(world):
    crm = seed(world)
    crm.deals[60] = {"OPPORTUNITY": "1000", "CURRENCY_ID": "RUB"}
    world.journey.put_meta("DEAL#60", {"kind": "DEAL", "id": 60})
    world.journey.new_touches("DEAL#60", [
        form("s60:form", datetime(2026, 10, 25, 9, tzinfo=UTC), ym_client_id="1500000000000000060"),  # 26 days ago
        stage("d60:won", datetime(2026, 11, 19, 9, tzinfo=UTC), "won", "WON"),
    ])  # fmt: skip
    run(world, crm, date_from=date(2026, 11, 19))
    assert world.ledger.get("yandex_metrica#deal_won#won#DEAL#60")["state"] == REFUSED
    assert "1500000000000000060" not in {row.get("ClientId") for row in world.metrica.rows()}


def test_a_deal_gone_from_the_crm_is_not_sent(world):
    crm = seed(world)
    world.journey.put_meta("DEAL#50", {"kind": "DEAL", "id": 50})  # deleted in Bitrix24 after it was won
    world.journey.new_touches("DEAL#50", [
        form("s50:form", datetime(2026, 11, 19, 8, tzinfo=UTC), gclid="Cj0Kgone"),
        stage("d50:won", datetime(2026, 11, 19, 9, tzinfo=UTC), "won", "WON"),
    ])  # fmt: skip
    found = collect_conversions(world.journey, crm, date_from=date(2026, 11, 19), date_to=date(2026, 11, 20),
                                zone=MOSCOW, today=date(2026, 11, 20))  # fmt: skip
    assert [c.entity for c in found] == []


def test_metrica_down_while_an_upload_is_followed_never_uploads_it_twice(world):
    crm = seed(world)
    world.metrica.status_faults = [503] * 1000  # longer than a run follows an upload
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.states[SENT] == 2 and result.states[FAILED] == 0
    world.metrica.status_faults = []
    world.metrica.processing_polls = 0  # processed by now
    result = run(world, crm).platforms["yandex_metrica"]
    assert result.states[ACCEPTED] == 2
    assert len(world.metrica.uploads) == 2 and len(world.metrica.rows()) == 2


def test_validate_only_has_google_check_the_events_and_ingests_and_records_nothing(world):
    crm = seed(world)
    world.journey.new_touches("DEAL#4", [form("s4:form", datetime(2026, 11, 14, 9, tzinfo=UTC), gclid="bad gclid")])
    result = run(world, crm, validate_only=True)
    google = result.platforms["google_ads"]
    assert google.states["valid"] == 1 and google.states["invalid"] == 1
    assert google.reasons["the gclid cannot be decoded"] == 1
    assert world.data_manager.conversions == {} and world.data_manager.requests_ingested == 0
    assert world.ledger.get("google_ads#" + ACTION + "#won#DEAL#1") is None
    assert world.metrica.uploads == {} and world.vk.events == []


def test_setup_checks_each_metrica_goal_and_says_which_platforms_are_skipped(world):
    from throughline.conversions.setup import setup_lines

    world.metrica.goals["deal_qualified"] = "url"
    settings = world.settings(METRICA_GOAL="deal_won,deal_qualified", VK_ADS_PIXEL_ID="")
    assert setup_lines(settings) == [
        "offline conversions → yandex_metrica: won goal deal_won: a JavaScript event goal, ready",
        "offline conversions → yandex_metrica: qualified goal deal_qualified: PROBLEM — goal deal_qualified is a url "
        "goal; offline conversions need a JavaScript event",
        f"offline conversions → google_ads: won: {ACTION}",
        "offline conversions → vk_ads: skipped (missing VK_ADS_PIXEL_ID)",
    ]


def test_a_run_without_the_crm_webhook_sends_nothing_rather_than_every_deal_at_zero(world):
    # Without the webhook (not in the CRM secret yet, or split-secrets not run) the amounts cannot be read: a run that
    # went on would send every won deal at 0 and record it, so the right amount could never be sent.
    from throughline.config import ConfigError

    seed(world)
    with pytest.raises(ConfigError, match="BITRIX24_WEBHOOK_URL"):
        execute(world.settings(), date_from=date(2026, 10, 1), date_to=date(2026, 11, 20), now=lambda: NOW,
                sleep=lambda seconds: None)  # fmt: skip
    assert world.metrica.uploads == {} and world.vk.events == [] and list(world.data_manager.conversions) == []
    assert list(world.ledger.items()) == []
    # A dry run may look without the portal (amounts shown as 0).
    dry = execute(world.settings(), date_from=date(2026, 10, 1), date_to=date(2026, 11, 20), now=lambda: NOW,
                  dry_run=True)  # fmt: skip
    assert dry.platforms["vk_ads"].states == {"would_send": 1, NO_IDENTIFIER: 3}


def test_the_portal_is_read_at_its_share_of_the_portals_rate_like_every_other_function(world, monkeypatch):
    from throughline.bitrix24.client import Bitrix24Client
    from throughline.bitrix24.portal import reset_portal_state

    seed(world)
    rates = []

    def list_all(client, method, params=None, *, id_key="ID"):
        rates.append((method, client.pacer.rate, client.pacer.burst))
        return iter(())

    monkeypatch.setattr(Bitrix24Client, "list_all", list_all)
    reset_portal_state()
    settings = world.settings(
        BITRIX24_WEBHOOK_URL="https://example.bitrix24.ru/rest/1/abc/",
        BITRIX24_RATE_PER_SECOND="1",
        BITRIX24_BURST="40",
        BITRIX24_WRITER_CONCURRENCY="2",
    )
    execute(settings, date_from=date(2026, 10, 1), date_to=date(2026, 11, 20), now=lambda: NOW, dry_run=True)
    reset_portal_state()
    assert rates == [("crm.deal.list", 0.5, 20.0)]  # rate and burst shared with the writer's instances
