"""Bitrix24 outbound webhooks: read the PHP-style form body, check that it comes from our portal, queue it.

On the HTTP path: standard library only (plus the queue adapter), no Bitrix24 calls. The event carries nothing but
the entity id, so the writer reads the entity later; here we only decide whether to trust it and where it queues.

A body looks like (research/bitrix24.md §1)::

    event=ONCRMLEADADD&event_handler_id=3&data[FIELDS][ID]=7405&ts=1766047124&auth[domain]=…
    &auth[member_id]=…&auth[application_token]=…

Every value is a string. Event names are compared case-insensitively (the docs spell ``ONCRMDEALADD`` and
``onCrmActivityAdd``). Most events carry ``data[FIELDS][ID]``; timeline-comment events carry ``data[ID]``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl

MAX_BODY_BYTES = 65536
MESSAGE_TYPE = "bitrix_event"
# An entity id and ``ts`` go into the FIFO group and deduplication ids, which SQS limits to 128 letters, digits and
# punctuation; Bitrix24 sends both as decimal integers (ids fit a signed 64-bit column, ts is Unix seconds).
_ID = re.compile(r"[0-9]{1,18}")
_TS = re.compile(r"[0-9]{0,20}")
_DEDUP = re.compile(r"[!-~]{1,128}")  # SQS: alphanumeric and punctuation, up to 128

# Event name prefix → (entity kind, FIFO group prefix). Longest prefixes first.
_ENTITY_PREFIXES = (
    ("ONCRMTIMELINECOMMENT", "timeline_comment", "COMMENT"),
    ("ONCRMACTIVITY", "activity", "ACTIVITY"),
    ("ONCRMCONTACT", "contact", "CONTACT"),
    ("ONCRMLEAD", "lead", "LEAD"),
    ("ONCRMDEAL", "deal", "DEAL"),
)
_ACTIONS = ("ADD", "UPDATE", "DELETE", "MOVETOCATEGORY")


class EventRejected(Exception):
    """The request is not an event we accept; ``status`` is the HTTP answer (400 or 401)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class CrmEvent:
    """One outbound-webhook event, as queued for the writer."""

    name: str  # upper case, e.g. ONCRMDEALUPDATE
    entity: str  # lead | deal | contact | activity | timeline_comment
    entity_id: int
    ts: str  # as sent: Unix seconds when the portal's queue sent it
    handler_id: str = ""

    @property
    def action(self) -> str:
        prefix = next(name for name, _, _ in _ENTITY_PREFIXES if self.name.startswith(name))
        return self.name.removeprefix(prefix)

    @property
    def group_id(self) -> str:
        """FIFO group: one CRM entity (ids are not personal data), so its events stay in order."""
        prefix = next(group for name, _, group in _ENTITY_PREFIXES if self.name.startswith(name))
        return f"{prefix}#{self.entity_id}"

    def to_message(self) -> dict[str, Any]:
        return {
            "type": MESSAGE_TYPE,
            "event": self.name,
            "entity": self.entity,
            "id": self.entity_id,
            "ts": self.ts,
            "handler_id": self.handler_id,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> CrmEvent:
        return cls(
            name=str(message["event"]).upper(),
            entity=str(message["entity"]),
            entity_id=int(message["id"]),
            ts=str(message.get("ts") or ""),
            handler_id=str(message.get("handler_id") or ""),
        )


class Queue(Protocol):
    def send(self, message: dict[str, Any], *, group_id: str, deduplication_id: str) -> str: ...


def receive_event(
    body: bytes,
    *,
    app_tokens: Iterable[str],
    member_id: str | None,
    domain: str | None,
    queue: Queue,
    request_id: str | None = None,
    moved: Callable[[str], None] | None = None,
) -> CrmEvent | None:
    """Check and queue one event. Returns it, or ``None`` for an authentic event we do not follow.

    Raises ``EventRejected``: 400 for a body that is not a form or not an event, 401 when the application token (or
    the configured member_id / domain) does not match. Nothing is queued in either case. An event whose
    ``auth[domain]`` is not the configured domain but whose ``member_id`` is the configured one comes from our
    portal at its new address (an address change keeps ``member_id``, change-domen.md): it is queued and ``moved``
    is told the new domain.

    The queue's deduplication id is ``request_id`` (API Gateway's, one per delivery), else a hash of the whole body:
    two events for one record in one second are two messages, never one.
    """
    fields = parse_form(body)
    new_domain = verify(fields, app_tokens=app_tokens, member_id=member_id, domain=domain)
    event = parse_event(fields)
    if new_domain and moved is not None:
        moved(new_domain)
    if event is not None:
        queue.send(event.to_message(), group_id=event.group_id, deduplication_id=deduplication_id(body, request_id))
    return event


def deduplication_id(body: bytes, request_id: str | None = None) -> str:
    """An SQS deduplication id (at most 128 of ``[A-Za-z0-9!-/:-@[-`{-~]``): the request id when it is one, else
    the body's SHA-256."""
    if request_id and _DEDUP.fullmatch(request_id):
        return request_id
    return hashlib.sha256(body).hexdigest()


def parse_form(body: bytes) -> dict[str, Any]:
    """``a[b][c]=v`` pairs → nested dicts of strings (PHP's ``parse_str``, without its list folding)."""
    if len(body) > MAX_BODY_BYTES:
        raise EventRejected(400, "body too large")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        raise EventRejected(400, "not a form-encoded body") from None
    if not pairs:
        raise EventRejected(400, "not a form-encoded body")
    root: dict[str, Any] = {}
    for key, value in pairs:
        name, _, rest = key.partition("[")
        path = [name, *(part.rstrip("]") for part in rest.split("[") if part)] if rest else [name]
        node = root
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return root


def verify(
    fields: dict[str, Any], *, app_tokens: Iterable[str], member_id: str | None, domain: str | None
) -> str | None:
    """The token must equal one of ours; member_id and domain must equal the configured portal's when set — but a
    configured member_id that matches outweighs the domain: the portal was renamed (its member_id never changes).
    Returns the event's domain in that case, else ``None``."""
    auth = fields.get("auth")
    auth = auth if isinstance(auth, dict) else {}
    token = _text(auth.get("application_token"))
    matched = False
    for known in app_tokens:
        # Compare with every token (no early exit): the time taken says nothing about which one was close.
        matched |= bool(known) and hmac.compare_digest(token.encode(), known.encode())
    if not token or not matched:
        raise EventRejected(401, "unknown application token")
    if member_id and not hmac.compare_digest(_text(auth.get("member_id")).encode(), member_id.encode()):
        raise EventRejected(401, "event from another portal (member_id)")
    sent_domain = _text(auth.get("domain")).lower()
    if domain and sent_domain != domain.lower():
        if not member_id:
            raise EventRejected(401, "event from another portal (domain)")
        return sent_domain or None  # our member_id: accepted; a new domain is announced, a missing one is not
    return None


def parse_event(fields: dict[str, Any]) -> CrmEvent | None:
    name = _text(fields.get("event")).upper()
    if not name:
        raise EventRejected(400, "no event name")
    known = next((entity for prefix, entity, _ in _ENTITY_PREFIXES if name.removeprefix(prefix) in _ACTIONS), None)
    if known is None:
        return None  # authentic, but not an event the journey follows (a user-field change, a company…)
    data = fields.get("data")
    data = data if isinstance(data, dict) else {}
    inner = data.get("FIELDS")
    raw_id = inner.get("ID") if isinstance(inner, dict) else None
    if raw_id is None:
        raw_id = data.get("ID")  # onCrmTimelineComment* sends data[ID]
    raw_id = _text(raw_id)
    # ASCII digits only: str.isdigit() also accepts "²" (which int() refuses) and other scripts' digits.
    if not _ID.fullmatch(raw_id) or int(raw_id) <= 0:
        raise EventRejected(400, "no entity id in data[FIELDS][ID]")
    ts = _text(fields.get("ts"))
    if not _TS.fullmatch(ts):
        raise EventRejected(400, "ts is not a Unix time")
    return CrmEvent(
        name=name,
        entity=known,
        entity_id=int(raw_id),
        ts=ts,
        handler_id=_text(fields.get("event_handler_id")),
    )


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""
