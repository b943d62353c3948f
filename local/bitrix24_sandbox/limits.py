"""The two cloud limits of the REST API (limits.md): the request-rate leaky bucket and the per-method operating time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["LeakyBucket", "OperatingTime"]


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
    """Per-method execution time summed over ten one-minute baskets.

    Every executed call of a method adds ``cost_seconds`` to the current minute's basket. Once the sum over the last
    ten minutes is above ``limit_seconds``, further calls of that method are refused with ``OPERATION_TIME_LIMIT``
    until old baskets drop out; other methods are unaffected. Time is kept in whole microseconds so that repeated
    small costs add up exactly.
    """

    WINDOW_MINUTES = 10

    def __init__(self, limit_seconds: float, cost_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.limit_seconds = limit_seconds
        self.cost_seconds = cost_seconds
        self._clock = clock
        self._baskets: dict[str, dict[int, int]] = {}
        self._lock = threading.Lock()

    def is_blocked(self, method: str) -> bool:
        with self._lock:
            return self._used_micros(method) > round(self.limit_seconds * 1_000_000)

    def record(self, method: str) -> None:
        with self._lock:
            minute = int(self._clock() // 60)
            baskets = self._baskets.setdefault(method, {})
            baskets[minute] = baskets.get(minute, 0) + round(self.cost_seconds * 1_000_000)

    def used(self, method: str) -> float:
        """Seconds used by ``method`` in the current window (``time.operating``)."""
        with self._lock:
            return self._used_micros(method) / 1_000_000

    def reset_at(self, method: str) -> int:
        """Unix time at which the oldest basket of ``method`` drops out (``time.operating_reset_at``)."""
        with self._lock:
            self._used_micros(method)  # prunes expired baskets
            baskets = self._baskets.get(method)
            if baskets:
                return (min(baskets) + self.WINDOW_MINUTES) * 60
            return int(self._clock()) + self.WINDOW_MINUTES * 60

    def reset(self) -> None:
        with self._lock:
            self._baskets.clear()

    def _used_micros(self, method: str) -> int:
        baskets = self._baskets.get(method)
        if not baskets:
            return 0
        oldest_kept = int(self._clock() // 60) - self.WINDOW_MINUTES + 1
        for minute in [minute for minute in baskets if minute < oldest_kept]:
            del baskets[minute]
        return sum(baskets.values())
