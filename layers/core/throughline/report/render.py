"""The report's three files: ``roi.json`` (everything), ``roi.csv`` (the main table) and ``index.html``.

``roi.csv`` is for Excel in a Russian locale, which opens a double-clicked CSV with the locale's list separator and
decimal mark: UTF-8 with BOM (or Cyrillic turns into mojibake), ``;`` between fields, a decimal comma, no thousands
separator, CRLF line ends. Programs should read ``roi.json`` instead.

``index.html`` is one self-contained file that works offline: the data as JSON, Chart.js inlined (pinned, MIT,
license in ``assets/``), the tables rendered here so they read even with scripts off.
"""

from __future__ import annotations

import csv
import html
import io
import json
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from importlib import resources
from typing import Any

from throughline.report import conversions, dynamics
from throughline.report.models import RoiReport, Row
from throughline.report.segments import render_segments

CHART_JS = "chart.umd.min.js"
LEVELS = {"total": "Итого", "channel": "Канал", "source": "Источник", "campaign": "Кампания"}
MATCHED = {
    "spend_and_leads": "расход и лиды",
    "spend_only": "расход без лидов",
    "leads_only": "лиды без расхода",
    "no_rate": "нет курса",
    "none": "",
}
COMPARISONS = {
    "same_days_previous_month": "те же дни прошлого месяца",
    "previous_month": "прошлый месяц целиком",
    "preceding_days": "столько же дней перед периодом",
    "custom": "заданный период",
}
# (field, header, kind) — kind: int, money, pct, days
COLUMNS = (
    ("impressions", "Показы", "int"),
    ("clicks", "Клики", "int"),
    ("ctr", "CTR, %", "pct"),
    ("cpc", "CPC", "money"),
    ("cpm", "CPM", "money"),
    ("spend", "Расход", "money"),
    ("leads", "Лиды", "int"),
    ("cpl", "CPL", "money"),
    ("deals", "Сделки", "int"),
    ("cr", "CR, %", "pct"),
    ("won_deals", "Успешные сделки", "int"),
    ("revenue", "Выручка", "money"),
    ("unpaid_revenue", "Выручка без расхода", "money"),
    ("average_check", "Средний чек", "money"),
    ("cpo", "CPO", "money"),
    ("new_customers", "Новые клиенты", "int"),
    ("cac", "CAC", "money"),
    ("romi", "ROMI, %", "pct"),
    ("roi", "ROI, %", "pct"),
    ("roas", "ROAS, %", "pct"),
    ("drr", "ДРР, %", "pct"),
    ("sales_cycle_days", "Цикл сделки, дн.", "days"),
)
MODEL_LABELS = {
    "first_click": "Первый клик",
    "last_click": "Последний клик",
    "last_non_direct": "Последний непрямой клик",
    "linear": "Линейная",
    "time_decay": "С затуханием во времени",
    "position_based": "По позициям 40/20/40",
    "markov": "Марковские цепи",
    "shapley": "Шепли",
}
ATTRIBUTED_COLUMNS = ("Модель атрибуции", "Успешные сделки (модель)", "Выручка (модель)", "ROMI (модель), %")
PREVIOUS_COLUMNS = (("spend", "Расход (пред.)"), ("leads", "Лиды (пред.)"), ("revenue", "Выручка (пред.)"),
                    ("romi", "ROMI (пред.), %"))  # fmt: skip


def render_json(report: RoiReport) -> bytes:
    return report.model_dump_json(indent=1).encode()


def _header(report: RoiReport, header: str) -> str:
    """Simple CRM mode has no leads: its requests are deals, «Обращения»."""
    return header.replace("Лиды", "Обращения") if report.simple_crm else header


def _unconverted(row_spend: dict[str, Decimal]) -> str:
    return ", ".join(f"{_csv_number(amount)} {currency}" for currency, amount in row_spend.items())


