"""Notifications, chat messages, tasks, scopes and the local application's own calls.

What the docs say (bitrix24/b24restdocs) and the sandbox does:

- ``im.notify.system.add`` / ``im.notify.personal.add`` (chats/notifications/im-notify-*-add.md, scope ``im``):
  ``USER_ID`` (> 0, else ``USER_ID_EMPTY``) and ``MESSAGE`` (trimmed; empty: ``MESSAGE_EMPTY``) required; ``TAG``
  is unique within the application — a notification with an existing tag removes the others — and over a webhook
  it must come with ``CLIENT_ID`` (without one the tag is not applied, so repeats pile up); ``ATTACH`` over 30 KB is
  ``ATTACH_OVERSIZE``. The result is the notification's id (``false`` when none was created: an unknown user).
- ``im.message.add`` (chats/messages/im-message-add.md, scope ``im``): ``DIALOG_ID`` ``chatNNN`` or a user id;
  ``CHAT_ID_EMPTY`` / ``USER_ID_EMPTY`` when it names none, ``ACCESS_ERROR`` for a chat the user is not in,
  ``MESSAGE_EMPTY``; the result is the message id.
- ``tasks.task.add`` (tasks/tasks-task-add.md, scope ``task``): ``fields`` required (error ``100``), ``TITLE`` and
  ``RESPONSIBLE_ID`` required and the responsible must exist (``ERROR_CORE`` with the documented wording);
  ``UF_CRM_TASK`` links (``L_4``, ``D_10``…); the result is ``{"task": {...}}`` with camel-case keys.
- ``scope`` (common/system/scope.md): the webhook's (or application's) scopes, ``basic`` left out; ``full`` lists
  every scope of the portal.
- ``app.info`` (common/system/app-info.md): the local application's record (``ID`` a number); only with an
  application token — over a webhook 400 ``ACCESS_DENIED`` «Application context required».
- A method of a scope the webhook lacks answers 401 ``insufficient_scope``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import RestError
from .methods import METHODS, CallContext, MethodResult

__all__ = ["ALL_SCOPES", "DEFAULT_SCOPES", "METHOD_SCOPES", "register"]

ALL_SCOPES = ("crm", "user", "user_basic", "im", "task", "tasks_extended", "telephony", "department", "placement",
              "entity", "log", "disk", "calendar", "sonet_group", "bizproc", "imbot", "imopenlines")  # fmt: skip
DEFAULT_SCOPES = ("crm", "user", "im", "task", "telephony")
METHOD_SCOPES = {
    "im.notify.system.add": "im",
    "im.notify.personal.add": "im",
    "im.message.add": "im",
    "tasks.task.add": "task",
}
ATTACH_LIMIT = 30 * 1024  # bytes: ATTACH_OVERSIZE


def register(methods: dict[str, Callable[[CallContext, dict[str, Any]], MethodResult]]) -> None:
    methods["im.notify.system.add"] = lambda context, params: _notify(context, params, "system")
    methods["im.notify.personal.add"] = lambda context, params: _notify(context, params, "personal")
    methods["im.message.add"] = _message_add
    methods["tasks.task.add"] = _task_add
    methods["scope"] = _scope
    methods["app.info"] = _app_info


def insufficient_scope() -> RestError:
    return RestError(
        "insufficient_scope", "The request requires higher privileges than provided by the webhook token", 401
    )


def check_scope(portal: Any, method: str, auth: Any) -> None:
    """A method of a scope the caller was not granted answers ``insufficient_scope`` (401)."""
    scope = METHOD_SCOPES.get(method)
    if scope is None:
        return
    granted = auth.scopes if auth is not None and auth.kind == "app" else portal.scopes
    if scope not in granted:
        raise insufficient_scope()


def _user_exists(context: CallContext, user_id: int) -> bool:
    return any(user["ID"] == str(user_id) for user in context.portal.users)


def _int(value: Any) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return 0


def _caller(context: CallContext) -> int:
    auth = getattr(context, "auth", None)
    return auth.user_id if auth is not None else context.portal.webhook_user_id


def _notify(context: CallContext, params: dict[str, Any], kind: str) -> MethodResult:
    user_id = _int(params.get("USER_ID"))
    if user_id <= 0:
        raise RestError("USER_ID_EMPTY", "User ID can't be empty", 400)
    message = str(params.get("MESSAGE") or "").strip()
    if not message:
        raise RestError("MESSAGE_EMPTY", "Message can't be empty", 400)
    attach = params.get("ATTACH")
    if attach not in (None, ""):
        size = len(attach.encode() if isinstance(attach, str) else json.dumps(attach, ensure_ascii=False).encode())
        if size > ATTACH_LIMIT:
            raise RestError("ATTACH_OVERSIZE", "You have exceeded the maximum allowable size of attach", 400)
    if not _user_exists(context, user_id):
        return MethodResult(False)
    portal = context.portal
    auth = getattr(context, "auth", None)
    # Over a webhook, TAG and SUB_TAG count only with CLIENT_ID (the docs); an application is its own client.
    client_id = str(params.get("CLIENT_ID") or "").strip() or (auth.client_id if auth is not None else "")
    tag = str(params.get("TAG") or "").strip() if client_id else ""
    if tag:
        portal.notifications[:] = [
            item for item in portal.notifications if not (item["TAG"] == tag and item["CLIENT_ID"] == client_id)
        ]
    portal.next_notification_id += 1
    portal.notifications.append(
        {
            "ID": portal.next_notification_id,
            "KIND": kind,
            "USER_ID": user_id,
            "FROM_USER_ID": _caller(context) if kind == "personal" else 0,
            "MESSAGE": message,
            "MESSAGE_OUT": str(params.get("MESSAGE_OUT") or ""),
            "TAG": tag,
            "SUB_TAG": str(params.get("SUB_TAG") or "") if client_id else "",
            "CLIENT_ID": client_id,
            "DATE": portal.now().isoformat(),
        }
    )
    return MethodResult(portal.next_notification_id)


def _message_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    dialog = str(params.get("DIALOG_ID") or "").strip()
    portal = context.portal
    if dialog.lower().startswith("chat"):
        chat_id = _int(dialog[4:])
        if chat_id <= 0:
            raise RestError("CHAT_ID_EMPTY", "Chat ID can't be empty", 400)
        chat = portal.chats.get(chat_id)
        if chat is None or _caller(context) not in chat["USERS"]:
            raise RestError("ACCESS_ERROR", "You don't have access to this chat", 403)
    elif _int(dialog) <= 0 or not _user_exists(context, _int(dialog)):
        raise RestError("USER_ID_EMPTY", "User ID can't be empty", 400)
    message = str(params.get("MESSAGE") or "").strip()
    if not message:
        raise RestError("MESSAGE_EMPTY", "Message can't be empty", 400)
    portal.next_message_id += 1
    portal.chat_messages.append(
        {
            "ID": portal.next_message_id,
            "DIALOG_ID": dialog,
            "AUTHOR_ID": _caller(context),
            "MESSAGE": message,
            "SYSTEM": str(params.get("SYSTEM") or "N"),
            "DATE": portal.now().isoformat(),
        }
    )
    return MethodResult(portal.next_message_id)


def _task_add(context: CallContext, params: dict[str, Any]) -> MethodResult:
    fields = params.get("FIELDS")
    if not isinstance(fields, dict) or not fields:
        raise RestError("100", "Could not find value for parameter {fields}", 400)
    fields = {str(key).upper(): value for key, value in fields.items()}
    title = str(fields.get("TITLE") or "").strip()
    if not title:
        raise RestError("ERROR_CORE", "Task title not specified<br>", 400)
    responsible = _int(fields.get("RESPONSIBLE_ID"))
    if not responsible:
        raise RestError("ERROR_CORE", "Assignee not specified<br>", 400)
    if not _user_exists(context, responsible):
        raise RestError("ERROR_CORE", 'User specified in the "Assignee" field not found<br>', 400)
    links = fields.get("UF_CRM_TASK") or []
    links = [str(link) for link in (links if isinstance(links, list) else [links])]
    portal = context.portal
    portal.next_task_id += 1
    now = portal.now().isoformat()
    creator = _int(fields.get("CREATED_BY")) or _caller(context)
    task = {
        "id": str(portal.next_task_id),
        "parentId": None,
        "title": title,
        "description": str(fields.get("DESCRIPTION") or ""),
        "priority": str(fields.get("PRIORITY") or "1"),
        "status": "2",
        "createdBy": str(creator),
        "createdDate": now,
        "responsibleId": str(responsible),
        "changedDate": now,
        "deadline": fields.get("DEADLINE") or None,
        "ufCrmTask": links,
        "auditors": [str(_int(user)) for user in fields.get("AUDITORS") or []],
        "accomplices": [],
        "groupId": "0",
    }
    portal.tasks.append(task)
    return MethodResult({"task": task})


def _scope(context: CallContext, params: dict[str, Any]) -> MethodResult:
    # JSON false means the caller's own list; in form data any non-empty string but "0" (even "false") means full.
    if params.get("FULL") not in (None, False, 0, "0", ""):
        return MethodResult(list(ALL_SCOPES))
    auth = getattr(context, "auth", None)
    return MethodResult(list(auth.scopes if auth is not None and auth.kind == "app" else context.portal.scopes))


def _app_info(context: CallContext, params: dict[str, Any]) -> MethodResult:
    auth = getattr(context, "auth", None)
    if auth is None or auth.kind != "app":  # app-info.md: "Method called outside the application context"
        raise RestError("ACCESS_DENIED", "Access denied! Application context required", 400)
    return MethodResult(
        {
            "ID": 7,
            "CODE": auth.client_id,
            "VERSION": 1,
            "STATUS": "L",
            "INSTALLED": True,
            "PAYMENT_EXPIRED": "N",
            "DAYS": None,
            "LANGUAGE_ID": "ru",
            "LICENSE": "ru_project",
            "LICENSE_TYPE": "project",
            "LICENSE_FAMILY": "project",
        }
    )


register(METHODS)
