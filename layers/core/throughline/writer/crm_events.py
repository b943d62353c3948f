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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import LEASE_SECONDS, Busy, Locks
from throughline.bitrix24 import Bitrix24Client, BitrixAccessDenied, BitrixError
from throughline.contacts import InvalidContact, normalize_email, normalize_phone
from throughline.journey.events import CrmEvent
from throughline.journey.lines import Touch
from throughline.journey.projection import Projector
from throughline.observability import logger
from throughline.person_keys import first_contact, person_key
from throughline.sources import CHANNEL_LABELS, DIRECT, EMAIL, MESSENGER, OFFLINE, PAID_SEARCH, REFERRAL, classify
from throughline.writer.leads import ORIGINATOR_ID, Outcome

LEAD, DEAL, CONTACT, ACTIVITY = "lead", "deal", "contact", "activity"
OWNER_TYPES = {1: LEAD, 2: DEAL, 3: CONTACT}
CRM = "crm"  # the channel of sales-side touches (a manager's call, a stage move): not a marketing channel
DICTIONARY_TTL_SECONDS = 600
STAGE_FIELDS = {LEAD: ("STATUS_ID", "STATUS_SEMANTIC_ID"), DEAL: ("STAGE_ID", "STAGE_SEMANTIC_ID")}
HISTORY_TYPES = {LEAD: 1, DEAL: 2}  # crm.stagehistory.list entityTypeId
SWEEP_TS = "sweep"
LEASE_WAIT_SECONDS = 3.0  # how long a commit waits for the form writer's lease before its events go back
LEASE_POLL_SECONDS = 0.2  # the ``ts`` of events the sweep makes up for records it read

# SOURCE_ID of a lead with no tags → (channel, canonical source, medium), for the classifier's taxonomy.
SOURCE_CHANNELS = {
    "CALL": (OFFLINE, "phone", "call"),
    "CALLBACK": (OFFLINE, "callback", "call"),
    "EMAIL": (EMAIL, "email", "email"),
    "WEB": (DIRECT, "(direct)", "(none)"),
    "WEBFORM": (DIRECT, "(direct)", "(none)"),
    "STORE": (DIRECT, "(direct)", "(none)"),
    "ADVERTISING": (PAID_SEARCH, "advertising", "cpc"),
    "PARTNER": (REFERRAL, "partner", "referral"),
    "RECOMMENDATION": (REFERRAL, "recommendation", "referral"),
    "TRADE_SHOW": (OFFLINE, "trade_show", "offline"),
    "RC_GENERATOR": (OFFLINE, "rc_generator", "offline"),
}

