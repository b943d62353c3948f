"""Activities: ``crm.activity.add`` with the checks of crm-activity-add.md (the other ``crm.activity.*`` methods come
from the generic registry). Stage history (``crm.stagehistory.list``) is recorded by the store where a stage moves
(``store.stage_history_list``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import RestError
from .links import add_activity
from .methods import CallContext, MethodResult, _fields_param

__all__ = ["register"]

OWNER_TYPES = {1: "lead", 2: "deal", 3: "contact", 4: "company"}
ENTITY_TYPE_IDS = {1: "lead", 2: "deal"}
STAGE_FIELDS = {"lead": ("STATUS_ID", "STATUS_SEMANTIC_ID"), "deal": ("STAGE_ID", "STAGE_SEMANTIC_ID")}


def register(methods: dict[str, Callable[[CallContext, dict[str, Any]], MethodResult]]) -> None:
    for action in ("userfield.add", "userfield.list", "userfield.get"):
        methods.pop(f"crm.activity.{action}", None)  # activities have no user fields in the REST API
    methods["crm.activity.add"] = _activity_add


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
    # The owner is the activity's first binding (crm.activity.binding.list); more come with crm.activity.binding.add.
    return MethodResult(add_activity(context, fields))


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0
