"""Erasing one person on the local stack: posts become leads (raw copies filed under the person's keys), the
journey is exported, then ``forget`` (the CLI, and the function) removes their touches, index entries, raw copies
(every version) and exported rows — and nobody else's."""

from __future__ import annotations

import gzip
import json
from datetime import date

import boto3
import pytest
import requests

from tests.integration.test_journey_events import manager_lead, settle
from throughline.__main__ import main
from throughline.adapters.journey_store import PERSON_PREFIX, RAW_PREFIX, JourneyStore
from throughline.config import get_settings
from throughline.contacts import mask_phone
from throughline.journey.export import export_journeys
from throughline.journey.packed import read_packed, read_packed_entities
from throughline.person_keys import person_key

IVAN = {"name": "Иван", "phone": "8 (916) 123-45-67", "email": "Ivan@Example.ru", "utm_source": "yandex"}
OLGA = {"name": "Ольга", "phone": "+79035550101", "email": "olga@example.ru", "utm_source": "vk"}


def post(stack, fields: dict) -> str:
    response = requests.post(f"{stack.url}/v1/forms/contact/submissions", json=fields, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()["submission_id"]


def snapshot_rows(s3, bucket: str) -> list[dict]:
    rows = []
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="journeys/snapshot=").get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        rows += [json.loads(line) for line in gzip.decompress(body).decode().splitlines() if line]
    return rows


def packed_people(s3, bucket: str) -> list[str]:
    """The person of every row of the packed copies (journey/packed.py) of the touch parts and entities.json.gz."""
    found = []
    for item in s3.list_objects_v2(Bucket=bucket, Prefix="journeys-packed/snapshot=").get("Contents", []):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        part = read_packed_entities(body) if item["Key"].endswith("/entities.bin") else read_packed(body)
        found += [part.people[index] for index in part.person.tolist()]
    return found


def versions(s3, bucket: str, prefix: str) -> list[dict]:
    page = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    return [*page.get("Versions", []), *page.get("DeleteMarkers", [])]


def partition(store: JourneyStore, entity: str) -> list[dict]:
    query = {"KeyConditionExpression": "entity = :e", "ExpressionAttributeValues": {":e": {"S": entity}}}
    return store.client.query(TableName=store.table, **query)["Items"]


@pytest.fixture
def two_people(make_stack):
    stack = make_stack()
    post(stack, IVAN)
    post(stack, OLGA)
    settle(stack)
    post(stack, {**IVAN, "comment": "перезвоните"})  # a repeat request: a second raw copy of Ivan
    settle(stack)
    settings = get_settings()
    export_journeys(JourneyStore(settings.journey_table), settings.data_bucket, date(2026, 12, 1))
    return stack


def test_forget_by_phone_removes_their_touches_index_raw_copies_and_exported_rows_only(two_people, capsys):
    settings = get_settings()
    bucket, secret = settings.data_bucket, settings.person_key_secret
    store, s3 = JourneyStore(settings.journey_table), boto3.client("s3")
    ivan = [person_key("+79161234567", secret), person_key("ivan@example.ru", secret)]
    olga = [person_key("+79035550101", secret), person_key("olga@example.ru", secret)]
    [ivan_lead] = store.index_lookup(ivan[:1])
    [olga_lead] = store.index_lookup(olga[:1])
    ivan_raw = store.raw_keys(ivan)
    assert len(ivan_raw) == 2 and all(key.startswith("raw/forms/date=") for key in ivan_raw)
    assert len(store.raw_keys(olga)) == 1
    assert len(store.journey(ivan_lead)) >= 2  # the form and the repeat request
    rows = snapshot_rows(s3, bucket)
    assert {row["person_key"] for row in rows if row.get("touch_id")} == {ivan[0], olga[0]}
    assert set(packed_people(s3, bucket)) == {ivan[0], olga[0]}  # the packed copy the report reads holds both

    assert main(["forget", "--phone", "+7 916 123 45 67"]) == 0
    printed = capsys.readouterr().out
    assert "Bitrix24 is not touched" in printed
    assert mask_phone("+79161234567") in printed and "+79161234567" not in printed
    assert f"journey store: 1 records ({ivan_lead})" in printed
    assert "raw copies: 2 deleted" in printed

    assert store.journey(ivan_lead) == [] and store.metas([ivan_lead]) == {}
    assert store.index_lookup(ivan) == set() and store.raw_keys(ivan) == set()
    for key in ivan_raw:
        assert versions(s3, bucket, key) == []  # not merely a delete marker over the old version
    rows = snapshot_rows(s3, bucket)
    assert rows and all(row["person_key"] != ivan[0] for row in rows)
    assert all(f"{row['entity_type'].upper()}#{row['entity_id']}" != ivan_lead for row in rows)
    # The packed copies lost his touches too, and the report still reads them (they match their parts).
    assert ivan[0] not in packed_people(s3, bucket) and olga[0] in packed_people(s3, bucket)
    latest = json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())
    assert len(latest["packed"]["parts"]) == len(latest["parts"])
    # Rewritten snapshot objects keep no older version holding Ivan's rows.
    for prefix in ("journeys/snapshot=", "journeys-packed/snapshot="):
        for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
            assert len(versions(s3, bucket, item["Key"])) == 1
    # Olga is untouched; the e-mail key of Ivan went too (the index filed him under both).
    assert store.index_lookup(olga) == {olga_lead} and len(store.journey(olga_lead)) >= 1
    assert len(store.raw_keys(olga)) == 1 and any(row["person_key"] == olga[0] for row in rows)
    for prefix in (PERSON_PREFIX, RAW_PREFIX):  # his e-mail's entries for what was erased went too
        assert partition(store, prefix + ivan[1]) == []
    assert "also carried 1 other phone(s) or e-mail(s)" in printed

    assert main(["forget", "--phone", "+79161234567"]) == 0  # again: nothing left, no error
    assert "raw copies: 0 deleted" in capsys.readouterr().out


