"""A web-form submission as it travels from the HTTP endpoint, through the queue, to the Bitrix24 writer."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MESSAGE_TYPE = "form_submission"
MESSAGE_VERSION = 1
# A queued submission may carry its raw copy (the JSON text to put under its ``raw_key``): capture puts it in the
# message when the message still fits SQS's limit, and the writer puts it in S3 before it writes anything else.
RAW_COPY = "raw_copy"
UTM_TAGS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
MAX_VALUE = 2000  # the longest value of one field we keep
# Click ids set by ad platforms and search engines (what each implies: throughline.sources); rb_clickid is VK Ads'.
CLICK_IDS = ("gclid", "gbraid", "wbraid", "yclid", "ysclid", "fbclid", "rb_clickid")
# Every time in a message lies in here: date arithmetic (journey lines, store keys, time zones) never overflows, and a
# message outside it is refused whole (capture keeps implausible visit times out of messages in the first place).
SANE_TIMES = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC))


@dataclass(frozen=True)
class Visit:
    """The tags of one visit: the last one (that sent the form) or the first one the site remembered."""

    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None
    utm_content: str | None = None
    utm_term: str | None = None
    referrer: str | None = None
    landing_url: str | None = None
    seen_at: datetime | None = None

    def is_empty(self) -> bool:
        return not any((*self.tags().values(), self.referrer, self.landing_url))

    def tags(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in UTM_TAGS}


@dataclass(frozen=True)
class Submission:
    """A validated, normalized form submission. Contacts are E.164 / lower-case already."""

    submission_id: str
    form_id: str
    received_at: datetime
    last_visit: Visit
    first_visit: Visit | None = None
    name: str | None = None
    last_name: str | None = None
    second_name: str | None = None
    phone: str | None = None
    email: str | None = None
    comment: str | None = None
    click_ids: dict[str, str] = field(default_factory=dict)
    first_click_ids: dict[str, str] = field(default_factory=dict)  # the first visit's (first_gclid, first_yclid, …)
    client_ids: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)
    origin: str | None = None
    raw_key: str | None = None

    # -- identity -------------------------------------------------------------------------------------------------

    def identity(self) -> str:
        """The contact that stands for the person: phone first (Bitrix24 managers search by phone), then e-mail,
        else the submission itself. Key anything that leaves the process with ``person_keys.person_key(identity,
        settings.person_key_secret)``; the queue's message group is made that way."""
        return self.phone or self.email or self.submission_id

    def person_key(self) -> str:
        """Groups one person's submissions inside one process (the writer's rounds), nothing more. It is an
        unkeyed hash, as reversible as the phone itself: never log it, send it or store it; use
        ``throughline.person_keys.person_key(self.identity(), secret)`` for that."""
        return hashlib.sha256(self.identity().encode()).hexdigest()[:40]

    def fingerprint(self) -> str:
        """Identical content from the same form: a double click or a resent request."""
        content = asdict(replace(self, submission_id="", received_at=datetime.min, raw_key=None))
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()

    def contacts(self) -> set[str]:
        return {value for value in (self.phone, self.email) if value}

    # -- queue message --------------------------------------------------------------------------------------------

    def to_message(self) -> dict[str, Any]:
        return {"type": MESSAGE_TYPE, "version": MESSAGE_VERSION, "submission": _jsonable(asdict(self))}

    @classmethod
    def from_message(cls, message: Any) -> Submission:
        """Raises ``ValueError`` for anything that is not a well-formed submission message (a poison message)."""
        if not isinstance(message, dict) or message.get("type") != MESSAGE_TYPE:
            kind = message.get("type") if isinstance(message, dict) else type(message).__name__
            raise ValueError(f"not a form submission message: {kind!r}")
        if not isinstance(message.get("submission"), dict):
            raise ValueError("a form submission message without its submission")
        data = dict(message["submission"])
        data["received_at"] = _sane_time(data.get("received_at"))
        data["last_visit"] = _visit(data["last_visit"])
        data["first_visit"] = _visit(data["first_visit"]) if data.get("first_visit") else None
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__ if name in data})


def click_ids_in(url: str | None) -> dict[str, str]:
    """Click ids in a landing page's address (``?yclid=…``, ``?gclid=…``)."""
    if not url:
        return {}
    try:
        query = query_values(urlsplit(url).query)
    except ValueError:  # no readable address, so no click ids in it
        return {}
    return {name: query[name][:MAX_VALUE] for name in CLICK_IDS if query.get(name)}


def query_values(query: str) -> dict[str, str]:
    """A query's parameters; one given twice (``utm_source=a&utm_source=b``) counts by its first value, as the
    snippet's ``URLSearchParams.get()`` reads it."""
    values: dict[str, str] = {}
    for name, value in parse_qsl(query):
        values.setdefault(name, value)
    return values


def public_url(url: str | None) -> str | None:
    """An address as it may be kept and shown in the CRM: scheme, host, port, path and the UTM and click-id
    parameters. Credentials (``user:password@``), other parameters (reset tokens, e-mails, session ids) and the
    fragment are dropped; an unreadable address gives None."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    netloc = ""
    if host:
        netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name in _URL_TAGS]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(kept), ""))


_URL_TAGS = frozenset((*UTM_TAGS, *CLICK_IDS))


def _visit(data: Any) -> Visit:
    if not isinstance(data, dict):
        raise ValueError("a visit must be an object")
    values = dict(data)
    if values.get("seen_at"):
        values["seen_at"] = _sane_time(values["seen_at"])
    return Visit(**{name: values.get(name) for name in Visit.__dataclass_fields__})


def _sane_time(value: Any) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    if moment is None or moment.tzinfo is None or not SANE_TIMES[0] <= moment < SANE_TIMES[1]:
        raise ValueError(f"not a time with an offset between {SANE_TIMES[0]:%Y} and {SANE_TIMES[1]:%Y}: {value!r}")
    return moment


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, datetime):
        return value.isoformat()
    return value
