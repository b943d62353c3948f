"""REST method handlers: parameter handling and result shapes of each emulated method.

Every handler takes a ``CallContext`` (the portal data plus an event sink) and the request parameters with their
top-level keys upper-cased, because the CRM REST layer reads ``id``/``ID`` and ``fields``/``FIELDS`` alike (the docs'
own examples use both spellings). ``batch`` is not here: it needs the request pipeline and lives in the server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from . import errors
from .errors import RestError
from .schema import ENTITIES
from .store import PAGE_SIZE, Portal

__all__ = ["METHODS", "CallContext", "MethodResult", "normalize_method_name"]

FINDBYCOMM_MAX_VALUES = 20  # crm-duplicate-find-by-comm.md
FINDBYCOMM_ENTITY_TYPES = ("LEAD", "CONTACT", "COMPANY")
CRM_MODE_IDS = {"classic": 1, "simple": 2}  # crm.enum.settings.mode


@dataclass
class MethodResult:
    """What a method returns: ``result`` plus, for list methods, ``total`` and ``next``."""

    result: Any
    total: int | None = None
    next: int | None = None


class CallContext(Protocol):
    portal: Portal
    # Records the webhook's user may not see (entity → ids); empty for what a manager does in the UI.
    hidden: Mapping[str, frozenset[int]]

    def emit(self, event: str, record_id: int) -> None:
        """Queue an outbound event such as ONCRMLEADADD for the record."""


Handler = Callable[[CallContext, dict[str, Any]], MethodResult]


def normalize_method_name(raw: str) -> str:
    """Method names are case-insensitive and may end in ``.json``; a trailing slash is tolerated too."""
    name = raw.strip().strip("/").lower()
    return name.removesuffix(".json")


# --------------------------------------------------------------------------------------------------------------------
# CRM entities: crm.lead.*, crm.deal.*, crm.contact.*
# --------------------------------------------------------------------------------------------------------------------


def _add(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    fields = _fields_param(params)
    record_id = context.portal.add(entity, fields)
    context.emit(ENTITIES[entity].event_prefix + "ADD", record_id)
    if entity == "lead" and context.portal.crm_mode == "simple":
        # Simple CRM mode has no leads: the new lead is converted at once (see Portal.convert_lead).
        created = context.portal.convert_lead(record_id)
        for created_entity, created_id in created:
            context.emit(ENTITIES[created_entity].event_prefix + "ADD", created_id)
    return MethodResult(record_id)  # the new id is an integer, unlike the string IDs inside records


def _check_access(entity: str, context: CallContext, record_id: int, *, write: bool = False) -> None:
    """A record the webhook's user may not see answers «Access denied» (crm-lead-get.md) — once it exists: a
    missing one is still «Not found». An activity is hidden with its owner."""
    record = context.portal.records[entity].get(record_id)
    if record is None:
        return
    if record_id in context.hidden.get(entity, ()):
        raise errors.access_denied(write)
    if entity == "activity":
        owner = {1: "lead", 2: "deal", 3: "contact", 4: "company"}.get(_as_int(record.get("OWNER_TYPE_ID")))
        if owner and _as_int(record.get("OWNER_ID")) in context.hidden.get(owner, ()):
            raise errors.access_denied(write)


def _visible(entity: str, context: CallContext, record: Mapping[str, Any]) -> bool:
    try:
        _check_access(entity, context, _as_int(record.get("ID")))
    except RestError:
        return False
    return True


def _as_int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def _update(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    record_id = _required_id(params)
    _check_access(entity, context, record_id, write=True)
    context.portal.update(entity, record_id, _fields_param(params))
    context.emit(ENTITIES[entity].event_prefix + "UPDATE", record_id)
    return MethodResult(True)


def _get(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    record_id = _required_id(params)
    _check_access(entity, context, record_id)
    record = context.portal.get_record(entity, record_id)
    return MethodResult(context.portal.render(entity, record))


def _list(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    # A list shows only what the user may see: hidden records are left out, with no error (as permissions filter).
    visible = None if not context.hidden else (lambda record: _visible(entity, context, record))
    page = context.portal.list_page(entity, params, visible=visible)
    return MethodResult(page.rows, total=page.total, next=page.next)


def _delete(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    record_id = _required_id(params)
    _check_access(entity, context, record_id, write=True)
    context.portal.delete(entity, record_id)
    context.emit(ENTITIES[entity].event_prefix + "DELETE", record_id)
    return MethodResult(True)


def _fields(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    return MethodResult(context.portal.fields_description(entity))


def _userfield_add(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    return MethodResult(context.portal.userfield_add(entity, params.get("FIELDS")))


def _userfield_list(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    rows = context.portal.userfield_list(entity, params)
    return MethodResult(rows, total=len(rows))


def _userfield_get(entity: str, context: CallContext, params: dict[str, Any]) -> MethodResult:
    return MethodResult(context.portal.userfield_get(entity, params.get("ID")))


def _required_id(params: Mapping[str, Any]) -> int:
    raw = params.get("ID")
    text = str(raw).strip() if raw is not None and not isinstance(raw, bool | Mapping | list) else ""
    if not text.isdigit() or int(text) <= 0:
        raise errors.invalid_id()
    return int(text)


def _fields_param(params: Mapping[str, Any]) -> Mapping[str, Any]:
    fields = params.get("FIELDS")
    if fields is None or fields == "" or isinstance(fields, list):
        return {}  # a PHP list (e.g. "fields[]=" for an empty map) carries no field names
    if not isinstance(fields, Mapping):
        raise RestError("", "Invalid parameters.")
    return fields


# --------------------------------------------------------------------------------------------------------------------
# Duplicates, dictionaries, users
# --------------------------------------------------------------------------------------------------------------------


def _find_by_communication(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm.duplicate.findbycomm; an empty result is ``{}``, which goes out as ``[]`` like PHP prints it."""
    comm_type = str(params.get("TYPE") or "").strip().upper()
    if not comm_type:
        raise RestError("", "Communication type is not defined.")
    if comm_type not in ("PHONE", "EMAIL"):
        raise RestError("", f"Communication type '{comm_type}' is not supported in current context.")
    raw_values = params.get("VALUES")
    if isinstance(raw_values, Mapping):
        raw_values = list(raw_values.values())
    elif not isinstance(raw_values, list):
        raw_values = [] if raw_values in (None, "") else [raw_values]
    values = [str(value) for value in raw_values if value not in (None, "")]
    if not values:
        raise RestError("", "Communication values is not defined.")
    if len(values) > FINDBYCOMM_MAX_VALUES:
        # The limit is documented; the wording of this error is not, so this text is our own.
        raise RestError("", f"Too many communication values. The maximum is {FINDBYCOMM_MAX_VALUES}.")
    entity_type = str(params.get("ENTITY_TYPE") or "").strip().upper()
    if entity_type and entity_type not in FINDBYCOMM_ENTITY_TYPES:
        raise RestError("", f"Entity type '{entity_type}' is not supported in current context.")
    entity_types = [entity_type] if entity_type else list(FINDBYCOMM_ENTITY_TYPES)
    return MethodResult(context.portal.find_by_communication(comm_type, values, entity_types))


