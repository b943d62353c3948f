"""Our own segment writes come back as ONCRMCONTACTUPDATE events: they add nothing to any journey (the writer compares
a contact with its last seen phones and e-mails; user fields are not touches) and re-render no journey field."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24.client import Bitrix24Client
from throughline.config import get_settings
from throughline.segments.fields import SEGMENT_FIELD, ensure_segment_fields, enumerations
from throughline.segments.rules import default_rules
from throughline.segments.writeback import Progress, execute

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"
PORTAL_START = datetime(2026, 10, 25, 12, 0, tzinfo=ZoneInfo("Europe/Moscow"))


def settle(stack) -> None:
    for _ in range(3):
        stack.sandbox.wait_for_outbound(10)
        assert stack.wait_until_idle(120)


def test_segment_writes_on_contacts_add_nothing_to_journeys(make_stack):
    live = make_stack()
    live.sandbox.set_clock(PORTAL_START)
    lead = live.sandbox.call(
        "crm.lead.add",
        {
            "fields": {
                "TITLE": "Входящий звонок",
                "SOURCE_ID": "CALL",
                "PHONE": [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}],
            }
        },
    )
    settle(live)
    deal = live.sandbox.convert_lead(lead)
    settle(live)
    contact = int(next(row for row in live.sandbox.entities("deal") if int(row["ID"]) == deal)["CONTACT_ID"])
    store = JourneyStore(get_settings().journey_table or "")
    keys = [f"LEAD#{lead}", f"DEAL#{deal}", f"CONTACT#{contact}"]
    before = store.versions(keys)
    journeys = {kind: next(row for row in live.sandbox.entities(kind) if int(row["ID"]) == id_)[JOURNEY]
                for kind, id_ in (("lead", lead), ("deal", deal))}  # fmt: skip
    assert journeys["deal"]

    client = Bitrix24Client(live.sandbox.webhook_url)
    ensure_segment_fields(client, default_rules())
    ids = enumerations(client)
    plan = [["contact", contact, {SEGMENT_FIELD: ids.segments["VIP"], "UF_CRM_TL_RFM": "555",
                                  "UF_CRM_TL_SEGMENT_SINCE": "2026-10-25"}]]  # fmt: skip
    live.sandbox.reset_stats()
    assert execute(client, plan, Progress(0), save=lambda progress: None)
    settle(live)
    stats = live.sandbox.stats()
    # The update event was delivered and the writer read the contact back (so the test sees it processed).
    assert stats["outbound"]["sent"] >= 1 and stats["batch_commands"].get("crm.contact.get", 0) >= 1
    contact_row = next(row for row in live.sandbox.entities("contact") if int(row["ID"]) == contact)
    assert str(contact_row[SEGMENT_FIELD]) == ids.segments["VIP"]
    assert store.versions(keys) == before  # no touch, no re-render
    for kind, id_ in (("lead", lead), ("deal", deal)):
        assert next(row for row in live.sandbox.entities(kind) if int(row["ID"]) == id_)[JOURNEY] == journeys[kind]
    # The only REST write was ours: the writer wrote no journey field.
    writes = {method: n for method, n in {**stats["by_method"], **stats["batch_commands"]}.items()
              if method.endswith((".update", ".add"))}  # fmt: skip
    assert writes == {"crm.contact.update": 1}
