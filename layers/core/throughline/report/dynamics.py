"""Dynamics: the period's spend, leads, won deals and revenue by day (by ISO week past 62 days), and ROMI by channel
by ISO week — a marketer reads trends before tables.

The builder feeds ``DynamicsBook`` the same figures it adds to its rows (a spend row's kopecks once converted, a lead
of the period on its report-zone day, a won deal of the period on its close day with its revenue), so the points
add up to the headline exactly: the sum of the points' spend is the headline's spend, and so on.

ROMI by channel by week follows DESIGN.md's paid rule: a channel's weekly ROMI counts the revenue of its rows that
carry spend in the period only (the unpaid rest is not mixed in), over that week's spend; a week without spend has no
ROMI (``null``), never a made-up 0 or −100 %.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from throughline.report import metrics
from throughline.report.channels import channel_label
from throughline.report.models import ChannelWeeks, Dynamics, DynamicsPoint, Period, Span

DAILY_LIMIT = 62  # days: a longer period is shown by ISO week
ZERO = Decimal(0)
SPEND, LEADS, WON, REVENUE = range(4)


@dataclass
class _Cells:
    """One row's (campaign's) figures by day ordinal: [spend, leads, won deals, revenue]."""

    row: Any  # the builder's campaign: its ``channel`` and whether it carries spend are read at the end
    days: dict[int, list]


class DynamicsBook:
    """Per row and point; memory grows with rows × points, never with records. Given the period, a day is kept under
    the first day of its point (its ISO week past 62 days): a 365-day period holds 53 cells a row, not 365."""

    def __init__(self, period: Period | None = None) -> None:
        self._rows: dict[int, _Cells] = {}
        weekly = period is not None and period.days > DAILY_LIMIT
        self._weeks = (period.date_from.toordinal(), period.date_to.toordinal()) if weekly else None  # type: ignore[union-attr]

    def _cell(self, row: Any, day: int) -> list:
        cells = self._rows.get(id(row))
        if cells is None:
            cells = self._rows[id(row)] = _Cells(row, {})
        weeks = self._weeks
        if weeks is not None and weeks[0] <= day <= weeks[1]:  # its ISO week's Monday (ordinal 1 is one) or the start
            day = max(day - (day - 1) % 7, weeks[0])
        cell = cells.days.get(day)
        if cell is None:
            cell = cells.days[day] = [ZERO, 0, 0, ZERO]
        return cell

    def add(self, position: int, items: Iterable[tuple[Any, int, Any]]) -> None:
        """Many (row, day ordinal, value) at once, each ``value`` added at ``position`` (``SPEND``, ``LEADS``) of its
        cell: the builder's per-(row, day) sums, in their order."""
        cell = self._cell
        for row, day, value in items:
            cell(row, day)[position] += value

    def won(self, row: Any, day: int, revenue: Decimal) -> None:
        cell = self._cell(row, day)
        cell[WON] += 1
        cell[REVENUE] += revenue

    def section(self, period: Period, carries_spend: Any) -> Dynamics:
        """``carries_spend(row)``: whether a row has spend in the period (the paid rule's test)."""
        return build_section(
            period,
            ((cells.row.channel, carries_spend(cells.row), cells.days) for cells in self._rows.values()),
        )


def buckets(period: Period, weekly: bool) -> list[tuple[date, date, str]]:
    """(first day, last day, label) of each day, or of each ISO week clipped to the period."""
    result = []
    day = period.date_from
    while day <= period.date_to:
        if weekly:
            end = min(day + timedelta(days=6 - day.weekday()), period.date_to)
            year, week, _ = day.isocalendar()
            result.append((day, end, f"{year}-W{week:02d}"))
        else:
            end = day
            result.append((day, day, day.isoformat()))
        day = end + timedelta(days=1)
    return result


def build_section(period: Period, rows: Iterable[tuple[str, bool, dict[int, list]]]) -> Dynamics:
    """``rows``: (channel, carries spend, {day ordinal: [spend, leads, won deals, revenue]}) per row."""
    weekly = period.days > DAILY_LIMIT
    points = buckets(period, weekly)
    weeks = points if weekly else buckets(period, True)
    start = period.date_from.toordinal()
    point_of = _index(points, start)
    week_of = _index(weeks, start)
    totals = [[ZERO, 0, 0, ZERO] for _ in points]
    channels: dict[str, list[list[Decimal]]] = {}  # channel → per week [spend, paid revenue]
    for channel, paid, days in rows:
        for ordinal, cell in days.items():
            offset = ordinal - start
            if not 0 <= offset < len(point_of):
                continue
            total = totals[point_of[offset]]
            for position, value in enumerate(cell):
                total[position] += value
            if cell[SPEND] or paid:
                week = channels.setdefault(channel, [[ZERO, ZERO] for _ in weeks])[week_of[offset]]
                week[0] += cell[SPEND]
                if paid:
                    week[1] += cell[REVENUE]
    spending = {channel: sum((week[0] for week in by_week), ZERO) for channel, by_week in channels.items()}
    order = sorted((channel for channel in channels if spending[channel]), key=lambda c: (-spending[c], c))
    return Dynamics(
        granularity="week" if weekly else "day",
        points=[
            DynamicsPoint(
                date_from=first,
                date_to=last,
                label=label,
                spend=metrics.money(total[SPEND]),
                leads=total[LEADS],
                won_deals=total[WON],
                revenue=metrics.money(total[REVENUE]),
            )
            for (first, last, label), total in zip(points, totals, strict=True)
        ],
        weeks=[Span(date_from=first, date_to=last, label=label) for first, last, label in weeks],
        romi_by_channel=[
            ChannelWeeks(
                channel=channel,
                channel_label=channel_label(channel),
                spend=[metrics.money(week[0]) for week in channels[channel]],
                revenue=[metrics.money(week[1]) for week in channels[channel]],
                romi=[metrics.percent(week[1] - week[0], week[0]) for week in channels[channel]],
            )
            for channel in order
        ],
    )


