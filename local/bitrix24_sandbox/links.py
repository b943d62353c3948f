"""What links CRM records to each other, and the telephony statistics of calls.

- ``crm.activity.binding.list`` / ``crm.activity.binding.add`` (binding/index.md, crm-activity-binding-*.md): one
  activity may be linked to several records (a call to a lead and a deal); the list is ``[{entityTypeId, entityId}]``.
- ``crm.activity.todo.add`` (crm-activity-todo-add.md): a to-do with a deadline, not completed.
- ``crm.deal.contact.items.get`` (crm-deal-contact-items-get.md): every contact of a deal, ``CONTACT_ID`` being
  deprecated and naming only the first.
- ``crm.entity.mergeBatch`` (crm-entity-merge-batch.md): duplicates merged into one record, the others deleted.
- ``voximplant.statistic.get`` (voximplant-statistic-get.md): the call history, one row per call.

Activity bindings live in the activity's hidden ``_BINDINGS`` list of ``(entityTypeId, entityId)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from . import errors
from .errors import RestError
from .methods import CallContext, MethodResult
from .schema import ENTITIES
from .store import PAGE_SIZE, _make_condition, _split_filter_key, parse_datetime

__all__ = ["MAX_BINDINGS", "TYPE_NAMES", "bind_activity", "register"]

TYPE_NAMES = {1: "lead", 2: "deal", 3: "contact", 4: "company"}  # CRM object type ids (crm/data-types.md)
MAX_BINDINGS = 100  # binding/index.md: an activity can be linked to up to 100 CRM records
# voximplant-statistic-get.md: the filterable fields and their kinds.
STATISTIC_FIELDS = {
    "ID": "number", "CALL_ID": "text", "EXTERNAL_CALL_ID": "text", "CALL_CATEGORY": "text",
    "PORTAL_USER_ID": "number", "PORTAL_NUMBER": "text", "PHONE_NUMBER": "text", "CALL_TYPE": "number",
    "CALL_DURATION": "number", "CALL_START_DATE": "date", "CALL_LOG": "text", "CALL_RECORD_URL": "text",
    "CALL_VOTE": "number", "COST": "number", "COST_CURRENCY": "text", "CALL_FAILED_CODE": "text",
    "CALL_FAILED_REASON": "text", "CRM_ENTITY_TYPE": "text", "CRM_ENTITY_ID": "number", "CRM_ACTIVITY_ID": "number",
    "REST_APP_ID": "number", "REST_APP_NAME": "text", "TRANSCRIPT_ID": "number", "TRANSCRIPT_PENDING": "text",
    "SESSION_ID": "number", "REDIAL_ATTEMPT": "number", "COMMENT": "text", "RECORD_DURATION": "number",
}  # fmt: skip
FAILED_REASONS = {"200": "", "304": "Missed call", "603": "Declined", "603-S": "Decline self", "486": "Busy",
                  "480": "Temporarily unavailable", "404": "Invalid number"}  # fmt: skip


def register(methods: dict[str, Callable[[CallContext, dict[str, Any]], MethodResult]]) -> None:
    methods["crm.activity.binding.list"] = _binding_list
    methods["crm.activity.binding.add"] = _binding_add
    methods["crm.activity.todo.add"] = _todo_add
    methods["crm.deal.contact.items.get"] = _deal_contact_items_get
    methods["crm.entity.mergebatch"] = _merge_batch
    methods["voximplant.statistic.get"] = _statistic_get


def bind_activity(record: dict[str, Any], type_id: int, entity_id: int) -> None:
    bindings = record.setdefault("_BINDINGS", [])
    if (type_id, entity_id) in bindings:
        return
    if len(bindings) >= MAX_BINDINGS:
        raise RestError("", f"An activity can be bound to {MAX_BINDINGS} CRM items at most.")  # our wording
    bindings.append((type_id, entity_id))


def _activity(context: CallContext, params: Mapping[str, Any]) -> dict[str, Any]:
    activity_id = _int(params.get("ACTIVITYID"))
    if activity_id <= 0:
        raise RestError("", "The parameter activityId is invalid or not defined.", 400)
    return context.portal.get_record("activity", activity_id)


def _binding_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    record = _activity(context, params)
    rows = [
        {"entityTypeId": type_id, "entityId": entity_id}
        for type_id, entity_id in record.get("_BINDINGS") or []
        if entity_id in context.portal.records[TYPE_NAMES[type_id]]
        # crm-activity-binding-list.md: only what the current user may read, with no error for the rest.
        and entity_id not in context.hidden.get(TYPE_NAMES[type_id], ())
    ]
    return MethodResult(rows)


def _binding_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    record = _activity(context, params)
    type_id, entity_id = _int(params.get("ENTITYTYPEID")), _int(params.get("ENTITYID"))
    if type_id not in TYPE_NAMES or entity_id not in context.portal.records[TYPE_NAMES[type_id]]:
        raise RestError("NOT_FOUND", "Not found.", 400)
    bind_activity(record, type_id, entity_id)
    return MethodResult(True)


def _todo_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """A universal to-do (PROVIDER_ID CRM_TODO): planned, with a deadline, not completed; what automation rules add."""
    owner_type, owner_id = _int(params.get("OWNERTYPEID")), _int(params.get("OWNERID"))
    if not owner_type or not owner_id or params.get("DEADLINE") in (None, ""):
        raise RestError("100", "Required fields are missing", 400)
    portal = context.portal
    deadline = parse_datetime(params.get("DEADLINE"), portal.tz)
    if deadline is None:
        raise RestError("WRONG_DATETIME_FORMAT", "Incorrect date format", 400)
    if owner_type not in TYPE_NAMES or owner_id not in portal.records[TYPE_NAMES[owner_type]]:
        raise RestError("OWNER_NOT_FOUND", "Owner of the entity not found", 400)
    fields = {
        "OWNER_TYPE_ID": owner_type, "OWNER_ID": owner_id, "TYPE_ID": 6, "PROVIDER_ID": "CRM_TODO",
        "PROVIDER_TYPE_ID": "TODO", "SUBJECT": str(params.get("TITLE") or ""),
        "DESCRIPTION": str(params.get("DESCRIPTION") or ""), "START_TIME": deadline, "END_TIME": deadline,
        "RESPONSIBLE_ID": _int(params.get("RESPONSIBLEID")) or portal.webhook_user_id, "COMPLETED": "N",
    }  # fmt: skip
    record_id = add_activity(context, fields)
    return MethodResult({"id": record_id})


def add_activity(context: CallContext, fields: Mapping[str, Any], *, emit: bool = True) -> int:
    """Store an activity bound to its owner, with the read-only times a portal sets; send its ADD event."""
    portal = context.portal
    record_id = portal.add("activity", fields)
    record = portal.records["activity"][record_id]
    now = portal.now()
    record.update(CREATED=now, LAST_UPDATED=now, AUTHOR_ID=portal.webhook_user_id, EDITOR_ID=portal.webhook_user_id)
    record["COMPLETED"] = record.get("COMPLETED") or "N"
    record["START_TIME"] = record.get("START_TIME") or now
    # DEADLINE is START_TIME for calls and meetings, END_TIME for tasks and to-dos (crm-activity-fields.md).
    record["DEADLINE"] = record.get("END_TIME") if record.get("TYPE_ID") in (3, 6) else record["START_TIME"]
    record["_BINDINGS"] = []
    bind_activity(record, int(record["OWNER_TYPE_ID"]), int(record["OWNER_ID"]))
    if emit:
        context.emit("ONCRMACTIVITYADD", record_id)
    return record_id


def _deal_contact_items_get(context: CallContext, params: dict[str, Any]) -> MethodResult:
    deal_id = _int(params.get("ID"))
    if deal_id <= 0:
        raise RestError("", "The parameter ownerEntityID is invalid or not defined.", 400)
    if deal_id not in context.portal.records["deal"]:
        raise RestError("", "Not found.", 400)
    ids = context.portal.deal_contact_ids(deal_id)
    return MethodResult(
        [
            {"CONTACT_ID": contact, "SORT": 100 * (index + 1), "ROLE_ID": 0, "IS_PRIMARY": "Y" if index == 0 else "N"}
            for index, contact in enumerate(ids)
        ]
    )


def _merge_batch(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm-entity-merge-batch.md: ``params: {entityTypeId, entityIds}``. The first id is the record that remains
    (the docs do not say which one does: our reading); the others' empty fields, phones and e-mails, activities and
    links move to it and they are deleted. Only their DELETE events are sent: the moved activities send no ADD and
    the remaining record no UPDATE."""
    raw = params.get("PARAMS")
    raw = {str(key).upper(): value for key, value in raw.items()} if isinstance(raw, Mapping) else {}
    type_id = _int(raw.get("ENTITYTYPEID"))
    ids = raw.get("ENTITYIDS")
    ids = list(ids.values()) if isinstance(ids, Mapping) else ids if isinstance(ids, list) else []
    ids = list(dict.fromkeys(_int(item) for item in ids if _int(item) > 0))
    if type_id not in TYPE_NAMES:
        raise RestError("", "Entity type is not supported.", 400)  # our wording: the docs list 1-4 only
    entity = TYPE_NAMES[type_id]
    portal = context.portal
    if len(ids) < 2 or any(item not in portal.records[entity] for item in ids):
        return MethodResult({"STATUS": "ERROR", "ENTITY_IDS": []})
    main_id, seeds = ids[0], ids[1:]
    main = portal.records[entity][main_id]
    spec = ENTITIES[entity]
    for seed_id in seeds:
        seed = portal.records[entity][seed_id]
        for field in spec.fields:
            if not field.read_only and main.get(field.name) in (None, "", 0) and seed.get(field.name) not in (None, ""):
                main[field.name] = seed[field.name]
        for type_name in ("PHONE", "EMAIL", "WEB", "IM") if spec.has_multifields else ():
            known = {entry["VALUE"] for entry in main.get(type_name) or []}
            for entry in seed.get(type_name) or []:
                if entry["VALUE"] not in known:
                    main.setdefault(type_name, []).append(dict(entry))
        for activity in portal.records["activity"].values():
            bindings = activity.get("_BINDINGS") or []
            if (type_id, seed_id) in bindings:
                activity["_BINDINGS"] = list(dict.fromkeys((t, main_id if (t, e) == (type_id, seed_id) else e)
                                                           for t, e in bindings))  # fmt: skip
            if int(activity.get("OWNER_TYPE_ID") or 0) == type_id and int(activity.get("OWNER_ID") or 0) == seed_id:
                activity["OWNER_ID"] = main_id
        link = {"lead": "LEAD_ID", "contact": "CONTACT_ID", "company": "COMPANY_ID"}.get(entity)
        for other in ("lead", "deal", "contact") if link else ():
            for record in portal.records[other].values():
                if record.get(link) == seed_id:
                    record[link] = main_id
                if other == "deal" and entity == "contact" and seed_id in (record.get("_CONTACT_IDS") or []):
                    record["_CONTACT_IDS"] = list(dict.fromkeys(main_id if c == seed_id else c
                                                                for c in record["_CONTACT_IDS"]))  # fmt: skip
        portal.delete(entity, seed_id)
        context.emit(spec.event_prefix + "DELETE", seed_id)
    main["DATE_MODIFY"] = portal.now()
    return MethodResult({"STATUS": "SUCCESS", "ENTITY_IDS": [str(item) for item in seeds]})


