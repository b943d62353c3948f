"""The rules over deals and leads: ``stalled_deal``, ``big_deal``, ``lost_deals`` and ``hot_lead_missed`` (see
``throughline.alerts.checks``)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

from throughline.alerts.delivery import DeliveryFailed, Notifier, record_link
from throughline.alerts.report_data import CheckResult, ReportData, _day
from throughline.alerts.rules import AlertsConfig
from throughline.report.build import deal_sources
from throughline.report.channels import source_label
from throughline.report.models import Period

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
