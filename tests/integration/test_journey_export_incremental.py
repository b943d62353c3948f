"""The nightly journey export follows the day's changes: equal to a full export, reading what changed, crash-safe."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from tests.integration.test_journey_events import live  # noqa: F401 (the fixture)
from throughline.adapters.journey_store import JourneyStore, encode_item
from throughline.adapters.raw_store import RawStore
from throughline.config import get_settings
from throughline.journey.export import export_journeys
from throughline.journey.lines import Touch
from throughline.journey.packed import read_packed, read_packed_entities

REGION = "eu-central-1"
TABLE = "journeys"
HISTORY = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)  # written before the first export
FIRST = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)  # the first (full) export
TODAY = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # the day's changes
SECOND = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)  # the nightly export that follows them


class Counting:
    """A DynamoDB client that counts the read calls and the items they returned."""

    def __init__(self, client):
        self._client = client
        self.calls: Counter[str] = Counter()
        self.items = 0

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if name not in ("scan", "query", "batch_get_item", "get_item"):
            return method

        def counted(**kwargs):
            response = method(**kwargs)
            self.calls[name] += 1
            self.items += len(response.get("Items", [])) + sum(len(v) for v in response.get("Responses", {}).values())
            self.items += 1 if response.get("Item") else 0
            return response

        return counted


class FailingPut:
    """An S3 client whose writes fail from the n-th on, as a Lambda that times out half-way."""

    def __init__(self, client, after: int):
        self._client, self.left = client, after

    def __getattr__(self, name):
        method = getattr(self._client, name)
        if name not in ("put_object", "copy_object"):
            return method

        def failing(**kwargs):
            self.left -= 1
            if self.left < 0:
                raise ConnectionError("timed out")
            return method(**kwargs)

        return failing


@pytest.fixture
def aws():
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("entity", "touch")],
            KeySchema=[{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "touch", "KeyType": "RANGE"}],
        )
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("data", "full"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield dynamodb, s3


def touch(touch_id: str, at: datetime, kind: str = "form", channel: str = "paid", source: str = "yandex") -> Touch:
    return Touch(touch_id=touch_id, at=at, kind=kind, channel=channel, source=source, medium="cpc", campaign="c1")


def store_at(dynamodb, now: datetime) -> JourneyStore:
    return JourneyStore(TABLE, dynamodb, clock=lambda: now)


def read(s3, bucket: str, key: str) -> list[str]:
    return gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode().splitlines()


def snapshot(s3, bucket: str) -> tuple[list[str], list[str]]:
    """Every touch line (sorted) and the entity lines (in the file's order) of the snapshot latest.json names."""
    latest = json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())
    touches = sorted(line for part in latest["parts"] for line in read(s3, bucket, part))
    entities = read(s3, bucket, f"journeys/snapshot={latest['snapshot']}/entities.json.gz")
    return touches, entities


def packed_matches(s3, bucket: str) -> bool:
    """Whether latest.json names a packed copy of each of its parts that holds the part's lines, in order
    (journey/packed.py); raises when it names copies that do not match."""
    latest = json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())
    if "packed" not in latest:
        return False
    assert len(latest["packed"]["parts"]) == len(latest["parts"])
    for part, key in zip(latest["parts"], latest["packed"]["parts"], strict=True):
        assert key.startswith(f"journeys-packed/snapshot={latest['snapshot']}/run=")
        packed = read_packed(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        lines = [json.loads(line) for line in read(s3, bucket, part)]
        assert packed.part.rsplit("/", 1)[-1] == part.rsplit("/", 1)[-1] and len(packed) == len(lines)
        for index, line in enumerate(lines):
            fields = [line[name] for name in ("kind", "entity_type", "channel", "source", "campaign")]
            assert packed.people[packed.person[index]] == line["person_key"]
            assert list(packed.labels[packed.label[index]]) == fields and packed.entity[index] == line["entity_id"]
            at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(packed.micros[index]))
            assert at == datetime.fromisoformat(line["at"])
    entities = read_packed_entities(s3.get_object(Bucket=bucket, Key=latest["packed"]["entities"])["Body"].read())
    assert latest["packed"]["entities"].startswith(f"journeys-packed/snapshot={latest['snapshot']}/run=")
    lines = [json.loads(line) for line in read(s3, bucket, f"journeys/snapshot={latest['snapshot']}/entities.json.gz")]
    assert [
        (entities.kinds[kind], entity, entities.people[person], lead or None)
        for kind, entity, person, lead in zip(entities.kind.tolist(), entities.entity.tolist(),
                                              entities.person.tolist(), entities.lead.tolist(), strict=True)
    ] == [(line["entity_type"], line["entity_id"], line["person_key"], line["lead_id"]) for line in lines]  # fmt: skip
    return True


