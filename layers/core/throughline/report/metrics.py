"""The report's metrics from a row's totals, exactly as DESIGN.md defines them.

Every division by zero gives ``None`` (an empty cell), never ``inf`` or an error; so do cost metrics of a row
without spend (an organic channel has no CPL, not a CPL of 0). Money stays ``Decimal`` all the
way and is rounded to kopecks only here, at the end; percentages are rounded to hundredths of a percent.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

KOPECK = Decimal("0.01")
HUNDRED = Decimal(100)
THOUSAND = Decimal(1000)
ZERO = Decimal(0)


@dataclass
class Totals:
    """What a row adds up: counts, money in the report currency, and the sums behind averages."""

    impressions: int = 0
    clicks: int = 0
    spend: Decimal = ZERO
    leads: int = 0
    deals: int = 0
    won_deals: int = 0
    revenue: Decimal = ZERO
    gross_profit: Decimal | None = None  # known only with a margin or a profit field
    new_customers: int = 0
    cycle_days_sum: Decimal = ZERO  # over won deals with a known start
    cycle_deals: int = 0
    priced_deals: int = 0  # won deals with a usable amount: the average check's denominator
    converted_leads: int = 0  # leads of the period that became a deal (the cohort CR's numerator)

    def add(self, other: Totals) -> None:
        self.impressions += other.impressions
        self.clicks += other.clicks
        self.spend += other.spend
        self.leads += other.leads
        self.deals += other.deals
        self.won_deals += other.won_deals
        self.revenue += other.revenue
        if other.gross_profit is not None:
            self.gross_profit = (self.gross_profit or ZERO) + other.gross_profit
        self.new_customers += other.new_customers
        self.cycle_days_sum += other.cycle_days_sum
        self.cycle_deals += other.cycle_deals
        self.priced_deals += other.priced_deals
        self.converted_leads += other.converted_leads


@dataclass(frozen=True)
class Metrics:
    impressions: int
    clicks: int
    ctr: Decimal | None  # %
    cpc: Decimal | None
    cpm: Decimal | None
    spend: Decimal
    leads: int
    cpl: Decimal | None
    deals: int
    cr: Decimal | None  # %: the share of the period's leads that became deals
    deals_per_lead: Decimal | None  # %: deals created / leads created (the old ratio; can pass 100 %)
    won_deals: int
    revenue: Decimal
    average_check: Decimal | None
    cpo: Decimal | None
    new_customers: int
    cac: Decimal | None
    romi: Decimal | None  # %
    roi: Decimal | None  # %
    roas: Decimal | None  # %
    drr: Decimal | None  # % (ДРР)
    sales_cycle_days: Decimal | None
    paid_leads: int
    paid_won_deals: int
    paid_revenue: Decimal
    unpaid_revenue: Decimal  # «выручка без расхода»: revenue of the rows below this one that carry no spend
    no_rate_revenue: Decimal  # revenue of the rows below whose spend has no exchange rate: neither paid nor unpaid


def compute(
    totals: Totals,
    paid_part: Totals | None = None,
    *,
    margin: Decimal | None = None,
    profit_field: bool = False,
    no_rate_revenue: Decimal = ZERO,
) -> Metrics:
    """Metrics of one row. ``paid_part``: the totals of the rows under this one that carry spend (the paid rule:
    ROMI, ROI, ROAS, ДРР, CPL, CPO and CAC count only their leads, deals and revenue); by default the row itself
    when it has spend. ``margin`` (0..1) turns revenue into gross profit; with ``profit_field`` the deals' own gross
    profit is used, and a row with no known profit has no ROI (unknown, not −100 %). A row whose spend is not
    positive (a platform's refund larger than the cost) has no ROMI, ROI, ROAS, ДРР or cost-per metric.
    ``no_rate_revenue``: the revenue of rows below whose spend has no exchange rate: out of the paid part (no ratio
    can use it) and out of «выручка без расхода» (there was spend)."""
    spend, revenue = totals.spend, totals.revenue
    paid = spend > 0  # no spend, or a refund larger than the cost: no cost-per metric and no return on it
    if paid_part is None:
        paid_part = totals if paid else Totals()
    paid_revenue = paid_part.revenue
    if profit_field:
        gross_profit = paid_part.gross_profit
    elif margin is not None:
        gross_profit = paid_revenue * margin
    else:
        gross_profit = None
    romi = percent(paid_revenue - spend, spend) if paid else None
    if profit_field or margin is not None:
        roi = percent(gross_profit - spend, spend) if gross_profit is not None and paid else None
    else:
        roi = romi
    return Metrics(
        impressions=totals.impressions,
        clicks=totals.clicks,
        ctr=percent(totals.clicks, totals.impressions),
        cpc=money_ratio(spend, totals.clicks) if paid else None,
        cpm=money_ratio(spend * THOUSAND, totals.impressions) if paid else None,
        spend=money(spend),
        leads=totals.leads,
        cpl=money_ratio(spend, paid_part.leads) if paid else None,
        deals=totals.deals,
        cr=percent(totals.converted_leads, totals.leads),
        deals_per_lead=percent(totals.deals, totals.leads),
        won_deals=totals.won_deals,
        revenue=money(revenue),
        average_check=money_ratio(revenue, totals.priced_deals),
        cpo=money_ratio(spend, paid_part.won_deals) if paid else None,
        new_customers=totals.new_customers,
        cac=money_ratio(spend, paid_part.new_customers) if paid else None,
        romi=romi,
        roi=roi,
        roas=percent(paid_revenue, spend) if paid else None,
        drr=percent(spend, paid_revenue) if paid else None,
        sales_cycle_days=_round(Decimal(totals.cycle_days_sum) / totals.cycle_deals, Decimal("0.1"))
        if totals.cycle_deals
        else None,
        paid_leads=paid_part.leads,
        paid_won_deals=paid_part.won_deals,
        paid_revenue=money(paid_revenue),
        unpaid_revenue=money(revenue - paid_revenue - no_rate_revenue),
        no_rate_revenue=money(no_rate_revenue),
    )


def money(value: Decimal) -> Decimal:
    return _round(Decimal(value), KOPECK)


def money_ratio(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    if not denominator:
        return None
    return _round(Decimal(numerator) / Decimal(denominator), KOPECK)


def percent(numerator: Decimal | int, denominator: Decimal | int) -> Decimal | None:
    """``numerator / denominator × 100 %``; ``None`` when the denominator is zero (nothing to compare with)."""
    if not denominator:
        return None
    return _round(Decimal(numerator) * HUNDRED / Decimal(denominator), KOPECK)


def change(current: Decimal | int | None, previous: Decimal | int | None) -> Decimal | None:
    """Relative change in %, ``None`` when there is no previous value to compare with (or it was zero)."""
    if current is None or previous is None or not previous:
        return None
    return percent(Decimal(current) - Decimal(previous), abs(Decimal(previous)))


def _round(value: Decimal, quantum: Decimal) -> Decimal:
    """Half-up; a result that rounds to zero is zero, never ``-0.00`` (−0.00001 % of ROMI is "0.00" in every file)."""
    rounded = value.quantize(quantum, rounding=ROUND_HALF_UP)
    return rounded.copy_abs() if rounded.is_zero() else rounded
