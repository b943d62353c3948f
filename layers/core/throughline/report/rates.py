"""Currency rates for the report: the spend import's ``rates/date=…/rates.json`` first, the CRM's own rates second.

A rates file says ``1 unit = rate × base``. Amounts are converted with the rate of their own day (the latest file on
or before it, else the earliest after it); ``crm.currency.list`` (``AMOUNT / AMOUNT_CNT`` in the portal's base
currency) fills in when no file knows a currency. The report lists which rate it used for each currency.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any


class RateBook:
    def __init__(
        self,
        currency: str,
        files: Iterable[Mapping[str, Any]] = (),
        crm_currencies: Iterable[Mapping[str, Any]] = (),
    ):
        self.currency = currency.upper()
        self._files = sorted(files, key=lambda item: str(item["date"]))
        self._dates = [str(item["date"]) for item in self._files]
        self._crm: dict[str, Decimal] = {}
        self._crm_base: str | None = None
        for row in crm_currencies:
            code = str(row.get("CURRENCY") or "").upper()
            amount, count = Decimal(str(row.get("AMOUNT") or "0")), Decimal(str(row.get("AMOUNT_CNT") or "1"))
            if row.get("BASE") == "Y":
                self._crm_base = code
            if code and amount > 0 and count > 0:  # a rate of 0 (or less) is no rate
                self._crm[code] = amount / count
        self._cache: dict[tuple[str, str], tuple[Decimal, str | None, str] | None] = {}
        self._used: set[str] = set()

    def convert(self, amount: Decimal, currency: str, day: str) -> Decimal | None:
        """``amount`` in ``currency`` on ``day`` (YYYY-MM-DD…) in the report currency; ``None`` without a rate."""
        currency = (currency or self.currency).upper()
        if currency == self.currency or not amount:
            return amount
        rate = self.rate(currency, day[:10])
        if rate is None:
            return None
        self._used.add(currency)
        return amount * rate[0]

    def rate(self, currency: str, day: str) -> tuple[Decimal, str | None, str] | None:
        """(rate into the report currency, the rate's date, where it came from)."""
        key = (currency, day)
        if key not in self._cache:
            self._cache[key] = self._file_rate(currency, day) or self._crm_rate(currency)
        return self._cache[key]

    def used(self, day: str) -> list[dict[str, Any]]:
        """The rate of each currency that was converted, as of ``day``."""
        found = []
        for currency in sorted(self._used):
            rate = self.rate(currency, day)
            if rate is not None:
                found.append({"currency": currency, "rate": rate[0], "date": rate[1], "source": rate[2]})
        return found

    def _file_rate(self, currency: str, day: str) -> tuple[Decimal, str | None, str] | None:
        if not self._files:
            return None
        position = bisect_right(self._dates, day)
        ordered = list(reversed(self._files[:position])) + self._files[position:]
        for item in ordered:
            rates = {str(code).upper(): _rate(value) for code, value in (item.get("rates") or {}).items()}
            base = str(item.get("base") or "").upper()
            rates[base] = Decimal(1)
            if rates.get(currency) and rates.get(self.currency):
                return rates[currency] / rates[self.currency], str(item["date"]), f"rates/{item.get('source') or ''}"
        return None

    def _crm_rate(self, currency: str) -> tuple[Decimal, str | None, str] | None:
        if currency not in self._crm or self.currency not in self._crm or not self._crm[self.currency]:
            return None
        return self._crm[currency] / self._crm[self.currency], None, "crm.currency.list"


def _rate(value: Any) -> Decimal | None:
    """A usable rate: a finite number above zero (a 0 from a feed would turn money into nothing), else ``None``."""
    try:
        rate = Decimal(str(value))
    except ArithmeticError:
        return None
    return rate if rate.is_finite() and rate > 0 else None
