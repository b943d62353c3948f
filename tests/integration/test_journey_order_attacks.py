"""A hostile reviewer's attacks on the journey's exactly-once promise: lost events made up by the sweep, stage moves
seen through another entity's event; each CRM change is one touch, whichever path saw it first."""

from __future__ import annotations

from collections import Counter

from tests.integration.test_journey_events import lines, live, manager_lead, settle, store  # noqa: F401


def stage_counts(kind: str, record_id: int) -> Counter:
    touches = store().journey(f"{kind.upper()}#{record_id}")
    return Counter(touch.extra.get("stage_id") for touch in touches if touch.medium == "stage")


def test_a_stage_move_the_sweep_restored_is_not_added_again_by_the_next_event(live):  # noqa: F811
    live.sandbox.set_clock_offset(0)  # the sweep reads by the portal's clock
    lead = manager_lead(live)
    settle(live)
    live.sandbox.set_outbound_drop_rate(1.0, seed=1)  # this move's event is lost
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    settle(live)
    live.sandbox.set_outbound_drop_rate(0.0)
    assert live.invoke("journey_sweep", {})["touches_added"] == 1
    settle(live)
    live.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "PROCESSED"}})
    settle(live)
    assert stage_counts("lead", lead) == {"IN_PROCESS": 1, "PROCESSED": 1}
    text = lines(live, "lead", lead)
    assert len(text) == 3, text
    assert live.invoke("journey_sweep", {})["touches_added"] == 0
