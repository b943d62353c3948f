"""Unit tests of throughline.journey.touches: the journey touches a form submission adds."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from throughline.capture.forms import parse_submission
from throughline.capture.submissions import Submission
from throughline.journey.lines import FIRST_VISIT, FORM, REPEAT_REQUEST, Touch, format_journey
from throughline.journey.touches import first_source, last_source, own_hosts, submission_touches
from throughline.sources import DIRECT, ORGANIC_SEARCH, PAID_SEARCH, REFERRAL, SOCIAL, Source

MOSCOW = ZoneInfo("Europe/Moscow")
RECEIVED = datetime(2025, 1, 15, 10, 0, tzinfo=UTC)
PAID_LANDING = "https://example.com/crm?utm_source=google&utm_medium=cpc&utm_campaign=Купить%20CRM%20систему"


def submission(fields, *, received_at=RECEIVED, origin="https://example.com") -> Submission:
    return parse_submission(
        "contact",
        {"phone": "8 916 123-45-67", **fields},
        submission_id="sub-1",
        received_at=received_at,
        origin=origin,
        default_region="RU",
        zone=MOSCOW,
    )


def test_new_lead_with_an_earlier_organic_visit_gets_two_touches_oldest_first():
    item = submission(
        {
            "first_referrer": "https://yandex.ru/",
            "first_landing_url": "https://example.com/blog",
            "first_seen_at": "2025-01-10T12:00:00+03:00",
            "landing_url": PAID_LANDING,
            "gclid": "Cj0",
        }
    )
    first, form = submission_touches(item, MOSCOW)

    assert first == Touch(
        touch_id="sub-1:first",
        at=datetime(2025, 1, 10, 9, 0, tzinfo=UTC),
        kind=FIRST_VISIT,
        channel=ORGANIC_SEARCH,
        source="yandex",
        medium="organic",
    )
    assert form == Touch(
        touch_id="sub-1:form",
        at=RECEIVED,
        kind=FORM,
        channel=PAID_SEARCH,
        source="google",
        medium="cpc",
        campaign="Купить CRM систему",
        detail="Заявка: форма «contact»",
        extra={"form_id": "contact", "gclid": "Cj0"},
    )
    assert format_journey([form, first], MOSCOW) == (
        "Первичный контакт: 10.01.2025 — Яндекс — Органический поиск — Первый визит\n"
        "15.01.2025 — Google — CPC — «Купить CRM систему»"
    )


def test_first_visit_carries_its_own_campaign_tags():
    item = submission(
        {
            "first_utm_source": "vk",
            "first_utm_medium": "cpc",
            "first_utm_campaign": "Весна",
            "first_utm_content": "video",
            "first_utm_term": "crm",
            "first_seen_at": "1736499600",
            "utm_source": "yandex",
            "utm_medium": "cpc",
            "utm_campaign": "Бренд",
        }
    )
    first, form = submission_touches(item, MOSCOW)
    assert (first.channel, first.source, first.medium, first.campaign, first.content, first.term) == (
        SOCIAL, "vk", "cpc", "Весна", "video", "crm"
    )  # fmt: skip
    assert (form.channel, form.source, form.campaign) == (PAID_SEARCH, "yandex", "Бренд")


@pytest.mark.parametrize(
    "first_seen_at",
    [
        "2025-01-15T08:00:00Z",  # earlier the same day
        None,  # not remembered: taken as the moment of the form
    ],
)
def test_one_touch_when_the_first_visit_is_the_converting_one_on_the_same_day(first_seen_at):
    fields = {
        "first_utm_source": "google",
        "first_utm_medium": "cpc",
        "first_utm_campaign": "Купить CRM систему",
        "landing_url": PAID_LANDING,
    }
    if first_seen_at:
        fields["first_seen_at"] = first_seen_at
    touches = submission_touches(submission(fields), MOSCOW)
    assert [touch.touch_id for touch in touches] == ["sub-1:form"]
    assert touches[0].kind == FORM


def test_two_touches_when_the_same_source_came_back_on_another_day():
    fields = {
        "first_utm_source": "google",
        "first_utm_medium": "cpc",
        "first_utm_campaign": "Купить CRM систему",
        "first_seen_at": "2025-01-12T08:00:00Z",
        "landing_url": PAID_LANDING,
    }
    touches = submission_touches(submission(fields), MOSCOW)
    assert [(touch.kind, touch.at) for touch in touches] == [
        (FIRST_VISIT, datetime(2025, 1, 12, 8, 0, tzinfo=UTC)),
        (FORM, RECEIVED),
    ]


def test_two_touches_when_the_campaign_differs_on_the_same_day():
    fields = {
        "first_utm_source": "google",
        "first_utm_medium": "cpc",
        "first_utm_campaign": "Бренд",
        "first_seen_at": "2025-01-15T08:00:00Z",
        "landing_url": PAID_LANDING,
    }
    assert [touch.kind for touch in submission_touches(submission(fields), MOSCOW)] == [FIRST_VISIT, FORM]


def test_same_visit_on_the_same_day_is_one_touch_whatever_offset_the_snippet_sent():
    fields = {
        "first_utm_source": "google",
        "first_utm_medium": "cpc",
        "first_utm_campaign": "Купить CRM систему",
        "first_seen_at": "2025-01-15T02:00:00+03:00",  # 2025-01-14T23:00Z
        "landing_url": PAID_LANDING,
    }
    item = submission(fields, received_at=datetime(2025, 1, 14, 23, 30, tzinfo=UTC))
    assert [touch.kind for touch in submission_touches(item, MOSCOW)] == [FORM]


def test_no_first_visit_gives_only_the_form_touch():
    touches = submission_touches(submission({"landing_url": PAID_LANDING}), MOSCOW)
    assert len(touches) == 1
    assert touches[0].kind == FORM


def test_first_seen_at_alone_is_not_a_first_visit():
    item = submission({"first_seen_at": "2025-01-10T12:00:00+03:00", "landing_url": PAID_LANDING})
    assert first_source(item) is None
    assert [touch.kind for touch in submission_touches(item, MOSCOW)] == [FORM]


@pytest.mark.parametrize(
    "fields",
    [
        {"landing_url": PAID_LANDING},
        {"landing_url": PAID_LANDING, "first_referrer": "https://yandex.ru/", "first_seen_at": "1736499600"},
    ],
)
def test_repeat_request_is_one_touch(fields):
    touches = submission_touches(submission(fields), MOSCOW, repeat=True)
    assert touches == [
        Touch(
            touch_id="sub-1:form",
            at=RECEIVED,
            kind=REPEAT_REQUEST,
            channel=PAID_SEARCH,
            source="google",
            medium="cpc",
            campaign="Купить CRM систему",
            detail="форма «contact»",
            extra={"form_id": "contact"},
        )
    ]
    assert format_journey(touches, MOSCOW) == (
        "Первичный контакт: 15.01.2025 — Google — CPC — Повторное обращение: «Купить CRM систему»"
    )


@pytest.mark.parametrize(
    ("fields", "origin"),
    [
        ({"referrer": "https://example.com/pricing", "landing_url": "https://example.com/contact"}, None),
        ({"referrer": "https://www.example.com/pricing", "landing_url": "https://example.com/contact"}, None),
        ({"referrer": "https://example.com/pricing"}, "https://example.com"),
        ({"referrer": "https://shop.example.com/"}, "https://example.com"),
    ],
)
def test_internal_referrer_is_direct(fields, origin):
    assert last_source(submission(fields, origin=origin)) == Source(DIRECT, "(direct)", "(none)")


def test_external_referrer_is_kept():
    item = submission({"referrer": "https://partner.ru/post", "landing_url": "https://example.com/contact"})
    assert last_source(item) == Source(REFERRAL, "partner.ru", "referral")


def test_internal_first_referrer_is_direct():
    item = submission(
        {
            "first_referrer": "https://example.com/",
            "first_landing_url": "https://example.com/blog",
            "first_seen_at": "2025-01-10T12:00:00+03:00",
        },
        origin=None,
    )
    assert first_source(item) == Source(DIRECT, "(direct)", "(none)")


def test_own_hosts_from_landing_urls_and_origin():
    item = submission(
        {"landing_url": "https://Landing.example.com/x", "first_landing_url": "https://blog.example.com/"},
        origin="https://www.example.com",
    )
    assert own_hosts(item) == ("blog.example.com", "landing.example.com", "www.example.com")
    assert own_hosts(submission({}, origin=None)) == ()


def test_click_ids_apply_to_the_last_visit_only():
    item = submission(
        {
            "first_referrer": "https://vk.com/",
            "first_seen_at": "2025-01-10T12:00:00+03:00",
            "yclid": "123",
        }
    )
    assert first_source(item) == Source(SOCIAL, "vk", "social")
    assert last_source(item) == Source(PAID_SEARCH, "yandex", "cpc", paid=True)


def test_a_first_visit_through_an_auto_tagged_ad_is_paid():
    item = submission({"first_landing_url": "https://shop.example.ru/?yclid=777", "first_seen_at": "1736499600"})
    source = first_source(item)
    assert (source.channel, source.source, source.paid) == (PAID_SEARCH, "yandex", True)


def test_the_first_visits_click_id_counts_even_when_its_address_was_cut():
    landing = "https://shop.example.ru/?utm_content=" + "x" * 2100 + "&yclid=777"
    item = submission({"first_landing_url": landing, "first_seen_at": "1736499600"})
    assert first_source(item) == Source(PAID_SEARCH, "yandex", "cpc", paid=True)
    posted = submission({"first_referrer": "https://yandex.ru/", "first_yclid": "777", "first_seen_at": "1736499600"})
    assert first_source(posted) == Source(PAID_SEARCH, "yandex", "cpc", paid=True)


def test_referrers_in_ignore_referrers_are_no_source(monkeypatch):
    from throughline.config import reset_settings_cache

    item = submission({"referrer": "https://checkout.partner-pay.ru/"})
    assert last_source(item) == Source(REFERRAL, "checkout.partner-pay.ru", "referral")
    monkeypatch.setenv("IGNORE_REFERRERS", "partner-pay.ru, other.example")
    reset_settings_cache()
    try:
        assert last_source(item) == Source(DIRECT, "(direct)", "(none)")
        assert last_source(submission({"referrer": "https://yoomoney.ru/"})) == Source(DIRECT, "(direct)", "(none)")
    finally:
        monkeypatch.delenv("IGNORE_REFERRERS")
        reset_settings_cache()


@pytest.mark.parametrize("seen_at", [{"first_seen_at": "2025-01-10T10:00:00+03:00"}, {}])
def test_a_first_visit_known_only_by_its_click_id_is_still_the_first_touch(seen_at):
    # A Google Ads click with auto-tagging (no UTM tags), no referrer, and no landing address kept.
    item = submission({"phone": "+79161234567", "first_gclid": "Cj0KCQ", **seen_at})
    assert first_source(item) == Source(PAID_SEARCH, "google", "cpc", paid=True)
    assert [touch.kind for touch in submission_touches(item, ZoneInfo("Europe/Moscow"))] == [FIRST_VISIT, FORM]
