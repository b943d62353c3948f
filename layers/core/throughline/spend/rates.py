"""Currency rates beside the spend: ``rates/date=<YYYY-MM-DD>/rates.json``, so the report can say which it used.

From the portal (``crm.currency.list``: AMOUNT base-currency units per AMOUNT_CNT units of the currency) or from
the ``CURRENCY_RATES`` setting. Rates are expressed against REPORT_CURRENCY: 1 unit of a currency = rate × base.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from throughline.adapters.spend_store import RATES_PREFIX, SpendStore
from throughline.spend.rows import now_utc

PRECISION = Decimal("0.00000001")


def rates_key(day: date) -> str:
    return f"{RATES_PREFIX}date={day.isoformat()}/rates.json"


def rates_from_portal(currencies: Iterable[Mapping[str, Any]], report_currency: str) -> dict[str, str]:
    """Rates against ``report_currency`` from crm.currency.list rows (whatever the portal's own base currency)."""
    in_base: dict[str, Decimal] = {}
    for row in currencies:
        amount, count = Decimal(str(row["AMOUNT"])), Decimal(str(row.get("AMOUNT_CNT") or 1))
        if amount <= 0 or count <= 0:
            raise ValueError(f"the portal's rate for {row.get('CURRENCY')} is not positive")
        in_base[str(row["CURRENCY"])] = amount / count
    if report_currency not in in_base:
        raise ValueError(f"the portal has no rate for the report currency {report_currency}")
    divisor = in_base[report_currency]
    return {code: _text(rate / divisor) for code, rate in sorted(in_base.items())}


def store_rates(store: SpendStore, day: date, report_currency: str, rates: Mapping[str, str], source: str) -> dict:
    document = {
        "date": day.isoformat(),
        "base": report_currency,
        "rates": dict(rates),
        "source": source,
        "fetched_at": now_utc().isoformat().replace("+00:00", "Z"),
    }
    store.put_json(rates_key(day), document)
    return document


def _text(rate: Decimal) -> str:
    return format(rate.quantize(PRECISION).normalize(), "f")