def _status_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    rows = context.portal.status_list(params)
    # crm.status.list answers with a single page of at most 50 rows and never offers "next".
    return MethodResult(rows[:PAGE_SIZE], total=len(rows))


def _status_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    return MethodResult(context.portal.status_add(params.get("FIELDS")))


def _currency_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    rows = context.portal.currency_list()
    return MethodResult(rows, total=len(rows))


def _user_get(context: CallContext, params: dict[str, Any]) -> MethodResult:
    users = context.portal.user_list(params)
    start = _to_start(params)
    page = users[start : start + PAGE_SIZE]
    next_start = start + PAGE_SIZE if start + PAGE_SIZE < len(users) else None
    return MethodResult(page, total=len(users), next=next_start)


def _user_current(context: CallContext, params: dict[str, Any]) -> MethodResult:
    auth = getattr(context, "auth", None)  # an application token's own user (messaging.py), else the webhook's
    user_id = auth.user_id if auth is not None else context.portal.webhook_user_id
    return MethodResult(context.portal.user_list({"ID": user_id})[0])


def _timeline_comment_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    # The server passes only lower-case parameter names to this method (crm 23.100.0); a missing ``fields`` is the
    # engine controller's error for a missing action parameter (code 100 in crm-timeline-comment-add.md).
    if "FIELDS" not in params:
        raise RestError("100", "Could not find value for parameter {fields}", 400)
    return MethodResult(context.portal.timeline_comment_add(_fields_param(params)))