def seed_history(dynamodb, entities: int, touches_each: int = 2, offset: int = 0) -> None:
    """``entities`` leads (half with a deal linked to them) written straight to the table, as years of history."""
    requests = []
    serializer = boto3.dynamodb.types.TypeSerializer()
    for n in range(offset + 1, offset + entities + 1):
        entity = f"LEAD#{n}" if n % 2 else f"DEAL#{n}"
        meta = {"kind": entity.split("#")[0].lower(), "id": n, "person_key": f"p{n}" if n % 2 else None}
        if not n % 2:
            meta["lead_id"] = n - 1
        item = {"entity": entity, "touch": "#meta", **{k: v for k, v in meta.items() if v is not None}}
        requests.append({"PutRequest": {"Item": {k: serializer.serialize(v) for k, v in item.items()}}})
        for t in range(touches_each):
            at = HISTORY - timedelta(days=n % 300, minutes=t)
            requests.append({"PutRequest": {"Item": encode_item(entity, touch(f"{entity}:{t}", at), "applied")}})
    for start in range(0, len(requests), 25):
        dynamodb.batch_write_item(RequestItems={TABLE: requests[start : start + 25]})


def test_incremental_equals_full_after_a_day_of_changes(aws):
    dynamodb, s3 = aws
    history = store_at(dynamodb, HISTORY)
    history.put_meta("LEAD#1", {"kind": "lead", "id": 1, "person_key": "alice"})
    visit = touch("v1", HISTORY - timedelta(days=3), "first_visit", "organic", "google")
    history.put("LEAD#1", [visit], state="applied")
    history.put_meta("LEAD#2", {"kind": "lead", "id": 2, "person_key": "bob"})
    history.put("LEAD#2", [touch("v2", HISTORY - timedelta(days=2))], state="applied")
    history.put_meta("DEAL#20", {"kind": "deal", "id": 20, "lead_id": 2})  # bob's deal, keyed through his lead
    history.put("DEAL#20", [touch("d20", HISTORY, "deal_created", "crm", "crm")], state="applied")
    history.put_meta("DEAL#30", {"kind": "deal", "id": 30, "contact_id": 7})  # its contact is not seen yet
    history.put("DEAL#30", [touch("d30", HISTORY, "crm_deal", "offline", "call")], state="applied")
    history.put_meta("DEAL#40", {"kind": "deal", "id": 40})  # a deal without a link yet
    history.put("DEAL#40", [touch("d40", HISTORY, "crm_deal", "offline", "call")], state="applied")
    history.put_meta("LEAD#4", {"kind": "lead", "id": 4, "person_key": "dan"})
    history.put("LEAD#4", [touch("v4", HISTORY - timedelta(days=1))], state="applied")
    history.put("LEAD#5", [touch("v5", HISTORY - timedelta(days=1))], state="applied")  # touches, no #meta
    seed_history(dynamodb, 300, offset=1000)  # unchanged entities around them
    first = export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=16, now=FIRST)
    assert first["mode"] == "full" and first["reason"] == "no previous snapshot"

    day = store_at(dynamodb, TODAY)
    day.put("LEAD#1", [touch("f1", TODAY, "form", "paid", "yandex")], state="applied")  # a new touch
    day.put_meta("LEAD#2", {"person_key": "bob-merged"})  # bob merged into another person: his deal follows
    day.put_meta("LEAD#4", {"deleted": True})  # a deletion mark
    day.put_meta("DEAL#40", {"lead_id": 1})  # a new link: the deal is alice's now
    day.put_meta("CONTACT#7", {"kind": "contact", "id": 7, "person_key": "carol"})  # DEAL#30's contact arrives
    day.put_meta("LEAD#9001", {"kind": "lead", "id": 9001, "person_key": "erin"})  # a new lead
    day.put("LEAD#9001", [touch("n1", TODAY)], state="applied")
    day.add_links("LEAD#77", ["DEAL#78"])  # a deal's event came before its lead's: the lead is known by #links only
    # LEAD#5's touches are removed (as a forget would), leaving no item: it leaves the export.
    for item in dynamodb.query(
        TableName=TABLE, KeyConditionExpression="entity = :e", ExpressionAttributeValues={":e": {"S": "LEAD#5"}}
    )["Items"]:
        dynamodb.delete_item(TableName=TABLE, Key={"entity": item["entity"], "touch": item["touch"]})
    day.mark_changed("LEAD#5")

    second = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert second["mode"] == "incremental"
    # changed: LEAD#1, #2, #4, #5, #77, #9001, DEAL#40, CONTACT#7; affected besides: DEAL#20 (bob), DEAL#30 (carol)
    assert (second["changed"], second["affected"]) == (8, 10)
    export_journeys(store_at(dynamodb, SECOND), "full", date(2026, 12, 1), buckets=16, now=SECOND)
    incremental, full = snapshot(s3, "data"), snapshot(s3, "full")
    assert incremental == full
    assert packed_matches(s3, "data") and packed_matches(s3, "full")  # rewritten buckets repacked, the others copied
    touches, entities = incremental
    by_id = {json.loads(line)["touch_id"]: json.loads(line) for line in touches}
    assert by_id["d20"]["person_key"] == "bob-merged" and by_id["d30"]["person_key"] == "carol"
    assert by_id["d40"]["person_key"] == "alice" and by_id["f1"]["person_key"] == "alice"
    assert "v5" not in by_id and by_id["n1"]["person_key"] == "erin"
    lead4 = next(json.loads(line) for line in entities if '"entity_id": 4,' in line and '"lead"' in line)
    assert lead4["deleted"] is True


