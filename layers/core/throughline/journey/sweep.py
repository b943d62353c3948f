"""Reconciliation: what lost outbound webhooks would have added. Bitrix24 never retries an event, so on a schedule we
read the leads, deals and contacts changed since the last sweep (``DATE_MODIFY``) and the activities created since
(``>ID``), with fast scans (``>ID`` windows, ``order ID``, ``start=-1``) packed into ``batch`` calls, and hand them
to the event writer as if their events had arrived. Touch ids come from the CRM (activity id, stage-history id), so a
sweep after a complete event stream adds nothing: it costs its scan and one stage-history read per changed record.

The window is on the portal's own clock, never ours: the cursor is the newest ``DATE_MODIFY`` the sweep has read,
kept as the portal wrote it (with its offset), and the next window starts a little before it, in that same offset
(a portal may read a filter's offset its own way, b24-rest-docs#215). The first sweep starts a day before the
portal's newest change. A portal whose clock (or zone) is far from ours therefore loses nothing.

Also the person index's seed (``python -m throughline journey-index``): every lead's and contact's phones and e-mails.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from throughline.bitrix24 import Bitrix24Client
from throughline.journey.events import CrmEvent
from throughline.observability import logger
from throughline.writer.crm_events import ACTIVITY, CONTACT, DEAL, LEAD, SWEEP_TS, CrmEventWriter, _entity

CURSOR = "#SWEEP"
OVERLAP = timedelta(minutes=5)  # re-read a little before the cursor: clocks and commits are not instantaneous
SCANNED = {LEAD: "crm.lead.list", DEAL: "crm.deal.list", CONTACT: "crm.contact.list", ACTIVITY: "crm.activity.list"}
SELECT = {
    LEAD: ["*", "UF_*", "PHONE", "EMAIL"],
    DEAL: ["*", "UF_*"],
    CONTACT: ["ID", "DATE_MODIFY", "PHONE", "EMAIL"],
    ACTIVITY: ["*"],
}
PAGE = 50
ENTITIES_PER_HANDLE = 40  # each changed lead or deal adds a stage-history command to a batch of at most 50


@dataclass
class SweepResult:
    scanned: dict[str, int]
    touches_added: int
    rest_calls: int


def sweep(writer: CrmEventWriter, *, since: datetime | None = None) -> SweepResult:
    """Run one sweep from the stored cursor (or ``since``); moves the cursor on success."""
    store, bitrix = writer.store, writer.bitrix
    calls_before, denied_before = bitrix.calls, bitrix.access_denied
    cursor = store.metas([CURSOR]).get(CURSOR) or {}
    modified_since = since or _parse(cursor.get("modified_since"))
    if modified_since is None:
        newest = portal_newest_change(bitrix)
        modified_since = newest - timedelta(days=1) if newest else None  # None: an empty portal, read it all
    after_activity = int(cursor.get("activity_id") or 0)
    swept_at = datetime.now(UTC)  # our clock: only the time passed between two sweeps is read from it
    scanned = dict.fromkeys(SCANNED, 0)
    added, newest_seen, max_activity = _sweep_window(writer, modified_since, after_activity, scanned)
    portal_now = _parse(bitrix.portal_time)
    if modified_since is not None and portal_now is not None and portal_now + OVERLAP < modified_since:
        # The portal's clock went back (set right after running ahead): what changed since carries DATE_MODIFY
        # values before the cursor. Read again from where the portal's clock stood at the last sweep: its «now» less
        # the time that passed on ours.
        last = _parse(cursor.get("swept_at"))
        passed = max(swept_at - last, timedelta(0)) if last else timedelta(days=1)
        logger.warning("the portal's clock went back: the sweep reads again from its present",
                       extra={"cursor": _datetime(modified_since), "portal_now": _datetime(portal_now)})  # fmt: skip
        more, newest_seen, max_activity = _sweep_window(writer, portal_now - passed, max_activity, scanned)
        added += more
    # The newest change read, as the portal wrote it, but never past the portal's present (records its clock dated
    # ahead, before it was set right); the next window opens OVERLAP before it.
    if newest_seen is not None and portal_now is not None and newest_seen > portal_now:
        newest_seen = portal_now
    cursor_update: dict[str, Any] = {"activity_id": max_activity, "swept_at": swept_at.isoformat()}
    if newest_seen is not None:
        cursor_update["modified_since"] = _datetime(newest_seen)
    store.put_meta(CURSOR, cursor_update)
    store.count_access_denied(bitrix.access_denied - denied_before)  # for the report's data quality
    return SweepResult(scanned, added, bitrix.calls - calls_before)


def _sweep_window(
    writer: CrmEventWriter, modified_since: datetime | None, after_activity: int, scanned: dict[str, int]
) -> tuple[int, datetime | None, int]:
    """Hand the writer every lead, deal and contact changed since ``modified_since`` (less OVERLAP) and every
    activity after ``after_activity``; returns the touches added, the newest DATE_MODIFY read (``modified_since``
    when none is newer) and the newest activity id read."""
    window = {">=DATE_MODIFY": _datetime(modified_since - OVERLAP)} if modified_since else {}
    filters = {
        LEAD: window,
        DEAL: window,
        CONTACT: window,
        # The first sweep starts a day back for activities too (a portal may hold millions), then follows their ids.
        ACTIVITY: {} if after_activity or not window else {">=CREATED": window[">=DATE_MODIFY"]},
    }
    starts = {LEAD: 0, DEAL: 0, CONTACT: 0, ACTIVITY: after_activity}
    added = 0
    max_activity = after_activity
    newest_seen = modified_since
    for rows_by_kind in scan(writer.bitrix, filters, starts):
        records: dict[tuple[str, int], dict[str, Any]] = {}
        events: list[CrmEvent] = []
        for kind, rows in rows_by_kind.items():
            scanned[kind] += len(rows)
            for row in rows:
                id_ = int(row["ID"])
                records[(kind, id_)] = row
                events.append(CrmEvent(f"ONCRM{kind.upper()}UPDATE", kind, id_, ts=SWEEP_TS))
                if kind == ACTIVITY:
                    max_activity = max(max_activity, id_)
                else:
                    modified = _parse(row.get("DATE_MODIFY"))
                    if modified is not None and (newest_seen is None or modified > newest_seen):
                        newest_seen = modified
        for start in range(0, len(events), ENTITIES_PER_HANDLE):
            part = events[start : start + ENTITIES_PER_HANDLE]
            wanted = {(event.entity, event.entity_id) for event in part}
            added += writer.handle(part, records={key: row for key, row in records.items() if key in wanted})
    return added, newest_seen, max_activity


def portal_newest_change(bitrix: Bitrix24Client) -> datetime | None:
    """The portal's newest ``DATE_MODIFY`` of a lead, deal or contact (one ``batch``): the portal's own «now» for a
    first sweep, whatever our clock says."""
    commands = {
        kind: (SCANNED[kind], {"order": {"DATE_MODIFY": "DESC"}, "select": ["ID", "DATE_MODIFY"], "start": -1})
        for kind in (LEAD, DEAL, CONTACT)
    }
    found = bitrix.batch(commands)
    for error in found.errors.values():
        raise error
    moments = [_parse((found.results.get(kind) or [{}])[0].get("DATE_MODIFY")) for kind in commands]
    return max((moment for moment in moments if moment is not None), default=None)


def scan(
    bitrix: Bitrix24Client, filters: dict[str, dict[str, Any]], starts: dict[str, int]
) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Pages of every kind at once: one ``batch`` per round holds the next ``>ID`` window of each unfinished scan."""
    last = dict(starts)
    open_kinds = list(filters)
    while open_kinds:
        commands = {
            kind: (
                SCANNED[kind],
                {
                    "filter": {**filters[kind], ">ID": last[kind]},
                    "order": {"ID": "ASC"},
                    "select": SELECT[kind],
                    "start": -1,
                },
            )
            for kind in open_kinds
        }
        found = bitrix.batch(commands)
        for error in found.errors.values():
            raise error
        page: dict[str, list[dict[str, Any]]] = {}
        for kind in list(open_kinds):
            rows = found.results.get(kind) or []
            page[kind] = rows
            if rows:
                last[kind] = int(rows[-1]["ID"])
            if len(rows) < PAGE:
                open_kinds.remove(kind)
        yield page


