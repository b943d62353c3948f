"""Client-side pacing that mirrors the portal's leaky bucket, so we wait instead of collecting 503s.

Bitrix24 adds 1 to a per-portal counter for each request and drains it at ``rate`` per second; above ``burst`` it
answers 503 QUERY_LIMIT_EXCEEDED. We keep the same counter locally and sleep before a request that would overflow
it. Each writer instance gets a share (rate and burst divided by the writer's maximum concurrency), so the sum of
all instances stays inside the portal's limit without any shared state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from throughline.bitrix24.errors import NotEnoughTime


class LeakyBucket:
    def __init__(
        self,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._level = 0.0
        self._updated = clock()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds slept so far: how much the portal's limit actually held us back

    def acquire(self, max_wait: float = float("inf")) -> float:
        """Take one request slot, sleeping if needed; returns the seconds waited.

        Raises ``NotEnoughTime`` instead of sleeping longer than ``max_wait``. The lock is held while sleeping on
        purpose: threads of one process then leave in order, each after its own wait.
        """
        with self._lock:
            self._drain()
            wait = max(0.0, (self._level + 1 - self.burst) / self.rate)
            if wait > max_wait:
                raise NotEnoughTime(wait)
            if wait:
                self._sleep(wait)
                self.waited += wait
                self._drain()
            self._level += 1
            return wait

    def saturated(self) -> None:
        """The portal said the bucket is full (a 503): believe it and wait a full slot before the next request."""
        with self._lock:
            self._drain()
            self._level = max(self._level, float(self.burst))

    @property
    def level(self) -> float:
        with self._lock:
            self._drain()
            return self._level

    def _drain(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._updated) * self.rate)
        self._updated = now