# Activity TYPE_ID (crm_enum_activitytype): 1 meeting, 2 call, 3 task, 4 e-mail, 6 provider (chat, to-do…).
# DIRECTION (crm_enum_activitydirection): 1 incoming, 2 outgoing.
INCOMING, OUTGOING = "1", "2"
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
    ):
        self.bitrix = bitrix
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
        # An activity is a touch once, when added (a rescheduled meeting is not a second touch; the sweep finds an
        # activity whose add event was lost).
        live = [
            e
            for e in events
            if e.action != "DELETE"
            and e.entity in (LEAD, DEAL, CONTACT, ACTIVITY)
            and (e.entity != ACTIVITY or e.action == "ADD" or e.ts == SWEEP_TS)
        ]
        keys = list(dict.fromkeys((event.entity, event.entity_id) for event in live))
        batch.records.update(records or {})
        batch.passed = set(records or {})
        batch.metas = self.store.metas(_entity(kind, id_) for kind, id_ in keys if kind != ACTIVITY)
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
            batch, [key for key in keys if key not in batch.records], [key for key in keys if key[0] in STAGE_FIELDS]
        )
        self._resolve_links(batch, keys)
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

    def _read(self, batch: _Batch, keys: list[tuple[str, int]], history_keys: list[tuple[str, int]]) -> None:
        commands: dict[str, tuple[str, dict[str, Any]]] = {
            f"{kind}{id_}": (f"crm.{kind}.get", {"id": id_}) for kind, id_ in keys
        }
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
                elif "not found" not in str(error).lower():
                    raise error  # a deleted entity is "not found": its delete event tells the rest
            for kind, id_ in keys:
                record = found.results.get(f"{kind}{id_}")
                if isinstance(record, dict):
                    batch.records[(kind, id_)] = record
            for name in ("STATUS", "DEAL_STAGE", "SOURCE"):
                rows = found.results.get(f"dict{name.replace('_', '')}")
                if isinstance(rows, list):
                    self._dictionary[name] = {row["STATUS_ID"]: row["NAME"] for row in rows}
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
                self._dictionary[name] = {row["STATUS_ID"]: row["NAME"] for row in rows}

    def _resolve_links(self, batch: _Batch, keys: list[tuple[str, int]]) -> None:
        """Second read, only when needed: a contact's deals and leads (an activity on a contact; a deal not converted
        from a lead), and owners we have never seen (their first line comes from their own fields)."""
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        contacts: set[int] = set()
        owners: set[tuple[str, int]] = set()
        for kind, id_ in keys:
            record = batch.records.get((kind, id_))
            if record is None:
                continue
            if kind == ACTIVITY:
                owner_kind, owner_id = _owner(record)
                if owner_kind == CONTACT:
                    contacts.add(owner_id)
                elif owner_kind in (LEAD, DEAL) and (owner_kind, owner_id) not in batch.records:
                    owners.add((owner_kind, owner_id))
            elif kind == DEAL and not _int(record.get("LEAD_ID")) and _int(record.get("CONTACT_ID")):
                contacts.add(_int(record.get("CONTACT_ID")))
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
        if not commands:
            return
        found = self.bitrix.batch(commands)
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
        linked = [(LEAD, int(row["ID"])) for c in contacts for row in batch.records[("contact_leads", c)]["rows"]]
        linked += [(DEAL, int(row["ID"])) for c in contacts for row in batch.records[("contact_deals", c)]["rows"]]
        batch.metas.update(self.store.metas(_entity(kind, id_) for kind, id_ in linked))
        for contact in contacts:
            for kind, rows in ((LEAD, "contact_leads"), (DEAL, "contact_deals")):
                for row in batch.records[(rows, contact)]["rows"]:
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
        if kind in (LEAD, CONTACT):
            keys = self._contact_keys(record)
            update["index_keys"] = keys
            update["person_key"] = self._person_key(record)
            old_keys = set((meta or {}).get("index_keys") or [])
            if set(keys) != old_keys:
                self.store.index_put(keys, entity)
                self.store.index_drop(old_keys - set(keys), entity)  # a manager changed a phone or e-mail
        if kind == LEAD:
            update["ours"] = record.get("ORIGINATOR_ID") == ORIGINATOR_ID
            update["contact_id"] = _int(record.get("CONTACT_ID")) or None
            if meta is None and not update["ours"]:
                touches.append(self._lead_created(record))
        if kind == DEAL:
            lead_id = _int(record.get("LEAD_ID")) or self._contact_lead(batch, _int(record.get("CONTACT_ID")))
            update["lead_id"] = lead_id or None
            if lead_id and int((meta or {}).get("lead_id") or 0) != lead_id:
                # The deal shows its lead's touches: when they change (the lead's own event may come later, in
                # another FIFO group), the deal is rendered again.
                self.store.add_links(_entity(LEAD, lead_id), [entity])
            update["contact_id"] = _int(record.get("CONTACT_ID")) or None
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
                if not lead_id and (record.get("UTM_SOURCE") or record.get("UTM_MEDIUM")):
                    touches.append(self._lead_created(record, kind=DEAL))  # a deal with its own first touch
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
        owner_kind, owner_id = _owner(record)
        target = None
        if owner_kind in (LEAD, DEAL):
            target = (owner_kind, owner_id)
        elif owner_kind == CONTACT:
            deals = batch.records.get(("contact_deals", owner_id), {}).get("rows") or []
            leads = batch.records.get(("contact_leads", owner_id), {}).get("rows") or []
            open_deals = [row for row in deals if str(row.get("STAGE_SEMANTIC_ID") or "P") == "P"]
            if open_deals:
                target = (DEAL, max(int(row["ID"]) for row in open_deals))
            elif leads:
                target = (LEAD, max(int(row["ID"]) for row in leads))
            else:
                # A person with neither (a contact typed by a manager): the touch stays in the store under the
                # contact (keyed by its person for attribution); there is no journey field to show it in.
                target = (CONTACT, owner_id)
        if target is None:
            logger.info("activity without a lead or deal", extra={"activity_id": record.get("ID")})
            return
        entity = _entity(*target)
        if target in batch.records and entity not in batch.meta_updates:
            self._observe(batch, target[0], batch.records[target])  # first sight of the owner: its own first line
        batch.add(entity, [self._activity_touch(record)])

    def _contact_lead(self, batch: _Batch, contact_id: int) -> int:
        leads = batch.records.get(("contact_leads", contact_id), {}).get("rows") or []
        return max((int(row["ID"]) for row in leads), default=0)

    # -- touches --------------------------------------------------------------------------------------------------

    def _lead_created(self, record: dict[str, Any], kind: str = LEAD) -> Touch:
        """The first line of a lead we did not create: its UTM tags, else its SOURCE_ID (the portal's name for it)."""
        at = _time(record.get("DATE_CREATE")) or self._clock()
        tags = {name: (record.get(f"UTM_{name.upper()}") or None) for name in ("source", "medium", "campaign")}
        common = dict(
            touch_id=f"{kind}:{record['ID']}:created",
            at=at,
            kind="crm_" + kind,
            campaign=tags["campaign"],
            content=record.get("UTM_CONTENT") or None,
            term=record.get("UTM_TERM") or None,
        )
        if tags["source"] or tags["medium"]:
            source = classify(utm_source=tags["source"], utm_medium=tags["medium"])
            return Touch(**common, channel=source.channel, source=source.source, medium=source.medium,
                         detail=record.get("TITLE") or None)  # fmt: skip
        source_id = str(record.get("SOURCE_ID") or "OTHER")
        channel, source, medium = SOURCE_CHANNELS.get(source_id, (OFFLINE, source_id.lower(), "offline"))
        name = self._dictionary.get("SOURCE", {}).get(source_id, source_id)
        detail = (record.get("SOURCE_DESCRIPTION") or record.get("TITLE") or "").splitlines()
        return Touch(
            **common,
            channel=channel,
            source=source,
            medium=medium,
            detail=detail[0] if detail else None,
            extra={"label_source": name, "label_medium": CHANNEL_LABELS[channel], "source_id": source_id},
        )

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

    def _activity_touch(self, record: dict[str, Any]) -> Touch:
        type_id, provider = str(record.get("TYPE_ID") or ""), str(record.get("PROVIDER_ID") or "").upper()
        direction, subject = str(record.get("DIRECTION") or ""), (record.get("SUBJECT") or "").strip()
        if type_id == "2" or provider == "VOXIMPLANT_CALL":
            missed = direction == INCOMING and _looks_missed(record)
            kind = "missed_call" if missed else ("incoming_call" if direction == INCOMING else "outgoing_call")
            label_source, channel, source = "Телефон", OFFLINE if direction == INCOMING else CRM, "phone"
            label = CALL_LABELS[kind]
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
        return Touch(
            touch_id=f"activity:{record['ID']}",
            at=_time(record.get("START_TIME")) or _time(record.get("CREATED")) or self._clock(),
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


def _owner(record: dict[str, Any]) -> tuple[str | None, int]:
    return OWNER_TYPES.get(_int(record.get("OWNER_TYPE_ID"))), _int(record.get("OWNER_ID"))


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


def _looks_missed(record: dict[str, Any]) -> bool:
    """No documented flag marks a missed call in crm.activity fields; telephony names it in the subject
    («Пропущенный звонок», "Missed call") and leaves it not completed."""
    subject = str(record.get("SUBJECT") or "").lower()
    return "пропущ" in subject or "missed" in subject


def deletion_marker(entity: str, entity_id: int, details: dict[str, Any]) -> tuple[str, bytes]:
    """The S3 key and body of a deletion marker (the ROI report reads ``crm/deleted/``)."""
    body = {"entity_type": entity, "entity_id": entity_id, **details}
    return f"crm/deleted/{entity}/{entity_id}.json", json.dumps(body).encode()
