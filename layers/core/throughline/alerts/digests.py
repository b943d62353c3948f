"""The daily, weekly and monthly digests (``send_digests``): the contents seed 001 lists, built by ``build_report``.

- daily (09:00): yesterday's new leads, deals won (and their revenue) and lost, spend and CPL, by source;
- weekly (Monday): last week's campaigns (spend, leads, CPL, won, ROMI; the ten that spent most), the deal funnel
  (records that reached each stage), the managers (deals created, won, revenue, lost; by ``ASSIGNED_BY_ID``);
- monthly (the 1st): last month's spend, revenue, ROMI and ROI by channel against the month before.

Each digest goes out once per period (the ledger) and ends with the link to the report opened in Bitrix24
(``settings.report_url`` of the rules file), never a presigned S3 URL.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from throughline.alerts.checks import ReportData
from throughline.alerts.rules import format_number
from throughline.report.models import MetricValues, Period, RoiReport

KINDS = ("daily", "weekly", "monthly")


def money(value: Decimal | None) -> str:
    return "—" if value is None else f"{format_number(value, 0)} ₽"


def pct(value: Decimal | None) -> str:
    return "—" if value is None else f"{format_number(value, 1)} %"


def change(value: Decimal | None, unit: str = "%") -> str:
    if value is None:
        return ""
    sign = "+" if value > 0 else ("−" if value < 0 else "±")
    return f" ({sign}{format_number(abs(value), 1)} {'п.п.' if unit == 'pp' else '%'})"


def periods(kind: str, day: date) -> tuple[Period, Period, str]:
    """The period a digest sent on ``day`` covers, the one it is compared with, and its ledger key."""
    if kind == "daily":
        covered = day - timedelta(days=1)
        before = covered - timedelta(days=1)
        return Period(date_from=covered, date_to=covered), Period(date_from=before, date_to=before), covered.isoformat()
    if kind == "weekly":
        monday = day - timedelta(days=day.weekday() + 7)
        week = Period(date_from=monday, date_to=monday + timedelta(days=6))
        iso = monday.isocalendar()
        before = Period(date_from=monday - timedelta(days=7), date_to=monday - timedelta(days=1))
        return week, before, f"{iso.year}-W{iso.week:02d}"
    if kind == "monthly":
        end = day.replace(day=1) - timedelta(days=1)
        month = Period(date_from=end.replace(day=1), date_to=end)
        before_end = month.date_from - timedelta(days=1)
        return month, Period(date_from=before_end.replace(day=1), date_to=before_end), end.strftime("%Y-%m")
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


def _dates(period: Period) -> str:
    if period.date_from == period.date_to:
        return period.date_from.strftime("%d.%m.%Y")
    return f"{period.date_from.strftime('%d.%m')} – {period.date_to.strftime('%d.%m.%Y')}"


def _lost(data: ReportData, period: Period) -> list[dict[str, Any]]:
    low, high = period.date_from.isoformat(), period.date_to.isoformat()
    return [
        deal
        for deal in data.deals
        if deal.get("STAGE_SEMANTIC_ID") == "F" and low <= str(deal.get("CLOSEDATE") or "")[:10] <= high
    ]


def _figures(metrics: MetricValues) -> str:
    return (f"лидов {metrics.leads}, выиграно {metrics.won_deals} на {money(metrics.revenue)}, "
            f"расход {money(metrics.spend)}, CPL {money(metrics.cpl)}")  # fmt: skip


def daily(report: RoiReport, data: ReportData) -> str:
    head = report.headline
    lost = _lost(data, report.period)
    lines = [
        f"Ежедневный отчёт за {_dates(report.period)}",
        f"Новых лидов: {head.leads}{change(report.headline_change.leads_pct)}",
        f"Сделок выиграно: {head.won_deals} на {money(head.revenue)}; проиграно: {len(lost)}",
        f"Расход: {money(head.spend)}{change(report.headline_change.spend_pct)}; CPL: {money(head.cpl)}",
        "По источникам:",
    ]
    sources = [row for row in report.rows if row.level == "source" and (row.metrics.leads or row.metrics.spend
                                                                        or row.metrics.won_deals)]  # fmt: skip
    sources.sort(key=lambda row: (-row.metrics.leads, -row.metrics.spend, row.source_label or ""))
    lines += [
        f"• {row.source_label or row.source} ({row.channel_label}): {_figures(row.metrics)}" for row in sources
    ] or ["• нет данных"]
    return "\n".join(lines)


def weekly(report: RoiReport, data: ReportData, users: Mapping[str, str]) -> str:
    lines = [f"Еженедельный отчёт за {_dates(report.period)}", "Кампании (расход, лиды, CPL, выиграно, ROMI):"]
    campaigns = [row for row in report.rows if row.level == "campaign" and (row.metrics.spend or row.metrics.leads)]
    campaigns.sort(key=lambda row: (-row.metrics.spend, -row.metrics.leads))
    for row in campaigns[:10]:
        m = row.metrics
        lines.append(f"• {row.source_label or row.source} «{row.campaign}»: {money(m.spend)}, {m.leads}, "
                     f"{money(m.cpl)}, {m.won_deals}, {pct(m.romi)}")  # fmt: skip
    if len(campaigns) > 10:
        lines.append(f"• и ещё {len(campaigns) - 10}")
    if not campaigns:
        lines.append("• нет данных")
    for pipeline in report.funnels:
        if pipeline.entity != "deal" or not pipeline.total:
            continue
        stages = ", ".join(f"{stage.name} {stage.reached}" for stage in pipeline.stages if stage.semantics != "failure")
        lines.append(f"Воронка «{pipeline.name}»: {pipeline.total} сделок; дошли до этапов: {stages}; "
                     f"проиграно {pipeline.lost}")  # fmt: skip
    lines.append("Менеджеры (сделок создано; закрыто за неделю: выиграно, выручка, проиграно):")
    low, high = report.period.date_from.isoformat(), report.period.date_to.isoformat()
    created: Counter[str] = Counter()
    won: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    revenue: dict[str, Decimal] = defaultdict(Decimal)
    for deal in data.deals:
        who = str(deal.get("ASSIGNED_BY_ID") or "")
        closed = str(deal.get("CLOSEDATE") or "")[:10]
        if low <= str(deal.get("DATE_CREATE") or "")[:10] <= high:
            created[who] += 1
        if low <= closed <= high and deal.get("STAGE_SEMANTIC_ID") == "S":
            won[who] += 1
            amount = data.rates.convert(Decimal(str(deal.get("OPPORTUNITY") or 0)), str(deal.get("CURRENCY_ID") or ""),
                                        closed)  # fmt: skip
            revenue[who] += amount or 0
        if low <= closed <= high and deal.get("STAGE_SEMANTIC_ID") == "F":
            lost[who] += 1
    people = sorted(set(created) | set(won) | set(lost), key=lambda who: (-revenue[who], -won[who], who))
    for who in people:
        name = users.get(who) or ("не назначен" if not who else f"пользователь {who}")
        lines.append(f"• {name}: {created[who]}, {won[who]}, {money(revenue[who])}, {lost[who]}")
    if not people:
        lines.append("• нет сделок")
    return "\n".join(lines)


def monthly(report: RoiReport) -> str:
    head, before, delta = report.headline, report.headline_previous, report.headline_change
    lines = [
        f"Ежемесячный отчёт за {report.period.date_from.strftime('%m.%Y')} (против {_dates(report.previous_period)})",
        f"Расход: {money(head.spend)}{change(delta.spend_pct)}",
        f"Выручка: {money(head.revenue)}{change(delta.revenue_pct)}",
        f"ROMI: {pct(head.romi)}{change(delta.romi_pp, 'pp')}; ROI: {pct(head.roi)} (месяцем ранее {pct(before.roi)})",
        "По каналам (расход, выручка, ROMI, ROI; месяцем ранее):",
    ]
    channels = [row for row in report.rows if row.level == "channel" and (row.metrics.spend or row.metrics.revenue)]
    channels.sort(key=lambda row: (-row.metrics.spend, -row.metrics.revenue))
    for row in channels:
        m, p = row.metrics, row.previous
        earlier = f"; было {money(p.spend)}, {money(p.revenue)}, {pct(p.romi)}" if p is not None else ""
        lines.append(f"• {row.channel_label}: {money(m.spend)}, {money(m.revenue)}, {pct(m.romi)}, {pct(m.roi)}"
                     f"{earlier}")  # fmt: skip
    if not channels:
        lines.append("• нет данных")
    return "\n".join(lines)


def digest_text(kind: str, day: date, data: ReportData, *, users: Mapping[str, str] | None = None,
                report_url: str | None = None, note: str | None = None) -> tuple[str, str]:  # fmt: skip
    """(the digest's text, its ledger period) for a digest sent on ``day``; ``note`` goes right under the title."""
    period, previous, key = periods(kind, day)
    report = data.build(period, previous)
    if kind == "daily":
        text = daily(report, data)
    elif kind == "weekly":
        text = weekly(report, data, users or {})
    else:
        text = monthly(report)
    if note:
        title, _, rest = text.partition("\n")
        text = f"{title}\n{note}\n{rest}"
    if report_url:
        text += f"\nОтчёт: {report_url}"
    return text, key


def user_names(client: Any) -> dict[str, str]:
    """Active users' names by id (``user.get``, 50 a page): one REST call on most portals."""
    names: dict[str, str] = {}
    start: int | None = 0
    while start is not None:
        page = client.call("user.get", {"filter": {"ACTIVE": True}, "start": start})
        for user in page.result or []:
            names[str(user.get("ID"))] = " ".join(part for part in (user.get("NAME"), user.get("LAST_NAME")) if part)
        start = page.next
    return names


def send_digest(kind: str, day: date, data: ReportData | None, notifier: Any,
                users: Callable[[], Mapping[str, str]] | None = None, *,
                note: str | None = None) -> dict[str, Any]:  # fmt: skip
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if data is None:
        return {"kind": kind, "sent": False, "why": "no report run yet (crm/snapshot/dictionaries.json)"}
    rule = notifier.config.rule(f"digest_{kind}")
    if rule is None:
        return {"kind": kind, "sent": False, "why": "off in the rules file"}
    names = users() if kind == "weekly" and users is not None else {}
    text, key = digest_text(kind, day, data, users=names, report_url=notifier.config.settings.report_url, note=note)
    outcome = notifier.send(f"digest_{kind}", "portal", key, {"text": text}, subject=text.splitlines()[0])
    return {"kind": kind, "period": key, "sent": outcome.sent, "channel": outcome.channel, "why": outcome.skipped,
            "text": text}  # fmt: skip