@pytest.mark.slow(seconds=15)  # moto scans and queries in time linear in the table
def test_reads_follow_the_changes_not_the_table(aws):
    dynamodb, s3 = aws
    # 1 500 items against the 8 the incremental run may read: a bigger table only makes moto slower (with 2 000
    # entities the test took 45 s, most of its CPU in moto serializing the full scans' items)
    seed_history(dynamodb, 500)
    counting = Counting(dynamodb)
    first = JourneyStore(TABLE, counting, clock=lambda: FIRST)
    export_journeys(first, "data", date(2026, 11, 30), buckets=64, now=FIRST)
    assert counting.items >= 2 * 1500  # meta and two touches of 500 entities, scanned twice
    store_at(dynamodb, TODAY).put("LEAD#101", [touch("new", TODAY)], state="applied")

    counting = Counting(dynamodb)
    result = export_journeys(JourneyStore(TABLE, counting, clock=lambda: SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert result["mode"] == "incremental" and result["affected"] == 2  # LEAD#101 and the deal keyed by it
    assert counting.calls["scan"] == 0
    # the change log (8 shards x 2 days, one mark), LEAD#101 and DEAL#102 whole (meta + 3 and meta + 2 touches)
    assert counting.items == 1 + 4 + 3
    assert counting.calls["query"] == 16 + 2
    export_journeys(store_at(dynamodb, SECOND), "full", date(2026, 12, 1), buckets=64, now=SECOND)
    assert snapshot(s3, "data") == snapshot(s3, "full")


# writes: a changed bucket and its packed copy, 15 buckets copied and their 15 packed copies, entities.json.gz and
# its packed copy, latest.json
@pytest.mark.parametrize("after", [0, 1, 3, 16, 17, 31, 32, 33, 34])
def test_a_crash_half_way_leaves_the_previous_snapshot_latest(aws, after):
    dynamodb, s3 = aws
    seed_history(dynamodb, 200)
    export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=16, now=FIRST)
    before = snapshot(s3, "data")
    assert packed_matches(s3, "data")
    store_at(dynamodb, TODAY).put("LEAD#3", [touch("new", TODAY)], state="applied")
    failing = FailingPut(s3, after)
    with pytest.raises(ConnectionError):
        export_journeys(store_at(dynamodb, SECOND), RawStore("data", failing), date(2026, 12, 1), now=SECOND)
    latest = json.loads(s3.get_object(Bucket="data", Key="journeys/latest.json")["Body"].read())
    assert latest["snapshot"] == "2026-11-30" and snapshot(s3, "data") == before
    assert packed_matches(s3, "data")  # latest.json still names the previous run's copies, which match its parts
    # the retry (the next night or the Lambda's retry) still sees the change: the log was not consumed
    retry = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert retry["mode"] == "incremental"
    export_journeys(store_at(dynamodb, SECOND), "full", date(2026, 12, 1), buckets=16, now=SECOND)
    assert snapshot(s3, "data") == snapshot(s3, "full") != before
    assert packed_matches(s3, "data")


def test_the_last_write_is_latest_json_and_the_crash_test_reaches_it(aws):
    dynamodb, s3 = aws
    seed_history(dynamodb, 200)
    export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=16, now=FIRST)
    store_at(dynamodb, TODAY).put("LEAD#3", [touch("new", TODAY)], state="applied")
    counting = FailingPut(s3, 10**6)
    export_journeys(store_at(dynamodb, SECOND), RawStore("data", counting), date(2026, 12, 1), now=SECOND)
    assert 10**6 - counting.left == 35  # so after=34 above fails on latest.json itself


