"""Web-form capture: decode a posted body, validate and normalize it, and make it durable.

Nothing here knows about API Gateway: the handler passes bytes, a content type and a few headers, and maps
``FormRejected`` to an HTTP answer. Bad input is always a 4xx naming each bad field, never a 5xx: ``decode_body`` and
``parse_submission`` are pure (no I/O), so any exception escaping them is, by construction, about the input, and
``_rejecting_unreadable_input`` turns it into a 400 in that one place. Text is made storable on the way in: a lone
surrogate (the snippet cutting a value in the middle of an emoji) and the noncharacters SQS refuses become U+FFFD.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from throughline.adapters.http import origin_of, origins
from throughline.capture.submissions import (
    CLICK_IDS,
    UTM_TAGS,
    Submission,
    Visit,
    click_ids_in,
    public_url,
    query_values,
)
from throughline.capture.submissions import MAX_VALUE as MAX_FIELD
from throughline.contacts import InvalidContact, normalize_email, normalize_phone
from throughline.text import storable

FORM_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MAX_COMMENT = 10000
MAX_EXTRA_FIELDS = 50
OVERFLOW_FIELD = "другие поля"  # extra fields past MAX_EXTRA_FIELDS, as "name: value" lines, in the lead's comments
MAX_NESTING = 32  # levels of JSON arrays and objects in a body; deeper is not a form
# A first visit's time must be plausible next to the receipt: the snippet remembers a first touch for 180 days, and a
# visitor's clock may run a little fast. Anything else (year 1, year 9999, a clock years off) is kept in the lead's
# comments, never used for attribution or date arithmetic.
FIRST_SEEN_MAX_AGE = timedelta(days=730)
FIRST_SEEN_MAX_AHEAD = timedelta(hours=1)

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


_Parser = TypeVar("_Parser", bound=Callable[..., Any])


def _rejecting_unreadable_input(parser: _Parser) -> _Parser:
    """The one place where a failure to read the input becomes a 400 that names the problem.

    The parsers below do no I/O, so whatever escapes them (``ValueError`` from ``urlsplit``, ``int`` or
    ``fromisoformat``, ``UnicodeError`` from a codec or IDNA, ``RecursionError`` from deep nesting, …) was caused by
    the input. A 503 would make the site retry the same bytes forever; a 400 tells it what to fix.
    """

    @functools.wraps(parser)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return parser(*args, **kwargs)
        except FormRejected:
            raise
        except RecursionError:
            raise FormRejected(400, "body is nested too deeply", {"body": "too many nested levels"}) from None
        except (UnicodeError, LookupError) as error:
            raise FormRejected(400, "body is not valid text in its charset", {"body": _reason(error)}) from None
        except Exception as error:
            raise FormRejected(400, "body could not be read", {"body": _reason(error)}) from None

    return guarded  # type: ignore[return-value]


rejecting_unreadable_input = _rejecting_unreadable_input


@_rejecting_unreadable_input
def decode_body(body: bytes, content_type: str | None, max_bytes: int) -> dict[str, Any]:
    """Turn a JSON, urlencoded or multipart body into a flat field map (repeated keys become lists)."""
    if len(body) > max_bytes:
        raise FormRejected(413, "request body too large", {"body": f"larger than {max_bytes} bytes"})
    media_type, params = _media_type(content_type)
    charset = accepted_charset(params.get("charset"))
    if media_type in ("application/json", "text/plain"):
        # text/plain carries JSON from pages that post without a CORS preflight (sendBeacon, no-cors fetch).
        return _storable(_json_object(body, charset))
    if media_type == "application/x-www-form-urlencoded":
        # Percent-escapes are bytes in the declared charset too (old sites still post windows-1251).
        fields = parse_qs(_decoded(body, charset), keep_blank_values=True, encoding=charset, errors="strict")
        return _storable(_flatten(fields))
    if media_type == "multipart/form-data":
        return _storable(_multipart(body, params, charset))
    raise FormRejected(
        415,
        "unsupported content type",
        {"content-type": "send application/json, application/x-www-form-urlencoded or multipart/form-data"},
    )


# The charsets forms are posted in (IANA labels and their common aliases), each to its Python codec.
# Any other label is refused: Python's codec registry also holds rot13, zlib, base64, utf-7 and hundreds of legacy
# code pages no browser sends, and a label picks one of them by name.
CHARSETS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "windows-1251": "cp1251",
    "cp1251": "cp1251",
    "koi8-r": "koi8_r",
    "iso-8859-1": "latin-1",
    "latin-1": "latin-1",
    "latin1": "latin-1",
    "us-ascii": "ascii",
    "ascii": "ascii",
    # JSON in UTF-16 with its byte order mark (RFC 7159 allowed it; some servers relaying forms still send it).
    "utf-16": "utf-16",
}


def accepted_charset(label: str | None) -> str:
    """The codec of a ``charset`` parameter (utf-8 when absent); 415 naming it for any other charset."""
    if label is None:
        return "utf-8"
    codec = CHARSETS.get(label.strip().lower())
    if codec is None:
        raise FormRejected(
            415,
            "unsupported charset",
            {"charset": f"{label[:40]!r} is not accepted: send utf-8 (or windows-1251, koi8-r, iso-8859-1, us-ascii)"},
        )
    return codec


def is_spam(fields: Mapping[str, Any], honeypot_field: str) -> bool:
    """A filled honeypot: a field people never see, which bots fill in. Filled means some text or number in it, at any
    depth: a page with the field twice posts ``_gotcha=&_gotcha=`` (a list of two empty texts), and that is a person."""
    return _filled(fields.get(honeypot_field))


def _filled(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, list):
        return any(_filled(item) for item in value)
    if isinstance(value, dict):
        return any(_filled(item) for item in value.values())
    return value is not None and value is not False


@_rejecting_unreadable_input
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
    visit) are filled in by scripts and can be odd (an ``android-app://`` referrer, a cut-off URL, a JSON object, a
    first visit in year 1): an unusable one is left out of attribution and kept in the lead's comments instead, so no
    lead is lost over a tag.
    """
    errors: dict[str, str] = {}
    if not FORM_ID.fullmatch(form_id or ""):
        errors["form_id"] = "use 1-64 letters, digits, '.', '_' or '-'"
    values: dict[str, str] = {}
    posted_as: dict[str, str] = {}
    extra: dict[str, str] = {}

    overflow: list[str] = []

    def keep_extra(name: str, value: str) -> None:
        name, value = _clean(name, lines=False)[:100], _clean(value, lines=True)
        if len(extra) < MAX_EXTRA_FIELDS:
            extra[name] = value[:MAX_FIELD]
        else:  # a long quiz or a site builder's hidden fields: nothing the visitor could fix, so no reason to refuse
            overflow.append(f"{name}: {value}")

    for posted_name, raw_value in fields.items():
        raw_name = storable(str(posted_name))
        name = _canonical(raw_name)
        if name.startswith("_") or not name:
            continue  # meta fields (_gotcha, _next, _subject…) are instructions, not data
        tracking = name in _TRACKING
        if name in _CONTACT_FIELDS:
            value, problem = _typed_value(raw_value)
            if problem:
                errors[raw_name] = problem
                continue
        else:
            value, usable = _scripted_value(raw_value, first_of_many=tracking)
            if value and not usable:
                keep_extra(raw_name, value)  # a JSON object or the like: not a tag, but kept for the manager
                continue
        if value and name not in ("phone", "email"):  # contacts refuse such characters: see throughline.contacts
            value = _clean(value, lines=name == "comment" or name not in _KNOWN)
        if value is None or value == "":
            continue
        limit = MAX_COMMENT if name == "comment" else MAX_FIELD
        if len(value) > limit and not tracking:
            errors[raw_name] = f"longer than {limit} characters"
        elif name in _KNOWN and name not in values:
            values[name], posted_as[name] = value, raw_name
        elif name not in _KNOWN or value != values[name]:
            keep_extra(raw_name, value)  # another spelling of a field already given: the manager still sees it

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
    if first_seen_at and not received_at - FIRST_SEEN_MAX_AGE <= first_seen_at <= received_at + FIRST_SEEN_MAX_AHEAD:
        first_seen_at = None  # readable but implausible: year 1, year 9999, a clock years off
    if values.get("first_seen_at") and first_seen_at is None:
        keep_extra(posted_as["first_seen_at"], values.pop("first_seen_at"))
    if errors:
        raise FormRejected(422, "some fields are invalid", errors)
    if overflow:  # the whole post is in the raw copy; the lead gets what fits
        extra[OVERFLOW_FIELD] = "\n".join(overflow)[:MAX_FIELD]

    last_visit = _visit(values, "")
    first_visit = _visit(values, "first_")
    first_click_ids = {**click_ids_in(values.get("first_landing_url")), **_given(values, CLICK_IDS, "first_")}
    if first_seen_at:
        first_visit = Visit(**{**first_visit.__dict__, "seen_at": min(first_seen_at, received_at)})
    return Submission(
        submission_id=submission_id,
        form_id=form_id,
        received_at=received_at,
        last_visit=last_visit,
        # A first visit known only by its click id (auto-tagged Google Ads, no referrer) is a first visit too.
        first_visit=None if first_visit.is_empty() and not first_seen_at and not first_click_ids else first_visit,
        name=values.get("name"),
        last_name=values.get("last_name"),
        second_name=values.get("second_name"),
        phone=phone,
        email=email,
        comment=values.get("comment"),
        # Click ids are read from the whole, unclipped addresses, and fields win over them.
        click_ids={**click_ids_in(values.get("landing_url")), **_given(values, CLICK_IDS)},
        first_click_ids=first_click_ids,
        client_ids=_client_ids(values),
        extra=extra,
        origin=storable(origin)[:MAX_FIELD] if isinstance(origin, str) else None,
    )