def record_call(portal: Any, activity: Mapping[str, Any], *, call_id: str, incoming: bool, start: datetime,
                duration: int, failed_code: str, phone: str) -> None:  # fmt: skip
    """The statistics row telephony writes when a call ends (voximplant-statistic-get.md's fields)."""
    owner = TYPE_NAMES.get(int(activity.get("OWNER_TYPE_ID") or 0), "")
    portal.call_statistics.append(
        {
            "ID": len(portal.call_statistics) + 1,
            "PORTAL_USER_ID": portal.webhook_user_id,
            "PORTAL_NUMBER": "reg1",
            "PHONE_NUMBER": phone,
            "CALL_ID": call_id,
            "EXTERNAL_CALL_ID": None,
            "CALL_CATEGORY": "external",
            "CALL_LOG": None,
            "CALL_DURATION": duration,
            "CALL_START_DATE": start,
            "CALL_RECORD_URL": None,
            "CALL_VOTE": None,
            "COST": 0.0,
            "COST_CURRENCY": "RUB",
            "CALL_FAILED_CODE": failed_code,
            "CALL_FAILED_REASON": FAILED_REASONS.get(failed_code, "Other"),
            "CRM_ENTITY_TYPE": owner.upper() if owner in ("lead", "contact", "company") else "",
            "CRM_ENTITY_ID": int(activity.get("OWNER_ID") or 0),
            "CRM_ACTIVITY_ID": int(activity["ID"]),
            "REST_APP_ID": None,
            "REST_APP_NAME": None,
            "TRANSCRIPT_ID": None,
            "TRANSCRIPT_PENDING": "N",
            "SESSION_ID": None,
            "REDIAL_ATTEMPT": None,
            "COMMENT": None,
            "RECORD_DURATION": None,
            "RECORD_FILE_ID": None,
            "CALL_TYPE": 2 if incoming else 1,
        }
    )


