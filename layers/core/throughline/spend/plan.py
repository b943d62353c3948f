"""What a run imports: date windows, safe chunks, and the work a previous run left for this one."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass(frozen=True, order=True)
class Chunk:
    """One account's dates, imported (and stored) together: all of its partitions or none."""

    platform: str
    account_id: str
    date_from: date
    date_to: date

    def days(self) -> list[date]:
        return [self.date_from + timedelta(days=n) for n in range((self.date_to - self.date_from).days + 1)]

    def to_json(self) -> dict[str, str]:
        return {
            "account_id": self.account_id,
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
        }

    @classmethod
    def from_json(cls, platform: str, value: Mapping[str, Any]) -> Chunk:
        return cls(
            platform,
            str(value["account_id"]),
            date.fromisoformat(value["date_from"]),
            date.fromisoformat(value["date_to"]),
        )

    def __str__(self) -> str:
        return f"{self.platform} {self.account_id} {self.date_from}…{self.date_to}"


def nightly_window(now: datetime, zone: ZoneInfo, lookback_days: int) -> tuple[date, date]:
    """The restatement window: ``lookback_days`` days ending yesterday in the bundle's time zone (today is partial)."""
    yesterday = now.astimezone(zone).date() - timedelta(days=1)
    return yesterday - timedelta(days=lookback_days - 1), yesterday


def split(date_from: date, date_to: date, max_days: int) -> list[tuple[date, date]]:
    """``date_from..date_to`` (inclusive) in consecutive pieces of at most ``max_days`` days."""
    if date_to < date_from:
        raise ValueError(f"date_to {date_to} is before date_from {date_from}")
    pieces = []
    start = date_from
    while start <= date_to:
        end = min(date_to, start + timedelta(days=max_days - 1))
        pieces.append((start, end))
        start = end + timedelta(days=1)
    return pieces


def plan_chunks(chunks: Iterable[Chunk], max_days: int) -> list[Chunk]:
    """Merge overlapping work per account (a pending range and tonight's window often overlap), then cut it into
    chunks of at most ``max_days``, oldest first, so nothing is imported twice in one run."""
    days_by_account: dict[tuple[str, str], set[date]] = defaultdict(set)
    for chunk in chunks:
        days_by_account[(chunk.platform, chunk.account_id)].update(chunk.days())
    planned = []
    for (platform, account), days in sorted(days_by_account.items()):
        for start, end in _runs(sorted(days)):
            planned.extend(Chunk(platform, account, a, b) for a, b in split(start, end, max_days))
    return sorted(planned, key=lambda c: (c.account_id, c.date_from))


def without(chunks: Iterable[Chunk], done: Chunk, max_days: int) -> list[Chunk]:
    """``chunks`` less the days of ``done`` (for its account), planned again in pieces of at most ``max_days``."""
    days_by_account: dict[tuple[str, str], set[date]] = defaultdict(set)
    for chunk in chunks:
        days_by_account[(chunk.platform, chunk.account_id)].update(chunk.days())
    days_by_account[(done.platform, done.account_id)].difference_update(done.days())
    left = [Chunk(p, a, day, day) for (p, a), days in days_by_account.items() for day in days]
    return plan_chunks(left, max_days)


def _runs(days: list[date]) -> Iterable[tuple[date, date]]:
    start = previous = days[0]
    for day in days[1:]:
        if day != previous + timedelta(days=1):
            yield start, previous
            start = day
        previous = day
    yield start, previous
