"""Unit tests of throughline.sources: the channel taxonomy of DESIGN.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from throughline import sources
from throughline.sources import (
    CHANNEL_LABELS,
    DIRECT,
    DISPLAY,
    EMAIL,
    MESSENGER,
    OFFLINE,
    ORGANIC_SEARCH,
    PAID_SEARCH,
    REFERRAL,
    SOCIAL,
    Source,
    canonical_source,
    classify,
    referrer_host,
)

DIRECT_SOURCE = Source(DIRECT, "(direct)", "(none)")

# -- UTM tags -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("utm_source", "utm_medium", "expected"),
    [
        # Paid search.
        ("google", "cpc", Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ("yandex", "cpc", Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ("Yandex.Direct", "CPC", Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ("yandex", "ppc", Source(PAID_SEARCH, "yandex", "ppc", paid=True)),
        ("yandex", "paid_search", Source(PAID_SEARCH, "yandex", "paid_search", paid=True)),
        ("yandex", "Контекстная реклама", Source(PAID_SEARCH, "yandex", "контекстная_реклама", paid=True)),
        ("google", "retargeting", Source(PAID_SEARCH, "google", "retargeting", paid=True)),
        (None, "cpc", Source(DISPLAY, "(not set)", "cpc", paid=True)),  # paid, no search source: not paid search
        # Display.
        ("yandex", "cpm", Source(DISPLAY, "yandex", "cpm", paid=True)),
        ("google", "display", Source(DISPLAY, "google", "display", paid=True)),
        ("yandex", "rsya", Source(DISPLAY, "yandex", "rsya", paid=True)),
        # Paid social: a social network with a paid medium stays social, flagged paid.
        ("vk", "cpc", Source(SOCIAL, "vk", "cpc", paid=True)),
        ("vk_ads", "cpc", Source(SOCIAL, "vk", "cpc", paid=True)),
        ("vk", "cpm", Source(SOCIAL, "vk", "cpm", paid=True)),
        ("vk", "target", Source(SOCIAL, "vk", "target", paid=True)),
        ("mytarget", "targeting", Source(SOCIAL, "vk", "targeting", paid=True)),
        ("vk", "paid_social", Source(SOCIAL, "vk", "paid_social", paid=True)),
        ("telegram", "cpc", Source(SOCIAL, "telegram", "cpc", paid=True)),
        ("whatsapp", "cpc", Source(MESSENGER, "whatsapp", "cpc", paid=True)),
        # Unpaid mediums.
        ("mailchimp", "email", Source(EMAIL, "email", "email")),
        ("newsletter", "Рассылка", Source(EMAIL, "email", "рассылка")),
        ("unisender", "e-mail", Source(EMAIL, "email", "e-mail")),
        ("facebook", "social", Source(SOCIAL, "facebook", "social")),
        ("instagram", "stories", Source(SOCIAL, "instagram", "stories")),
        ("vk", "smm", Source(SOCIAL, "vk", "smm")),
        ("telegram", "messenger", Source(MESSENGER, "telegram", "messenger")),
        ("wa", "chat", Source(MESSENGER, "whatsapp", "chat")),
        ("partner.ru", "referral", Source(REFERRAL, "partner.ru", "referral")),
        ("cityads", "cpa", Source(REFERRAL, "cityads", "cpa")),
        ("billboard", "offline", Source(OFFLINE, "billboard", "offline")),
        ("flyer", "QR", Source(OFFLINE, "flyer", "qr")),
        ("radio", "radio", Source(OFFLINE, "radio", "radio")),
        ("google", "organic", Source(ORGANIC_SEARCH, "google", "organic")),
        ("yandex", "seo", Source(ORGANIC_SEARCH, "yandex", "seo")),
        # Missing or unknown medium: judged by the source.
        ("google", None, Source(ORGANIC_SEARCH, "google", "organic")),
        ("ya", "", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("vk", None, Source(SOCIAL, "vk", "social")),
        ("viber", None, Source(MESSENGER, "viber", "messenger")),
        ("newsletter", None, Source(EMAIL, "email", "email")),
        ("some-blog", None, Source(REFERRAL, "some-blog", "referral")),
        ("vk", "weird", Source(SOCIAL, "vk", "weird")),
        ("partner", "weird", Source(REFERRAL, "partner", "weird")),
        # Explicitly direct.
        ("(direct)", "(none)", DIRECT_SOURCE),
        ("direct", "none", DIRECT_SOURCE),
        (None, "(none)", DIRECT_SOURCE),
        # Blank tags are no tags.
        ("  ", " ", DIRECT_SOURCE),
    ],
)
def test_from_utm_tags(utm_source, utm_medium, expected):
    assert classify(utm_source=utm_source, utm_medium=utm_medium) == expected


@pytest.mark.parametrize(
    ("click_ids", "referrer"),
    [({"gclid": "abc"}, None), ({"yclid": "123"}, "https://vk.com/"), ({}, "https://yandex.ru/")],
)
def test_utm_tags_win_over_click_ids_and_referrer(click_ids, referrer):
    result = classify(utm_source="newsletter", utm_medium="email", click_ids=click_ids, referrer=referrer)
    assert result == Source(EMAIL, "email", "email")


def test_ad_click_with_source_but_no_medium_is_paid():
    assert classify(utm_source="yandex", click_ids={"yclid": "1"}) == Source(PAID_SEARCH, "yandex", "cpc", paid=True)
    assert classify(utm_source="google", click_ids={"gclid": "1"}) == Source(PAID_SEARCH, "google", "cpc", paid=True)


def test_ad_click_with_unknown_medium_is_paid():
    result = classify(utm_source="yandex", utm_medium="weird", click_ids={"yclid": "1"})
    assert result == Source(PAID_SEARCH, "yandex", "weird", paid=True)


@pytest.mark.parametrize(
    ("click_ids", "channel", "source"),
    [
        ({"gclid": "g"}, PAID_SEARCH, "google"),
        ({"yclid": "y"}, PAID_SEARCH, "yandex"),
        ({"fbclid": "f"}, SOCIAL, "facebook"),  # paid social
    ],
)
def test_medium_without_source_takes_the_source_from_the_click_id(click_ids, channel, source):
    assert classify(utm_medium="cpc", click_ids=click_ids) == Source(channel, source, "cpc", paid=True)


# -- click ids ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("click_ids", "expected"),
    [
        ({"gclid": "Cj0KCQ"}, Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ({"gbraid": "x"}, Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ({"wbraid": "x"}, Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ({"yclid": "5423456789"}, Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ({"ysclid": "lq2x3"}, Source(ORGANIC_SEARCH, "yandex", "organic")),
        ({"fbclid": "IwAR"}, Source(SOCIAL, "facebook", "social")),
        ({"yclid": "1", "ysclid": "2"}, Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ({"gclid": "1", "yclid": "2"}, Source(PAID_SEARCH, "google", "cpc", paid=True)),
    ],
)
def test_from_click_ids(click_ids, expected):
    assert classify(click_ids=click_ids) == expected


@pytest.mark.parametrize(
    ("click_ids", "referrer", "expected"),
    [
        ({"gclid": "1"}, "https://vk.com/", Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ({"ysclid": "1"}, "https://example.org/", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ({"fbclid": "1"}, "https://yandex.ru/", Source(SOCIAL, "facebook", "social")),
    ],
)
def test_click_ids_win_over_the_referrer(click_ids, referrer, expected):
    assert classify(click_ids=click_ids, referrer=referrer) == expected


def test_empty_click_ids_are_ignored():
    assert classify(click_ids={"gclid": "", "yclid": ""}, referrer="https://vk.com/") == Source(SOCIAL, "vk", "social")
    assert classify(click_ids={"gclid": ""}) == DIRECT_SOURCE


# -- referrer hosts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("referrer", "expected"),
    [
        ("https://yandex.ru/search/?text=crm", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("https://ya.ru/", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("https://yandex.kz/", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("https://yandex.com.tr/", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("https://www.google.co.uk/", Source(ORGANIC_SEARCH, "google", "organic")),
        ("https://www.google.com/", Source(ORGANIC_SEARCH, "google", "organic")),
        ("https://www.google.ru/", Source(ORGANIC_SEARCH, "google", "organic")),
        ("https://go.mail.ru/search?q=crm", Source(ORGANIC_SEARCH, "mail.ru", "organic")),
        ("https://www.bing.com/", Source(ORGANIC_SEARCH, "bing", "organic")),
        ("https://duckduckgo.com/", Source(ORGANIC_SEARCH, "duckduckgo", "organic")),
        ("https://dzen.ru/a/xyz", Source(SOCIAL, "dzen", "social")),
        ("https://zen.yandex.ru/media", Source(SOCIAL, "dzen", "social")),
        ("https://vk.com/wall-1_2", Source(SOCIAL, "vk", "social")),
        ("https://m.vk.com/", Source(SOCIAL, "vk", "social")),
        ("https://ok.ru/group", Source(SOCIAL, "ok", "social")),
        ("https://t.me/channel", Source(SOCIAL, "telegram", "social")),
        ("https://l.facebook.com/l.php", Source(SOCIAL, "facebook", "social")),
        ("https://e.mail.ru/inbox/", Source(EMAIL, "email", "email")),
        ("https://mail.yandex.ru/", Source(EMAIL, "email", "email")),
        ("https://mail.google.com/mail/u/0/", Source(EMAIL, "email", "email")),
        ("https://news.mail.ru/economics/", Source(REFERRAL, "mail.ru", "referral")),
        ("https://mail.ru/", Source(REFERRAL, "mail.ru", "referral")),
        ("https://market.yandex.ru/", Source(REFERRAL, "yandex", "referral")),
        ("https://wa.me/79161234567", Source(MESSENGER, "whatsapp", "messenger")),
        ("https://web.whatsapp.com/", Source(MESSENGER, "whatsapp", "messenger")),
        ("https://yabs.yandex.ru/count/abc", Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ("https://an.yandex.ru/", Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ("https://www.googleadservices.com/pagead/aclk", Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ("https://googleads.g.doubleclick.net/", Source(DISPLAY, "google", "display", paid=True)),
        # Unknown hosts: a referral named by the bare host.
        ("https://www.some-blog.ru/post/1", Source(REFERRAL, "some-blog.ru", "referral")),
        ("https://forum.example.org/t/1", Source(REFERRAL, "forum.example.org", "referral")),
        ("https://notyandex.ru/", Source(REFERRAL, "notyandex.ru", "referral")),  # suffix only on a dot boundary
        ("https://myvk.com/", Source(REFERRAL, "myvk.com", "referral")),
        # Case, ports, trailing dots and scheme-less referrers.
        ("HTTPS://WWW.YANDEX.RU./", Source(ORGANIC_SEARCH, "yandex", "organic")),
        ("https://www.google.com:443/url", Source(ORGANIC_SEARCH, "google", "organic")),
        ("vk.com/feed", Source(SOCIAL, "vk", "social")),
    ],
)
def test_from_referrer_host(referrer, expected):
    assert classify(referrer=referrer) == expected


@pytest.mark.parametrize(
    ("referrer", "own_hosts"),
    [
        ("https://example.com/pricing", ("example.com",)),
        ("https://www.example.com/pricing", ("example.com",)),
        ("https://example.com/pricing", ("www.example.com",)),
        ("https://shop.example.com/", ("example.com",)),
        ("https://EXAMPLE.com/", ("Example.COM",)),
        ("https://landing.ru/", ("example.com", "landing.ru")),
    ],
)
def test_own_host_is_direct(referrer, own_hosts):
    assert classify(referrer=referrer, own_hosts=own_hosts) == DIRECT_SOURCE


def test_a_host_that_merely_ends_like_the_own_host_is_not_internal():
    result = classify(referrer="https://notexample.com/", own_hosts=("example.com",))
    assert result == Source(REFERRAL, "notexample.com", "referral")


@pytest.mark.parametrize("referrer", [None, "", "   ", "http://[::1", "https://", "://", "http://[bad/"])
def test_missing_or_malformed_referrers_are_direct(referrer):
    assert classify(referrer=referrer) == DIRECT_SOURCE


@pytest.mark.parametrize("referrer", ["not a url", "http://exa mple.com/", "%%%", "javascript:alert(1)", "💥://x"])
def test_odd_referrers_do_not_crash(referrer):
    result = classify(referrer=referrer)
    assert result.channel in CHANNEL_LABELS
    assert result.paid is False


@pytest.mark.parametrize(
    ("referrer", "host"),
    [
        ("https://www.Google.com/search?q=1", "www.google.com"),
        ("ya.ru", "ya.ru"),
        ("//t.me/x", "t.me"),
        ("https://yandex.ru.:443/", "yandex.ru"),
        ("https://user:pw@vk.com/", "vk.com"),
        ("", None),
        (None, None),
        ("http://[::1", None),
        ("https://", None),
    ],
)
def test_referrer_host(referrer, host):
    assert referrer_host(referrer) == host


# -- canonical sources and labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Yandex.Direct", "yandex"),
        (" YANDEX ", "yandex"),
        ("ya", "yandex"),
        ("yandex_direct", "yandex"),
        ("google_ads", "google"),
        ("AdWords", "google"),
        ("vkontakte", "vk"),
        ("VK.com", "vk"),
        ("mytarget", "vk"),
        ("odnoklassniki", "ok"),
        ("zen", "dzen"),
        ("tg", "telegram"),
        ("t.me", "telegram"),
        ("fb", "facebook"),
        ("insta", "instagram"),
        ("x", "twitter"),
        ("wa", "whatsapp"),
        ("mailru", "mail.ru"),
        ("newsletter", "email"),
        ("SendPulse", "email"),
        ("www.google.com", "google"),  # a host given as utm_source
        ("news.mail.ru", "mail.ru"),
        ("partner-site.ru", "partner-site.ru"),
        ("Some Partner", "some partner"),
        # How Russian marketers write them: with spaces where the alias has a dot, or in Cyrillic.
        ("Яндекс Директ", "yandex"),
        ("яндекс_директ", "yandex"),
        ("ЯндексДирект", "yandex"),
        ("Google AdWords", "google"),
        ("google-adwords", "google"),
        ("ВК Реклама", "vk"),
        ("VK Реклама", "vk"),
    ],
)
def test_canonical_source(raw, expected):
    assert canonical_source(raw) == expected


@pytest.mark.parametrize(
    ("utm_source", "utm_medium", "expected"),
    [
        ("Яндекс Директ", "cpc", Source(PAID_SEARCH, "yandex", "cpc", paid=True)),
        ("Google AdWords", "cpc", Source(PAID_SEARCH, "google", "cpc", paid=True)),
        ("ВК Реклама", "cpc", Source(SOCIAL, "vk", "cpc", paid=True)),
    ],
)
def test_common_russian_spellings_of_the_ad_platforms_keep_their_channel(utm_source, utm_medium, expected):
    assert classify(utm_source=utm_source, utm_medium=utm_medium) == expected


@pytest.mark.parametrize(
    ("utm_source", "utm_medium", "expected"),
    [
        # "organic" meaning "not paid" on a post: GA4 checks Organic Social (a social source) before Organic Search.
        ("vk", "organic", Source(SOCIAL, "vk", "organic")),
        ("telegram", "organic", Source(SOCIAL, "telegram", "organic")),
        ("whatsapp", "organic", Source(MESSENGER, "whatsapp", "organic")),
        ("dzen", "referral", Source(SOCIAL, "dzen", "referral")),  # and before Referral
        ("google", "organic", Source(ORGANIC_SEARCH, "google", "organic")),
        ("partner.ru", "organic", Source(ORGANIC_SEARCH, "partner.ru", "organic")),
        ("vk", "email", Source(EMAIL, "vk", "email")),  # a newsletter stays e-mail
    ],
)
def test_a_social_source_with_an_unpaid_medium_is_social_as_in_ga4(utm_source, utm_medium, expected):
    assert classify(utm_source=utm_source, utm_medium=utm_medium) == expected


def test_invisible_characters_pasted_into_tags_do_not_make_another_source():
    # A zero-width space or a right-to-left mark that came with a link copied from a chat or a spreadsheet.
    expected = Source(PAID_SEARCH, "yandex", "cpc", paid=True)
    assert classify(utm_source="yandex\u200b", utm_medium="\u200fcpc") == expected
    assert canonical_source("\ufeffЯндекс\u200d") == "yandex"
    assert canonical_source("partner\u200b.ru") == "partner.ru"


@pytest.mark.parametrize(
    "code",
    [ORGANIC_SEARCH, PAID_SEARCH, SOCIAL, EMAIL, DIRECT, REFERRAL, OFFLINE, DISPLAY, MESSENGER],
)
def test_every_channel_has_a_russian_label(code):
    label = CHANNEL_LABELS[code]
    assert label
    assert Source(code, "x", "y").channel_label == label


def test_channel_labels_are_the_seed_categories():
    assert CHANNEL_LABELS == {
        ORGANIC_SEARCH: "Органический поиск",
        PAID_SEARCH: "Контекстная реклама",
        SOCIAL: "Социальные сети",
        EMAIL: "Email-маркетинг",
        DIRECT: "Прямые переходы",
        REFERRAL: "Рефералы",
        OFFLINE: "Offline-каналы",
        DISPLAY: "Медийная реклама",
        MESSENGER: "Мессенджеры",
    }


def test_every_channel_a_rule_can_produce_has_a_label():
    channels = {channel for _, _, channel in sources.HOST_RULES}
    assert channels <= CHANNEL_LABELS.keys()


@pytest.mark.parametrize(
    ("source", "label"),
    [("yandex", "Яндекс"), ("vk", "ВКонтакте"), ("(direct)", "Прямой заход"), ("acme.ru", "acme.ru")],
)
def test_source_label(source, label):
    assert Source(REFERRAL, source, "referral").source_label == label


def test_paid_flag_only_on_paid_host_channels():
    assert classify(referrer="https://yabs.yandex.ru/").paid is True
    assert classify(referrer="https://yandex.ru/").paid is False


# -- the attribution table: real referrers and tag combinations (issue 10) ------------------------------------------

WEB = Path(__file__).resolve().parents[2] / "web" / "throughline.js"

# (utm_source, utm_medium, click ids, referrer) → (channel, source). Referrers as browsers send them: the origin only.
ATTRIBUTION_TABLE = [
    # Search engines on their own hosts are organic search, with or without a query.
    (None, None, {}, "https://yandex.ru/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.ru/search/?text=тёплый+пол", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://www.yandex.ru/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://m.yandex.ru/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.com/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.by/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.kz/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.uz/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://yandex.com.tr/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://ya.ru/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "https://www.google.com/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://google.com/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://www.google.ru/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://www.google.de/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://www.google.co.uk/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://www.google.com.tr/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "https://www.bing.com/", ORGANIC_SEARCH, "bing"),
    (None, None, {}, "https://go.mail.ru/", ORGANIC_SEARCH, "mail.ru"),
    (None, None, {}, "https://search.mail.ru/", ORGANIC_SEARCH, "mail.ru"),
    (None, None, {}, "https://nova.rambler.ru/", ORGANIC_SEARCH, "rambler"),
    (None, None, {}, "https://duckduckgo.com/", ORGANIC_SEARCH, "duckduckgo"),
    (None, None, {}, "https://search.yahoo.com/", ORGANIC_SEARCH, "yahoo"),
    (None, None, {}, "https://www.baidu.com/", ORGANIC_SEARCH, "baidu"),
    (None, None, {}, "https://www.ecosia.org/", ORGANIC_SEARCH, "ecosia"),
    (None, None, {}, "https://search.brave.com/", ORGANIC_SEARCH, "brave"),
    (None, None, {"ysclid": "lq2x3"}, "https://yandex.ru/", ORGANIC_SEARCH, "yandex"),
    # Login, payment and service subdomains of Yandex and Google: ignored (no source) or a referral, never search.
    (None, None, {}, "https://oauth.yandex.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://passport.yandex.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://id.yandex.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://pay.yandex.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://money.yandex.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://oauth.yandex.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://accounts.google.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://pay.google.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://realty.yandex.ru/", REFERRAL, "realty.yandex.ru"),
    (None, None, {}, "https://disk.yandex.ru/", REFERRAL, "disk.yandex.ru"),
    (None, None, {}, "https://travel.yandex.ru/", REFERRAL, "travel.yandex.ru"),
    (None, None, {}, "https://docs.google.com/", REFERRAL, "docs.google.com"),
    (None, None, {}, "https://sites.google.com/", REFERRAL, "sites.google.com"),
    (None, None, {}, "https://translate.google.com/", REFERRAL, "translate.google.com"),
    (None, None, {}, "https://market.yandex.ru/", REFERRAL, "yandex"),
    (None, None, {}, "https://news.mail.ru/", REFERRAL, "mail.ru"),
    (None, None, {}, "https://otvet.mail.ru/", REFERRAL, "mail.ru"),
    # Payment gateways, 3-D Secure and login services: ignored.
    (None, None, {}, "https://yoomoney.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://yookassa.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://securepayments.sberbank.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://securepay.tinkoff.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://pay.tbank.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://widget.cloudpayments.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://auth.robokassa.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://paymaster.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://oplata.qiwi.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://3ds.sberbank.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://acs1.sbrf.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://acs-ru.mirconnect.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://id.vk.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://oauth.vk.com/", DIRECT, "(direct)"),
    (None, None, {}, "https://esia.gosuslugi.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://id.sber.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://www.gosuslugi.ru/", REFERRAL, "gosuslugi.ru"),
    (None, None, {}, "https://www.sberbank.ru/", REFERRAL, "sberbank.ru"),
    (None, None, {}, "https://acs.ru/", REFERRAL, "acs.ru"),  # a site named acs, not a bank's server
    # Sites on regional and commercial second-level domains whose names merely start with "3ds" or "acs".
    (None, None, {}, "https://3dstroy.spb.ru/", REFERRAL, "3dstroy.spb.ru"),
    (None, None, {}, "https://acsent.msk.ru/", REFERRAL, "acsent.msk.ru"),
    (None, None, {}, "https://3dshop.com.ru/", REFERRAL, "3dshop.com.ru"),
    (None, None, {}, "https://acs2.sbrf.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://3ds2.bank.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://3dsecure.bank.ru/", DIRECT, "(direct)"),
    (None, None, {}, "https://yoomoney.ru.evil.com/", REFERRAL, "yoomoney.ru.evil.com"),
    (None, None, {}, "https://evilyoomoney.ru/", REFERRAL, "evilyoomoney.ru"),
    # Social networks, messengers, webmail.
    (None, None, {}, "https://vk.com/", SOCIAL, "vk"),
    (None, None, {}, "https://m.vk.com/", SOCIAL, "vk"),
    (None, None, {}, "https://away.vk.com/", SOCIAL, "vk"),
    (None, None, {}, "https://vk.ru/", SOCIAL, "vk"),
    (None, None, {}, "https://ok.ru/", SOCIAL, "ok"),
    (None, None, {}, "https://dzen.ru/", SOCIAL, "dzen"),
    (None, None, {}, "https://zen.yandex.ru/", SOCIAL, "dzen"),
    (None, None, {}, "https://t.me/", SOCIAL, "telegram"),
    (None, None, {}, "https://web.telegram.org/", SOCIAL, "telegram"),
    (None, None, {}, "https://www.youtube.com/", SOCIAL, "youtube"),
    (None, None, {}, "https://rutube.ru/", SOCIAL, "rutube"),
    (None, None, {}, "https://l.instagram.com/", SOCIAL, "instagram"),
    (None, None, {}, "https://t.co/", SOCIAL, "twitter"),
    (None, None, {}, "https://habr.com/", SOCIAL, "habr"),
    (None, None, {}, "https://vc.ru/", SOCIAL, "vc.ru"),
    (None, None, {}, "https://pikabu.ru/", SOCIAL, "pikabu"),
    (None, None, {}, "https://wa.me/", MESSENGER, "whatsapp"),
    (None, None, {}, "https://e.mail.ru/", EMAIL, "email"),
    (None, None, {}, "https://mail.yandex.ru/", EMAIL, "email"),
    (None, None, {}, "https://mail.google.com/", EMAIL, "email"),
    (None, None, {}, "https://outlook.live.com/", EMAIL, "email"),
    # Android apps (android-app://<package>/).
    (None, None, {}, "android-app://org.telegram.messenger/", SOCIAL, "telegram"),
    (None, None, {}, "android-app://org.thunderdog.challegram/", SOCIAL, "telegram"),
    (None, None, {}, "android-app://com.vkontakte.android/", SOCIAL, "vk"),
    (None, None, {}, "android-app://ru.ok.android/", SOCIAL, "ok"),
    (None, None, {}, "android-app://com.google.android.googlequicksearchbox/", ORGANIC_SEARCH, "google"),
    (None, None, {}, "android-app://com.google.android.gm/", EMAIL, "email"),
    (None, None, {}, "android-app://ru.yandex.searchplugin/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "android-app://com.yandex.browser/", ORGANIC_SEARCH, "yandex"),
    (None, None, {}, "android-app://ru.mail.mailapp/", EMAIL, "email"),
    (None, None, {}, "android-app://com.whatsapp/", MESSENGER, "whatsapp"),
    (None, None, {}, "android-app://com.example.unknown/", REFERRAL, "com.example.unknown"),
    # Ad redirects.
    (None, None, {}, "https://yabs.yandex.ru/", PAID_SEARCH, "yandex"),
    (None, None, {}, "https://an.yandex.ru/", PAID_SEARCH, "yandex"),
    (None, None, {}, "https://www.googleadservices.com/", PAID_SEARCH, "google"),
    # Click ids alone.
    (None, None, {"gclid": "Cj0"}, "https://www.google.com/", PAID_SEARCH, "google"),
    (None, None, {"yclid": "5423"}, "https://yandex.ru/", PAID_SEARCH, "yandex"),
    (None, None, {"fbclid": "IwAR"}, "https://l.facebook.com/", SOCIAL, "facebook"),
    # Tags: utm_source is normalised (case, spaces, "-", "_") before the aliases.
    ("yandex", "cpc", {"yclid": "1"}, "https://yandex.ru/", PAID_SEARCH, "yandex"),
    ("Yandex Direct", "CPC", {}, None, PAID_SEARCH, "yandex"),
    ("yandex_direct", "cpc", {}, None, PAID_SEARCH, "yandex"),
    ("yandex-direct", "cpc", {}, None, PAID_SEARCH, "yandex"),
    ("YandexDirect", "cpc", {}, None, PAID_SEARCH, "yandex"),
    ("Яндекс", "cpc", {}, None, PAID_SEARCH, "yandex"),
    ("google", "cpc", {"gclid": "Cj0"}, "https://www.google.com/", PAID_SEARCH, "google"),
    ("Google Ads", "CPC", {}, None, PAID_SEARCH, "google"),
    ("google", "Paid Search", {}, None, PAID_SEARCH, "google"),
    ("yandex", "cpm", {}, None, DISPLAY, "yandex"),
    ("VK Ads", "CPC", {}, None, SOCIAL, "vk"),
    ("vk ads", "cpm", {}, None, SOCIAL, "vk"),
    ("vk_reklama", "cpc", {}, None, SOCIAL, "vk"),
    ("ВКонтакте", "target", {}, None, SOCIAL, "vk"),
    ("myTarget", "cpc", {}, None, SOCIAL, "vk"),
    ("Telegram Ads", "cpc", {}, None, SOCIAL, "telegram"),
    ("tg", "post", {}, None, SOCIAL, "telegram"),
    ("avito", "cpc", {}, None, DISPLAY, "avito"),  # paid, but no search engine: not paid search
    ("2gis", "cpc", {}, None, DISPLAY, "2gis"),
    ("partner-network", "cpc", {"yclid": "1"}, None, PAID_SEARCH, "partner-network"),  # the yclid shows a Direct ad
    ("newsletter", "email", {}, "https://e.mail.ru/", EMAIL, "email"),
    ("Unisender", "E-mail", {}, None, EMAIL, "email"),
    ("sendpulse", None, {}, None, EMAIL, "email"),
    ("partner.ru", "referral", {}, None, REFERRAL, "partner.ru"),
    ("flyer", "qr", {}, None, OFFLINE, "flyer"),
    ("google", "organic", {}, None, ORGANIC_SEARCH, "google"),
    ("Some  Partner", None, {}, None, REFERRAL, "some partner"),
    # Tags win over the referrer; an ignored referrer does not matter beside tags.
    ("vk", "cpc", {}, "https://id.yandex.ru/", SOCIAL, "vk"),
    ("google", "cpc", {"gclid": "1"}, "https://yoomoney.ru/", PAID_SEARCH, "google"),
    # Nothing at all.
    (None, None, {}, None, DIRECT, "(direct)"),
]


def test_the_attribution_table_is_large_and_names_every_host_of_issue_10():
    assert len(ATTRIBUTION_TABLE) >= 100
    named = {referrer_host(row[3]) for row in ATTRIBUTION_TABLE if row[3]}
    issue_hosts = {
        "oauth.yandex.ru", "passport.yandex.ru", "id.yandex.ru", "pay.yandex.ru", "realty.yandex.ru",
        "disk.yandex.ru", "accounts.google.com", "pay.google.com", "docs.google.com", "yoomoney.ru", "yandex.ru",
        "www.google.com", "org.telegram.messenger",
    }  # fmt: skip
    assert issue_hosts <= named


@pytest.mark.parametrize(("utm_source", "utm_medium", "click_ids", "referrer", "channel", "source"), ATTRIBUTION_TABLE)
def test_attribution_table(utm_source, utm_medium, click_ids, referrer, channel, source):
    result = classify(utm_source=utm_source, utm_medium=utm_medium, click_ids=click_ids, referrer=referrer)
    assert (result.channel, result.source) == (channel, source)


def test_a_stack_can_ignore_more_referrers():
    assert classify(referrer="https://pay.myshop-bank.ru/").channel == REFERRAL
    assert classify(referrer="https://pay.myshop-bank.ru/", ignored=("myshop-bank.ru",)) == DIRECT_SOURCE


def _snippet_pattern(name: str) -> re.Pattern[str]:
    """A regular expression literal of web/throughline.js (`const NAME = /…/;`), which Python reads alike."""
    match = re.search(rf"^  const {name} = /(.+)/;$", WEB.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"no {name} in {WEB}"
    return re.compile(match.group(1))


def test_the_snippet_ignores_the_same_referrers_as_the_server():
    ignore = _snippet_pattern("IGNORE")
    for host in sources.IGNORED_REFERRERS:
        assert ignore.search(host) and ignore.search("www." + host), host
    hosts = {referrer_host(row[3]) for row in ATTRIBUTION_TABLE if row[3] and row[3].startswith("http")}
    for host in hosts:
        assert bool(ignore.search(host)) == sources.is_ignored(host), host


# Organic search hosts the snippet leaves out to stay small: they override the current touch only outside a session.
SERVER_ONLY_SEARCH_HOSTS = {"www.baidu.com", "www.ecosia.org", "search.brave.com"}


def test_the_snippets_search_hosts_are_the_servers_organic_search_hosts():
    search = _snippet_pattern("SEARCH")
    for host in {referrer_host(row[3]) for row in ATTRIBUTION_TABLE if row[3]}:
        organic = classify(referrer=f"//{host}/").channel == ORGANIC_SEARCH
        assert bool(search.search(host)) == (organic and host not in SERVER_ONLY_SEARCH_HOSTS), host
