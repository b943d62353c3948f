"""The rules over the report's figures: ``cpl_spike``, ``spend_without_leads``, ``conversion_drop`` and
``data_quality`` (see ``throughline.alerts.checks``)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from statistics import median
from typing import Any

from throughline.alerts.delivery import Notifier
from throughline.alerts.report_data import HUNDRED, MIN_BASELINE_DAYS, CheckResult, ReportData, _day, _object, _pct
from throughline.alerts.rules import UNMATCHED_SPEND_LIMIT, AlertsConfig
from throughline.report.models import Period, RoiReport

# ---- CPL spike and spend without leads ----------------------------------------------------------------------------


def campaign_days(data: ReportData, day: date, baseline_days: int) -> dict[str, dict[date, Any]]:
    """Campaign row → day → its metrics, for ``day`` and the ``baseline_days`` before (one report per day, over the
    leads created near the window: deals play no part in CPL)."""
    first = day - timedelta(days=baseline_days)
    low, high = (first - timedelta(days=1)).isoformat(), (day + timedelta(days=1)).isoformat()
    leads = [lead for lead in data.leads if low <= str(lead.get("DATE_CREATE") or "")[:10] <= high]
    found: dict[str, dict[date, Any]] = defaultdict(dict)
    labels: dict[str, Any] = {}
    current = first
    while current <= day:
        report = data.build(Period(date_from=current, date_to=current),
                            Period(date_from=current - timedelta(days=1), date_to=current - timedelta(days=1)),
                            leads=leads, deals=[], history=[])  # fmt: skip
        for row in report.rows:
            if row.level != "campaign":
                continue
            key = _object(row.platform or row.source, row.campaign_id or row.campaign)
            found[key][current] = row.metrics
            labels[key] = row
        current += timedelta(days=1)
    return {key: {"row": labels[key], **{d.isoformat(): m for d, m in days.items()}} for key, days in found.items()}


RESTATED_DAYS = 7  # the spend import restates the last 7 days (SPEND_LOOKBACK_DAYS): alerts on them are re-checked
WITHDRAWN = {
    "cpl_spike": "Отбой: после уточнения расхода рост стоимости лида «{campaign}» ({source}) за {day} не подтвердился",
    "spend_without_leads": "Отбой: после уточнения расхода у «{campaign}» ({source}) за {day} нет расхода без лидов",
}


def _cpl_verdict(days: Mapping[str, Any], day: date, spike: Any, idle: Any) -> tuple[str | None, dict[str, Any]]:
    """Which of the two rules ``day``'s figures of one campaign fire, with the message's values."""
    row, today = days["row"], days.get(day.isoformat())
    values: dict[str, Any] = {"campaign": row.campaign or "—", "source": row.source_label or row.source or "—",
                              "day": _day(day)}  # fmt: skip
    if today is None:
        return None, values
    values |= {"spend": today.spend, "leads": today.leads}
    if idle and today.leads == 0 and today.spend > 0 and today.spend >= idle.min_volume.spend:
        return "spend_without_leads", values
    if spike is None or today.cpl is None or spike.threshold is None:
        return None, values
    if today.spend < spike.min_volume.spend or today.leads < spike.min_volume.leads:
        return None, values
    first = (day - timedelta(days=spike.window.baseline_days or 14)).isoformat()
    history = [metrics.cpl for d, metrics in days.items()
               if d != "row" and first <= d < day.isoformat() and metrics.cpl is not None]  # fmt: skip
    if len(history) < MIN_BASELINE_DAYS:
        return None, values
    middle = Decimal(median(history))
    if middle <= 0:
        return None, values
    rise = (today.cpl - middle) / middle * HUNDRED
    if rise < spike.threshold:
        return None, values
    return "cpl_spike", values | {"cpl": today.cpl, "median": middle.quantize(Decimal("0.01")), "rise": _pct(rise)}


def check_cpl(data: ReportData, day: date, config: AlertsConfig, notifier: Notifier, result: CheckResult) -> None:
    """The day's alerts, and for the restated days before it: an alert sent on figures the import has since
    restated (the spike or the idle spend is gone) is withdrawn — its notification replaced through the same TAG."""
    spike, idle = config.rule("cpl_spike"), config.rule("spend_without_leads")
    if spike is None and idle is None:
        return
    baseline = (spike.window.baseline_days if spike else None) or 14
    for key, days in campaign_days(data, day, baseline + RESTATED_DAYS - 1).items():
        for back in range(RESTATED_DAYS - 1, -1, -1):
            checked = day - timedelta(days=back)
            fired, values = _cpl_verdict(days, checked, spike, idle)
            if back == 0 and fired is not None:
                result.send(f"{fired} {key} {checked}", notifier, fired, key, checked.isoformat(), values)
            if back == 0 or (days.get(checked.isoformat()) is None and "row" not in days):
                continue
            for rule_id, text in WITHDRAWN.items():
                if rule_id != fired:
                    outcome = notifier.withdraw(rule_id, key, checked.isoformat(), text.format_map(values))
                    if outcome.sent:
                        result.fired.append(f"withdrawn {rule_id} {key} {checked}")


# ---- conversion drop and data quality ----------------------------------------------------------------------------


def week_report(data: ReportData, day: date, days: int = 7, baseline: int = 28) -> RoiReport:
    period = Period(date_from=day - timedelta(days=days - 1), date_to=day)
    previous = Period(date_from=period.date_from - timedelta(days=baseline), date_to=period.date_from - timedelta(1))
    return data.build(period, previous)


def check_conversion(report: RoiReport, day: date, config: AlertsConfig, notifier: Notifier,
                     result: CheckResult) -> None:  # fmt: skip
    rule = config.rule("conversion_drop")
    if rule is None or rule.threshold is None:
        return
    for row in report.rows:
        if row.level != "source" or row.previous is None:
            continue
        now, before = row.metrics, row.previous
        if now.leads < rule.min_volume.leads or before.leads < rule.min_volume.leads:
            continue
        if now.cr is None or before.cr is None or before.cr <= 0:
            continue
        drop = (before.cr - now.cr) / before.cr * HUNDRED
        if drop >= rule.threshold:
            key = _object(row.channel, row.source)
            values = {"source": row.source_label or row.source, "cr": now.cr, "baseline_cr": before.cr,
                      "drop": _pct(drop), "leads": now.leads, "baseline_leads": before.leads,
                      "date_from": _day(report.period.date_from), "date_to": _day(report.period.date_to)}  # fmt: skip
            result.send(f"conversion_drop {key} {day}", notifier, "conversion_drop", key, day.isoformat(), values)


def check_quality(report: RoiReport, day: date, config: AlertsConfig, notifier: Notifier,
                  result: CheckResult) -> None:  # fmt: skip
    rule = config.rule("data_quality")
    if rule is None or rule.threshold is None:
        return
    quality = report.data_quality
    spend = report.headline.spend
    unmatched = quality.unmatched_spend / spend * HUNDRED if spend > 0 else Decimal(0)
    known = quality.known_source_share
    low_known = quality.leads >= rule.min_volume.leads and known is not None and known < rule.threshold
    if low_known or unmatched > UNMATCHED_SPEND_LIMIT:
        values = {"date_from": _day(report.period.date_from), "date_to": _day(report.period.date_to),
                  "known_share": known if known is not None else "—", "target": rule.threshold,
                  "unmatched_share": _pct(unmatched), "unmatched_limit": UNMATCHED_SPEND_LIMIT}  # fmt: skip
        result.send(f"data_quality {day}", notifier, "data_quality", "portal", day.isoformat(), values)