def raw_key(submission: Submission) -> str:
    """Where the raw copy of a submission lives in the data bucket (Hive-style date partition)."""
    day = submission.received_at.astimezone(UTC).strftime("%Y-%m-%d")
    return f"raw/forms/date={day}/form={submission.form_id}/{submission.submission_id}.json"


def raw_record(
    submission: Submission,
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    builder: str | None = None,
) -> bytes:
    """The raw copy: the body exactly as received (decoded as text where possible) beside what we made of it, and
    the form builder whose webhook format it is (``tilda``, ``elementor``, ``json``; absent for the form route)."""
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    record = {
        "submission_id": submission.submission_id,
        "form_id": submission.form_id,
        "received_at": submission.received_at.isoformat(),
        "content_type": content_type,
        "headers": {key: storable(str(value)) for key, value in headers.items() if key.lower() in _KEPT_HEADERS},
        "body": text if text is not None else body.hex(),
        "body_encoding": "utf-8" if text is not None else "hex",
        "message": submission.to_message(),
    }
    if builder:
        record["builder"] = builder
    return json.dumps(record, ensure_ascii=False).encode()


_KEPT_HEADERS = frozenset({"origin", "referer", "user-agent", "content-type", "accept-language"})


def redirect_target(target: Any, origin: str | None, allowed_origins: Iterable[str]) -> str | None:
    """Formspree's ``_next``: where to send a plain HTML form after the post, or None (answer 202 JSON instead).

    Only a page on one of our own sites, and only as a clean URL: control characters, whitespace, backslashes and
    user info are refused (a header injection or a browser reading ``https://ours\\@evil`` differently from us),
    the host is IDNA-encoded and the rest percent-encoded, so the ``Location`` header is plain ASCII. A path
    (``/thanks``) is taken relative to the posting page's origin. Never raises: a bad ``_next`` must not turn a
    stored lead into an error.
    """
    try:
        if not isinstance(target, str) or not target or len(target) > MAX_FIELD:
            return None
        if any(char.isspace() or char == "\\" or unicodedata.category(char)[0] == "C" for char in target):
            return None
        if target.startswith("/") and not target.startswith("//") and isinstance(origin, str):
            target = origin.rstrip("/") + target
        parts = urlsplit(target)
        own_origin = origin_of(target)
        if own_origin is None or own_origin not in origins(allowed_origins):
            return None
        path = quote(parts.path or "/", safe=_URL_SAFE)
        query = quote(parts.query, safe=_URL_SAFE + "?")
        fragment = quote(parts.fragment, safe=_URL_SAFE + "?")
        location = urlunsplit((*own_origin.split("://", 1), path, query, fragment))
        return location if location.isascii() else None
    except (ValueError, UnicodeError):
        return None


