"""Looking people up: the portal's CRM mode, the records earlier attempts already created (``ORIGIN_ID``), and each
person's leads and contacts by phone and e-mail (``crm.duplicate.findbycomm``, widened by our own person index)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from throughline.bitrix24 import BatchResult, Bitrix24Client, BitrixMethodNotFound
from throughline.capture.submissions import Submission
from throughline.observability import logger
from throughline.writer.leads.model import CLASSIC, ORIGINATOR_ID, SIMPLE, Plan, PortalState, entity_of, to_int

MODE_MAX_AGE_SECONDS = 600  # an administrator may switch the mode: look again now and then

PersonIndex = Callable[[Submission], tuple[set[int], set[int]]]


def read_crm_mode(bitrix: Bitrix24Client) -> int:
    """``crm.settings.mode.get``: 1 classic CRM (with leads), 2 simple CRM (no leads); classic when unanswered."""
    try:
        answer = to_int(bitrix.call("crm.settings.mode.get").result)
    except BitrixMethodNotFound:
        return CLASSIC
    return answer if answer in (CLASSIC, SIMPLE) else CLASSIC


def crm_mode(bitrix: Bitrix24Client, state: PortalState) -> int:
    """The portal's CRM mode, cached in ``state`` and re-checked now and then, as an administrator may switch it."""
    if state.mode is None or time.monotonic() - state.mode_checked_at > MODE_MAX_AGE_SECONDS:
        mode = read_crm_mode(bitrix)
        if mode != state.mode:
            logger.info("crm mode", extra={"mode": "simple" if mode == SIMPLE else "classic"})
        state.mode, state.mode_checked_at = mode, time.monotonic()
    return state.mode or CLASSIC


def look_up(bitrix: Bitrix24Client, plans: list[Plan], mode: int, person_index: PersonIndex | None) -> None:
    """One read batch for the round: which submissions were already written, and who each person is. Fills each
    plan's ``entity_id``/``done``, or its candidate leads and its contacts."""
    entity, _ = entity_of(mode)
    commands: dict[str, tuple[str, dict[str, Any]]] = {
        "origin": (
            f"crm.{entity}.list",
            {
                "filter": {
                    "ORIGINATOR_ID": ORIGINATOR_ID,
                    "@ORIGIN_ID": [plan.item.submission_id for plan in plans],
                },
                "select": ["ID", "ORIGIN_ID"],
            },
        )
    }
    comm_entity = {"entity_type": "CONTACT"} if mode == SIMPLE else {}
    for index, plan in enumerate(plans):
        item = plan.item.submission
        if item.phone:
            commands[f"phone{index}"] = (
                "crm.duplicate.findbycomm",
                {"type": "PHONE", "values": [item.phone], **comm_entity},
            )
        if item.email:
            commands[f"email{index}"] = (
                "crm.duplicate.findbycomm",
                {"type": "EMAIL", "values": [item.email], **comm_entity},
            )
    found = bitrix.batch(commands)
    if "origin" in found.errors:
        raise found.errors["origin"]
    created = {str(row["ORIGIN_ID"]): int(row["ID"]) for row in found.get("origin") or []}
    for index, plan in enumerate(plans):
        if plan.item.submission_id in created:
            plan.entity_id, plan.done = created[plan.item.submission_id], True
            continue
        leads, contacts = _matches(found, f"phone{index}", f"email{index}")
        if person_index is not None:
            indexed_leads, indexed_contacts = person_index(plan.item.submission)
            leads |= indexed_leads
            contacts |= indexed_contacts
        plan.candidates = leads if mode == CLASSIC else set()
        plan.contact_ids = contacts
        plan.contact_id = max(contacts) if contacts else None


def _matches(found: BatchResult, *keys: str) -> tuple[set[int], set[int]]:
    leads: set[int] = set()
    contacts: set[int] = set()
    for key in keys:
        if key in found.errors:
            raise found.errors[key]
        result = found.results.get(key)
        if isinstance(result, dict):  # an empty answer is [] (PHP)
            leads |= {int(value) for value in result.get("LEAD") or []}
            contacts |= {int(value) for value in result.get("CONTACT") or []}
    return leads, contacts
