"""A CRM record's ``SOURCE_ID`` as a channel: one mapping for the journey's first line, the report's table and the
attribution paths. The portal's default source dictionary (crm.status.list ENTITY_ID=SOURCE), overridden by
``BITRIX24_SOURCE_MAP`` read backwards; ``OTHER``, an empty source or a portal's own source nobody mapped is
«Источник не указан», never guessed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from throughline.sources import CHANNEL_LABELS, DIRECT, EMAIL, OFFLINE, PAID_SEARCH, REFERRAL
from throughline.text import storable

UNKNOWN = "unknown"
LABELS = {**CHANNEL_LABELS, UNKNOWN: "Источник не указан"}
NOT_SET = "(not set)"

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
                # A code copied as the portal's JSON sent it ("UC_VK\ud83d"): as the records hold it (U+FFFD).
                self._map[storable(source_id)] = (channel, source or NOT_SET)

    def origin(self, source_id: str | None) -> Origin:
        mapped = self._map.get(source_id or "")
        if mapped is None:
            # OTHER, empty, or a portal's own source the operator did not map: kept visible, not guessed.
            return Origin(UNKNOWN, source_id if source_id and source_id != "OTHER" else NOT_SET, False)
        return Origin(mapped[0], mapped[1], True)
