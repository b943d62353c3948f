"""Which row a lead or deal belongs to: its UTM tags, else its CRM source (``SOURCE_ID``), else "unknown".

Spend lands in rows by platform (``yandex_direct`` → source ``yandex``) and campaign; a lead's ``utm_campaign`` is
matched against a campaign's id and its name (Yandex advertisers often tag ``{campaign_id}``), manual spend by its
own tags.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote_plus

from throughline.sources import (
    CHANNEL_LABELS,
    DIRECT,
    EMAIL,
    OFFLINE,
    PAID_SEARCH,
    REFERRAL,
    SOCIAL,
    SOURCE_LABELS,
    canonical_source,
    classify,
)

UNKNOWN = "unknown"
LABELS = {**CHANNEL_LABELS, UNKNOWN: "Источник не указан"}
NOT_SET = "(not set)"
NO_CAMPAIGN = "(не указана)"

# Spend platforms: the canonical utm_source their ads carry and the channel their campaigns belong to.
PLATFORM_SOURCES = {"yandex_direct": "yandex", "google_ads": "google", "vk_ads": "vk"}
PLATFORM_CHANNELS = {"yandex_direct": PAID_SEARCH, "google_ads": PAID_SEARCH, "vk_ads": SOCIAL}

# The portal's default source dictionary (crm.status.list ENTITY_ID=SOURCE) → (channel, source). OTHER means unknown.
SOURCE_ID_CHANNELS = {
    "CALL": (OFFLINE, "call"),
    "EMAIL": (EMAIL, "email"),
    "WEB": (DIRECT, "(direct)"),
    "WEBFORM": (DIRECT, "(direct)"),
    "STORE": (DIRECT, "(direct)"),
    "ADVERTISING": (PAID_SEARCH, NOT_SET),
    "PARTNER": (REFERRAL, "partner"),
    "RECOMMENDATION": (REFERRAL, "recommendation"),
    "TRADE_SHOW": (OFFLINE, "trade_show"),
    "CALLBACK": (OFFLINE, "callback"),
    "RC_GENERATOR": (OFFLINE, "rc_generator"),
}
SOURCE_ID_LABELS = {
    "call": "Звонок",
    "partner": "Существующий клиент",
    "recommendation": "По рекомендации",
    "trade_show": "Выставка",
    "callback": "Обратный звонок",
    "rc_generator": "Генератор продаж",
    NOT_SET: "Не указан",
}


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source) or SOURCE_ID_LABELS.get(source) or source


def channel_label(channel: str) -> str:
    return LABELS.get(channel, channel)


@dataclass(frozen=True)
class Origin:
    """Where a CRM record came from, as the report groups it."""

    channel: str
    source: str
    known: bool  # a UTM source or a meaningful CRM source was there


class SourceIds:
    """``SOURCE_ID`` → channel: the defaults above, overridden by ``BITRIX24_SOURCE_MAP`` read backwards."""

    def __init__(self, source_map: Mapping[str, str] | None = None):
        self._map = dict(SOURCE_ID_CHANNELS)
        for key, source_id in (source_map or {}).items():
            channel, _, source = key.partition("/")
            if channel in CHANNEL_LABELS and source_id not in ("ADVERTISING", "WEB", "OTHER"):
                self._map[source_id] = (channel, source or NOT_SET)

    def origin(self, source_id: str | None) -> Origin:
        mapped = self._map.get(source_id or "")
        if mapped is None:
            # OTHER, empty, or a portal's own source the operator did not map: kept visible, not guessed.
            return Origin(UNKNOWN, source_id if source_id and source_id != "OTHER" else NOT_SET, False)
        return Origin(mapped[0], mapped[1], True)


@lru_cache(maxsize=65536)
def origin_from_tags(utm_source: str, utm_medium: str) -> Origin:
    visit = classify(utm_source=utm_source or None, utm_medium=utm_medium or None)
    return Origin(visit.channel, visit.source, bool(utm_source))


@lru_cache(maxsize=4096)
def is_known_source(source: str) -> bool:
    return source in SOURCE_LABELS or source in PLATFORM_SOURCES.values()


def spend_source(platform: str, utm_source: str | None) -> str:
    if platform in PLATFORM_SOURCES:
        return PLATFORM_SOURCES[platform]
    return canonical_source(utm_source or "") or NOT_SET


def spend_channel(platform: str, utm_source: str | None, utm_medium: str | None) -> str:
    if platform in PLATFORM_CHANNELS:
        return PLATFORM_CHANNELS[platform]
    if not (utm_source or utm_medium):
        return OFFLINE  # manual spend without tags: offline money (print, outdoor, events)
    return classify(utm_source=utm_source or None, utm_medium=utm_medium or None).channel


@lru_cache(maxsize=65536)
def tag_key(value: str | None) -> str:
    """A campaign name or id as matching compares it: URL-decoded (``%D0%97…``, ``+`` → space), NFKC (full-width
    letters, no-break spaces), case-folded, ``ё`` → ``е``, runs of whitespace collapsed, ends trimmed."""
    text = value or ""
    if "%" in text or "+" in text:
        text = unquote_plus(text)
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    return " ".join(text.split())
