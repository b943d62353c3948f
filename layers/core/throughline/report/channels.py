"""Which row a lead or deal belongs to: its UTM tags, else its CRM source (``SOURCE_ID``), else "unknown".

Spend lands in rows by platform (``yandex_direct`` → source ``yandex``) and campaign; a lead's ``utm_campaign`` is
matched against a campaign's id and its name (Yandex advertisers often tag ``{campaign_id}``), manual spend by its
own tags.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from urllib.parse import unquote_plus

# SOURCE_ID → channel lives beside the classifier, shared with the journey's first lines; re-exported for the report.
from throughline.source_ids import (  # noqa: F401
    LABELS,
    NOT_SET,
    SOURCE_ID_CHANNELS,
    SOURCE_ID_LABELS,
    UNKNOWN,
    Origin,
    SourceIds,
    channel_label,
)
from throughline.sources import (
    OFFLINE,
    PAID_SEARCH,
    SOCIAL,
    SOURCE_LABELS,
    canonical_source,
    classify,
)

NO_CAMPAIGN = "(не указана)"

# Spend platforms: the canonical utm_source their ads carry and the channel their campaigns belong to.
PLATFORM_SOURCES = {"yandex_direct": "yandex", "google_ads": "google", "vk_ads": "vk"}
PLATFORM_CHANNELS = {"yandex_direct": PAID_SEARCH, "google_ads": PAID_SEARCH, "vk_ads": SOCIAL}


def source_label(source: str) -> str:
    return SOURCE_LABELS.get(source) or SOURCE_ID_LABELS.get(source) or source


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
