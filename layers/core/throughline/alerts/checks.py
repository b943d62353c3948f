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
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from statistics import median
from typing import Any

from throughline.alerts.delivery import DeliveryFailed, Notifier, record_link
from throughline.alerts.rules import UNMATCHED_SPEND_LIMIT, AlertsConfig
from throughline.report.build import build_report, deal_sources
from throughline.report.channels import source_label
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


# ---- stalled deals ------------------------------------------------------------------------------------------------


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def percentile(values: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def stage_stays(history: Iterable[Mapping[str, Any]]) -> dict[int, list[tuple[str, datetime]]]:
    """Deal → its stage entries (stage, entered), oldest first (``crm.stagehistory.list`` of deals)."""
    moves: dict[int, list[tuple[int, datetime, str]]] = defaultdict(list)
    for entry in history:
        moment = _moment(entry.get("CREATED_TIME"))
        if moment is not None:
            moves[int(entry.get("OWNER_ID") or 0)].append((int(entry.get("ID") or 0), moment, str(entry["STAGE_ID"])))
    return {deal: [(stage, moment) for _, moment, stage in sorted(items, key=lambda x: (x[1], x[0]))]
            for deal, items in moves.items()}  # fmt: skip


def check_stalled(data: ReportData, now: datetime, config: AlertsConfig, notifier: Notifier, result: CheckResult,
                  webhook_url: str | None = None) -> None:  # fmt: skip
    rule = config.rule("stalled_deal")
    if rule is None or rule.threshold is None:
        return
    since = now - timedelta(days=rule.window.days)
    stays = stage_stays(data.history)
    samples: dict[str, list[float]] = defaultdict(list)
    for moves in stays.values():
        for (stage, entered), (_, left) in pairwise(moves):
            if since <= left <= now:
                samples[stage].append((left - entered).total_seconds() / 86400)
    names = data.stage_names()
    share = float(rule.threshold) / 100
    for deal in data.deals:
        if deal.get("STAGE_SEMANTIC_ID") not in (None, "", "P"):
            continue
        stage = str(deal.get("STAGE_ID") or "")
        moves = stays.get(int(deal["ID"])) or []
        entered = next((moment for name, moment in reversed(moves) if name == stage), None)
        entered = entered or _moment(deal.get("DATE_CREATE"))
        stage_samples = samples.get(stage) or []
        if entered is None or len(stage_samples) < max(1, rule.min_volume.leads):
            continue
        days = (now - entered).total_seconds() / 86400
        p90 = percentile(stage_samples, share)
        if days > p90:
            deal_id = int(deal["ID"])
            tenth = Decimal("0.1")
            values = {"deal_id": deal_id, "title": deal.get("TITLE") or f"№{deal_id}", "stage": names.get(stage, stage),
                      "days": Decimal(str(days)).quantize(tenth), "p90": Decimal(str(p90)).quantize(tenth),
                      "link": record_link(webhook_url, "deal", deal_id)}  # fmt: skip
            responsible = int(deal.get("ASSIGNED_BY_ID") or 0)
            result.send(
                f"stalled_deal {deal_id}",
                notifier,
                "stalled_deal",
                f"deal:{deal_id}",
                f"{stage}@{entered.isoformat()}",
                values,
                recipients=[responsible] if responsible else [],
            )


# ---- big deals the writer's hook could not judge -----------------------------------------------------------------


def check_big_deals(data: ReportData, day: date, config: AlertsConfig, notifier: Notifier, result: CheckResult,
                    webhook_url: str | None = None) -> None:  # fmt: skip
    """Deals changed on ``day`` whose amount, at the day's rate, reaches the threshold: those in another currency
    than the report's (the writer's hook has no rates) and any the hook missed (out of time, the ledger throttled).
    Once per deal: the ledger key is the hook's own, so a deal it told of is not told again."""
    rule = config.rule("big_deal")
    if rule is None or rule.threshold is None:
        return
    for deal in data.deals:
        changed = str(deal.get("DATE_MODIFY") or deal.get("DATE_CREATE") or "")[:10]
        if changed != day.isoformat():
            continue
        try:
            amount = Decimal(str(deal.get("OPPORTUNITY") or "0"))
        except ArithmeticError:
            continue
        currency = str(deal.get("CURRENCY_ID") or data.rates.currency).upper()
        converted = data.rates.convert(amount, currency, changed)
        if converted is None or converted < rule.threshold:
            continue
        deal_id = int(deal["ID"])
        values = {"deal_id": deal_id, "title": deal.get("TITLE") or f"№{deal_id}", "currency": currency,
                  "amount": f"{amount:,.0f}".replace(",", "\u00a0"),
                  "link": record_link(webhook_url, "deal", deal_id)}  # fmt: skip
        responsible = int(deal.get("ASSIGNED_BY_ID") or 0)
        result.send(f"big_deal {deal_id}", notifier, "big_deal", f"deal:{deal_id}", "once", values,
                    recipients=[responsible] if responsible else [])  # fmt: skip


# ---- lost deals, weekly -------------------------------------------------------------------------------------------


def lost_deals_lines(data: ReportData, week: Period) -> tuple[list[str], int]:
    """«Источник: N (стадия M, …)» per source, most lost first, for deals lost (``CLOSEDATE``) in ``week``."""
    low, high = week.date_from.isoformat(), week.date_to.isoformat()
    lost = [
        deal
        for deal in data.deals
        if deal.get("STAGE_SEMANTIC_ID") == "F" and low <= str(deal.get("CLOSEDATE") or "")[:10] <= high
    ]
    if not lost:
        return [], 0
    sources = deal_sources(lost, leads=data.leads, spend=data.spend, rates=data.rates, options=data.options,
                           period=week)  # fmt: skip
    names = data.stage_names()
    by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for deal in lost:
        _, source = sources[int(deal["ID"])]
        stage = str(deal.get("STAGE_ID") or "")
        by_source[source_label(source)][names.get(stage, stage)] += 1
    lines = []
    for source, reasons in sorted(by_source.items(), key=lambda item: (-sum(item[1].values()), item[0])):
        detail = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
        lines.append(f"{source}: {sum(reasons.values())} ({detail})")
    return lines, len(lost)


def check_lost(data: ReportData, day: date, config: AlertsConfig, notifier: Notifier, result: CheckResult) -> None:
    rule = config.rule("lost_deals")
    if rule is None or day.isoweekday() != 7:
        return
    week = Period(date_from=day - timedelta(days=6), date_to=day)
    lines, total = lost_deals_lines(data, week)
    if not total:
        return
    label = f"{_day(week.date_from)} – {_day(week.date_to)}"
    iso = week.date_from.isocalendar()
    values = {"week": label, "total": total, "lines": "\n".join(lines)}
    result.send(f"lost_deals {label}", notifier, "lost_deals", "portal", f"{iso.year}-W{iso.week:02d}", values)


# ---- hot leads without a first contact ----------------------------------------------------------------------------

CALL, EMAIL = "2", "4"  # crm.enum.activitytype
OWNER_TYPES = {"lead": 1, "deal": 2}  # crm.enum.ownertype


def _owner(obj: str) -> tuple[str, int, str]:
    """``lead:12`` → (``lead``, 1, ``12``); ``deal:5`` (a form's deal in the simple CRM mode) → (``deal``, 2, ``5``)."""
    entity, _, record_id = obj.partition(":")
    entity = entity if entity in OWNER_TYPES else "lead"
    return entity, OWNER_TYPES[entity], record_id


def check_hot_leads(notifier: Notifier, now: datetime, config: AlertsConfig, result: CheckResult,
                    webhook_url: str | None = None) -> None:  # fmt: skip
    """Hot leads past their deadline: a call or e-mail activity on the lead closes it, none tells the supervisors.
    One REST call (a batch) per 50 leads due; none at all when nothing is due."""
    rule = config.rule("hot_lead_missed")
    due = notifier.ledger.due_pending("hot_lead", int(now.timestamp()))
    if not due or notifier.bitrix is None:
        return
    missed: list[tuple[str, str, dict[str, Any]]] = []
    for start in range(0, len(due), 50):
        chunk = due[start : start + 50]
        commands = {
            f"a{index}": ("crm.activity.list", {"filter": {"OWNER_TYPE_ID": _owner(item["obj"])[1],
                                                           "OWNER_ID": _owner(item["obj"])[2],
                                                           "TYPE_ID": [CALL, EMAIL]}, "select": ["ID"]})
            for index, item in enumerate(chunk)
        }  # fmt: skip
        answers = notifier.bitrix.batch(commands)
        for index, item in enumerate(chunk):
            if not answers.get(f"a{index}") and rule is not None:
                entity, _, lead_id = _owner(item["obj"])
                minutes = int((now.timestamp() - float(item.get("created") or item["due_at"])) // 60)
                values = {"lead_id": lead_id, "title": item.get("title") or f"№{lead_id}", "minutes": minutes,
                          "link": record_link(webhook_url, entity, lead_id)}  # fmt: skip
                missed.append((item["obj"], "once", values))
    if missed:
        # One message for the run (one REST call), each lead still claimed once in the ledger.
        try:
            outcome = notifier.send_grouped("hot_lead_missed", missed, header="Лиды без звонка и письма в срок")
        except DeliveryFailed as error:
            result.failed.append(str(error))
            return  # pending items stay: the next run tries again
        if outcome.sent:
            result.fired += [f"hot_lead_missed {obj}" for obj, _, _ in missed]
    told = {obj for obj, _, _ in missed}
    for item in due:
        # A lead another run is still telling (the hourly and 5-minute schedules meet at :00) stays pending: if that
        # run's delivery fails, it releases its claim and this follow-up is what the next run retries from.
        if item["obj"] in told and notifier.ledger.state("hot_lead_missed", item["obj"], "once") == "claimed":
            continue
        notifier.ledger.done_pending("hot_lead", item["obj"])


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
