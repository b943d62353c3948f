"""Client-side pacing: the portal's leaky bucket mirrored (``LeakyBucket``), and what answers tell about each method's
cost and operating-time window (``MethodTimes``).


Bitrix24 adds 1 to a per-portal counter for each request and drains it at ``rate`` per second; above ``burst`` it
answers 503 QUERY_LIMIT_EXCEEDED. We keep the same counter locally and sleep before a request that would overflow
it. Each writer instance gets a share (rate and burst divided by the writer's maximum concurrency), so the sum of
all instances stays inside the portal's limit without any shared state.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

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


# limits.md: "one REST request must finish within 60 seconds. If processing takes longer, the request is interrupted".
PORTAL_REQUEST_LIMIT_SECONDS = 60.0
# What we assume a call costs before any answer told us: real portals take up to seconds per crm.lead.add.
UNKNOWN_METHOD_SECONDS = 2.0
# Operating time is kept in one-minute baskets: a basket drops out at least this long after the one before it.
OPERATING_BASKET_SECONDS = 60.0


class MethodTimes:
    """What the portal's answers said about each method: seconds per call and when its operating time frees up.

    Fed with every successful answer's ``time`` block (batch sub-commands give theirs in ``result_time``):

    - ``seconds(method)``: the longest ``duration`` among the last ``window`` answers, for sizing batches against the
      60-second request limit; after a batch failed without an answer (cut off at 60 s, or lost), ``penalize``
      doubles the estimate of its methods until an answer tells their real cost, so the next batch is smaller and a
      batch that is always cut off cannot come back for ever;
    - ``retry_at(method)``: when a method blocked with 429 ``OPERATION_TIME_LIMIT`` may be tried again. The 429 body
      has no ``time`` block; limits.md says "For the first retry, refer to ``operating_reset_at`` from the last
      successful response. If the error persists, wait for the next bucket reset."

    Thread-safe; one per portal per process, so warm invocations keep what earlier ones learned.
    """

    def __init__(self, window: int = 20, clock: Callable[[], float] = time.time):
        self._window = window
        self._clock = clock
        self._durations: dict[str, deque[float]] = {}
        self._reset_at: dict[str, float] = {}
        self._floors: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, method: str, time_block: Any) -> None:
        if not isinstance(time_block, Mapping):
            return
        method = method.lower()
        duration = _number(time_block.get("duration"))
        reset_at = _number(time_block.get("operating_reset_at"))
        with self._lock:
            if duration is not None and duration >= 0:
                self._durations.setdefault(method, deque(maxlen=self._window)).append(duration)
                self._floors.pop(method, None)  # a real answer beats a guess
            if reset_at is not None:
                self._reset_at[method] = reset_at

    def seconds(self, method: str, default: float = UNKNOWN_METHOD_SECONDS) -> float:
        with self._lock:
            durations = self._durations.get(method.lower())
            return max(max(durations) if durations else default, self._floors.get(method.lower(), 0.0))

    def penalize(self, methods: Iterable[str], default: float = UNKNOWN_METHOD_SECONDS) -> None:
        """A batch of these methods got no answer: assume each costs twice what we thought, until an answer says."""
        for method in set(methods):
            doubled = 2 * self.seconds(method, default)
            with self._lock:
                self._floors[method.lower()] = min(doubled, PORTAL_REQUEST_LIMIT_SECONDS)

    def known(self, method: str) -> bool:
        with self._lock:
            return bool(self._durations.get(method.lower()))

    def retry_at(self, method: str) -> float:
        """Unix time to try a blocked method again: the last ``operating_reset_at`` seen for it, moved on by whole
        baskets while it lies in the past (the next basket drops out later); a minute from now when none is known."""
        now = self._clock()
        with self._lock:
            reset_at = self._reset_at.get(method.lower())
        if reset_at is None:
            return now + OPERATING_BASKET_SECONDS
        if reset_at <= now:
            reset_at += math.ceil((now - reset_at) / OPERATING_BASKET_SECONDS + 1e-9) * OPERATING_BASKET_SECONDS
        return reset_at


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
