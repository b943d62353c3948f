"""A hostile reviewer's checks of the sweep's requests (no stack: a fake portal records what it is asked)."""

from __future__ import annotations

import re
from typing import Any

from throughline.bitrix24.client import BatchResult
from throughline.journey.sweep import sweep

DOCUMENTED_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")  # api-reference/data-types.md


class FakePortal:
    calls = 0
    access_denied = 0
    portal_time: str | None = None  # no time block in these answers

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def batch(self, commands: dict[str, Any], **_: Any) -> BatchResult:
        self.calls += 1
        self.commands.append(dict(commands))
        # The newest change (asked for by DATE_MODIFY DESC) was at 07:00 Moscow time; the scans find nothing.
        newest = [{"ID": "5", "DATE_MODIFY": "2026-11-30T07:00:00+03:00"}]
        return BatchResult(
            results={key: newest if params.get("order") == {"DATE_MODIFY": "DESC"} else [] for key, (_, params) in
                     commands.items()},
            errors={}, totals={}, nexts={},
        )  # fmt: skip


class FakeStore:
    def __init__(self) -> None:
        self.meta: dict[str, dict[str, Any]] = {}

    def metas(self, entities: Any) -> dict[str, dict[str, Any]]:
        return {entity: self.meta[entity] for entity in entities if entity in self.meta}

    def put_meta(self, entity: str, meta: dict[str, Any]) -> None:
        self.meta.setdefault(entity, {}).update(meta)

    def count_access_denied(self, answers: int) -> None:
        self.denied = getattr(self, "denied", 0) + answers


class FakeWriter:
    def __init__(self) -> None:
        self.bitrix, self.store = FakePortal(), FakeStore()

    def handle(self, events: Any, *, records: Any = None) -> int:
        return 0


def test_the_modified_since_filter_is_in_the_documented_datetime_format_on_the_portals_clock():
    writer = FakeWriter()
    sweep(writer)  # the first sweep: a day before the portal's newest change
    sweep(writer)  # from the stored cursor
    filters = [params["filter"] for commands in writer.bitrix.commands for _, params in commands.values()
               if "filter" in params]  # fmt: skip
    dates = [value for found in filters for key, value in found.items() if key.startswith(">=")]
    assert len(dates) == 2 * 4  # no activity id seen yet: activities are still found by date
    assert all(DOCUMENTED_DATETIME.fullmatch(value) for value in dates), dates
    assert set(dates) == {"2026-11-29T06:55:00+03:00"}  # the portal's offset, OVERLAP before its day-back start
    assert writer.store.meta["#SWEEP"]["modified_since"] == "2026-11-29T07:00:00+03:00"


def test_the_cursor_follows_the_newest_change_read_never_our_clock():
    writer = FakeWriter()
    writer.store.meta["#SWEEP"] = {"modified_since": "2026-11-29T07:00:00+03:00", "activity_id": 3}
    rows = {"lead": [{"ID": "8", "DATE_MODIFY": "2026-11-29T09:30:00+03:00"}],
            "contact": [{"ID": "2", "DATE_MODIFY": "2026-11-29T08:00:00+03:00"}]}  # fmt: skip

    def batch(commands: dict[str, Any], **_: Any) -> BatchResult:
        writer.bitrix.commands.append(dict(commands))
        return BatchResult(results={key: rows.get(key, []) for key in commands}, errors={}, totals={}, nexts={})

    writer.bitrix.batch = batch  # type: ignore[method-assign]
    sweep(writer)
    cursor = dict(writer.store.meta["#SWEEP"])
    assert cursor.pop("swept_at")  # our clock, read only for the time passed between sweeps
    assert cursor == {"modified_since": "2026-11-29T09:30:00+03:00", "activity_id": 3}
    [first] = writer.bitrix.commands
    assert first["lead"][1]["filter"][">=DATE_MODIFY"] == "2026-11-29T06:55:00+03:00"
    assert ">=CREATED" not in first["activity"][1]["filter"]  # activities follow their ids
