"""Reading open records: of the leads (classic CRM) or, through the contacts, the deals (simple CRM) that the
look-up found, the newest still in progress becomes the record a repeat request is appended to."""

from __future__ import annotations

from typing import Any

from throughline.bitrix24 import Bitrix24Client
from throughline.writer.leads.model import SIMPLE, Plan, to_int

LIST_PAGE = 50  # ids per crm.*.list filter: one page of answers


def read_open(bitrix: Bitrix24Client, plans: list[Plan], mode: int, journey_field: str) -> None:
    """Sets ``entity_id`` and ``record`` (its journey field, phones and e-mails) of each plan whose person has an
    open lead (deal); plans already done are left alone."""
    if mode == SIMPLE:
        _read_open_deals(bitrix, plans, journey_field)
        return
    candidates = sorted({lead for plan in plans if not plan.done for lead in plan.candidates})
    leads = _read_leads(bitrix, candidates, ["STATUS_ID", "STATUS_SEMANTIC_ID", "PHONE", "EMAIL", journey_field])
    for plan in plans:
        if plan.done:
            continue
        open_leads = [lead for lead in plan.candidates if is_open(leads.get(lead))]
        if open_leads:
            plan.entity_id = max(open_leads)
            plan.record = leads[plan.entity_id]


def _read_open_deals(bitrix: Bitrix24Client, plans: list[Plan], journey_field: str) -> None:
    """Simple mode: each person's open deal (``STAGE_SEMANTIC_ID`` P) through their contacts."""
    contacts = sorted({contact for plan in plans if not plan.done for contact in plan.contact_ids})
    if not contacts:
        return
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    for start in range(0, len(contacts), LIST_PAGE):
        chunk = contacts[start : start + LIST_PAGE]
        commands[f"deals{start}"] = (
            "crm.deal.list",
            {
                "filter": {"@CONTACT_ID": chunk, "STAGE_SEMANTIC_ID": "P"},
                "select": ["ID", "CONTACT_ID", "STAGE_SEMANTIC_ID", journey_field],
            },
        )
        commands[f"contacts{start}"] = (
            "crm.contact.list",
            {"filter": {"@ID": chunk}, "select": ["ID", "PHONE", "EMAIL"]},
        )
    found = bitrix.batch(commands)
    deals: dict[int, dict[str, Any]] = {}
    people: dict[int, dict[str, Any]] = {}
    for key in commands:
        rows = found.get(key) or []
        target = deals if key.startswith("deals") else people
        for row in rows:
            target[int(row["ID"])] = row
    for plan in plans:
        if plan.done:
            continue
        open_deals = [
            deal_id
            for deal_id, deal in deals.items()
            if to_int(deal.get("CONTACT_ID")) in plan.contact_ids and deal.get("STAGE_SEMANTIC_ID", "P") == "P"
        ]
        if open_deals:
            plan.entity_id = max(open_deals)
            deal = deals[plan.entity_id]
            plan.contact_id = to_int(deal.get("CONTACT_ID")) or plan.contact_id
            contact = people.get(plan.contact_id or 0, {})
            plan.record = {**deal, "PHONE": contact.get("PHONE"), "EMAIL": contact.get("EMAIL")}


def _read_leads(bitrix: Bitrix24Client, ids: list[int], select: list[str]) -> dict[int, dict[str, Any]]:
    if not ids:
        return {}
    select = ["ID", *select]
    commands = {
        f"leads{start}": ("crm.lead.list", {"filter": {"@ID": ids[start : start + LIST_PAGE]}, "select": select})
        for start in range(0, len(ids), LIST_PAGE)
    }
    found = bitrix.batch(commands)
    rows: dict[int, dict[str, Any]] = {}
    for key in commands:
        for row in found.get(key) or []:
            rows[int(row["ID"])] = row
    return rows


def is_open(lead: dict[str, Any] | None) -> bool:
    if not lead:
        return False
    semantic = lead.get("STATUS_SEMANTIC_ID")
    if semantic:
        return semantic == "P"
    return lead.get("STATUS_ID") not in ("CONVERTED", "JUNK")
