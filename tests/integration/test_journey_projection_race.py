"""A hostile reviewer's race on the field projection: writer A renders, writer B stores a touch, renders and writes,
then A's older text lands last. A's version check sees the change; its second round must write again even though B
already recorded the version as shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tests.integration.test_journey_events import store
from throughline.bitrix24.client import BatchResult
from throughline.journey.lines import Touch
from throughline.journey.projection import Projector

FIELD = "UF_CRM_CUSTOMER_JOURNEY"
ENTITY = "LEAD#77"


def touch(index: int) -> Touch:
    return Touch(
        touch_id=f"activity:{index}", at=datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=index),
        kind="outgoing_call", channel="crm", source="phone", medium="outgoing_call", detail=f"Звонок {index}",
        extra={"label_source": "Телефон", "label_medium": "Исходящий звонок", "seq": str(index)},
    )  # fmt: skip


class Portal:
    """The field as the portal holds it; ``before_write`` runs just before a write lands (the other writer)."""

    calls = 0

    def __init__(self, fields: dict[int, str]) -> None:
        self.fields = fields
        self.before_write: Any = None

    def batch_capacity(self, methods_per_item: Any, budget: float | None = None) -> int:
        return 50

    def batch(self, commands: dict[str, Any], **_: Any) -> BatchResult:
        self.calls += 1
        hook, self.before_write = self.before_write, None
        if hook:
            hook()
        for _, params in commands.values():
            self.fields[params["id"]] = params["fields"][FIELD]
        return BatchResult(results=dict.fromkeys(commands, True), errors={}, totals={}, nexts={})


def test_an_older_render_landing_last_is_written_again(stack):
    journeys = store()
    fields: dict[int, str] = {}
    zone = ZoneInfo("Europe/Moscow")
    writer_a = Projector(Portal(fields), journeys, FIELD, zone)  # type: ignore[arg-type]
    writer_b = Projector(Portal(fields), journeys, FIELD, zone)  # type: ignore[arg-type]
    journeys.new_touches(ENTITY, [touch(1)])
    journeys.bump_version(ENTITY)

    def writer_b_runs_meanwhile() -> None:
        journeys.new_touches(ENTITY, [touch(2)])
        journeys.bump_version(ENTITY)
        writer_b.project([ENTITY])

    writer_a.bitrix.before_write = writer_b_runs_meanwhile  # A's text (one touch) lands after B's (two)
    writer_a.project([ENTITY])
    assert fields[77].splitlines()[-1].endswith("Звонок 2"), fields[77]
    assert len(fields[77].splitlines()) == 2
