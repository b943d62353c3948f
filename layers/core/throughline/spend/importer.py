"""One import run: for each platform, every account's chunks, each stored as whole partitions or not at all.

A platform that fails does not stop the others; a chunk that cannot be finished before the deadline (or whose
report the platform is still building) is recorded in ``spend/_state/<platform>.json`` and done first by the next
run. The run ends by naming every failure, so the caller can fail loudly after storing what it got.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

from throughline.adapters.spend_store import STATE_PREFIX, GzipLines, SpendStore
from throughline.spend.plan import Chunk, plan_chunks, without
from throughline.spend.rows import SpendRow, now_utc

MIN_CHUNK_RESERVE_SECONDS = 20.0  # never start a chunk with less time than this left


class NotReady(Exception):
    """The platform is still building this report; the next run asks again (same request, same report)."""


class Deadline(Protocol):
    def seconds_left(self) -> float: ...


class SpendSource(Protocol):
    platform: str
    chunk_days: int

    def accounts(self) -> list[str]: ...

    def fetch(self, chunk: Chunk, deadline: Deadline) -> Iterable[SpendRow]: ...


class SpendImportFailed(RuntimeError):
    """Some platform or account failed; what succeeded is stored. The message names each failure."""


@dataclass
class PlatformResult:
    """``rows`` are the rows stored; ``rows_fetched`` those the platform answered, ``rows_not_written`` those of them
    the bucket refused (their chunk stays in the state for the next run; ``not_written`` says why)."""

    platform: str
    chunks_done: int = 0
    partitions: int = 0
    rows: int = 0
    pending: list[Chunk] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    rows_fetched: int = 0
    rows_not_written: int = 0
    not_written: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        """``ok``; ``incomplete`` (work left for the next run, nothing failed); ``failed``."""
        return "failed" if self.failures else "incomplete" if self.pending else "ok"


@dataclass
class RunResult:
    date_from: date
    date_to: date
    platforms: dict[str, PlatformResult] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [failure for result in self.platforms.values() for failure in result.failures]

    @property
    def pending(self) -> list[Chunk]:
        return [chunk for result in self.platforms.values() for chunk in result.pending]

    def summary(self) -> dict:
        return {
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "platforms": {
                name: {
                    "status": r.status,
                    "chunks": r.chunks_done,
                    "partitions": r.partitions,
                    "rows": r.rows,
                    "rows_fetched": r.rows_fetched,
                    "rows_not_written": r.rows_not_written,
                    "not_written": r.not_written,
                    "pending": [str(c) for c in r.pending],
                    "failures": r.failures,
                }
                for name, r in self.platforms.items()
            },
            "ok": not self.failures,
        }


Progress = Callable[[str, Chunk, int, int, int], None]  # platform, chunk, chunks done, chunks planned, rows


def state_key(platform: str) -> str:
    return f"{STATE_PREFIX}{platform}.json"


def import_spend(
    sources: Iterable[SpendSource],
    store: SpendStore,
    date_from: date,
    date_to: date,
    *,
    deadline: Deadline,
    progress: Progress | None = None,
    ingested_at: datetime | None = None,
    parallel: bool = True,
) -> RunResult:
    """Import ``date_from..date_to`` (plus work left by earlier runs) from every source into ``store``."""
    result = RunResult(date_from, date_to)
    sources = list(sources)
    ingested_at = ingested_at or now_utc()
    lock = threading.Lock()

    def run(source: SpendSource) -> None:
        try:
            outcome = _import_platform(source, store, date_from, date_to, deadline, progress, ingested_at, lock)
        except Exception as error:  # e.g. the bucket refused to read the state: whatever is recorded stays as it is
            outcome = PlatformResult(source.platform, failures=[f"{source.platform}: {_describe(error)}"])
        result.platforms[source.platform] = outcome

    if parallel and len(sources) > 1:
        with ThreadPoolExecutor(max_workers=len(sources), thread_name_prefix="spend") as pool:
            for future in [pool.submit(run, source) for source in sources]:
                future.result()
    else:
        for source in sources:
            run(source)
    return result


def _import_platform(
    source: SpendSource,
    store: SpendStore,
    date_from: date,
    date_to: date,
    deadline: Deadline,
    progress: Progress | None,
    ingested_at: datetime,
    lock: threading.Lock,
) -> PlatformResult:
    platform = source.platform
    outcome = PlatformResult(platform)
    try:
        accounts = source.accounts()
    except Exception as error:
        outcome.failures.append(f"{platform}: {_describe(error)}")
        # The recorded work stays as it is: nothing new can be planned without accounts.
        outcome.pending = [
            Chunk.from_json(platform, c) for c in (store.get_json(state_key(platform)) or {}).get("pending", [])
        ]
        return outcome

    wanted = [Chunk(platform, account, date_from, date_to) for account in accounts]
    planned: list[Chunk] = []

    def claim(state: Any) -> dict:
        # Recorded before the first request: if Lambda is stopped mid-run, the next run still knows what was asked
        # for. Work for accounts no longer configured is dropped, not retried for ever. A run never overwrites the
        # state whole — another run (a back-fill from the CLI, say) may be recording its own work at the same time.
        left = [Chunk.from_json(platform, c) for c in (state or {}).get("pending", [])]
        left = [chunk for chunk in left if chunk.account_id in accounts]
        planned[:] = plan_chunks([*left, *wanted], source.chunk_days)
        return _state(platform, planned)

    try:
        store.update_json(state_key(platform), claim)
    except Exception as error:  # nothing is fetched before the plan is recorded; the state is as it was
        outcome.failures.append(f"{platform}: storing failed (recording the plan, nothing fetched): {_describe(error)}")
        outcome.pending = list(planned)
        return outcome
    chunks = list(planned)
    failed_accounts: set[str] = set()
    slowest = 0.0
    for index, chunk in enumerate(chunks):
        if chunk.account_id in failed_accounts:
            outcome.pending.append(chunk)
            continue
        if deadline.seconds_left() < max(MIN_CHUNK_RESERVE_SECONDS, 1.5 * slowest):
            outcome.pending.append(chunk)
            continue
        started = time.monotonic()
        try:
            by_day = _collect(source.fetch(chunk, deadline), chunk)
        except NotReady:
            outcome.pending.append(chunk)
            continue
        except Exception as error:
            outcome.failures.append(
                f"{platform} account {chunk.account_id} ({chunk.date_from}…{chunk.date_to}): {_describe(error)}"
            )
            failed_accounts.add(chunk.account_id)
            outcome.pending.append(chunk)
            continue
        rows = sum(lines.count for lines in by_day.values())
        outcome.rows_fetched += rows
        written = 0
        try:
            for day in chunk.days():  # every day, empty ones too: a restated day with no spend left must be emptied
                # Popped: each day's lines go as soon as they are stored, none are left while the next chunk is read.
                lines = by_day.pop(day, None) or GzipLines()
                count = lines.count
                store.write_partition(platform, day, chunk.account_id, lines)
                del lines
                written += count
                outcome.partitions += 1
        except Exception as error:
            # The bucket refused a write (after botocore's retries): the chunk stays in the state, whole, for the
            # next run, which rewrites its days; the partitions written before the refusal are whole and counted.
            # The platform stops here: what follows would be fetched only to be refused too.
            outcome.rows += written
            outcome.rows_not_written += rows - written
            reason = f"{platform} account {chunk.account_id} ({chunk.date_from}…{chunk.date_to}): storing failed"
            reason += f" ({rows - written} of {rows} rows not written): {_describe(error)}"
            outcome.not_written.append(reason)
            outcome.failures.append(reason)
            outcome.pending.extend(chunks[index:])
            return outcome
        outcome.chunks_done += 1
        outcome.rows += rows
        slowest = max(slowest, time.monotonic() - started)
        try:
            _done(store, platform, chunk, source.chunk_days)
        except Exception as error:
            # Stored, but the state still names the chunk: the next run fetches and rewrites it (same partitions).
            outcome.failures.append(
                f"{platform}: recording {chunk.account_id} ({chunk.date_from}…{chunk.date_to}) as done failed"
                f" (its {rows} rows are stored; the next run imports it again): {_describe(error)}"
            )
            outcome.pending.extend(chunks[index:])
            return outcome
        if progress:
            with lock:
                progress(platform, chunk, index + 1, len(chunks), rows)
    # What is left (deadline, unfinished report, failure) is still recorded: only finished chunks leave the state.
    return outcome


def _collect(rows: Iterable[SpendRow], chunk: Chunk) -> dict[date, GzipLines]:
    """A chunk's rows as their stored lines (UTF-8 JSON), by day. The chunk is held whole until every row has come
    (a report cut short stores nothing); a large day is held compressed as it comes (a million-row Direct chunk as
    lines would outgrow the function's memory), a small one as lines."""
    by_day: dict[date, GzipLines] = defaultdict(GzipLines)
    for row in rows:
        if not (chunk.date_from <= row.date <= chunk.date_to) or row.account_id != chunk.account_id:
            raise ValueError(f"the platform returned a row outside the request ({row.account_id} {row.date})")
        by_day[row.date].add(row.to_json_line().encode("utf-8"))
    return by_day


def _state(platform: str, pending: list[Chunk]) -> dict:
    return {"platform": platform, "pending": [c.to_json() for c in pending], "updated_at": now_utc().isoformat()}


def _done(store: SpendStore, platform: str, chunk: Chunk, max_days: int) -> None:
    def finish(state: Any) -> dict:
        left = [Chunk.from_json(platform, c) for c in (state or {}).get("pending", [])]
        return _state(platform, without(left, chunk, max_days))

    store.update_json(state_key(platform), finish)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__
