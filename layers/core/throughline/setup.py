"""Portal setup: create the journey user field on leads and deals (idempotent), show the dictionaries an operator
needs for the configuration maps (sources for BITRIX24_SOURCE_MAP, users for BITRIX24_RESPONSIBLE_MAP), and the
portal's CRM mode (classic with leads, or simple: every lead converted at once into a contact and a deal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from throughline.bitrix24 import Bitrix24Client, BitrixError
from throughline.sources import CHANNEL_LABELS, Source
from throughline.writer.leads import CLIENT_ID_FIELDS, LeadRules

JOURNEY_LABELS = {"ru": "Путь клиента", "en": "Customer journey", "de": "Customer Journey"}
JOURNEY_ROWS = 8  # a multi-line text box in the card
ENTITIES = ("lead", "deal")


@dataclass(frozen=True)
class FieldStatus:
    entity: str
    field_name: str
    created: bool
    user_type: str


def ensure_journey_fields(bitrix: Bitrix24Client, field_name: str) -> list[FieldStatus]:
    """Create ``field_name`` (``UF_CRM_…``) as a multi-line string field on leads and deals where it is missing."""
    return _ensure_string_field(bitrix, field_name, "THROUGHLINE_JOURNEY", JOURNEY_LABELS, JOURNEY_ROWS)


def ensure_client_id_fields(bitrix: Bitrix24Client) -> list[FieldStatus]:
    """Create the analytics client id fields (Metrica, Google Analytics, VK Ads' rb_clickid) on leads and deals."""
    statuses = []
    for key, (field_name, labels) in CLIENT_ID_FIELDS.items():
        statuses += _ensure_string_field(bitrix, field_name, f"THROUGHLINE_{key.upper()}", labels, 1)
    return statuses


def _ensure_string_field(
    bitrix: Bitrix24Client, field_name: str, xml_id: str, labels: dict[str, str], rows: int
) -> list[FieldStatus]:
    statuses = []
    for entity in ENTITIES:
        existing = bitrix.call(f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": field_name}}).result or []
        if existing:
            statuses.append(FieldStatus(entity, field_name, False, str(existing[0].get("USER_TYPE_ID"))))
            continue
        bitrix.call(
            f"crm.{entity}.userfield.add",
            {
                "fields": {
                    "FIELD_NAME": field_name.removeprefix("UF_CRM_"),  # Bitrix24 adds the prefix itself
                    "USER_TYPE_ID": "string",
                    "XML_ID": xml_id,
                    "MULTIPLE": "N",
                    "MANDATORY": "N",
                    "SHOW_FILTER": "Y",
                    "SHOW_IN_LIST": "Y",
                    "EDIT_IN_LIST": "N",
                    "IS_SEARCHABLE": "Y",
                    "EDIT_FORM_LABEL": labels,
                    "LIST_COLUMN_LABEL": labels,
                    "LIST_FILTER_LABEL": labels,
                    "SETTINGS": {"ROWS": rows},
                }
            },
        )
        statuses.append(FieldStatus(entity, field_name, True, "string"))
    return statuses


def source_dictionary(bitrix: Bitrix24Client) -> list[dict[str, Any]]:
    """The portal's lead sources (``crm.status.list`` ENTITY_ID=SOURCE): map channels onto these STATUS_IDs."""
    rows = bitrix.call("crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}, "order": {"SORT": "ASC"}}).result
    return list(rows or [])


def active_users(bitrix: Bitrix24Client) -> list[dict[str, Any]]:
    """Every active user (``user.get`` pages by ``start``; it has no ``>ID`` scan)."""
    users: list[dict[str, Any]] = []
    start: int | None = 0
    while start is not None:
        page = bitrix.call("user.get", {"filter": {"ACTIVE": True}, "start": start})
        users += page.result or []
        start = page.next
    return users


CRM_MODES = {
    1: "classic (crm.settings.mode.get = 1): leads stay leads; Throughline writes leads",
    2: (
        "simple (crm.settings.mode.get = 2): no leads, each new lead is converted at once into a contact and a deal;"
        " Throughline writes deals and contacts"
    ),
}


NOT_ADMIN = (
    "WARNING: the webhook's user is not an administrator (user.admin = false). A webhook works with the rights of "
    "the employee who created it, so the leads, deals, contacts and activities that user may not see answer «Access "
    "denied»: their calls, e-mails and stage moves never reach the journey, the sweep does not see them, their "
    "«Путь клиента» is not written, and the ROI report's CRM scan misses them (the writer skips and counts them as "
    "RecordsAccessDenied). Create the inbound webhook as an administrator, or give that user read and write access "
    "to all CRM records."
)


def webhook_user_admin(bitrix: Bitrix24Client) -> str:
    """Whether the webhook's user is an administrator (``user.admin``, user-admin.md), and what is lost if not."""
    try:
        admin = bitrix.call("user.admin").result
    except BitrixError as error:
        return f"Webhook user: could not check administrator rights (user.admin: {error.code or error.description})"
    if admin is True or str(admin).lower() in ("true", "1", "y"):
        return "Webhook user: administrator (user.admin = true): every CRM record is readable"
    return NOT_ADMIN


ALERT_SCOPES = {
    "im": "notifications and chat messages (alerts, digests)",
    "task": "tasks (hot leads, repeat requests)",
}


def webhook_scopes(bitrix: Bitrix24Client) -> str:
    """Which of the alerts' scopes (``im``, ``task``) the webhook lacks (``scope``, common/system/scope.md)."""
    try:
        granted = {str(item) for item in bitrix.call("scope").result or []}
    except BitrixError as error:
        return f"Webhook scopes: could not check (scope: {error.code or error.description})"
    missing = [f"{name} — {why}" for name, why in ALERT_SCOPES.items() if name not in granted]
    if not missing:
        return "Webhook scopes: im and task granted: alerts, digests and tasks can be delivered in Bitrix24"
    return (
        "WARNING: the webhook lacks scope(s) " + "; ".join(missing) + ". Edit the inbound webhook in Bitrix24 "
        "(Developer resources → Other → Inbound webhook) and tick them; until then alerts fall back to Telegram or "
        "e-mail where configured."
    )


def crm_mode(bitrix: Bitrix24Client) -> str:
    """The portal's CRM mode as a line for an operator (``crm.settings.mode.get``: 1 classic, 2 simple)."""
    value = bitrix.call("crm.settings.mode.get").result
    return CRM_MODES.get(value if isinstance(value, int) else -1, f"unknown ({value!r})")


def channel_mapping(rules: LeadRules, known_source_ids: set[str]) -> list[tuple[str, str, str, bool]]:
    """(channel code, label, SOURCE_ID used for an organic visit, whether that id exists in the portal)."""
    rows = []
    for code, label in CHANNEL_LABELS.items():
        source_id = rules.source_id(Source(code, "", ""))
        rows.append((code, label, source_id, source_id in known_source_ids))
    return rows


def report(bitrix: Bitrix24Client, rules: LeadRules) -> str:
    """Run the setup and describe the result for an operator."""
    lines = []
    for status in ensure_journey_fields(bitrix, rules.journey_field):
        action = "created" if status.created else f"already there ({status.user_type})"
        lines.append(f"journey field {status.field_name} on {status.entity}s: {action}")
    for status in ensure_client_id_fields(bitrix):
        action = "created" if status.created else f"already there ({status.user_type})"
        lines.append(f"client id field {status.field_name} on {status.entity}s: {action}")
    sources = source_dictionary(bitrix)
    known = {str(row.get("STATUS_ID")) for row in sources}
    lines += ["", "Lead sources in this portal (SOURCE_ID — name):"]
    lines += [f"  {row.get('STATUS_ID'):<24} {row.get('NAME')}" for row in sources]
    lines += ["", "Channel → SOURCE_ID now (BITRIX24_SOURCE_MAP changes it; paid visits use the 'paid' key):"]
    for code, label, source_id, exists in channel_mapping(rules, known):
        warning = "" if exists else "   ← not in this portal's dictionary!"
        lines.append(f"  {code:<16} {label:<22} {source_id}{warning}")
    paid_id = rules.source_id(Source("paid_search", "", "", paid=True))
    lines.append(f"  {'paid':<16} {'(any paid click)':<22} {paid_id}{'' if paid_id in known else '   ← missing!'}")
    lines += ["", "Active users (ids for BITRIX24_RESPONSIBLE_MAP / BITRIX24_DEFAULT_RESPONSIBLE_ID):"]
    for user in active_users(bitrix):
        name = " ".join(part for part in (user.get("NAME"), user.get("LAST_NAME")) if part)
        lines.append(f"  {user.get('ID'):<6} {name}")
    lines += ["", webhook_user_admin(bitrix)]
    lines += ["", webhook_scopes(bitrix)]
    lines += ["", f"CRM mode: {crm_mode(bitrix)}"]
    return "\n".join(lines)
