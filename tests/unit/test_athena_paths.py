"""attribution_paths.sql on DuckDB over a journey export laid out as in S3 (journeys/snapshot=<d>/part-*.json.gz and
entities.json.gz): the path table equals the one build_paths builds inside build_report for the same export and
period, and `throughline attribute` credits the same revenue from either."""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from test_athena_sql import NOVEMBER, database

from throughline.attribution import attribute
from throughline.attribution.cli import read_path_table
from throughline.report import athena
from throughline.report import attribution as report_attribution
from throughline.report.attribution import read_journeys
from throughline.report.build import build_report, previous_period
from throughline.report.funnel import StageBook
from throughline.report.rates import RateBook

SNAPSHOT = "2026-12-01"
TAGS = (
    ("yandex", "cpc", "101", "paid_search"),
    ("vk", "cpc", "55", "social"),
    ("yandex", "organic", "", "organic_search"),
    ("email", "newsletter", "nov", "email"),
    ("", "", "", "direct"),
)
ASSISTS = ("organic_search", "social", "email", "direct", "referral")


class Objects(dict):
    def get(self, key: str, default=None):
        return super().get(key, default)


def records(rng: random.Random):
    """Leads, deals and the journey export of the same people: assists before the lead, sales-side touches after,
    people who convert twice (and twice at one instant), deals known to the export only through their lead, deals
    with no person at all, touches after the last conversion, conversions in October and December."""
    leads, deals, touches, entities = [], [], [], []
    ids = iter(range(1, 10_000))
    touch_ids = iter(range(1, 100_000))
    base = datetime(2026, 10, 25, 9, tzinfo=UTC)

    def touch(person, entity_type, entity_id, at, kind, channel):
        touches.append({"person_key": person, "entity_type": entity_type, "entity_id": entity_id,
                        "touch_id": f"t{next(touch_ids)}", "at": at.isoformat().replace("+00:00", "Z"),
                        "kind": kind, "channel": channel, "source": "", "medium": "", "campaign": "", "content": "",
                        "term": "", "detail": ""})  # fmt: skip

    for _ in range(240):
        lead_id = next(ids)
        source, medium, campaign, channel = rng.choice(TAGS)
        created = base + timedelta(days=rng.randrange(0, 30), hours=rng.randrange(0, 10))
        person = f"p{lead_id}" if rng.random() > 0.05 else None  # a few leads without a phone or e-mail
        leads.append({"ID": str(lead_id), "DATE_CREATE": created.isoformat(timespec="seconds"),
                      "UTM_SOURCE": source, "UTM_MEDIUM": medium, "UTM_CAMPAIGN": campaign})  # fmt: skip
        entities.append({"entity_type": "lead", "entity_id": lead_id, "person_key": person, "deleted": False,
                         "lead_id": None})  # fmt: skip
        for days in range(rng.choice((0, 1, 2))):
            touch(person, "lead", lead_id, created - timedelta(days=days + 1, hours=rng.randrange(5)), "first_visit",
                  rng.choice(ASSISTS))  # fmt: skip
        touch(person, "lead", lead_id, created, rng.choice(("form", "crm_lead", "first_visit")), channel)
        touch(person, "lead", lead_id, created + timedelta(hours=1), "outgoing_call", "crm")
        touch(person, "lead", lead_id, created + timedelta(hours=2), "incoming_call", "offline")  # a reply: no credit
        for _ in range(rng.choice((0, 0, 1, 2))):  # deals of this lead
            deal_id = next(ids)
            won = rng.random() < 0.6
            closed = (created + timedelta(days=rng.randrange(0, 12))).date()
            deal = {"ID": str(deal_id), "LEAD_ID": str(lead_id), "DATE_CREATE": leads[-1]["DATE_CREATE"],
                    "STAGE_SEMANTIC_ID": "S" if won else "P", "OPPORTUNITY": str(rng.randrange(1000, 50000)) + ".5",
                    "CURRENCY_ID": "RUB", "CLOSEDATE": closed.isoformat()}  # fmt: skip
            deals.append(deal)
            link = rng.random()
            if link < 0.6:
                entities.append({"entity_type": "deal", "entity_id": deal_id, "person_key": person, "deleted": False,
                                 "lead_id": lead_id})  # fmt: skip
            elif link < 0.8:
                entities.append({"entity_type": "deal", "entity_id": deal_id, "person_key": None, "deleted": False,
                                 "lead_id": lead_id})  # fmt: skip
            if won and rng.random() < 0.5:  # the journey saw the win; else it counts at the end of CLOSEDATE
                touch(person, "deal", deal_id, datetime.combine(closed, datetime.min.time(), UTC) + timedelta(hours=8),
                      "won", "crm")  # fmt: skip
            if rng.random() < 0.3:  # came back after the deal
                touch(person, "lead", lead_id, datetime.combine(closed, datetime.min.time(), UTC)
                      + timedelta(days=2), "repeat_request", rng.choice(ASSISTS))  # fmt: skip
    # Two deals won at one instant by one person, and a won deal nobody is known for.
    first = deals[0]
    twin = {**first, "ID": str(next(ids)), "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-20"}
    deals += [{**first, "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-20"}, twin]
    deals.remove(first)
    # A deal the CRM links to no lead, whose export line names the lead (and no person); and a visit at the very
    # instant of a win (it counts before the conversion).
    orphan = next(ids)
    deals.append({"ID": str(orphan), "LEAD_ID": "", "DATE_CREATE": "2026-11-05T10:00:00+03:00",
                  "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "4321", "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-11-15",
                  "UTM_SOURCE": "google", "UTM_MEDIUM": "organic"})  # fmt: skip
    entities.append({"entity_type": "deal", "entity_id": orphan, "person_key": None, "deleted": False,
                     "lead_id": int(leads[5]["ID"])})  # fmt: skip
    touch(f"p{leads[5]['ID']}", "deal", orphan, datetime(2026, 11, 15, 8, tzinfo=UTC), "won", "crm")
    touch(f"p{leads[5]['ID']}", "lead", int(leads[5]["ID"]), datetime(2026, 11, 15, 8, tzinfo=UTC), "repeat_request",
          "referral")  # fmt: skip
    deals.append({"ID": str(next(ids)), "LEAD_ID": "", "DATE_CREATE": "2026-11-03T10:00:00+03:00",
                  "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "777", "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-11-04",
                  "UTM_SOURCE": "vk", "UTM_MEDIUM": "cpc"})  # fmt: skip
    # Won deals whose amount is no money: won, but no conversion of any path (nor a crash).
    for amount in ("-500", "", "abc"):
        deals.append({"ID": str(next(ids)), "LEAD_ID": leads[7]["ID"], "DATE_CREATE": "2026-11-03T10:00:00+03:00",
                      "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": amount, "CURRENCY_ID": "RUB",
                      "CLOSEDATE": "2026-11-16"})  # fmt: skip
    return leads, deals, touches, entities