def seed_index(writer: CrmEventWriter, progress: Callable[[str], None] = print) -> dict[str, int]:
    """Index every lead's and contact's phones and e-mails (a full scan; safe to run again)."""
    counts = {LEAD: 0, CONTACT: 0}
    for page in scan(writer.bitrix, {LEAD: {}, CONTACT: {}}, {LEAD: 0, CONTACT: 0}):
        for kind, rows in page.items():
            for row in rows:
                keys = writer._contact_keys(row)
                if keys:
                    entity = _entity(kind, int(row["ID"]))
                    writer.store.index_put(keys, entity)
                    writer.store.put_meta(entity, {"index_keys": keys, "person_key": writer._person_key(row)})
            counts[kind] += len(rows)
        progress(f"indexed {counts[LEAD]} leads, {counts[CONTACT]} contacts")
    return counts


def _datetime(moment: datetime) -> str:
    """A filter value in the documented datetime form ``YYYY-MM-DDThh:mm:ss±hh:mm`` (api-reference/data-types.md),
    floored to the second (a time from our clock has microseconds a portal may not read)."""
    return moment.replace(microsecond=0).isoformat(timespec="seconds")


def _parse(value: Any) -> datetime | None:
    """A portal datetime (ISO 8601 with its offset); one without an offset is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value) if value and isinstance(value, str) else None
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed is not None and parsed.tzinfo is None else parsed
