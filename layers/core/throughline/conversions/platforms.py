"""What the three platform senders share: a sent item, the outcome per conversion, HTTP retries with backoff."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

import requests

from throughline.bitrix24 import Deadline
from throughline.conversions.collect import Conversion
from throughline.spend.http import MAX_ATTEMPTS, PlatformError, RetryableError, backoff

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


class Rejected(PlatformError):
    """The platform refused the request's content (400): the conversions in it are rejected with this reason."""


@dataclass(frozen=True)
class Item:
    """One conversion on its way to one platform's goal."""

    ledger_id: str
    conversion: Conversion
    goal: str
    identifier: tuple[str, str]  # (kind, value): ("ClientId", "1234…"), ("gclid", "…"), ("rb_clickid", "…")
    transaction_id: str | None = None  # Google's: the id it deduplicates on (data_manager.transaction_id)


@dataclass(frozen=True)
class Outcome:
    state: str  # ledger state: sent, accepted, rejected, refused, failed
    reason: str | None = None
    upload_id: str | None = None


def money(amount: Decimal) -> str:
    """A plain decimal with two places and a dot (no exponent, no thousands separator)."""
    return format(amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP), "f")


def with_retries(
    send: Callable[[], requests.Response],
    classify: Callable[[requests.Response], None],
    deadline: Deadline,
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = MAX_ATTEMPTS,
) -> requests.Response:
    """Send until the answer is not a retryable failure: ``classify`` raises ``RetryableError`` (429, 5xx) or
    ``PlatformError``; connection errors are retryable. Backoff with jitter, never past the deadline."""
    last: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            response = send()
            classify(response)
            return response
        except requests.RequestException as error:
            last = RetryableError(f"unreachable ({type(error).__name__})")
        except RetryableError as error:
            last = error
        pause = max(backoff(attempt), getattr(last, "retry_after", None) or 0.0)
        if attempt == attempts or deadline.seconds_left() < pause + CONNECT_TIMEOUT + 5:
            break
        sleep(pause)
    assert last is not None
    raise last


__all__ = ["Item", "Outcome", "PlatformError", "Rejected", "RetryableError", "money", "with_retries"]