def _stage_history_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm.stagehistory.list for leads (entityTypeId 1) and deals (2); rows come wrapped in ``items``."""
    raw_type = str(params.get("ENTITYTYPEID") or "").strip()
    if raw_type not in ("1", "2"):
        raise RestError("ENTITY_TYPE_NOT_SUPPORTED", f"Entity type {raw_type or '0'} is not supported")
    rows = context.portal.stage_history_list(int(raw_type), params)
    start = _to_start(params)
    next_start = start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None
    return MethodResult({"items": rows[start : start + PAGE_SIZE]}, total=len(rows), next=next_start)


def _settings_mode_get(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm-settings-mode-get.md: 1 for classic CRM (with leads), 2 for simple CRM (without leads)."""
    return MethodResult(CRM_MODE_IDS[context.portal.crm_mode])


def _enum_settings_mode(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """crm-enum-settings-mode.md: the modes that crm.settings.mode.get's number stands for."""
    names = {"classic": "Classic CRM", "simple": "Simple CRM"}
    return MethodResult(
        [
            {"ID": mode_id, "NAME": names[mode], "SYMBOL_CODE": None, "SYMBOL_CODE_SHORT": None}
            for mode, mode_id in CRM_MODE_IDS.items()
        ]
    )


def _timeline_comment_list(context: CallContext, params: dict[str, Any]) -> MethodResult:
    rows = context.portal.timeline_comment_list(params)
    start = _to_start(params)
    page = rows[start : start + PAGE_SIZE]
    return MethodResult(page, total=len(rows), next=start + PAGE_SIZE if start + PAGE_SIZE < len(rows) else None)


def _to_start(params: Mapping[str, Any]) -> int:
    try:
        return max(int(str(params.get("START") or 0).strip()), 0)
    except ValueError:
        return 0


def _profile(context: CallContext, params: dict[str, Any]) -> MethodResult:
    return MethodResult(context.portal.profile())


def _user_admin(context: CallContext, params: dict[str, Any]) -> MethodResult:
    """user-admin.md: whether the current user (the webhook's) may manage the portal's applications; no parameters,
    any user may call it, ``{"result": true}``."""
    return MethodResult(bool(context.portal.webhook_user_admin))


# --------------------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------------------


def _registry() -> dict[str, Handler]:
    methods: dict[str, Handler] = {}
    for entity in ENTITIES:
        prefix = f"crm.{entity}."
        for action, handler in (
            ("add", _add),
            ("update", _update),
            ("get", _get),
            ("list", _list),
            ("delete", _delete),
            ("fields", _fields),
            ("userfield.add", _userfield_add),
            ("userfield.list", _userfield_list),
            ("userfield.get", _userfield_get),
        ):
            methods[prefix + action] = partial(handler, entity)
    methods.update(
        {
            "crm.duplicate.findbycomm": _find_by_communication,
            "crm.status.list": _status_list,
            "crm.status.add": _status_add,
            "crm.currency.list": _currency_list,
            "user.get": _user_get,
            "user.current": _user_current,
            "profile": _profile,
            "user.admin": _user_admin,
            "crm.timeline.comment.add": _timeline_comment_add,
            "crm.timeline.comment.list": _timeline_comment_list,
            "crm.settings.mode.get": _settings_mode_get,
            "crm.stagehistory.list": _stage_history_list,
            "crm.enum.settings.mode": _enum_settings_mode,
        }
    )
    return methods


METHODS: dict[str, Handler] = _registry()


# Activities live in their own module; they extend the registry above.
from .activities import register as _register_activities  # noqa: E402

_register_activities(METHODS)

# Activity bindings, to-dos, a deal's contacts, merges and call statistics (links.py).
from .links import register as _register_links  # noqa: E402

_register_links(METHODS)

# Notifications, chat messages, tasks, scope and app.info: messaging.py adds them to METHODS when the server imports
# it (it needs this module's types first).
