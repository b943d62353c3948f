"""Monthly acquisition cohorts by source, with repeat purchases and LTV.

A customer is a person (contact) with at least one won deal. Their cohort is the month of their first won deal (in
the report's time zone) and the source of that deal. Month 0 is the acquisition month; a cohort has a column for
every month from 0 up to the month of ``as_of``. Revenue is cumulative: column m holds everything the cohort's
customers paid in months 0..m. LTV is that cumulative revenue per customer, to the kopeck (half up). The repeat-
purchase rate is the share of customers with two or more won deals by ``as_of``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, NamedTuple

from throughline.attribution.paths import MONEY_PLACES


class CohortDeal(NamedTuple):
    """A won deal. Anything with these attributes will do."""

    person_key: str
    won_at: datetime
    revenue: Decimal
    source: str


@dataclass(frozen=True)
class Cohort:
    month: str  # YYYY-MM, the acquisition month
    source: str
    customers: int
    repeat_customers: int
    revenue: tuple[Decimal, ...]  # cumulative, by month since acquisition (0 = the acquisition month)
    ltv: tuple[Decimal, ...]  # revenue[m] / customers

    @property
    def repeat_rate(self) -> Decimal:
        """Share of customers with two or more won deals, to 4 places."""
        return (Decimal(self.repeat_customers) / self.customers).quantize(Decimal("0.0001"), ROUND_HALF_UP)


def acquisition_cohorts(deals: Iterable[Any], as_of: datetime, zone: tzinfo = UTC) -> list[Cohort]:
    """Cohorts of the won deals up to ``as_of``, sorted by month, then source."""
    by_customer: dict[Any, list[tuple[datetime, Decimal, str]]] = defaultdict(list)
    for deal in deals:
        if deal.won_at <= as_of:
            by_customer[deal.person_key].append((deal.won_at, Decimal(deal.revenue), deal.source))
    last_month = _month_index(as_of.astimezone(zone))
    groups: dict[tuple[int, str], list[list[tuple[datetime, Decimal, str]]]] = defaultdict(list)
    for customer_deals in by_customer.values():
        customer_deals.sort(key=lambda deal: deal[0])
        first_at, _, source = customer_deals[0]
        groups[_month_index(first_at.astimezone(zone)), source].append(customer_deals)

    cohorts = []
    for (month, source), customers in sorted(groups.items()):
        monthly = [Decimal(0)] * (last_month - month + 1)
        for customer_deals in customers:
            for won_at, revenue, _ in customer_deals:
                monthly[_month_index(won_at.astimezone(zone)) - month] += revenue
        cumulative, running = [], Decimal(0)
        for amount in monthly:
            running += amount
            cumulative.append(running)
        count = len(customers)
        cohorts.append(
            Cohort(
                month=f"{month // 12:04d}-{month % 12 + 1:02d}",
                source=source,
                customers=count,
                repeat_customers=sum(1 for customer_deals in customers if len(customer_deals) > 1),
                revenue=tuple(cumulative),
                ltv=tuple((amount / count).quantize(MONEY_PLACES, ROUND_HALF_UP) for amount in cumulative),
            )
        )
    return cohorts


def _month_index(moment: datetime) -> int:
    return moment.year * 12 + moment.month - 1