def render_csv(report: RoiReport) -> bytes:
    """The main table; channel rows also carry the default attribution model's won deals, revenue and ROMI, with the
    model's name in a column of its own (empty when there is no journey export yet). A channel the model credits that
    has no row of the table («Без касаний», a channel seen only in journeys) gets a row of its own, so the channel
    rows of the attributed columns add up to «Итого». «Выручка без курса»: the revenue of rows whose spend has no
    exchange rate — neither paid nor «без расхода», so revenue = paid + «без расхода» + «без курса» on every row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Уровень", "Канал", "Источник", "Кампания", "ID кампании", "Площадка", "Сопоставление"]
                    + [_header(report, header) for _, header, _ in COLUMNS]
                    + [_header(report, header) for _, header in PREVIOUS_COLUMNS]
                    + list(ATTRIBUTED_COLUMNS) + ["Расход без курса", "Выручка без курса"])  # fmt: skip
    attribution = report.attribution
    model = attribution.default_model if attribution else None
    credited = {row.channel: row for row in attribution.models.get(model or "", [])} if attribution else {}
    for row in report.rows:
        previous = row.previous
        credit = credited.get(row.channel) if row.level == "channel" else None
        writer.writerow(
            [_csv_text(text) for text in (LEVELS[row.level], row.channel_label, row.source_label, row.campaign,
                                          row.campaign_id, row.platform, MATCHED.get(row.matched or "none"))]
            + [_csv_number(getattr(row.metrics, name)) for name, _, _ in COLUMNS]
            + [_csv_number(getattr(previous, name)) if previous else "" for name, _ in PREVIOUS_COLUMNS]
            + ([MODEL_LABELS.get(model or "", model), _csv_number(credit.conversions), _csv_number(credit.revenue),
                _csv_number(credit.romi)] if credit else ["", "", "", ""])
            + [_unconverted(row.unconverted_spend), _csv_number(row.metrics.no_rate_revenue)]
        )  # fmt: skip
    in_table = {row.channel for row in report.rows if row.level == "channel"}
    for channel, credit in credited.items():
        if channel not in in_table:
            writer.writerow(["Канал", _csv_text(credit.channel_label), "", "", "", "", ""]
                            + [""] * (len(COLUMNS) + len(PREVIOUS_COLUMNS))
                            + [MODEL_LABELS.get(model or "", model), _csv_number(credit.conversions),
                               _csv_number(credit.revenue), _csv_number(credit.romi), "", ""])  # fmt: skip
    totals = [_csv_number(getattr(report.headline, name)) for name, _, _ in COLUMNS]
    previous_totals = [_csv_number(getattr(report.headline_previous, name)) for name, _ in PREVIOUS_COLUMNS]
    attributed = ["", "", "", ""]
    if attribution:
        attributed = [MODEL_LABELS.get(model or "", model), _csv_number(attribution.conversions),
                      _csv_number(attribution.revenue), ""]  # fmt: skip
    unconverted = _unconverted(report.data_quality.spend_without_rate)
    writer.writerow(["Итого", "", "", "", "", "", "", *totals, *previous_totals, *attributed, unconverted,
                     _csv_number(report.headline.no_rate_revenue)])  # fmt: skip
    return ("\ufeff" + buffer.getvalue()).encode("utf-8")


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def _csv_text(value: str | None) -> str:
    """A text cell Excel will not run: names come from ad platforms and UTM tags anyone can put in a link, and a
    cell starting with ``= + - @`` (or a tab or line break before one) is a formula. A leading apostrophe disarms it
    and keeps the name readable (OWASP "CSV injection")."""
    text = value or ""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _csv_number(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace(".", ",")


# ---- the page ------------------------------------------------------------------------------------------------------


def render_html(report: RoiReport) -> bytes:
    data = _chart_data(report)
    page = _PAGE.format(
        title=html.escape(f"ROI: {_date(report.period.date_from)} — {_date(report.period.date_to)}"),
        period=html.escape(f"{_date(report.period.date_from)} — {_date(report.period.date_to)}"),
        previous=html.escape(
            f"{_date(report.previous_period.date_from)} — {_date(report.previous_period.date_to)}"
            f" ({COMPARISONS[report.comparison]})"
        ),
        generated=html.escape(report.generated_at.strftime("%d.%m.%Y %H:%M")),
        currency=html.escape(report.currency),
        cards=_cards(report),
        dynamics=dynamics.PANEL if report.dynamics else "",
        quality=_quality(report),
        funnels=_funnel_tables(report),
        attribution=_attribution(report),
        cohorts=_cohorts(report),
        segments=render_segments(report.segments, format_number),
        conversions=conversions.render_section(report),
        table=_table(report),
        rates=_rates(report),
        basis=html.escape(_basis(report)),
        data=_script_json(data),
        chart_js=_chart_js(),
        script=_SCRIPT + dynamics.SCRIPT,
        style=_STYLE,
    )
    return page.encode("utf-8")


def _script_json(data: Any) -> str:
    """JSON to inline in a ``<script>`` element. ``<``, ``>`` and ``&`` become ``\\u`` escapes (JSON.parse reads them
    back): not only ``</script>`` ends the element early, ``<!--<script>`` also makes the parser skip the closing tag
    and swallow the scripts after it; no ``<`` at all leaves nothing for the parser to see."""
    text = json.dumps(data, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def _chart_js() -> str:
    return (resources.files("throughline.report") / "assets" / CHART_JS).read_text(encoding="utf-8")


def _chart_data(report: RoiReport) -> dict[str, Any]:
    channels = [row for row in report.rows if row.level == "channel"]
    deal_funnel = next((f for f in report.funnels if f.entity == "deal"), None)
    lead_funnel = next((f for f in report.funnels if f.entity == "lead"), None)
    quality = report.data_quality

    def number(value: Decimal | int | None) -> float | None:
        return None if value is None else float(value)

    path = [stage for stage in deal_funnel.stages if stage.semantics != "failure"] if deal_funnel else []
    paid = [row for row in channels if row.metrics.spend]
    return {
        "paid_channels": [row.channel_label for row in paid],
        "romi": [number(row.metrics.romi) for row in paid],
        "channels": [row.channel_label for row in channels],
        "spend": [number(row.metrics.spend) for row in channels],
        "revenue": [number(row.metrics.revenue) for row in channels],
        "leads": [row.metrics.leads for row in channels],
        "funnel": {
            "labels": ["Лиды"] + [stage.name for stage in path],
            "values": [lead_funnel.total if lead_funnel else report.headline.leads] + [stage.reached for stage in path],
            "name": deal_funnel.name if deal_funnel else "",
        },
        "quality": {"with_source": quality.leads_with_source, "without_source": quality.leads_without_source},
        "currency": report.currency,
        "attribution": _attribution_chart(report),
        "dynamics": dynamics.chart_data(report),
    }


def _attribution_chart(report: RoiReport) -> dict[str, Any] | None:
    """Revenue credited per channel, one dataset per model (grouped bars)."""
    section = report.attribution
    if section is None:
        return None
    order = _channel_order(report)
    labels = {row.channel: row.channel_label for rows in section.models.values() for row in rows}
    return {
        "channels": [labels[channel] for channel in order],
        "models": [
            {"label": MODEL_LABELS.get(model, model), "revenue": [float(by_channel[channel]) for channel in order]}
            for model, by_channel in (
                (model, {row.channel: row.revenue for row in rows}) for model, rows in section.models.items()
            )
        ],
    }


def _channel_order(report: RoiReport) -> list[str]:
    """Channels by the most revenue any model credits them, so the bars that matter come first."""
    best: dict[str, Decimal] = {}
    for rows in report.attribution.models.values() if report.attribution else ():
        for row in rows:
            best[row.channel] = max(best.get(row.channel, Decimal(0)), row.revenue)
    return sorted(best, key=lambda channel: (-best[channel], channel))


def _date(value: Any) -> str:
    return value.strftime("%d.%m.%Y")


TENTH, HUNDREDTH = Decimal("0.1"), Decimal("0.01")


def format_number(value: Any, kind: str, currency: str = "") -> str:
    if value is None:
        return "—"
    if kind == "int":
        return f"{int(value):,}".replace(",", "\u202f")
    if kind == "days":
        return f"{Decimal(value).quantize(TENTH, ROUND_HALF_UP):.1f}".replace(".", ",")
    number = Decimal(value)
    if kind == "money" and number == 0:
        return "0"
    # Rounded half-up here, as every kopeck of the report is: format() alone rounds half to even (1 000,50 → 1 000).
    whole = kind == "money" and abs(number) >= 1000
    number = number.quantize(Decimal(1) if whole else HUNDREDTH, ROUND_HALF_UP)
    text = f"{number:,.0f}" if whole else f"{number:,.2f}"
    text = text.replace(",", "\u202f").replace(".", ",")
    return text + (" %" if kind == "pct" else "")


def _delta(value: Decimal | None, *, points: bool = False, good_when_up: bool = True) -> str:
    if value is None:
        return '<span class="delta">нет данных для сравнения</span>'
    up = value > 0
    css = "flat" if value == 0 else ("good" if up == good_when_up else "bad")
    arrow = "▲" if up else ("▼" if value < 0 else "•")
    unit = " п.п." if points else " %"
    text = f"{arrow} {format_number(abs(value), 'plain')}{unit}".replace(" %", "\u00a0%")
    return f'<span class="delta {css}">{html.escape(text)} к пред. периоду</span>'


def _cards(report: RoiReport) -> str:
    head, change, currency = report.headline, report.headline_change, report.currency
    no_rate = report.data_quality.spend_without_rate
    spend_note = ""
    if no_rate:  # named on the headline: out of the spend and of every ratio
        amounts = ", ".join(f"{format_number(amount, 'money')} {currency_code}" for currency_code, amount in
                            no_rate.items())  # fmt: skip
        spend_note = f'<div class="delta bad">+ {html.escape(amounts)} без курса (не в расходе и ROMI)</div>'
    unpaid = (
        f'<div class="delta">из них выручка без расхода: {html.escape(format_number(head.unpaid_revenue, "money"))}'
        f" {html.escape(currency)}</div>"
    )
    if head.no_rate_revenue:  # spend in a currency with no rate: there was spend, so not «без расхода»
        unpaid += (
            f'<div class="delta">выручка кампаний с расходом без курса: '
            f"{html.escape(format_number(head.no_rate_revenue, 'money'))} {html.escape(currency)}</div>"
        )
    requests = "Обращения" if report.simple_crm else "Лиды"
    cards = [
        ("Расход", format_number(head.spend, "money") + f" {currency}",
         _delta(change.spend_pct, good_when_up=False) + spend_note),
        ("Выручка (вся)", format_number(head.revenue, "money") + f" {currency}", _delta(change.revenue_pct) + unpaid),
        ("ROMI платных каналов", format_number(head.romi, "pct"), _delta(change.romi_pp, points=True)
         + f'<div class="delta">по выручке каналов с расходом: {html.escape(format_number(head.paid_revenue, "money"))}'
         f" {html.escape(currency)}</div>"),
        (requests, format_number(head.leads, "int"), _delta(change.leads_pct)),
        ("CPL", format_number(head.cpl, "money") + (f" {currency}" if head.cpl is not None else ""),
         _delta(change.cpl_pct, good_when_up=False)),
        ("Успешные сделки", format_number(head.won_deals, "int"), _delta(change.won_deals_pct)),
        ("CR обращение → успешная сделка" if report.simple_crm else "CR лид → сделка", format_number(head.cr, "pct"),
         _delta(change.cr_pp, points=True)),
        ("CAC", format_number(head.cac, "money") + (f" {currency}" if head.cac is not None else ""), ""),
    ]  # fmt: skip
    return "\n".join(
        f'<div class="card"><div class="label">{html.escape(label)}</div>'
        f'<div class="value">{html.escape(value)}</div>{delta}</div>'
        for label, value, delta in cards
    )


def _quality(report: RoiReport) -> str:
    quality = report.data_quality
    share = format_number(quality.known_source_share, "pct")
    verdict = (
        "нет лидов за период"
        if quality.meets_target is None
        else ("цель 95 % выполнена" if quality.meets_target else "ниже цели 95 %")
    )
    css = "good" if quality.meets_target else "bad"
    items = [
        f"<li>Лидов без источника: <b>{format_number(quality.leads_without_source, 'int')}</b></li>",
        f"<li>Возможных дублей (телефон / e-mail): <b>{format_number(quality.suspected_duplicates, 'int')}</b></li>",
        f"<li>Лидов из CRM-форм Битрикс24 без UTM-меток: "
        f"<b>{format_number(quality.webform_leads_without_tags, 'int')}</b></li>",
        f"<li>Расход без лидов: <b>{format_number(quality.unmatched_spend, 'money')} {html.escape(report.currency)}</b>"
        + (
            " — "
            + ", ".join(html.escape(c.campaign or c.campaign_id or "?") for c in quality.unmatched_spend_campaigns[:5])
            if quality.unmatched_spend_campaigns
            else ""
        )
        + "</li>",
    ]
    if quality.unknown_tags:
        tags = ", ".join(f"{html.escape(t.utm_source)} ({t.leads})" for t in quality.unknown_tags[:8])
        items.append(f"<li>Неизвестные utm_source: {tags}</li>")
    if quality.spend_rows_with_vat:
        items.append(f"<li>Строк расхода, загруженных с НДС: <b>{quality.spend_rows_with_vat}</b></li>")
    if quality.deals_without_rate:
        items.append(f"<li>Сделок без курса валюты (не в выручке): <b>{quality.deals_without_rate}</b></li>")
    for currency, cost in quality.spend_without_rate.items():
        amount = f"{format_number(cost, 'money')} {html.escape(currency)}"
        items.append(f"<li>Расход без курса валюты (не в расходе): <b>{amount}</b> — задайте CURRENCY_RATES</li>")
    if quality.records_access_denied:
        items.append(
            "<li>Ответов «Access denied» (записи CRM, скрытые от пользователя вебхука; их касаний нет в путях): "
            f"<b>{format_number(quality.records_access_denied, 'int')}</b></li>"
        )
    if quality.deals_without_amount or quality.deals_invalid_amount:
        ids = ", ".join(f"№{item.deal_id}" for item in quality.bad_amount_deals[:20])
        items.append(
            f"<li>Успешных сделок без суммы: <b>{quality.deals_without_amount}</b>, с отрицательной или нечитаемой "
            f"суммой: <b>{quality.deals_invalid_amount}</b> (не в выручке и среднем чеке): {html.escape(ids)}</li>"
        )
    if quality.deals_without_profit:
        items.append(
            f"<li>Успешных сделок с пустым полем прибыли (не в ROI): <b>{quality.deals_without_profit}</b></li>"
        )
    if quality.won_deals_without_date:
        items.append(
            f"<li>Успешных сделок без даты закрытия и без перехода в успех в истории стадий (ни в одном периоде): "
            f"<b>{quality.won_deals_without_date}</b></li>"
        )
    if quality.spend_rows_vat_converted:
        basis = "с НДС" if quality.spend_vat_basis == "gross" else "без НДС"
        items.append(
            f"<li>Расход показан {basis}; строк пересчитано по ставке НДС "
            f"{html.escape(format_number(quality.vat_rate * 100, 'pct'))}: "
            f"<b>{quality.spend_rows_vat_converted}</b></li>"
        )
    for shared in quality.shared_campaign_names:
        items.append(
            f"<li>Название кампании «{html.escape(shared.campaign)}» есть в нескольких кабинетах "
            f"({html.escape(', '.join(shared.campaign_ids))}): лиды без ID кампании — одной строкой с расходом "
            "всех</li>"
        )
    return (
        f'<div class="share {css}"><span class="big">{share}</span> лидов с известным источником — {verdict}</div>'
        f"<ul>{''.join(items)}</ul>"
    )


def _funnel_tables(report: RoiReport) -> str:
    parts = []
    for funnel in report.funnels:
        rows = "".join(
            f"<tr><td>{html.escape(stage.name)}</td><td>{format_number(stage.count, 'int')}</td>"
            f"<td>{format_number(stage.reached, 'int') if stage.semantics != 'failure' else '—'}</td>"
            f"<td>{format_number(stage.conversion_from_previous, 'pct')}</td>"
            f"<td>{format_number(stage.mean_days_in_stage, 'days')}</td></tr>"
            for stage in funnel.stages
        )
        parts.append(
            f"<h3>{html.escape(funnel.name)}: {format_number(funnel.total, 'int')}"
            f" · успешно {format_number(funnel.won, 'int')} · проиграно {format_number(funnel.lost, 'int')}</h3>"
            '<table class="compact"><thead><tr><th>Стадия</th><th>Сейчас</th><th>Дошли</th><th>Конверсия</th>'
            "<th>Дней на стадии</th></tr>"
            f"</thead><tbody>{rows}</tbody></table>"
        )
    return "\n".join(parts) or "<p>Нет записей за период.</p>"


TABLE_COLUMNS = ("spend", "leads", "cpl", "deals", "cr", "won_deals", "revenue", "unpaid_revenue", "average_check",
                 "cpo", "new_customers", "cac", "romi", "roi", "roas", "drr", "impressions", "clicks", "ctr", "cpc",
                 "cpm", "sales_cycle_days")  # fmt: skip


def _table(report: RoiReport) -> str:
    """The main table: every metric the README promises; a column with no data in any row is hidden (an empty
    column of zeros reads as data), and ROI only when a margin or profit field makes it differ from ROMI."""
    every = [row.metrics for row in report.rows] + [report.headline]
    columns = [
        column
        for column in sorted((c for c in COLUMNS if c[0] in TABLE_COLUMNS), key=lambda c: TABLE_COLUMNS.index(c[0]))
        if (
            any(_has_data(getattr(values, column[0]), column[0]) for values in every)
            or (column[0] == "spend" and bool(report.data_quality.spend_without_rate))
        )
        and (column[0] != "roi" or report.roi_basis != "romi")
    ]
    head = "".join(f"<th>{html.escape(_header(report, header))}</th>" for _, header, _ in columns)
    body = []
    paid_sources = {(row.channel, row.source) for row in report.rows if row.level == "source" and row.metrics.spend}
    for row in report.rows:
        name = _row_name(row, (row.channel, row.source) in paid_sources)
        body.append(
            f'<tr class="{row.level}"><td class="name">{html.escape(name)}</td>'
            + "".join(f"<td>{_cell(row.metrics, name, kind, row.unconverted_spend)}</td>" for name, _, kind in columns)
            + "</tr>"
        )
    total, no_rate = report.headline, report.data_quality.spend_without_rate
    body.append(
        '<tr class="total"><td class="name">Итого</td>'
        + "".join(f"<td>{_cell(total, name, kind, no_rate)}</td>" for name, _, kind in columns)
        + "</tr>"
    )
    return f'<table class="main"><thead><tr><th>Канал / источник / кампания</th>{head}</tr></thead>' + (
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _cell(values: Any, name: str, kind: str, unconverted: dict[str, Decimal]) -> str:
    """A table cell; the spend cell of a row with spend in a currency without a rate shows that amount in its own
    currency beside it («нет курса»): a row of its own, never a spend of 0."""
    text = format_number(getattr(values, name), kind)
    if name == "spend" and unconverted:
        foreign = " + ".join(f"{format_number(amount, 'money')} {code}" for code, amount in unconverted.items())
        text = foreign if not getattr(values, name) else f"{text} + {foreign}"
        text = html.escape(f"{text} (нет курса)")
    return text


SUMS = frozenset({"impressions", "clicks", "spend", "leads", "deals", "won_deals", "revenue", "unpaid_revenue",
                  "new_customers"})  # fmt: skip


def _has_data(value: Any, name: str) -> bool:
    """A sum of zero everywhere is no data (no impressions imported); a ratio of zero is a result (ROAS 0 %, ROMI 0 %,
    CR 0 %): only an empty cell (nothing to divide by) is no data."""
    return bool(value) if name in SUMS else value is not None


def _row_name(row: Row, paid_source: bool) -> str:
    """Campaign rows say when spend and leads did not meet — where it matters: in a source that has spend."""
    if row.level == "channel":
        return row.channel_label
    if row.level == "source":
        return row.source_label or ""
    note = MATCHED.get(row.matched or "none", "")
    flagged = row.matched in ("spend_only", "no_rate") or (row.matched == "leads_only" and paid_source)
    return (row.campaign or "") + (f" · {note}" if flagged else "")


def _attribution(report: RoiReport) -> str:
    section = report.attribution
    if section is None:
        reason = report.data_quality.journeys or "нет данных"
        return f'<p class="sub">Атрибуция по моделям: {html.escape(reason)}.</p>'
    base = {row.channel: row for row in section.models.get("last_click", [])}
    models = [model for model in section.models if model != "last_click"]
    head = "".join(f"<th>{html.escape(MODEL_LABELS.get(model, model))}</th>" for model in models)
    body = []
    for channel in _channel_order(report):
        last = base[channel]
        cells = []
        for model in models:
            row = next(item for item in section.models[model] if item.channel == channel)
            delta = row.revenue - last.revenue
            css = "flat" if delta == 0 else ("good" if delta > 0 else "bad")
            sign = "+" if delta > 0 else ("−" if delta < 0 else "")
            cells.append(f'<td class="{css}">{sign}{format_number(abs(delta), "money")}</td>')
        body.append(
            f'<tr><td class="name">{html.escape(last.channel_label)}</td>'
            f"<td>{format_number(last.revenue, 'money')}</td><td>{format_number(last.romi, 'pct')}</td>"
            + "".join(cells)
            + "</tr>"
        )
    note = (
        f"Успешных сделок: {format_number(section.conversions, 'int')}, выручка "
        f"{format_number(section.revenue, 'money')} {html.escape(report.currency)} — каждая модель делит ровно её. "
        f"Модель для roi.csv: {html.escape(MODEL_LABELS.get(section.default_model, section.default_model))}. "
        f"Выгрузка путей от {html.escape(section.snapshot)}; касаний {format_number(section.touches, 'int')}, "
        f"путей без сделки {format_number(section.non_converting_journeys, 'int')}, "
        f"сделок без известного клиента {format_number(section.deals_without_person, 'int')}."
    )
    return (
        '<div class="chart" style="height:340px"><canvas id="chart-attribution"></canvas></div>'
        f'<p class="sub">{note}</p>'
        "<h3>Разница с моделью «последний клик», выручка</h3>"
        '<div class="scroll"><table class="diff"><thead><tr><th>Канал</th><th>Последний клик</th><th>ROMI, %</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
    )


def _cohorts(report: RoiReport) -> str:
    cohorts = report.cohorts
    if not cohorts:
        return "<p>Нет успешных сделок.</p>"
    months = max(len(cohort.revenue) for cohort in cohorts)
    top = max((value for cohort in cohorts for value in cohort.ltv), default=Decimal(0)) or Decimal(1)
    head = "".join(f"<th>{month} мес.</th>" for month in range(months))
    body = []
    for cohort in cohorts:
        cells = []
        for month in range(months):
            if month >= len(cohort.ltv):
                cells.append("<td></td>")
                continue
            share = float(cohort.ltv[month] / top)
            cells.append(
                f'<td style="background:rgba(47,111,237,{0.08 + 0.72 * share:.2f});'
                f'color:{"#fff" if share > 0.6 else "inherit"}" title="выручка накопленно '
                f'{format_number(cohort.revenue[month], "money")}">{format_number(cohort.ltv[month], "money")}</td>'
            )
        body.append(
            f'<tr><td class="name">{html.escape(cohort.month)} · {html.escape(cohort.source_label)}</td>'
            f"<td>{format_number(cohort.customers, 'int')}</td><td>{format_number(cohort.repeat_rate, 'pct')}</td>"
            + "".join(cells)
            + "</tr>"
        )
    return (
        '<div class="scroll"><table class="cohorts"><thead><tr><th>Когорта (месяц первой сделки · источник)</th>'
        f"<th>Клиенты</th><th>Повторные покупки</th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
        '<p class="sub">Ячейка — LTV: накопленная выручка на клиента к N-му месяцу после первой сделки '
        "(0 — месяц первой сделки); цвет тем гуще, чем больше.</p>"
    )


def _rates(report: RoiReport) -> str:
    if not report.currency_rates:
        return ""
    return "Курсы: " + "; ".join(
        html.escape(f"{rate.currency} = {rate.rate:.4f} {report.currency} ({rate.source}"
                    + (f", {_date(rate.date)})" if rate.date else ")"))
        for rate in report.currency_rates
    ) + "."  # fmt: skip


def _basis(report: RoiReport) -> str:
    roi = {"margin": "ROI по заданной марже", "profit_field": "ROI по полю прибыли сделки", "romi": "ROI = ROMI"}
    return f"Атрибуция: последнее касание лида (UTM лида, иначе сделки, иначе источник CRM). {roi[report.roi_basis]}."


_STYLE = """
:root { --ink:#1d2433; --muted:#6b7385; --line:#e6e8ee; --bg:#f5f6f9; --good:#178a4c; --bad:#c8372d;
        --accent:#2f6fed; }
* { box-sizing:border-box; }
body { margin:0; font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color:var(--ink); background:var(--bg); }
header { padding:24px 32px 8px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:17px; margin:0 0 12px; }
h3 { font-size:14px; margin:16px 0 6px; }
.sub { color:var(--muted); }
main { padding:8px 32px 32px; }
.cards { display:grid; grid-template-columns:repeat(4, minmax(0, 1fr)); gap:12px; margin:12px 0 20px; }
@media (max-width:900px) { .cards { grid-template-columns:repeat(2, minmax(0, 1fr)); } }
.card, .panel { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:24px; font-weight:650; margin:4px 0; white-space:nowrap; }
.delta { font-size:12px; color:var(--muted); }
.delta.good, .share.good { color:var(--good); } .delta.bad, .share.bad { color:var(--bad); }
.grid { display:grid; grid-template-columns:repeat(auto-fit, minmax(480px, 1fr)); gap:16px; margin-bottom:16px; }
.chart { position:relative; height:300px; }
.share .big { font-size:28px; font-weight:700; }
table { border-collapse:collapse; width:100%; background:#fff; }
table.main { width:auto; }  /* hidden empty columns must not leave the name column to fill the page */
table.main td.name, table.main th:first-child { width:480px; }
th, td { padding:6px 8px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { position:sticky; top:0; background:#fafbfc; font-weight:600; font-size:12px; color:var(--muted); }
td.name, th:first-child { text-align:left; white-space:normal; min-width:220px; max-width:480px;
                          overflow-wrap:anywhere; }
.chart .empty { display:flex; align-items:center; justify-content:center; height:100%; color:var(--muted); }
tr.channel td { font-weight:650; background:#f0f4fe; }
tr.source td.name { padding-left:22px; font-weight:600; }
tr.campaign td.name { padding-left:40px; color:#3a4254; }
tr.total td { font-weight:700; border-top:2px solid var(--ink); }
table.compact { width:auto; min-width:420px; }
table.compact td:first-child { text-align:left; }
.scroll { overflow:auto; max-height:80vh; border:1px solid var(--line); border-radius:10px; }
table.diff td.good { color:var(--good); } table.diff td.bad { color:var(--bad); }
table.cohorts td.name { text-align:left; }
footer { color:var(--muted); font-size:12px; padding:0 32px 24px; }
"""

_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const money = new Intl.NumberFormat('ru-RU', {maximumFractionDigits: 0});
  const good = '#178a4c', bad = '#c8372d', blue = '#2f6fed', grey = '#b8c0d0';
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.animation = false;
  window.throughlineCharts = [];
  const some = values => values.some(v => v !== null && v !== 0);
  function add(id, config, hasData) {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    if (!hasData) {  // empty axes with made-up ticks read as data; say there is nothing instead
      const note = document.createElement('div');
      note.className = 'empty';
      note.textContent = 'Нет данных за период';
      canvas.replaceWith(note);
      return;
    }
    window.throughlineCharts.push(new Chart(canvas, config));
  }
  add('chart-romi', {type: 'bar', data: {labels: data.paid_channels, datasets: [{label: 'ROMI, %', data: data.romi,
      backgroundColor: data.romi.map(v => v === null ? grey : (v >= 0 ? good : bad))}]},
    options: {indexAxis: 'y', maintainAspectRatio: false, plugins: {legend: {display: false},
      tooltip: {callbacks: {label: c => c.raw === null ? 'нет расхода' : money.format(c.raw) + ' %'}}},
      scales: {x: {ticks: {callback: v => v + ' %'}}}}}, some(data.romi));
  add('chart-money', {type: 'bar', data: {labels: data.channels, datasets: [
      {label: 'Расход', data: data.spend, backgroundColor: bad},
      {label: 'Выручка', data: data.revenue, backgroundColor: good}]},
    options: {maintainAspectRatio: false, plugins: {tooltip: {callbacks: {
      label: c => c.dataset.label + ': ' + money.format(c.raw) + ' ' + data.currency}}},
      scales: {y: {ticks: {callback: v => money.format(v)}}}}}, some(data.spend) || some(data.revenue));
  add('chart-funnel', {type: 'bar', data: {labels: data.funnel.labels, datasets: [{label: 'Дошли до стадии',
      data: data.funnel.values, backgroundColor: blue}]},
    options: {indexAxis: 'y', maintainAspectRatio: false, plugins: {legend: {display: false}}}},
    some(data.funnel.values));
  if (data.attribution) {
    const palette = ['#2f6fed', '#9db7f5', '#178a4c', '#7fc8a0', '#e09b2d', '#c8372d', '#7a4fd6', '#5b6478'];
    add('chart-attribution', {type: 'bar', data: {labels: data.attribution.channels,
        datasets: data.attribution.models.map((m, i) => ({label: m.label, data: m.revenue,
          backgroundColor: palette[i % palette.length]}))},
      options: {maintainAspectRatio: false, plugins: {legend: {position: 'bottom'}, tooltip: {callbacks: {
        label: c => c.dataset.label + ': ' + money.format(c.raw) + ' ' + data.currency}}},
        scales: {y: {ticks: {callback: v => money.format(v)}}}}},
      data.attribution.models.some(m => some(m.revenue)));
  }
  add('chart-quality', {type: 'doughnut', data: {labels: ['С источником', 'Без источника'], datasets: [{
      data: [data.quality.with_source, data.quality.without_source], backgroundColor: [good, bad]}]},
    options: {maintainAspectRatio: false, plugins: {legend: {position: 'bottom'}}}},
    some([data.quality.with_source, data.quality.without_source]));
})();
"""

_PAGE = """<!doctype html>
<html lang="ru"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
<header><h1>Сквозная аналитика: окупаемость рекламы</h1>
<div class="sub">Период {period} · сравнение с {previous} · валюта {currency} · отчёт от {generated}</div></header>
<main>
<section class="cards">{cards}</section>
{dynamics}
<section class="grid">
 <div class="panel"><h2>ROMI по каналам с расходом</h2><div class="chart"><canvas id="chart-romi"></canvas></div></div>
 <div class="panel"><h2>Расход и выручка по каналам</h2>
  <div class="chart"><canvas id="chart-money"></canvas></div></div>
 <div class="panel"><h2>Воронка продаж</h2><div class="chart"><canvas id="chart-funnel"></canvas></div></div>
 <div class="panel"><h2>Качество данных</h2><div class="chart" style="height:180px">
  <canvas id="chart-quality"></canvas></div>{quality}</div>
</section>
<section class="panel"><h2>Каналы, источники и кампании</h2><div class="scroll">{table}</div></section>
<section class="panel" style="margin-top:16px"><h2>Выручка по каналам в разных моделях атрибуции</h2>
{attribution}</section>
<section class="panel" style="margin-top:16px"><h2>Когорты клиентов: LTV по месяцам</h2>{cohorts}</section>
{segments}
{conversions}
<section class="panel" style="margin-top:16px"><h2>Воронки по стадиям</h2>{funnels}</section>
</main>
<footer>{basis} {rates} Пустая ячейка (—) — делить не на что: нет расхода, лидов или выручки.</footer>
<script type="application/json" id="report-data">{data}</script>
<script>{chart_js}</script>
<script>{script}</script>
</body></html>
"""
