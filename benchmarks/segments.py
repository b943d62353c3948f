"""Segments at portal scale: 100 000 contacts on the Bitrix24 sandbox, written back across several invocations.

The sandbox keeps its documented limits except the leaky bucket's pace, which is not waited for here: each
invocation is given the time a real one has (900 s less the handler's 60 s reserve) and spends it at 2 requests a
second, so its deadline comes after 1 680 REST calls, as it would in Lambda. The portal's per-method operating time
(480 s per 10 minutes, limits.md) runs on a clock that moves 15 minutes between invocations, as the schedule does.
Printed: REST calls per invocation and in all (snapshot, enumerations, updates), records written, the minutes those
calls take at 2 requests a second, and the second night's calls when one contact changed.

    PYTHONPATH=layers/core:. python -m benchmarks.segments            # 100 000 contacts
    PYTHONPATH=layers/core:. python -m benchmarks.segments --quick    # 10 000 (the slow test runs this)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from throughline.bitrix24.client import Bitrix24Client, Deadline
from throughline.bitrix24.pacing import LeakyBucket
from throughline.report.crm import SnapshotOptions
from throughline.segments.fields import setup_report
from throughline.segments.job import SegmentOptions, build_segments

MSK = ZoneInfo("Europe/Moscow")
NIGHT = datetime(2026, 12, 6, 5, 10, tzinfo=MSK)
RATE = 2.0  # requests a second: the portal's pace
INVOCATION_SECONDS = 900.0 - 60.0  # the function's timeout less the handler's reserve
UNPACED = LeakyBucket(rate=10_000.0, burst=10_000)  # the pace is counted (RATE), not waited for
OPTIONS = SegmentOptions(snapshot=SnapshotOptions(stage_history=False, person_key_secret="bench-secret"))


class MemoryObjects:
    """The data bucket in memory (get, put, keys): the benchmark's and the segments tests' store."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, body: bytes) -> None:
        self.data[key] = body

    def keys(self, prefix: str) -> Iterator[str]:
        return iter(sorted(key for key in self.data if key.startswith(prefix)))


def won_deal(contact: int, day: str, amount: int, created: str = "2025-06-02T10:00:00+03:00") -> dict[str, Any]:
    return {"TITLE": "Сделка", "CONTACT_ID": contact, "STAGE_ID": "WON", "OPPORTUNITY": amount, "CLOSEDATE": day,
            "DATE_CREATE": created}  # fmt: skip


def open_deal(contact: int, created: str = "2026-11-01T10:00:00+03:00") -> dict[str, Any]:
    return {"TITLE": "Открытая", "CONTACT_ID": contact, "STAGE_ID": "NEW", "DATE_CREATE": created}


def seed_customers(
    sandbox: Sandbox,
    contacts: int,
    *,
    deals_of: Callable[[int], list[dict[str, Any]]],
    created: Callable[[int], str] = lambda n: "2025-06-01T10:00:00+03:00",
    extra_deals: Iterable[dict[str, Any]] = (),
) -> int:
    """The one builder of segments data (the benchmark's and the segments tests'): contacts 1..n (a name, a phone
    ``+7916<n>``, created as ``created(n)`` says), then each one's deals (``deals_of(n)``) and ``extra_deals``, as if
    the portal already had them. Returns the number of deals."""
    seed_history(sandbox, "contact", [
        {"NAME": f"Контакт {n}", "DATE_CREATE": created(n), "PHONE": [{"VALUE": f"+7916{n:07d}", "VALUE_TYPE": "WORK"}]}
        for n in range(1, contacts + 1)
    ])  # fmt: skip
    deals = [deal for n in range(1, contacts + 1) for deal in deals_of(n)] + list(extra_deals)
    seed_history(sandbox, "deal", deals)
    return len(deals)


def _benchmark_deals(n: int) -> list[dict[str, Any]]:
    """A fifth are newcomers (no deal), the rest bought once, twice or have an open deal."""
    if n % 5 == 0:
        return []
    if n % 4 == 0:
        return [open_deal(n)]
    return [won_deal(n, (NIGHT.date() - timedelta(days=(n * 7 + k * 40) % 400)).isoformat(), 1000 + n % 9000)
            for k in range(n % 4)]  # fmt: skip