def _statistic_get(context: CallContext, params: dict[str, Any]) -> MethodResult:
    portal = context.portal
    rows = list(portal.call_statistics)
    raw_filter = params.get("FILTER")
    for raw_key, expected in raw_filter.items() if isinstance(raw_filter, Mapping) else []:
        operator, name = _split_filter_key(str(raw_key))
        if name.upper() not in STATISTIC_FIELDS:
            raise RestError("", f"Invalid filter field: {name}", 400)  # our wording: the docs show no such error
        condition = _make_condition(name.upper(), STATISTIC_FIELDS[name.upper()], False, operator, expected, portal.tz)
        rows = [row for row in rows if condition is None or condition(row)]
    sort = str(params.get("SORT") or "").upper()
    if sort in STATISTIC_FIELDS and sort != "CALL_TYPE":
        rows.sort(key=lambda row: (row.get(sort) is None, row.get(sort)),
                  reverse=str(params.get("ORDER") or "").upper() == "DESC")  # fmt: skip
    start = max(_int(params.get("START")), 0)
    page = rows[start : start + PAGE_SIZE]
    rendered = [{key: _wire(value, portal.tz) for key, value in row.items()} for row in page]
    next_start = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
    return MethodResult(rendered, total=len(rows), next=next_start)


def _wire(value: Any, tz: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat()
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


_ = errors  # the shared error helpers stay importable from here


def telephony_call(
    sandbox: Any,
    owner: tuple[int, int],
    *,
    incoming: bool,
    start: str,
    duration: int,
    failed_code: str = "200",
    phone: str = "+79161234567",
    also: tuple[tuple[int, int], ...] = (),
    subject: str | None = None,
) -> int:
    """A call made through Bitrix24 telephony, as the portal records it: the activity (``VOXIMPLANT_CALL``, its
    ``ORIGIN_ID`` naming the call) is added when the call starts, not completed; when it ends the statistics row is
    written and the activity updated: completed for a call that was answered, left open (a call-back to do) for a
    missed one. ``also``: more records the call is linked to (``(entityTypeId, id)``). Returns the activity id."""
    portal = sandbox._portal
    with sandbox._store_lock:
        started = parse_datetime(start, portal.tz)
        assert started is not None
        call_id = f"externalCall.{len(portal.call_statistics) + 1:032x}.{int(started.timestamp())}"
        fields = {
            "OWNER_TYPE_ID": owner[0], "OWNER_ID": owner[1], "TYPE_ID": 2, "PROVIDER_ID": "VOXIMPLANT_CALL",
            "PROVIDER_TYPE_ID": "CALL", "DIRECTION": 1 if incoming else 2, "START_TIME": started,
            "END_TIME": started, "COMPLETED": "N", "ORIGIN_ID": f"VI_{call_id}", "RESPONSIBLE_ID": 1,
            "SUBJECT": subject or (f"Входящий звонок от {phone}" if incoming else f"Исходящий звонок {phone}"),
        }  # fmt: skip
        context = sandbox._context()
        activity_id = add_activity(context, fields)
        record = portal.records["activity"][activity_id]
        for type_id, entity_id in also:
            bind_activity(record, type_id, entity_id)
        record_call(portal, record, call_id=call_id, incoming=incoming, start=started, duration=duration,
                    failed_code=failed_code, phone=phone)  # fmt: skip
    answered = failed_code == "200" and duration > 0
    ended = datetime.fromtimestamp(started.timestamp() + duration, portal.tz)
    end = {"END_TIME": ended.isoformat(), "COMPLETED": "Y" if answered else "N"}
    sandbox.call("crm.activity.update", {"id": activity_id, "fields": end})
    return activity_id
