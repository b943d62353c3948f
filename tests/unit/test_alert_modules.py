"""throughline.alerts.checks split along its seams (inputs, rules over the report's figures, rules over deals and
leads): each part stays readable, and every name callers imported from ``checks`` still comes from there."""

from __future__ import annotations

from pathlib import Path

import throughline.alerts.checks as checks

ALERTS = Path(checks.__file__).parent
NAMES = ("ReportData", "CheckResult", "load_report_data", "run_checks", "percentile", "stage_stays", "campaign_days",
         "week_report", "lost_deals_lines", "check_cpl", "check_conversion", "check_quality", "check_stalled",
         "check_big_deals", "check_lost", "check_hot_leads", "MIN_BASELINE_DAYS", "RESTATED_DAYS", "WITHDRAWN",
         "OWNER_TYPES")  # fmt: skip


def test_the_checks_are_split_and_every_name_is_still_importable_from_checks() -> None:
    for name in ("checks", "report_data", "report_checks", "deal_checks"):
        lines = (ALERTS / f"{name}.py").read_text().count("\n")
        assert lines <= 250, (name, lines)
    assert [name for name in NAMES if not hasattr(checks, name)] == []
