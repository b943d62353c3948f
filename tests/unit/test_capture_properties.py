"""Properties of capture over arbitrary input (issue 5): the only exception capture raises is its own 4xx rejection,
and whatever it accepts travels (message round trip, raw copy, valid UTF-8 SQS accepts) with sane times only."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throughline.capture.forms import (
    FIRST_SEEN_MAX_AGE,
    FIRST_SEEN_MAX_AHEAD,
    FormRejected,
    decode_body,
    is_spam,
    parse_submission,
    raw_record,
    redirect_target,
)
from throughline.capture.submissions import SANE_TIMES, Submission

RECEIVED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MOSCOW = ZoneInfo("Europe/Moscow")
LIMIT = 65536
ALLOWED = ("https://shop.example.ru", "http://127.0.0.1:8000")
# Not what SQS accepts in a message body (besides lone surrogates, which UTF-8 cannot carry at all).
SQS_REFUSES = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
# Enough to find each class of odd input again (every one issue 5 lists is found within these), under ~20 s in all.
EXAMPLES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------------------------------------

any_text = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates, controls, unassigned, all
ODD_VALUES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01",
    "9999-12-31T23:59:59-14:00",
    "9999999999999",
    "0000000000",
    "http://[",
    "https://[::1",
    "https://shop.example.ru:99999/",
    "https://пример.рф/?utm_source=\ud83d",
    "android-app://org.telegram.messenger/",
    "ivan@exa\u200bmple.ru",
    "ｉｖａｎ@ｅxample.ru",
    "ivan@xn--.ru",
    "+7 916 123-45-67",
    "8 (916) 123-45-67",
    "\ud83d",
    "\uffff",
    "GA1.1.123.456",
    "https://shop.example.ru/thanks\r\nSet-Cookie: x=1",
]
FIELD_NAMES = [
    "name", "phone", "tel", "email", "e-mail", "comment", "message", "utm_source", "utm_medium", "utm_campaign",
    "utm_content", "utm_term", "referrer", "landing_url", "first_utm_source", "first_referrer", "first_landing_url",
    "first_seen_at", "gclid", "yclid", "ysclid", "fbclid", "_ga", "_ym_uid", "ga_client_id", "client_id",
    "_next", "_gotcha", "company", "services", "",
]  # fmt: skip
CONTACT_NAMES = ("name", "phone", "tel", "email", "e-mail", "comment", "message")  # what the visitor types
field_name = st.sampled_from(FIELD_NAMES) | any_text
scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**40, max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
    | st.sampled_from(ODD_VALUES)
)
json_value = st.recursive(
    scalar,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(any_text, children, max_size=3),
    max_leaves=12,
)
fields_map = st.dictionaries(field_name, json_value, max_size=8)
plain_fields = st.lists(st.tuples(field_name, any_text | st.sampled_from(ODD_VALUES)), max_size=8)
charset = st.sampled_from(
    ["utf-8", "UTF-8", "windows-1251", "koi8-r", "latin-1", "utf-16", "utf-7", "idna", "punycode", "unicode_escape",
     "raw_unicode_escape", "undefined", "rot13", "base64", "hex", "zlib", "nope", "", "utf-8\x00"]
)  # fmt: skip


def _bytes(text: str, encoding: str) -> bytes:
    try:
        return text.encode(encoding, "surrogatepass")
    except (LookupError, ValueError, TypeError):
        return text.encode("utf-8", "surrogatepass")


@st.composite
def json_posts(draw: st.DrawFn) -> tuple[bytes, str | None]:
    text = json.dumps(draw(fields_map), ensure_ascii=draw(st.booleans()))
    media = draw(st.sampled_from(["application/json", "text/plain", "text/plain;charset=UTF-8", "Application/JSON"]))
    encoding = draw(charset)
    content_type = media + (f"; charset={encoding}" if draw(st.booleans()) else "")
    return _bytes(text, encoding), content_type


@st.composite
def urlencoded_posts(draw: st.DrawFn) -> tuple[bytes, str | None]:
    encoding = draw(charset)
    pairs = draw(plain_fields)
    escape = draw(st.booleans())

    def part(value: str) -> str:
        raw = _bytes(value, encoding)
        return quote(raw) if escape else raw.decode("latin-1")

    body = "&".join(f"{part(name)}={part(value)}" for name, value in pairs)
    return body.encode("latin-1"), f"application/x-www-form-urlencoded; charset={encoding}"


@st.composite
def multipart_posts(draw: st.DrawFn) -> tuple[bytes, str | None]:
    boundary = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20) | any_text)
    chunks = []
    for name, value in draw(plain_fields):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
        if draw(st.integers(0, 9)) == 0:
            head += '; filename="x.txt"'
        if draw(st.booleans()):
            head += f"\r\nContent-Type: text/plain; charset={draw(charset)}"
        chunks.append(_bytes(head + "\r\n\r\n" + value + "\r\n", "utf-8"))
    body = b"".join(chunks) + _bytes(f"--{boundary}--\r\n", "utf-8")
    if draw(st.booleans()):
        body = draw(st.binary(max_size=200)) + body  # garbage before the first boundary
    return body, f"multipart/form-data; boundary={boundary}"


@st.composite
def extreme_posts(draw: st.DrawFn) -> tuple[bytes, str | None]:
    kind = draw(st.sampled_from(["number", "nesting", "objects", "multipart nesting"]))
    size = draw(st.integers(1, 40000))
    if kind == "number":
        return b'{"phone": ' + b"7" * (size % 6000 + 1) + b"}", "application/json"
    if kind == "nesting":
        return b"[" * size + b"]" * draw(st.integers(0, size)), "application/json"
    if kind == "objects":
        depth = size % 2000
        return b'{"a":' * depth + b"1" + b"}" * depth, "text/plain"
    depth = size % 1200 + 1
    inner = b'content-disposition:form-data;name="phone"\r\n\r\n+79161234567'
    for level in range(depth):
        boundary = format(level, "x").encode()
        inner = b"--" + boundary + b"\r\n" + inner + b"\r\n--" + boundary + b"--"
        if level < depth - 1:
            inner = b"content-type:multipart/x;boundary=" + boundary + b"\r\n\r\n" + inner
    return inner, f"multipart/form-data;boundary={format(depth - 1, 'x')}"


garbage_posts = st.tuples(
    st.binary(max_size=300),
    st.none()
    | st.sampled_from(["", "application/json", "multipart/form-data", "multipart/form-data; boundary=", "*/*"])
    | any_text,
)
posts = json_posts() | urlencoded_posts() | multipart_posts() | extreme_posts() | garbage_posts


# -- the properties -------------------------------------------------------------------------------------------------


def check_capture(body: bytes, content_type: str | None, origin: str | None) -> None:
    """Everything capture does with a post before storing it, with the guarantees the HTTP answer relies on."""
    try:
        fields = decode_body(body, content_type, LIMIT)
        is_spam(fields, "_gotcha")
        submission = parse_submission(
            "contact",
            fields,
            submission_id="sub-1",
            received_at=RECEIVED,
            origin=origin,
            default_region="RU",
            zone=MOSCOW,
        )
    except FormRejected as rejected:
        assert 400 <= rejected.status < 500
        json.dumps(rejected.body(), ensure_ascii=False).encode("utf-8")  # the answer itself can be sent
        return
    check_accepted(submission, body, content_type)
    location = redirect_target(fields.get("_next"), origin, ALLOWED)
    assert location is None or (location.isascii() and not re.search(r"[\s\\]", location))


def check_accepted(submission: Submission, body: bytes = b"", content_type: str | None = None) -> None:
    message = json.dumps(submission.to_message(), ensure_ascii=False)  # what SQS carries
    wire = message.encode("utf-8")  # raises on a lone surrogate
    assert not SQS_REFUSES.search(message)
    assert Submission.from_message(json.loads(wire)) == submission
    record = json.loads(raw_record(submission, body, content_type, {"User-Agent": "UA", "Origin": "x"}).decode())
    assert Submission.from_message(record["message"]) == submission
    assert submission.received_at == RECEIVED
    for visit in (submission.last_visit, submission.first_visit):
        if visit and visit.seen_at:
            assert RECEIVED - FIRST_SEEN_MAX_AGE <= visit.seen_at <= RECEIVED + FIRST_SEEN_MAX_AHEAD
            assert SANE_TIMES[0] <= visit.seen_at < SANE_TIMES[1]
            (visit.seen_at + timedelta(days=400)).astimezone(MOSCOW)  # date arithmetic the writer does


@EXAMPLES
@given(post=posts, origin=st.none() | st.sampled_from([*ALLOWED, "null"]) | any_text)
def test_any_post_is_accepted_cleanly_or_rejected_with_a_4xx(post, origin):
    body, content_type = post
    check_capture(body, content_type, origin)


@EXAMPLES
@given(fields=fields_map, origin=st.none() | any_text)
def test_any_field_map_is_accepted_cleanly_or_rejected_with_a_4xx(fields, origin):
    try:
        submission = parse_submission(
            "contact",
            fields,
            submission_id="sub-1",
            received_at=RECEIVED,
            origin=origin,
            default_region="RU",
            zone=MOSCOW,
        )
    except FormRejected as rejected:
        assert 400 <= rejected.status < 500
        return
    check_accepted(submission)


@EXAMPLES
@given(
    tracking=st.dictionaries(
        st.sampled_from([name for name in FIELD_NAMES if name not in CONTACT_NAMES]),
        json_value,
        max_size=6,
    )
)
def test_tracking_values_never_cost_the_lead(tracking):
    """Only what the visitor typed may reject a post: with a good phone, any tracking junk is accepted."""
    fields = {**tracking, "phone": "+7 916 123-45-67"}
    submission = parse_submission(
        "contact", fields, submission_id="s", received_at=RECEIVED, origin=None, default_region="RU", zone=MOSCOW
    )
    assert submission.phone == "+79161234567"
    check_accepted(submission)


@EXAMPLES
@given(target=any_text | st.sampled_from(ODD_VALUES) | st.builds(lambda path: ALLOWED[0] + "/" + path, any_text))
def test_a_redirect_is_none_or_a_clean_url_on_an_allowed_origin(target):
    location = redirect_target(target, ALLOWED[0], ALLOWED)
    if location is not None:
        assert location.isascii() and not re.search(r"[\s\\]", location)
        assert location.startswith(tuple(origin + "/" for origin in ALLOWED))
