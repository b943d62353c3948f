"""Bitrix24's own CRM forms in the report: their tags are the lead's row, and untagged ones show in data quality."""

from __future__ import annotations

from tests.unit.test_report_build import build, lead, row
from throughline.report.render import render_html


def test_webform_leads_use_their_tags_and_untagged_ones_are_counted():
    leads = [
        lead(SOURCE_ID="WEBFORM", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="okna"),
        lead(SOURCE_ID="WEBFORM", UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="okna"),
        lead(SOURCE_ID="WEBFORM", UTM_CAMPAIGN="only_a_campaign"),  # no source or medium: the ad is unknown
        lead(SOURCE_ID="WEBFORM"),
        lead(SOURCE_ID="CALL"),  # not a form
        lead(SOURCE_ID="WEBFORM", day="2026-10-20"),  # the previous period's
    ]
    report = build(leads, [], [])
    assert row(report, "campaign", source="yandex", campaign="okna").metrics.leads == 2
    assert report.data_quality.webform_leads_without_tags == 2
    assert "Лидов из CRM-форм Битрикс24 без UTM-меток: <b>2</b>" in render_html(report).decode()
