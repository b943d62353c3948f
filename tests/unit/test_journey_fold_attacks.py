"""A hostile reviewer's attacks on the journey field's size limit: long lines, multi-byte text, tiny limits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from throughline.journey.lines import Touch
from throughline.journey.projection import render_journey, render_line

MOSCOW = ZoneInfo("Europe/Moscow")
SUMMARY = re.compile(r"… ещё (\d+) касани[ея]?\w* с \d\d\.\d\d\.\d{4} по \d\d\.\d\d\.\d{4} \(полный путь — в отчёте\)")
START = datetime(2025, 1, 1, 9, tzinfo=UTC)


def call(index: int, detail: str) -> Touch:
    return Touch(
        touch_id=f"activity:{index}", at=START + timedelta(hours=index), kind="outgoing_call", channel="crm",
        source="phone", medium="outgoing_call", detail=detail,
        extra={"label_source": "Телефон", "label_medium": "Исходящий звонок", "seq": str(index)},
    )  # fmt: skip


@pytest.mark.parametrize("count", [3, 4, 30])
@pytest.mark.parametrize("detail", ["Ж" * 400, "🙂" * 400, "x" * 400])
def test_long_lines_under_the_smallest_limit_keep_first_contact_a_whole_summary_and_the_newest_line(count, detail):
    touches = [call(index, f"{index}:{detail}") for index in range(count)]
    text = render_journey(touches, MOSCOW, max_chars=200)
    assert len(text) <= 200
    lines = text.splitlines()
    assert lines[0].startswith("Первичный контакт: 01.01.2025 — Телефон")
    match = SUMMARY.fullmatch(lines[1])
    assert match, lines
    newest = render_line(touches[-1], MOSCOW)
    assert lines[-1] == newest or (lines[-1].endswith("…") and newest.startswith(lines[-1][:-1]))
    assert int(match[1]) + len(lines) - 1 == count  # every touch shown or counted


def test_two_long_lines_both_stay_shortened():
    text = render_journey([call(0, "Ж" * 400), call(1, "🙂" * 400)], MOSCOW, max_chars=200)
    assert len(text) <= 200
    first, last = text.splitlines()
    assert first.startswith("Первичный контакт: ") and first.endswith("…")
    assert last.startswith("01.01.2025 — Телефон — Исходящий звонок — 🙂") and last.endswith("…")


def test_one_line_longer_than_the_limit_is_shortened_not_cut_anywhere():
    text = render_journey([call(0, "Ж" * 400)], MOSCOW, max_chars=200)
    assert len(text) <= 200 and text.startswith("Первичный контакт: ") and text.endswith("…")


def test_the_newest_lines_that_fit_are_kept():
    touches = [call(index, f"Звонок {index}") for index in range(100)]
    text = render_journey(touches, MOSCOW, max_chars=1000)
    lines = text.splitlines()
    assert len(text) <= 1000
    # one more newest line would not fit
    assert len(text) + len(lines[2]) + 1 > 1000 or SUMMARY.fullmatch(lines[1])[1] == "1"
    assert lines[-1].endswith("Звонок 99")
