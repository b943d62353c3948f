"""The user fields segments are written to, created by ``bitrix-setup`` (idempotent), and the default rules file.

Contacts: ``UF_CRM_TL_SEGMENT`` «Сегмент» (enumeration: one value per rule, ``XML_ID`` = the rule's code),
``UF_CRM_TL_RFM`` «RFM» (string, e.g. ``534``: recency, frequency, monetary scores 1–5) and
``UF_CRM_TL_SEGMENT_SINCE`` «Сегмент с» (date). Companies (B2B customers): the same three, and
``UF_CRM_TL_COMPANY_SIZE`` «Размер компании» (enumeration: small, medium, large). User fields belong to one entity
(``CRM_CONTACT``, ``CRM_COMPANY``), so the names repeat on both. ``crm.contact.userfield.add`` takes
``FIELD_NAME`` without the ``UF_CRM_`` prefix and ``LIST`` as ``[{VALUE, XML_ID, SORT}]``; a value is written as the
item's ``ID``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from throughline.bitrix24 import Bitrix24Client
from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML, SIZE_LABELS, SIZES, SegmentRules

SEGMENT_FIELD = "UF_CRM_TL_SEGMENT"
RFM_FIELD = "UF_CRM_TL_RFM"
SINCE_FIELD = "UF_CRM_TL_SEGMENT_SINCE"
SIZE_FIELD = "UF_CRM_TL_COMPANY_SIZE"
PLURAL = {"contact": "contacts", "company": "companies"}
LABELS = {
    SEGMENT_FIELD: {"ru": "Сегмент", "en": "Segment"},
    RFM_FIELD: {"ru": "RFM", "en": "RFM"},
    SINCE_FIELD: {"ru": "Сегмент с", "en": "Segment since"},
    SIZE_FIELD: {"ru": "Размер компании", "en": "Company size"},
}


class FieldsMissing(RuntimeError):
    """The portal lacks a segment field or one of its values: run ``python -m throughline bitrix-setup``."""


@dataclass(frozen=True)
class Enumerations:
    """The enumeration item ids of the segment and size fields, by code."""

    segments: dict[str, str]
    sizes: dict[str, str]
    # The company segment field's item ids; None on a portal bitrix-setup has not yet given the company fields (then
    # companies get their size only, and contacts are written as before).
    company_segments: dict[str, str] | None = None


def _field_spec(name: str, user_type: str, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = LABELS[name]
    fields: dict[str, Any] = {
        "FIELD_NAME": name.removeprefix("UF_CRM_"),
        "USER_TYPE_ID": user_type,
        "XML_ID": f"THROUGHLINE_{name.removeprefix('UF_CRM_TL_')}",
        "MULTIPLE": "N",
        "MANDATORY": "N",
        "SHOW_FILTER": "Y",
        "SHOW_IN_LIST": "Y",
        "EDIT_IN_LIST": "N",  # written every night: a manager's edit would be overwritten
        "EDIT_FORM_LABEL": labels,
        "LIST_COLUMN_LABEL": labels,
        "LIST_FILTER_LABEL": labels,
    }
    if items is not None:
        fields["LIST"] = items
    return fields


def _specs(rules: SegmentRules) -> list[tuple[str, str, dict[str, Any]]]:
    segment_items = [{"VALUE": rule.label, "XML_ID": rule.code, "SORT": (n + 1) * 10} for n, rule in
                     enumerate(rules.segments)]  # fmt: skip
    size_items = [{"VALUE": SIZE_LABELS[size], "XML_ID": size.upper(), "SORT": (n + 1) * 10} for n, size in
                  enumerate(SIZES)]  # fmt: skip
    return [
        ("contact", SEGMENT_FIELD, _field_spec(SEGMENT_FIELD, "enumeration", segment_items)),
        ("contact", RFM_FIELD, _field_spec(RFM_FIELD, "string")),
        ("contact", SINCE_FIELD, _field_spec(SINCE_FIELD, "date")),
        ("company", SIZE_FIELD, _field_spec(SIZE_FIELD, "enumeration", size_items)),
        ("company", SEGMENT_FIELD, _field_spec(SEGMENT_FIELD, "enumeration", segment_items)),
        ("company", RFM_FIELD, _field_spec(RFM_FIELD, "string")),
        ("company", SINCE_FIELD, _field_spec(SINCE_FIELD, "date")),
    ]


def ensure_segment_fields(bitrix: Bitrix24Client, rules: SegmentRules) -> list[str]:
    """Create the fields that are missing; lines for an operator (values a field lacks are named, not changed)."""
    lines = []
    for entity, name, spec in _specs(rules):
        existing = bitrix.call(f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": name}}).result or []
        if not existing:
            bitrix.call(f"crm.{entity}.userfield.add", {"fields": spec})
            lines.append(f"segment field {name} on {PLURAL[entity]}: created")
            continue
        lines.append(f"segment field {name} on {PLURAL[entity]}: already there ({existing[0].get('USER_TYPE_ID')})")
        wanted = {item["XML_ID"] for item in spec.get("LIST") or []}
        have = {str(item.get("XML_ID")) for item in existing[0].get("LIST") or []}
        if wanted - have:
            lines.append(f"  WARNING: its list lacks {sorted(wanted - have)}: add these values (XML_ID) in the portal")
    return lines


def enumerations(bitrix: Bitrix24Client) -> Enumerations:
    """The item ids of the segment and size values, read with one ``batch``."""
    found = bitrix.batch(
        {
            "segment": ("crm.contact.userfield.list", {"filter": {"FIELD_NAME": SEGMENT_FIELD}}),
            "size": ("crm.company.userfield.list", {"filter": {"FIELD_NAME": SIZE_FIELD}}),
            "company_segment": ("crm.company.userfield.list", {"filter": {"FIELD_NAME": SEGMENT_FIELD}}),
        }
    )
    maps = []
    for key, name in (("segment", SEGMENT_FIELD), ("size", SIZE_FIELD)):
        rows = found.get(key) or []
        if not rows:
            raise FieldsMissing(f"the portal has no {name}: run `python -m throughline bitrix-setup`")
        maps.append({str(item.get("XML_ID")): str(item.get("ID")) for item in rows[0].get("LIST") or []})
    company = found.get("company_segment") or []
    return Enumerations(
        segments=maps[0],
        sizes={size: maps[1][size.upper()] for size in SIZES if size.upper() in maps[1]},
        company_segments={str(item.get("XML_ID")): str(item.get("ID")) for item in company[0].get("LIST") or []}
        if company
        else None,
    )


def write_default_rules(objects: Any) -> str:
    """Write ``config/segments.yaml`` with the documented defaults unless it exists; a line for an operator."""
    if objects.get(CONFIG_KEY) is not None:
        return f"segment rules: {CONFIG_KEY} already there (kept as edited)"
    objects.put(CONFIG_KEY, DEFAULT_RULES_YAML.encode())
    return f"segment rules: {CONFIG_KEY} written with the documented defaults"


def employees_dictionary(bitrix: Bitrix24Client) -> list[Mapping[str, Any]]:
    """The portal's EMPLOYEES list (what ``company_size.employees`` maps), for the operator."""
    rows = bitrix.call("crm.status.list", {"filter": {"ENTITY_ID": "EMPLOYEES"}, "order": {"SORT": "ASC"}}).result
    return list(rows or [])


def setup_report(bitrix: Bitrix24Client, objects: Any | None) -> str:
    """``bitrix-setup``'s segments part: the rules file (when a data bucket is configured), the fields, the
    portal's EMPLOYEES values and how the rules map them."""
    from throughline.segments.rules import default_rules, load_rules

    lines = ["", "Segments:"]
    if objects is not None:
        lines.append(write_default_rules(objects))
        rules = load_rules(objects)
    else:
        lines.append(f"segment rules: no DATA_BUCKET, so {CONFIG_KEY} was not written; the defaults apply")
        rules = default_rules()
    lines += ensure_segment_fields(bitrix, rules)
    mapped = rules.company_size.employees
    lines.append("EMPLOYEES values in this portal → company size (company_size.employees in the rules):")
    for row in employees_dictionary(bitrix):
        status_id = str(row.get("STATUS_ID"))
        lines.append(f"  {status_id:<16} {row.get('NAME')!s:<16} → {mapped.get(status_id, 'not mapped: by REVENUE')}")
    return "\n".join(lines)