def export(touches, entities, root: Path) -> Objects:
    """The objects export_journeys writes, in memory (for build_report) and on disk (for DuckDB)."""
    objects = Objects()
    folder = f"journeys/snapshot={SNAPSHOT}"
    half = len(touches) // 2
    parts = {f"{folder}/part-00000.json.gz": touches[:half], f"{folder}/part-00001.json.gz": touches[half:],
             f"{folder}/entities.json.gz": entities}  # fmt: skip
    for key, rows in parts.items():
        objects[key] = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(objects[key])
    objects["journeys/latest.json"] = json.dumps({"snapshot": SNAPSHOT, "parts": sorted(parts)[1:]})
    return objects


COLUMNS = {"person_key": "VARCHAR", "entity_type": "VARCHAR", "entity_id": "BIGINT", "touch_id": "VARCHAR",
           "at": "VARCHAR", "kind": "VARCHAR", "channel": "VARCHAR", "source": "VARCHAR", "medium": "VARCHAR",
           "campaign": "VARCHAR", "content": "VARCHAR", "term": "VARCHAR", "detail": "VARCHAR", "deleted": "BOOLEAN",
           "lead_id": "BIGINT"}  # fmt: skip


@pytest.fixture
def both(tmp_path: Path, monkeypatch):
    leads, deals, touches, entities = records(random.Random(13))
    objects = export(touches, entities, tmp_path)
    captured = []
    real = report_attribution.build_paths

    def keep(*args, **kwargs):
        captured.append(real(*args, **kwargs))
        return captured[-1]

    monkeypatch.setattr(report_attribution, "build_paths", keep)
    report = build_report(period=NOVEMBER, previous=previous_period(NOVEMBER), leads=leads, deals=deals, spend=[],
                          rates=RateBook("RUB"), stages=StageBook([]), journeys=read_journeys(objects),
                          now=lambda: datetime(2026, 12, 1))  # fmt: skip
    db = database(leads, deals, [])
    spec = "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in COLUMNS.items()) + "}"
    files = str(tmp_path / "journeys" / "snapshot=*" / "*.json.gz")
    db.execute(f"CREATE VIEW journeys AS SELECT * FROM read_json('{files}', format = 'newline_delimited',"
               f" hive_partitioning = true, columns = {spec})")  # fmt: skip
    query = athena.paths_query(snapshot=SNAPSHOT, date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))
    return report, captured[0], db.execute(query).fetchall()


def test_the_path_table_equals_build_paths_for_the_same_export(both) -> None:
    report, table, rows = both
    python = {" > ".join(path): (Decimal(str(conv)), Decimal(str(value)).quantize(Decimal("0.01")), int(nulls))
              for path, conv, value, nulls in zip(table.paths, table.conversions, table.revenue, table.nulls,
                                                  strict=True)}  # fmt: skip
    sql = {path: (Decimal(conv), value, nulls) for path, conv, value, nulls in rows}
    assert sql == python
    assert sum(value for _, value, _ in sql.values()) == report.attribution.revenue == report.headline.revenue
    assert sum(conv for conv, _, _ in sql.values()) == report.headline.won_deals - 3  # the three without money
    assert sql["(no touches)"][0] >= 1 and sum(nulls for _, _, nulls in sql.values()) > 50
    assert len(sql) > 20 and any(" > " in path and conv for path, (conv, _, _) in sql.items())
    assert any(conv == 2 and path != "(no touches)" for path, (conv, _, _) in sql.items())  # two at one instant
    assert any(path.endswith("referral") and value >= Decimal("4321") for path, (_, value, _) in sql.items())


def test_attribute_reads_the_athena_table_and_credits_the_same_revenue(both) -> None:
    _, table, rows = both
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(("path", "total_conversions", "total_conversion_value", "total_null"))
    writer.writerows(rows)
    buffer.seek(0)
    from_athena = read_path_table(buffer)
    models = ["first_click", "last_click", "last_non_direct", "linear", "position_based", "markov"]
    expected, got = attribute(table, models), attribute(from_athena, models)
    for model in models:
        assert [(r.channel, r.conversions, r.revenue) for r in got[model]] == [
            (r.channel, r.conversions, r.revenue) for r in expected[model]], model  # fmt: skip
