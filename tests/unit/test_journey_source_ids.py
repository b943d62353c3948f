"""One channel per record: the first journey line of a record typed in the CRM takes its channel from the same
``SOURCE_ID`` mapping as the report's table and the attribution paths, BITRIX24_SOURCE_MAP included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from throughline.report.channels import SourceIds as ReportSourceIds
from throughline.writer.crm_events import CrmEventWriter

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def first_touch(record: dict, source_map: dict | None = None):
    writer = CrmEventWriter.__new__(CrmEventWriter)  # only the line's own inputs: no portal, no store
    writer.source_ids = ReportSourceIds(source_map)
    writer._dictionary = {"SOURCE": {"OTHER": "Другое", "5": "Авито", "CALL": "Звонок"}}
    writer._clock = lambda: NOW
    return writer._lead_created({"ID": 7, "DATE_CREATE": "2026-11-20T12:00:00+03:00", **record})


@pytest.mark.parametrize(
    ("record", "source_map", "channel", "label"),
    [
        ({"SOURCE_ID": "OTHER", "TITLE": "Клиент с улицы"}, None, "unknown", "Источник не указан"),
        ({"TITLE": "Без источника"}, None, "unknown", "Источник не указан"),
        ({"SOURCE_ID": "5"}, None, "unknown", "Источник не указан"),  # a portal's own source nobody mapped
        ({"SOURCE_ID": "5"}, {"social/avito": "5"}, "social", "Социальные сети"),
        ({"SOURCE_ID": "CALL"}, None, "offline", "Offline-каналы"),
        ({"SOURCE_ID": "CALL"}, {"offline/phone": "CALL"}, "offline", "Offline-каналы"),
    ],
)
def test_the_first_line_and_the_report_agree_on_the_channel(record, source_map, channel, label):
    touch = first_touch(record, source_map)
    table = ReportSourceIds(source_map).origin(record.get("SOURCE_ID"))
    assert (touch.channel, touch.extra["label_medium"]) == (channel, label)
    assert table.channel == touch.channel


def test_a_mapped_source_id_cut_in_the_middle_of_an_emoji_keeps_its_channel() -> None:
    """A portal's own source whose code JSON carries with a lone surrogate ("UC_VK\\ud83d"), mapped by an operator who
    copied it as sent into BITRIX24_SOURCE_MAP: the record's SOURCE_ID reaches the touch and the CRM snapshot as
    "UC_VK\\ufffd" (throughline.text), so the map's code must be read alike, or the channel is lost in both."""
    source_map = {"social/vk": "UC_VK\ud83d"}
    record = {"SOURCE_ID": "UC_VK\ufffd"}  # as the events writer and the snapshot hold it
    touch = first_touch(record, source_map)
    table = ReportSourceIds(source_map).origin(record["SOURCE_ID"])
    assert touch.channel == table.channel == "social" and table.known
