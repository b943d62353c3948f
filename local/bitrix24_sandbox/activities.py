"""Activities and stage history: ``crm.activity.add`` (with the checks of crm-activity-add.md) and
``crm.stagehistory.list`` (crm-stage-history-list.md), fed by every stage change of a lead or deal.

``register`` wraps the lead/deal write methods in the registry, so stage history is recorded however a record changes
(a REST call, a batch command, a conversion).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .errors import RestError
from .methods import CallContext, MethodResult, _fields_param, _to_start
from .store import PAGE_SIZE, Portal

__all__ = ["register", "stage_history"]

OWNER_TYPES = {1: "lead", 2: "deal", 3: "contact"}
ENTITY_TYPE_IDS = {1: "lead", 2: "deal"}
STAGE_FIELDS = {"lead": ("STATUS_ID", "STATUS_SEMANTIC_ID"), "deal": ("STAGE_ID", "STAGE_SEMANTIC_ID")}


def stage_history(portal: Portal) -> list[dict[str, Any]]:
    """The portal's stage history rows (cleared with the portal's records)."""
    holder = portal.__dict__.get("_stage_history")
    if holder is None or holder[0] is not portal.records:
        holder = (portal.records, [])
        portal.__dict__["_stage_history"] = holder
    return holder[1]


def register(methods: dict[str, Callable[[CallContext, dict[str, Any]], MethodResult]]) -> None:
    for action in ("userfield.add", "userfield.list", "userfield.get"):
        methods.pop(f"crm.activity.{action}", None)  # activities have no user fields in the REST API
    methods["crm.activity.add"] = _activity_add
    methods["crm.stagehistory.list"] = _stage_history_list
    for entity in STAGE_FIELDS:
        for action in ("add", "update"):
            name = f"crm.{entity}.{action}"
            methods[name] = _recording(entity, methods[name])


def _activity_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm-activity-add.md: SUBJECT, RESPONSIBLE_ID, TYPE_ID and COMMUNICATIONS are required; the owner must exist."""
    fields = dict(_fields_param(params))
    for name in ("SUBJECT", "RESPONSIBLE_ID", "TYPE_ID"):
        if str(fields.get(name) or "").strip() in ("", "0"):
            raise RestError("", f"The field {name} is not defined or invalid.")
    if not fields.get("COMMUNICATIONS"):
        raise RestError("", "The field COMMUNICATIONS is not defined or invalid.")
    owner_type = OWNER_TYPES.get(_int(fields.get("OWNER_TYPE_ID")))
    owner_id = _int(fields.get("OWNER_ID"))
    if owner_type is None or owner_id not in context.portal.records[owner_type]:
        raise RestError(
            "", "Could not build binding. Please ensure that owner info and communications are defined correctly."
        )
    portal = context.portal
    record_id = portal.add("activity", fields)
    record = portal.records["activity"][record_id]
    now = portal.now()
    record.update(CREATED=now, LAST_UPDATED=now, AUTHOR_ID=portal.webhook_user_id, EDITOR_ID=portal.webhook_user_id)
    record["COMPLETED"] = record.get("COMPLETED") or "N"
    record["START_TIME"] = record.get("START_TIME") or now
    # DEADLINE is START_TIME for calls and meetings, END_TIME for tasks (crm-activity-fields.md).
    record["DEADLINE"] = record.get("END_TIME") if record.get("TYPE_ID") == 3 else record["START_TIME"]
    context.emit("ONCRMACTIVITYADD", record_id)
    return MethodResult(record_id)


def _recording(entity: str, method: Callable[[CallContext, dict[str, Any]], MethodResult]):
    stage_field = STAGE_FIELDS[entity][0]

    def run(context: CallContext, params: dict[str, Any]) -> MethodResult:
        records = context.portal.records[entity]
        record_id = _int(params.get("ID"))
        before = records[record_id].get(stage_field) if record_id in records else None
        result = method(context, params)
        if record_id not in records:
            record_id = int(result.result)  # an add: its new id
            before = None
        record = records[record_id]
        if record.get(stage_field) != before:
            _record_move(context.portal, entity, record, created=before is None)
        return result

    return run


def _record_move(portal: Portal, entity: str, record: Mapping[str, Any], *, created: bool) -> None:
    stage_field, semantic_field = STAGE_FIELDS[entity]
    semantic = record.get(semantic_field) or "P"
    rows = stage_history(portal)
    row = {
        "ID": len(rows) + 1,
        "TYPE_ID": 1 if created else (3 if semantic in ("S", "F") else 2),
        "OWNER_ID": record["ID"],
        "CREATED_TIME": record.get("MOVED_TIME") or portal.now(),
        stage_field: record.get(stage_field),
        semantic_field: semantic,
        "_entity": entity,
    }
    if entity == "deal":
        row["CATEGORY_ID"] = record.get("CATEGORY_ID") or 0
    rows.append(row)


def _stage_history_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    entity = ENTITY_TYPE_IDS.get(_int(params.get("ENTITYTYPEID")))
    if entity is None:
        raise RestError("ENTITY_TYPE_NOT_SUPPORTED", "Entity type is not supported", 400)
    raw_filter = params.get("FILTER") if isinstance(params.get("FILTER"), Mapping) else {}
    rows = [row for row in stage_history(context.portal) if row["_entity"] == entity]
    for key, expected in raw_filter.items():
        rows = [row for row in rows if _matches(row, str(key), expected)]
    order = params.get("ORDER") if isinstance(params.get("ORDER"), Mapping) else {"ID": "ASC"}
    for name, direction in reversed(list(order.items())):
        field = str(name).upper()
        rows.sort(key=lambda row, n=field: row.get(n) or 0, reverse=str(direction).upper() == "DESC")
    start = _to_start(params)
    if str(params.get("START")).strip() == "-1":
        page, total, next_start = rows[:PAGE_SIZE], 0, None
    else:
        page, total = rows[start : start + PAGE_SIZE], len(rows)
        next_start = start + PAGE_SIZE if start + PAGE_SIZE < total else None
    items = [{key: _wire(value) for key, value in row.items() if key[0] != "_"} for row in page]
    return MethodResult({"items": items}, total=total, next=next_start)


def _matches(row: Mapping[str, Any], key: str, expected: Any) -> bool:
    for operator in (">=", "<=", "!=", ">", "<", "="):
        if key.startswith(operator):
            name = key[len(operator) :].upper()
            break
    else:
        operator, name = "=", key.upper()
    value = row.get(name)
    if isinstance(value, datetime):
        from .store import parse_datetime

        bound: Any = parse_datetime(expected, value.tzinfo)
        if bound is None:
            return True
    else:
        value, bound = (_int(value), _int(expected)) if name in ("ID", "OWNER_ID", "TYPE_ID", "CATEGORY_ID") else (
            str(value), str(expected))  # fmt: skip
    return {
        "=": value == bound,
        "!=": value != bound,
        ">": value > bound,
        ">=": value >= bound,
        "<": value < bound,
        "<=": value <= bound,
    }[operator]


def _wire(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0
