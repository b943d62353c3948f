"""roi.json against its committed schema, roi.csv for Excel in a Russian locale, the page's content and escaping."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

from test_report_build import build, lead, seed_records

from throughline.report.models import RoiReport, json_schema
from throughline.report.render import render_csv, render_html, render_json

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "roi.schema.json"


def seed_report() -> RoiReport:
    leads, deals, spend = seed_records()
    leads.append(lead(UTM_SOURCE="<script>alert(1)</script>", UTM_MEDIUM="referral", UTM_CAMPAIGN="</script>"))
    return build(leads, deals, spend)


def test_committed_schema_equals_the_generated_one() -> None:
    assert SCHEMA.read_text(encoding="utf-8") == json_schema(), (
        "regenerate: PYTHONPATH=layers/core python -m throughline.report.models > docs/roi.schema.json"
    )


def test_roi_json_round_trips_with_decimal_strings_and_nulls() -> None:
    report = seed_report()
    data = json.loads(render_json(report))
    yandex = next(row for row in data["rows"] if row["level"] == "channel" and row["channel"] == "paid_search")
    assert yandex["metrics"]["romi"] == "525.00" and yandex["metrics"]["spend"] == "80000.00"
    referral = next(row for row in data["rows"] if row["level"] == "channel" and row["channel"] == "referral")
    assert referral["metrics"]["cpl"] is None and referral["metrics"]["romi"] is None
    assert data["attribution"] is None
    assert RoiReport.model_validate(data) == report  # decimal strings read back as the same decimals


def test_csv_opens_in_russian_excel() -> None:
    raw = render_csv(seed_report())
    assert raw.startswith("\ufeff".encode())
    text = raw.decode("utf-8-sig")
    assert "\r\n" in text
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    header = rows[0]
    assert header[:4] == ["Уровень", "Канал", "Источник", "Кампания"]
    campaign = next(row for row in rows if row[0] == "Кампания" and row[4] == "777")
    assert campaign[header.index("ROMI, %")] == "525,00"  # decimal comma
    assert campaign[header.index("Расход")] == "80000,00"  # no thousands separator
    organic = next(row for row in rows if row[0] == "Канал" and row[1] == "Рефералы")
    assert organic[header.index("CPL")] == ""  # empty cell, not 0 or inf
    assert rows[-1][0] == "Итого" and rows[-1][header.index("Выручка")] == "575000,00"
    assert len({len(row) for row in rows}) == 1


def test_page_is_self_contained_and_escaped() -> None:
    page = render_html(seed_report()).decode("utf-8")
    assert "Chart.js v4.6.1" in page  # inlined, not fetched
    assert "src=" not in page and "https://" not in page.split("Chart.js v4.6.1")[0]
    assert "<script>alert(1)</script>" not in page
    assert page.count("</script>") == 3  # data, Chart.js, ours — the payload could not close a tag
    assert "ROMI по каналам с расходом" in page and "Качество данных" in page and "525,00 %" in page
    data = page.split('id="report-data">')[1].split("</script>")[0]
    chart = json.loads(data)
    assert chart["romi"] == [525.0, 150.0] and chart["paid_channels"] == ["Контекстная реклама", "Социальные сети"]
    assert "Рефералы" in chart["channels"]  # no spend: in the money chart, not in the ROMI one


def test_numbers_in_page_are_russian() -> None:
    page = render_html(seed_report()).decode("utf-8")
    assert "80\u202f000" in page  # thin space groups
    assert Decimal("422.73") == seed_report().headline.romi and "422,73 %" in page