@pytest.mark.parametrize("after", [0, 1, 2, 9, 17, 18, 19])  # 20 writes: latest, 8+8 parts, entities x2, latest
def test_a_same_day_rerun_that_crashes_never_leaves_latest_naming_copies_of_other_parts(aws, after):
    """A same-day rerun rewrites the folder latest.json names: it first takes the packed copies out of latest.json."""
    dynamodb, s3 = aws
    seed_history(dynamodb, 200)
    export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=16, now=FIRST)
    assert packed_matches(s3, "data")
    store_at(dynamodb, TODAY).put("LEAD#3", [touch("new", TODAY)], state="applied")
    with pytest.raises(ConnectionError):
        export_journeys(store_at(dynamodb, TODAY), RawStore("data", FailingPut(s3, after)), date(2026, 11, 30),
                        now=TODAY)  # fmt: skip
    latest = json.loads(s3.get_object(Bucket="data", Key="journeys/latest.json")["Body"].read())
    assert latest["snapshot"] == "2026-11-30"
    assert packed_matches(s3, "data") == (after == 0)  # only when nothing was written do its copies stay named
    rerun = export_journeys(store_at(dynamodb, TODAY), "data", date(2026, 11, 30), now=TODAY)
    assert rerun["reason"] == "same-day rerun" and packed_matches(s3, "data")


@pytest.mark.parametrize("previous", ["without packed copies", "with fewer copies than parts"])
def test_after_an_upgrade_the_first_incremental_run_packs_the_copied_parts(aws, previous):
    dynamodb, s3 = aws
    seed_history(dynamodb, 200)
    export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=16, now=FIRST)
    latest = json.loads(s3.get_object(Bucket="data", Key="journeys/latest.json")["Body"].read())
    if previous == "without packed copies":
        del latest["packed"]  # as written by the code before packed copies
    else:  # which copy is whose cannot be told: none is carried over
        latest["packed"]["parts"] = latest["packed"]["parts"][1:]
    s3.put_object(Bucket="data", Key="journeys/latest.json", Body=json.dumps(latest).encode())
    store_at(dynamodb, TODAY).put("LEAD#3", [touch("new", TODAY)], state="applied")
    result = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert result["mode"] == "incremental" and packed_matches(s3, "data")


def test_when_it_rebuilds_in_full(aws):
    dynamodb, _ = aws
    seed_history(dynamodb, 20)

    def run(day: date, **options):
        now = datetime.combine(day, datetime.min.time(), UTC) + timedelta(hours=1)
        return export_journeys(store_at(dynamodb, now), "data", day, buckets=8, now=now, **options)["reason"]

    assert run(date(2026, 11, 30)) == "no previous snapshot"
    assert run(date(2026, 11, 30)) == "same-day rerun"
    assert run(date(2026, 12, 1)) is None
    assert run(date(2026, 12, 2), full=True) == "asked"
    assert [run(date(2026, 12, 2) + timedelta(days=n)) for n in range(1, 8)] == [None] * 6 + ["weekly rebuild"]
    assert run(date(2026, 12, 10)) is None
    assert run(date(2027, 2, 1)) in ("weekly rebuild", "change log does not cover the gap")


