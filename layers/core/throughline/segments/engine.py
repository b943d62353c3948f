"""Segments from the CRM snapshot: pure logic, no I/O (``segments/job.py`` reads and writes).

A customer is a contact, or a company for deals that name one (B2B): a deal with ``COMPANY_ID`` belongs to its
company, else to its ``CONTACT_ID``. Deals naming neither, or a customer not in the snapshot, belong to no one.
A contact with no deal of its own that speaks for a company customer — named on one of the company's deals, or
belonging to (``COMPANY_ID``) a company that has deals — is not a customer of its own: it takes no segment (its
company carries it), so a B2B buyer's contact created last week is not a «Новичок». A contact with deals of its own
is segmented on those, whatever its company does.
A won deal is one in a success stage (``STAGE_SEMANTIC_ID`` S); its day is the report's (``report.build.won_day``):
``CLOSEDATE`` as written, else the day in the report's zone of its last move into a success stage in the stage
history, never ``DATE_MODIFY`` (a later edit must not move a win); a win dated after today counts as today, one with
neither date counts as a won deal with no day (in ``won_total`` only). Amounts are converted into the report currency
with the report's ``RateBook``; a deal whose currency has no rate, or whose amount is empty, negative or not a
number, counts as a win without an amount (the report's rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from throughline.segments.rules import SIZES, SegmentRule, SegmentRules

CONTACT, COMPANY = "contact", "company"


@dataclass
class Customer:
    kind: str  # contact | company
    id: int
    created: date | None = None
    assigned_by_id: str | None = None
    wins: list[tuple[date | None, Decimal | None]] = field(default_factory=list)  # (day, amount); None: unknown
    deals_total: int = 0
    open_deals: int = 0
    employees: str | None = None  # companies: the EMPLOYEES list value
    revenue: Decimal | None = None  # companies: REVENUE in the report currency
    company_id: int | None = None  # contacts: COMPANY_ID
    company_deals: int = 0  # contacts: the company deals that name it (CONTACT_ID of a deal with COMPANY_ID)

    def speaks_for_company(self, customers: Mapping[str, Customer]) -> bool:
        """A contact with no deal of its own whose company is the customer (see the module's docstring)."""
        if self.kind != CONTACT or self.deals_total:
            return False
        company = customers.get(f"{COMPANY}:{self.company_id}") if self.company_id else None
        return self.company_deals > 0 or (company is not None and company.deals_total > 0)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"


@dataclass(frozen=True)
class Frozen:
    """The thresholds of ``freeze: month`` rules and the month they were computed in."""

    month: str  # YYYY-MM
    thresholds: dict[str, Decimal | None]

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "thresholds": {k: None if v is None else str(v) for k, v in self.thresholds.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Frozen | None:
        if not data or not data.get("month"):
            return None
        thresholds = {str(k): None if v is None else Decimal(str(v)) for k, v in (data.get("thresholds") or {}).items()}
        return cls(str(data["month"]), thresholds)


@dataclass(frozen=True)
class Result:
    rows: list[dict[str, Any]]  # one per customer, sorted by key
    transitions: list[dict[str, Any]]
    frozen: Frozen | None
    skipped_deals: int  # deals with no customer in the snapshot


def day_of(value: Any, zone: ZoneInfo) -> date | None:
    """A snapshot datetime (ISO 8601 with an offset) as a day in ``zone``; a bare date as written."""
    if not value:
        return None
    text = str(value)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        try:
            return date.fromisoformat(text[:10])
        except ValueError:
            return None
    if parsed.tzinfo is None or len(text) <= 10:
        return parsed.date()
    return parsed.astimezone(zone).date()


def _decimal(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def collect_customers(
    deals: Iterable[Mapping[str, Any]],
    contacts: Iterable[Mapping[str, Any]],
    companies: Iterable[Mapping[str, Any]],
    *,
    convert: Callable[[Decimal, str, str], Decimal | None],
    zone: ZoneInfo,
    today: date,
    wins: Mapping[int, str],
) -> tuple[dict[str, Customer], int]:
    """Customers keyed ``contact:<id>`` / ``company:<id>`` with their deals; and the deals that had no customer.
    ``wins``: each deal's last move into a success stage (``report.build.last_wins`` of the stage history)."""
    from throughline.report.build import won_day

    customers: dict[str, Customer] = {}
    for row in contacts:
        customer = Customer(CONTACT, int(row["ID"]), day_of(row.get("DATE_CREATE"), zone), row.get("ASSIGNED_BY_ID"))
        customer.company_id = int(row.get("COMPANY_ID") or 0) or None
        customers[customer.key] = customer
    for row in companies:
        if str(row.get("IS_MY_COMPANY") or "N") == "Y":
            continue  # the portal's own company (invoices' seller), not a customer
        customer = Customer(COMPANY, int(row["ID"]), day_of(row.get("DATE_CREATE"), zone), row.get("ASSIGNED_BY_ID"))
        customer.employees = row.get("EMPLOYEES") or None
        revenue = _decimal(row.get("REVENUE") or 0)
        if revenue:
            customer.revenue = convert(revenue, str(row.get("CURRENCY_ID") or ""), today.isoformat())
        customers[customer.key] = customer
    skipped = 0
    for deal in deals:
        company, contact = int(deal.get("COMPANY_ID") or 0), int(deal.get("CONTACT_ID") or 0)
        key = f"{COMPANY}:{company}" if company else f"{CONTACT}:{contact}" if contact else None
        customer = customers.get(key) if key else None
        if company and contact and customer is not None and f"{CONTACT}:{contact}" in customers:
            customers[f"{CONTACT}:{contact}"].company_deals += 1
        if customer is None:
            skipped += 1
            continue
        customer.deals_total += 1
        semantic = str(deal.get("STAGE_SEMANTIC_ID") or "P")
        if semantic == "P":
            customer.open_deals += 1
        elif semantic == "S":
            won = won_day(deal, wins, zone)
            won = None if won is None else min(won, today)
            amount = _decimal(deal.get("OPPORTUNITY"))
            rated_on = (won or today).isoformat()
            currency = str(deal.get("CURRENCY_ID") or "")
            converted = None if amount is None or amount <= 0 else convert(amount, currency, rated_on)
            customer.wins.append((won, converted))
    return customers, skipped


@dataclass(frozen=True)
class Features:
    won_in_window: int
    won_total: int
    deals_total: int
    open_deals: int
    days_since_last_win: int | None
    days_since_first_contact: int | None
    average_check: Decimal | None  # over won deals in the window that have an amount
    revenue_total: Decimal
    last_win: date | None


def features(customer: Customer, today: date, window_days: int) -> Features:
    window_start = today - timedelta(days=window_days)  # 365: a win 365 days ago is still in (as Спящий's 183–365)
    in_window = [amount for day, amount in customer.wins if day is not None and day >= window_start]
    amounts = [amount for amount in in_window if amount is not None]
    last = max((day for day, _ in customer.wins if day is not None), default=None)
    return Features(
        won_in_window=len(in_window),
        won_total=len(customer.wins),
        deals_total=customer.deals_total,
        open_deals=customer.open_deals,
        days_since_last_win=(today - last).days if last else None,
        days_since_first_contact=(today - customer.created).days if customer.created else None,
        average_check=sum(amounts, Decimal(0)) / len(amounts) if amounts else None,
        revenue_total=sum((amount for _, amount in customer.wins if amount is not None), Decimal(0)),
        last_win=last,
    )


def percentile(values: list[Decimal], share: float) -> Decimal | None:
    """The nearest-rank percentile: the smallest value with at least ``share`` % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[rank - 1]


def _matches(rule: SegmentRule, found: Features, threshold: Decimal | None) -> bool:
    checks = (
        (rule.won_in_window, found.won_in_window),
        (rule.won_total, found.won_total),
        (rule.deals_total, found.deals_total),
        (rule.open_deals, found.open_deals),
        (rule.days_since_last_win, found.days_since_last_win),
        (rule.days_since_first_contact, found.days_since_first_contact),
    )
    if not all(bounds.holds(value) for bounds, value in checks if bounds is not None):
        return False
    if rule.average_check_percentile is not None:
        return threshold is not None and found.average_check is not None and found.average_check >= threshold
    return True


def rfm_scores(found: Mapping[str, Features]) -> dict[str, tuple[int, int, int]]:
    """Quintile scores 1–5 among customers with a won deal: recency (fewer days since the last win scores higher),
    frequency (won deals) and monetary value (won revenue). A buyer's score is the quintile of the middle of its rank
    among ``n`` buyers (position ``p`` of 0 … n-1: ``floor(5 (p + ½) / n) + 1``), so the scale is symmetric: with ten
    buyers two per score, a lone buyer 3 (not 1, the «lost customer» score), four buyers 1, 2, 4, 5. Equal values
    share the score of the middle of their ranks (five buyers all won 10 days ago: R 3 each, not 1)."""
    buyers = [key for key, item in found.items() if item.won_total]
    if not buyers:
        return {}

    def scores(value: Callable[[Features], Any]) -> dict[str, int]:
        ordered = sorted(buyers, key=lambda key: value(found[key]))
        span: dict[Any, list[int]] = {}
        for position, key in enumerate(ordered):
            span.setdefault(value(found[key]), [position, position])[1] = position
        total = len(ordered)
        by_value = {found_value: 5 * (low + high + 1) // (2 * total) + 1 for found_value, (low, high) in span.items()}
        return {key: by_value[value(found[key])] for key in buyers}

    # A buyer whose wins have no day (no CLOSEDATE, no stage history) ranks as the least recent, not as today's.
    recency = scores(lambda item: -math.inf if item.days_since_last_win is None else -item.days_since_last_win)
    frequency = scores(lambda item: item.won_total)
    monetary = scores(lambda item: item.revenue_total)
    return {key: (recency[key], frequency[key], monetary[key]) for key in buyers}


def company_size(customer: Customer, rules: SegmentRules) -> str | None:
    """small / medium / large from the EMPLOYEES list value and REVENUE; the larger of the two; None if neither."""
    config = rules.company_size
    found = []
    if customer.employees and customer.employees in config.employees:
        found.append(config.employees[customer.employees])
    if customer.revenue is not None and customer.revenue > 0:
        revenue = customer.revenue
        found.append(
            "small"
            if revenue <= Decimal(str(config.revenue_small_max))
            else "medium"
            if revenue <= Decimal(str(config.revenue_medium_max))
            else "large"
        )
    return max(found, key=SIZES.index) if found else None


def assign(
    customers: Mapping[str, Customer],
    rules: SegmentRules,
    today: date,
    *,
    previous: Mapping[str, Mapping[str, Any]] | None = None,
    frozen: Frozen | None = None,
    skipped_deals: int = 0,
) -> Result:
    """Each customer's segment, RFM and (companies) size; the moves since ``previous`` (last night's rows by key).

    ``frozen`` is last night's :class:`Frozen`: in the same calendar month its thresholds are kept and so is the
    membership of frozen segments; in a new month both are reviewed.
    """
    previous = previous or {}
    month = today.strftime("%Y-%m")
    found = {key: features(customer, today, rules.window_days) for key, customer in customers.items()}
    averages = [item.average_check for item in found.values() if item.won_in_window and item.average_check is not None]
    same_month = frozen is not None and frozen.month == month
    thresholds: dict[str, Decimal | None] = {}
    for rule in rules.segments:
        if rule.average_check_percentile is None:
            continue
        # A threshold frozen as None (no buyer yet that month: a first night on an empty or fresh portal) is no
        # threshold: it is computed again each night until there is one, or nobody could be VIP all month.
        if rule.freeze and same_month and frozen is not None and frozen.thresholds.get(rule.code) is not None:
            thresholds[rule.code] = frozen.thresholds[rule.code]
        else:
            thresholds[rule.code] = percentile(averages, rule.average_check_percentile)
    frozen_codes = {rule.code for rule in rules.segments if rule.freeze}
    scores = rfm_scores(found)
    rows, transitions = [], []
    for key in sorted(customers, key=lambda item: (item.split(":")[0], int(item.split(":")[1]))):
        customer, item = customers[key], found[key]
        before = previous.get(key) or {}
        segment = None
        kept = before.get("segment")
        if customer.speaks_for_company(customers):
            segment = None  # its company is the customer and carries the segment
        elif same_month and kept in frozen_codes and rules.rule(str(kept)) is not None:
            segment = kept  # a frozen segment holds until the monthly review
        else:
            for rule in rules.segments:
                if _matches(rule, item, thresholds.get(rule.code)):
                    segment = rule.code
                    break
        since = before.get("since") if segment == before.get("segment") and before.get("since") else today.isoformat()
        score = scores.get(key)
        row: dict[str, Any] = {
            "customer": key,
            "kind": customer.kind,
            "id": customer.id,
            "segment": segment,
            "since": since if segment else None,
            "rfm": "".join(str(part) for part in score) if score else None,
            "r": score[0] if score else None,
            "f": score[1] if score else None,
            "m": score[2] if score else None,
            "won_total": item.won_total,
            "won_in_window": item.won_in_window,
            "deals_total": item.deals_total,
            "open_deals": item.open_deals,
            "revenue_total": str(item.revenue_total),
            "average_check": None if item.average_check is None else str(item.average_check.quantize(Decimal("0.01"))),
            "last_win": item.last_win.isoformat() if item.last_win else None,
            "first_contact": customer.created.isoformat() if customer.created else None,
            "assigned_by_id": customer.assigned_by_id,
        }
        if customer.kind == COMPANY:
            row["size"] = company_size(customer, rules)
        rows.append(row)
        if previous and before.get("segment") != segment:
            transitions.append(
                {"customer": key, "kind": customer.kind, "id": customer.id, "date": today.isoformat(),
                 "from": before.get("segment"), "to": segment, "assigned_by_id": customer.assigned_by_id}
            )  # fmt: skip
    if same_month and frozen is not None:
        kept_thresholds = {code: value for code, value in frozen.thresholds.items() if value is not None}
        kept_thresholds.update({code: value for code, value in thresholds.items() if code not in kept_thresholds})
        new_frozen = Frozen(month, kept_thresholds)
    else:
        new_frozen = Frozen(month, {code: thresholds[code] for code in thresholds if code in frozen_codes})
    return Result(rows, transitions, new_frozen, skipped_deals)