def test_the_function_forgets_by_e_mail_and_answers_what_it_removed(two_people):
    settings = get_settings()
    store = JourneyStore(settings.journey_table)
    olga = [
        person_key("+79035550101", settings.person_key_secret),
        person_key("olga@example.ru", settings.person_key_secret),
    ]
    [olga_lead] = store.index_lookup(olga)
    answer = two_people.invoke("forget_person", {"email": "OLGA@example.ru"})
    assert answer["entities"] == [olga_lead] and len(answer["raw_copies"]) == 1 and answer["touches"] >= 1
    assert answer["snapshot_rows"] >= 2 and answer["contacts"] == ["o***@example.ru"]  # a touch row and its entity
    assert "Bitrix24 is not touched" in answer["bitrix24"]
    assert store.index_lookup(olga) == set() and store.raw_keys(olga) == set()
    assert (
        store.client.query(
            TableName=store.table,
            KeyConditionExpression="entity = :e",
            ExpressionAttributeValues={":e": {"S": RAW_PREFIX + olga[0]}},
        )["Items"]
        == []
    )
    # Bitrix24 still has her lead: erasing there is the portal owner's step.
    assert any(row.get("NAME") == "Ольга" for row in two_people.sandbox.entities("lead"))


def test_raw_copy_index_entries_expire_with_the_copies():
    from datetime import UTC, datetime

    from throughline.capture.submissions import Submission, Visit
    from throughline.writer.journey_wiring import index_raw_copies

    class Recorder:
        def __init__(self):
            self.calls = []

        def raw_keys_put(self, entries):
            self.calls.append(list(entries))

    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    submission = Submission("s1", "contact", at, Visit(), phone="+79161234567", raw_key="raw/forms/x.json")
    no_contact = Submission("s2", "contact", at, Visit(), raw_key="raw/forms/y.json")
    recorder = Recorder()
    expires_at = int(datetime(2027, 1, 1, 12, 0, tzinfo=UTC).timestamp())  # 30 days + 1 after arrival
    both = Submission("s3", "contact", at, Visit(), phone="+79035550101", email="o@example.ru", raw_key="raw/forms/z")
    recorder.calls.clear()
    index_raw_copies(recorder, "k" * 32, [submission, no_contact, both], 30, now=at)
    assert recorder.calls == [  # one call for the whole batch
        [
            (person_key("+79161234567", "k" * 32), "raw/forms/x.json", expires_at),
            (person_key("+79035550101", "k" * 32), "raw/forms/z", expires_at),
            (person_key("o@example.ru", "k" * 32), "raw/forms/z", expires_at),
        ]
    ]


def test_a_raw_copy_put_days_after_arrival_stays_findable_until_the_bucket_deletes_it():
    # The writer puts the copy that travelled in the message when it takes the message: days after the post when
    # the portal was down or the message came back from the DLQ. The bucket's lifecycle counts from that put, so the
    # index entry (what forget reads) must outlive it, or forget would miss a copy that still holds the phone.
    from datetime import UTC, datetime

    from throughline.capture.submissions import Submission, Visit
    from throughline.writer.journey_wiring import index_raw_copies

    class Recorder:
        def __init__(self):
            self.calls = []

        def raw_keys_put(self, entries):
            self.calls.append(list(entries))

    arrived = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    written = datetime(2026, 12, 10, 8, 0, tzinfo=UTC)  # redriven from the DLQ nine days later
    submission = Submission("s1", "contact", arrived, Visit(), phone="+79161234567", raw_key="raw/forms/x.json")
    recorder = Recorder()
    index_raw_copies(recorder, "k" * 32, [submission], 30, now=written)
    expires_at = int(datetime(2027, 1, 10, 8, 0, tzinfo=UTC).timestamp())  # 30 days + 1 after the put
    assert recorder.calls == [[(person_key("+79161234567", "k" * 32), "raw/forms/x.json", expires_at)]]