def seed(sandbox: Sandbox, contacts: int) -> int:
    """Every contact gets a segment or a score: a fifth are newcomers (created last week), the rest bought once,
    twice or have an open deal. Returns the number of deals."""
    week_ago = (NIGHT - timedelta(days=7)).isoformat()
    return seed_customers(sandbox, contacts, deals_of=_benchmark_deals,
                          created=lambda n: week_ago if n % 5 == 0 else "2025-06-01T10:00:00+03:00")  # fmt: skip


def night(
    sandbox: Sandbox, objects: MemoryObjects, clock: list[float], at: datetime, seconds: float = INVOCATION_SECONDS
) -> list[dict[str, Any]]:
    """Invocations 15 minutes apart until the night's work is done."""
    runs = []
    for invocation in range(1, 50):
        client = Bitrix24Client(sandbox.webhook_url, pacer=UNPACED)
        calls_at_start = client.calls

        def remaining(client: Bitrix24Client = client, start: int = calls_at_start) -> float:
            return seconds - (client.calls - start) / RATE

        client.deadline = Deadline(remaining, reserve=0.0)
        began = time.perf_counter()
        moment = at + timedelta(minutes=15 * (invocation - 1))
        summary = build_segments(client, objects, options=OPTIONS, now=lambda moment=moment: moment)
        runs.append({"invocation": invocation, "rest_calls": client.calls, "status": summary["status"],
                     "written": (summary.get("writeback") or {}).get("written"),
                     "position": (summary.get("writeback") or {}).get("position"),
                     "total": (summary.get("writeback") or {}).get("total"),
                     "seconds": round(time.perf_counter() - began, 1)})  # fmt: skip
        clock[0] += 15 * 60 - (client.calls - calls_at_start) / RATE  # the next run starts 15 minutes after this one
        if summary["status"] == "done":
            return runs
    raise RuntimeError("the write-back did not finish in 49 invocations")


class _PortalTime:
    """The sandbox's ``time`` module as the schedule sees it: half a second a request, 15 minutes between runs."""

    def __init__(self, now: Any) -> None:
        self.time, self.sleep, self.perf_counter, self.monotonic = now, time.sleep, time.perf_counter, time.monotonic


def run(contacts: int, seconds: float = INVOCATION_SECONDS) -> dict[str, Any]:
    """Two nights on ``contacts`` contacts; ``seconds``: what each invocation may spend (at 2 requests a second)."""
    from local.bitrix24_sandbox import server

    clock = [time.time()]
    with Sandbox(app_token="bench", seed=18, rate=10_000.0, burst=10_000) as sandbox:
        sandbox.configure(time_scale=0.0)  # method costs are charged to operating time, not slept

        def portal_now() -> float:
            return clock[0] + sandbox._stats["requests"] / RATE

        sandbox._operating._clock = portal_now
        real_time, server.time = server.time, _PortalTime(portal_now)  # type: ignore[assignment]
        try:
            return _nights(sandbox, contacts, clock, seconds)
        finally:
            server.time = real_time


def _nights(sandbox: Sandbox, contacts: int, clock: list[float], seconds: float) -> dict[str, Any]:
    objects = MemoryObjects()
    setup_report(Bitrix24Client(sandbox.webhook_url), objects)
    deals = seed(sandbox, contacts)
    sandbox.reset_stats()
    first = night(sandbox, objects, clock, NIGHT, seconds)
    stats = sandbox.stats()
    clock[0] += stats["requests"] / RATE
    Bitrix24Client(sandbox.webhook_url).call(
        "crm.deal.add",
        {"fields": {"CONTACT_ID": 5, "STAGE_ID": "WON", "OPPORTUNITY": 500, "CLOSEDATE": "2026-12-07"}},
    )
    clock[0] += 1 / RATE
    sandbox.reset_stats()
    second = night(sandbox, objects, clock, NIGHT + timedelta(days=1), seconds)
    calls = sum(item["rest_calls"] for item in first)
    return {
        "contacts": contacts,
        "deals": deals,
        "first_night": first,
        "first_night_rest_calls": calls,
        "first_night_batch_commands": stats["batch_commands"],
        "first_night_operation_time_limited": stats["operation_time_limited"],
        "first_night_minutes_at_2_rps": round(calls / RATE / 60, 1),
        "second_night": second,
        "second_night_rest_calls": sum(item["rest_calls"] for item in second),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 000 contacts")
    args = parser.parse_args(argv)
    print(json.dumps(run(10_000 if args.quick else 100_000), indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
