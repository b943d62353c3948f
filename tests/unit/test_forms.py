"""Unit tests of capture.forms (decoding, validation) and capture.submissions (Submission, Visit)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote_from_bytes
from zoneinfo import ZoneInfo

import pytest

from throughline.capture.forms import (
    FormRejected,
    decode_body,
    is_spam,
    parse_submission,
    raw_key,
    raw_record,
    redirect_target,
)
from throughline.capture.submissions import MESSAGE_TYPE, MESSAGE_VERSION, Submission, Visit, public_url

MOSCOW = ZoneInfo("Europe/Moscow")
RECEIVED = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
LIMIT = 65536
JSON = "application/json"
URLENCODED = "application/x-www-form-urlencoded"


def parse(fields, form_id="contact", **overrides) -> Submission:
    options = {
        "submission_id": "sub-1",
        "received_at": RECEIVED,
        "origin": "https://example.com",
        "default_region": "RU",
        "zone": MOSCOW,
    }
    return parse_submission(form_id, fields, **{**options, **overrides})


def rejected(fields, form_id="contact") -> FormRejected:
    with pytest.raises(FormRejected) as error:
        parse(fields, form_id)
    assert error.value.status == 422
    assert error.value.message == "some fields are invalid"
    return error.value


def multipart(*parts: tuple[str, str | bytes, str | None], boundary: str = "XyZ") -> tuple[bytes, str]:
    chunks = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if filename:
            head += "Content-Type: application/octet-stream\r\n"
        payload = value.encode() if isinstance(value, str) else value
        chunks.append(head.encode() + b"\r\n" + payload + b"\r\n")
    body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


# -- decode_body ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"phone": "+79161234567", "n": 1}', JSON, {"phone": "+79161234567", "n": 1}),
        (b'{"a": "b"}', "Application/JSON; charset=UTF-8", {"a": "b"}),
        ('{"name": "Иван"}'.encode(), JSON, {"name": "Иван"}),
        ('{"name": "Иван"}'.encode("utf-16"), "application/json; charset=utf-16", {"name": "Иван"}),
        (b'{"a": "b"}', "text/plain;charset=UTF-8", {"a": "b"}),  # sendBeacon / no-cors fetch
        (b'{"a": "b"}', 'application/json; charset="utf-8"', {"a": "b"}),
        (b"{}", JSON, {}),
    ],
)
def test_decode_json(body, content_type, expected):
    assert decode_body(body, content_type, LIMIT) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"name=Ivan&phone=%2B79161234567", {"name": "Ivan", "phone": "+79161234567"}),
        (b"services=A&services=B&services=C", {"services": ["A", "B", "C"]}),
        (b"comment=&name=Ivan", {"comment": "", "name": "Ivan"}),
        (b"name=%D0%98%D0%B2%D0%B0%D0%BD+%D0%9F", {"name": "Иван П"}),
        (b"fields%5BNAME%5D=x", {"fields[NAME]": "x"}),
        (b"", {}),
    ],
)
def test_decode_urlencoded(body, expected):
    assert decode_body(body, URLENCODED, LIMIT) == expected


def test_decode_urlencoded_raw_bytes_in_the_declared_charset():
    body = "name=Иван".encode("cp1251")
    assert decode_body(body, URLENCODED + "; charset=windows-1251", LIMIT) == {"name": "Иван"}


def test_decode_urlencoded_percent_escapes_in_the_declared_charset():
    body = b"name=%C8%E2%E0%ED"  # «Иван» in windows-1251
    assert decode_body(body, URLENCODED + "; charset=windows-1251", LIMIT) == {"name": "Иван"}


def test_decode_multipart_fields_and_repeated_keys():
    body, content_type = multipart(("name", "Иван", None), ("services", "A", None), ("services", "B", None))
    assert decode_body(body, content_type, LIMIT) == {"name": "Иван", "services": ["A", "B"]}


def test_decode_multipart_rejects_a_file_part():
    body, content_type = multipart(("name", "Ivan", None), ("cv", b"%PDF-1.4", "cv.pdf"))
    with pytest.raises(FormRejected) as error:
        decode_body(body, content_type, LIMIT)
    assert error.value.status == 422
    assert error.value.fields == {"cv": "file uploads are not accepted"}


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=XyZ", "multipart/form-data"])
def test_decode_multipart_without_parts(content_type):
    with pytest.raises(FormRejected) as error:
        decode_body(b"garbage", content_type, LIMIT)
    assert (error.value.status, error.value.fields) == (400, {"body": "no parts found"})


@pytest.mark.parametrize("content_type", [JSON, "application/xml", None, URLENCODED])
def test_body_over_the_limit_is_413(content_type):
    with pytest.raises(FormRejected) as error:
        decode_body(b"x" * 1025, content_type, 1024)
    assert error.value.status == 413
    assert error.value.fields == {"body": "larger than 1024 bytes"}


def test_body_at_the_limit_is_accepted():
    body = b'{"a": "' + b"x" * 1015 + b'"}'
    assert len(body) == 1024
    assert decode_body(body, JSON, 1024) == {"a": "x" * 1015}


@pytest.mark.parametrize(
    "content_type", ["application/xml", "text/html", "application/vnd.api+json", "", None, "image/png"]
)
def test_other_content_types_are_415(content_type):
    with pytest.raises(FormRejected) as error:
        decode_body(b'{"a": 1}', content_type, LIMIT)
    assert error.value.status == 415
    assert "content-type" in error.value.fields


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"a": ', JSON, "body is not valid JSON"),
        (b"name=Ivan", JSON, "body is not valid JSON"),
        (b"{'a': 1}", "text/plain", "body is not valid JSON"),
        (b"[1, 2]", JSON, "body must be a JSON object"),
        (b'"text"', JSON, "body must be a JSON object"),
        (b"null", JSON, "body must be a JSON object"),
        (b"", JSON, "body must be a JSON object"),
        (b'{"a": "\xff\xfe"}', JSON, "body is not valid text in its charset"),
        (b"name=\xff", URLENCODED, "body is not valid text in its charset"),
    ],
)
def test_bad_bodies_are_400(body, content_type, message):
    with pytest.raises(FormRejected) as error:
        decode_body(body, content_type, LIMIT)
    assert error.value.status == 400
    assert error.value.message == message
    assert set(error.value.fields) == {"body"}
    assert error.value.body() == {"error": message, "fields": error.value.fields}


def test_bad_json_names_the_position():
    with pytest.raises(FormRejected) as error:
        decode_body(b'{"a" 1}', JSON, LIMIT)
    assert error.value.fields == {"body": "Expecting ':' delimiter at position 5"}


# -- honeypot -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"_gotcha": "http://spam.example"}, True),
        ({"_gotcha": ["x"]}, True),
        ({"_gotcha": 1}, True),
        ({"_gotcha": ""}, False),
        ({"_gotcha": "   "}, False),
        ({"_gotcha": None}, False),
        ({}, False),
        ({"website": "x"}, False),
        # A page with the field twice, or a script posting it as a list or an object: empty is empty at any depth.
        ({"_gotcha": ["", ""]}, False),
        ({"_gotcha": [" ", "\n"]}, False),
        ({"_gotcha": [None]}, False),
        ({"_gotcha": {"value": ""}}, False),
        ({"_gotcha": [[], {}]}, False),
        ({"_gotcha": False}, False),
        ({"_gotcha": ["", "x"]}, True),
        ({"_gotcha": {"value": "x"}}, True),
        ({"_gotcha": [[0]]}, True),
        ({"_gotcha": True}, True),
    ],
)
def test_honeypot(fields, expected):
    assert is_spam(fields, "_gotcha") is expected


def test_honeypot_name_is_configurable():
    assert is_spam({"website": "x"}, "website") is True


# -- parse_submission: contacts and errors --------------------------------------------------------------------------


def test_contacts_are_normalized():
    submission = parse({"phone": "8 916 123-45-67", "email": " Ivan.Petrov@Example.RU ", "name": " Иван "})
    assert submission.phone == "+79161234567"
    assert submission.email == "ivan.petrov@example.ru"
    assert submission.name == "Иван"
    assert submission.submission_id == "sub-1"
    assert submission.form_id == "contact"
    assert submission.received_at == RECEIVED
    assert submission.origin == "https://example.com"
    assert submission.first_visit is None
    assert submission.last_visit == Visit()
    assert (submission.click_ids, submission.client_ids, submission.extra) == ({}, {}, {})


def test_phone_in_another_default_region():
    assert parse({"phone": "030 123456"}, default_region="DE").phone == "+4930123456"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"email": "a@b.ru"}, (None, "a@b.ru")), ({"phone": "9161234567"}, ("+79161234567", None))],
)
def test_one_contact_is_enough(fields, expected):
    submission = parse(fields)
    assert (submission.phone, submission.email) == expected


def test_every_bad_field_is_named_at_once_by_the_name_it_was_posted_under():
    error = rejected({"tel": "12", "email": "not-an-email", "name": "x" * 2001}, form_id="bad id!")
    assert error.fields == {
        "form_id": "use 1-64 letters, digits, '.', '_' or '-'",
        "tel": "not a phone number",
        "email": "not an e-mail address",
        "name": "longer than 2000 characters",
    }
    assert error.body() == {"error": "some fields are invalid", "fields": error.fields}


def test_unusable_tracking_fields_never_reject_the_lead_and_are_kept_in_its_comments():
    tracking = {
        "referrer": "mailto:someone@example.ru",
        "landing_url": "javascript:alert(1)",
        "first_referrer": "ftp://x.ru/",
        "first_landing_url": "/relative",
        "first_seen_at": "yesterday",
    }
    submission = parse({"phone": "+79161234567", **tracking})
    assert submission.extra == tracking
    assert submission.last_visit == Visit()
    assert submission.first_visit is None


def test_addresses_keep_only_origin_path_and_tags():
    landing = "https://shop.ru/reset/?reset_token=s3cr3t&utm_source=vk&email=a%40b.ru&yclid=7#access_token=t0k3n"
    submission = parse({"phone": "+79161234567", "landing_url": landing, "first_referrer": "https://m.ru/p?sid=1#x"})
    assert submission.last_visit.landing_url == "https://shop.ru/reset/?utm_source=vk&yclid=7"
    assert submission.first_visit.referrer == "https://m.ru/p"
    assert submission.click_ids == {"yclid": "7"} and submission.last_visit.utm_source == "vk"


def test_addresses_never_keep_credentials():
    landing = "https://anna:s3cr3t@Shop.ru:8443/p/?utm_source=vk"
    submission = parse({"phone": "+79161234567", "landing_url": landing, "referrer": "http://bot:t0k3n@[::1]:8080/"})
    assert submission.last_visit.landing_url == "https://shop.ru:8443/p/?utm_source=vk"
    assert submission.last_visit.referrer == "http://[::1]:8080/"


def test_public_url_of_an_unreadable_address_is_none():
    assert public_url("http://[::1") is None


def test_a_tag_given_twice_in_an_address_counts_by_its_first_value_as_in_the_snippet():
    # URLSearchParams.get() in the snippet, and the first of a field posted twice, on the server.
    landing = "https://shop.ru/?utm_source=yandex&utm_medium=cpc&yclid=1&utm_source=google&yclid=2"
    submission = parse({"phone": "+79161234567", "landing_url": landing, "first_landing_url": landing})
    assert submission.last_visit.utm_source == submission.first_visit.utm_source == "yandex"
    assert submission.click_ids == submission.first_click_ids == {"yclid": "1"}


def test_an_android_app_referrer_is_a_referrer():
    submission = parse({"phone": "+79161234567", "referrer": "android-app://org.telegram.messenger/"})
    assert submission.last_visit.referrer == "android-app://org.telegram.messenger/"
    assert submission.extra == {}


def test_click_ids_and_tags_are_read_before_long_addresses_are_cut():
    tail = "&utm_source=yandex&utm_medium=cpc&yclid=777"
    landing = "https://shop.ru/?utm_content=" + "x" * 2100 + tail
    submission = parse({"phone": "+79161234567", "landing_url": landing, "first_landing_url": landing})
    assert submission.click_ids == submission.first_click_ids == {"yclid": "777"}
    assert submission.first_visit.utm_source == "yandex" and len(submission.first_visit.landing_url) == 2000


def test_first_touch_click_ids_are_posted_as_their_own_fields():
    submission = parse({"phone": "+79161234567", "first_gclid": "Cj0", "first_ysclid": "ys", "gclid": "other"})
    assert submission.first_click_ids == {"gclid": "Cj0", "ysclid": "ys"}
    assert submission.click_ids == {"gclid": "other"}
    assert submission.extra == {}


def test_tracking_values_are_cut_to_length_and_lists_give_their_first_value():
    submission = parse({"phone": "+79161234567", "utm_campaign": "к" * 2500, "utm_source": ["vk", "ok"]})
    assert submission.last_visit.utm_campaign == "к" * 2000
    assert submission.last_visit.utm_source == "vk"


def test_a_tag_posted_twice_gives_its_first_nonempty_value():
    # A site builder's empty hidden utm_source beside the snippet's: the empty one won and the lead lost its source.
    submission = parse({"phone": "+79161234567", "utm_source": ["", "yandex"], "yclid": [" ", "42"]})
    assert (submission.last_visit.utm_source, submission.click_ids) == ("yandex", {"yclid": "42"})


@pytest.mark.parametrize("fields", [{}, {"name": "Иван"}, {"phone": "", "email": "   "}, {"phone": None}])
def test_phone_or_email_required(fields):
    assert rejected(fields).fields == {
        "phone": "give a phone number or an e-mail address",
        "email": "give a phone number or an e-mail address",
    }


def test_bad_phone_with_no_email_names_only_the_phone():
    assert rejected({"phone": "123"}).fields == {"phone": "not a phone number"}


def test_bad_phone_is_rejected_even_with_a_good_email():
    assert rejected({"phone": "12345", "email": "a@b.ru"}).fields == {
        "phone": "not a valid phone number (check the digits)"
    }


@pytest.mark.parametrize("form_id", ["contact", "Landing-2025.v2", "a", "x" * 64, "0_form"])
def test_good_form_ids(form_id):
    assert parse({"phone": "9161234567"}, form_id=form_id).form_id == form_id


@pytest.mark.parametrize("form_id", ["", "-lead", ".hidden", "x" * 65, "форма", "a/b", "a b", "a\nb", "a\r"])
def test_bad_form_ids(form_id):
    assert rejected({"phone": "9161234567"}, form_id=form_id).fields == {
        "form_id": "use 1-64 letters, digits, '.', '_' or '-'"
    }


def test_form_id_with_a_trailing_newline_is_rejected():
    assert rejected({"phone": "9161234567"}, form_id="contact\n").fields == {
        "form_id": "use 1-64 letters, digits, '.', '_' or '-'"
    }


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"phone": ["+79161234567", "+79161234568"]}, {"phone": "expected a single value, got several"}),
        ({"phone": "+79161234567", "name": {"first": "Иван"}}, {"name": "expected text"}),
        ({"email": "a@b.ru", "phone": {"value": "+79161234567"}}, {"phone": "expected text"}),
        ({"phone": "+79161234567", "name": "x" * 2001}, {"name": "longer than 2000 characters"}),
        ({"phone": "+79161234567", "comment": "x" * 10001}, {"comment": "longer than 10000 characters"}),
    ],
)
def test_bad_values_are_named(fields, bad):
    assert rejected(fields).fields == bad


def test_long_comment_within_its_own_limit():
    assert parse({"phone": "+79161234567", "comment": "x" * 10000}).comment == "x" * 10000


def test_extra_fields_past_the_limit_are_kept_together_not_refused():
    # A 60-question quiz got 422 "too many fields", which no visitor can fix: the lead was lost.
    fields = {"phone": "+79161234567", **{f"q{index:02}": "да" for index in range(60)}}
    submission = parse(fields)
    assert len(submission.extra) == 51
    assert submission.extra["q49"] == "да"
    assert submission.extra["другие поля"] == "\n".join(f"q{index}: да" for index in range(50, 60))


def test_ten_thousand_fields_make_one_bounded_lead():
    fields = {"phone": "+79161234567", **{f"a{index}": "1" for index in range(10_000)}}
    submission = parse(fields)
    assert len(submission.extra) == 51 and len(submission.extra["другие поля"]) <= 2000


# -- parse_submission: field names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_name", "attribute"),
    [
        ("tel", "phone"),
        ("Telephone", "phone"),
        ("phone_number", "phone"),
        ("mobile", "phone"),
        ("PHONE", "phone"),
        (" phone ", "phone"),
    ],
)
def test_phone_aliases(raw_name, attribute):
    assert getattr(parse({raw_name: "8 916 123-45-67"}), attribute) == "+79161234567"


@pytest.mark.parametrize("raw_name", ["e-mail", "mail", "EMAIL"])
def test_email_aliases(raw_name):
    assert parse({raw_name: "A@B.RU"}).email == "a@b.ru"


@pytest.mark.parametrize(
    ("raw_name", "attribute"),
    [
        ("fio", "name"),
        ("full_name", "name"),
        ("first_name", "name"),
        ("message", "comment"),
        ("msg", "comment"),
        ("question", "comment"),
        ("text", "comment"),
        ("surname", "last_name"),
        ("last_name", "last_name"),
        ("patronymic", "second_name"),
        ("middle_name", "second_name"),
    ],
)
def test_text_aliases(raw_name, attribute):
    submission = parse({"phone": "9161234567", raw_name: " Значение "})
    assert getattr(submission, attribute) == "Значение"
    assert submission.extra == {}


def test_first_spelling_of_a_field_wins():
    assert parse({"phone": "9161234567", "tel": "9031234567"}).phone == "+79161234567"


def test_another_spelling_with_another_value_is_kept_in_the_comments():
    # A second number the visitor typed under another name ("tel") vanished from the lead.
    submission = parse({"phone": "9161234567", "tel": "9031234567", "Name": "Иван", "name": "Иван", "fio": "Пётр"})
    assert (submission.phone, submission.name) == ("+79161234567", "Иван")
    assert submission.extra == {"tel": "9031234567", "fio": "Пётр"}  # the same value again is no news


def test_extra_fields_are_kept_and_checkbox_lists_joined():
    submission = parse(
        {
            "phone": "9161234567",
            "services": ["CRM", " Телефония ", 3],
            "Company ": "ООО «Ромашка»",
            "agree": True,
            "disagree": False,
            "budget": 150000,
            "ratio": 0.5,
            "empty": "",
            "nothing": None,
        }
    )
    assert submission.extra == {
        "services": "CRM, Телефония, 3",
        "Company": "ООО «Ромашка»",
        "agree": "да",
        "disagree": "нет",
        "budget": "150000",
        "ratio": "0.5",
    }


def test_meta_fields_are_ignored():
    submission = parse(
        {"phone": "9161234567", "_gotcha": "", "_next": "https://example.com/thanks", "_subject": "New lead", "": "x"}
    )
    assert submission.extra == {}
    assert submission.comment is None


def test_long_extra_field_names_are_clipped():
    assert parse({"phone": "9161234567", "q" * 150: "a"}).extra == {"q" * 100: "a"}


# -- parse_submission: visits, click ids, client ids ----------------------------------------------------------------


def test_last_visit_from_fields():
    submission = parse(
        {
            "phone": "9161234567",
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "Купить CRM систему",
            "utm_content": "ad-1",
            "utm_term": "crm",
            "referrer": "https://www.google.com/",
            "landing_url": "https://example.com/?utm_source=yandex&utm_medium=cpm",
        }
    )
    assert submission.last_visit == Visit(
        utm_source="google",
        utm_medium="cpc",
        utm_campaign="Купить CRM систему",
        utm_content="ad-1",
        utm_term="crm",
        referrer="https://www.google.com/",
        landing_url="https://example.com/?utm_source=yandex&utm_medium=cpm",
    )


def test_tags_and_click_ids_read_from_the_landing_url():
    landing = (
        "https://example.com/crm?utm_source=yandex&utm_medium=cpc&utm_campaign=%D0%92%D0%B5%D1%81%D0%BD%D0%B0"
        "&utm_content=&utm_term=crm+price&yclid=5423&gclid=Cj0&fbclid=IwAR"
    )
    submission = parse({"phone": "9161234567", "landing_url": landing, "gclid": "from-field"})
    assert submission.last_visit.tags() == {
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "utm_campaign": "Весна",
        "utm_content": None,
        "utm_term": "crm price",
    }
    assert submission.click_ids == {"gclid": "from-field", "yclid": "5423", "fbclid": "IwAR"}


def test_click_ids_from_fields():
    fields = {"phone": "9161234567", "gclid": "g", "ysclid": "ys", "wbraid": "", "unknown_clid": "u"}
    submission = parse(fields)
    assert submission.click_ids == {"gclid": "g", "ysclid": "ys"}
    assert submission.extra == {"unknown_clid": "u"}


def test_first_touch_tags():
    submission = parse(
        {
            "phone": "9161234567",
            "first_utm_source": "yandex",
            "first_utm_medium": "organic",
            "first_referrer": "https://yandex.ru/",
            "first_landing_url": "https://example.com/blog",
            "first_seen_at": "2025-01-10T12:00:00+03:00",
        }
    )
    assert submission.first_visit == Visit(
        utm_source="yandex",
        utm_medium="organic",
        referrer="https://yandex.ru/",
        landing_url="https://example.com/blog",
        seen_at=datetime(2025, 1, 10, 9, 0, tzinfo=UTC),
    )
    assert submission.last_visit == Visit()


def test_first_touch_tags_read_from_the_first_landing_url():
    submission = parse(
        {"phone": "9161234567", "first_landing_url": "https://example.com/?utm_source=vk&utm_medium=cpc&utm_term=x"}
    )
    assert submission.first_visit.tags() == {
        "utm_source": "vk",
        "utm_medium": "cpc",
        "utm_campaign": None,
        "utm_content": None,
        "utm_term": "x",
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-01-10T12:00:00+03:00", datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),
        ("2025-01-10T09:00:00Z", datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),
        ("2025-01-10T12:00:00", datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),  # naive: the configured zone
        ("1736499600", datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),  # Unix seconds
        ("1736499600000", datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),  # Unix milliseconds
        (1736499600, datetime(2025, 1, 10, 9, 0, tzinfo=UTC)),  # a JSON number
        ("2025-01-15T10:59:59Z", RECEIVED),  # a visitor's clock a little fast: clipped to the receipt
        ("2023-01-16T10:00:00Z", datetime(2023, 1, 16, 10, 0, tzinfo=UTC)),  # two years back: still plausible
    ],
)
def test_first_seen_at(raw, expected):
    submission = parse({"phone": "9161234567", "first_utm_source": "yandex", "first_seen_at": raw})
    seen_at = submission.first_visit.seen_at
    assert seen_at == expected
    assert seen_at.tzinfo is not None


def test_first_seen_at_keeps_the_senders_offset():
    seen_at = parse({"phone": "9161234567", "first_seen_at": "2025-01-10T12:00:00+05:00"}).first_visit.seen_at
    assert seen_at.utcoffset() == timedelta(hours=5)


def test_first_seen_at_alone_still_gives_a_first_visit():
    submission = parse({"phone": "9161234567", "first_seen_at": "1736499600"})
    assert submission.first_visit == Visit(seen_at=datetime(2025, 1, 10, 9, 0, tzinfo=UTC))


@pytest.mark.parametrize("raw", ["yesterday", "173649960", "17364996000", "2025-13-01T00:00:00", "15.01.2025"])
def test_unreadable_first_seen_at_is_kept_aside(raw):
    submission = parse({"phone": "9161234567", "first_seen_at": raw})
    assert submission.first_visit is None
    assert submission.extra == {"first_seen_at": raw}


@pytest.mark.parametrize(
    "raw",
    [
        # Readable but implausible: each used to reach the writer and overflow its date arithmetic (issue 5, item 1).
        "0001-01-01T00:00:00+14:00",
        "0001-01-01",
        "0001-01-01T00:00:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31",
        "2030-01-01T00:00:00Z",  # far future
        "2025-01-15T11:00:01Z",  # just past the allowed skew
        "2023-01-15T09:59:59Z",  # just older than two years
        "1970-01-01T00:00:00Z",
        "0000000000",  # Unix time 0
        "9999999999",  # Unix seconds in 2286
        "9999999999999",  # Unix milliseconds in 2286
        1,  # a JSON number: 1970
    ],
)
def test_an_implausible_first_seen_at_is_kept_in_the_comments_not_as_a_touch(raw):
    submission = parse({"phone": "9161234567", "first_utm_source": "yandex", "first_seen_at": raw})
    assert submission.first_visit == Visit(utm_source="yandex")  # the tags stay; the time does not
    assert submission.extra == {"first_seen_at": str(raw)}
    wire = json.loads(json.dumps(submission.to_message()))
    assert Submission.from_message(wire) == submission


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"_ga": "GA1.1.123456789.1700000000"}, {"ga_client_id": "123456789.1700000000"}),
        ({"_ga": "GA1.2.987.654"}, {"ga_client_id": "987.654"}),
        ({"ga_client_id": "123456789.1700000000"}, {"ga_client_id": "123456789.1700000000"}),
        ({"_ym_uid": "1700000000123456789"}, {"ym_client_id": "1700000000123456789"}),
        ({"client_id": "c1", "visitor_id": "v1", "roistat_visit": "77"},
         {"client_id": "c1", "visitor_id": "v1", "roistat_visit": "77"}),
    ],
)  # fmt: skip
def test_client_ids(fields, expected):
    assert parse({"phone": "9161234567", **fields}).client_ids == expected


# -- Submission and Visit -------------------------------------------------------------------------------------------


def full_submission(**overrides) -> Submission:
    submission = parse(
        {
            "phone": "8 916 123-45-67",
            "email": "Ivan@Example.ru",
            "name": "Иван",
            "last_name": "Петров",
            "second_name": "Сергеевич",
            "comment": "Перезвоните",
            "landing_url": "https://example.com/?utm_source=google&utm_medium=cpc&utm_campaign=crm&gclid=g1",
            "referrer": "https://www.google.com/",
            "first_utm_source": "yandex",
            "first_utm_medium": "organic",
            "first_seen_at": "2025-01-10T12:00:00+03:00",
            "_ga": "GA1.1.111.222",
            "services": ["CRM", "Телефония"],
        }
    )
    return replace(submission, raw_key="raw/forms/date=2025-01-15/form=contact/sub-1.json", **overrides)


def test_message_round_trip():
    submission = full_submission()
    message = submission.to_message()
    assert message["type"] == MESSAGE_TYPE == "form_submission"
    assert message["version"] == MESSAGE_VERSION == 1
    wire = json.loads(json.dumps(message))  # what SQS carries
    assert wire["submission"]["received_at"] == "2025-01-15T10:00:00+00:00"
    assert wire["submission"]["first_visit"]["seen_at"] == "2025-01-10T12:00:00+03:00"
    assert Submission.from_message(wire) == submission


def test_message_round_trip_without_a_first_visit():
    submission = parse({"email": "a@b.ru"})
    assert submission.first_visit is None
    assert Submission.from_message(json.loads(json.dumps(submission.to_message()))) == submission


def test_from_message_rejects_other_messages():
    with pytest.raises(ValueError, match="not a form submission message: 'bitrix_event'"):
        Submission.from_message({"type": "bitrix_event", "submission": {}})


def test_fingerprint_ignores_ids_times_and_raw_key():
    first = full_submission()
    second = replace(first, submission_id="sub-2", received_at=RECEIVED + timedelta(seconds=3), raw_key=None)
    assert first.fingerprint() == second.fingerprint()
    assert len(first.fingerprint()) == 64


@pytest.mark.parametrize(
    "change",
    [
        {"phone": "+79031234567"},
        {"email": "other@example.ru"},
        {"comment": "Другое"},
        {"form_id": "order"},
        {"extra": {"services": "CRM"}},
        {"click_ids": {}},
        {"last_visit": Visit(utm_source="yandex")},
        {"first_visit": None},
    ],
)
def test_fingerprint_differs_when_content_differs(change):
    assert full_submission().fingerprint() != full_submission(**change).fingerprint()


def test_person_key_same_for_the_same_phone():
    one = parse({"phone": "8 916 123-45-67", "name": "Иван"}, submission_id="a")
    two = parse({"phone": "+7 (916) 123-45-67", "email": "x@y.ru"}, submission_id="b")
    assert one.person_key() == two.person_key()
    assert len(one.person_key()) == 40


def test_person_key_does_not_contain_the_contact():
    submission = parse({"phone": "8 916 123-45-67", "email": "ivan@example.ru"})
    key = submission.person_key()
    for secret in ("79161234567", "9161234567", "1234567", "ivan", "example"):
        assert secret not in key


def test_person_key_falls_back_to_email_then_id():
    by_email = parse({"email": "ivan@example.ru"}, submission_id="a")
    assert by_email.person_key() == parse({"email": "IVAN@example.ru"}, submission_id="b").person_key()
    assert by_email.person_key() != parse({"phone": "9161234567"}).person_key()
    anonymous = replace(by_email, email=None)
    assert anonymous.person_key() != replace(anonymous, submission_id="other").person_key()


def test_contacts_set():
    assert full_submission().contacts() == {"+79161234567", "ivan@example.ru"}
    assert parse({"email": "a@b.ru"}).contacts() == {"a@b.ru"}


@pytest.mark.parametrize(
    ("visit", "empty"),
    [
        (Visit(), True),
        (Visit(seen_at=RECEIVED), True),
        (Visit(utm_term="x"), False),
        (Visit(referrer="https://a.ru/"), False),
        (Visit(landing_url="https://a.ru/"), False),
    ],
)
def test_visit_is_empty(visit, empty):
    assert visit.is_empty() is empty


# -- raw copies -----------------------------------------------------------------------------------------------------


def test_raw_key_uses_the_utc_date():
    late = parse(
        {"phone": "9161234567"}, received_at=datetime(2025, 1, 15, 23, 30, tzinfo=timezone(timedelta(hours=3)))
    )
    assert raw_key(late) == "raw/forms/date=2025-01-15/form=contact/sub-1.json"
    assert raw_key(full_submission()) == "raw/forms/date=2025-01-15/form=contact/sub-1.json"


def test_raw_record_keeps_the_body_and_only_harmless_headers():
    submission = full_submission()
    headers = {"Origin": "https://example.com", "Cookie": "session=1", "Authorization": "x", "User-Agent": "UA"}
    record = json.loads(raw_record(submission, "name=Иван".encode(), URLENCODED, headers))
    assert record["body"] == "name=Иван"
    assert record["body_encoding"] == "utf-8"
    assert record["headers"] == {"Origin": "https://example.com", "User-Agent": "UA"}
    assert Submission.from_message(record["message"]) == submission


def test_raw_record_hex_for_binary_bodies():
    record = json.loads(raw_record(full_submission(), b"\xff\x00", None, {}))
    assert (record["body"], record["body_encoding"]) == ("ff00", "hex")


# -- hostile input (issue 5): only FormRejected, and a 4xx for anything unreadable ----------------------------------


def nested_multipart(levels: int) -> tuple[bytes, str]:
    body = b'Content-Disposition: form-data; name="phone"\r\n\r\n+79161234567'
    for level in range(levels):
        boundary = f"b{level}".encode()
        head = b"Content-Type: multipart/mixed; boundary=" + boundary + b"\r\n\r\n" if level else b""
        body = head + b"--" + boundary + b"\r\n" + body + b"\r\n--" + boundary + b"--\r\n"
    return body.split(b"\r\n\r\n", 1)[1], f"multipart/form-data; boundary=b{levels - 1}"


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b'{"phone": ' + b"1" * 4301 + b"}", JSON, "body is not valid JSON"),  # Python's int digit limit
        (b'{"a": ' + b"1" * 5000 + b"}", "text/plain", "body is not valid JSON"),
        (b"[" * 32000, JSON, "body is nested too deeply"),  # RecursionError in the JSON scanner
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", JSON, "body is nested too deeply"),  # deeper than we read
        (b'{"a": ' + b'{"b": ' * 40 + b"1" + b"}" * 40 + b"}", JSON, "body is nested too deeply"),
        (b"x", "multipart/form-data; boundary=\ud83d", "body is not valid text in its charset"),
    ],
)
def test_unreadable_bodies_are_400_naming_the_problem(body, content_type, message):
    with pytest.raises(FormRejected) as error:
        decode_body(body, content_type, LIMIT)
    assert (error.value.status, error.value.message) == (400, message)
    assert set(error.value.fields) == {"body"} and error.value.fields["body"]


def test_deeply_nested_multipart_is_400():
    body, content_type = nested_multipart(1100)
    with pytest.raises(FormRejected) as error:
        decode_body(body, content_type, 10_000_000)
    assert (error.value.status, error.value.message) == (400, "body is nested too deeply")


def test_a_multipart_part_name_with_a_nul_is_just_an_odd_name():
    body, content_type = multipart(("na\x00me", "x", None), ("phone", "+79161234567", None))
    fields = decode_body(body, content_type, LIMIT)
    submission = parse(fields)
    assert submission.extra == {"name": "x"}  # the NUL is no part of the name
    json.loads(raw_record(submission, body, content_type, {}))


@pytest.mark.parametrize(
    "escaped",
    [
        "\\ud83d",  # the snippet cut a value in the middle of an emoji: a high surrogate alone
        "\\ude00",  # a low surrogate alone
        "\\ude00\\ud83d",  # a pair in the wrong order
        "\\uffff",  # a noncharacter SQS refuses
    ],
)
def test_unstorable_text_is_stored_with_the_replacement_character_and_the_lead_accepted(escaped):
    body = (
        '{"name": "Иван ESC", "phone": "+7 916 123-45-67", "comment": "ESC", "utm_source": "yaESC",'
        ' "referrer": "https://ya.ru/?q=ESC", "company ESC": "ESC", "first_seen_at": "ESC"}'
    ).replace("ESC", escaped)
    fields = decode_body(body.encode(), JSON, LIMIT)
    submission = parse(fields, origin="https://example.com\ud83d")
    replaced = "\ufffd" * escaped.count("\\u")
    assert submission.name == f"Иван {replaced}"
    assert submission.comment == replaced
    assert submission.last_visit.utm_source == f"ya{replaced}"
    assert submission.extra == {f"company {replaced}": replaced, "first_seen_at": replaced}
    assert submission.origin == "https://example.com\ufffd"
    message = json.dumps(submission.to_message(), ensure_ascii=False).encode("utf-8")  # what SQS carries
    assert Submission.from_message(json.loads(message)) == submission
    record = json.loads(raw_record(submission, body.encode(), JSON, {"User-Agent": "UA\ud83d"}))
    assert record["headers"] == {"User-Agent": "UA\ufffd"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("referrer", "http://["),  # urlsplit raises ValueError
        ("landing_url", "https://[::1"),
        ("first_referrer", "http://]"),
        ("first_landing_url", "https://shop.example.ru:99999/"),  # a port out of range
        ("landing_url", "https://shop.example.ru:port/?utm_source=x"),
        ("referrer", "https://"),  # no host
        ("referrer", "https://@/"),
    ],
)
def test_an_unreadable_address_is_kept_in_the_comments(field, value):
    submission = parse({"phone": "9161234567", field: value})
    assert submission.extra == {field: value}
    assert submission.last_visit == Visit() and submission.click_ids == {}


@pytest.mark.parametrize(
    ("fields", "extra"),
    [
        ({"ga_client_id": ["GA1.1", None]}, {"ga_client_id": '["GA1.1",null]'}),
        ({"utm_source": {"value": "yandex"}}, {"utm_source": '{"value":"yandex"}'}),
        ({"first_utm_campaign": [["zima"]]}, {"first_utm_campaign": '[["zima"]]'}),
        ({"yclid": {"id": 1, "ok": True}}, {"yclid": '{"id":1,"ok":true}'}),
        ({"landing_url": [{"href": "https://a.ru/"}]}, {"landing_url": '[{"href":"https://a.ru/"}]'}),
        ({"first_seen_at": {"t": 1736499600}}, {"first_seen_at": '{"t":1736499600}'}),
        ({"company": {"name": "ООО"}}, {"company": '{"name":"ООО"}'}),  # not a contact field: kept too
        ({"services": [{"a": 1}, None]}, {"services": '[{"a":1},null]'}),
    ],
)
def test_non_text_tracking_values_are_kept_as_json_in_the_comments(fields, extra):
    submission = parse({"phone": "9161234567", **fields})
    assert submission.extra == extra
    assert submission.last_visit == Visit() and submission.first_visit is None
    assert submission.click_ids == {} and submission.client_ids == {}


def test_a_tag_posted_twice_is_still_read_as_the_first():
    assert parse({"phone": "9161234567", "utm_source": ["yandex", "google"]}).last_visit.utm_source == "yandex"


@pytest.mark.parametrize(
    "message",
    [
        None,
        [],
        "x",
        {"type": MESSAGE_TYPE},
        {"type": MESSAGE_TYPE, "submission": []},
        {"type": MESSAGE_TYPE, "submission": {"received_at": "0001-01-01T00:00:00+14:00"}},
        {"type": MESSAGE_TYPE, "submission": {"received_at": "2025-01-15T10:00:00"}},  # no offset
        {"type": MESSAGE_TYPE, "submission": {"received_at": 1736935200}},
    ],
)
def test_from_message_refuses_a_poison_message_with_a_value_error(message):
    with pytest.raises(ValueError):
        Submission.from_message(message)


def test_from_message_refuses_an_implausible_first_visit_time():
    wire = json.loads(json.dumps(full_submission().to_message()))
    wire["submission"]["first_visit"]["seen_at"] = "9999-12-31T23:59:59-14:00"
    with pytest.raises(ValueError, match="between 2000 and 2200"):
        Submission.from_message(wire)


# -- _next ----------------------------------------------------------------------------------------------------------

SHOP = "https://shop.example.ru"
ALLOWED = (SHOP, "https://xn--e1afmkfd.xn--p1ai", "http://127.0.0.1:8000")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (f"{SHOP}/thanks", f"{SHOP}/thanks"),
        (f"{SHOP}/thanks?order=1#top", f"{SHOP}/thanks?order=1#top"),
        (f"{SHOP}", f"{SHOP}/"),
        ("HTTPS://Shop.Example.RU/Thanks", f"{SHOP}/Thanks"),  # scheme and host in one spelling, path untouched
        (f"{SHOP}:443/thanks", f"{SHOP}/thanks"),  # the default port is no other origin
        (f"{SHOP}/спасибо", f"{SHOP}/%D1%81%D0%BF%D0%B0%D1%81%D0%B8%D0%B1%D0%BE"),  # a Cyrillic path, encoded
        (f"{SHOP}/a%20b?q=%D0%B0", f"{SHOP}/a%20b?q=%D0%B0"),  # already encoded: not encoded twice
        (f"{SHOP}/?q=и&x=<y>", f"{SHOP}/?q=%D0%B8&x=%3Cy%3E"),
        ("https://пример.рф/спасибо", "https://xn--e1afmkfd.xn--p1ai/%D1%81%D0%BF%D0%B0%D1%81%D0%B8%D0%B1%D0%BE"),
        ("https://ПРИМЕР.РФ/", "https://xn--e1afmkfd.xn--p1ai/"),
        ("/thanks.html", f"{SHOP}/thanks.html"),  # relative to the posting page's origin
        ("http://127.0.0.1:8000/demo/thanks.html", "http://127.0.0.1:8000/demo/thanks.html"),
    ],
)
def test_next_is_returned_normalized_and_percent_encoded(target, expected):
    assert redirect_target(target, SHOP, ALLOWED) == expected


@pytest.mark.parametrize(
    "target",
    [
        # Header injection: urlsplit drops \r \n \t, so the host check passed while the raw string went out.
        f"{SHOP}/thanks\r\nSet-Cookie: pwned=1",
        f"{SHOP}/thanks\nLocation: https://evil.example.com/",
        f"{SHOP}/tha\tnks",
        f"{SHOP}/thanks\x00",
        f"{SHOP}/thanks\x1b[31m",
        f"{SHOP}/thanks page",  # whitespace
        f"{SHOP}/thanks\u2028",  # a line separator
        f"{SHOP}/thanks\u00a0",  # a no-break space
        f"{SHOP}/\u202ethanks",  # a bidi override
        f"{SHOP}/thanks\ud83d",  # a lone surrogate
        " " + SHOP,
        # Not one of our sites, however dressed up.
        "https://evil.example.com/",
        "//evil.example.com/",
        f"{SHOP}.evil.example.com/",
        f"https://evil.example.com\\@{SHOP.removeprefix('https://')}/",  # a browser reads \\ as /
        "https://shop.example.ru\\evil.example.com/",
        f"https://user:pass@{SHOP.removeprefix('https://')}/",
        f"https://{SHOP.removeprefix('https://')}@evil.example.com/",
        f"{SHOP}:8443/thanks",  # another port is another origin
        "http://shop.example.ru/thanks",  # another scheme too
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        # Unreadable: urlsplit or IDNA would raise.
        "https://[",
        "https://[::1/",
        f"{SHOP}:port/",
        f"{SHOP}:99999/",
        "https://" + "a" * 64 + ".ru/",  # an IDNA label longer than 63
        "https://xn--.ru/",
        "",
        None,
        ["https://shop.example.ru/"],
        {"url": SHOP},
        SHOP + "/" + "x" * 2000,
    ],
)
def test_a_bad_next_is_no_redirect(target):
    assert redirect_target(target, SHOP, ALLOWED) is None


@pytest.mark.parametrize("origin", [None, "null", "https://[", "https://evil.example.com", "\ud83d"])
def test_a_relative_next_needs_an_allowed_posting_origin(origin):
    assert redirect_target("/thanks", origin, ALLOWED) is None


def test_an_allowed_origin_may_be_configured_in_unicode():
    assert redirect_target("https://xn--e1afmkfd.xn--p1ai/", None, ["https://Пример.рф"]) == (
        "https://xn--e1afmkfd.xn--p1ai/"
    )


# -- person keys (issue 5, item 12) ---------------------------------------------------------------------------------

KEY = "k" * 64


def test_person_key_is_an_hmac_of_the_contact_with_the_stacks_key():
    import hashlib
    import hmac

    from throughline.person_keys import person_key

    assert person_key("+79161234567", KEY) == hmac.new(KEY.encode(), b"+79161234567", hashlib.sha256).hexdigest()
    assert person_key("+79161234567", KEY) != person_key("+79161234567", "j" * 64)  # useless without the key
    assert person_key("+79161234567", KEY) != hashlib.sha256(b"+79161234567").hexdigest()
    assert person_key("+79161234567", KEY) != person_key("+79161234568", KEY)


@pytest.mark.parametrize("secret", [None, ""])
def test_person_key_without_a_key_is_a_config_error(secret):
    from throughline.config import ConfigError
    from throughline.person_keys import person_key

    with pytest.raises(ConfigError, match="PERSON_KEY_SECRET"):
        person_key("+79161234567", secret)


def test_capture_refuses_to_start_without_the_person_key():
    from throughline.capture.receive import capture_from_settings
    from throughline.config import ConfigError, Settings

    settings = Settings(data_bucket="b", writes_queue_url="https://sqs/q.fifo", idempotency_table="t")
    with pytest.raises(ConfigError, match="PERSON_KEY_SECRET"):
        capture_from_settings(settings)


@pytest.mark.parametrize("value", ["short", "x" * 31])
def test_a_short_person_key_is_a_config_error(value):
    from throughline.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="PERSON_KEY_SECRET: must be at least 32 characters"):
        load_settings({"PERSON_KEY_SECRET": value})
    assert value not in repr(load_settings({"PERSON_KEY_SECRET": value * 10}))


def test_the_identity_is_phone_then_email_then_the_submission():
    assert parse({"phone": "8 916 123-45-67", "email": "a@b.ru"}).identity() == "+79161234567"
    assert parse({"email": "A@B.ru"}).identity() == "a@b.ru"
    assert replace(parse({"email": "a@b.ru"}), email=None).identity() == "sub-1"


def test_an_unreadable_allowed_origin_spoils_no_other():
    assert redirect_target(f"{SHOP}/thanks", None, ["https://[", "https://" + "a" * 64 + ".ru", SHOP]) == (
        f"{SHOP}/thanks"
    )


@pytest.mark.parametrize(
    ("posted", "kept"),
    [
        ("Иван\x00Петров", "ИванПетров"),
        ("Иван\u202eвортеП", "ИванвортеП"),  # a right-to-left override made the name read backwards in the CRM
        ("Иван\u2066Петров\u2069", "ИванПетров"),
        ("\x1b[31mИван", "[31mИван"),  # a terminal escape
        ("Иван\r\nBcc: x@evil.example", "Иван Bcc: x@evil.example"),  # a name is one line
        ("Иван\tПетров", "Иван Петров"),
        ("Мария\u200dЖ", "Мария\u200dЖ"),  # a zero-width joiner belongs to emoji and scripts: kept
    ],
)
def test_typed_text_is_kept_without_control_characters(posted, kept):
    submission = parse({"phone": "+79161234567", "name": posted, "city": posted, "utm_term": posted})
    assert submission.name == kept
    assert submission.last_visit.utm_term == kept
    assert submission.extra["city"] == kept.replace(" Bcc", "\nBcc").replace("Иван Петров", "Иван\tПетров")


def test_a_comment_keeps_its_lines_and_tabs_but_no_other_controls():
    submission = parse({"phone": "+79161234567", "comment": "строка 1\r\nстрока 2\rстрока\t3\x00\x07\x85", "x\ny": "1"})
    assert submission.comment == "строка 1\nстрока 2\nстрока\t3"
    assert submission.extra == {"x y": "1"}


def test_a_body_of_control_characters_stays_well_inside_an_sqs_message():
    # json.dumps writes each control character as six bytes (\u0001): a 64 KiB form of raw ones was a 377 KB
    # message, over the queue's 256 KiB default, so SQS refused it and the post got a 503 "retry" forever.
    body = b"phone=%2B79161234567&comment=" + b"\x01" * 9000
    body += b"".join(b"&x%d=" % index + b"\x01" * 1990 for index in range(27))
    submission = parse(decode_body(body, "application/x-www-form-urlencoded", LIMIT))
    assert len(json.dumps(submission.to_message(), ensure_ascii=False).encode()) < 262144


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"\xef\xbb\xbf" + json.dumps({"phone": "+79161234567"}).encode(), "application/json"),
        (b"\xef\xbb\xbf" + json.dumps({"phone": "+79161234567"}).encode(), "text/plain; charset=utf-8"),
        ("\ufeff" + json.dumps({"phone": "+79161234567"}), "application/json; charset=utf-16"),
        (b"\xef\xbb\xbfphone=%2B79161234567", "application/x-www-form-urlencoded"),  # was field "\ufeffphone"
    ],
)
def test_a_byte_order_mark_is_no_part_of_the_body(body, content_type):
    # A BOM answered 400 "Unexpected UTF-8 BOM": servers that relay forms save their templates with one.
    body = body.encode("utf-16") if isinstance(body, str) else body
    assert parse(decode_body(body, content_type, LIMIT)).phone == "+79161234567"


@pytest.mark.parametrize(
    "phone",
    [
        ["", "+79161234567"],  # a hidden mobile copy of the field, left empty
        ["+79161234567", " "],
        ["+79161234567", "+79161234567"],
        ["+79161234567", None],
    ],
)
def test_a_contact_posted_twice_with_one_value_is_that_value(phone):
    # Answered 422 "expected a single value, got several", which the visitor cannot fix: the lead was lost.
    assert parse({"phone": phone, "name": ["Иван", ""]}).phone == "+79161234567"


def test_a_contact_posted_twice_with_different_values_is_still_refused():
    assert rejected({"phone": ["+79161234567", "+79161234568"]}).fields == {
        "phone": "expected a single value, got several"
    }
    assert rejected({"phone": "+79161234567", "name": ["Иван", {"x": 1}]}).fields == {
        "name": "expected a single value, got several"
    }


# -- multipart as browsers send it (RFC 7578), read in one linear pass -----------------------------------------------


@pytest.mark.parametrize(
    ("head", "payload", "expected"),
    [
        ('Content-Disposition: form-data; name="телефон"', b"+79161234567", {"телефон": "+79161234567"}),
        ("content-disposition:form-data;name=phone", b"+79161234567", {"phone": "+79161234567"}),
        ("Content-Disposition: form-data; name*=utf-8''%D0%B8%D0%BC%D1%8F", "Иван".encode(), {"имя": "Иван"}),
        ('Content-Disposition: form-data; name="a;b\\"c"', b"1", {'a;b"c': "1"}),
        ('Content-Disposition: form-data; filename=""; name="cv"', b"", {"cv": ""}),  # an empty file input
        (
            "Content-Disposition: form-data; name=n\r\nContent-Type: text/plain; charset=koi8-r",
            "Иван".encode("koi8-r"),
            {"n": "Иван"},
        ),
        ("Content-Disposition: form-data; name=n\r\nContent-Transfer-Encoding: base64", b"0JjQstCw0L0=", {"n": "Иван"}),
        (
            "Content-Disposition: form-data; name=n\r\nContent-Transfer-Encoding: quoted-printable",
            b"=D0=98=D0=B2",
            {"n": "Ив"},
        ),
        ("Content-Type: text/plain", b"no name: skipped", {}),
    ],
)
def test_multipart_parts(head, payload, expected):
    body = b"preamble\r\n--b0undary\r\n" + head.encode() + b"\r\n\r\n" + payload + b"\r\n--b0undary--\r\nepilogue"
    assert decode_body(body, 'multipart/form-data; boundary="b0undary"', LIMIT) == expected


def test_multipart_with_bare_line_feeds_and_a_long_boundary():
    boundary = "x" * 90  # RFC 2046 says 70 at most; a sender that goes over still gets its lead
    body = f"--{boundary}\ncontent-disposition: form-data; name=phone\n\n+79161234567\n--{boundary}--\n".encode()
    assert decode_body(body, f"multipart/form-data; boundary={boundary}", LIMIT) == {"phone": "+79161234567"}


@pytest.mark.parametrize(
    "unit",
    [b";", b"; ", b";=", b";a=b", b';a="b"', b";a*=utf-8''b", b';a="\\b"', b";name*0=a"],
)
def test_a_part_header_of_endless_parameters_is_read(unit):
    # The email package's header parser is quadratic in parameters: one 64 KiB part header of ";;;…" took 90 s of
    # CPU, so a post timed the function out (a 5xx). Time is measured in benchmarks/hostile_bodies.py.
    head = b"--x\r\ncontent-disposition:form-data" + unit * (60000 // len(unit)) + b";name=phone\r\n\r\n"
    body = head + b"+79161234567\r\n--x--"
    assert decode_body(body, "multipart/form-data;boundary=x", LIMIT) in ({"phone": "+79161234567"}, {})


def test_the_boundary_inside_a_value_is_no_delimiter():
    value = "see --XyZ here\r\n--XyZ-not-a-delimiter\r\n--XyZz"
    body, content_type = multipart(("comment", value, None), ("phone", "+79161234567", None))
    assert decode_body(body, content_type, LIMIT) == {"comment": value, "phone": "+79161234567"}


def test_a_part_name_may_hold_any_character_but_a_line_break():
    body, content_type = multipart(("вопрос\u2028второй\x85", "да", None), ("phone", "+79161234567", None))
    assert decode_body(body, content_type, LIMIT)["вопрос\u2028второй\x85"] == "да"


@pytest.mark.parametrize(
    ("body", "content_type", "charset"),
    [
        (b'{"a": 1}', "application/json; charset=klingon", "klingon"),
        (b"name=x", URLENCODED + "; charset=no-such-charset", "no-such-charset"),
        (b"name=x", URLENCODED + "; charset=undefined", "undefined"),  # a Python codec that raises
        (b"name=x", URLENCODED + "; charset=rot13", "rot13"),  # a Python codec, not a text encoding
        (b"name=x", URLENCODED + "; charset=base64", "base64"),
        (b"name=x", URLENCODED + "; charset=zlib_codec", "zlib_codec"),
        (b"name=x", URLENCODED + "; charset=utf-7", "utf-7"),  # decodes +ADw-script+AD4- into <script>
        (b'{"a": 1}', JSON + "; charset=undefined", "undefined"),
        (b"name=%FF", URLENCODED + "; charset=idna", "idna"),
        (b"name=x", URLENCODED + "; charset=cp037", "cp037"),  # EBCDIC: a real code page no browser sends
        (
            b"--b\r\nContent-Disposition: form-data; name=a\r\n"
            b"Content-Type: text/plain; charset=rot13\r\n\r\nx\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            "rot13",
        ),
    ],
)
def test_charsets_outside_the_short_list_are_415_naming_the_charset(body, content_type, charset):
    with pytest.raises(FormRejected) as error:
        decode_body(body, content_type, LIMIT)
    assert (error.value.status, error.value.message) == (415, "unsupported charset")
    assert set(error.value.fields) == {"charset"} and repr(charset) in error.value.fields["charset"]


@pytest.mark.parametrize(
    ("label", "text"),
    [
        ("utf-8", "Иван"),
        ("UTF8", "Иван"),
        ("windows-1251", "Иван"),
        ("CP1251", "Иван"),
        ("koi8-r", "Иван"),
        ("iso-8859-1", "José"),
        ("latin-1", "José"),
        ("us-ascii", "Ivan"),
        ('"utf-8"', "Иван"),
    ],
)
def test_the_short_list_of_charsets_decodes(label, text):
    codec = {"utf8": "utf-8", "cp1251": "windows-1251", "latin-1": "iso-8859-1"}.get(label.strip('"').lower())
    body = b"name=" + quote_from_bytes(text.encode(codec or label.strip('"'))).encode()
    assert decode_body(body, f"{URLENCODED}; charset={label}", LIMIT) == {"name": text}
