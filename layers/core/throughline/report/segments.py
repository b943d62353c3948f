"""The report's segments section (issue 18): customers per segment and their change over the period, and per segment
the conversion, average check, purchase frequency and revenue of the period, with the matrix of moves.

Read from what the segments job stores (``throughline.segments.job``): the segments snapshot of the night after the
period's last day (the latest on or before it) and of the period's first night (the latest on or before it), and the
moves of the nights in between. A customer's deals are those the segments job gives it (a deal with ``COMPANY_ID``
belongs to the company, else to its contact); a won deal's day is the report's (``report.build.won_day``:
``CLOSEDATE``, else its last move into a success stage, never ``DATE_MODIFY``). Per segment, at the period's end:
conversion = customers with a won deal in the period / customers; average check = revenue / won deals with revenue (a
win whose amount is empty, negative, not a number or has no rate is a won deal without revenue, left out of the
average check as in the report); purchase frequency = won deals / customers who bought.

Acquisition cost per segment (CAC) follows the report's own CAC and paid rule: a new customer of the period is one
whose first won deal ever falls in it (the report's count: the contact, without one the company); each costs the CAC
of the source row its first won deal belongs to (its lead's tags, else its own, else ``SOURCE_ID``) — the source's
spend / the new customers of its campaign rows that carry spend — when that deal's campaign row carries spend, and
nothing otherwise (a new customer with no paid source is counted, not paid for). Per segment (the customer's segment
at the period's end; a B2B deal's customer is its company): new customers — the segment's customers holding at least
one of the report's new customers (the report counts by contact: two contacts of one company who each buy for the
first time are two of the report's, one of the company's segment) — paid new customers (holding at least one paid
for), the spend attributed to them (the sum of all their acquisitions' CACs, so no spend is lost) and CAC = that
spend / paid new customers; «—» without one. Spend of sources that acquired no new
customer in the period is attributed to no segment (as the report's CAC does not spread it either).

A hook, not a rewrite: ``report/job.py`` attaches the section to the built report, ``render.py`` shows it.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

SNAPSHOTS = "segments/snapshot="
TRANSITIONS = "segments/transitions/date="
NONE = "Без сегмента"


def _plain(value: Decimal) -> str:
    return format(value, "f")


Number = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]
CENT = Decimal("0.01")


def _cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(CENT, ROUND_HALF_UP)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SegmentRow(_Model):
    code: str | None = Field(description="the segment's code (XML_ID in Bitrix24); null: customers with none")
    label: str
    customers: int = Field(description="customers in the segment at the period's end")
    customers_start: int = Field(description="customers in the segment at the period's start")
    change: int
    buyers: int = Field(description="of them, customers with a won deal in the period")
    won_deals: int
    revenue: Number
    conversion: Number | None = Field(description="buyers / customers, in per cent")
    average_check: Number | None = Field(description="revenue / won deals")
    frequency: Number | None = Field(description="won deals / buyers")
    new_customers: int = Field(description="customers of the segment holding one of the report's new customers of the "
                               "period (a company whose contacts bought first counts once)")  # fmt: skip
    paid_new_customers: int = Field(description="of them, those with an acquisition through a source row with spend")
    acquisition_spend: Number | None = Field(description="spend attributed: the sum of their sources' CAC")
    cac: Number | None = Field(description="acquisition_spend / paid_new_customers")


class SegmentMove(_Model):
    from_label: str
    to_label: str
    customers: int


class SegmentsSection(_Model):
    snapshot: str = Field(description="the segments snapshot (night) the period's end is read from")
    start_snapshot: str | None = Field(description="the one its start is read from; null when none is that old")
    rows: list[SegmentRow]
    moves: list[SegmentMove] = Field(description="moves between segments during the period, largest first")


def _days(objects: Any, prefix: str) -> list[str]:
    found = set()
    for key in objects.keys(prefix):
        day = key[len(prefix) :].split("/", 1)[0]
        try:
            date.fromisoformat(day)
        except ValueError:
            continue
        found.add(day)
    return sorted(found)


def _latest(days: list[str], until: date) -> str | None:
    eligible = [day for day in days if day <= until.isoformat()]
    return eligible[-1] if eligible else None


def segments_section(
    objects: Any,
    period: Any,
    deals: Iterable[Mapping[str, Any]],
    *,
    convert: Callable[[Decimal, str, str], Decimal | None],
    zone: ZoneInfo,
    labels: Mapping[str, str],
    wins: Mapping[int, str],
    acquisitions: Mapping[int, Decimal | None] | None = None,
) -> SegmentsSection | None:
    """The section, or None before the segments job's first night. ``wins``: each deal's last move into a success
    stage (``report.build.last_wins`` of the stage history), the day of a won deal without ``CLOSEDATE``.
    ``acquisitions``: ``build_report``'s new customers of the period (first won deal ID → its source's CAC or None)."""
    from throughline.report import jsonlines
    from throughline.report.build import won_day

    days = _days(objects, SNAPSHOTS)
    end_day = _latest(days, period.date_to + timedelta(days=1))
    if end_day is None:
        return None
    start_day = _latest(days, period.date_from)

    def rows_of(day: str | None) -> dict[str, str | None]:
        if day is None:
            return {}
        body = objects.get(f"{SNAPSHOTS}{day}/customers.json.gz") or b""
        return {row["customer"]: row.get("segment") for row in jsonlines.decode(body)} if body else {}

    end, start = rows_of(end_day), rows_of(start_day)
    won: dict[str, list[Decimal | None]] = {}  # customer → the amount of each won deal (None: no revenue)
    # Segment customer → the CACs of the report's new customers it holds (None: not paid). The report counts by
    # contact, the segments by company: two contacts of one company acquired in the period are one new customer of
    # the company's segment, carrying both costs.
    acquired: dict[str, list[Decimal | None]] = {}
    for deal in deals:
        if acquisitions and int(deal.get("ID") or 0) in acquisitions:
            company, contact = int(deal.get("COMPANY_ID") or 0), int(deal.get("CONTACT_ID") or 0)
            key = f"company:{company}" if company else f"contact:{contact}" if contact else ""
            if key in end:
                acquired.setdefault(key, []).append(acquisitions[int(deal["ID"])])
        if str(deal.get("STAGE_SEMANTIC_ID") or "") != "S":
            continue
        day = won_day(deal, wins, zone)
        if day is None or not period.date_from <= day <= period.date_to:
            continue
        company, contact = int(deal.get("COMPANY_ID") or 0), int(deal.get("CONTACT_ID") or 0)
        key = f"company:{company}" if company else f"contact:{contact}" if contact else ""
        if key not in end:
            continue
        try:
            amount: Decimal | None = Decimal(str(deal.get("OPPORTUNITY")))
        except (InvalidOperation, ValueError):
            amount = None
        if amount is not None and (not amount.is_finite() or amount <= 0):
            amount = None
        converted = None if amount is None else convert(amount, str(deal.get("CURRENCY_ID") or ""), day.isoformat())
        won.setdefault(key, []).append(converted)
    codes = list(labels) + sorted({code for code in (*end.values(), *start.values()) if code and code not in labels})
    rows = []
    for code in [*codes, None]:
        members = [key for key, segment in end.items() if (segment or None) == code]
        before = sum(1 for segment in start.values() if (segment or None) == code)
        buyers = [key for key in members if key in won]
        deals_won = sum(len(won[key]) for key in buyers)
        with_revenue = sum(1 for key in buyers for amount in won[key] if amount is not None)
        revenue = sum((amount for key in buyers for amount in won[key] if amount is not None), Decimal(0))
        new = [acquired[key] for key in members if key in acquired]
        paid = [[cost for cost in costs if cost is not None] for costs in new]
        paid = [costs for costs in paid if costs]
        spent = sum((cost for costs in paid for cost in costs), Decimal(0))
        rows.append(
            SegmentRow(
                code=code,
                label=labels.get(code, code) if code else NONE,
                customers=len(members),
                customers_start=before,
                change=len(members) - before,
                buyers=len(buyers),
                won_deals=deals_won,
                revenue=_cents(revenue),
                conversion=_cents(Decimal(len(buyers) * 100) / len(members)) if members else None,
                average_check=_cents(revenue / with_revenue) if with_revenue else None,
                frequency=_cents(Decimal(deals_won) / len(buyers)) if buyers else None,
                new_customers=len(new),
                paid_new_customers=len(paid),
                acquisition_spend=_cents(spent) if paid else None,
                cac=_cents(spent / len(paid)) if paid else None,
            )
        )
    matrix: dict[tuple[str, str], int] = {}
    for day in _days(objects, TRANSITIONS):
        if not (period.date_from.isoformat() < day <= end_day):
            continue
        for move in jsonlines.decode(objects.get(f"{TRANSITIONS}{day}/transitions.json.gz") or b""):
            source, target = move.get("from"), move.get("to")
            pair = (labels.get(source, source) or NONE, labels.get(target, target) or NONE)
            matrix[pair] = matrix.get(pair, 0) + 1
    moves = [SegmentMove(from_label=a, to_label=b, customers=n) for (a, b), n in
             sorted(matrix.items(), key=lambda item: (-item[1], item[0]))]  # fmt: skip
    return SegmentsSection(snapshot=end_day, start_snapshot=start_day, rows=rows, moves=moves)


def render_segments(section: SegmentsSection | None, fmt: Callable[[Any, str], str]) -> str:
    """The HTML panel: a bar per segment (customers at the end, the change beside it), the table, the moves."""
    if section is None:
        return ""
    top = max((row.customers for row in section.rows), default=0) or 1
    bars = "".join(
        f'<div class="segbar"><span class="name">{html.escape(row.label)}</span>'
        f'<span class="bar" style="width:{60 * row.customers / top:.1f}%"></span>'
        f"<span>{fmt(row.customers, 'int')} ({'+' if row.change > 0 else ''}{fmt(row.change, 'int')})</span></div>"
        for row in section.rows
    )
    body = "".join(
        f'<tr><td class="name">{html.escape(row.label)}</td><td>{fmt(row.customers, "int")}</td>'
        f"<td>{'+' if row.change > 0 else ''}{fmt(row.change, 'int')}</td><td>{fmt(row.conversion, 'pct')}</td>"
        f"<td>{fmt(row.average_check, 'money')}</td><td>{fmt(row.frequency, 'plain')}</td>"
        f"<td>{fmt(row.revenue, 'money')}</td><td>{fmt(row.paid_new_customers, 'int')} из "
        f"{fmt(row.new_customers, 'int')}</td><td>{fmt(row.cac, 'money')}</td></tr>"
        for row in section.rows
    )
    moves = "".join(
        f"<tr><td>{html.escape(move.from_label)}</td><td>{html.escape(move.to_label)}</td>"
        f"<td>{fmt(move.customers, 'int')}</td></tr>"
        for move in section.moves
    )
    since = f" (изменение с {html.escape(section.start_snapshot)})" if section.start_snapshot else ""
    return (
        '<section class="panel" style="margin-top:16px"><h2>Сегменты клиентов</h2>'
        f'<p class="sub">На {html.escape(section.snapshot)}{since}</p>'
        f'<div class="segbars">{bars}</div>'
        '<div class="scroll"><table><thead><tr><th>Сегмент</th><th>Клиенты</th><th>Изменение</th><th>Конверсия</th>'
        "<th>Средний чек</th><th>Частота покупок</th><th>Выручка</th><th>Новые клиенты (с расходом)</th>"
        f"<th>CAC</th></tr></thead><tbody>{body}</tbody></table></div>"
        + (
            '<h3>Переходы между сегментами</h3><div class="scroll"><table><thead><tr><th>Из</th><th>В</th>'
            f"<th>Клиенты</th></tr></thead><tbody>{moves}</tbody></table></div>"
            if moves
            else '<p class="sub">Переходов за период нет.</p>'
        )
        + "<style>.segbar{display:flex;gap:8px;align-items:center;margin:4px 0}.segbar .name{width:140px}"
        ".segbar .bar{height:14px;background:#2f6fed;border-radius:3px;display:inline-block}</style></section>"
    )