_URL_SAFE = "/:@!$&'()*+,;=-._~%"


# -- helpers --------------------------------------------------------------------------------------------------------

# Never part of what a person wrote: C0 and C1 controls (NUL, ESC, …; tab and line breaks only where lines are allowed)
# and the bidi embeddings, overrides and isolates that make a name read backwards in the CRM.
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile("[\r\n\t\x0b\x0c\x85\u2028\u2029]+")


def _clean(value: str, *, lines: bool) -> str:
    """Text as it may be kept and shown: without control characters; one line unless ``lines`` (comments)."""
    value = value.replace("\r\n", "\n").replace("\r", "\n") if lines else _LINE_BREAKS.sub(" ", value)
    return _CONTROLS.sub("", value).strip()


def _storable(data: Any, depth: int = 0) -> Any:
    """Every text in decoded data (keys too) made storable; nesting deeper than ``MAX_NESTING`` refused."""
    if depth > MAX_NESTING:
        raise FormRejected(400, "body is nested too deeply", {"body": f"more than {MAX_NESTING} nested levels"})
    if isinstance(data, str):
        return storable(data)
    if isinstance(data, dict):
        return {storable(str(key)): _storable(value, depth + 1) for key, value in data.items()}
    if isinstance(data, list):
        return [_storable(value, depth + 1) for value in data]
    return data


