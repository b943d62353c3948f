"""Bitrix24 events → journey touches: what a call, an e-mail, a meeting, a stage move or a new deal adds to a journey.

An event carries only an id, so a batch of events is answered with one ``batch`` REST call that reads every entity
(``crm.lead.get``, ``crm.deal.get``, ``crm.contact.get``, ``crm.activity.get``), plus a second one only when an
activity belongs to a contact or a deal's person must be looked up. Each entity is then compared with its last seen
state in the journey store (``#meta``): a new lead typed by a manager gets its first line, a stage that changed gets
a stage line, an unchanged one (our own field write coming back, a manager's edit of a phone) adds nothing. Touch ids
are derived from the CRM (activity id; stage + move time), so a duplicate event, a replay or the sweep adds nothing
twice. The changed entities' fields are then re-rendered from the store (``journey.projection``) in one more batch.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import LEASE_SECONDS, Busy, Locks
from throughline.bitrix24 import BatchResult, Bitrix24Client, BitrixAccessDenied, BitrixError
from throughline.contacts import InvalidContact, normalize_email, normalize_phone
from throughline.journey.events import CrmEvent
from throughline.journey.lines import Touch
from throughline.journey.projection import Projector
from throughline.observability import logger
from throughline.person_keys import first_contact, person_key
from throughline.source_ids import SourceIds, channel_label
from throughline.sources import DIRECT, EMAIL, MESSENGER, OFFLINE, PAID_SEARCH, REFERRAL, classify
from throughline.text import storable_values
from throughline.writer.leads import ORIGINATOR_ID, Outcome

LEAD, DEAL, CONTACT, COMPANY, ACTIVITY = "lead", "deal", "contact", "company", "activity"
OWNER_TYPES = {1: LEAD, 2: DEAL, 3: CONTACT, 4: COMPANY}  # CRM object type ids (crm/data-types.md)
CRM = "crm"  # the channel of sales-side touches (a manager's call, a stage move): not a marketing channel
DICTIONARY_TTL_SECONDS = 600
STAGE_FIELDS = {LEAD: ("STATUS_ID", "STATUS_SEMANTIC_ID"), DEAL: ("STAGE_ID", "STAGE_SEMANTIC_ID")}
HISTORY_TYPES = {LEAD: 1, DEAL: 2}  # crm.stagehistory.list entityTypeId
SWEEP_TS = "sweep"
LEASE_WAIT_SECONDS = 3.0  # how long a commit waits for the form writer's lease before its events go back
LEASE_POLL_SECONDS = 0.2  # the ``ts`` of events the sweep makes up for records it read

# The medium a CRM-typed record's SOURCE_ID line carries (its channel comes from ``SourceIds``); a source the
# operator mapped to a channel with BITRIX24_SOURCE_MAP takes that channel's usual medium.
SOURCE_MEDIUMS = {"CALL": "call", "CALLBACK": "call", "EMAIL": "email", "ADVERTISING": "cpc"}
CHANNEL_MEDIUMS = {OFFLINE: "offline", EMAIL: "email", PAID_SEARCH: "cpc", REFERRAL: "referral", DIRECT: "(none)"}

# Activity TYPE_ID (crm_enum_activitytype): 1 meeting, 2 call, 3 task, 4 e-mail, 6 provider (chat, to-do…).
# DIRECTION (crm_enum_activitydirection): 1 incoming, 2 outgoing.
INCOMING, OUTGOING = "1", "2"
ANSWERED = "200"  # voximplant.statistic.get CALL_FAILED_CODE of a call that was answered
REPEAT = "Повторное обращение"
CALL_LABELS = {
    "missed_call": "Пропущенный звонок",
    "incoming_call": "Входящий звонок",
    "outgoing_call": "Исходящий звонок",
}


_DICTIONARY: dict[str, dict[str, str]] = {}  # crm.status.list ENTITY_ID → STATUS_ID → NAME
_DICTIONARY_AT = [0.0]
_DICTIONARY_TRIED: dict[str, float] = {}  # ENTITY_ID → when a missing stage last made us read it again


@dataclass
class _Batch:
    """What one batch of events found and decided."""

    records: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    metas: dict[str, dict[str, Any]] = field(default_factory=dict)
    touches: dict[str, list[Touch]] = field(default_factory=dict)
    meta_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    fields: dict[str, str | None] = field(default_factory=dict)  # journey field values as read
    # Stage-bearing entities whose history could not be read (scope, an old portal): their stage is compared with
    # the last seen one instead. Entities seen only in passing (an activity's owner, a contact's deals) are in
    # neither: their own event or the sweep reads their stage moves.
    no_history: set[tuple[str, int]] = field(default_factory=set)
    passed: set[tuple[Any, ...]] = field(default_factory=set)  # records read by the caller (the sweep), maybe stale

    def meta(self, entity: str) -> dict[str, Any] | None:
        if entity in self.meta_updates:
            return {**(self.metas.get(entity) or {}), **self.meta_updates[entity]}
        return self.metas.get(entity)

    def add(self, entity: str, touches: Iterable[Touch]) -> None:
        self.touches.setdefault(entity, []).extend(touches)


class CrmEventWriter:
    def __init__(
        self,
        bitrix: Bitrix24Client,
        store: JourneyStore,
        projector: Projector,
        *,
        person_secret: str,
        mark_deleted: Callable[[str, int, dict[str, Any]], None] | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        locks: Locks | None = None,
        source_map: Mapping[str, str] | None = None,
    ):
        self.bitrix = bitrix
        self.source_ids = SourceIds(source_map)  # SOURCE_ID → channel, as the report reads it
        self.locks = locks  # the form writer's leases: taken around the store commit and the field's redraw
        self.store = store
        self.projector = projector
        self.field = projector.field
        self.person_secret = person_secret
        self.mark_deleted = mark_deleted
        self._clock = clock
        self._dictionary = _DICTIONARY  # stage and source names, shared by the writers of one process
        self.touches_added = 0

    # -- entry points ---------------------------------------------------------------------------------------------

    def write(self, events: dict[str, CrmEvent]) -> dict[str, Outcome]:
        """Handle a batch of events (message id → event); each outcome fails or succeeds with the whole batch,
        which is safe: everything here can be repeated."""
        try:
            self.handle(list(events.values()))
        except Busy as busy:  # the form writer holds one of these people or records: look again shortly
            logger.info("events wait for a lease", extra={"events": len(events)})
            return {key: Outcome(key, False, "busy", error=busy) for key in events}
        except BitrixError as error:
            logger.warning("bitrix24 events failed", extra={"error": str(error), "events": len(events)})
            return {key: Outcome(key, False, "failed", error=error) for key in events}
        except Exception as error:  # the journey store, or a record we cannot read: the queue brings them back
            logger.exception("events failed", extra={"events": len(events)})
            return {key: Outcome(key, False, "failed", error=error) for key in events}
        return {key: Outcome(key, True, "event") for key in events}

    def handle(self, events: list[CrmEvent], *, records: dict[tuple[str, int], dict[str, Any]] | None = None) -> int:
        """Process events (the sweep passes the records it has already read); returns the touches added."""
        batch = _Batch()
        for event in events:
            if event.action == "DELETE":
                self._delete(event)
        self._link_merged(events)
        # An activity is a touch once it happened: added completed, or completed later (its UPDATE event); its id
        # names the touch, so a rescheduled meeting or a second update adds nothing.
        live = [e for e in events if e.action != "DELETE" and e.entity in (LEAD, DEAL, CONTACT, ACTIVITY)]
        keys = list(dict.fromkeys((event.entity, event.entity_id) for event in live))
        batch.records.update(records or {})
        batch.passed = set(records or {})
        batch.metas = self.store.metas(_entity(kind, id_) for kind, id_ in keys)  # an activity's: where it is filed
        # Our own new lead coming back: the form writer recorded everything its ADD event could tell.
        ours = {
            (LEAD, event.entity_id)
            for event in live
            if event.name == "ONCRMLEADADD" and (batch.metas.get(_entity(LEAD, event.entity_id)) or {}).get("ours")
        }
        others = {(event.entity, event.entity_id) for event in live if event.name != "ONCRMLEADADD"}
        keys = [key for key in keys if key not in ours or key in others or key in batch.records]
        # Stage moves are read from the stage history for every lead and deal an event (or the sweep) names, also
        # when the sweep has read the record itself: the history row names the touch, whichever path sees it first.
        self._read(
            batch, [key for key in keys if key not in batch.records], [key for key in keys if key[0] in STAGE_FIELDS],
            [key for key in keys if key[0] in (ACTIVITY, DEAL)],
        )  # fmt: skip
        self._resolve_links(batch, keys)
        # Text as the portal sent it may hold a lone surrogate (JSON's "\\ud83d": a title cut in the middle of an
        # emoji), which no store or field can take: made storable once here, for the touches and the #meta alike.
        batch.records = {key: storable_values(record) for key, record in batch.records.items()}
        self._refresh_dictionary_for(batch)
        for kind in (CONTACT, LEAD, DEAL, ACTIVITY):  # people first: deals and activities inherit from them
            for key in keys:
                if key[0] == kind and key in batch.records:
                    self._observe(batch, kind, batch.records[key])
        lease = self._lease(batch)
        try:
            return self._commit(batch)
        finally:
            if lease is not None:
                self.locks.release(lease)  # type: ignore[union-attr]

    # -- reading --------------------------------------------------------------------------------------------------

    def _read(
        self,
        batch: _Batch,
        keys: list[tuple[str, int]],
        history_keys: list[tuple[str, int]],
        link_keys: list[tuple[str, int]] | None = None,
    ) -> None:
        """One batch (or more, 50 commands each): the records, their stage history, and what links them: an
        activity's bindings and call statistics, a deal's contacts (also for records the sweep passed in)."""
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for kind, id_ in keys:
            commands[f"{kind}{id_}"] = (f"crm.{kind}.get", {"id": id_})
        link_keys = link_keys or []
        for kind, id_ in link_keys:
            if kind == ACTIVITY:
                # Every record the activity is linked to (a call to a lead and its deal), and, for a call, what
                # telephony recorded of it: read beside the activity, in the same request.
                commands[f"bind{id_}"] = ("crm.activity.binding.list", {"activityId": id_})
                commands[f"vox{id_}"] = ("voximplant.statistic.get", {"FILTER": {"CRM_ACTIVITY_ID": id_}})
            elif kind == DEAL:
                commands[f"dcont{id_}"] = ("crm.deal.contact.items.get", {"id": id_})  # CONTACT_ID is deprecated
        for kind, id_ in history_keys:
            if kind in STAGE_FIELDS:
                # Every stage move since the last one we saw, in the same request: two moves inside one second share
                # one event (and one deduplication id), and a lost event loses no stage.
                after = int((batch.metas.get(_entity(kind, id_)) or {}).get("history_id") or 0)
                commands[f"hist{kind}{id_}"] = (
                    "crm.stagehistory.list",
                    {"entityTypeId": HISTORY_TYPES[kind], "filter": {"OWNER_ID": id_, ">ID": after},
                     "order": {"ID": "ASC"}},
                )  # fmt: skip
        if time.monotonic() - _DICTIONARY_AT[0] > DICTIONARY_TTL_SECONDS or not self._dictionary:
            for name in ("STATUS", "DEAL_STAGE", "SOURCE"):
                commands[f"dict{name.replace('_', '')}"] = ("crm.status.list", {"filter": {"ENTITY_ID": name}})
        for start in range(0, len(commands), 50):
            part = dict(list(commands.items())[start : start + 50])
            found = self.bitrix.batch(part)
            for key, error in found.errors.items():
                if key.startswith("hist"):
                    # No stage history for this webhook (scope, an old portal): fall back to the last seen stage.
                    logger.warning("stage history not readable", extra={"error": str(error)})
                    batch.no_history |= {(kind, id_) for kind, id_ in history_keys if key == f"hist{kind}{id_}"}
                elif isinstance(error, BitrixAccessDenied):
                    _skip_denied(key)
                elif key.startswith(("bind", "vox", "dcont")):
                    # Not readable for this webhook (no telephony scope or right; a record deleted meanwhile): the
                    # activity's owner, the deal's CONTACT_ID stand in for what is missing.
                    logger.info("links not readable", extra={"command": key.rstrip("0123456789"), "error": str(error)})
                elif "not found" not in str(error).lower():
                    raise error  # a deleted entity is "not found": its delete event tells the rest
            for kind, id_ in keys:
                record = found.results.get(f"{kind}{id_}")
                if isinstance(record, dict):
                    batch.records[(kind, id_)] = record
            for _kind, id_ in link_keys:
                for prefix, name in (("bind", "bindings"), ("vox", "calls"), ("dcont", "deal_contacts")):
                    rows = found.results.get(f"{prefix}{id_}")
                    if f"{prefix}{id_}" in part and (isinstance(rows, list) or rows == {}):
                        batch.records[(name, id_)] = {"rows": [row for row in rows or [] if isinstance(row, dict)]}
            for name in ("STATUS", "DEAL_STAGE", "SOURCE"):
                rows = found.results.get(f"dict{name.replace('_', '')}")
                if isinstance(rows, list):
                    self._dictionary[name] = _names(rows)
                    _DICTIONARY_AT[0] = time.monotonic()
            for kind, id_ in history_keys:
                history = found.results.get(f"hist{kind}{id_}")
                if isinstance(history, dict):
                    batch.records[("history", kind, id_)] = {"rows": history.get("items") or []}

    def _refresh_dictionary_for(self, batch: _Batch) -> None:
        """A stage added since the names were read (a new loss reason, a new pipeline step, another pipeline, whose
        stages have a dictionary of their own, ``DEAL_STAGE_<id>``): read those names again, at most once a minute."""
        missing: set[str] = set()
        for key, record in batch.records.items():
            kind = key[1] if key[0] == "history" else key[0]
            rows = record.get("rows") if key[0] == "history" else [record] if key[0] in STAGE_FIELDS else []
            for row in rows or []:
                stage = str(row.get(STAGE_FIELDS[kind][0]) or "")
                name = _stage_dictionary(kind, stage)
                if stage and stage not in self._dictionary.get(name, {}):
                    missing.add(name)
        now = time.monotonic()
        missing = {name for name in missing if now - _DICTIONARY_TRIED.get(name, -60.0) >= 60}
        if not missing:
            return
        found = self.bitrix.batch(
            {f"dict{name.replace('_', '')}": ("crm.status.list", {"filter": {"ENTITY_ID": name}})
             for name in sorted(missing)}
        )  # fmt: skip
        for name in missing:
            _DICTIONARY_TRIED[name] = now
            rows = found.results.get(f"dict{name.replace('_', '')}")
            if isinstance(rows, list):
                self._dictionary[name] = _names(rows)

    def _resolve_links(self, batch: _Batch, keys: list[tuple[str, int]]) -> None:
        """Second read, only when needed: a contact's deals and leads (an activity on a contact; a deal not converted
        from a lead), and owners we have never seen (their first line comes from their own fields)."""
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        contacts: set[int] = set()
        companies: set[int] = set()
        owners: set[tuple[str, int]] = set()
        for kind, id_ in keys:
            record = batch.records.get((kind, id_))
            if record is None:
                continue
            if kind == ACTIVITY:
                if not self._happened(batch, record):
                    continue  # a planned to-do, call or meeting: nothing to file yet
                links = _activity_links(batch, record)
                for link_kind, link_id in links:
                    if link_kind in (LEAD, DEAL) and (link_kind, link_id) not in batch.records:
                        owners.add((link_kind, link_id))
                    elif link_kind == COMPANY:
                        companies.add(link_id)
                if not any(link_kind in (LEAD, DEAL, COMPANY) for link_kind, _ in links):
                    contacts |= {link_id for link_kind, link_id in links if link_kind == CONTACT}
            elif kind == DEAL and not _int(record.get("LEAD_ID")):
                contacts |= set(_deal_contacts(batch, record))
        known = self.store.metas(_entity(kind, id_) for kind, id_ in owners)
        owners = {(kind, id_) for kind, id_ in owners if _entity(kind, id_) not in known}
        batch.metas.update(known)
        for kind, id_ in sorted(owners):
            commands[f"{kind}{id_}"] = (f"crm.{kind}.get", {"id": id_})
        select = ["*", "UF_*", "PHONE", "EMAIL"]
        for contact in sorted(contacts):
            order = {"ID": "DESC"}
            commands[f"cdeals{contact}"] = ("crm.deal.list", {"filter": {"CONTACT_ID": contact}, "order": order,
                                                              "select": select})  # fmt: skip
            commands[f"cleads{contact}"] = ("crm.lead.list", {"filter": {"CONTACT_ID": contact}, "order": order,
                                                              "select": select})  # fmt: skip
        for company in sorted(companies):
            open_deals = {"COMPANY_ID": company, "STAGE_SEMANTIC_ID": "P"}
            commands[f"codeals{company}"] = ("crm.deal.list", {"filter": open_deals, "order": {"ID": "DESC"},
                                                               "select": select})  # fmt: skip
        if not commands:
            return
        found = self._batch(commands)  # an activity linked to 100 records may need more than one request
        for key, error in found.errors.items():
            if isinstance(error, BitrixAccessDenied):
                _skip_denied(key)
            elif "not found" not in str(error).lower():
                raise error
        for kind, id_ in owners:
            record = found.results.get(f"{kind}{id_}")
            if isinstance(record, dict):
                batch.records[(kind, id_)] = record
        for contact in contacts:
            batch.records[("contact_deals", contact)] = {"rows": found.results.get(f"cdeals{contact}") or []}
            batch.records[("contact_leads", contact)] = {"rows": found.results.get(f"cleads{contact}") or []}
        for company in companies:
            batch.records[("company_deals", company)] = {"rows": found.results.get(f"codeals{company}") or []}
        lists = [(LEAD, ("contact_leads", c)) for c in contacts] + [(DEAL, ("contact_deals", c)) for c in contacts]
        lists += [(DEAL, ("company_deals", c)) for c in companies]
        linked = [(kind, int(row["ID"])) for kind, key in lists for row in batch.records[key]["rows"]]
        batch.metas.update(self.store.metas(_entity(kind, id_) for kind, id_ in linked))
        for kind, key in lists:
            for row in batch.records[key]["rows"]:
                batch.records.setdefault((kind, int(row["ID"])), row)

    # -- deciding -------------------------------------------------------------------------------------------------

    def _observe(self, batch: _Batch, kind: str, record: dict[str, Any]) -> str | None:
        """Compare one entity with its last seen state; queue its touches and new state. Returns its store key."""
        if kind == ACTIVITY:
            self._observe_activity(batch, record)
            return None
        id_ = int(record["ID"])
        entity = _entity(kind, id_)
        if entity in batch.meta_updates:
            return entity  # already observed in this batch
        meta = batch.metas.get(entity)
        if (meta or {}).get("deleted") and (kind, id_) in batch.passed:
            # The sweep read it before the manager deleted it: a stale row must not bring the entity (or its person
            # index entries) back. A record read afresh by its id, after a restore from the recycle bin, does.
            return entity
        update: dict[str, Any] = {"kind": kind, "id": id_, "deleted": False, "modified": record.get("DATE_MODIFY")}
        touches: list[Touch] = []
        earlier: list[str] = []
        if kind in (LEAD, CONTACT):
            keys = self._contact_keys(record)
            update["index_keys"] = keys
            update["person_key"] = self._person_key(record)
            old_keys = set((meta or {}).get("index_keys") or [])
            if kind == LEAD and meta is None and record.get("ORIGINATOR_ID") != ORIGINATOR_ID:
                earlier = self._earlier_history(record, keys)
            if set(keys) != old_keys:
                self.store.index_put(keys, entity)
                self.store.index_drop(old_keys - set(keys), entity)  # a manager changed a phone or e-mail
        if kind == LEAD:
            update["ours"] = record.get("ORIGINATOR_ID") == ORIGINATOR_ID
            update["contact_id"] = _int(record.get("CONTACT_ID")) or None
            if meta is None and not update["ours"]:
                # A returning person (IS_RETURN_CUSTOMER=Y: the lead names a contact or company; or someone the person
                # index knows): the lead shows the person's earlier history, then «Повторное обращение».
                repeat = _returning(record) or bool(earlier)
                if earlier:
                    update["earlier"] = earlier
                touches.append(self._lead_created(record, repeat=repeat))
        if kind == DEAL:
            lead_id = _int(record.get("LEAD_ID")) or max(
                (self._contact_lead(batch, contact) for contact in _deal_contacts(batch, record)), default=0
            )
            update["lead_id"] = lead_id or None
            if lead_id and int((meta or {}).get("lead_id") or 0) != lead_id:
                # The deal shows its lead's touches: when they change (the lead's own event may come later, in
                # another FIFO group), the deal is rendered again.
                self.store.add_links(_entity(LEAD, lead_id), [entity])
            update["contact_id"] = next(iter(_deal_contacts(batch, record)), None)
            lead_meta = batch.meta(_entity(LEAD, lead_id)) if lead_id else None
            contact_meta = batch.meta(_entity(CONTACT, update["contact_id"])) if update["contact_id"] else None
            update["person_key"] = (lead_meta or {}).get("person_key") or (contact_meta or {}).get("person_key")
            update["index_keys"] = (lead_meta or {}).get("index_keys") or (contact_meta or {}).get("index_keys") or []
            # Our own deal (simple CRM mode writes deals): the form's touches are its first lines, as for our leads.
            # A deal converted from a lead is never "ours" this way, even if the conversion copied the origin fields.
            update["ours"] = record.get("ORIGINATOR_ID") == ORIGINATOR_ID and not _int(record.get("LEAD_ID"))
            if meta is None and update["ours"]:
                if update["index_keys"]:
                    self.store.index_put(update["index_keys"], entity)
            elif meta is None:
                if not lead_id:
                    # A deal with no lead behind it (every deal in simple CRM mode): its first line is its own
                    # source, from its UTM tags or SOURCE_ID, as a lead's is.
                    touches.append(self._lead_created(record, kind=DEAL))
                created = [row for row in (batch.records.get(("history", DEAL, id_)) or {}).get("rows") or []
                           if int(row.get("TYPE_ID") or 0) == 1]  # fmt: skip
                touches.append(self._deal_created(record, int(created[0]["ID"]) if created else 0))
                if update["index_keys"]:
                    self.store.index_put(update["index_keys"], entity)
        if kind in STAGE_FIELDS:
            stage_field, semantic_field = STAGE_FIELDS[kind]
            stage, semantic = str(record.get(stage_field) or ""), str(record.get(semantic_field) or "P")
            history = batch.records.get(("history", kind, id_))
            if history is not None or (kind, id_) in batch.no_history:
                update.update(stage=stage, semantic=semantic)
            if history is not None:
                seen = int((meta or {}).get("history_id") or 0)
                for row in history["rows"]:
                    if int(row["ID"]) > seen and int(row.get("TYPE_ID") or 0) != 1:  # 1 = created at its first stage
                        row_stage = str(row.get(stage_field) or "")
                        row_semantic = str(row.get(semantic_field) or "P")
                        touches.append(self._stage_touch(kind, record, row_stage, row_semantic, row))
                    update["history_id"] = max(int(update.get("history_id") or seen), int(row["ID"]))
            elif (kind, id_) in batch.no_history:  # not allowed for this webhook: compare with the last seen stage
                last = (meta or {}).get("stage")
                initial = stage == "NEW" or stage.endswith(":NEW")
                if stage and (stage != last if meta is not None else not initial):
                    touches.append(self._stage_touch(kind, record, stage, semantic))
        batch.meta_updates[entity] = update
        batch.fields[entity] = record.get(self.field) if self.field in record else None
        if touches:
            batch.add(entity, touches)
        return entity

    def _observe_activity(self, batch: _Batch, record: dict[str, Any]) -> None:
        """File an activity that happened on every lead and deal it is linked to (crm.activity.binding.list); a
        company's activity on the company's open deals; a contact's activity, when it names no lead or deal, on the
        contact's newest open deal, else newest lead, else under the contact itself."""
        if not self._happened(batch, record):
            return
        links = _activity_links(batch, record)
        targets = [(kind, id_) for kind, id_ in links if kind in (LEAD, DEAL)]
        for kind, id_ in links:
            if kind == COMPANY:
                rows = batch.records.get(("company_deals", id_), {}).get("rows") or []
                targets += [(DEAL, int(row["ID"])) for row in rows if str(row.get("STAGE_SEMANTIC_ID") or "P") == "P"]
        if not targets:
            for kind, id_ in links:
                if kind != CONTACT:
                    continue
                deals = batch.records.get(("contact_deals", id_), {}).get("rows") or []
                leads = batch.records.get(("contact_leads", id_), {}).get("rows") or []
                open_deals = [row for row in deals if str(row.get("STAGE_SEMANTIC_ID") or "P") == "P"]
                if open_deals:
                    targets.append((DEAL, max(int(row["ID"]) for row in open_deals)))
                elif leads:
                    targets.append((LEAD, max(int(row["ID"]) for row in leads)))
                else:
                    # A person with neither (a contact typed by a manager): the touch stays in the store under the
                    # contact (keyed by its person for attribution); there is no journey field to show it in.
                    targets.append((CONTACT, id_))
        if not targets:
            logger.info("activity without a lead, deal or contact", extra={"activity_id": record.get("ID")})
            return
        touch = self._activity_touch(record, batch.records.get(("calls", int(record["ID"]))))
        # Filed once: a later update (a rescheduled meeting, a binding added) keeps the time first filed, so it names
        # the same stored touch; only records linked since then get it.
        activity = _entity(ACTIVITY, int(record["ID"]))
        filed = batch.meta(activity) or {}
        if _time(filed.get("at")):
            touch = replace(touch, at=_time(filed.get("at")))
        where = sorted({*(filed.get("filed") or []), *map(_entity_of, targets)})
        batch.meta_updates[activity] = {"kind": ACTIVITY, "id": int(record["ID"]), "at": touch.at.isoformat(),
                                        "filed": where}  # fmt: skip
        for target in dict.fromkeys(targets):
            entity = _entity(*target)
            if target in batch.records and entity not in batch.meta_updates:
                self._observe(batch, target[0], batch.records[target])  # first sight of the owner: its first line
            batch.add(entity, [touch])

    def _happened(self, batch: _Batch, record: dict[str, Any]) -> bool:
        """Planned activities are not touches: a to-do or task (automation adds them with future deadlines), a
        meeting or call still to come. An activity counts once completed; an incoming e-mail or chat, and a call
        telephony recorded (answered or missed), count as they come. To-dos never do: they are reminders."""
        provider = str(record.get("PROVIDER_ID") or "").upper()
        if provider == "CRM_TODO":
            return False
        if str(record.get("COMPLETED") or "N").upper() == "Y":
            return True
        if batch.records.get(("calls", int(record["ID"])), {}).get("rows"):
            return True
        type_id, direction = str(record.get("TYPE_ID") or ""), str(record.get("DIRECTION") or "")
        incoming_mail = (type_id == "4" or provider == "CRM_EMAIL") and direction == INCOMING
        return incoming_mail or provider.startswith("IMOPENLINES")

    def _earlier_history(self, record: dict[str, Any], keys: list[str]) -> list[str]:
        """The entities holding a new lead's person's earlier touches: its contact, the leads and contacts the person
        index files under the same phones and e-mails, and those leads' deals (no REST call: the journey store)."""
        own = _entity(LEAD, int(record["ID"]))
        found = set(self.store.index_lookup(keys)) if keys else set()
        contact = _entity(CONTACT, _int(record.get("CONTACT_ID"))) if _int(record.get("CONTACT_ID")) else None
        if contact and _returning(record):
            found.add(contact)  # named when the lead was created: someone known before
        elif contact:
            found.discard(contact)  # maybe made from this very lead by its conversion (simple CRM mode does it at once)
        found.discard(own)
        # The person's other phones and e-mails, as their contacts have them (a returning lead may name its contact
        # and give no phone of its own).
        more = [key for meta in self.store.metas(e for e in found if e.startswith("CONTACT#")).values()
                for key in meta.get("index_keys") or [] if key not in keys]  # fmt: skip
        if more:
            found |= self.store.index_lookup(more)
            found.discard(own)
        for linked in self.store.links([entity for entity in found if entity.startswith("LEAD#")]).values():
            found |= linked
        return sorted(found)

    def _contact_lead(self, batch: _Batch, contact_id: int) -> int:
        leads = batch.records.get(("contact_leads", contact_id), {}).get("rows") or []
        return max((int(row["ID"]) for row in leads), default=0)

    # -- touches --------------------------------------------------------------------------------------------------

    def _lead_created(self, record: dict[str, Any], kind: str = LEAD, *, repeat: bool = False) -> Touch:
        """The first line of a lead we did not create (or of a deal with no lead): its UTM tags, else its SOURCE_ID
        (the portal's name for it). A returning person's lead says «Повторное обращение» (``repeat``)."""
        at = _time(record.get("DATE_CREATE")) or self._clock()
        tags = {name: (record.get(f"UTM_{name.upper()}") or None) for name in ("source", "medium", "campaign")}
        common = dict(
            # A deal's own source line is not its «Сделка» line (deal:<id>:created): both are kept.
            touch_id=f"{kind}:{record['ID']}:" + ("created" if kind == LEAD else "source"),
            at=at,
            kind="crm_" + kind,
            campaign=tags["campaign"],
            content=record.get("UTM_CONTENT") or None,
            term=record.get("UTM_TERM") or None,
        )
        if tags["source"] or tags["medium"]:
            source = classify(utm_source=tags["source"], utm_medium=tags["medium"])
            detail = record.get("TITLE") or None
            extra = {"repeat": "1"} if repeat else {}
            if repeat:
                common["kind"] = "repeat_request"  # the seed's line format names a repeat request by its kind
            return Touch(**common, channel=source.channel, source=source.source, medium=source.medium, detail=detail,
                         extra=extra)  # fmt: skip
        source_id = str(record.get("SOURCE_ID") or "OTHER")
        # One mapping for this line, the report's table and the attribution paths (BITRIX24_SOURCE_MAP included).
        origin = self.source_ids.origin(source_id)
        channel, source = origin.channel, origin.source
        medium = SOURCE_MEDIUMS.get(source_id) or CHANNEL_MEDIUMS.get(channel, "(none)")
        name = self._dictionary.get("SOURCE", {}).get(source_id, source_id)
        lines = (record.get("SOURCE_DESCRIPTION") or record.get("TITLE") or "").splitlines()
        detail = lines[0] if lines else None
        extra = {"label_source": name, "label_medium": channel_label(channel), "source_id": source_id}
        if repeat:
            detail = f"{REPEAT}: {detail}" if detail else REPEAT
            extra["repeat"] = "1"
        return Touch(**common, channel=channel, source=source, medium=medium, detail=detail, extra=extra)

    def _deal_created(self, record: dict[str, Any], history_id: int = 0) -> Touch:
        title = record.get("TITLE") or f"Сделка №{record['ID']}"
        return Touch(
            touch_id=f"deal:{record['ID']}:created",
            at=_time(record.get("DATE_CREATE")) or self._clock(),
            kind="deal_created",
            channel=CRM,
            source=CRM,
            medium="deal",
            detail=f"«{title}»",
            # Ordered among stage moves of the same second by its creation's stage-history row.
            extra={"label_source": "CRM", "label_medium": "Сделка", "seq": str(history_id)},
        )

    def _stage_touch(
        self, kind: str, record: dict[str, Any], stage: str, semantic: str, history: dict[str, Any] | None = None
    ) -> Touch:
        """A stage move; from a stage-history row when there is one (its id names the touch, so the event path and
        the sweep name it alike), else from the record's current stage and ``MOVED_TIME``."""
        at = _time((history or {}).get("CREATED_TIME")) or _time(record.get("MOVED_TIME"))
        at = at or _time(record.get("DATE_MODIFY")) or self._clock()
        dictionary = self._dictionary.get(_stage_dictionary(kind, stage), {})
        default = self._dictionary.get("DEAL_STAGE", {}) if kind == DEAL else {}
        name = dictionary.get(stage) or default.get(stage.split(":")[-1]) or stage
        if semantic == "S":
            touch_kind, label = "won", ("Лид сконвертирован" if kind == LEAD else "Сделка выиграна")
        elif semantic == "F":
            touch_kind, label = "lost", ("Лид закрыт" if kind == LEAD else "Сделка проиграна")
        else:
            touch_kind, label = "stage", "Стадия"
        reason = (record.get("STATUS_DESCRIPTION") or "").strip() if kind == LEAD else ""
        detail = f"«{name}»" + (f": {reason}" if semantic == "F" and reason else "")
        extra = {"label_source": "CRM", "label_medium": label, "stage_id": stage}
        extra["seq"] = str((history or {}).get("ID", 0))
        if semantic == "F":
            extra["reason"] = reason or name
        return Touch(
            touch_id=(
                f"{kind}:{record['ID']}:history:{history['ID']}"
                if history
                else f"{kind}:{record['ID']}:stage:{stage}:{int(at.timestamp())}"
            ),
            at=at,
            kind=touch_kind,
            channel=CRM,
            source=CRM,
            medium="stage",
            detail=detail,
            extra=extra,
        )

    def _activity_touch(self, record: dict[str, Any], calls: dict[str, Any] | None = None) -> Touch:
        """One activity's touch. A call is missed (or, outgoing, unanswered) when telephony says so: its statistics
        row has a failure code or no duration (voximplant.statistic.get), never judged by the subject's words."""
        type_id, provider = str(record.get("TYPE_ID") or ""), str(record.get("PROVIDER_ID") or "").upper()
        direction, subject = str(record.get("DIRECTION") or ""), (record.get("SUBJECT") or "").strip()
        if type_id == "2" or provider == "VOXIMPLANT_CALL":
            rows = (calls or {}).get("rows") or []
            failed = bool(rows) and not any(
                str(row.get("CALL_FAILED_CODE") or "") == ANSWERED and _int(row.get("CALL_DURATION")) > 0
                for row in rows
            )
            kind = "incoming_call" if direction == INCOMING else "outgoing_call"
            kind = "missed_call" if failed and direction == INCOMING else kind
            label_source, channel, source = "Телефон", OFFLINE if direction == INCOMING else CRM, "phone"
            label = CALL_LABELS[kind] + (" без ответа" if failed and direction != INCOMING else "")
        elif type_id == "4" or provider == "CRM_EMAIL":
            kind = "incoming_email" if direction == INCOMING else "outgoing_email"
            label_source, channel, source = "Email", EMAIL if direction == INCOMING else CRM, "email"
            label = "Входящее письмо" if direction == INCOMING else "Исходящее письмо"
        elif type_id == "1" or provider == "CRM_MEETING":
            kind, label_source, channel, source, label = "meeting", "Встреча", CRM, "meeting", "Встреча"
        elif provider.startswith("IMOPENLINES"):
            kind, label_source, channel, source, label = "chat", "Открытая линия", MESSENGER, "openline", "Чат"
        elif type_id == "3" or provider in ("TASKS", "CRM_TASKS_TASK", "CRM_TODO"):
            kind, label_source, channel, source, label = "task", "CRM", CRM, CRM, "Задача"
        else:
            kind, label_source, channel, source, label = "activity", "CRM", CRM, CRM, "Дело"
        # When it happened: its end, else its start; never in the future (a meeting closed before its planned end):
        # not after now, or after the portal's last change of it when the portal's clock runs ahead of ours.
        at = _time(record.get("END_TIME")) or _time(record.get("START_TIME")) or _time(record.get("CREATED"))
        now = max(self._clock(), _time(record.get("LAST_UPDATED")) or self._clock())
        at = min(at, now) if at else now
        return Touch(
            touch_id=f"activity:{record['ID']}",
            at=at,
            kind=kind,
            channel=channel,
            source=source,
            medium=kind,
            detail=subject or None,
            extra={"label_source": label_source, "label_medium": label, "seq": str(record["ID"])},
        )

    # -- people ---------------------------------------------------------------------------------------------------

    def _contacts(self, record: dict[str, Any]) -> tuple[list[str], list[str]]:
        phones, emails = [], []
        for entry in record.get("PHONE") or []:
            try:
                phones.append(normalize_phone(str(entry.get("VALUE") or "")))
            except InvalidContact:
                continue
        for entry in record.get("EMAIL") or []:
            try:
                emails.append(normalize_email(str(entry.get("VALUE") or "")))
            except InvalidContact:
                continue
        return list(dict.fromkeys(phones)), list(dict.fromkeys(emails))

    def _contact_keys(self, record: dict[str, Any]) -> list[str]:
        phones, emails = self._contacts(record)
        return [person_key(value, self.person_secret) for value in [*phones, *emails]]

    def _person_key(self, record: dict[str, Any]) -> str | None:
        contact = first_contact(*self._contacts(record))
        return person_key(contact, self.person_secret) if contact else None

    # -- writing --------------------------------------------------------------------------------------------------

    def _lease(self, batch: _Batch) -> Any:
        """The form writer's leases on what this commit changes and redraws: ``lead:<id>`` (the lead a repeat request
        extends its lease to) and ``contact-record:<id>`` (a contact, or a deal's contact: simple mode's repeat
        requests). A lease held by another writer is waited for a few seconds (its holder writes one round), then
        ``Busy`` is raised and the events come back shortly."""
        if self.locks is None:
            return None
        names: set[str] = set()
        for entity in {*batch.meta_updates, *batch.touches}:
            kind, _, id_ = entity.partition("#")
            meta = batch.meta(entity) or {}
            if kind == "LEAD":
                names.add(f"lead:{id_}")
            elif kind == "CONTACT":
                names.add(f"contact-record:{id_}")
            elif kind == "DEAL" and meta.get("contact_id"):
                names.add(f"contact-record:{int(meta['contact_id'])}")
        if not names:
            return None
        give_up = time.monotonic() + LEASE_WAIT_SECONDS
        while True:
            left = self.bitrix.deadline.seconds_left()
            seconds = min(LEASE_SECONDS, left + 15) if left != float("inf") else LEASE_SECONDS
            lease = self.locks.acquire(sorted(names), lease_seconds=seconds)
            if lease is not None:
                return lease
            if time.monotonic() >= give_up or left < LEASE_WAIT_SECONDS + 10:
                raise Busy()
            time.sleep(LEASE_POLL_SECONDS)

    def _commit(self, batch: _Batch) -> int:
        changed: set[str] = set()
        added = 0
        for entity, update in batch.meta_updates.items():
            self.store.put_meta(entity, update)
        for entity, touches in batch.touches.items():
            fresh = self.store.new_touches(entity, touches)
            if fresh:
                self.store.bump_version(entity)
                changed.add(entity)
                added += len(fresh)
        # A lead's new touches are also its deals' journey before the deal: render those deals again.
        grown_leads = [entity for entity in changed if entity.startswith("LEAD#")]
        for deal in {deal for linked in self.store.links(grown_leads).values() for deal in linked} - changed:
            self.store.bump_version(deal)
            changed.add(deal)
        # Also repair a field that no longer says what the store says (a manager typed into it; a lost write).
        for entity, value in batch.fields.items():
            known = batch.metas.get(entity) or entity in batch.touches
            if entity not in changed and value is not None and known and value != self.projector.render(entity):
                changed.add(entity)
        if changed:
            self.projector.project(changed, {e: v for e, v in batch.fields.items() if e in changed and v is not None})
        self.touches_added += added
        return added

    def _link_merged(self, events: list[CrmEvent]) -> None:
        """Merged duplicates (crm.entity.mergeBatch): the portal moves the others' data and activities to the record
        that remains and deletes them, sending only their DELETE events. A deleted lead's or contact's touches are
        copied to the live record of its kind that shares its person keys (read from the portal to be sure it
        lives; the lowest id when several do), and rendered there: the person's journey is kept."""
        deleted = list(dict.fromkeys((e.entity, e.entity_id) for e in events if e.action == "DELETE"
                                     and e.entity in (LEAD, CONTACT)))  # fmt: skip
        if not deleted:
            return
        gone = {_entity(kind, id_) for kind, id_ in deleted}
        metas = self.store.metas(gone)
        candidates: dict[str, list[str]] = {}
        for kind, id_ in deleted:
            entity = _entity(kind, id_)
            keys = (metas.get(entity) or {}).get("index_keys") or []
            found = self.store.index_lookup(keys) if keys else set()
            candidates[entity] = sorted(
                (other for other in found if other.startswith(kind.upper() + "#") and other not in gone),
                key=lambda other: int(other.split("#")[1]),
            )
        wanted = sorted({other for others in candidates.values() for other in others})
        if not wanted:
            return
        found = self._batch({f"live{index}": (f"crm.{other.split('#')[0].lower()}.get",
                                              {"id": int(other.split("#")[1])})
                             for index, other in enumerate(wanted)})  # fmt: skip
        for key, error in found.errors.items():
            if isinstance(error, BitrixAccessDenied):
                _skip_denied(key)  # not readable by the webhook's user: not taken for the live duplicate
            elif "not found" not in str(error).lower():
                raise error
        live = {other for index, other in enumerate(wanted) if isinstance(found.results.get(f"live{index}"), dict)}
        changed: list[str] = []
        for entity, others in candidates.items():
            target = next((other for other in others if other in live), None)
            if target is None:
                continue
            fresh = self.store.new_touches(target, self.store.journey(entity))
            self.store.put_meta(entity, {"merged_into": target})
            logger.info("deleted record's touches kept on its duplicate", extra={"entity": entity, "into": target,
                                                                                  "touches": len(fresh)})  # fmt: skip
            if fresh:
                self.store.bump_version(target)
                self.touches_added += len(fresh)
                changed.append(target)
        for deal in {deal for linked in self.store.links([e for e in changed if e.startswith("LEAD#")]).values()
                     for deal in linked}:  # fmt: skip
            self.store.bump_version(deal)
            changed.append(deal)
        if changed:
            self.projector.project(changed)

    def _batch(self, commands: dict[str, tuple[str, dict[str, Any]]]) -> BatchResult:
        """Commands in batches of at most 50, answers merged."""
        merged = BatchResult({}, {}, {}, {})
        items = list(commands.items())
        for start in range(0, len(items), 50):
            found = self.bitrix.batch(dict(items[start : start + 50]))
            merged.results.update(found.results)
            merged.errors.update(found.errors)
        return merged

    def _delete(self, event: CrmEvent) -> None:
        if event.entity not in (LEAD, DEAL, CONTACT):
            return  # a deleted activity keeps its touch: it happened
        entity = _entity(event.entity, event.entity_id)
        meta = self.store.metas([entity]).get(entity) or {}
        deleted_at = self._clock().isoformat()
        self.store.put_meta(entity, {"kind": event.entity, "id": event.entity_id, "deleted": True,
                                     "deleted_at": deleted_at})  # fmt: skip
        self.store.index_drop(meta.get("index_keys") or [], entity)
        if self.mark_deleted:
            self.mark_deleted(event.entity, event.entity_id, {"deleted_at": deleted_at, "event_ts": event.ts})


