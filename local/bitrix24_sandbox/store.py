"""In-memory CRM data of one emulated portal and the query rules of the old ``crm.*`` list methods.

Values are stored as Python values (integers, floats, aware datetimes) and converted to the wire form only when a
record is rendered: IDs and numbers become strings, money gets two decimals, dates become ISO 8601 with the portal
offset, empty dates become ``""``. That mirrors what the real API returns for ``crm.lead.get`` and friends.

The ``Portal`` class is not thread-safe by itself; the server runs every REST call under one lock.
"""

from __future__ import annotations

import copy
import re
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from . import errors
from .errors import RestError
from .schema import (
    COMPANY,
    COMPANY_TYPES,
    CONTACT,
    CURRENCIES,
    DEAL,
    DEAL_STAGES,
    EMPLOYEES,
    ENTITIES,
    EXTRA_SEMANTICS,
    LEAD,
    LEAD_STATUSES,
    SOURCES,
    USERS,
    EntitySpec,
)

__all__ = ["PAGE_SIZE", "ListPage", "Portal"]

PAGE_SIZE = 50  # list methods always return pages of 50 rows (crm-lead-list.md)
MULTI_FIELD_TYPES = ("PHONE", "EMAIL", "WEB", "IM")
USERFIELD_PREFIX = "UF_CRM_"
USERFIELD_NAME_LIMIT = 50  # crm-deal-userfield-add.md: "Field name is too long (more than 50 characters)."
USERFIELD_TYPES = frozenset(
    {
        "string",
        "integer",
        "double",
        "boolean",
        "datetime",
        "date",
        "money",
        "url",
        "address",
        "enumeration",
        "file",
        "employee",
        "crm_status",
        "iblock_section",
        "iblock_element",
        "crm",
    }
)
# Languages in which crm.*.userfield.get returns labels (crm-deal-userfield-get.md).
LABEL_LANGUAGES = (
    "ar", "br", "de", "en", "fr", "hi", "id", "in", "it", "ja", "kz", "la", "ms", "pl", "ru", "sc", "tc", "th", "tr",
    "ua", "vn",
)  # fmt: skip
LABEL_KEYS = ("EDIT_FORM_LABEL", "LIST_COLUMN_LABEL", "LIST_FILTER_LABEL", "ERROR_MESSAGE", "HELP_MESSAGE")

_INTEGER_TYPES = frozenset({"integer", "user", "crm_company", "crm_contact", "crm_lead", "crm_category"})
_NUMBER_TYPES = _INTEGER_TYPES | {"double"}
_DATE_TYPES = frozenset({"date", "datetime"})
_BLANK = (None, "")
_STAGE_HISTORY_COMMON = {"ID": "number", "TYPE_ID": "number", "OWNER_ID": "number", "CREATED_TIME": "date"}
_STAGE_HISTORY_KINDS = {
    1: _STAGE_HISTORY_COMMON | {"STATUS_SEMANTIC_ID": "text", "STATUS_ID": "text"},
    2: _STAGE_HISTORY_COMMON | {"CATEGORY_ID": "number", "STAGE_SEMANTIC_ID": "text", "STAGE_ID": "text"},
}
# Fields a lead hands on when simple CRM mode converts it (see Portal.convert_lead).
_CONVERTED_CONTACT_FIELDS = (
    "HONORIFIC",
    "NAME",
    "SECOND_NAME",
    "LAST_NAME",
    "BIRTHDATE",
    "POST",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "ASSIGNED_BY_ID",
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
)
_CONVERTED_DEAL_FIELDS = (
    "TITLE",
    "OPPORTUNITY",
    "CURRENCY_ID",
    "SOURCE_ID",
    "SOURCE_DESCRIPTION",
    "COMMENTS",
    "ASSIGNED_BY_ID",
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
)


# --------------------------------------------------------------------------------------------------------------------
# The portal
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ListPage:
    """One page of a list method: rows plus ``total``/``next`` exactly as the envelope should carry them."""

    rows: list[dict[str, Any]]
    total: int
    next: int | None