def _reason(error: BaseException) -> str:
    return storable(f"{type(error).__name__}: {error}"[:300])


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


def _decoded(body: bytes, charset: str) -> str:
    """The body as text; a byte order mark (JSON allows one, RFC 8259 section 8.1) is no part of it."""
    return body.decode(charset).removeprefix("\ufeff")


def _json_object(body: bytes, charset: str) -> dict[str, Any]:
    text = _decoded(body, charset)
    try:
        data = json.loads(text or "null")
    except json.JSONDecodeError as error:
        raise FormRejected(400, "body is not valid JSON", {"body": f"{error.msg} at position {error.pos}"}) from None
    except ValueError as error:  # a number longer than Python converts (4300 digits)
        raise FormRejected(400, "body is not valid JSON", {"body": _reason(error)}) from None
    if not isinstance(data, dict):
        raise FormRejected(400, "body must be a JSON object", {"body": "expected an object of fields"})
    return data


def _flatten(parsed: dict[str, list[str]]) -> dict[str, Any]:
    return {key: values[0] if len(values) == 1 else values for key, values in parsed.items()}


def _multipart(body: bytes, params: Mapping[str, str], charset: str) -> dict[str, Any]:
    """``multipart/form-data`` as browsers send it (RFC 7578), read in one linear pass.

    Not the ``email`` package: its header parser is quadratic in parameters, and one 64 KiB part header of ``;;;…``
    took 90 s of CPU, so a single post timed the function out (a 5xx) and a few a second starved real ones.
    """
    boundary = params.get("boundary")
    if not boundary:
        raise FormRejected(400, "malformed multipart body", {"body": "no parts found"})
    # A delimiter is the boundary at the start of a line, then "--" (the last one) or the end of that line: the same
    # text inside a value is no delimiter. Bare line feeds are read as CRLF.
    delimiter = re.compile(rb"(?:\A|\r?\n)--" + re.escape(boundary.encode()) + rb"(--|[ \t]*\r?\n)")
    fields: dict[str, list[str]] = {}
    closed = False
    matches = list(delimiter.finditer(body))
    for match, following in zip(matches, [*matches[1:], None], strict=False):
        if match.group(1) == b"--" or following is None:
            closed = match.group(1) == b"--"
            break
        head, _, payload = _split_head(body[match.end() : following.start()])
        headers = _part_headers(head)
        media_type, part_params = _media_type(headers.get("content-type"))
        if media_type.startswith("multipart/"):
            raise FormRejected(400, "body is nested too deeply", {"body": "a part holds parts of its own"})
        disposition = _parameters(headers.get("content-disposition", ""))
        name = disposition.get("name")
        if not name:
            continue
        if disposition.get("filename"):
            raise FormRejected(422, "files are not accepted", {name: "file uploads are not accepted"})
        encoding = headers.get("content-transfer-encoding", "").strip().lower()
        if encoding == "base64":
            payload = base64.b64decode(payload)
        elif encoding == "quoted-printable":
            payload = binascii.a2b_qp(payload)
        part_charset = accepted_charset(part_params["charset"]) if part_params.get("charset") else charset
        fields.setdefault(name, []).append(payload.decode(part_charset))
    if not closed and not fields:
        raise FormRejected(400, "malformed multipart body", {"body": "no parts found"})
    return _flatten(fields)


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _split_head(part: bytes) -> tuple[bytes, bytes, bytes]:
    """A part's headers, the empty line that ends them (CRLF or a bare line feed), and its content."""
    end = _HEAD_END.search(part)
    return (part, b"", b"") if end is None else (part[: end.start()], end.group(), part[end.end() :])


