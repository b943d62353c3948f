"""Unit tests of throughline.journey: the «Путь клиента» lines and the structured touch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from throughline.journey.lines import (
    FIRST_CONTACT,
    FIRST_VISIT,
    FORM,
    REPEAT_REQUEST,
    SEPARATOR,
    Touch,
    append_line,
    format_journey,
    format_line,
    has_line,
)
from throughline.sources import DIRECT, EMAIL, ORGANIC_SEARCH, PAID_SEARCH, REFERRAL

MOSCOW = ZoneInfo("Europe/Moscow")


def touch(**overrides) -> Touch:
    values = {
        "touch_id": "t1",
        "at": datetime(2025, 1, 15, 9, 0, tzinfo=UTC),
        "kind": FORM,
        "channel": PAID_SEARCH,
        "source": "google",
        "medium": "cpc",
    }
    return Touch(**{**values, **overrides})


# -- the seed format ------------------------------------------------------------------------------------------------


def test_seed_first_contact_line():
    line = format_line(touch(campaign="Купить CRM систему"), MOSCOW, first=True)
    assert line == "Первичный контакт: 15.01.2025 — Google — CPC — «Купить CRM систему»"


def test_seed_email_line():
    email = touch(at=datetime(2025, 1, 16, 8, 0, tzinfo=UTC), channel=EMAIL, source="email", medium="email",
                  campaign="Преимущества Битрикс24")  # fmt: skip
    assert format_line(email, MOSCOW) == "16.01.2025 — Email — Рассылка — «Преимущества Битрикс24»"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"source": "yandex", "campaign": "Весна"}, "15.01.2025 — Яндекс — CPC — «Весна»"),
        ({"source": "vk", "medium": "cpm", "campaign": "B2B"}, "15.01.2025 — ВКонтакте — CPM — «B2B»"),
        (
            {"kind": FIRST_VISIT, "channel": ORGANIC_SEARCH, "source": "yandex", "medium": "organic"},
            "15.01.2025 — Яндекс — Органический поиск — Первый визит",
        ),
        (
            {"kind": FIRST_VISIT, "channel": DIRECT, "source": "(direct)", "medium": "(none)"},
            "15.01.2025 — Прямой заход — Прямой заход — Первый визит",
        ),
        (
            {"channel": REFERRAL, "source": "partner.ru", "medium": "referral", "detail": "Заявка: форма «contact»"},
            "15.01.2025 — partner.ru — Переход с сайта — Заявка: форма «contact»",
        ),
        ({"medium": "Special"}, "15.01.2025 — Google — Special"),  # unknown medium kept as given
        ({"medium": "CPC"}, "15.01.2025 — Google — CPC"),
        ({"channel": DIRECT, "source": "(direct)", "medium": ""}, "15.01.2025 — Прямой заход — Прямые переходы"),
        (
            {"source": "Телефон", "medium": "Исходящий звонок", "detail": "Консультация", "kind": "call"},
            "15.01.2025 — Телефон — Исходящий звонок — Консультация",
        ),
    ],
)
def test_line_parts(overrides, expected):
    assert format_line(touch(**overrides), MOSCOW) == expected


def test_campaign_wins_over_detail():
    line = format_line(touch(campaign="Весна", detail="Заявка: форма «contact»"), MOSCOW)
    assert line == "15.01.2025 — Google — CPC — «Весна»"


# -- dates in the configured zone -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "zone", "date"),
    [
        (datetime(2025, 1, 15, 22, 30, tzinfo=UTC), MOSCOW, "16.01.2025"),  # 01:30 in Moscow
        (datetime(2025, 1, 15, 20, 59, tzinfo=UTC), MOSCOW, "15.01.2025"),
        (datetime(2025, 1, 15, 21, 0, tzinfo=UTC), MOSCOW, "16.01.2025"),
        (datetime(2025, 1, 15, 22, 30, tzinfo=UTC), ZoneInfo("UTC"), "15.01.2025"),
        (datetime(2025, 1, 15, 20, 0, tzinfo=UTC), ZoneInfo("Asia/Vladivostok"), "16.01.2025"),
        (datetime(2025, 1, 16, 1, 0, tzinfo=timezone(timedelta(hours=3))), ZoneInfo("UTC"), "15.01.2025"),
        (datetime(2024, 12, 31, 21, 0, tzinfo=UTC), MOSCOW, "01.01.2025"),
    ],
)
def test_date_in_the_configured_zone(at, zone, date):
    assert format_line(touch(at=at), zone).startswith(date + SEPARATOR)


# -- repeat requests ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "last"),
    [
        ({"campaign": "Весна"}, "Повторное обращение: «Весна»"),
        ({"detail": "форма «contact»"}, "Повторное обращение: форма «contact»"),
        ({"campaign": "Весна", "detail": "форма «contact»"}, "Повторное обращение: «Весна»"),
        ({}, "Повторное обращение"),
    ],
)
def test_repeat_request_wording(overrides, last):
    line = format_line(touch(kind=REPEAT_REQUEST, source="yandex", **overrides), MOSCOW)
    assert line == f"15.01.2025 — Яндекс — CPC — {last}"


# -- one line whatever the tags say ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "campaign",
    ["Весна\nЛето", "Весна\r\nЛето", "Весна\tЛето", "Весна\x00Лето", "Весна\x1bЛето", "Весна\x7fЛето"],
)
def test_control_characters_in_a_campaign_cannot_break_the_line(campaign):
    line = format_line(touch(campaign=campaign), MOSCOW)
    assert line == "15.01.2025 — Google — CPC — «Весна Лето»"


@pytest.mark.parametrize(
    "overrides",
    [
        {"campaign": "Весна — Лето"},
        {"source": "partner — site"},
        {"medium": "cpc — x"},
        {"detail": "звонок — 5 мин"},
        {"kind": REPEAT_REQUEST, "detail": "форма — contact"},
    ],
)
def test_the_separator_inside_a_tag_cannot_add_a_column(overrides):
    line = format_line(touch(**{"detail": "D", **overrides}), MOSCOW)
    assert line.count(SEPARATOR) == 3
    assert " - " in line


@pytest.mark.parametrize(
    "overrides",
    [
        {"campaign": "Весна\n— Лето"},
        {"source": "partner\n— site"},
        {"source": "partner\t— site"},
        {"medium": "cpc\r— x"},
        {"detail": "звонок\n— 5 мин"},
        {"kind": REPEAT_REQUEST, "detail": "форма\n— contact"},
    ],
)
def test_a_line_never_holds_a_line_break(overrides):
    line = format_line(touch(**{"detail": "D", **overrides}), MOSCOW)
    assert "\n" not in line
    assert "\r" not in line


@pytest.mark.parametrize(
    "overrides",
    [
        {"source": "partner\n— site"},
        {"source": "partner\t— site"},
        {"medium": "cpc\r— x"},
        {"detail": "звонок\n— 5 мин"},
        {"kind": REPEAT_REQUEST, "detail": "форма\n— contact"},
    ],
)
def test_a_control_character_before_the_separator_cannot_add_a_column(overrides):
    assert format_line(touch(**{"detail": "D", **overrides}), MOSCOW).count(SEPARATOR) == 3


def test_long_campaign_is_clipped():
    line = format_line(touch(campaign="К" * 500), MOSCOW)
    last = line.split(SEPARATOR)[-1]
    assert len(last) == 120
    assert last.startswith("«КККК")
    assert "…" in last
    assert len(line) < 200


def test_campaign_at_the_limit_is_kept():
    campaign = "К" * 118  # 120 with the quotes
    assert format_line(touch(campaign=campaign), MOSCOW).endswith(f"«{campaign}»")


def test_long_campaign_keeps_its_closing_quote():
    assert format_line(touch(campaign="К" * 500), MOSCOW).endswith("…»")


def test_long_source_and_detail_are_clipped_to_120():
    line = format_line(touch(source="s" * 300, medium="", channel=REFERRAL, detail="d" * 300), MOSCOW)
    parts = line.split(SEPARATOR)
    assert [len(part) for part in parts] == [10, 120, len("Рефералы"), 120]
    assert parts[1].endswith("…")
    assert parts[3].endswith("…")


# -- the whole field ------------------------------------------------------------------------------------------------


def test_format_journey_orders_oldest_first_and_marks_the_first_contact():
    later = touch(touch_id="b", at=datetime(2025, 1, 16, 8, 0, tzinfo=UTC), channel=EMAIL, source="email",
                  medium="email", campaign="Преимущества Битрикс24")  # fmt: skip
    earlier = touch(touch_id="a", campaign="Купить CRM систему")
    assert format_journey([later, earlier], MOSCOW) == (
        "Первичный контакт: 15.01.2025 — Google — CPC — «Купить CRM систему»\n"
        "16.01.2025 — Email — Рассылка — «Преимущества Битрикс24»"
    )


def test_format_journey_compares_instants_not_wall_clocks():
    # 02:00 in Moscow is earlier than 00:30 UTC of the same calendar date.
    moscow = touch(touch_id="m", at=datetime(2025, 1, 15, 2, 0, tzinfo=MOSCOW), campaign="first")
    utc = touch(touch_id="u", at=datetime(2025, 1, 15, 0, 30, tzinfo=UTC), campaign="second")
    lines = format_journey([utc, moscow], MOSCOW).splitlines()
    assert lines == ["Первичный контакт: 15.01.2025 — Google — CPC — «first»", "15.01.2025 — Google — CPC — «second»"]


def test_format_journey_empty():
    assert format_journey([], MOSCOW) == ""


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (None, "NEW"),
        ("", "NEW"),
        ("\n\n", "NEW"),
        ("A", "A\nNEW"),
        ("A\nB\n", "A\nB\nNEW"),
        ("A\n\n\n", "A\nNEW"),
        ("A\n  \n", "A\n  \nNEW"),  # a line of spaces someone typed is theirs to keep
    ],
)
def test_append_line(existing, expected):
    assert append_line(existing, "NEW") == expected


@pytest.mark.parametrize(
    ("existing", "line", "expected"),
    [
        ("Первичный контакт: 15.01.2025 — Google — CPC — «X»", "15.01.2025 — Google — CPC — «X»", True),
        ("15.01.2025 — Google — CPC — «X»", "Первичный контакт: 15.01.2025 — Google — CPC — «X»", True),
        ("A\n  15.01.2025 — Google — CPC — «X»  \nB", "15.01.2025 — Google — CPC — «X»", True),
        ("A\r\n15.01.2025 — Google — CPC — «X»\r\n", "15.01.2025 — Google — CPC — «X»", True),
        ("15.01.2025 — Google — CPC — «X»", "15.01.2025 — Google — CPC — «Y»", False),
        ("15.01.2025 — Google — CPC — «X» (manual note)", "15.01.2025 — Google — CPC — «X»", False),
        (None, "15.01.2025 — Google — CPC — «X»", False),
        ("", "15.01.2025 — Google — CPC — «X»", False),
    ],
)
def test_has_line(existing, line, expected):
    assert has_line(existing, line) is expected


def test_appended_line_is_found():
    field = append_line("Первичный контакт: 15.01.2025 — Google — CPC — «X»", "16.01.2025 — Email — Рассылка")
    assert has_line(field, "16.01.2025 — Email — Рассылка")
    assert field.startswith(FIRST_CONTACT)


# -- the structured touch -------------------------------------------------------------------------------------------


def test_touch_item_round_trip_with_every_field():
    full = touch(
        at=datetime(2025, 1, 15, 12, 0, tzinfo=MOSCOW),
        campaign="Весна",
        content="banner-1",
        term="crm",
        detail="Заявка: форма «contact»",
        extra={"form_id": "contact", "gclid": "abc"},
    )
    item = full.to_item()
    assert item["at"] == "2025-01-15T12:00:00+03:00"
    restored = Touch.from_item(item)
    assert restored == full
    assert restored.at.utcoffset() == timedelta(hours=3)


def test_touch_item_leaves_out_empty_values():
    minimal = touch()
    item = minimal.to_item()
    assert item == {
        "touch_id": "t1",
        "at": "2025-01-15T09:00:00+00:00",
        "kind": "form",
        "channel": "paid_search",
        "source": "google",
        "medium": "cpc",
    }
    assert Touch.from_item(item) == minimal


def test_touch_from_item_ignores_unknown_keys():
    item = {**touch().to_item(), "entity": "LEAD:1", "line": "whatever"}
    assert Touch.from_item(item) == touch()


def test_a_touch_keeps_no_lone_surrogate_whoever_makes_it() -> None:
    """CRM text cut in the middle of an emoji (JSON's "\\ud83d": a str with no UTF-8 form) becomes U+FFFD in every
    text of a touch, extra's keys and values too: the store, the export and the field can then carry it."""
    from throughline.adapters.journey_store import encode_item

    touch = Touch(touch_id="activity:\ud83d", at=datetime(2026, 11, 17, 9, tzinfo=UTC), kind="call", channel="crm",
                  source="phone", medium="call", campaign="brand\ud83d", content="\udc25", term="t\uffff",
                  detail="Консультация \ud83d", extra={"label\ud83d": "Телефон\ud83d", "seq": "1"})  # fmt: skip
    assert (touch.touch_id, touch.campaign, touch.content, touch.term, touch.detail) == (
        "activity:\ufffd", "brand\ufffd", "\ufffd", "t\ufffd", "Консультация \ufffd")  # fmt: skip
    assert touch.extra == {"label\ufffd": "Телефон\ufffd", "seq": "1"}
    json.dumps(encode_item("LEAD#1", touch, "applied"), ensure_ascii=False).encode("utf-8")
    assert format_line(touch, ZoneInfo("Europe/Moscow")).endswith("«brand\ufffd»")
    intact = Touch(touch_id="a", at=touch.at, kind="k", channel="crm", source="s", medium="m", detail="🔥 ok")
    assert intact.detail == "🔥 ok" and Touch.from_item(touch.to_item()) == touch


def test_storable_values_takes_a_record_nested_deeper_than_the_recursion_limit() -> None:
    """A CRM record is made storable whole before its touches (``CrmEventWriter.handle``): a value nested as deep as
    the portal's JSON decoder takes (far past Python's recursion limit) must not stop the record's events with a
    RecursionError; keys and values are cleaned, the last of two keys cleaned alike wins, as a dict literal's does."""
    import sys

    from throughline.text import storable_values

    depth = sys.getrecursionlimit() * 3
    deep = json.loads("[" * depth + '{"a\\ud83d": "\\udc25", "n": 1}' + "]" * depth)
    clean = storable_values(deep)
    for _ in range(depth):
        [clean] = clean
    assert clean == {"a\ufffd": "\ufffd", "n": 1}
    assert storable_values(dict([("k\ud83d", 1), ("k\ud83c", 2), ("x", [None, True, 1.5, "🔥"])])) == {
        "k\ufffd": 2, "x": [None, True, 1.5, "🔥"]}  # fmt: skip
    assert storable_values("a\ud83d") == "a\ufffd" and storable_values(7) == 7