class Portal:
    """All CRM data of the emulated portal."""

    def __init__(self, *, webhook_user_id: int, tz: tzinfo, now: Callable[[], datetime] | None = None) -> None:
        self.webhook_user_id = webhook_user_id
        self.tz = tz
        self._now = now or (lambda: datetime.now(self.tz))
        self.crm_mode = "classic"  # or "simple": kept across reset(), like a portal setting
        self.webhook_user_admin = True  # user.admin for the webhook's user (Sandbox.set_access)
        self.scopes: tuple[str, ...] = ("crm", "user", "im", "task", "telephony")  # the webhook's (Sandbox.set_access)
        self.reset()

    def reset(self) -> None:
        """Forget every record and user field; re-create the seeded dictionaries."""
        self.records: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in ENTITIES}
        self._next_record_id = dict.fromkeys(ENTITIES, 1)
        self._next_multifield_id = 1
        self.userfields: dict[str, list[dict[str, Any]]] = {name: [] for name in ENTITIES}
        self._next_userfield_id = 1
        self._next_enum_id = 1
        self.statuses: list[dict[str, Any]] = []
        self._seed_statuses()
        self.timeline_comments: list[dict[str, Any]] = []
        # Every stage a lead or deal entered, oldest first: what crm.stagehistory.list reads.
        self.stage_history: list[dict[str, Any]] = []
        # Telephony statistics (voximplant.statistic.get): one row per call, written when the call ends.
        self.call_statistics: list[dict[str, Any]] = []
        self.users = self._seed_users()
        # Notifications, chat messages and tasks (messaging.py); chats by id with their members.
        self.notifications: list[dict[str, Any]] = []
        self.chat_messages: list[dict[str, Any]] = []
        self.tasks: list[dict[str, Any]] = []
        self.chats: dict[int, dict[str, Any]] = {}
        self.next_notification_id = self.next_message_id = self.next_task_id = 0

    def now(self) -> datetime:
        return self._now().astimezone(self.tz).replace(microsecond=0)

    # ---- records ---------------------------------------------------------------------------------------------------

    def add(self, entity: str, fields: Mapping[str, Any]) -> int:
        spec = ENTITIES[entity]
        record_id = self._next_record_id[entity]
        self._next_record_id[entity] += 1
        now = self.now()
        record: dict[str, Any] = {field.name: None for field in spec.fields}
        record.update(self._defaults(spec, now))
        record.update({"ID": record_id, "DATE_CREATE": now, "DATE_MODIFY": now})
        if spec.has_multifields:
            record.update({type_id: [] for type_id in MULTI_FIELD_TYPES})
        for userfield in self.userfields[entity]:
            record[userfield["FIELD_NAME"]] = [] if userfield["MULTIPLE"] == "Y" else None
        self._write_fields(spec, record, fields, is_add=True)
        self._derive(spec, record, previous=None, now=now)
        self.records[entity][record_id] = record
        return record_id

    def update(self, entity: str, record_id: int, fields: Mapping[str, Any]) -> None:
        spec = ENTITIES[entity]
        record = self.get_record(entity, record_id)
        previous = dict(record)
        self._write_fields(spec, record, fields, is_add=False)
        now = self.now()
        record.update({"DATE_MODIFY": now, "MODIFY_BY_ID": self.webhook_user_id})
        if entity == "activity":  # crm-activity-fields.md: LAST_UPDATED and EDITOR_ID follow every change
            record.update({"LAST_UPDATED": now, "EDITOR_ID": self.webhook_user_id})
        self._derive(spec, record, previous=previous, now=now)

    def convert_lead(self, lead_id: int) -> list[tuple[str, int]]:
        """Simple CRM mode: convert a lead just added into a contact and a deal; returns what was created, in order.

        What the docs say (leads/index.md; tutorials/crm/how-to-add-crm-objects/how-to-add-objects-with-crm-mode.md):
        in simple mode "the system automatically converts a new lead into a deal, and the lead receives the
        ``CONVERTED`` status"; the deal is found by ``crm.deal.list`` with ``filter[LEAD_ID]``; a lead without a
        first name is not converted and keeps ``NEW``. The contact comes from the lead's name and communications
        (a lead that names a ``CONTACT_ID`` keeps that contact instead). Which fields go across is not
        documented: we copy the common standard ones (title, amount, source, UTM, responsible, comments) but not
        ``ORIGINATOR_ID``/``ORIGIN_ID`` nor user fields, so a client cannot find the deal by them.
        """
        lead = self.get_record("lead", lead_id)
        if not str(lead.get("NAME") or "").strip():
            return []
        created: list[tuple[str, int]] = []
        contact_id = lead.get("CONTACT_ID") if lead.get("CONTACT_ID") in self.records["contact"] else None
        if contact_id is None:
            person = {name: lead.get(name) for name in _CONVERTED_CONTACT_FIELDS if lead.get(name) not in _BLANK}
            for type_id in MULTI_FIELD_TYPES:
                person[type_id] = [
                    {"VALUE": entry["VALUE"], "VALUE_TYPE": entry["VALUE_TYPE"]} for entry in lead.get(type_id) or []
                ]
            contact_id = self.add("contact", person)
            self.records["contact"][contact_id]["LEAD_ID"] = lead_id
            created.append(("contact", contact_id))
        deal_fields = {name: lead.get(name) for name in _CONVERTED_DEAL_FIELDS if lead.get(name) not in _BLANK}
        deal_id = self.add("deal", {**deal_fields, "CONTACT_ID": contact_id})
        self.records["deal"][deal_id]["LEAD_ID"] = lead_id
        created.append(("deal", deal_id))
        previous = dict(lead)
        lead.update({"STATUS_ID": "CONVERTED", "CONTACT_ID": contact_id})
        self._derive(LEAD, lead, previous=previous, now=self.now())
        lead["IS_RETURN_CUSTOMER"] = previous["IS_RETURN_CUSTOMER"]  # a converted lead is not a repeat one
        return created

    def stage_history_list(self, entity_type_id: int, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """crm-stage-history-list.md rows for leads (``entityTypeId`` 1) or deals (2), filtered and ordered.

        ``filter`` takes the row fields with the usual prefixes (``OWNER_ID``, ``@OWNER_ID``, ``>=CREATED_TIME``…);
        an unknown field is refused as the docs show. ``order`` defaults to ``ID ASC``.
        """
        rows = [row for row in self.stage_history if row["ENTITY_TYPE_ID"] == entity_type_id]
        kinds = _STAGE_HISTORY_KINDS[entity_type_id]
        raw_filter = params.get("FILTER")
        for raw_key, expected in raw_filter.items() if isinstance(raw_filter, Mapping) else []:
            operator, name = _split_filter_key(str(raw_key))
            if name.upper() not in kinds:
                raise errors.RestError("INVALID_ARG_VALUE", f"Invalid filter: field '{name}' is not allowed in filter")
            condition = _make_condition(name.upper(), kinds[name.upper()], False, operator, expected, self.tz)
            rows = [row for row in rows if condition is None or condition(row)]
        raw_order = params.get("ORDER")
        rows.sort(key=lambda row: row["ID"])
        for raw_name, direction in reversed(list(raw_order.items()) if isinstance(raw_order, Mapping) else []):
            name, direction = str(raw_name).upper(), str(direction).strip().upper()
            if name not in kinds:
                raise errors.RestError(
                    "INVALID_ARG_VALUE", f"Invalid order: field '{raw_name}' is not allowed in order"
                )
            if direction not in ("ASC", "DESC"):
                raise errors.RestError(
                    "INVALID_ARG_VALUE",
                    "Invalid order: allowed sort directions are ASC, DESC. "
                    f"But got '{direction}' for field '{raw_name}'",
                )
            rows.sort(key=lambda row, n=name: _sort_key(row.get(n), kinds[n], self.tz), reverse=direction == "DESC")
        select = params.get("SELECT")
        names = [str(name).upper() for name in select] if isinstance(select, list) and select else list(kinds)
        return [
            {
                name: _render_datetime(row[name], self.tz) if name == "CREATED_TIME" else row[name]
                for name in names
                if name in row
            }
            for row in rows
        ]

    def delete(self, entity: str, record_id: int) -> None:
        self.get_record(entity, record_id)
        del self.records[entity][record_id]

    def get_record(self, entity: str, record_id: int) -> dict[str, Any]:
        record = self.records[entity].get(record_id)
        if record is None:
            raise errors.not_found()
        return record

    def render(self, entity: str, record: Mapping[str, Any], select: Any = None) -> dict[str, Any]:
        """A record as the API returns it; ``select=None`` means everything ``crm.*.get`` returns."""
        spec = ENTITIES[entity]
        names = self._all_names(spec) if select is None else self._selected_names(spec, select)
        userfields = {userfield["FIELD_NAME"]: userfield for userfield in self.userfields[entity]}
        rendered: dict[str, Any] = {}
        for name in names:
            if name in MULTI_FIELD_TYPES:
                # A multi-field without values is absent from the record rather than an empty list.
                if record.get(name):
                    rendered[name] = [_render_multifield(name, entry) for entry in record[name]]
            elif name in userfields:
                rendered[name] = _render_userfield_value(userfields[name], record.get(name), self.tz)
            else:
                field = spec.field(name)
                if field is not None:
                    rendered[name] = _render_value(field.type, record.get(name), self.tz)
        return rendered

    def list_page(
        self, entity: str, params: Mapping[str, Any], visible: Callable[[Mapping[str, Any]], bool] | None = None
    ) -> ListPage:
        """Filter, order, page and select rows the way ``crm.*.list`` does; ``visible`` leaves out what the caller
        may not see."""
        spec = ENTITIES[entity]
        conditions = self._compile_filter(spec, params.get("FILTER"))
        if visible is not None:
            conditions.append(visible)
        if (_to_int(params.get("START")) or 0) < 0 and _id_ascending(params.get("ORDER")):
            # The fast scan (``>ID``, ``order ID ASC``, ``start=-1``): the same page, found without reading the whole
            # table — records are kept in ID order (ids only grow), so the scan starts after the ``>ID`` bound and
            # stops at the 50th match. A speed-up of the emulator only: what it answers is unchanged.
            found = []
            keys = list(self.records[entity])
            for key in keys[bisect_right(keys, _id_floor(params.get("FILTER"))) :]:
                record = self.records[entity][key]
                if all(test(record) for test in conditions):
                    found.append(record)
                    if len(found) == PAGE_SIZE:
                        break
            select = params.get("SELECT")
            return ListPage([self.render(entity, record, select or []) for record in found], 0, None)
        rows = [record for record in self.records[entity].values() if all(test(record) for test in conditions)]
        rows = self._order(spec, rows, params.get("ORDER"))
        start = _to_int(params.get("START")) or 0
        if start < 0:
            # start=-1 skips the COUNT query: the page starts at 0, total is 0 and there is no "next" (huge-data.md).
            page, total, next_start = rows[:PAGE_SIZE], 0, None
        else:
            page, total = rows[start : start + PAGE_SIZE], len(rows)
            next_start = start + PAGE_SIZE if start + PAGE_SIZE < total else None
        select = params.get("SELECT")
        return ListPage([self.render(entity, record, select or []) for record in page], total, next_start)

    def fields_description(self, entity: str) -> dict[str, Any]:
        """The result of ``crm.*.fields``: standard fields, multi-fields, then user fields."""
        spec = ENTITIES[entity]
        described: dict[str, Any] = {}
        for field in spec.fields:
            described[field.name] = _field_info(field.type, field.title, field.read_only, field.immutable)
            if field.status_type:
                described[field.name]["statusType"] = field.status_type
        if spec.has_multifields:
            for type_id in MULTI_FIELD_TYPES:
                described[type_id] = _field_info("crm_multifield", type_id.title(), multiple=True)
        for userfield in self.userfields[entity]:
            label = userfield["EDIT_FORM_LABEL"].get("en") or userfield["FIELD_NAME"]
            multiple = userfield["MULTIPLE"] == "Y"
            info = _field_info(userfield["USER_TYPE_ID"], userfield["FIELD_NAME"], multiple=multiple)
            info.update(
                isRequired=userfield["MANDATORY"] == "Y",
                isDynamic=True,
                listLabel=userfield["LIST_COLUMN_LABEL"].get("en") or label,
                formLabel=label,
                filterLabel=userfield["LIST_FILTER_LABEL"].get("en") or label,
            )
            described[userfield["FIELD_NAME"]] = info
        return described

    # ---- user fields -----------------------------------------------------------------------------------------------

    def userfield_add(self, entity: str, fields: Any) -> int:
        if not isinstance(fields, Mapping):
            raise RestError("ERROR_CORE", "The 'FIELD_NAME' field is not found.")
        name = _userfield_name(fields.get("FIELD_NAME"))
        if any(existing["FIELD_NAME"] == name for existing in self.userfields[entity]):
            raise RestError("ERROR_CORE", f"A user field with the code {name} already exists.")
        user_type = str(fields.get("USER_TYPE_ID") or "").strip()
        if not user_type:
            raise RestError("ERROR_CORE", "The 'USER_TYPE_ID' field is not found.")
        if user_type not in USERFIELD_TYPES:
            raise RestError("ERROR_CORE", "Invalid custom type specified.")
        multiple = _to_char(fields.get("MULTIPLE"), default="N")
        if user_type == "boolean":
            multiple = "N"  # the docs: a boolean field cannot be multiple
        label = fields.get("LABEL")
        userfield: dict[str, Any] = {
            "ID": self._next_userfield_id,
            "ENTITY_ID": ENTITIES[entity].entity_id,
            "FIELD_NAME": name,
            "USER_TYPE_ID": user_type,
            "XML_ID": fields.get("XML_ID"),
            "SORT": _to_int(fields.get("SORT")) or 100,
            "MULTIPLE": multiple,
            "MANDATORY": _to_char(fields.get("MANDATORY"), default="N"),
            "SHOW_FILTER": _to_char(fields.get("SHOW_FILTER"), default="N"),
            "SHOW_IN_LIST": _to_char(fields.get("SHOW_IN_LIST"), default="Y"),
            "EDIT_IN_LIST": _to_char(fields.get("EDIT_IN_LIST"), default="Y"),
            "IS_SEARCHABLE": _to_char(fields.get("IS_SEARCHABLE"), default="N"),
            "SETTINGS": dict(fields.get("SETTINGS")) if isinstance(fields.get("SETTINGS"), Mapping) else {},
        }
        for key in LABEL_KEYS:
            userfield[key] = _label_map(fields.get(key), label)
        if user_type == "enumeration":
            userfield["LIST"] = self._enumeration_items(fields.get("LIST"))
        self._next_userfield_id += 1
        self.userfields[entity].append(userfield)
        for record in self.records[entity].values():
            record[name] = [] if multiple == "Y" else None
        return userfield["ID"]

    def userfield_list(self, entity: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw_filter = params.get("FILTER")
        filter_map = raw_filter if isinstance(raw_filter, Mapping) else {}
        language = next((value for key, value in filter_map.items() if str(key).upper() == "LANG"), None)
        matched = [
            userfield
            for userfield in self.userfields[entity]
            if all(
                str(userfield.get(str(key).upper(), "")).upper() == str(value).upper()
                for key, value in filter_map.items()
                if str(key).upper() != "LANG"
            )
        ]
        order = params.get("ORDER") if isinstance(params.get("ORDER"), Mapping) else {"SORT": "ASC", "ID": "ASC"}
        matched = _sort_plain(matched, order)
        # Labels come back as strings only when filter.LANG is given, and not at all otherwise (the list docs).
        return [_render_userfield(userfield, labels=str(language) if language else None) for userfield in matched]

    def userfield_get(self, entity: str, userfield_id: Any) -> dict[str, Any]:
        wanted = _to_int(userfield_id)
        if not wanted or wanted <= 0:
            raise errors.invalid_id()
        for userfield in self.userfields[entity]:
            if userfield["ID"] == wanted:
                return _render_userfield(userfield, labels="*")
        raise RestError("ERROR_NOT_FOUND", f"The entity with ID '{wanted}' is not found.")

    # ---- duplicates ------------------------------------------------------------------------------------------------

    def find_by_communication(self, comm_type: str, values: list[str], entity_types: list[str]) -> dict[str, list[int]]:
        """IDs per entity type whose PHONE/EMAIL equals one of ``values``.

        Phones are compared as whole strings with only an extension ignored, so different formats of one number do
        not match; e-mails are compared case-insensitively. Once one type has 20 matches, later types are skipped, as
        crm-duplicate-find-by-comm.md describes.
        """
        normalize = _normalize_phone if comm_type == "PHONE" else _normalize_email
        wanted = {normalize(value) for value in values if str(value).strip()}
        found: dict[str, list[int]] = {}
        for entity_type in entity_types:
            entity = entity_type.lower()
            if entity not in self.records:
                continue  # companies are not emulated
            ids = [
                record_id
                for record_id, record in sorted(self.records[entity].items())
                if any(normalize(entry["VALUE"]) in wanted for entry in record.get(comm_type) or [])
            ][:20]
            if ids:
                found[entity_type] = ids
            if len(ids) >= 20:
                break
        return found

    # ---- dictionaries ----------------------------------------------------------------------------------------------

    def status_list(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw_filter = params.get("FILTER")
        filter_map = raw_filter if isinstance(raw_filter, Mapping) else {}
        matched = [
            status
            for status in self.statuses
            if all(str(status.get(key.upper(), "")).upper() == str(value).upper() for key, value in filter_map.items())
        ]
        order = params.get("ORDER") if isinstance(params.get("ORDER"), Mapping) else {"SORT": "ASC"}
        return [_render_status(status) for status in _sort_plain(matched, order)]

    def status_add(self, fields: Any) -> int:
        if not isinstance(fields, Mapping):
            raise RestError("", "Invalid parameters.")
        entity_id = str(fields.get("ENTITY_ID") or "").strip()
        status_id = str(fields.get("STATUS_ID") or "").strip()
        name = str(fields.get("NAME") or "").strip()
        if not entity_id:
            raise RestError("", "The field ENTITY_ID is required.")
        if not status_id:
            raise RestError("", "The field STATUS_ID is required.")
        if not name:
            raise RestError("", 'The required field "Title" is not filled.')
        pipeline = re.fullmatch(r"DEAL_STAGE_(\d+)", entity_id)
        if pipeline and not status_id.startswith(f"C{pipeline.group(1)}:"):
            status_id = f"C{pipeline.group(1)}:{status_id}"  # crm-status-add.md: the pipeline prefix is added
        if any(s["ENTITY_ID"] == entity_id and s["STATUS_ID"] == status_id for s in self.statuses):
            raise RestError("", "Duplicate STATUS_ID.")
        semantics = str(fields.get("SEMANTICS") or "").upper() or None
        return self._add_status(
            entity_id,
            status_id,
            name,
            sort=_to_int(fields.get("SORT")) or 10,
            semantics=semantics if semantics in ("S", "F") else None,
            color=fields.get("COLOR"),
            system="N",
            category_id=int(pipeline.group(1)) if pipeline else None,
        )

    def status_semantics(self, entity_id: str, status_id: str | None) -> str | None:
        for status in self.statuses:
            if status["ENTITY_ID"] == entity_id and status["STATUS_ID"] == status_id:
                return status["SEMANTICS"]
        return None

    def currency_list(self) -> list[dict[str, Any]]:
        return [
            {
                "CURRENCY": code,
                "AMOUNT_CNT": "1",
                "AMOUNT": amount,
                "SORT": str(sort),
                "BASE": base,
                "FULL_NAME": full_name,
                "LID": "ru",
                "FORMAT_STRING": format_string,
                "DEC_POINT": ".",
                "THOUSANDS_SEP": " ",
                "DECIMALS": "2",
                "DATE_UPDATE": self.now().isoformat(),
                "LANG": {"ru": {"FULL_NAME": full_name, "FORMAT_STRING": format_string}},
            }
            for code, full_name, amount, base, sort, format_string in CURRENCIES
        ]

    def user_list(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Users matching ``user.get`` parameters: a ``FILTER`` of exact field values, or such fields given directly
        as top-level parameters (``ID``, ``EMAIL``, ``ACTIVE``…), which user.get also accepts."""
        raw_filter = params.get("FILTER") if isinstance(params.get("FILTER"), Mapping) else {}
        conditions = {str(key).upper(): value for key, value in dict(raw_filter).items()}
        user_keys = set(self.users[0])
        conditions.update({key: value for key, value in params.items() if key in user_keys and value not in _BLANK})
        matched = [user for user in self.users if all(_user_matches(user, k, v) for k, v in conditions.items())]
        sort_key = str(params.get("SORT") or "ID").upper()
        descending = str(params.get("ORDER") or "ASC").upper() == "DESC"
        matched.sort(key=lambda user: _sortable_text(user.get(sort_key)), reverse=descending)
        return [copy.deepcopy(user) for user in matched]

    # ---- timeline comments (crm.timeline.comment.*) -----------------------------------------------------------------

    def timeline_comment_add(self, fields: Mapping[str, Any]) -> int:
        """crm-timeline-comment-add.md: the owner must exist; an empty comment is INVALID_ARG_VALUE."""
        owner_type = str(fields.get("ENTITY_TYPE") or "").strip().lower()
        owner_id = _to_int(fields.get("ENTITY_ID"))
        comment = str(fields.get("COMMENT") or "").strip()
        if not comment:
            raise errors.RestError("INVALID_ARG_VALUE", "Comment is empty", 400)
        if owner_type not in ("lead", "deal", "contact") or not owner_id or owner_id not in self.records[owner_type]:
            raise errors.RestError("OWNER_NOT_FOUND", "Owner of timeline entry not found", 400)
        comment_id = len(self.timeline_comments) + 1
        self.timeline_comments.append(
            {
                "ID": str(comment_id),
                "ENTITY_ID": str(owner_id),
                "ENTITY_TYPE": owner_type,
                "CREATED": self.now(),
                "COMMENT": comment,
                "AUTHOR_ID": str(self.webhook_user_id),
            }
        )
        return comment_id

    def timeline_comment_list(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        raw_filter = params.get("FILTER")
        raw_filter = raw_filter if isinstance(raw_filter, Mapping) else {}
        wanted = {str(key).upper(): str(value).lower() for key, value in raw_filter.items()}
        rows = [
            {**row, "CREATED": row["CREATED"].isoformat()}
            for row in self.timeline_comments
            if all(str(row.get(key, "")).lower() == value for key, value in wanted.items())
        ]
        return rows

    def profile(self) -> dict[str, Any]:
        user = next(user for user in self.users if user["ID"] == str(self.webhook_user_id))
        offset = self.now().utcoffset() or timedelta()
        return {
            "ID": user["ID"],
            "ADMIN": bool(self.webhook_user_admin),
            "NAME": user["NAME"],
            "LAST_NAME": user["LAST_NAME"],
            "PERSONAL_GENDER": user["PERSONAL_GENDER"],
            "PERSONAL_PHOTO": None,
            "TIME_ZONE": "",
            "TIME_ZONE_OFFSET": int(offset.total_seconds()),
        }

    # ---- internals: writing --------------------------------------------------------------------------------------

    def _defaults(self, spec: EntitySpec, now: datetime) -> dict[str, Any]:
        common = {
            "ASSIGNED_BY_ID": self.webhook_user_id,
            "CREATED_BY_ID": self.webhook_user_id,
            "MODIFY_BY_ID": self.webhook_user_id,
            "OPENED": "Y",
            "HAS_PHONE": "N",
            "HAS_EMAIL": "N",
            "HAS_IMOL": "N",
        }
        if spec is LEAD:
            return common | {
                "STATUS_ID": "NEW",
                "COMPANY_ID": 0,
                "CURRENCY_ID": "RUB",
                "OPPORTUNITY": 0.0,
                "IS_MANUAL_OPPORTUNITY": "N",
                "IS_RETURN_CUSTOMER": "N",
            }
        if spec is DEAL:
            return common | {
                "TYPE_ID": "SALE",
                "CATEGORY_ID": 0,
                "COMPANY_ID": 0,
                "CURRENCY_ID": "RUB",
                "OPPORTUNITY": 0.0,
                "IS_MANUAL_OPPORTUNITY": "N",
                "TAX_VALUE": 0.0,
                "IS_RECURRING": "N",
                "IS_RETURN_CUSTOMER": "N",
                "IS_REPEATED_APPROACH": "N",
                # crm-deal-add.md: the close date defaults to the creation date + 7 days.
                "BEGINDATE": now.date(),
                "CLOSEDATE": now.date() + timedelta(days=7),
            }
        if spec is COMPANY:
            return common | {"COMPANY_TYPE": "CUSTOMER", "CURRENCY_ID": "RUB", "REVENUE": 0.0, "IS_MY_COMPANY": "N"}
        if spec is CONTACT:
            return common | {"TYPE_ID": "CLIENT", "COMPANY_ID": 0, "EXPORT": "Y"}
        return common

    def _write_fields(
        self, spec: EntitySpec, record: dict[str, Any], fields: Mapping[str, Any], *, is_add: bool
    ) -> None:
        """Copy writable values from ``fields``; unknown and read-only keys are ignored as the docs say."""
        userfields = {userfield["FIELD_NAME"]: userfield for userfield in self.userfields[spec.name]}
        for name, value in fields.items():
            if spec.has_multifields and name in MULTI_FIELD_TYPES:
                self._write_multifield(record, name, value, is_add=is_add)
            elif name in userfields:
                record[name] = _coerce_userfield_value(userfields[name], value, self.tz)
            elif name == "CONTACT_IDS" and spec is not CONTACT:
                contact_ids = [item for item in (_to_int(item) for item in _as_list(value)) if item]
                record["CONTACT_ID"] = next(iter(contact_ids), None)
                if spec is DEAL:
                    # Every contact of the deal (crm.deal.contact.items.get); CONTACT_ID names only the first.
                    record["_CONTACT_IDS"] = list(dict.fromkeys(contact_ids))
            else:
                field = spec.field(name)
                if field is None or field.read_only or (field.immutable and not is_add):
                    continue
                record[name] = _coerce_value(field.type, value, self.tz)
                if spec is DEAL and name == "CONTACT_ID" and "CONTACT_IDS" not in fields:
                    # The deprecated single field binds that one contact as the first (primary) one.
                    others = [item for item in record.get("_CONTACT_IDS") or [] if item != record[name]]
                    record["_CONTACT_IDS"] = ([record[name]] if record[name] else []) + others

    def deal_contact_ids(self, deal_id: int) -> list[int]:
        """The contacts of a deal, the primary one first (crm.deal.contact.items.get)."""
        record = self.get_record("deal", deal_id)
        ids = record.get("_CONTACT_IDS")
        if ids is None:
            ids = [record["CONTACT_ID"]] if record.get("CONTACT_ID") else []
        return [item for item in ids if item in self.records["contact"]]

    def _write_multifield(self, record: dict[str, Any], type_id: str, value: Any, *, is_add: bool) -> None:
        """Apply crm_multifield entries: new ones are added; on update an entry with an ``ID`` changes that value,
        or deletes it when ``VALUE`` is empty or ``DELETE`` is ``Y`` (how-to-change-email-or-phone.md)."""
        current: list[dict[str, Any]] = record.setdefault(type_id, [])
        for entry in _multifield_entries(value):
            entry_id = _to_int(entry.get("ID"))
            existing = next((item for item in current if item["ID"] == entry_id), None) if entry_id else None
            if existing is not None and not is_add:
                if str(entry.get("DELETE") or "").upper() == "Y" or ("VALUE" in entry and entry["VALUE"] in _BLANK):
                    current.remove(existing)
                    continue
                if "VALUE" in entry:
                    existing["VALUE"] = str(entry["VALUE"])
                if entry.get("VALUE_TYPE"):
                    existing["VALUE_TYPE"] = str(entry["VALUE_TYPE"]).upper()
                continue
            if entry.get("VALUE") in _BLANK or str(entry.get("DELETE") or "").upper() == "Y":
                continue
            value_type = str(entry.get("VALUE_TYPE") or "WORK").upper()
            current.append({"ID": self._next_multifield_id, "VALUE_TYPE": value_type, "VALUE": str(entry["VALUE"])})
            self._next_multifield_id += 1

    def _derive(self, spec: EntitySpec, record: dict[str, Any], previous: dict[str, Any] | None, now: datetime) -> None:
        """Recompute read-only fields that the real API derives from other fields."""
        if spec.has_multifields:
            record["HAS_PHONE"] = "Y" if record.get("PHONE") else "N"
            record["HAS_EMAIL"] = "Y" if record.get("EMAIL") else "N"
            record["HAS_IMOL"] = "Y" if any(entry["VALUE_TYPE"] == "IMOL" for entry in record.get("IM") or []) else "N"
        if spec is LEAD:
            record["STATUS_ID"] = record.get("STATUS_ID") or "NEW"
            semantic = self.status_semantics("STATUS", record["STATUS_ID"]) or "P"
            record["STATUS_SEMANTIC_ID"] = semantic
            # crm-lead-add.md: IS_RETURN_CUSTOMER becomes Y when CONTACT_ID or COMPANY_ID is given.
            record["IS_RETURN_CUSTOMER"] = "Y" if record.get("CONTACT_ID") or record.get("COMPANY_ID") else "N"
            if semantic == "P":
                record["DATE_CLOSED"] = None
            elif previous is None or previous.get("STATUS_SEMANTIC_ID") == "P":
                record["DATE_CLOSED"] = now
            self._track_move(record, previous, "STATUS_ID", now)
        elif spec is DEAL:
            category = record.get("CATEGORY_ID") or 0
            record["CATEGORY_ID"] = category
            if not record.get("STAGE_ID"):
                record["STAGE_ID"] = "NEW" if category == 0 else f"C{category}:NEW"
            semantic = self._deal_stage_semantics(category, record["STAGE_ID"]) or "P"
            record["STAGE_SEMANTIC_ID"] = semantic
            record["CLOSED"] = "N" if semantic == "P" else "Y"
            record["IS_NEW"] = "Y" if str(record["STAGE_ID"]).split(":")[-1] == "NEW" else "N"
            self._track_move(record, previous, "STAGE_ID", now)

    def _track_move(self, record: dict[str, Any], previous: dict[str, Any] | None, stage_field: str, now: datetime):
        if previous is None or previous.get(stage_field) != record.get(stage_field):
            record["MOVED_BY_ID"] = self.webhook_user_id
            record["MOVED_TIME"] = now
            self._record_stage(record, previous, stage_field, now)

    def _record_stage(self, record: dict[str, Any], previous: dict[str, Any] | None, stage_field: str, now: datetime):
        """One crm.stagehistory.list row (crm-stage-history-list.md): TYPE_ID 1 creation, 2 an intermediate stage,
        3 a final stage, 5 a change of pipeline."""
        is_lead = stage_field == "STATUS_ID"
        semantic = record.get("STATUS_SEMANTIC_ID" if is_lead else "STAGE_SEMANTIC_ID")
        if previous is None:
            type_id = 1
        elif not is_lead and previous.get("CATEGORY_ID") != record.get("CATEGORY_ID"):
            type_id = 5
        else:
            type_id = 2 if semantic == "P" else 3
        # Each entity type keeps its own stage-history table, so lead and deal rows number apart (both start at 1).
        entity_type_id = 1 if is_lead else 2
        row: dict[str, Any] = {
            "ID": sum(1 for old in self.stage_history if old["ENTITY_TYPE_ID"] == entity_type_id) + 1,
            "TYPE_ID": type_id,
            "OWNER_ID": record["ID"],
            "CREATED_TIME": now,
        }
        if is_lead:
            row |= {"STATUS_SEMANTIC_ID": semantic, "STATUS_ID": record.get("STATUS_ID")}
        else:
            row |= {"CATEGORY_ID": record.get("CATEGORY_ID") or 0, "STAGE_SEMANTIC_ID": semantic}
            row["STAGE_ID"] = record.get("STAGE_ID")
        self.stage_history.append({"ENTITY_TYPE_ID": entity_type_id, **row})

    def _deal_stage_semantics(self, category: int, stage_id: str) -> str | None:
        entity_id = "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        semantic = self.status_semantics(entity_id, stage_id)
        if semantic is None:
            # Pipelines without their own dictionary here: judge "C1:WON" by the default pipeline's "WON".
            semantic = self.status_semantics("DEAL_STAGE", str(stage_id).split(":")[-1])
        return semantic

    def _enumeration_items(self, items: Any) -> list[dict[str, Any]]:
        created = []
        for position, item in enumerate(_as_list(items)):
            if not isinstance(item, Mapping) or item.get("VALUE") in _BLANK:
                continue  # the docs: items with an empty VALUE are ignored
            created.append(
                {
                    "ID": str(self._next_enum_id),
                    "SORT": str(_to_int(item.get("SORT")) or (position + 1) * 10),
                    "VALUE": str(item["VALUE"]),
                    "DEF": _to_char(item.get("DEF"), default="N"),
                    "XML_ID": str(item.get("XML_ID") or f"{self._next_enum_id:032x}"),
                }
            )
            self._next_enum_id += 1
        return created

    # ---- internals: reading ----------------------------------------------------------------------------------------

    def _all_names(self, spec: EntitySpec) -> list[str]:
        names = [field.name for field in spec.fields]
        names += [userfield["FIELD_NAME"] for userfield in self.userfields[spec.name]]
        if spec.has_multifields:
            names += list(MULTI_FIELD_TYPES)
        return names

    def _selected_names(self, spec: EntitySpec, select: Any) -> list[str]:
        """Apply the ``select`` rules of crm-lead-list.md.

        ``*`` (or no select) means every standard field except user fields and multi-fields; ``UF_*`` adds every user
        field; multi-fields appear only when named; ``ID`` is always present.
        """
        wanted = {str(name).strip().upper() for name in _as_list(select) if str(name).strip()}
        standard = [field.name for field in spec.fields]
        if not wanted or "*" in wanted:
            chosen = list(standard)
        else:
            chosen = [name for name in standard if name in wanted or name == "ID"]
        userfield_names = [userfield["FIELD_NAME"] for userfield in self.userfields[spec.name]]
        chosen += [name for name in userfield_names if "UF_*" in wanted or name in wanted]
        if spec.has_multifields:
            chosen += [name for name in MULTI_FIELD_TYPES if name in wanted]
        return chosen

    def _compile_filter(self, spec: EntitySpec, raw_filter: Any) -> list[Callable[[Mapping[str, Any]], bool]]:
        if not isinstance(raw_filter, Mapping):
            return []
        userfields = {userfield["FIELD_NAME"]: userfield for userfield in self.userfields[spec.name]}
        conditions = []
        for raw_key, expected in raw_filter.items():
            operator, name = _split_filter_key(str(raw_key))
            name = name.upper()
            if spec.has_multifields and name in MULTI_FIELD_TYPES:
                kind, multiple = "text", True
            elif name in userfields:
                kind, multiple = _userfield_kind(userfields[name]), userfields[name]["MULTIPLE"] == "Y"
            elif (field := spec.field(name)) is not None:
                kind, multiple = _field_kind(field.type), False
            else:
                continue  # unknown filter fields are ignored
            condition = _make_condition(name, kind, multiple, operator, expected, self.tz)
            if condition is not None:
                conditions.append(condition)
        return conditions

    def _order(self, spec: EntitySpec, rows: list[dict[str, Any]], raw_order: Any) -> list[dict[str, Any]]:
        ordered = sorted(rows, key=lambda record: record["ID"])  # ties (and no order at all) fall back to ID ASC
        if not isinstance(raw_order, Mapping):
            return ordered
        userfields = {userfield["FIELD_NAME"]: userfield for userfield in self.userfields[spec.name]}
        # Stable sorts applied from the least to the most significant key give a multi-key order.
        for raw_name, direction in reversed(list(raw_order.items())):
            name = str(raw_name).upper()
            if name in userfields:
                kind = _userfield_kind(userfields[name])
            elif (field := spec.field(name)) is not None:
                kind = _field_kind(field.type)
            else:
                continue
            descending = str(direction).strip().upper() == "DESC"
            ordered.sort(key=lambda record, n=name, k=kind: _sort_key(record.get(n), k, self.tz), reverse=descending)
        return ordered

    # ---- internals: seeding ----------------------------------------------------------------------------------------

    def _seed_statuses(self) -> None:
        for position, (status_id, name) in enumerate(SOURCES, start=1):
            self._add_status("SOURCE", status_id, name, sort=position * 10, semantics=None, color=None, system="N")
        for entity_id, pairs in (("COMPANY_TYPE", COMPANY_TYPES), ("EMPLOYEES", EMPLOYEES)):
            for position, (status_id, name) in enumerate(pairs, start=1):
                self._add_status(entity_id, status_id, name, sort=position * 10, semantics=None, color="#", system="Y")
        for entity_id, rows in (("STATUS", LEAD_STATUSES), ("DEAL_STAGE", DEAL_STAGES)):
            for position, (status_id, name, semantics, extra, color, system) in enumerate(rows, start=1):
                self._add_status(
                    entity_id,
                    status_id,
                    name,
                    sort=position * 10,
                    semantics=semantics,
                    color=color,
                    system=system,
                    extra_semantics=extra,
                )

    def _add_status(
        self,
        entity_id: str,
        status_id: str,
        name: str,
        *,
        sort: int,
        semantics: str | None,
        color: Any,
        system: str,
        category_id: int | None = None,
        extra_semantics: str | None = None,
    ) -> int:
        new_id = len(self.statuses) + 1
        self.statuses.append(
            {
                "ID": new_id,
                "ENTITY_ID": entity_id,
                "STATUS_ID": status_id,
                "NAME": name,
                "NAME_INIT": name if system == "Y" else "",
                "SORT": sort,
                "SYSTEM": system,
                "CATEGORY_ID": category_id,
                "COLOR": color,
                "SEMANTICS": semantics,
                "EXTRA_SEMANTICS": extra_semantics or EXTRA_SEMANTICS[semantics],
            }
        )
        return new_id

    def _seed_users(self) -> list[dict[str, Any]]:
        registered = datetime(2024, 1, 15, 9, 0, tzinfo=self.tz).isoformat()
        users = []
        seeds = list(USERS)
        user_ids = list(range(1, len(seeds) + 1))
        if self.webhook_user_id not in user_ids:
            # The webhook always belongs to an existing user, so make sure that user exists.
            user_ids.append(self.webhook_user_id)
            seeds.append(("Вебхук", "Интеграция", f"user{self.webhook_user_id}@example.ru", "Интеграция"))
        for user_id, (name, last_name, email, position) in zip(user_ids, seeds, strict=True):
            users.append(
                {
                    "ID": str(user_id),
                    "XML_ID": "",
                    "ACTIVE": True,
                    "NAME": name,
                    "LAST_NAME": last_name,
                    "SECOND_NAME": "",
                    "EMAIL": email,
                    "LAST_LOGIN": registered,
                    "DATE_REGISTER": registered,
                    "IS_ONLINE": "N",
                    "TIME_ZONE": "",
                    "PERSONAL_GENDER": "F" if last_name.endswith("а") else "M",
                    "WORK_POSITION": position,
                    "UF_DEPARTMENT": [1],
                    "USER_TYPE": "employee",
                }
            )
        return users


# --------------------------------------------------------------------------------------------------------------------
# Value conversion
# --------------------------------------------------------------------------------------------------------------------


def _render_value(field_type: str, value: Any, tz: tzinfo) -> Any:
    if field_type in _DATE_TYPES:
        return _render_datetime(value, tz)
    if value is None:
        return None
    if field_type == "double":
        return f"{value:.2f}"
    if field_type in _INTEGER_TYPES:
        return str(value)
    return value


def _render_datetime(value: Any, tz: tzinfo) -> str:
    if value is None:
        return ""  # the old API prints an empty date as "" (BIRTHDATE in crm-lead-list.md)
    if isinstance(value, datetime):
        return value.astimezone(tz).isoformat(timespec="seconds")
    return datetime(value.year, value.month, value.day, tzinfo=tz).isoformat(timespec="seconds")


def _coerce_value(field_type: str, value: Any, tz: tzinfo) -> Any:
    if field_type in _INTEGER_TYPES:
        return _to_int(value)
    if field_type == "double":
        return _to_float(value)
    if field_type == "char":
        return _to_char(value, default="N")
    if field_type == "datetime":
        return parse_datetime(value, tz)
    if field_type == "date":
        parsed = parse_datetime(value, tz)
        return parsed.date() if parsed else None
    if value is None or isinstance(value, Mapping | list):
        return None
    return str(value)


def parse_datetime(value: Any, tz: tzinfo) -> datetime | None:
    """Read the date formats a client may send: ISO 8601 (with or without offset) or the Russian ``DD.MM.YYYY``."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=tz)
    if value in _BLANK or not isinstance(value, str):
        return None
    text = value.strip()
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        for pattern in ("%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y"):
            try:
                parsed = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=tz)


def _to_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    try:
        return int(float(text))
    except ValueError:
        return None


def _to_float(value: Any) -> float | None:
    if value in _BLANK or isinstance(value, Mapping | list):
        return None
    try:
        return float(str(value).strip().replace(",", ".").replace(" ", ""))
    except ValueError:
        return None


def _to_char(value: Any, *, default: str) -> str:
    if value in _BLANK:
        return default
    return "Y" if str(value).strip().upper() in ("Y", "1", "TRUE", "YES") else "N"


def _as_list(value: Any) -> list[Any]:
    if value in _BLANK:
        return []
    if isinstance(value, Mapping):
        return list(value.values())
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _multifield_entries(value: Any) -> list[Mapping[str, Any]]:
    if isinstance(value, Mapping) and ("VALUE" in value or "ID" in value):
        return [value]  # a single entry passed without a surrounding list
    entries = []
    for item in _as_list(value):
        if isinstance(item, Mapping):
            entries.append(item)
        elif item not in _BLANK:
            entries.append({"VALUE": item})  # a bare string is taken as one value
    return entries


def _render_multifield(type_id: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    return {"ID": str(entry["ID"]), "VALUE_TYPE": entry["VALUE_TYPE"], "VALUE": entry["VALUE"], "TYPE_ID": type_id}


def _field_info(field_type: str, title: str, read_only: bool = False, immutable: bool = False, multiple: bool = False):
    return {
        "type": field_type,
        "isRequired": False,
        "isReadOnly": read_only,
        "isImmutable": immutable,
        "isMultiple": multiple,
        "isDynamic": False,
        "title": title,
    }


# ---- user fields -----------------------------------------------------------------------------------------------------


def _userfield_name(raw_name: Any) -> str:
    """``GCLID`` → ``UF_CRM_GCLID``; ``UF_X`` → ``UF_CRM_X``; lower case is upper-cased; only A-Z, 0-9 and _."""
    name = str(raw_name or "").strip().upper()
    if not name:
        raise RestError("ERROR_CORE", "The 'FIELD_NAME' field is not found.")
    if not name.startswith(USERFIELD_PREFIX):
        name = USERFIELD_PREFIX + (name[3:] if name.startswith("UF_") else name)
    if not re.fullmatch(r"[A-Z0-9_]+", name):
        raise RestError(
            "ERROR_CORE", "Field name contains invalid characters. Allowed characters are: A-Z, 0-9, and _."
        )
    if len(name) > USERFIELD_NAME_LIMIT:
        raise RestError("ERROR_CORE", f"Field name is too long (more than {USERFIELD_NAME_LIMIT} characters).")
    return name


def _label_map(value: Any, default_label: Any) -> dict[str, str]:
    """Labels are kept per language; a plain string applies to every language, ``LABEL`` fills the gaps."""
    fallback = str(default_label) if default_label not in _BLANK else ""
    if isinstance(value, Mapping):
        given = {str(language): str(text) for language, text in value.items()}
        return {language: given.get(language, fallback) for language in LABEL_LANGUAGES}
    text = str(value) if value not in _BLANK else fallback
    return dict.fromkeys(LABEL_LANGUAGES, text)


def _render_userfield(userfield: Mapping[str, Any], *, labels: str | None) -> dict[str, Any]:
    """Render a user field.

    ``labels`` is ``"*"`` for per-language label maps, a language code for plain strings, ``None`` for no labels.
    """
    rendered: dict[str, Any] = {"ID": str(userfield["ID"])}
    for key, value in userfield.items():
        if key in ("ID", "LIST") or key in LABEL_KEYS:
            continue
        rendered[key] = str(value) if key == "SORT" else copy.deepcopy(value)
    for key in LABEL_KEYS:
        if labels == "*":
            rendered[key] = dict(userfield[key])  # crm.*.userfield.get: a map of all languages
        elif labels is not None:
            rendered[key] = userfield[key].get(labels, "")  # crm.*.userfield.list with filter.LANG: one string
    if "LIST" in userfield:
        rendered["LIST"] = copy.deepcopy(userfield["LIST"])
    return rendered


def _coerce_userfield_value(userfield: Mapping[str, Any], value: Any, tz: tzinfo) -> Any:
    if userfield["MULTIPLE"] == "Y":
        return [_coerce_single_userfield_value(userfield["USER_TYPE_ID"], item, tz) for item in _as_list(value)]
    if isinstance(value, list):
        value = value[0] if value else None
    return _coerce_single_userfield_value(userfield["USER_TYPE_ID"], value, tz)


def _coerce_single_userfield_value(user_type: str, value: Any, tz: tzinfo) -> Any:
    if user_type == "boolean":
        return _to_char(value, default="N") == "Y"
    if user_type in ("integer", "employee"):
        return _to_int(value)
    if user_type == "enumeration":
        # main/lib/userfield/types/enumtype.php: an int(18) column and checkFields() that checks nothing. An item's
        # ID is kept (an unknown number too); anything else (an XML_ID, a label) is no number: the field is empty.
        number = _to_int(value) if re.fullmatch(r"\s*\d+\s*", str(value or "")) else None
        return str(number) if number else None
    if user_type == "double":
        return _to_float(value)
    if user_type in _DATE_TYPES:
        return parse_datetime(value, tz)
    if value is None or isinstance(value, Mapping | list):
        return None
    return str(value)


def _render_userfield_value(userfield: Mapping[str, Any], value: Any, tz: tzinfo) -> Any:
    user_type = userfield["USER_TYPE_ID"]
    if userfield["MULTIPLE"] == "Y":
        return [_render_single_userfield_value(user_type, item, tz) for item in value or []]
    if user_type == "boolean":
        return bool(value)
    return _render_single_userfield_value(user_type, value, tz)


def _render_single_userfield_value(user_type: str, value: Any, tz: tzinfo) -> Any:
    if value is None:
        return None
    if user_type in _DATE_TYPES:
        return _render_datetime(value, tz)
    if user_type == "double":
        return repr(float(value))
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # stored numbers come back as strings, like every other numeric value of the old API
    return value


def _userfield_kind(userfield: Mapping[str, Any]) -> str:
    user_type = userfield["USER_TYPE_ID"]
    if user_type in ("integer", "double", "employee"):
        return "number"
    if user_type in _DATE_TYPES:
        return "date"
    if user_type == "boolean":
        return "bool"
    return "text"


# ---- filtering and ordering --------------------------------------------------------------------------------------

# Longest prefixes first, so that ">=" is not read as ">" followed by "=FIELD".
_FILTER_OPERATORS = ("!%=", "!=%", ">=", "<=", "!@", "!=", "=%", "%=", "!%", ">", "<", "@", "=", "!", "%")


def _id_ascending(order: Any) -> bool:
    """``order`` is ``{"ID": "ASC"}`` (any case): the only order the fast path of ``list_page`` serves."""
    if not isinstance(order, Mapping) or len(order) != 1:
        return False
    [(name, direction)] = order.items()
    return str(name).strip().upper() == "ID" and str(direction).strip().upper() == "ASC"


def _id_floor(raw_filter: Any) -> int:
    """The ``>ID`` bound of a filter (0 without one): the fast path starts after it; other ID conditions still run."""
    if not isinstance(raw_filter, Mapping):
        return 0
    for key, value in raw_filter.items():
        if str(key).strip().upper() == ">ID":
            return _to_int(value) or 0
    return 0


def _split_filter_key(key: str) -> tuple[str, str]:
    for operator in _FILTER_OPERATORS:
        if key.startswith(operator):
            return operator, key[len(operator) :]
    return "=", key


def _field_kind(field_type: str) -> str:
    if field_type in _NUMBER_TYPES:
        return "number"
    if field_type in _DATE_TYPES:
        return "date"
    return "text"


def _make_condition(
    name: str, kind: str, multiple: bool, operator: str, expected: Any, tz: tzinfo
) -> Callable[[Mapping[str, Any]], bool] | None:
    """Build a predicate for one filter entry, or ``None`` when the entry imposes no condition."""
    negate = operator in ("!", "!=", "!@", "!%", "!%=", "!=%")
    base = {"!": "=", "!=": "=", "!@": "@", "!%": "%", "!%=": "=%", "!=%": "=%", "%=": "=%"}.get(operator, operator)
    if base == "=" and isinstance(expected, list | tuple | Mapping):
        base = "@"  # a list given to a plain key means IN, as the docs' findbycomm tutorial relies on
    if base in (">", ">=", "<", "<=") and expected in _BLANK:
        # An empty bound (e.g. an unresolved batch reference) adds no condition.
        return None

    def values_of(record: Mapping[str, Any]) -> list[Any]:
        raw = record.get(name)
        if name in MULTI_FIELD_TYPES:
            return [entry["VALUE"] for entry in raw or []]
        return list(raw or []) if multiple else [raw]

    if base == "@":
        wanted = [_comparable(item, kind, tz) for item in _as_list(expected)]

        def test(record: Mapping[str, Any]) -> bool:
            return any(_comparable(value, kind, tz) in wanted for value in values_of(record) if value not in _BLANK)

    elif base == "=":
        target = _comparable(expected, kind, tz)
        if expected in _BLANK:

            def test(record: Mapping[str, Any]) -> bool:
                return all(value in _BLANK for value in values_of(record))

        else:

            def test(record: Mapping[str, Any]) -> bool:
                return any(_comparable(value, kind, tz) == target for value in values_of(record) if value not in _BLANK)

    elif base in ("%", "=%"):
        needle = str(expected).lower()
        pattern = re.compile(
            "^" + ".*".join(re.escape(part) for part in needle.split("%")) + "$" if base == "=%" else re.escape(needle),
            re.DOTALL,
        )

        def test(record: Mapping[str, Any]) -> bool:
            return any(pattern.search(str(value).lower()) for value in values_of(record) if value not in _BLANK)

    else:
        bound = _comparable(expected, kind, tz)
        if bound is None:
            return lambda record: negate  # an unparsable bound matches nothing
        compare = {
            ">": lambda left: left > bound,
            ">=": lambda left: left >= bound,
            "<": lambda left: left < bound,
            "<=": lambda left: left <= bound,
        }[base]

        def test(record: Mapping[str, Any]) -> bool:
            comparable = [_comparable(value, kind, tz) for value in values_of(record) if value not in _BLANK]
            return any(compare(value) for value in comparable if value is not None)

    return (lambda record: not test(record)) if negate else test


def _comparable(value: Any, kind: str, tz: tzinfo) -> Any:
    """Bring a stored or filter value to one comparable form: float, aware datetime or lower-case text."""
    if value is None:
        return None
    if kind == "number":
        return _to_float(value)
    if kind == "date":
        return parse_datetime(value, tz)
    if kind == "bool":
        return value if isinstance(value, bool) else _to_char(value, default="N") == "Y"
    # MySQL compares text case-insensitively under the collation Bitrix24 uses.
    return str(value).lower()


def _sort_key(value: Any, kind: str, tz: tzinfo) -> tuple[int, Any]:
    comparable = _comparable(value, kind, tz) if value not in _BLANK else None
    if comparable is None:
        return (0, 0)  # empty values sort first in ascending order, as in MySQL
    return (1, comparable)


def _sort_plain(rows: list[dict[str, Any]], order: Mapping[str, Any]) -> list[dict[str, Any]]:
    ordered = sorted(rows, key=lambda row: row["ID"])
    for name, direction in reversed(list(order.items())):
        key = str(name).upper()
        ordered.sort(key=lambda row, k=key: _sortable_text(row.get(k)), reverse=str(direction).upper() == "DESC")
    return ordered


def _sortable_text(value: Any) -> tuple[int, Any]:
    if value in _BLANK:
        return (0, 0)
    number = _to_float(value)
    return (1, number) if number is not None else (2, str(value).lower())


def _render_status(status: Mapping[str, Any]) -> dict[str, Any]:
    rendered = {
        "ID": str(status["ID"]),
        "ENTITY_ID": status["ENTITY_ID"],
        "STATUS_ID": status["STATUS_ID"],
        "NAME": status["NAME"],
        "NAME_INIT": status["NAME_INIT"],
        "SORT": str(status["SORT"]),
        "SYSTEM": status["SYSTEM"],
        "CATEGORY_ID": None if status["CATEGORY_ID"] is None else str(status["CATEGORY_ID"]),
        "COLOR": status["COLOR"],
        "SEMANTICS": status["SEMANTICS"],
    }
    # Only stage dictionaries carry EXTRA (how-to-get-stages-with-semantics.md).
    if status["ENTITY_ID"] == "STATUS" or status["ENTITY_ID"].startswith("DEAL_STAGE"):
        rendered["EXTRA"] = {"SEMANTICS": status["EXTRA_SEMANTICS"], "COLOR": status["COLOR"]}
    return rendered


def _user_matches(user: Mapping[str, Any], key: str, expected: Any) -> bool:
    actual = user.get(key)
    if key == "ACTIVE":
        return bool(actual) == (_to_char(expected, default="Y") == "Y")
    if isinstance(expected, list | tuple):
        return str(actual) in {str(item) for item in expected}
    return str(actual).lower() == str(expected).lower()


def _normalize_phone(value: Any) -> str:
    # Only an extension ("доб. 12", "ext 12", "#12", "x12") is ignored; everything else must match character by
    # character, so "+7 999 123-45-67" and "79991234567" are different numbers for findbycomm.
    text = str(value).strip()
    return re.sub(r"\s*(?:доб\.?|ext\.?|x|#)\s*\d+\s*$", "", text, flags=re.IGNORECASE)


def _normalize_email(value: Any) -> str:
    return str(value).strip().lower()