def _index(points: list[tuple[date, date, str]], start: int) -> list[int]:
    """Day offset from the period's start → the index of the point holding that day."""
    result: list[int] = []
    for index, (first, last, _) in enumerate(points):
        result.extend([index] * ((last - first).days + 1))
    return result


# ---- the page ------------------------------------------------------------------------------------------------------


def chart_data(report: Any) -> dict[str, Any] | None:
    section = getattr(report, "dynamics", None)
    if section is None:
        return None

    def number(value: Decimal | None) -> float | None:
        return None if value is None else float(value)

    return {
        "granularity": section.granularity,
        "labels": [_label(point, section.granularity) for point in section.points],
        "spend": [number(point.spend) for point in section.points],
        "revenue": [number(point.revenue) for point in section.points],
        "leads": [point.leads for point in section.points],
        "won_deals": [point.won_deals for point in section.points],
        "weeks": [_label(week, "week") for week in section.weeks],
        "romi": [
            {"label": row.channel_label, "values": [number(value) for value in row.romi]}
            for row in section.romi_by_channel
        ],
        "currency": report.currency,
    }


def _label(point: DynamicsPoint | Span, granularity: str) -> str:
    if granularity == "day":
        return point.date_from.strftime("%d.%m")
    return f"{point.date_from:%d.%m}–{point.date_to:%d.%m}"


PANEL = """<section class="grid">
 <div class="panel"><h2>Динамика: расход, выручка, лиды и успешные сделки</h2>
  <div class="chart"><canvas id="chart-dynamics"></canvas></div></div>
 <div class="panel"><h2>ROMI каналов с расходом по неделям</h2>
  <div class="chart"><canvas id="chart-romi-weeks"></canvas></div>
  <p class="sub">Выручка строк с расходом к расходу недели; неделя без расхода — пропуск.</p></div>
</section>"""

# Runs after the page's own script (Chart.js loaded); its charts go to window.throughlineDynamicsCharts.
SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent).dynamics;
  window.throughlineDynamicsCharts = [];
  if (!data || typeof Chart === 'undefined') return;
  const money = new Intl.NumberFormat('ru-RU', {maximumFractionDigits: 0});
  const palette = ['#2f6fed', '#178a4c', '#e09b2d', '#7a4fd6', '#c8372d', '#5b6478', '#9db7f5', '#7fc8a0'];
  const some = values => values.some(v => v !== null && v !== 0);
  function add(id, config, hasData) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    if (!hasData) {
      const note = document.createElement('div');
      note.className = 'empty';
      note.textContent = 'Нет данных за период';
      canvas.replaceWith(note);
      return;
    }
    window.throughlineDynamicsCharts.push(new Chart(canvas, config));
  }
  add('chart-dynamics', {type: 'bar', data: {labels: data.labels, datasets: [
      {type: 'line', label: 'Расход', data: data.spend, borderColor: '#c8372d', backgroundColor: '#c8372d',
       yAxisID: 'money', tension: 0.2, pointRadius: 2},
      {type: 'line', label: 'Выручка', data: data.revenue, borderColor: '#178a4c', backgroundColor: '#178a4c',
       yAxisID: 'money', tension: 0.2, pointRadius: 2},
      {label: 'Лиды', data: data.leads, backgroundColor: '#9db7f5', yAxisID: 'count'},
      {label: 'Успешные сделки', data: data.won_deals, backgroundColor: '#2f6fed', yAxisID: 'count'}]},
    options: {maintainAspectRatio: false, interaction: {mode: 'index', intersect: false},
      plugins: {legend: {position: 'bottom'}, tooltip: {callbacks: {label: c => c.dataset.label + ': '
        + money.format(c.raw) + (c.dataset.yAxisID === 'money' ? ' ' + data.currency : '')}}},
      scales: {money: {position: 'left', ticks: {callback: v => money.format(v)}},
               count: {position: 'right', grid: {drawOnChartArea: false}, ticks: {precision: 0}}}}},
    some(data.spend) || some(data.revenue) || some(data.leads) || some(data.won_deals));
  add('chart-romi-weeks', {type: 'line', data: {labels: data.weeks, datasets: data.romi.map((row, i) => ({
      label: row.label, data: row.values, borderColor: palette[i % palette.length],
      backgroundColor: palette[i % palette.length], spanGaps: false, tension: 0.2, pointRadius: 3}))},
    options: {maintainAspectRatio: false, plugins: {legend: {position: 'bottom'}, tooltip: {callbacks: {
      label: c => c.dataset.label + ': ' + (c.raw === null ? 'нет расхода' : money.format(c.raw) + ' %')}}},
      scales: {y: {ticks: {callback: v => v + ' %'}}}}},
    data.romi.some(row => some(row.values)));
})();
"""
