"""Person leases in DynamoDB (moto in-process): all or none, never waiting, expiring, released only by their owner,
keys that do not reveal the contact."""

from __future__ import annotations

import pytest

from tests.moto_tables import id_keyed_table
from throughline.adapters.locks import Locks


@pytest.fixture
def table(monkeypatch):
    with id_keyed_table(monkeypatch, "locks") as client:
        yield client


def test_a_person_has_one_writer_at_a_time_and_all_or_none_of_their_contacts(table):
    now = [1000.0]
    locks = Locks("locks", b"k", table, clock=lambda: now[0])
    first = locks.acquire(["contact:+79161234567", "contact:ivan@example.ru"])
    assert first is not None
    assert locks.acquire(["contact:ivan@example.ru"]) is None
    # The second writer held one free contact for a moment and gave it back: a third can take it.
    assert locks.acquire(["contact:+79160000000", "contact:+79161234567"]) is None
    third = locks.acquire(["contact:+79160000000"])
    assert third is not None
    locks.release(first)
    assert locks.acquire(["contact:ivan@example.ru"]) is not None


def test_a_lease_expires_and_only_its_owner_releases_it(table):
    now = [1000.0]
    locks = Locks("locks", b"k", table, clock=lambda: now[0], lease_seconds=10)
    crashed = locks.acquire(["lead:7"])
    assert locks.acquire(["lead:7"]) is None
    now[0] += 12  # the writer that held it crashed; the lease ran out
    taker = locks.acquire(["lead:7"])
    assert taker is not None
    locks.release(crashed)  # a late release of the expired lease leaves the new owner's alone
    assert locks.acquire(["lead:7"]) is None
    locks.release(taker)
    assert locks.acquire(["lead:7"]) is not None


def test_extending_a_lease_takes_all_new_names_or_none(table):
    locks = Locks("locks", b"k", table)
    lease = locks.acquire(["contact:a@example.ru"])
    other = locks.acquire(["lead:9"])
    assert locks.extend(lease, ["lead:8", "lead:9"]) is None
    assert locks.acquire(["lead:8"]) is not None  # not left behind by the failed extension
    locks.release(other)
    extended = locks.extend(lease, ["lead:9"])
    assert extended is not None and set(lease.keys) < set(extended.keys)


def test_keys_are_keyed_hashes_not_contacts(table):
    locks = Locks("locks", b"secret-1", table)
    locks.acquire(["contact:+79161234567"])
    [item] = table.scan(TableName="locks")["Items"]
    assert "79161234567" not in str(item)
    assert Locks("locks", b"secret-2", table).key("contact:+79161234567") != item["id"]["S"]
