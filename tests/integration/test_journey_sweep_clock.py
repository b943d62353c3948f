"""The sweep on the portal's own clock (issue 14): the portal's clock far from ours must lose nothing."""

from __future__ import annotations

from datetime import datetime

from throughline.adapters.journey_store import JourneyStore
from throughline.config import get_settings

PORTAL_NOW = datetime.fromisoformat("2026-10-01T10:00:00+03:00")  # months before any day this test runs


def set_clock(stack, moment: datetime) -> None:
    stack.sandbox.set_clock_offset((moment - datetime.now(moment.tzinfo)).total_seconds())


def lead_with_calls(stack, phone: str, day: int) -> int:
    lead = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок", "SOURCE_ID": "CALL",
                                                          "PHONE": [{"VALUE": phone}]}})  # fmt: skip
    for hour in (10, 11):
        start = f"2026-10-{day:02d}T{hour}:00:00+03:00"
        stack.sandbox.call("crm.activity.add", {"fields": {
            "OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "DIRECTION": 2, "SUBJECT": f"Звонок {hour}",
            "RESPONSIBLE_ID": 1, "START_TIME": start, "END_TIME": start, "COMPLETED": "Y",
            "COMMUNICATIONS": [{"VALUE": phone, "ENTITY_TYPE_ID": 1, "ENTITY_ID": lead}]}})  # fmt: skip
    stack.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    return lead


def calls_of(lead: int) -> int:
    touches = JourneyStore(get_settings().journey_table or "").journey(f"LEAD#{lead}")
    return sum(touch.kind == "outgoing_call" for touch in touches)


def test_the_sweep_reads_what_changed_by_the_portals_clock_when_it_is_months_behind_ours(make_stack) -> None:
    stack = make_stack()
    stack.sandbox.set_outbound_drop_rate(1.0)  # every event lost: only the sweep can find the touches
    set_clock(stack, PORTAL_NOW)
    first = lead_with_calls(stack, "+79990000001", 1)
    assert stack.invoke("journey_sweep", {})["scanned"]["lead"] == 1
    assert stack.wait_until_idle(60)
    assert calls_of(first) == 2
    # A day later on the portal: the cursor is the portal's newest change, not our (months later) clock.
    set_clock(stack, datetime.fromisoformat("2026-10-02T10:00:00+03:00"))
    second = lead_with_calls(stack, "+79990000002", 2)
    result = stack.invoke("journey_sweep", {})
    assert stack.wait_until_idle(60)
    assert calls_of(second) == 2 and result["scanned"]["activity"] == 2  # activities follow their ids
    assert result["touches_added"] >= 3  # two calls and a stage move of the second lead
    cursor = JourneyStore(get_settings().journey_table or "").metas(["#SWEEP"])["#SWEEP"]
    assert cursor["modified_since"].startswith("2026-10-02T10:00") and cursor["modified_since"].endswith("+03:00")


def lead_moved(stack, phone: str) -> int:
    """A lead typed by a manager and moved a stage: no activity (which the sweep would follow by its id)."""
    lead = stack.sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок", "SOURCE_ID": "CALL",
                                                          "PHONE": [{"VALUE": phone}]}})  # fmt: skip
    stack.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    return lead


def lines_of(lead: int) -> list[str]:
    return [touch.kind for touch in JourneyStore(get_settings().journey_table or "").journey(f"LEAD#{lead}")]


def test_the_sweep_finds_changes_after_the_portals_clock_jumps_back(make_stack) -> None:
    """A portal whose clock ran a day ahead and is then set right: the cursor (its newest DATE_MODIFY, a day ahead)
    must not hide the changes made since, dated by the corrected clock."""
    stack = make_stack()
    stack.sandbox.set_outbound_drop_rate(1.0)  # every event lost: only the sweep can find the touches
    set_clock(stack, datetime.fromisoformat("2026-10-02T10:00:00+03:00"))  # a day ahead
    first = lead_moved(stack, "+79990000011")
    stack.invoke("journey_sweep", {})
    assert stack.wait_until_idle(60)
    assert len(lines_of(first)) == 2  # created, stage move
    set_clock(stack, PORTAL_NOW)  # the portal's clock is set right: a day back
    second = lead_moved(stack, "+79990000012")
    stack.invoke("journey_sweep", {})
    assert stack.wait_until_idle(60)
    assert len(lines_of(second)) == 2
    # The cursor follows the corrected clock, so the next change is found too.
    cursor = JourneyStore(get_settings().journey_table or "").metas(["#SWEEP"])["#SWEEP"]
    assert cursor["modified_since"].startswith("2026-10-01T10:0")
    third = lead_moved(stack, "+79990000013")
    stack.invoke("journey_sweep", {})
    assert stack.wait_until_idle(60)
    assert len(lines_of(third)) == 2
