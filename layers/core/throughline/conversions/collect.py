"""What is sent: one conversion per won (or qualified) deal, read from the journey store, with its amount from the CRM.

The journey store knows when a deal was won (its first ``won`` stage touch: a deal won, reopened and won again
counts once) and which click and analytics ids the person arrived with (the form touches of the deal and of the lead
it came from carry ``ym_client_id``, ``yclid``, ``gclid``/``gbraid``/``wbraid`` and ``rb_clickid`` in ``extra``, as
``journey.touches`` records them). The amount and currency come from Bitrix24 (``crm.deal.list``, fifty deals a
page), whose deal also holds the client ids in the ``UF_CRM_TL_*`` fields the writer fills.

A qualified conversion is the first move of a lead or a deal into one of ``CONVERSION_QUALIFIED_STAGES``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from throughline.journey.lines import Touch

WON = "won"
QUALIFIED = "qualified"
KINDS = (WON, QUALIFIED)
# The ids a platform can join a conversion on, in the names the capture and the journey store use.
IDENTIFIER_KEYS = ("ym_client_id", "yclid", "gclid", "gbraid", "wbraid", "rb_clickid")
# The same ids in the deal's and lead's user fields (throughline.writer.leads.CLIENT_ID_FIELDS).
IDENTIFIER_FIELDS = {"UF_CRM_TL_YM_CLIENT_ID": "ym_client_id", "UF_CRM_TL_VK_CLICK_ID": "rb_clickid"}
TOUCHES_AFTER = "#~"  # touch sort keys sort after this (adapters.journey_store)
CHANGE_LOG_DAYS = 35  # the journey store's change log keeps this many days (adapters.journey_store)


@dataclass(frozen=True)
class Conversion:
    entity: str  # DEAL#<id> (or LEAD#<id> for a qualified lead)
    kind: str  # won | qualified
    at: datetime  # UTC
    amount: Decimal
    currency: str
    identifiers: dict[str, str] = field(default_factory=dict)
    # The contact's phones and e-mails as typed in the CRM, for platforms that take them hashed (Google). Never
    # stored, logged or written to the ledger.
    contacts: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # When the person last showed each id (the visit it came with): Metrica joins only recent visits.
    seen_at: dict[str, datetime] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return f"{self.kind}#{self.entity}"


class Store(Protocol):
    def changed(self, days: Iterable[date]) -> set[str]: ...

    def entity_items(self, entity: str) -> list[dict[str, Any]]: ...

    def scan(self, segment: int = 0, total_segments: int = 1) -> Iterable[dict[str, Any]]: ...


class Crm(Protocol):
    def list_all(self, method: str, params: dict[str, Any] | None = None, *, id_key: str = "ID") -> Iterator[dict]: ...


def candidate_entities(
    store: Store, changed_since: date, today: date
) -> tuple[set[str], dict[str, list[dict[str, Any]]] | None]:
    """Deals and leads that may hold a conversion: those the change log saw change since ``changed_since`` (a stage
    move is written on or after the day it happened; the log's days are UTC, a local day may start the UTC day
    before), or, when that is before the change log's memory, every entity of the store — then with their items,
    read by the one scan (a back-fill needs no query per entity)."""
    first = changed_since - timedelta(days=1)
    if first < today - timedelta(days=CHANGE_LOG_DAYS - 1):
        items: dict[str, list[dict[str, Any]]] = {}
        for item in store.scan():
            if str(item["entity"]).startswith(("DEAL#", "LEAD#")):
                items.setdefault(str(item["entity"]), []).append(item)
        return set(items), items
    days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
    return {entity for entity in store.changed(days) if entity.startswith(("DEAL#", "LEAD#"))}, None


def collect_conversions(
    store: Store,
    crm: Crm | None,
    *,
    date_from: date,
    date_to: date,
    zone: ZoneInfo,
    today: date,
    qualified_stages: tuple[str, ...] = (),
    currency: str = "RUB",
    also: Iterable[str] = (),
    changed_since: date | None = None,
) -> list[Conversion]:
    """Every conversion whose time falls in ``date_from`` … ``date_to`` (days in ``zone``), oldest first, among the
    entities changed since ``changed_since`` (default ``date_from``: the hourly run looks at recent changes, whatever
    the conversion's date); ``also``: entities to look at beyond those (the ledger's failed conversions)."""
    found: list[tuple[str, str, datetime, dict[str, tuple[str, datetime]], str | None]] = []
    candidates, scanned = candidate_entities(store, changed_since or date_from, today)
    items_of: dict[str, list[dict[str, Any]]] = dict(scanned or {})

    def items(entity: str) -> list[dict[str, Any]]:
        if entity not in items_of:
            items_of[entity] = [] if scanned is not None else store.entity_items(entity)
        return items_of[entity]

    for entity in sorted(candidates | set(also)):
        rows = items(entity)
        meta = next((row for row in rows if row.get("touch") == "#meta"), {})
        if meta.get("deleted") or meta.get("merged_into"):
            continue
        touches = sorted(
            (Touch.from_item(row) for row in rows if str(row.get("touch", "")) > TOUCHES_AFTER),
            key=lambda touch: touch.at,
        )
        events: list[tuple[str, datetime]] = []
        if entity.startswith("DEAL#"):
            won = next((touch for touch in touches if touch.kind == "won"), None)
            if won:
                events.append((WON, won.at))
        if qualified_stages:
            qualified = next(
                (t for t in touches if t.kind in ("stage", "won") and t.extra.get("stage_id") in qualified_stages),
                None,
            )
            if qualified:
                events.append((QUALIFIED, qualified.at))
        for kind, at in events:
            if not date_from <= at.astimezone(zone).date() <= date_to:
                continue
            lead = f"LEAD#{int(meta['lead_id'])}" if meta.get("lead_id") else None
            history = touches + (
                [Touch.from_item(r) for r in items(lead) if str(r.get("touch", "")) > TOUCHES_AFTER] if lead else []
            )
            found.append((entity, kind, at.astimezone(UTC), identifiers_seen(history, at), lead))
    amounts, contact_of = _amounts(crm, [entity for entity, *_ in found], currency)
    contacts = _contacts(crm, contact_of)
    conversions = []
    for entity, kind, at, seen, _lead in found:
        if crm is not None and entity.startswith("DEAL#") and entity not in amounts:
            continue  # the deal is gone from the CRM (deleted, or merged away): nothing to tell the platforms
        amount, code, fields = amounts.get(entity, (Decimal(0), currency, {}))
        identifiers = {key: value for key, (value, _) in seen.items()}
        people = contacts.get(entity, ())
        conversions.append(Conversion(entity, kind, at, amount, code, {**fields, **identifiers}, people,
                                      {key: when for key, (_, when) in seen.items()}))  # fmt: skip
    return sorted(conversions, key=lambda conversion: (conversion.at, conversion.entity, conversion.kind))


def identifiers_before(touches: Iterable[Touch], at: datetime) -> dict[str, str]:
    """The ids the person carried up to the conversion: for each, the latest value seen (the click that led to it)."""
    return {key: value for key, (value, _) in identifiers_seen(touches, at).items()}


def identifiers_seen(touches: Iterable[Touch], at: datetime) -> dict[str, tuple[str, datetime]]:
    """Each id the person carried up to the conversion → (its latest value, when that touch was)."""
    found: dict[str, tuple[str, datetime]] = {}
    for touch in sorted(touches, key=lambda touch: touch.at):
        if touch.at > at:
            break
        for key in IDENTIFIER_KEYS:
            value = str(touch.extra.get(key) or "").strip()
            if value:
                found[key] = (value, touch.at)
    return found


def _amounts(
    crm: Crm | None, entities: list[str], currency: str
) -> tuple[dict[str, tuple[Decimal, str, dict[str, str]]], dict[str, int]]:
    """Deal → (OPPORTUNITY, CURRENCY_ID, ids in its user fields), and deal → its contact; leads have no amount (0)."""
    deals = sorted({int(entity.split("#")[1]) for entity in entities if entity.startswith("DEAL#")})
    found: dict[str, tuple[Decimal, str, dict[str, str]]] = {}
    contact_of: dict[str, int] = {}
    if crm is None or not deals:
        return found, contact_of
    for start in range(0, len(deals), 50):
        params = {
            "filter": {"@ID": deals[start : start + 50]},
            "select": ["ID", "OPPORTUNITY", "CURRENCY_ID", "CONTACT_ID", *IDENTIFIER_FIELDS],
        }
        for row in crm.list_all("crm.deal.list", params):
            try:
                amount = Decimal(str(row.get("OPPORTUNITY") or "0"))
            except InvalidOperation:
                amount = Decimal(0)
            fields = {key: str(row[name]).strip() for name, key in IDENTIFIER_FIELDS.items() if row.get(name)}
            found[f"DEAL#{int(row['ID'])}"] = (amount, str(row.get("CURRENCY_ID") or currency), fields)
            if str(row.get("CONTACT_ID") or "0").isdigit() and int(row.get("CONTACT_ID") or 0):
                contact_of[f"DEAL#{int(row['ID'])}"] = int(row["CONTACT_ID"])
    return found, contact_of


def _contacts(crm: Crm | None, contact_of: dict[str, int]) -> dict[str, tuple[str, ...]]:
    """Deal → its contact's phones and e-mails (crm.contact.list, fifty a page)."""
    ids = sorted(set(contact_of.values()))
    if crm is None or not ids:
        return {}
    values: dict[int, tuple[str, ...]] = {}
    for start in range(0, len(ids), 50):
        params = {"filter": {"@ID": ids[start : start + 50]}, "select": ["ID", "PHONE", "EMAIL"]}
        for row in crm.list_all("crm.contact.list", params):
            entries = [*(row.get("PHONE") or []), *(row.get("EMAIL") or [])]
            values[int(row["ID"])] = tuple(
                str(entry.get("VALUE")).strip() for entry in entries if isinstance(entry, dict) and entry.get("VALUE")
            )
    return {deal: values.get(contact, ()) for deal, contact in contact_of.items()}


def local_day(at: datetime, zone: ZoneInfo) -> date:
    return at.astimezone(zone).date()


Clock = Callable[[], datetime]