def _part_headers(head: bytes) -> dict[str, str]:
    """A part's header lines by lower-case name. Names in them are UTF-8 (browsers send them raw, RFC 7578 5.1)."""
    headers: dict[str, str] = {}
    for line in re.split(r"\r?\n", head.decode("utf-8", "replace")):  # not splitlines: U+2028 may be in a name
        name, colon, value = line.partition(":")
        if colon and name.strip():
            headers.setdefault(name.strip().lower(), value.strip())
    return headers


# One parameter of a header (``; name="value"``, ``; name=value``), found in one linear scan.
_PARAMETER = re.compile(r';\s*([^\s=;"]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


def _parameters(header: str) -> dict[str, str]:
    """Parameters of a header, first spelling of each name winning; RFC 5987 ``name*=utf-8''…`` decoded."""
    found: dict[str, str] = {}
    for match in _PARAMETER.finditer(header):
        key, value = match.group(1).lower(), match.group(2).strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        if key.endswith("*"):
            encoding, _, rest = value.partition("'")
            key, value = key[:-1], unquote(rest.partition("'")[2], encoding=encoding or "utf-8", errors="strict")
            found[key] = value  # the extended spelling wins over the plain one
        else:
            found.setdefault(key, value)
    return found


def _typed_value(value: Any) -> tuple[str | None, str | None]:
    """A contact field (what the visitor typed) as text, or the reason it is not acceptable."""
    if isinstance(value, list):
        # A page with the field twice (a desktop and a mobile copy, one left empty) sends it twice: one value is
        # one value. Only different values are a question for the visitor.
        texts = {_scalar_text(item) for item in value} - {None, ""}
        if len(texts) > 1 or _NOT_SCALAR in texts:
            return None, "expected a single value, got several"
        value = texts.pop() if texts else None
    scalar = _scalar_text(value)
    return (scalar, None) if scalar is not _NOT_SCALAR else (None, "expected text")


def _scripted_value(value: Any, *, first_of_many: bool) -> tuple[str | None, bool]:
    """A field filled in by a script or the page (tags, ids, extra fields) as text, and whether it is usable as such.
    Anything else (an object, a list holding objects or nulls) comes back as compact JSON to keep in the comments."""
    scalar = _scalar_text(value)
    if scalar is not _NOT_SCALAR:
        return scalar, True
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        if first_of_many:  # a tag posted twice (``utm_source=a&utm_source=b``): the first one given
            return next((text for text in map(_scalar_text, value) if text), None), True
        return ", ".join(str(_scalar_text(item)) for item in value), True  # a checkbox group
    return storable(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)), False


_NOT_SCALAR: Any = object()


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "да" if value else "нет"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return storable(value).strip()
    return _NOT_SCALAR


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
    """A web address we can read; with ``app``, also an Android app's referrer (``android-app://org.telegram.messenger/``).
    urlsplit raises on ``http://[``: that is no web address, not an error."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises for a port that is no number
    except ValueError:
        return False
    return parts.scheme in ("http", "https", *(("android-app",) if app else ())) and bool(parts.hostname)


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
        query = query_values(urlsplit(landing).query)
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
