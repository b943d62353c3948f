"""The report's columnar copy of the CRM snapshot (report.columns): the same report as from the JSON buckets, read
only when it is a current copy of its bucket, remade by the next refresh after a crash between the two writes."""

from __future__ import annotations

import gzip
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.memory_objects import MemoryObjects
from throughline.report import columns, jsonlines
from throughline.report.build import ReportOptions, build_report, previous_period
from throughline.report.crm import (
    SnapshotOptions,
    _SnapshotWriter,
    read_rows,
    read_snapshot,
    snapshot_key,
    write_snapshot,
)
from throughline.report.funnel import StageBook
from throughline.report.models import Period
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_json

ROOT = Path(__file__).resolve().parents[2]
PERIOD = Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))
FAR = "1000000000000"  # past the builder's dense arrays: its lead goes to a dict
STAGES = StageBook([
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "NEW", "NAME": "Новая", "SORT": "10", "SEMANTICS": None},
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": "WON", "NAME": "Сделка успешна", "SORT": "30", "SEMANTICS": "S"},
])  # fmt: skip
TAGS = {"UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": "777"}
LEADS = [
    # A tab, a newline and non-ASCII inside utm_content; utm_term "" (as written) and missing: one cell.
    {"ID": "1", "DATE_CREATE": "2026-11-05T10:00:00+03:00", "STATUS_ID": "NEW", **TAGS, "UTM_CONTENT": "ad\t1\nx ё",
     "UTM_TERM": "", "PERSON_KEYS": ["k1"]},
    # Two person keys, one of them the first lead's: a suspected duplicate; no STATUS_ID at all.
    {"ID": "2", "DATE_CREATE": "2026-11-06T10:00:00+03:00", **TAGS, "UTM_CONTENT": "ad\t1\nx ё",
     "PERSON_KEYS": ["k2", "k1"]},
    # The previous period: a web form without tags, not counted in November.
    {"ID": "4", "DATE_CREATE": "2026-10-15T10:00:00+03:00", "STATUS_ID": "NEW", "SOURCE_ID": "WEBFORM"},
    # November's web form without tags, and explicit nulls.
    {"ID": "5", "DATE_CREATE": "2026-11-07T10:00:00+03:00", "STATUS_ID": "NEW", "SOURCE_ID": "WEBFORM",
     "UTM_SOURCE": None, "PERSON_KEYS": None},
    # A far ID and a utm_source no taxonomy knows (with a tab in it).
    {"ID": FAR, "DATE_CREATE": "2026-11-08T10:00:00+03:00", "STATUS_ID": "NEW", "UTM_SOURCE": "partner\tü",
     "PERSON_KEYS": ["k3"]},
]  # fmt: skip
DEALS = [
    {"ID": "1", "LEAD_ID": "1", "DATE_CREATE": "2026-11-09T12:00:00+03:00", "STAGE_ID": "WON",
     "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-10T00:00:00+03:00", "OPPORTUNITY": "1000.00",
     "CURRENCY_ID": "RUB", "CATEGORY_ID": "0", "CONTACT_ID": "7", "UF_PROFIT": "400"},
    # The far lead's deal, won without an amount.
    {"ID": "2", "LEAD_ID": FAR, "DATE_CREATE": "2026-11-09T12:00:00+03:00", "STAGE_ID": "WON",
     "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-11T00:00:00+03:00", "OPPORTUNITY": "", "CURRENCY_ID": "RUB",
     "CATEGORY_ID": "0", "COMPANY_ID": "3"},
    # Typed in the CRM (no lead): its own tags bring it to the Yandex row.
    {"ID": "3", "DATE_CREATE": "2026-11-12T12:00:00+03:00", "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
     "CLOSEDATE": "2026-11-12T00:00:00+03:00", "OPPORTUNITY": "500", "CURRENCY_ID": "RUB", "CATEGORY_ID": "0",
     **TAGS, "UF_PROFIT": "-50"},
]  # fmt: skip
SPEND = [{"date": "2026-11-03", "platform": "yandex_direct", "account_id": "a", "campaign_id": "777",
          "campaign_name": "Осень", "impressions": 10, "clicks": 1, "cost": Decimal("300"), "currency": "RUB",
          "include_vat": False}]  # fmt: skip


