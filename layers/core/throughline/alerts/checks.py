"""The schedule-based rules (``check_alerts``), computed by the report's own builder over the CRM snapshot and spend.

Nothing here counts differently from the ROI report: every figure is a ``build_report`` over the snapshot the nightly
report refreshed (``crm/snapshot/``), the spend in ``spend/`` and the rates — over the window each rule needs — with
the report's options (``report.job.report_options``). The day checked is a complete day (yesterday by default), never
today: a day still filling up never fires. Each alert is sent once per (rule, object, period) by the ledger, so the
hourly rerun and the 7-day spend restatement never send it twice.

- ``cpl_spike`` (per campaign row): the day's CPL against the median of the daily CPLs of the 14 days before (days
  with spend and leads; at least ``MIN_BASELINE_DAYS`` of them), above ``threshold`` % with the minimum spend and
  leads; ``spend_without_leads``: the day's spend at or above the minimum and not one lead.
- ``conversion_drop`` (per source row): the report's cohort CR over the 7 days ending on the day against the 28 days
  before, a relative drop of ``threshold`` % or more, with ``min_volume.leads`` in both windows.
- ``data_quality``: the same 7-day report's data quality — the share of leads with a known source under
  ``threshold`` %, or unmatched spend over 10 % of spend.
- ``stalled_deal`` (per open deal): days in its current stage (from the stage history) above that stage's 90th
  percentile of the stays that ended in the last 90 days (at least ``min_volume.leads`` of them).
- ``big_deal`` (per deal changed on the day): the amount at the day's rate at or above ``threshold`` — deals in
  another currency (the writer's hook has no rates) and any the hook missed; the hook's own ledger key.
- ``lost_deals`` (weekly, when the day checked is a Sunday): the week's lost deals per source (the report's row of
  each deal) and failure stage.
- ``hot_lead_missed``: hot leads whose deadline passed with no call or e-mail activity: the supervisors are told.

The rules live in ``report_checks`` (over the report's figures) and ``deal_checks`` (over deals and leads), what they
read in ``report_data``; ``run_checks`` runs them all, and every name is importable from here as before.
"""

from __future__ import annotations

from datetime import date, datetime

from throughline.alerts.deal_checks import (  # noqa: F401  (re-exported: callers import them from here)
    OWNER_TYPES,
    check_big_deals,
    check_hot_leads,
    check_lost,
    check_stalled,
    lost_deals_lines,
    percentile,
    stage_stays,
)
from throughline.alerts.delivery import Notifier
from throughline.alerts.report_checks import (  # noqa: F401
    RESTATED_DAYS,
    WITHDRAWN,
    campaign_days,
    check_conversion,
    check_cpl,
    check_quality,
    week_report,
)
from throughline.alerts.report_data import (  # noqa: F401
    HUNDRED,
    MIN_BASELINE_DAYS,
    CheckResult,
    ReportData,
    load_report_data,
)
from throughline.alerts.rules import AlertsConfig

# ---- one run ------------------------------------------------------------------------------------------------------


def run_checks(
    data: ReportData | None,
    day: date,
    now: datetime,
    config: AlertsConfig,
    notifier: Notifier,
    *,
    webhook_url: str | None = None,
) -> CheckResult:
    """Every schedule-based rule for the complete ``day`` (and, for stalled deals and hot leads, ``now``)."""
    result = CheckResult()
    check_hot_leads(notifier, now, config, result, webhook_url)
    if data is None:
        return result
    check_cpl(data, day, config, notifier, result)
    if config.rule("conversion_drop") or config.rule("data_quality"):
        rule = config.rule("conversion_drop")
        days = rule.window.days if rule else 7
        baseline = (rule.window.baseline_days if rule else None) or 28
        report = week_report(data, day, days, baseline)
        check_conversion(report, day, config, notifier, result)
        check_quality(report, day, config, notifier, result)
    check_stalled(data, now, config, notifier, result, webhook_url)
    check_big_deals(data, day, config, notifier, result, webhook_url)
    check_lost(data, day, config, notifier, result)
    return result
