"""Web-form capture: decode a posted body, validate and normalize it, and make it durable.

Nothing here knows about API Gateway: the handler passes bytes, a content type and a few headers, and maps
``FormRejected`` to an HTTP answer. Bad input is always a 4xx naming each bad field, never a 5xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from throughline.capture.submissions import CLICK_IDS, UTM_TAGS, Submission, Visit, click_ids_in, public_url
from throughline.capture.submissions import MAX_VALUE as MAX_FIELD
from throughline.contacts import InvalidContact, normalize_email, normalize_phone

FORM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_COMMENT = 10000
MAX_EXTRA_FIELDS = 50

# Field names forms use in the wild, mapped onto the contract's names.
_ALIASES = {
    "tel": "phone",
    "telephone": "phone",
    "phone_number": "phone",
    "mobile": "phone",
    "e-mail": "email",
    "mail": "email",
    "fio": "name",
    "full_name": "name",
    "first_name": "name",
    "message": "comment",
    "msg": "comment",
    "question": "comment",
    "text": "comment",
    "patronymic": "second_name",
    "middle_name": "second_name",
    "surname": "last_name",
    "_ym_uid": "ym_client_id",
    "_ga": "ga_client_id",
}
_CONTACT_FIELDS = ("name", "last_name", "second_name", "phone", "email", "comment")
_VISIT_FIELDS = (*UTM_TAGS, "referrer", "landing_url")
_FIRST_FIELDS = (*tuple(f"first_{name}" for name in (*_VISIT_FIELDS, *CLICK_IDS)), "first_seen_at")
_CLIENT_ID_FIELDS = ("ym_client_id", "ga_client_id", "client_id", "visitor_id", "roistat_visit")
_TRACKING = frozenset((*_VISIT_FIELDS, *_FIRST_FIELDS, *CLICK_IDS, *_CLIENT_ID_FIELDS))
_KNOWN = frozenset((*_CONTACT_FIELDS, *_TRACKING))


class FormRejected(Exception):
    """The submission cannot be accepted as sent. ``fields`` maps each bad field to a reason."""

    def __init__(self, status: int, message: str, fields: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "fields": self.fields}


def decode_body(body: bytes, content_type: str | None, max_bytes: int) -> dict[str, Any]:
    """Turn a JSON, urlencoded or multipart body into a flat field map (repeated keys become lists)."""
    if len(body) > max_bytes:
        raise FormRejected(413, "request body too large", {"body": f"larger than {max_bytes} bytes"})
    media_type, params = _media_type(content_type)
    charset = params.get("charset", "utf-8")
    try:
        if media_type in ("application/json", "text/plain"):
            # text/plain carries JSON from pages that post without a CORS preflight (sendBeacon, no-cors fetch).
            return _json_object(body, charset)
        if media_type == "application/x-www-form-urlencoded":
            # Percent-escapes are bytes in the declared charset too (old sites still post windows-1251).
            fields = parse_qs(body.decode(charset), keep_blank_values=True, encoding=charset, errors="strict")
            return _flatten(fields)
        if media_type == "multipart/form-data":
            return _multipart(body, content_type or "")
    except (UnicodeDecodeError, LookupError):
        raise FormRejected(400, "body is not valid text in its charset", {"body": f"not valid {charset}"}) from None
    raise FormRejected(
        415,
        "unsupported content type",
        {"content-type": "send application/json, application/x-www-form-urlencoded or multipart/form-data"},
    )


def is_spam(fields: Mapping[str, Any], honeypot_field: str) -> bool:
    """A filled honeypot: a field people never see, which bots fill in."""
    value = fields.get(honeypot_field)
    return bool(value.strip() if isinstance(value, str) else value)


def parse_submission(
    form_id: str,
    fields: Mapping[str, Any],
    *,
    submission_id: str,
    received_at: datetime,
    origin: str | None,
    default_region: str,
    zone: ZoneInfo,
) -> Submission:
    """Validate and normalize. Raises ``FormRejected(422)`` naming every bad field at once, by the name it was
    posted under.

    Only what the visitor typed can reject a post. Tracking fields (tags, referrers, click and client ids, the first
    visit) are filled in by scripts and can be odd (an ``android-app://`` referrer, a cut-off URL): an unusable one
    is left out of attribution and kept in the lead's comments instead, so no lead is lost over a tag.
    """
    errors: dict[str, str] = {}
    if not FORM_ID.fullmatch(form_id or ""):
        errors["form_id"] = "use 1-64 letters, digits, '.', '_' or '-'"
    values: dict[str, str] = {}
    posted_as: dict[str, str] = {}
    extra: dict[str, str] = {}

    def keep_extra(name: str, value: str) -> None:
        if len(extra) < MAX_EXTRA_FIELDS:
            extra[name.strip()[:100]] = value[:MAX_FIELD]
        else:
            errors[name] = f"too many fields (at most {MAX_EXTRA_FIELDS} extra fields)"

    for raw_name, raw_value in fields.items():
        name = _canonical(raw_name)
        if name.startswith("_") or not name:
            continue  # meta fields (_gotcha, _next, _subject…) are instructions, not data
        tracking = name in _TRACKING
        value, problem = _text_value(raw_value, single=name in _CONTACT_FIELDS, first_of_many=tracking)
        if problem:
            errors[raw_name] = problem
            continue
        if value is None or value == "":
            continue
        limit = MAX_COMMENT if name == "comment" else MAX_FIELD
        if len(value) > limit and not tracking:
            errors[raw_name] = f"longer than {limit} characters"
        elif name in _KNOWN and name not in values:
            values[name], posted_as[name] = value, raw_name
        elif name not in _KNOWN:
            keep_extra(raw_name, value)

    phone = _contact(values, "phone", lambda raw: normalize_phone(raw, default_region), errors, posted_as)
    email = _contact(values, "email", normalize_email, errors, posted_as)
    if not phone and not email and not {"phone", "email"} & {_canonical(name) for name in errors}:
        errors[posted_as.get("phone", "phone")] = errors[posted_as.get("email", "email")] = (
            "give a phone number or an e-mail address"
        )
    for name in ("referrer", "landing_url", "first_referrer", "first_landing_url"):
        if name in values and not _is_url(values[name], app=name.endswith("referrer")):
            keep_extra(posted_as[name], values.pop(name))
    first_seen_at = _timestamp(values.get("first_seen_at"), zone)
    if values.get("first_seen_at") and first_seen_at is None:
        keep_extra(posted_as["first_seen_at"], values.pop("first_seen_at"))
    if errors:
        raise FormRejected(422, "some fields are invalid", errors)

    last_visit = _visit(values, "")
    first_visit = _visit(values, "first_")
    if first_seen_at:
        first_visit = Visit(**{**first_visit.__dict__, "seen_at": min(first_seen_at, received_at)})
    return Submission(
        submission_id=submission_id,
        form_id=form_id,
        received_at=received_at,
        last_visit=last_visit,
        first_visit=None if first_visit.is_empty() and not first_seen_at else first_visit,
        name=values.get("name"),
        last_name=values.get("last_name"),
        second_name=values.get("second_name"),
        phone=phone,
        email=email,
        comment=values.get("comment"),
        # Click ids are read from the whole, unclipped addresses, and fields win over them.
        click_ids={**click_ids_in(values.get("landing_url")), **_given(values, CLICK_IDS)},
        first_click_ids={**click_ids_in(values.get("first_landing_url")), **_given(values, CLICK_IDS, "first_")},
        client_ids=_client_ids(values),
        extra=extra,
        origin=origin,
    )


def raw_key(submission: Submission) -> str:
    """Where the raw copy of a submission lives in the data bucket (Hive-style date partition)."""
    day = submission.received_at.astimezone(UTC).strftime("%Y-%m-%d")
    return f"raw/forms/date={day}/form={submission.form_id}/{submission.submission_id}.json"


def raw_record(submission: Submission, body: bytes, content_type: str | None, headers: Mapping[str, str]) -> bytes:
    """The raw copy: the body exactly as received (decoded as text where possible) beside what we made of it."""
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    record = {
        "submission_id": submission.submission_id,
        "form_id": submission.form_id,
        "received_at": submission.received_at.isoformat(),
        "content_type": content_type,
        "headers": {key: value for key, value in headers.items() if key.lower() in _KEPT_HEADERS},
        "body": text if text is not None else body.hex(),
        "body_encoding": "utf-8" if text is not None else "hex",
        "message": submission.to_message(),
    }
    return json.dumps(record, ensure_ascii=False).encode()


_KEPT_HEADERS = frozenset({"origin", "referer", "user-agent", "content-type", "accept-language"})


# -- helpers --------------------------------------------------------------------------------------------------------


def _canonical(field_name: str) -> str:
    name = field_name.strip().lower()
    return _ALIASES.get(name, name)


def _media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    if not content_type:
        return "", {}
    media_type, _, rest = content_type.partition(";")
    params = {}
    for part in rest.split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            params[key.lower()] = value.strip().strip('"')
    return media_type.strip().lower(), params


def _json_object(body: bytes, charset: str) -> dict[str, Any]:
    try:
        data = json.loads(body.decode(charset) or "null")
    except json.JSONDecodeError as error:
        raise FormRejected(400, "body is not valid JSON", {"body": f"{error.msg} at position {error.pos}"}) from None
    if not isinstance(data, dict):
        raise FormRejected(400, "body must be a JSON object", {"body": "expected an object of fields"})
    return data


def _flatten(parsed: dict[str, list[str]]) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}


def _multipart(body: bytes, content_type: str) -> dict[str, Any]:
    from email.parser import BytesParser  # rare on the HTTP path: imported only when a multipart form arrives
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise FormRejected(400, "malformed multipart body", {"body": "no parts found"})
    fields: dict[str, list[str]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        if part.get_filename():
            raise FormRejected(422, "files are not accepted", {str(name): "file uploads are not accepted"})
        payload = part.get_payload(decode=True) or b""
        fields.setdefault(str(name), []).append(payload.decode(part.get_content_charset() or "utf-8"))
    return _flatten(fields)


def _text_value(value: Any, *, single: bool, first_of_many: bool) -> tuple[str | None, str | None]:
    """One field's value as text, or a reason it is not acceptable."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return ("да" if value else "нет"), None
    if isinstance(value, int | float):
        return str(value), None
    if isinstance(value, str):
        return value.strip(), None
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        if single:
            return None, "expected a single value, got several"
        if first_of_many:
            return (str(value[0]).strip() if value else None), None
        return ", ".join(str(item).strip() for item in value), None  # a checkbox group
    return None, "expected text"


def _contact(
    values: dict[str, str],
    name: str,
    normalize: Callable[[str], str],
    errors: dict[str, str],
    posted_as: dict[str, str],
) -> str | None:
    if name not in values:
        return None
    try:
        return normalize(values[name])
    except InvalidContact as error:
        errors[posted_as[name]] = str(error)
        return None


def _is_url(value: str, *, app: bool = False) -> bool:
    """An http(s) address; with ``app``, also an Android app's referrer (``android-app://org.telegram.messenger/``)."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https", *(("android-app",) if app else ())) and bool(parts.netloc)


def _timestamp(value: str | None, zone: ZoneInfo) -> datetime | None:
    """ISO 8601 (``2025-01-15T10:00:00+03:00``; without an offset: ``zone``) or Unix time in s or ms."""
    if not value:
        return None
    try:
        if re.fullmatch(r"\d{10}(\d{3})?", value):
            return datetime.fromtimestamp(int(value) / (1000 if len(value) == 13 else 1), UTC)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def _visit(values: dict[str, str], prefix: str) -> Visit:
    visit = {name: (values[prefix + name][:MAX_FIELD] if values.get(prefix + name) else None) for name in _VISIT_FIELDS}
    landing = values.get(prefix + "landing_url")  # unclipped: tags at the end of a long address count too
    if landing and not any(visit[tag] for tag in UTM_TAGS):
        # Tags not given as fields: read them from the landing page's address.
        query = dict(parse_qsl(urlsplit(landing).query))
        for tag in UTM_TAGS:
            visit[tag] = query.get(tag, "").strip()[:MAX_FIELD] or None
    for name in ("referrer", "landing_url"):  # kept in the CRM: without tokens, e-mails or fragments
        visit[name] = (public_url(values.get(prefix + name)) or "")[:MAX_FIELD] or None
    return Visit(**visit)


def _given(values: dict[str, str], names: tuple[str, ...], prefix: str = "") -> dict[str, str]:
    return {name: values[prefix + name][:MAX_FIELD] for name in names if values.get(prefix + name)}


def _client_ids(values: dict[str, str]) -> dict[str, str]:
    found = _given(values, _CLIENT_ID_FIELDS)
    ga = found.get("ga_client_id")
    if ga and ga.count(".") >= 3 and ga.upper().startswith("GA"):
        found["ga_client_id"] = ".".join(ga.split(".")[-2:])  # _ga cookie "GA1.1.123.456" → client id "123.456"
    return found