def crafted(profit_field: str | None = "UF_PROFIT") -> MemoryObjects:
    """The snapshot as _SnapshotWriter._write stores a bucket (the JSON rows as given: the writer's own compaction
    drops "" and nulls, older snapshots and hand edits need not have)."""
    objects = MemoryObjects()
    for entity, rows in (("lead", LEADS), ("deal", DEALS)):
        for bucket in sorted({int(row["ID"]) // 100_000 for row in rows}):
            part = [row for row in rows if int(row["ID"]) // 100_000 == bucket]
            data = jsonlines.encode(part)
            objects.put(snapshot_key(entity, bucket), data)
            copy = columns.encode(entity, part, columns.columns_of(entity, profit_field) or (), data)
            assert copy is not None
            objects.put(columns.key_of(entity, bucket), copy)
    return objects


def build(leads, deals, **options):
    return build_report(
        period=PERIOD,
        previous=previous_period(PERIOD),
        leads=leads,
        deals=deals,
        spend=SPEND,
        rates=RateBook("RUB", []),
        stages=STAGES,
        options=ReportOptions(**options),
        now=lambda: datetime(2026, 12, 1, 5, 0),
    )


def test_the_copy_gives_every_value_as_written() -> None:
    objects = crafted()
    for entity, rows, buckets in (("lead", LEADS, 2), ("deal", DEALS, 1)):  # leads: bucket 0 and the far ID's
        wanted = columns.columns_of(entity, "UF_PROFIT")
        reader = read_rows(objects, entity, "UF_PROFIT")
        assert list(reader) == [tuple(row.get(column) for column in wanted) for row in rows]
        assert (reader.from_copy, reader.from_json) == (buckets, 0)
    first = next(iter(read_rows(objects, "lead")))
    assert first[columns.LEAD_COLUMNS.index("UTM_CONTENT")] == "ad\t1\nx ё"
    assert first[columns.LEAD_COLUMNS.index("UTM_TERM")] == ""  # "" stays "", not None


def test_the_report_from_the_copy_is_the_report_from_the_json_and_the_hand_count() -> None:
    objects = crafted()
    options = {"profit_field": "UF_PROFIT"}
    from_copy = build(read_rows(objects, "lead"), read_rows(objects, "deal", "UF_PROFIT"), **options)
    from_json = build(read_snapshot(objects, "lead"), read_snapshot(objects, "deal"), **options)
    assert render_json(from_copy) == render_json(from_json) and render_csv(from_copy) == render_csv(from_json)
    assert from_copy.model_dump() == from_json.model_dump()

    # By hand: Yandex 777 has leads 1 and 2, deals 1 (its lead) and 3 (its own tags), 1 000 + 500 of revenue.
    (yandex,) = [r for r in from_copy.rows if r.level == "campaign" and r.source == "yandex"]
    assert (yandex.metrics.leads, yandex.metrics.deals, yandex.metrics.won_deals) == (2, 2, 2)
    assert yandex.metrics.revenue == Decimal("1500.00") and yandex.metrics.spend == Decimal("300.00")
    assert yandex.metrics.roi == Decimal("16.67")  # (400 − 50 of profit − 300 of spend) / 300
    cells = {(d.medium, d.content, d.term): d.leads for d in yandex.drilldown}
    assert cells[("cpc", "ad\t1\nx ё", "")] == 2
    quality = from_copy.data_quality
    assert quality.leads == 4  # leads 1, 2, 5 and the far one; lead 4 is October's
    assert quality.suspected_duplicates == 1  # lead 2 shares k1 with lead 1
    assert quality.webform_leads_without_tags == 1  # lead 5 (lead 4 is October's)
    assert [(tag.leads) for tag in quality.unknown_tags] == [1]  # the far lead's "partner\tü"
    assert quality.deals_without_amount == 1  # the far lead's deal
    assert from_copy.headline.leads == 4 and from_copy.headline_previous.leads == 1


def _replace_header(data: bytes, **changes) -> bytes:
    inflate = __import__("zlib").decompressobj(wbits=31)
    head = orjson.loads(inflate.decompress(data))
    return gzip.compress(orjson.dumps({**head, **changes}) + b"\n", mtime=0) + inflate.unused_data


@pytest.mark.parametrize("case", ["missing", "other_version", "older_bucket", "lacks_a_column", "garbage"])
def test_a_copy_that_is_not_current_is_not_read(case: str) -> None:
    objects = crafted(profit_field=None if case == "lacks_a_column" else "UF_PROFIT")
    key, bucket_key = columns.key_of("deal", 0), snapshot_key("deal", 0)
    if case == "missing":
        del objects.data[key]
    elif case == "other_version":
        objects.data[key] = _replace_header(objects.data[key], version=columns.VERSION + 1)
    elif case == "older_bucket":  # the bucket rewritten after its copy: deal 3 lost
        changed = [{**row, "OPPORTUNITY": "999"} if row["ID"] == "3" else row for row in DEALS]
        objects.data[bucket_key] = jsonlines.encode(changed)
    elif case == "garbage":
        objects.data[key] = b"not gzip at all"
    reader = read_rows(objects, "deal", "UF_PROFIT")
    rows = list(reader)
    assert (reader.from_copy, reader.from_json) == (0, 1)
    wanted = columns.columns_of("deal", "UF_PROFIT")
    assert rows == [tuple(row.get(column) for column in wanted) for row in jsonlines.decode(objects.data[bucket_key])]
    if case == "older_bucket":
        assert rows[2][columns.DEAL_COLUMNS.index("OPPORTUNITY")] == "999"


class CrashOnCopy(MemoryObjects):
    """An object store whose process dies right after a bucket is written, before its copy is."""

    crash = False

    def put(self, key: str, body: bytes) -> None:
        if self.crash and key.startswith(columns.PREFIX):
            raise SystemExit("killed between the two writes")
        super().put(key, body)


def test_a_crash_between_the_bucket_and_its_copy_never_serves_the_old_copy() -> None:
    objects = CrashOnCopy()
    options = SnapshotOptions()
    write_snapshot(objects, "lead", [[{"ID": "1", "DATE_CREATE": "2026-11-05T10:00:00+03:00", "UTM_SOURCE": "vk"}]])
    assert [row[4] for row in read_rows(objects, "lead")] == ["vk"]

    objects.crash = True  # an incremental run: lead 1 now from Google; killed after the JSON bucket is written
    writer = _SnapshotWriter(objects, "lead", options, replace=False)
    writer.add([{"ID": "1", "DATE_CREATE": "2026-11-05T10:00:00+03:00", "UTM_SOURCE": "google"}])
    with pytest.raises(SystemExit):
        writer.finish(set())
    assert [row["UTM_SOURCE"] for row in read_snapshot(objects, "lead")] == ["google"]
    reader = read_rows(objects, "lead")
    assert [row[4] for row in reader] == ["google"] and (reader.from_copy, reader.from_json) == (0, 1)

    # The next run, with nothing changed, remakes the copy of the bucket it did not otherwise touch.
    objects.crash = False
    objects.puts.clear()
    assert _SnapshotWriter(objects, "lead", options, replace=False).finish(set()) == 1
    assert objects.puts == [columns.key_of("lead", 0)]
    reader = read_rows(objects, "lead")
    assert [row[4] for row in reader] == ["google"] and (reader.from_copy, reader.from_json) == (1, 0)
    objects.puts.clear()  # and a run after that writes nothing
    _SnapshotWriter(objects, "lead", options, replace=False).finish(set())
    assert objects.puts == []


def test_deletions_reach_the_copy_and_deals_carry_the_profit_field() -> None:
    objects = MemoryObjects()
    options = SnapshotOptions(profit_field="UF_PROFIT")
    write_snapshot(objects, "deal", [[{"ID": "1", "UF_PROFIT": "5"}, {"ID": "2", "UF_PROFIT": "6"}]], options)
    _SnapshotWriter(objects, "deal", options, replace=False).finish({2})
    reader = read_rows(objects, "deal", "UF_PROFIT")
    assert [(row[0], row[-1]) for row in reader] == [("1", "5")] and reader.from_copy == 1
    # A report asking for another profit field than the copy holds reads the JSON.
    other = read_rows(objects, "deal", "UF_OTHER")
    assert [row[0] for row in other] == ["1"] and other.from_json == 1


def test_the_copy_lies_outside_every_glue_table_and_athena_partition() -> None:
    template = (ROOT / "template.yaml").read_text()
    locations = re.findall(r"s3://\$\{DataBucket\}/([^\s'\"]*)", template)
    assert any(location.startswith("crm/snapshot/entity=lead/") for location in locations)  # the parse finds them
    for location in locations:
        plain = location.split("${", 1)[0]  # a projection template: the part before its first variable
        assert not columns.key_of("lead", 0).startswith(plain), location


def test_a_value_orjson_cannot_hold_leaves_that_bucket_to_the_json() -> None:
    objects = MemoryObjects()
    rows = [{"ID": "007", "DATE_CREATE": "2026-11-05T10:00:00+03:00", "STATUS_ID": 2**70}]  # an integer past 64 bits
    write_snapshot(objects, "lead", [rows])
    assert columns.key_of("lead", 0) not in objects.data
    reader = read_rows(objects, "lead")
    assert [(row[0], row[2]) for row in reader] == [("007", 2**70)] and reader.from_json == 1


def test_a_deleted_lead_s_person_keys_leave_the_copy_with_the_bucket() -> None:
    """What erases a person's lead from the snapshot (Bitrix24's deletion, its crm/deleted mark) erases it from the
    copy in the same write: no byte of its person keys is left in either."""
    objects = MemoryObjects()
    write_snapshot(objects, "lead", [[{"ID": "1", "PERSON_KEYS": ["a" * 64]}, {"ID": "2", "PERSON_KEYS": ["b" * 64]}]])
    assert b"a" * 64 in gzip.decompress(objects.data[columns.key_of("lead", 0)])
    _SnapshotWriter(objects, "lead", SnapshotOptions(), replace=False).finish({1})
    for key in (snapshot_key("lead", 0), columns.key_of("lead", 0)):
        text = gzip.decompress(objects.data[key])
        assert b"a" * 64 not in text and b"b" * 64 in text
    assert [row[0] for row in read_rows(objects, "lead")] == ["2"]


class WriterMidRead(MemoryObjects):
    """Another run rewrites the bucket and its copy between the report's read of the bucket and of its copy."""

    def __init__(self) -> None:
        super().__init__()
        self.rewrite: list[dict] | None = None

    def get(self, key: str) -> bytes | None:
        if key.startswith(columns.PREFIX) and self.rewrite is not None:
            rows, self.rewrite = self.rewrite, None
            write_snapshot(self, "lead", [rows])
        return super().get(key)


def test_a_bucket_rewritten_while_the_report_reads_it_is_read_whole_from_one_version() -> None:
    objects = WriterMidRead()
    write_snapshot(objects, "lead", [[{"ID": "1", "UTM_SOURCE": "vk"}]])
    objects.rewrite = [{"ID": "1", "UTM_SOURCE": "google"}, {"ID": "2", "UTM_SOURCE": "google"}]
    reader = read_rows(objects, "lead")
    assert [(row[0], row[4]) for row in reader] == [("1", "vk")]  # the bucket it read, not the newer copy
    assert (reader.from_copy, reader.from_json) == (0, 1)
    assert [(row[0], row[4]) for row in read_rows(objects, "lead")] == [("1", "google"), ("2", "google")]


def test_a_bucket_rewritten_without_a_copy_leaves_no_older_copy_behind() -> None:
    """A bucket rewritten with a value its copy cannot hold (an integer past 64 bits, in the rows as the API gave them)
    must not keep the copy of its previous version: that one still holds the person keys of a lead deleted since."""
    objects = MemoryObjects()
    write_snapshot(objects, "lead", [[{"ID": "1", "PERSON_KEYS": ["a" * 64]}, {"ID": "2", "PERSON_KEYS": ["b" * 64]}]])
    writer = _SnapshotWriter(objects, "lead", SnapshotOptions(), replace=False)
    writer.add([{"ID": "2", "STATUS_ID": 2**70, "PERSON_KEYS": ["b" * 64]}])
    writer.finish({1})  # lead 1 deleted in the portal, lead 2 changed in the same run
    assert b"a" * 64 not in gzip.decompress(objects.data[snapshot_key("lead", 0)])
    left = objects.data.get(columns.key_of("lead", 0)) or b""
    assert not left or b"a" * 64 not in gzip.decompress(left)
    reader = read_rows(objects, "lead")
    assert [row[0] for row in reader] == ["2"] and reader.from_json == 1


@pytest.mark.parametrize("rows", ["missing", "a string", "short"])
def test_a_copy_with_a_broken_row_count_is_not_read(rows: str) -> None:
    """A hand-edited copy naming the right bucket but no usable row count: read from the JSON, not a crash."""
    objects = crafted()
    key = columns.key_of("deal", 0)
    inflate = __import__("zlib").decompressobj(wbits=31)
    head = orjson.loads(inflate.decompress(objects.data[key]))
    if rows == "missing":
        del head["rows"]
    else:
        head["rows"] = "3" if rows == "a string" else 2
    objects.data[key] = gzip.compress(orjson.dumps(head) + b"\n", mtime=0) + inflate.unused_data
    reader = read_rows(objects, "deal", "UF_PROFIT")
    assert [row[0] for row in reader] == ["1", "2", "3"] and (reader.from_copy, reader.from_json) == (0, 1)


ODD_LEADS = [
    {"ID": 1, "DATE_CREATE": "2026-11-05T10:00:00+03:00", "STATUS_ID": 0, **TAGS, "PERSON_KEYS": "k1"},
    {"ID": "2", "DATE_CREATE": "2026-11-05", "STATUS_ID": True, **TAGS, "PERSON_KEYS": []},
    {"ID": "3", "DATE_CREATE": "2026-11-06T10:00:00+03:00", "UTM_SOURCE": "vk", "PERSON_KEYS": ["k1", "k2"]},
    {"ID": "3", "DATE_CREATE": "2026-11-07T10:00:00+03:00", "UTM_SOURCE": "vk"},  # one ID twice (a hand edit)
]
ODD_DEALS = [
    {"ID": 1, "LEAD_ID": 1, "DATE_CREATE": "2026-11-09T12:00:00+03:00", "STAGE_SEMANTIC_ID": "S",
     "CLOSEDATE": "2026-11-10", "OPPORTUNITY": 1000.5, "CURRENCY_ID": "RUB", "CATEGORY_ID": 0,
     "UF_PROFIT": {"VALUE": "400", "CURRENCY": "RUB"}},
    {"ID": "2", "LEAD_ID": "3", "DATE_CREATE": "2026-11-09T12:00:00+03:00", "STAGE_SEMANTIC_ID": "S",
     "CLOSEDATE": "2026-11-11T00:00:00+03:00", "OPPORTUNITY": "1e3", "CURRENCY_ID": "RUB", "UF_PROFIT": 250,
     "CONTACT_ID": 0, "COMPANY_ID": "0"},
    {"ID": "3", "DATE_CREATE": "2026-11-12T12:00:00+03:00", "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": 2**63,
     "CLOSEDATE": "2026-11-12T00:00:00+03:00", "UF_PROFIT": True, **TAGS},
]  # fmt: skip


@pytest.mark.parametrize("profit_field", [None, "UF_PROFIT", "OPPORTUNITY"])
@pytest.mark.parametrize("simple_crm", [None, True])
def test_odd_values_make_the_same_report_from_the_copy_and_from_the_json(profit_field, simple_crm) -> None:
    """Numbers, booleans and objects where the CRM sends strings, person keys as a string or an empty list, one ID
    twice, and a copy whose JSON bucket is gone (a stray object): the report is the JSON's to the kopeck."""
    objects = MemoryObjects()
    for entity, rows in (("lead", ODD_LEADS), ("deal", ODD_DEALS)):
        data = jsonlines.encode(rows)
        objects.put(snapshot_key(entity, 0), data)
        objects.put(
            columns.key_of(entity, 0), columns.encode(entity, rows, columns.columns_of(entity, "UF_PROFIT"), data)
        )
    orphan = [{"ID": "100001", "DATE_CREATE": "2026-11-05T10:00:00+03:00", **TAGS}]
    objects.put(columns.key_of("lead", 1), columns.encode("lead", orphan, columns.LEAD_COLUMNS, b"gone"))
    options = {"profit_field": profit_field, "simple_crm": simple_crm}
    leads, deals = read_rows(objects, "lead"), read_rows(objects, "deal", profit_field)
    from_copy = build(leads, deals, **options)
    assert (leads.from_copy, leads.from_json) == (1, 0)
    from_json = build(read_snapshot(objects, "lead"), read_snapshot(objects, "deal"), **options)
    assert render_json(from_copy) == render_json(from_json) and render_csv(from_copy) == render_csv(from_json)
    if simple_crm is None:  # by hand: leads 1, 2, 3 and 3 again; deal 3's amount is no money (past DECIMAL(18,2))
        assert from_copy.data_quality.leads == 4 and from_copy.headline.revenue == Decimal("2000.50")


# ---- the stage history (deal_history) -------------------------------------------------------------------------------

WON_LATE = {"ID": "4", "DATE_CREATE": "2026-11-12T12:00:00+03:00", "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S",
            "OPPORTUNITY": "200", "CURRENCY_ID": "RUB", "CATEGORY_ID": "0", **TAGS}  # fmt: skip  # no CLOSEDATE
HISTORY = [
    {"ID": 1, "TYPE_ID": 1, "OWNER_ID": 1, "CREATED_TIME": "2026-11-09T12:00:00+03:00", "CATEGORY_ID": 0,
     "STAGE_ID": "NEW"},
    {"ID": 2, "TYPE_ID": 2, "OWNER_ID": 1, "CREATED_TIME": "2026-11-10T12:00:00+03:00", "CATEGORY_ID": 0,
     "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S"},
    {"ID": 3, "TYPE_ID": 1, "OWNER_ID": 4, "CREATED_TIME": "2026-11-13T00:00:00+03:00", "STAGE_ID": "NEW"},
    # Won, then won again later (the last win dates it): a time without an offset is the report's zone (Moscow).
    {"ID": 4, "TYPE_ID": 2, "OWNER_ID": 4, "CREATED_TIME": "2026-11-18T10:00:00", "STAGE_ID": "WON"},
    {"ID": 5, "TYPE_ID": 2, "OWNER_ID": "4", "CREATED_TIME": "2026-11-20T10:00:00", "STAGE_ID": "WON"},
    # Not plain: an ID written as text (read whole, still counted), a null ID (skipped), no time (skipped).
    {"ID": "6", "OWNER_ID": 3, "CREATED_TIME": "2026-11-12T01:00:00+03:00", "STAGE_ID": "NEW"},
    {"ID": None, "OWNER_ID": 3, "CREATED_TIME": "2026-11-12T02:00:00+03:00", "STAGE_ID": "WON"},
    {"ID": 8, "OWNER_ID": 3, "STAGE_ID": "WON", "STAGE_SEMANTIC_ID": "S"},
]  # fmt: skip


def with_history(rows: list[dict]) -> MemoryObjects:
    """The crafted snapshot, deal 4 (won without CLOSEDATE) and a stage history bucket with its copy if it has one."""
    objects = crafted()
    deals = [*DEALS, WON_LATE]
    data = jsonlines.encode(deals)
    objects.put(snapshot_key("deal", 0), data)
    objects.put(columns.key_of("deal", 0), columns.encode("deal", deals, columns.columns_of("deal", "UF_PROFIT"), data))
    data = jsonlines.encode(rows)
    objects.put(snapshot_key("deal_history", 0), data)
    copy = columns.encode("deal_history", rows, columns.HISTORY_COLUMNS, data)
    if copy is not None:
        objects.put(columns.key_of("deal_history", 0), copy)
    return objects


def build_with_history(objects: MemoryObjects, history, wins: dict | None = None):
    return build_report(
        period=PERIOD, previous=previous_period(PERIOD), leads=read_rows(objects, "lead"),
        deals=read_rows(objects, "deal", "UF_PROFIT"), spend=SPEND, rates=RateBook("RUB", []), stages=STAGES,
        stage_history=history, options=ReportOptions(profit_field="UF_PROFIT"), now=lambda: datetime(2026, 12, 1, 5),
        wins=wins,
    )  # fmt: skip


def test_the_stage_history_from_its_copy_gives_the_report_from_the_json_and_the_hand_count() -> None:
    objects = with_history(HISTORY)
    reader = read_rows(objects, "deal_history")
    assert list(reader) == [tuple(row.get(column) for column in columns.HISTORY_COLUMNS) for row in HISTORY]
    assert (reader.from_copy, reader.from_json) == (1, 0)
    wins_copy: dict[int, str] = {}
    wins_json: dict[int, str] = {}
    from_copy = build_with_history(objects, lambda: read_rows(objects, "deal_history"), wins_copy)
    from_json = build_with_history(objects, lambda: read_snapshot(objects, "deal_history"), wins_json)
    assert render_json(from_copy) == render_json(from_json) and render_csv(from_copy) == render_csv(from_json)
    assert wins_copy == wins_json == {1: "2026-11-10T12:00:00+03:00", 4: "2026-11-20T10:00:00",
                                      3: "2026-11-12T02:00:00+03:00"}  # fmt: skip

    # By hand: deal 4 is dated by its last win (November 20th): Yandex 777's revenue 1 000 + 500 + 200.
    (yandex,) = [r for r in from_copy.rows if r.level == "campaign" and r.source == "yandex"]
    assert (yandex.metrics.deals, yandex.metrics.won_deals, yandex.metrics.revenue) == (3, 3, Decimal("1700.00"))
    (deals,) = [funnel for funnel in from_copy.funnels if funnel.entity == "deal"]
    assert deals.source == "stage_history"
    new = next(stage for stage in deals.stages if stage.stage_id == "NEW")
    # Days in NEW: deal 1 one day (09 12:00 → 10 12:00), deal 4 five days (13 00:00 → 18 10:00 Moscow is 5.42),
    # deal 3's text-ID entry has nothing after it (its null-ID entry is skipped): (1 + 5.4167) / 2 = 3.2.
    assert new.mean_days_in_stage == Decimal("3.2")
    assert new.reached == 4 and next(s for s in deals.stages if s.stage_id == "WON").reached == 4


def test_a_history_entry_without_an_id_keeps_its_bucket_in_json_and_means_what_it_did() -> None:
    """A copy cannot tell a missing ID from a null one; the funnel can (``row["ID"]`` of a missing one raises): such
    a bucket keeps no copy, and the report reads its JSON, raising where it raised and skipping what it skipped."""
    far = {"OWNER_ID": 99, "CREATED_TIME": "2026-11-12T03:00:00+03:00", "STAGE_ID": "NEW"}  # not a period deal
    objects = with_history([*HISTORY, far])
    assert columns.key_of("deal_history", 0) not in objects.data
    reader = read_rows(objects, "deal_history")
    assert list(reader)[-1] == (columns.ABSENT, 99, "2026-11-12T03:00:00+03:00", "NEW", None)
    assert (reader.from_copy, reader.from_json) == (0, 1)
    from_rows = build_with_history(objects, lambda: read_rows(objects, "deal_history"))
    assert render_json(from_rows) == render_json(
        build_with_history(objects, list(read_snapshot(objects, "deal_history")))
    )
    assert render_json(from_rows) == render_json(build_with_history(with_history(HISTORY), HISTORY))

    # A period deal's entry without an ID: KeyError from either read, as from the JSON rows before the copy.
    objects = with_history([*HISTORY, {**far, "OWNER_ID": 4}])
    for history in (lambda: read_rows(objects, "deal_history"), lambda: read_snapshot(objects, "deal_history")):
        with pytest.raises(KeyError, match="ID"):
            build_with_history(objects, history)


def test_the_snapshot_writer_keeps_a_copy_of_the_stage_history() -> None:
    objects = MemoryObjects()
    write_snapshot(objects, "deal_history", [[row for row in HISTORY if isinstance(row["ID"], int)]])
    reader = read_rows(objects, "deal_history")
    assert [row[0] for row in reader] == [1, 2, 3, 4, 5, 8] and (reader.from_copy, reader.from_json) == (1, 0)


def test_the_segments_job_s_wins_from_the_copy_are_those_from_the_json() -> None:
    from throughline.report.build import last_wins

    objects = with_history(HISTORY)
    zone = __import__("zoneinfo").ZoneInfo("Europe/Moscow")
    from_copy = last_wins(read_rows(objects, "deal_history"), {"WON"}, zone)
    assert from_copy == last_wins(read_snapshot(objects, "deal_history"), {"WON"}, zone)
    assert from_copy == {1: "2026-11-10T12:00:00+03:00", 4: "2026-11-20T10:00:00", 3: "2026-11-12T02:00:00+03:00"}


def test_hostile_history_entries_read_from_the_copy_give_the_funnel_and_wins_of_the_json() -> None:
    # IDs as text, floats, booleans, null; owners odd; stages not text; times odd or missing; a row without an ID in
    # some buckets (those keep no copy). The wins and the funnel's paths from the copy equal those from the JSON rows.
    import random

    from throughline.report.build import _Builder, _history, _last_wins, _Moves

    rng = random.Random(11)
    choices = {"ID": [1, 2, 3, "4", "x", None, 5.5, True, 2**62], "OWNER_ID": [1, 2, 3, "2", "x", None, 0, 3.0],
               "STAGE_ID": ["NEW", "WON", "", None, 5, "Ё"], "STAGE_SEMANTIC_ID": ["S", "F", None, 1],
               "CREATED_TIME": ["2026-11-02T10:00:00+03:00", "2026-11-02T10:00:00", "bad", "", None, 5]}  # fmt: skip
    builder = _Builder(PERIOD, previous_period(PERIOD), RateBook("RUB"), ReportOptions())
    builder.period_deals = {1: (0, "NEW"), 2: (0, "WON"), 3: (1, "NEW")}

    def outcome(history):
        moves = _Moves()
        try:
            wins = _last_wins(moves.kept(_history(history)), {"WON"})
            return wins, builder.deal_paths(moves)
        except Exception as error:  # the same error either way is what is compared
            return type(error).__name__

    copies = 0
    for _ in range(300):
        rows = [{key: rng.choice(values) for key, values in choices.items() if rng.random() < 0.9 or key == "ID"}
                for _ in range(rng.randrange(1, 10))]  # fmt: skip
        if rng.random() < 0.2:
            del rows[0]["ID"]
        objects = MemoryObjects()
        data = jsonlines.encode(rows)
        objects.put(snapshot_key("deal_history", 0), data)
        copy = columns.encode("deal_history", rows, columns.HISTORY_COLUMNS, data)
        if copy is not None:
            objects.put(columns.key_of("deal_history", 0), copy)
        reader = read_rows(objects, "deal_history")
        assert outcome(reader) == outcome(read_snapshot(objects, "deal_history"))
        copies += reader.from_copy
    assert 150 < copies < 300  # both ways were taken


def test_a_lead_with_a_lone_surrogate_leaves_the_snapshot_readable_and_its_copy_current() -> None:
    """A tag cut in the middle of an emoji (JSON's "\\ud83d" decodes to a str no UTF-8 can carry): the snapshot keeps
    U+FFFD in its place, so the bucket is written, read back by the JSON reader and Athena, and has its copy."""
    objects = MemoryObjects()
    rows = [{"ID": "1", "DATE_CREATE": "2026-11-05T10:00:00+03:00", "UTM_CAMPAIGN": "brand\ud83d",
             "UTM_CONTENT": ["\udc25 list", {"\ud83dkey": "x"}]},
            {"ID": "2", "DATE_CREATE": "2026-11-06T10:00:00+03:00", "UTM_CAMPAIGN": "ok 🔥"}]  # fmt: skip
    assert write_snapshot(objects, "lead", [rows]) == 2
    text = gzip.decompress(objects.data[snapshot_key("lead", 0)]).decode("utf-8")  # strict: valid UTF-8 throughout
    assert "brand\ufffd" in text and "ok 🔥" in text
    [first, second] = read_snapshot(objects, "lead")
    assert first["UTM_CAMPAIGN"] == "brand\ufffd" and first["UTM_CONTENT"] == ["\ufffd list", {"\ufffdkey": "x"}]
    assert second["UTM_CAMPAIGN"] == "ok 🔥"
    reader = read_rows(objects, "lead")
    campaign = columns.LEAD_COLUMNS.index("UTM_CAMPAIGN")
    assert [row[campaign] for row in reader] == ["brand\ufffd", "ok 🔥"] and reader.from_copy == 1


@pytest.mark.parametrize("entity", ["lead", "deal"])
@pytest.mark.parametrize("damage", ["missing", None, "", "x", "²", [1], True, 2.5, "-2", -2])
def test_a_hand_edited_row_without_a_readable_id_is_one_clear_error_from_the_copy_and_the_json(entity, damage) -> None:
    """A bucket edited by hand, its second row left without a usable ID (gone, null, "", text, a digit int() refuses,
    a list; true, which int() reads as 1, another record's ID; 2.5, not a whole number; a negative one, which the
    builder's per-ID arrays would index from their end): the report stops with the same DamagedRow naming the bucket
    and the row, whichever way it is read."""
    objects = crafted()
    key = snapshot_key(entity, 0)
    rows = jsonlines.decode(objects.data[key])
    if damage == "missing":
        del rows[1]["ID"]
    else:
        rows[1]["ID"] = damage
    objects.put(key, jsonlines.encode(rows))
    # The refresh remakes the copy of a bucket it finds changed (none for a row without an ID: the JSON is read).
    _SnapshotWriter(objects, entity, SnapshotOptions(profit_field="UF_PROFIT"), replace=False).finish(set())
    made = bool(objects.data.get(columns.key_of(entity, 0)))
    assert made is (damage != "missing")
    leads, deals = read_rows(objects, "lead"), read_rows(objects, "deal", "UF_PROFIT")
    readers = {
        "copy or json": lambda: build(leads, deals, profit_field="UF_PROFIT"),
        "json rows": lambda: build(read_snapshot(objects, "lead"), read_snapshot(objects, "deal")),
    }
    messages = set()
    for name, run in readers.items():
        with pytest.raises(columns.DamagedRow) as raised:
            run()
        assert (raised.value.key, raised.value.position) == (key, 2), name
        messages.add(str(raised.value))
    [message] = messages
    assert message.startswith(f"CRM snapshot {key}: row 2 has ") and "state.json" in message
    assert ("no ID" in message) is (damage == "missing")
    reader = leads if entity == "lead" else deals
    assert (reader.from_copy, reader.from_json) == ((0, 1) if damage == "missing" else (1, 0))

    # An incremental run that changes that bucket names the same row instead of failing with a KeyError.
    writer = _SnapshotWriter(objects, entity, SnapshotOptions(), replace=False)
    writer.add([{"ID": "1", "DATE_CREATE": "2026-11-05T10:00:00+03:00"}])
    with pytest.raises(columns.DamagedRow, match="row 2 has"):
        writer.finish(set())


def test_a_snapshot_with_integer_ids_is_read_as_before() -> None:
    """IDs the report has always read (integers, digit strings) pass the check, from the copy and from the JSON."""
    objects = MemoryObjects()
    rows = [{"ID": 1, "DATE_CREATE": "2026-11-05T10:00:00+03:00"}, {"ID": "2", "DATE_CREATE": "2026-11-06T10:00"}]
    write_snapshot(objects, "lead", [rows])
    reader = read_rows(objects, "lead")
    assert [row[0] for row in reader] == [1, "2"] and reader.from_copy == 1
    del objects.data[columns.key_of("lead", 0)]
    assert [row[0] for row in read_rows(objects, "lead")] == [1, "2"]
    assert [row["ID"] for row in read_snapshot(objects, "lead")] == [1, "2"]
