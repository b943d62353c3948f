"""What the schedule-based rules (``check_alerts``) and the digests read: the report's inputs, read once per run, and
a run's tally of what fired."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from throughline.alerts.delivery import DeliveryFailed, Notifier
from throughline.report.build import build_report
from throughline.report.funnel import StageBook
from throughline.report.models import Period, RoiReport
from throughline.report.rates import RateBook

MIN_BASELINE_DAYS = 3  # days with a CPL among the 14 before: fewer, and there is no median worth comparing with
HUNDRED = Decimal(100)


@dataclass
class ReportData:
    """What the report builds from, read once per run."""

    leads: list[dict[str, Any]]
    deals: list[dict[str, Any]]
    history: list[dict[str, Any]]
    spend: list[dict[str, Any]]
    rates: RateBook
    statuses: list[dict[str, Any]]
    options: Any  # report.build.ReportOptions
    crm_info: dict[str, Any] = field(default_factory=dict)

    def build(self, period: Period, previous: Period, *, leads: Iterable | None = None, deals: Iterable | None = None,
              history: Iterable | None = None) -> RoiReport:  # fmt: skip
        low, high = previous.date_from.isoformat(), period.date_to.isoformat()
        return build_report(
            period=period,
            previous=previous,
            leads=self.leads if leads is None else leads,
            deals=self.deals if deals is None else deals,
            stage_history=list(self.history if history is None else history),
            spend=[row for row in self.spend if low <= str(row["date"])[:10] <= high],
            rates=self.rates,
            stages=StageBook(self.statuses),
            options=self.options,
            crm_info=self.crm_info,
            now=lambda: datetime(2000, 1, 1),
        )

    def stage_names(self) -> dict[str, str]:
        return {str(row.get("STATUS_ID")): str(row.get("NAME") or row.get("STATUS_ID")) for row in self.statuses}


def load_report_data(settings: Any, objects: Any, day: date) -> ReportData | None:
    """The snapshot, spend (35 days up to ``day``) and rates, or ``None`` before the first report run."""
    from throughline.adapters.report_store import read_rates, read_spend
    from throughline.report.crm import HISTORY, read_snapshot
    from throughline.report.job import DICTIONARIES_KEY, report_options

    raw = objects.get(DICTIONARIES_KEY)
    if raw is None:
        return None
    dictionaries = json.loads(raw)
    earliest = day - timedelta(days=35)
    return ReportData(
        leads=list(read_snapshot(objects, "lead")),
        deals=list(read_snapshot(objects, "deal")),
        history=list(read_snapshot(objects, HISTORY)),
        spend=list(read_spend(objects, earliest, day)),
        rates=RateBook(settings.report_currency, read_rates(objects, earliest, day), dictionaries.get("currencies")),
        statuses=dictionaries.get("statuses") or [],
        options=report_options(settings, dictionaries.get("info") or {}),
        crm_info=dictionaries.get("info") or {},
    )


@dataclass
class CheckResult:
    fired: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def send(self, label: str, notifier: Notifier, *args: Any, **options: Any) -> None:
        """``notifier.send(*args, **options)``; what fired is listed, a delivery that failed everywhere too."""
        try:
            outcome = notifier.send(*args, **options)
        except DeliveryFailed as error:
            self.failed.append(str(error))
            return
        if outcome.sent:
            self.fired.append(label)


def _day(value: date) -> str:
    return value.strftime("%d.%m.%Y")


def _pct(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"))


def _object(*parts: Any) -> str:
    return ":".join(str(part or "-").replace("|", "/") for part in parts)[:400]
