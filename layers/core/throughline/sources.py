"""Which channel and source brought a visit: from UTM tags, click ids and the referrer host.

Precedence (as in GA4 and sourcebuster): explicit UTM tags > click ids > referrer host > direct. The referrer is judged
by its host alone: Yandex stopped sending the query (``text=``) years ago, so query-based rules misfile Yandex organic
as a referral (sourcebuster-js #41). Raw tags are always kept next to the result so a visit can be re-classified.

Search engines count only on their own hosts (``yandex.ru``, ``www.google.de``), never on their login, payment or
service subdomains (``id.yandex.ru``, ``accounts.google.com``, ``docs.google.com``): those are referrals, or ignored.
Ignored referrers (payment gateways, 3-D Secure pages, login services: ``IGNORED_REFERRERS`` plus the stack's
``IGNORE_REFERRERS``) are no source at all; the capture snippet applies the same list in the browser.

Paid search needs a search source, as in GA4's channel rules: ``VK Ads`` + ``cpc`` is paid social. A paid medium from
a source that is no search engine, social network or messenger (``avito`` + ``cpc``) is Медийная реклама, our channel
for paid traffic outside search (GA4's "Paid Other"), unless an ad click id (gclid, yclid) shows a search ad. An
unpaid medium from a social network or messenger (``vk`` + ``organic``) is social, as GA4 checks Organic Social first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# Channel codes (stable, used in configuration maps) and the Russian labels users see.
ORGANIC_SEARCH = "organic_search"
PAID_SEARCH = "paid_search"
SOCIAL = "social"
EMAIL = "email"
DIRECT = "direct"
REFERRAL = "referral"
OFFLINE = "offline"
DISPLAY = "display"
MESSENGER = "messenger"

CHANNEL_LABELS = {
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
PAID_CHANNELS = frozenset({PAID_SEARCH, DISPLAY})


@dataclass(frozen=True)
class Source:
    """A classified visit. ``source`` is a canonical code (``yandex``, ``vk``, a host, or the raw utm_source)."""

    channel: str
    source: str
    medium: str
    paid: bool = False

    @property
    def channel_label(self) -> str:
        return CHANNEL_LABELS[self.channel]

    @property
    def source_label(self) -> str:
        return SOURCE_LABELS.get(self.source, self.source)


# Canonical sources: what a utm_source value or a host means. Order matters only within a table.
SOURCE_LABELS = {
    "yandex": "Яндекс",
    "google": "Google",
    "bing": "Bing",
    "mail.ru": "Mail.ru",
    "rambler": "Рамблер",
    "duckduckgo": "DuckDuckGo",
    "yahoo": "Yahoo",
    "baidu": "Baidu",
    "vk": "ВКонтакте",
    "ok": "Одноклассники",
    "dzen": "Дзен",
    "telegram": "Telegram",
    "youtube": "YouTube",
    "rutube": "Rutube",
    "facebook": "Facebook",
    "instagram": "Instagram",
    "tiktok": "TikTok",
    "pinterest": "Pinterest",
    "linkedin": "LinkedIn",
    "twitter": "X (Twitter)",
    "habr": "Хабр",
    "whatsapp": "WhatsApp",
    "viber": "Viber",
    "email": "Email",
    "(direct)": "Прямой заход",
    "offline": "Офлайн",
}

SEARCH_ENGINES = frozenset({"yandex", "google", "bing", "mail.ru", "rambler", "duckduckgo", "yahoo", "baidu"})
SOCIAL_NETWORKS = frozenset(
    {"vk", "ok", "dzen", "telegram", "youtube", "rutube", "facebook", "instagram", "tiktok", "pinterest", "linkedin",
     "twitter", "habr"}
)  # fmt: skip
MESSENGERS = frozenset({"whatsapp", "viber"})

# utm_source spellings → canonical source. Looked up after lower-casing and dropping spaces, ".", "-" and "_"
# (``Yandex Direct``, ``yandex_direct``, ``Яндекс Директ`` and ``Яндекс.Директ`` are one key), see ``canonical_source``.
_SOURCE_ALIASES = {
    "ya": "yandex",
    "yandex": "yandex",
    "яндекс": "yandex",
    "яндекс.директ": "yandex",
    "yandexads": "yandex",
    "yandex.ru": "yandex",
    "yandex.direct": "yandex",
    "yandex_direct": "yandex",
    "yandexdirect": "yandex",
    "ydirect": "yandex",
    "yandex-direct": "yandex",
    "google": "google",
    "google_ads": "google",
    "googleads": "google",
    "adwords": "google",
    "google_adwords": "google",
    "bing": "bing",
    "mail": "mail.ru",
    "mail.ru": "mail.ru",
    "mailru": "mail.ru",
    "rambler": "rambler",
    "vk": "vk",
    "vkontakte": "vk",
    "vk.com": "vk",
    "vk_ads": "vk",
    "vkads": "vk",
    "vkreklama": "vk",
    "vkontakteads": "vk",
    "вк": "vk",
    "вконтакте": "vk",
    "вк_реклама": "vk",
    "vk_реклама": "vk",
    "mytarget": "vk",
    "ok": "ok",
    "ok.ru": "ok",
    "odnoklassniki": "ok",
    "dzen": "dzen",
    "zen": "dzen",
    "telegram": "telegram",
    "tg": "telegram",
    "tgads": "telegram",
    "telegramads": "telegram",
    "t.me": "telegram",
    "youtube": "youtube",
    "yt": "youtube",
    "rutube": "rutube",
    "facebook": "facebook",
    "fb": "facebook",
    "instagram": "instagram",
    "ig": "instagram",
    "insta": "instagram",
    "tiktok": "tiktok",
    "pinterest": "pinterest",
    "linkedin": "linkedin",
    "twitter": "twitter",
    "x": "twitter",
    "habr": "habr",
    "whatsapp": "whatsapp",
    "wa": "whatsapp",
    "viber": "viber",
    "email": "email",
    "e-mail": "email",
    "newsletter": "email",
    "mailchimp": "email",
    "sendpulse": "email",
    "unisender": "email",
    "dashamail": "email",
    "(direct)": "(direct)",
}

# Referrer hosts, matched by suffix on a dot boundary; the first match wins, so specific hosts come first.
# (suffix, source, channel). A leading "=" matches the host itself only (with "www." or "m."), not its subdomains.
# `{tld}` rows are expanded below for the engines that live on many country domains. Android apps send
# ``android-app://<package>/``; the package stands where the host would be.
_HOST_RULES: tuple[tuple[str, str, str], ...] = (
    # Paid clicks that arrive through an ad redirect.
    ("yabs.yandex.{tld}", "yandex", PAID_SEARCH),
    ("an.yandex.ru", "yandex", PAID_SEARCH),  # Yandex Advertising Network (РСЯ) counts as context ads in Russia
    ("googleadservices.com", "google", PAID_SEARCH),
    ("doubleclick.net", "google", DISPLAY),
    ("googlesyndication.com", "google", DISPLAY),
    ("ads.vk.com", "vk", SOCIAL),
    # Webmail before the portals that host it.
    ("mail.yandex.{tld}", "email", EMAIL),
    ("e.mail.ru", "email", EMAIL),
    ("mail.google.com", "email", EMAIL),
    ("mail.rambler.ru", "email", EMAIL),
    ("outlook.live.com", "email", EMAIL),
    ("outlook.office.com", "email", EMAIL),
    ("mail.yahoo.com", "email", EMAIL),
    # Android apps.
    ("org.telegram.messenger", "telegram", SOCIAL),
    ("org.telegram.plus", "telegram", SOCIAL),
    ("org.thunderdog.challegram", "telegram", SOCIAL),
    ("com.vkontakte.android", "vk", SOCIAL),
    ("com.vk.vkvideo", "vk", SOCIAL),
    ("ru.ok.android", "ok", SOCIAL),
    ("com.google.android.youtube", "youtube", SOCIAL),
    ("com.google.android.googlequicksearchbox", "google", ORGANIC_SEARCH),  # the Google app
    ("com.google.android.gm", "email", EMAIL),  # Gmail
    ("ru.yandex.searchplugin", "yandex", ORGANIC_SEARCH),  # the Yandex app (with Alice)
    ("com.yandex.browser", "yandex", ORGANIC_SEARCH),  # Yandex Browser: its search and its feed
    ("ru.yandex.mail", "email", EMAIL),
    ("ru.mail.mailapp", "email", EMAIL),
    ("com.whatsapp", "whatsapp", MESSENGER),
    ("com.viber.voip", "viber", MESSENGER),
    ("com.instagram.android", "instagram", SOCIAL),
    ("com.facebook.katana", "facebook", SOCIAL),
    # Content and social platforms of Yandex before the search engine itself.
    ("dzen.ru", "dzen", SOCIAL),
    ("zen.yandex.{tld}", "dzen", SOCIAL),
    ("market.yandex.ru", "yandex", REFERRAL),
    # Search engines: their own hosts only (other subdomains fall through to referral).
    ("=yandex.{tld}", "yandex", ORGANIC_SEARCH),
    ("=ya.ru", "yandex", ORGANIC_SEARCH),
    ("=google.{tld}", "google", ORGANIC_SEARCH),
    ("=bing.com", "bing", ORGANIC_SEARCH),
    ("=go.mail.ru", "mail.ru", ORGANIC_SEARCH),
    ("=search.mail.ru", "mail.ru", ORGANIC_SEARCH),
    ("=nova.rambler.ru", "rambler", ORGANIC_SEARCH),
    ("=duckduckgo.com", "duckduckgo", ORGANIC_SEARCH),
    ("=search.yahoo.com", "yahoo", ORGANIC_SEARCH),
    ("=baidu.com", "baidu", ORGANIC_SEARCH),
    ("=ecosia.org", "ecosia", ORGANIC_SEARCH),
    ("=search.brave.com", "brave", ORGANIC_SEARCH),
    ("vk.com", "vk", SOCIAL),
    ("vk.ru", "vk", SOCIAL),
    ("vkvideo.ru", "vk", SOCIAL),
    ("ok.ru", "ok", SOCIAL),
    ("t.me", "telegram", SOCIAL),  # the seed files Telegram channels under social networks
    ("telegram.org", "telegram", SOCIAL),
    ("youtube.com", "youtube", SOCIAL),
    ("youtu.be", "youtube", SOCIAL),
    ("rutube.ru", "rutube", SOCIAL),
    ("facebook.com", "facebook", SOCIAL),
    ("instagram.com", "instagram", SOCIAL),
    ("tiktok.com", "tiktok", SOCIAL),
    ("pinterest.com", "pinterest", SOCIAL),
    ("linkedin.com", "linkedin", SOCIAL),
    ("lnkd.in", "linkedin", SOCIAL),
    ("t.co", "twitter", SOCIAL),
    ("x.com", "twitter", SOCIAL),
    ("twitter.com", "twitter", SOCIAL),
    ("habr.com", "habr", SOCIAL),
    ("vc.ru", "vc.ru", SOCIAL),
    ("pikabu.ru", "pikabu", SOCIAL),
    ("wa.me", "whatsapp", MESSENGER),
    ("web.whatsapp.com", "whatsapp", MESSENGER),
    ("whatsapp.com", "whatsapp", MESSENGER),
    ("viber.com", "viber", MESSENGER),
    ("mail.ru", "mail.ru", REFERRAL),
)
# Referrers that are no source: a visitor coming back from paying, from a bank's 3-D Secure page or from logging in
# is on the same visit. Matched by suffix on a dot boundary; hosts whose first label is "3ds", "3dsecure" or "acs",
# alone or followed by digits or "-…" (a bank's access control server: acs1.bank.ru, 3ds.bank.ru, acs-ru.bank.ru),
# count too, but not sites whose names merely start so (3dstroy.spb.ru). web/throughline.js holds the same list.
IGNORED_REFERRERS: tuple[str, ...] = (
    "yoomoney.ru", "yookassa.ru", "money.yandex.ru", "pay.yandex.ru", "cloudpayments.ru", "robokassa.ru",
    "robokassa.com", "paymaster.ru", "payanyway.ru", "paykeeper.ru", "unitpay.ru", "qiwi.com",
    "securepayments.sberbank.ru", "securepayments.sber.ru", "securepay.tinkoff.ru", "pay.tinkoff.ru",
    "securepay.tbank.ru", "pay.tbank.ru", "pay.alfabank.ru", "pay.google.com",
    "id.yandex.ru", "passport.yandex.ru", "oauth.yandex.ru", "passport.yandex.com", "oauth.yandex.com",
    "accounts.google.com", "id.vk.com", "id.vk.ru", "oauth.vk.com", "oauth.vk.ru", "login.vk.com", "login.vk.ru",
    "id.sber.ru", "id.tinkoff.ru", "id.tbank.ru", "esia.gosuslugi.ru",
)  # fmt: skip
_ACCESS_CONTROL_SERVER = re.compile(r"^(3ds(ecure)?|acs)(\d*|-[\w-]*)\.[^.]+\.[^.]")
# `{tld}`: any country domain, one label (yandex.kz, google.de) or two (google.co.uk, google.com.tr).
_TLD_PATTERN = r"[a-z]{2,3}(?:\.[a-z]{2})?"

# utm_medium families, compared after lower-casing and turning spaces into underscores.
_PAID_MEDIUMS = frozenset({"cpc", "ppc", "cpv", "context", "kontekst", "контекст", "контекстная_реклама", "sem",
                           "search_ads", "searchads", "retargeting", "remarketing"})  # fmt: skip
_DISPLAY_MEDIUMS = frozenset({"cpm", "display", "banner", "media", "rsya", "programmatic", "video", "olv",
                              "interstitial", "expandable"})  # fmt: skip
_SOCIAL_MEDIUMS = frozenset({"social", "social_network", "social-network", "social_media", "social-media", "sm",
                             "smm", "soc", "post", "stories"})  # fmt: skip
_PAID_SOCIAL_MEDIUMS = frozenset({"target", "targeting", "таргет", "social_paid", "social-paid", "paid_social"})
_EMAIL_MEDIUMS = frozenset({"email", "e-mail", "e_mail", "newsletter", "mailing", "рассылка", "trigger", "digest"})
_MESSENGER_MEDIUMS = frozenset({"messenger", "im", "chat", "chatbot", "bot", "whatsapp", "viber"})
_REFERRAL_MEDIUMS = frozenset({"referral", "ref", "link", "partner", "partners", "affiliate", "cpa", "pr"})
_OFFLINE_MEDIUMS = frozenset({"offline", "print", "outdoor", "billboard", "radio", "tv", "qr", "flyer", "leaflet",
                              "event", "expo", "sms", "phone", "call"})  # fmt: skip
_ORGANIC_MEDIUMS = frozenset({"organic", "seo"})
_DIRECT_MEDIUMS = frozenset({"(none)", "none", "direct", "(not_set)"})

_ORGANIC_FAMILIES = (
    (_EMAIL_MEDIUMS, EMAIL),
    (_MESSENGER_MEDIUMS, MESSENGER),
    (_SOCIAL_MEDIUMS, SOCIAL),
    (_ORGANIC_MEDIUMS, ORGANIC_SEARCH),
    (_REFERRAL_MEDIUMS, REFERRAL),
    (_OFFLINE_MEDIUMS, OFFLINE),
)


def classify(
    *,
    utm_source: str | None = None,
    utm_medium: str | None = None,
    click_ids: dict[str, str] | None = None,
    referrer: str | None = None,
    own_hosts: tuple[str, ...] = (),
    ignored: tuple[str, ...] = (),
) -> Source:
    """Classify one visit. ``own_hosts``: the site's own hosts, whose referrers are internal navigation;
    ``ignored``: hosts to ignore besides ``IGNORED_REFERRERS`` (the stack's ``IGNORE_REFERRERS``)."""
    click_ids = {key: value for key, value in (click_ids or {}).items() if value}
    source_tag = _visible(utm_source or "").strip()
    medium_tag = _visible(utm_medium or "").strip().lower().replace(" ", "_")
    if source_tag or medium_tag:
        return _from_tags(source_tag, medium_tag, click_ids)
    if click_ids:
        return _from_click_ids(click_ids)
    host = referrer_host(referrer)
    if host and not _is_own_host(host, own_hosts) and not is_ignored(host, ignored):
        return _from_host(host)
    return Source(DIRECT, "(direct)", "(none)")


def canonical_source(utm_source: str) -> str:
    """``Yandex.Direct``, ``Yandex Direct`` → ``yandex``; unknown values are kept as given (lower-cased, runs of
    spaces made one)."""
    text = " ".join(_visible(utm_source).lower().split())
    key = _source_key(text)
    if key in _ALIAS_KEYS:
        return _ALIAS_KEYS[key]
    host_match = _match_host(text) if "." in text and " " not in text else None
    return host_match[0] if host_match else text


def is_ignored(host: str, extra: tuple[str, ...] = ()) -> bool:
    """A payment, 3-D Secure or login host (``IGNORED_REFERRERS``, or one of ``extra``): no source."""
    host = host.lower().rstrip(".")
    if _ACCESS_CONTROL_SERVER.match(host):
        return True
    return any(host == suffix or host.endswith("." + suffix) for suffix in (*IGNORED_REFERRERS, *extra))


def referrer_host(referrer: str | None) -> str | None:
    if not referrer:
        return None
    text = referrer.strip()
    if "//" not in text:
        text = "//" + text
    try:
        host = urlsplit(text).hostname
    except ValueError:
        return None
    return host.lower().rstrip(".") if host else None


def _from_tags(source_tag: str, medium: str, click_ids: dict[str, str]) -> Source:
    source = canonical_source(source_tag) if source_tag else ""
    if not source:
        source = _source_from_click_ids(click_ids) or "(not set)"
    has_ad_click = bool({"gclid", "gbraid", "wbraid", "yclid"} & click_ids.keys())
    if medium in _DIRECT_MEDIUMS and source in ("(direct)", "(not set)", "direct"):
        return Source(DIRECT, "(direct)", "(none)")
    if medium in _DISPLAY_MEDIUMS:
        return Source(SOCIAL if source in SOCIAL_NETWORKS else DISPLAY, source, medium, paid=True)
    if medium in _PAID_SOCIAL_MEDIUMS:
        return Source(SOCIAL, source, medium, paid=True)
    if medium in _PAID_MEDIUMS or medium.startswith("paid") or (not medium and has_ad_click):
        medium = medium or "cpc"
        if source in SOCIAL_NETWORKS:
            return Source(SOCIAL, source, medium, paid=True)
        if source in MESSENGERS:
            return Source(MESSENGER, source, medium, paid=True)
        if source in SEARCH_ENGINES or has_ad_click or "search" in medium:
            return Source(PAID_SEARCH, source, medium, paid=True)
        return Source(DISPLAY, source, medium, paid=True)  # paid, but not on a search engine: GA4's "Paid Other"
    if medium in _ORGANIC_MEDIUMS | _REFERRAL_MEDIUMS and source in SOCIAL_NETWORKS | MESSENGERS:
        # An unpaid post ("vk / organic"): GA4 checks Organic Social, by source, before Organic Search and Referral.
        return Source(SOCIAL if source in SOCIAL_NETWORKS else MESSENGER, source, medium)
    for mediums, channel in _ORGANIC_FAMILIES:
        if medium in mediums:
            return Source(channel, source, medium)
    # An unknown or missing medium: judge by what the source is.
    if has_ad_click:
        return Source(PAID_SEARCH, source, medium or "cpc", paid=True)
    if source in SEARCH_ENGINES:
        return Source(ORGANIC_SEARCH, source, medium or "organic")
    if source in SOCIAL_NETWORKS:
        return Source(SOCIAL, source, medium or "social")
    if source in MESSENGERS:
        return Source(MESSENGER, source, medium or "messenger")
    if source == "email":
        return Source(EMAIL, source, medium or "email")
    return Source(REFERRAL, source, medium or "referral")


def _source_from_click_ids(click_ids: dict[str, str]) -> str | None:
    if {"gclid", "gbraid", "wbraid"} & click_ids.keys():
        return "google"
    if "yclid" in click_ids or "ysclid" in click_ids:
        return "yandex"
    if "fbclid" in click_ids:
        return "facebook"
    if "rb_clickid" in click_ids:
        return "vk"
    return None


def _from_click_ids(click_ids: dict[str, str]) -> Source:
    if {"gclid", "gbraid", "wbraid"} & click_ids.keys():
        return Source(PAID_SEARCH, "google", "cpc", paid=True)
    if "yclid" in click_ids:
        return Source(PAID_SEARCH, "yandex", "cpc", paid=True)
    if "ysclid" in click_ids:  # set by Yandex Search on organic results, not by ads
        return Source(ORGANIC_SEARCH, "yandex", "organic")
    if "rb_clickid" in click_ids and "fbclid" not in click_ids:  # VK Ads (ads.vk.com) adds it to its ads' links
        return Source(SOCIAL, "vk", "cpc", paid=True)
    return Source(SOCIAL, "facebook", "social")  # fbclid marks every outbound Meta link, paid or not


def _from_host(host: str) -> Source:
    match = _match_host(host)
    if match is None:
        bare = host[4:] if host.startswith("www.") else host
        return Source(REFERRAL, bare, "referral")
    source, channel = match
    return Source(channel, source, _HOST_MEDIUM[channel], paid=channel in PAID_CHANNELS)


_HOST_MEDIUM = {
    ORGANIC_SEARCH: "organic",
    PAID_SEARCH: "cpc",
    DISPLAY: "display",
    EMAIL: "email",
    SOCIAL: "social",
    MESSENGER: "messenger",
    REFERRAL: "referral",
}


def _compile(suffix: str) -> re.Pattern[str]:
    """A host suffix as a pattern matching the host itself or any subdomain of it; ``=host``: the host itself, with
    ``www.`` or ``m.`` in front."""
    body = re.escape(suffix.lstrip("=")).replace(re.escape("{tld}"), _TLD_PATTERN)
    return re.compile(rf"^(?:www\.|m\.)?{body}$" if suffix.startswith("=") else rf"(?:^|\.){body}$")


def _visible(text: str) -> str:
    """Without invisible format characters (zero-width spaces and joiners, direction marks, a byte order mark) that
    come along with a link copied from a chat or a spreadsheet and would make ``yandex`` another source."""
    return _INVISIBLE.sub("", text)


_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def _source_key(text: str) -> str:
    return re.sub(r"[\s._-]+", "", text)


_ALIAS_KEYS = {_source_key(alias): source for alias, source in _SOURCE_ALIASES.items()}


HOST_RULES = tuple((_compile(suffix), source, channel) for suffix, source, channel in _HOST_RULES)


def _match_host(host: str) -> tuple[str, str] | None:
    for pattern, source, channel in HOST_RULES:
        if pattern.search(host):
            return source, channel
    return None


def _is_own_host(host: str, own_hosts: tuple[str, ...]) -> bool:
    host = host[4:] if host.startswith("www.") else host
    for own in own_hosts:
        own = own.lower()
        own = own[4:] if own.startswith("www.") else own
        if host == own or host.endswith("." + own):
            return True
    return False
