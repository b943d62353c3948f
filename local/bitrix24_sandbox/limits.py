"""The two cloud limits of the REST API (limits.md): the request-rate leaky bucket and the per-method operating time."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["DEFAULT_METHOD_SECONDS", "REQUEST_TIME_LIMIT_SECONDS", "LeakyBucket", "OperatingTime"]

# limits.md, "Request Execution Time Limit": "one REST request must finish within 60 seconds"; batch sub-calls count.
REQUEST_TIME_LIMIT_SECONDS = 60.0
# Simulated seconds per executed call for writes, which cost most (a real portal runs automation, duplicate checks
# and events on each); every other method costs ``operating_cost_seconds`` (0.01 s by default). Real portals vary
# from tens of milliseconds to seconds per crm.lead.add: pass ``method_seconds`` to model a slow one.
DEFAULT_METHOD_SECONDS = {
    "crm.lead.add": 0.1,
    "crm.deal.add": 0.1,
    "crm.contact.add": 0.1,
    "crm.lead.update": 0.05,
    "crm.deal.update": 0.05,
    "crm.contact.update": 0.05,
    "crm.timeline.comment.add": 0.05,
}


class LeakyBucket:
    """Request-rate limit, kept per caller key (the portal is fixed, so the key is the caller's IP).

    Each accepted request adds 1 to the counter, which drains by ``rate`` per second. While the counter is above
    ``burst``, requests are refused with ``QUERY_LIMIT_EXCEEDED``.

    The docs do not say whether a refused request adds to the counter. We chose not to charge it: a client that backs
    off then gets through as soon as the counter has drained below the threshold, whereas charging refusals would keep
    a client that retries faster than ``rate`` locked out for good.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self.peak = 0.0  # the highest counter reached: shows whether a client came close to the limit

    def try_acquire(self, key: str) -> bool:
        """Charge one request to ``key``; ``False`` means the request must be refused."""
        with self._lock:
            now = self._clock()
            level, updated_at = self._levels.get(key, (0.0, now))
            level = max(0.0, level - (now - updated_at) * self.rate)
            if level > self.burst:
                self._levels[key] = (level, now)
                return False
            self._levels[key] = (level + 1.0, now)
            self.peak = max(self.peak, level + 1.0)
            return True

    def reset(self) -> None:
        with self._lock:
            self._levels.clear()
            self.peak = 0.0

    def reset_peak(self) -> None:
        with self._lock:
            self.peak = 0.0


class OperatingTime:
    """Per-method execution time summed over ten one-minute baskets (limits.md, "Resource Consumption Limits").

    A method's basket opens with the first call after the previous basket's minute is over and collects the cost of
    every call for 60 s from then; it drops out of the sum 10 minutes after it opened ("The countdown for the basket
    starts from the first recorded method call in the corresponding minute and lasts 10 minutes"), so baskets are
    not aligned to the calendar minute. The sum is checked before each call: once it is above ``limit_seconds``,
    further calls of that method are refused with ``OPERATION_TIME_LIMIT`` until old baskets drop out; the call that
    crosses the limit still completes. Other methods are unaffected. Time is kept in whole microseconds so that
    repeated small costs add up exactly.
    """

    WINDOW_SECONDS = 600
    BASKET_SECONDS = 60

    def __init__(self, limit_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.limit_seconds = limit_seconds
        self._clock = clock
        self._baskets: dict[str, list[list[float]]] = {}  # method -> [[opened_at, micros], ...], oldest first
        self._lock = threading.Lock()

    def is_blocked(self, method: str) -> bool:
        with self._lock:
            return self._used_micros(method) > round(self.limit_seconds * 1_000_000)

    def record(self, method: str, seconds: float, started_at: float | None = None) -> None:
        """Charge ``seconds`` of execution time to ``method``'s basket open at ``started_at`` (when the call began,
        default now), opening one if none is open then."""
        with self._lock:
            now = self._clock() if started_at is None else started_at
            self._used_micros(method)  # prunes expired baskets
            baskets = self._baskets.setdefault(method, [])
            if not baskets or now >= baskets[-1][0] + self.BASKET_SECONDS:
                baskets.append([now, 0])
            baskets[-1][1] += round(seconds * 1_000_000)

    def used(self, method: str) -> float:
        """Seconds used by ``method`` in the current window (``time.operating``)."""
        with self._lock:
            return self._used_micros(method) / 1_000_000

    def reset_at(self, method: str) -> int:
        """Unix time at which the oldest basket of ``method`` drops out (``time.operating_reset_at``), rounded up."""
        with self._lock:
            self._used_micros(method)  # prunes expired baskets
            baskets = self._baskets.get(method)
            opened = baskets[0][0] if baskets else self._clock()
            return math.ceil(opened + self.WINDOW_SECONDS)

    def reset(self) -> None:
        with self._lock:
            self._baskets.clear()

    def _used_micros(self, method: str) -> int:
        baskets = self._baskets.get(method)
        if not baskets:
            return 0
        now = self._clock()
        while baskets and baskets[0][0] + self.WINDOW_SECONDS <= now:
            baskets.pop(0)
        return int(sum(micros for _, micros in baskets))
