"""Flood limits on the capture path (moto in-process): counters per IP and per contact in fixed windows, keyed by
HMACs, conditional so that writers counting at once never let more than the limit through."""

from __future__ import annotations

import threading

import pytest

from tests.moto_atomic import AtomicCalls
from tests.moto_tables import id_keyed_table
from throughline.capture.limits import EXPIRY_GRACE_SECONDS, RateLimiter

SECRET = "k" * 64
T0 = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC, a fixed clock


@pytest.fixture
def table(monkeypatch):
    with id_keyed_table(monkeypatch, "idem") as client:
        yield client


def items(client) -> list[dict]:
    return client.scan(TableName="idem")["Items"]


def test_the_limit_passes_exactly_that_many_posts_per_window_then_holds_until_the_next(table):
    now = [T0]
    limiter = RateLimiter("idem", SECRET, 600, {"ip": 3, "contact": 100}, table, clock=lambda: now[0])
    posts = [limiter.over_limit({"ip": "203.0.113.7", "contact": f"+7916000000{n}"}) for n in range(5)]
    assert posts == [None, None, None, "ip", "ip"]
    assert limiter.over_limit({"ip": "203.0.113.8", "contact": "+79160000009"}) is None  # another visitor
    now[0] += 600 - (T0 % 600)  # the next window starts
    assert limiter.over_limit({"ip": "203.0.113.7", "contact": "+79160000001"}) is None


def test_a_contact_is_limited_whatever_ip_it_comes_from_and_a_missing_value_is_not_counted(table):
    limiter = RateLimiter("idem", SECRET, 3600, {"ip": 100, "contact": 2}, table, clock=lambda: T0)
    answers = [limiter.over_limit({"ip": f"198.51.100.{n}", "contact": "+79161234567"}) for n in range(4)]
    assert answers == [None, None, "contact", "contact"]
    # A builder's post has no client IP of its own; a post without a phone or e-mail has no contact.
    assert limiter.over_limit({"ip": None, "contact": None}) is None


def test_zero_turns_a_limit_off(table):
    limiter = RateLimiter("idem", SECRET, 3600, {"ip": 0, "contact": 0}, table, clock=lambda: T0)
    assert all(limiter.over_limit({"ip": "203.0.113.7", "contact": "+79161234567"}) is None for _ in range(50))
    assert items(table) == []


def test_keys_are_hmacs_with_ttl_and_hold_neither_the_ip_nor_the_phone(table):
    limiter = RateLimiter("idem", SECRET, 3600, {"ip": 5, "contact": 5}, table, clock=lambda: T0)
    limiter.over_limit({"ip": "203.0.113.7", "contact": "+79161234567"})
    stored = items(table)
    assert len(stored) == 2
    text = repr(stored)
    assert "203.0.113.7" not in text and "79161234567" not in text and "9161234567" not in text
    window = int(T0 // 3600)
    for item in stored:
        kind, digest, number = item["id"]["S"].removeprefix("rate#").split("#")
        assert kind in ("ip", "contact") and len(digest) == 64 and int(number) == window
        assert int(item["expiration"]["N"]) == (window + 1) * 3600 + EXPIRY_GRACE_SECONDS
        assert item["n"]["N"] == "1"
    # Another secret, other keys: nobody can precompute them from a list of numbers.
    assert limiter.key("ip", "203.0.113.7", window) != RateLimiter("idem", "x" * 64, 3600, {}).key(
        "ip", "203.0.113.7", window
    )


def test_a_flood_does_not_grow_the_counter_past_the_limit(table):
    limiter = RateLimiter("idem", SECRET, 3600, {"ip": 4}, table, clock=lambda: T0)
    for _ in range(40):
        limiter.over_limit({"ip": "203.0.113.7"})
    [item] = items(table)
    assert item["n"]["N"] == "4"


def test_writers_counting_at_once_let_exactly_the_limit_through(table):
    limit, writers, each = 10, 8, 6
    limiter = RateLimiter("idem", SECRET, 3600, {"contact": limit}, AtomicCalls(table), clock=lambda: T0)
    start = threading.Barrier(writers)
    passed: list[int] = []
    lock = threading.Lock()

    def writer() -> None:
        start.wait()
        mine = sum(limiter.over_limit({"contact": "+79161234567"}) is None for _ in range(each))
        with lock:
            passed.append(mine)

    threads = [threading.Thread(target=writer) for _ in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(passed) == limit
    [item] = items(table)
    assert item["n"]["N"] == str(limit)


def test_retry_after_is_the_rest_of_the_window():
    limiter = RateLimiter("idem", SECRET, 600, {}, clock=lambda: 1_795_999_900.0)  # 100 s into a 600 s window
    assert 1_795_999_900 % 600 == 100
    assert limiter.seconds_left() == 500


def test_an_ipv6_client_is_its_64_network_and_a_mapped_ipv4_is_the_ipv4_address(table):
    limiter = RateLimiter("idem", SECRET, 3600, {"ip": 2}, table, clock=lambda: T0)
    # A bot rotating addresses inside its own /64 is one client.
    answers = [limiter.over_limit({"ip": f"2001:db8:1:2::{n:x}"}) for n in range(1, 4)]
    assert answers == [None, None, "ip"]
    assert limiter.over_limit({"ip": "2001:db8:1:3::1"}) is None  # the next /64 is somebody else
    assert RateLimiter.client("::ffff:203.0.113.7") == RateLimiter.client("203.0.113.7") == "203.0.113.7"
    assert RateLimiter.client("2001:DB8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert RateLimiter.client(None) is None
