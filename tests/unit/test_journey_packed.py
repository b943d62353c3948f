"""The journey parts' packed copy (journey/packed.py): the report's attribution read from it equals the attribution read
from the JSON parts, on a crafted export; any doubt about the copy sends the report back to the JSON parts."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from throughline.attribution import Conversion, TouchPoint, build_paths, packed_paths, paths
from throughline.journey import packed
from throughline.journey.packed import (
    ENTITIES_NAME,
    VERSION,
    NotPackable,
    PackedWriter,
    drop_rows,
    pack_entities,
    pack_lines,
    packed_folder,
    packed_name,
    pointer,
    read_packed,
)
from throughline.report.attribution import AttributionOptions, WonDeal, attribution_section, read_journeys

SNAPSHOT = "2026-11-30"
FOLDER = f"journeys/snapshot={SNAPSHOT}"
PACKED = packed_folder(SNAPSHOT, "run=test")
ZONE = ZoneInfo("Europe/Moscow")
ODD = 'Яндекс, «директ»\t| / "q" \\ \x1f\n;'  # unicode, separators, the paid mark's \x1f, a newline


class Objects(dict):
    def get(self, key: str, default=None):
        return super().get(key, default)


def gz(lines: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode())


def line(person, at, channel, kind="first_visit", entity=("lead", 1), source="", campaign=""):
    return {"person_key": person, "entity_type": entity[0], "entity_id": entity[1], "touch_id": f"t-{at}", "at": at,
            "kind": kind, "channel": channel, "source": source, "medium": None, "campaign": campaign,
            "content": None, "term": None, "detail": None}  # fmt: skip


def crafted() -> tuple[list[list[dict]], list[dict], list[WonDeal]]:
    """Three parts of touch lines, the entity lines and the won deals."""
    first = [
        line("p1", "2026-11-02T09:00:00+03:00", "paid_search", "form", source="yandex", campaign=ODD),  # aware
        line("p1", "2026-11-02T06:00:00", "social", source=ODD),  # naive (UTC): the same instant as the one above
        line("p1", "2026-11-02T06:00:00Z", "direct"),  # a direct touch at that instant too
        line("p1", "2026-11-03T10:00:00.123456Z", "email", "repeat_request", campaign="c,1"),
        line("p1", "2026-11-03T11:00:00Z", "crm", "outgoing_call"),  # the sales process: no credit
        line("p2", "2026-11-04T10:00:00Z", "email"),  # never buys
        line(None, "2026-11-04T10:00:00Z", "email"),  # no person
        line("", "2026-11-04T10:00:00Z", "email"),
        line("p3", "2026-11-04T10:00:00Z", ""),  # no channel
        line("p3", "2026-11-04T11:00:00Z", None),
        line("p3", "2026-11-05T12:00:00+05:00", "organic_search", entity=("lead", 3), source="google"),
        line("p4", "2026-11-06T10:00:00Z", "offline", "crm_lead", entity=("lead", 4), source="call"),  # → the CRM row
        line("p4", "2026-11-06T10:00:00Z", "referral", "crm_deal", entity=("deal", -4)),  # not a digit id: as written
    ]
    second = [
        line("p1", "2026-11-10T12:00:00Z", "crm", "won", entity=("deal", 1)),
        line("p1", "2026-11-10T15:00:00+03:00", "crm", "won", entity=("deal", 1)),  # the same instant, another offset
        line("p1", "2026-11-12T10:00:00Z", "social", source=ODD),  # after the win: a journey that does not convert
        line(None, "2026-11-11T10:00:00Z", "crm", "won", entity=("deal", 3)),  # a won touch without a person counts
        line("p3", "2026-11-11T10:00:00Z", "direct"),  # at the conversion's instant: before it
        line("p5", "2026-11-07T10:00:00Z", "paid_search", "form", entity=("lead", 5), source="yandex"),
    ]
    third = [
        line("p1", "2026-11-01T08:00:00Z", "display"),  # older than p1's first part touches: sorted into the path
        line("p6", "2026-11-08T10:00:00Z", "messenger", "chat", entity=("contact", 6)),  # not a marketing kind
        line("p5", "2026-11-07T10:00:00Z", "social", "first_visit", entity=("lead", 5)),  # the same instant as its form
    ]
    entities = [
        {"entity_type": "lead", "entity_id": 3, "person_key": "p3", "deleted": False, "lead_id": None},
        {"entity_type": "lead", "entity_id": 5, "person_key": "p5", "deleted": True, "lead_id": None},  # deleted
        {"entity_type": "deal", "entity_id": 1, "person_key": "p1", "deleted": False, "lead_id": None},
        {"entity_type": "deal", "entity_id": 3, "person_key": None, "deleted": False, "lead_id": 3},
        {"entity_type": "deal", "entity_id": 5, "person_key": "p5", "deleted": True, "lead_id": 5},
        {"entity_type": "deal", "entity_id": 9, "person_key": "p9", "deleted": False, "lead_id": None},  # no touches
        {"entity_type": "deal", "entity_id": 12, "person_key": None, "deleted": False, "lead_id": 3},  # via its lead
        {"entity_type": "contact", "entity_id": 12, "person_key": "c12", "deleted": False, "lead_id": None},
        {"entity_type": "deal", "entity_id": 1, "person_key": "p1", "deleted": False, "lead_id": 0},  # again: the last
    ]
    won = [
        WonDeal(1, 0, date(2026, 11, 10), Decimal("10000.00")),
        WonDeal(3, 3, date(2026, 11, 11), Decimal("2500.50")),
        WonDeal(5, 5, date(2026, 11, 20), Decimal("999.99")),  # no won touch: the end of its day
        WonDeal(9, 0, date(2026, 11, 21), Decimal("100.00")),
        WonDeal(11, 0, date(2026, 11, 22), Decimal("1.01")),  # unknown to the export: "(no touches)"
        WonDeal(12, 0, date(2026, 11, 23), Decimal("7.00")),  # the CRM names no lead: its export line does (p3)
    ]
    return [first, second, third], entities, won


def export(parts: list[list[dict]], entities: list[dict], *, packed: bool = True) -> Objects:
    objects = Objects()
    names, copies = [], []
    for number, lines in enumerate(parts):
        names.append(f"{FOLDER}/part-{number:04d}-0000.json.gz")
        objects[names[-1]] = gz(lines)
        copies.append(packed_name(PACKED, names[-1]))
        objects[copies[-1]] = pack_lines(SNAPSHOT, names[-1], lines)
    objects[f"{FOLDER}/entities.json.gz"] = gz(entities)
    objects[f"{PACKED}/{ENTITIES_NAME}"] = pack_entities(SNAPSHOT, entities)
    latest = {"snapshot": SNAPSHOT, "parts": names}
    if packed:
        latest["packed"] = pointer(copies, f"{PACKED}/{ENTITIES_NAME}")
    objects["journeys/latest.json"] = json.dumps(latest).encode()
    return objects


def channel_of(kind: str, entity: int):
    # ("deal", -4) is never asked for: the JSON reader takes a CRM row only for an id of digits
    return {("lead", 4): ("paid_search", "yandex"), ("deal", -4): ("email", "never")}.get((kind, entity))


PAID = {("paid_search", "yandex"), ("social", ODD)}
SPEND = {"paid_search": Decimal("3000"), "social": Decimal("500"), "display": Decimal("10")}


def section(objects: Objects, won: list[WonDeal], paid=PAID, **options):
    journeys = read_journeys(objects)
    result = attribution_section(journeys, won, SPEND, AttributionOptions(**options), ZONE, channel_of, paid)
    return journeys, result


@pytest.mark.parametrize("paid", [PAID, set()], ids=["paid rule", "no spend"])
@pytest.mark.parametrize("markov_order", [1, 2])
def test_the_packed_copy_gives_the_attribution_the_json_parts_give(paid, markov_order):
    parts, entities, won = crafted()
    from_json, expected = section(export(parts, entities, packed=False), won, paid, markov_order=markov_order)
    from_packed, got = section(export(parts, entities), won, paid, markov_order=markov_order)
    assert (from_json.read_from, from_packed.read_from) == ("json", "packed")
    assert got == expected
    assert from_packed.won_at == from_json.won_at
    for found in ("deal_person", "deal_lead", "lead_person"):
        assert getattr(from_packed, found) == getattr(from_json, found)
    assert from_packed.lead_person == {3: "p3", 5: "p5"} and from_packed.deal_person[1] == "p1"
    # The crafted set reaches what it should: p1 converts, p4's CRM touch takes its row's label, every rouble lands.
    assert expected.touches == 13 and expected.conversions == 6 and expected.revenue == Decimal("13608.50")
    rows = {row.channel: row for row in expected.models["last_click"]}
    assert rows["(no touches)"].revenue == Decimal("108.01")  # deals 9, 11 and 12 (p3: touches used by deal 3)


@pytest.mark.parametrize("block", [3, 1 << 16])  # people taken a few at a time, or all at once
def test_packed_paths_equal_build_paths_on_random_journeys(block, monkeypatch):
    monkeypatch.setattr(paths, "_BLOCK", block)
    rng = random.Random(7)
    labels = ["social", "direct", "paid_search", "email", "b", "a"]
    base = datetime(2026, 11, 1, tzinfo=UTC)
    touches = [TouchPoint(f"p{rng.randrange(40)}", base + timedelta(minutes=rng.randrange(300)), rng.choice(labels))
               for _ in range(600)]  # fmt: skip
    conversions = [Conversion(f"p{rng.randrange(50)}", base + timedelta(minutes=rng.randrange(300)),
                              Decimal(rng.randrange(1, 10_000)) / 100) for _ in range(80)]  # fmt: skip
    expected = build_paths(touches, conversions)
    people: dict[str, int] = {}
    names = sorted(set(labels), key=labels.index)
    person = np.array([people.setdefault(t.person_key, len(people)) for t in touches])
    micros = np.array([(t.at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) for t in touches])
    code = np.array([names.index(t.channel) for t in touches])
    got = packed_paths(list(people), person, micros, code, names, conversions)
    assert got.paths == expected.paths and got.timed == expected.timed and got.labels == expected.labels
    for column in ("conversions", "revenue", "nulls"):
        assert getattr(got, column).tolist() == getattr(expected, column).tolist()
    assert (got.total_conversions, got.total_revenue) == (expected.total_conversions, expected.total_revenue)
    with pytest.raises(ValueError, match="numbered"):  # a person number without a touch
        packed_paths([*people, "nobody"], person, micros, code, names, conversions)


def fallback(objects: Objects, won) -> None:
    """The report reads the JSON parts, with nothing of the refused copy read into it, and gets what they give."""
    parts, entities, _ = crafted()
    _, expected = section(export(parts, entities, packed=False), won)
    journeys, got = section(objects, won)
    assert journeys.read_from == "json" and got == expected


def test_a_missing_copy_means_the_json_parts():
    parts, entities, won = crafted()
    objects = export(parts, entities)
    del objects[json.loads(objects["journeys/latest.json"])["packed"]["parts"][2]]  # the last: after two were read
    fallback(objects, won)


def test_another_version_of_the_pointer_or_of_a_copy_means_the_json_parts():
    parts, entities, won = crafted()
    objects = export(parts, entities)
    latest = json.loads(objects["journeys/latest.json"])
    latest["packed"]["version"] = VERSION + 1
    objects["journeys/latest.json"] = json.dumps(latest).encode()
    fallback(objects, won)
    objects = export(parts, entities)
    key = latest["packed"]["parts"][1]
    objects[key] = objects[key][:4] + (VERSION + 1).to_bytes(2, "little") + objects[key][6:]
    fallback(objects, won)


def test_a_copy_of_another_part_or_a_damaged_copy_means_the_json_parts():
    parts, entities, won = crafted()
    objects = export(parts, entities)
    keys = json.loads(objects["journeys/latest.json"])["packed"]["parts"]
    objects[keys[1]], objects[keys[2]] = objects[keys[2]], objects[keys[1]]  # swapped: each names the other part
    fallback(objects, won)
    objects = export(parts, entities)
    objects[keys[2]] = objects[keys[2]][:-5]
    fallback(objects, won)
    objects = export(parts, entities)
    latest = json.loads(objects["journeys/latest.json"])
    latest["packed"]["parts"] = keys[:2]  # fewer copies than parts
    objects["journeys/latest.json"] = json.dumps(latest).encode()
    fallback(objects, won)


REFUSED = [{"entity_id": "5"}, {"entity_id": None}, {"entity_id": True}, {"entity_id": 2**63}, {"at": "yesterday"},
           {"at": None}, {"source": 5}, {"person_key": ["p"]}, {"campaign": {"a": 1}}]  # fmt: skip


@pytest.mark.parametrize("change", REFUSED)
def test_a_line_the_format_cannot_hold_exactly_is_refused(change):
    with pytest.raises(NotPackable):
        pack_lines(SNAPSHOT, "part", [line("p1", "2026-11-02T09:00:00Z", "email"), {**line("p", "x", "y"), **change}])


def test_a_packed_copy_keeps_each_line_exactly():
    parts, _, _ = crafted()
    packed = read_packed(pack_lines(SNAPSHOT, "x/part-0000-0000.json.gz", parts[0]))
    assert packed.snapshot == SNAPSHOT and packed.part == "x/part-0000-0000.json.gz" and len(packed) == len(parts[0])
    for index, original in enumerate(parts[0]):
        fields = packed.labels[packed.label[index]]
        assert packed.people[packed.person[index]] == original["person_key"]
        assert list(fields) == [original[name] for name in ("kind", "entity_type", "channel", "source", "campaign")]
        assert packed.entity[index] == original["entity_id"]
        at = datetime.fromisoformat(original["at"])
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        assert datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(packed.micros[index])) == at


def test_forget_drops_a_persons_rows_and_keeps_the_rest_in_order():
    parts, _, _ = crafted()
    body = pack_lines(SNAPSHOT, "part", parts[0])
    kept, dropped = drop_rows(body, lambda person, kind, entity: person == "p1" or (kind, entity) == ("lead", 4))
    assert dropped == 6
    expected = [row for row in parts[0] if row["person_key"] != "p1" and row["entity_id"] != 4]
    assert kept == pack_lines(SNAPSHOT, "part", expected)
    assert drop_rows(body, lambda *_: False) == (body, 0)


@pytest.mark.parametrize("damage", ["missing", "truncated", "another kind"])
def test_a_missing_or_damaged_entities_copy_means_entities_json_gz(damage):
    parts, entities, won = crafted()
    objects = export(parts, entities)
    key = f"{PACKED}/{ENTITIES_NAME}"
    if damage == "missing":
        del objects[key]
    elif damage == "truncated":
        objects[key] = objects[key][:-3]
    else:
        objects[key] = objects[json.loads(objects["journeys/latest.json"])["packed"]["parts"][0]]
    _, expected = section(export(parts, entities, packed=False), won)
    journeys, got = section(objects, won)
    assert journeys.read_from == "packed" and got == expected and journeys.lead_person == {3: "p3", 5: "p5"}


def test_forget_drops_a_persons_entity_lines():
    _, entities, _ = crafted()
    body = pack_entities(SNAPSHOT, entities)
    kept, dropped = drop_rows(body, lambda person, kind, entity: person == "p5" or (kind, entity) == ("deal", 12))
    assert dropped == 3
    expected = [{**row, "lead_id": row["lead_id"] or None} for row in entities
                if row["person_key"] != "p5" and (row["entity_type"], row["entity_id"]) != ("deal", 12)]  # fmt: skip
    assert kept == pack_entities(SNAPSHOT, expected)


def test_any_string_a_json_line_holds_is_packed_even_a_lone_surrogate():
    lines = [line("\ud800p", "2026-11-02T09:00:00Z", "Ёж", source="\udfff", campaign="\x00")]
    packed = read_packed(pack_lines(SNAPSHOT, "part", lines))
    assert packed.people == ["\ud800p"] and packed.labels == [("first_visit", "lead", "Ёж", "\udfff", "\x00")]


@pytest.mark.parametrize("header", [{"labels": [["form", "lead", "email"]]}, {"people": [5]}, {"labels": [[1] * 5]}])
def test_a_copy_whose_lists_are_not_what_the_writer_writes_is_refused(header):
    body = pack_lines(SNAPSHOT, "part", [line("p1", "2026-11-02T09:00:00Z", "email")])
    data = zlib.decompress(body[6:])
    size = int.from_bytes(data[:4], "little")
    text = json.dumps({**json.loads(data[4 : 4 + size]), **header}).encode()
    forged = body[:6] + zlib.compress(len(text).to_bytes(4, "little") + text + data[4 + size :])
    with pytest.raises(NotPackable):
        read_packed(forged)


@pytest.mark.parametrize("at", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_a_time_past_a_datetimes_range_in_utc_is_refused_and_a_forged_one_means_the_json_parts(at):
    # A won touch's time is turned back into a datetime in UTC: one past year 9999 (or before year 1) there crashed
    # the packed read, where the JSON parts keep its own offset and read it fine.
    won_line = line("p1", at, "crm", "won", entity=("deal", 1))
    with pytest.raises(NotPackable, match="range"):
        pack_lines(SNAPSHOT, "part", [won_line])
    parts, entities, won = crafted()
    objects = export(parts, entities)
    parts[1].append(won_line)
    objects[f"{FOLDER}/part-0001-0000.json.gz"] = gz(parts[1])
    json_only = Objects(objects)
    json_only["journeys/latest.json"] = json.dumps({"snapshot": SNAPSHOT, "parts": sorted(
        key for key in objects if key.startswith(f"{FOLDER}/part-"))}).encode()  # fmt: skip
    _, expected = section(json_only, won)
    key = json.loads(objects["journeys/latest.json"])["packed"]["parts"][1]
    writer = PackedWriter(SNAPSHOT, f"{FOLDER}/part-0001-0000.json.gz")  # a copy the writer would refuse
    for row in parts[1][:-1]:
        writer.add(row)
    writer.add({**won_line, "at": "2026-11-10T12:00:00Z"})
    writer.micros[-1] = (datetime.fromisoformat(at) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    objects[key] = writer.to_bytes()
    journeys, got = section(objects, won)
    assert journeys.read_from == "json" and got == expected


def test_a_copy_that_unpacks_past_the_limit_is_refused_before_it_is_unpacked(monkeypatch):
    # A zlib bomb (or a damaged copy) is stopped at the limit: the reader never holds more than that.
    parts, _, _ = crafted()
    body = pack_lines(SNAPSHOT, "part", parts[0] * 50)
    size = len(zlib.decompress(body[6:]))
    monkeypatch.setattr(packed, "MAX_UNPACKED", size - 1)
    seen = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self):
            self.inflate = real()

        def decompress(self, data, limit=0):
            seen.append(limit)
            return self.inflate.decompress(data, limit)

        @property
        def eof(self):
            return self.inflate.eof

    monkeypatch.setattr(zlib, "decompressobj", Spy)
    with pytest.raises(NotPackable, match="unpacks past"):
        read_packed(body)
    assert seen == [size]  # asked for at most one byte past the limit
    monkeypatch.setattr(packed, "MAX_UNPACKED", size)
    assert len(read_packed(body)) == 50 * len(parts[0])
    with pytest.raises(NotPackable, match="truncated"):
        read_packed(body[:-9])  # a stream cut short, where the lengths alone might agree


def test_forget_drops_rows_without_numpy():
    # forget_person runs on the core layer alone (numpy is in the analytics layer): drop_rows imported numpy and the
    # deployed erasure failed at the first packed copy.
    parts, entities, _ = crafted()
    bodies = [pack_lines(SNAPSHOT, "part", parts[0]), pack_entities(SNAPSHOT, entities)]
    doomed = lambda person, kind, entity: person in ("p1", "p5") or (kind, entity) == ("lead", 4)  # noqa: E731
    expected = [drop_rows(body, doomed) for body in bodies]
    script = (
        "import sys, pickle\n"
        "sys.modules['numpy'] = None  # any import of numpy fails, as on the core layer\n"
        "from throughline.journey.packed import drop_rows\n"
        "bodies = pickle.loads(sys.stdin.buffer.read())\n"
        "doomed = lambda person, kind, entity: person in ('p1', 'p5') or (kind, entity) == ('lead', 4)\n"
        "sys.stdout.buffer.write(pickle.dumps([drop_rows(body, doomed) for body in bodies]))\n"
    )
    import pickle
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", script], input=pickle.dumps(bodies), capture_output=True, check=False,
                          env={"PYTHONPATH": str(Path(packed.__file__).parents[2])})  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    got = pickle.loads(done.stdout)
    assert got == expected and got[0][1] == 6 and got[1][1] == 4  # p1 twice, p5 twice


def test_a_pointer_to_an_expired_snapshot_gives_the_json_answer_and_no_crash():
    # The export failed for a week: latest.json still names a snapshot whose parts, copies and entities the 7-day
    # lifecycle rules removed. The report reads what the JSON reader would: no touches, every deal "(no touches)".
    parts, entities, won = crafted()
    objects = export(parts, entities)
    expired = Objects({"journeys/latest.json": objects["journeys/latest.json"]})
    journeys, got = section(expired, won)
    unpacked = export(parts, entities, packed=False)["journeys/latest.json"]
    _, expected = section(Objects({"journeys/latest.json": unpacked}), won)
    assert journeys.read_from == "json" and got == expected
    assert got.touches == 0 and {row.channel for row in got.models["last_click"] if row.revenue} == {"(no touches)"}