def _names(rows: list[dict[str, Any]]) -> dict[str, str]:
    """crm.status.list rows → STATUS_ID → NAME, storable as the records' stages are (``handle``): they match."""
    return {row["STATUS_ID"]: row["NAME"] for row in storable_values(rows)}


def _skip_denied(key: str) -> None:
    """«Access denied» for one record (the webhook's user may not read it): skipped, never failing the records read
    with it; the client counts it (``RecordsAccessDenied``). Run ``bitrix-setup`` to check the webhook's user."""
    logger.warning("record not readable by the webhook's user: skipped", extra={"command": key})


def _stage_dictionary(kind: str, stage: str) -> str:
    """The crm.status.list ENTITY_ID naming a stage: STATUS for leads; DEAL_STAGE, or DEAL_STAGE_<id> for the stages
    of pipeline <id> (``C<id>:…``) (crm-status docs)."""
    if kind == LEAD:
        return "STATUS"
    pipeline = re.match(r"C(\d+):", stage)
    return f"DEAL_STAGE_{pipeline[1]}" if pipeline else "DEAL_STAGE"


def _entity(kind: str, id_: int) -> str:
    return f"{kind.upper()}#{int(id_)}"


def _returning(record: dict[str, Any]) -> bool:
    """IS_RETURN_CUSTOMER=Y: the lead named a contact or company (crm-lead-add.md). A lead first seen already
    converted may name the contact its own conversion made: no evidence then."""
    converted = str(record.get("STATUS_SEMANTIC_ID") or "P").upper() == "S"
    return str(record.get("IS_RETURN_CUSTOMER") or "N").upper() == "Y" and not converted