def test_a_write_in_flight_when_a_run_began_is_in_the_next_run(aws):
    """Marked at 23:55 (before the data lands), written after the 00:05 run read the table: the next run reads the
    previous day's marks too (the margin), else the touch would wait for the weekly rebuild."""
    dynamodb, s3 = aws
    seed_history(dynamodb, 40)
    late = store_at(dynamodb, datetime(2026, 11, 29, 23, 55, tzinfo=UTC))
    late.mark_changed("LEAD#7")
    start = datetime(2026, 11, 30, 0, 5, tzinfo=UTC)
    export_journeys(store_at(dynamodb, start), "data", date(2026, 11, 30), buckets=8, now=start)
    late.put("LEAD#7", [touch("late", datetime(2026, 11, 29, 23, 55, tzinfo=UTC))], state="applied")  # memo: no mark
    result = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert result["mode"] == "incremental" and result["changed"] == 1
    assert any('"touch_id": "late"' in line for line in snapshot(s3, "data")[0])


def test_parts_renamed_by_another_tool_mean_a_full_rebuild(aws):
    dynamodb, s3 = aws
    seed_history(dynamodb, 20)
    export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=8, now=FIRST)
    latest = json.loads(s3.get_object(Bucket="data", Key="journeys/latest.json")["Body"].read())
    latest["parts"] = [name.replace("part-", "part-forgotten-") for name in latest["parts"]]
    s3.put_object(Bucket="data", Key="journeys/latest.json", Body=json.dumps(latest).encode())
    result = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert result["reason"] == "the previous parts are not buckets"


@pytest.mark.parametrize("lost", ["part", "entities.json.gz"])
def test_a_lost_previous_object_means_a_full_rebuild_not_lost_lines(aws, lost):
    dynamodb, s3 = aws
    seed_history(dynamodb, 200)
    first = export_journeys(store_at(dynamodb, FIRST), "data", date(2026, 11, 30), buckets=8, now=FIRST)
    store_at(dynamodb, TODAY).put("LEAD#3", [touch("new", TODAY)], state="applied")
    gone = first["parts"][-1] if lost == "part" else "journeys/snapshot=2026-11-30/entities.json.gz"
    s3.delete_object(Bucket="data", Key=gone)
    result = export_journeys(store_at(dynamodb, SECOND), "data", date(2026, 12, 1), now=SECOND)
    assert result["mode"] == "full" and "missing" in result["reason"]
    export_journeys(store_at(dynamodb, SECOND), "full", date(2026, 12, 1), buckets=8, now=SECOND)
    assert snapshot(s3, "data") == snapshot(s3, "full")


def test_the_writer_marks_what_it_writes_and_the_next_export_follows(live):  # noqa: F811 (the imported fixture)
    """The real path: Bitrix24 events through the queue and the writer mark the entities; the next night's export
    reads only those and equals a full one."""
    from tests.integration.test_journey_events import call, manager_lead, settle, store

    lead = manager_lead(live)
    call(live, (1, lead), "Консультация", start="2026-11-17T12:00:00+03:00")
    settle(live)
    bucket = get_settings().data_bucket
    first = export_journeys(store(), bucket, date(2026, 11, 30), segments=2, buckets=8)
    assert first["mode"] == "full"
    deal = live.sandbox.convert_lead(lead)  # a new deal linked to the lead, and the lead's new stage
    call(live, (1, lead), "Повторный звонок", start="2026-11-18T12:00:00+03:00")
    settle(live)
    second = export_journeys(store(), bucket, date(2026, 12, 1), segments=2)
    assert second["mode"] == "incremental" and {f"LEAD#{lead}", f"DEAL#{deal}"} <= set(_changed(store()))
    boto3.client("s3").create_bucket(Bucket="full-copy", CreateBucketConfiguration={"LocationConstraint": REGION})
    export_journeys(store(), "full-copy", date(2026, 12, 1), segments=2, buckets=8, full=True)
    s3 = boto3.client("s3")
    data, full = snapshot(s3, bucket), snapshot(s3, "full-copy")
    assert data == full and any("Повторный звонок" in line for line in data[0])


def _changed(journeys: JourneyStore) -> set[str]:
    today = datetime.now(UTC).date()
    return journeys.changed([today - timedelta(days=1), today])