def test_a_shared_phone_on_another_record_does_not_widen_the_erasure(make_stack):
    """Two leads a manager typed share an office phone: forgetting Ivan by his e-mail erases his lead only; the
    office phone's entry for Olga's lead stays, and his lead's entry under it goes."""
    stack = make_stack()
    office = [{"VALUE": "+74951234567", "VALUE_TYPE": "WORK"}]
    ivan = manager_lead(stack, TITLE="Иван", PHONE=office, EMAIL=[{"VALUE": "ivan@example.ru", "VALUE_TYPE": "WORK"}])
    olga = manager_lead(stack, TITLE="Ольга", PHONE=office, EMAIL=[{"VALUE": "olga@example.ru", "VALUE_TYPE": "WORK"}])
    settle(stack)
    settings = get_settings()
    store, secret = JourneyStore(settings.journey_table), settings.person_key_secret
    office_key, ivan_mail = person_key("+74951234567", secret), person_key("ivan@example.ru", secret)
    assert store.index_lookup([office_key]) == {f"LEAD#{ivan}", f"LEAD#{olga}"}
    assert store.index_lookup([ivan_mail]) == {f"LEAD#{ivan}"}
    assert main(["forget", "--email", "ivan@example.ru"]) == 0
    assert store.index_lookup([office_key]) == {f"LEAD#{olga}"}
    assert store.index_lookup([ivan_mail]) == set()
    assert store.journey(f"LEAD#{olga}") and not store.journey(f"LEAD#{ivan}")


def test_forget_removes_the_persons_posts_held_by_a_flood_limit_and_nobody_elses(make_stack, capsys):
    # A held post (raw/held/) carries the name, phone and e-mail like a raw copy, but never reaches the journey
    # store's raw-copy index: forget must find it all the same.
    stack = make_stack(parameters={"RateLimitPerContact": "1"})
    url = f"{stack.url}/v1/forms/contact/submissions"
    post(stack, IVAN)
    post(stack, OLGA)
    for person in (IVAN, OLGA):
        held = requests.post(url, json={**person, "comment": "ещё раз"}, timeout=60)
        assert held.status_code == 429, held.text
    settle(stack)
    s3, bucket = boto3.client("s3"), get_settings().data_bucket
    held = {
        item["Key"]: json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())["message"]["submission"]
        for item in s3.list_objects_v2(Bucket=bucket, Prefix="raw/held/").get("Contents", [])
    }
    [ivan_held] = [key for key, submission in held.items() if submission["phone"] == "+79161234567"]
    [olga_held] = [key for key, submission in held.items() if submission["phone"] == "+79035550101"]

    assert main(["forget", "--email", "IVAN@example.ru"]) == 0
    printed = capsys.readouterr().out
    assert "raw copies: 2 deleted" in printed and ivan_held in printed
    assert versions(s3, bucket, ivan_held) == []  # every version, not merely a delete marker
    assert len(versions(s3, bucket, olga_held)) == 1


@pytest.mark.parametrize("damage", ["truncated", "a later version"])
def test_a_packed_copy_forget_cannot_read_is_deleted_and_the_erasure_goes_on(two_people, capsys, damage):
    # A packed copy is only the report's shortcut to its part: one forget cannot read (damaged, or written by a later
    # version of the format before a rollback) stopped the whole erasure — the JSON parts, the journey store and the
    # indexes kept the person. It is deleted instead (every version): the report then reads the JSON parts.
    settings = get_settings()
    bucket, secret = settings.data_bucket, settings.person_key_secret
    s3 = boto3.client("s3")
    ivan = person_key("+79161234567", secret)
    latest = json.loads(s3.get_object(Bucket=bucket, Key="journeys/latest.json")["Body"].read())
    key = latest["packed"]["parts"][0]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    body = body[:-7] if damage == "truncated" else body[:4] + (2).to_bytes(2, "little") + body[6:]
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert main(["forget", "--phone", "+7 916 123 45 67"]) == 0
    capsys.readouterr()
    assert versions(s3, bucket, key) == []
    assert all(row["person_key"] != ivan for row in snapshot_rows(s3, bucket))
    assert ivan not in packed_people(s3, bucket)
    assert JourneyStore(settings.journey_table).index_lookup([ivan]) == set()
