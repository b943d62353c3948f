"""The report's offline-conversions section: won deals of the period and what each ad platform was told about them.

Reads the ledger the conversions run exports (``conversions/ledger.json.gz``, one row per won deal × platform × goal;
``throughline.conversions``) — never the journey store or a platform — so the report run stays as fast as it was.
Per platform: the period's won deals and their revenue, how many carried an id the platform joins on, how many were
sent, accepted, rejected (with the platform's reasons), refused (older than the join window), still processing or
not yet delivered; and the share of revenue the platform can see (accepted revenue / revenue).
"""

from __future__ import annotations

import gzip
import html
import json
from collections import Counter
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from throughline.report.models import ConversionReason, ConversionsPlatform, Period, RoiReport
from throughline.report.rates import RateBook

LEDGER_KEY = "conversions/ledger.json.gz"
LABELS = {"yandex_metrica": "Яндекс Метрика", "google_ads": "Google Ads", "vk_ads": "VK Реклама"}
SENT_STATES = frozenset({"sent", "accepted", "rejected"})


def read_ledger(objects: Any) -> list[dict[str, Any]]:
    body = objects.get(LEDGER_KEY)
    if not body:
        return []
    return [json.loads(line) for line in gzip.decompress(body).decode("utf-8").splitlines() if line.strip()]


def conversions_section(
    rows: list[dict[str, Any]], period: Period, zone: ZoneInfo, rates: RateBook
) -> list[ConversionsPlatform]:
    """One entry per platform the ledger names, for the won deals whose win falls in the period."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row.get("kind") != "won" or row.get("platform") not in LABELS:
            continue
        try:
            at = datetime.fromisoformat(str(row["at"]))
            amount = Decimal(str(row.get("amount") or "0"))
        except (KeyError, ValueError, InvalidOperation):
            continue
        if not period.date_from <= at.astimezone(zone).date() <= period.date_to:
            continue
        converted = rates.convert(amount, str(row.get("currency") or rates.currency), at.date().isoformat())
        revenue = converted if converted is not None else Decimal(0)
        figures = found.setdefault(str(row["platform"]), {"deals": set(), "revenue": Decimal(0), "states": Counter(),
                                                          "accepted": Decimal(0), "reasons": Counter()})  # fmt: skip
        entity = str(row.get("entity"))
        if entity in figures["deals"]:
            continue  # one deal sent to two goals of a platform counts once
        figures["deals"].add(entity)
        figures["revenue"] += revenue
        state = str(row.get("state"))
        figures["states"][state] += 1
        if state == "accepted":
            figures["accepted"] += revenue
        if state in ("rejected", "refused") and row.get("reason"):
            figures["reasons"][str(row["reason"])] += 1
    section = []
    for platform in LABELS:
        if platform not in found:
            continue
        figures = found[platform]
        states: Counter = figures["states"]
        revenue: Decimal = figures["revenue"]
        share = (figures["accepted"] / revenue * 100).quantize(Decimal("0.1"), ROUND_HALF_UP) if revenue else None
        section.append(
            ConversionsPlatform(
                platform=platform,
                label=LABELS[platform],
                won_deals=len(figures["deals"]),
                revenue=revenue.quantize(Decimal("0.01"), ROUND_HALF_UP),
                with_identifier=len(figures["deals"]) - states["no_identifier"],
                sent=sum(states[s] for s in SENT_STATES),
                accepted=states["accepted"],
                rejected=states["rejected"],
                refused=states["refused"],
                pending=states["sent"],
                failed=states["failed"] + states["dead"] + states["sending"],
                revenue_accepted=figures["accepted"].quantize(Decimal("0.01"), ROUND_HALF_UP),
                visible_share=share,
                reasons=[ConversionReason(reason=r, count=n) for r, n in figures["reasons"].most_common(10)],
            )
        )
    return section


def with_conversions(report: RoiReport, objects: Any, rates: RateBook) -> RoiReport:
    """The report with its conversions section (unchanged when no conversions run has exported a ledger)."""
    rows = read_ledger(objects)
    if not rows:
        return report
    section = conversions_section(rows, report.period, ZoneInfo(report.timezone), rates)
    return report.model_copy(update={"conversions": section})


def render_section(report: RoiReport) -> str:
    """The HTML panel (empty without a section)."""
    if not report.conversions:
        return ""
    head = ("<tr><th>Платформа</th><th>Выигранные сделки</th><th>Выручка</th><th>С идентификатором</th>"
            "<th>Отправлено</th><th>Принято</th><th>Отклонено</th><th>Не отправлено (старые)</th>"
            "<th>В обработке</th><th>Ждут повтора</th><th>Выручка, видимая платформе</th></tr>")  # fmt: skip
    body = []
    notes = []
    for entry in report.conversions:
        share = f" ({entry.visible_share} %)" if entry.visible_share is not None else ""
        cells = [entry.won_deals, _money(entry.revenue), entry.with_identifier, entry.sent, entry.accepted,
                 entry.rejected, entry.refused, entry.pending, entry.failed]  # fmt: skip
        body.append(
            f'<tr><td class="name">{html.escape(entry.label)}</td>'
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + f"<td>{_money(entry.revenue_accepted)}{share}</td></tr>"
        )
        notes += [f"{html.escape(entry.label)}: {html.escape(r.reason)} — {r.count}" for r in entry.reasons]
    reasons = f"<p>Причины: {'; '.join(notes)}</p>" if notes else ""
    return (
        '<section class="panel" style="margin-top:16px"><h2>Офлайн-конверсии: что рекламные системы узнали о сделках'
        f'</h2><div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'
        f"{reasons}</section>"
    )


def _money(value: Decimal) -> str:
    whole = value.quantize(Decimal(1), ROUND_HALF_UP)
    return f"{whole:,}".replace(",", "\u00a0")