def _entity_of(target: tuple[str, int]) -> str:
    return _entity(*target)


def _owner(record: dict[str, Any]) -> tuple[str | None, int]:
    return OWNER_TYPES.get(_int(record.get("OWNER_TYPE_ID"))), _int(record.get("OWNER_ID"))


def _activity_links(batch: _Batch, record: dict[str, Any]) -> list[tuple[str, int]]:
    """The records an activity is linked to (crm.activity.binding.list, read beside it), its owner first; only the
    owner when the bindings could not be read."""
    owner = _owner(record)
    links = [owner] if owner[0] and owner[1] else []
    for row in batch.records.get(("bindings", int(record["ID"])), {}).get("rows") or []:
        kind, id_ = OWNER_TYPES.get(_int(row.get("entityTypeId"))), _int(row.get("entityId"))
        if kind and id_:
            links.append((kind, id_))
    return list(dict.fromkeys(links))


def _deal_contacts(batch: _Batch, record: dict[str, Any]) -> list[int]:
    """A deal's contacts, the primary first (crm.deal.contact.items.get); its deprecated CONTACT_ID, which names only
    the first, when they could not be read."""
    rows = batch.records.get(("deal_contacts", int(record["ID"])), {}).get("rows")
    if rows is None:
        return [_int(record.get("CONTACT_ID"))] if _int(record.get("CONTACT_ID")) else []
    rows = sorted(rows, key=lambda row: (str(row.get("IS_PRIMARY")) != "Y", _int(row.get("SORT"))))
    return list(dict.fromkeys(_int(row.get("CONTACT_ID")) for row in rows if _int(row.get("CONTACT_ID"))))


def _int(value: Any) -> int:
    try:
        return int(str(value or "0").strip() or 0)
    except ValueError:
        return 0


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def deletion_marker(entity: str, entity_id: int, details: dict[str, Any]) -> tuple[str, bytes]:
    """The S3 key and body of a deletion marker (the ROI report reads ``crm/deleted/``)."""
    body = {"entity_type": entity, "entity_id": entity_id, **details}
    return f"crm/deleted/{entity}/{entity_id}.json", json.dumps(body).encode()
