"""A hostile reviewer's checks of the sweep's requests (no stack: a fake portal records what it is asked)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from throughline.bitrix24.client import BatchResult
from throughline.journey.sweep import sweep

DOCUMENTED_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")  # api-reference/data-types.md


class FakePortal:
    calls = 0

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def batch(self, commands: dict[str, Any], **_: Any) -> BatchResult:
        self.calls += 1
        self.commands.append(dict(commands))
        return BatchResult(results={key: [] for key in commands}, errors={}, totals={}, nexts={})


class FakeStore:
    def __init__(self) -> None:
        self.meta: dict[str, dict[str, Any]] = {}

    def metas(self, entities: Any) -> dict[str, dict[str, Any]]:
        return {entity: self.meta[entity] for entity in entities if entity in self.meta}

    def put_meta(self, entity: str, meta: dict[str, Any]) -> None:
        self.meta.setdefault(entity, {}).update(meta)


class FakeWriter:
    def __init__(self) -> None:
        self.bitrix, self.store = FakePortal(), FakeStore()

    def handle(self, events: Any, *, records: Any = None) -> int:
        return 0


def test_the_modified_since_filter_is_in_the_documented_datetime_format():
    writer = FakeWriter()
    clock = datetime(2026, 11, 30, 4, 0, 0, 987654, tzinfo=UTC)
    sweep(writer, now=lambda: clock)  # the first sweep: a day back
    sweep(writer, now=lambda: clock)  # from the stored cursor
    filters = [params["filter"] for commands in writer.bitrix.commands for _, params in commands.values()]
    dates = [value for found in filters for key, value in found.items() if key.startswith(">=")]
    assert len(dates) == 2 * 4
    assert all(DOCUMENTED_DATETIME.fullmatch(value) for value in dates), dates
    assert writer.store.meta["#SWEEP"]["modified_since"] == "2026-11-30T04:00:00+00:00"  # floored: nothing missed
