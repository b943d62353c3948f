"""One Bitrix24 client per invocation, sharing the process's HTTP session and its share of the portal's bucket."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from throughline.bitrix24.client import Bitrix24Client, Deadline, new_session
from throughline.bitrix24.pacing import LeakyBucket, MethodTimes
from throughline.config import Settings

_lock = threading.Lock()


@cache
def _portal_pacer(webhook_url: str, rate: float, burst: float) -> LeakyBucket:
    # One bucket per portal per process: warm invocations keep what they know about the portal's counter.
    return LeakyBucket(rate=rate, burst=burst)


@cache
def _portal_times(webhook_url: str) -> MethodTimes:
    # What answers taught about each method (seconds per call, operating_reset_at) outlives one invocation too.
    return MethodTimes()


@cache
def _session(webhook_url: str) -> Any:
    return new_session()


def bitrix_client(settings: Settings, deadline: Deadline | None = None, **options: Any) -> Bitrix24Client:
    """A client for this invocation, sharing the process's HTTP session and its share of the portal's bucket."""
    settings.require("bitrix24_webhook_url")
    url = settings.bitrix24_webhook_url or ""
    share = settings.bitrix24_writer_concurrency
    with _lock:
        pacer = _portal_pacer(url, settings.bitrix24_rate_per_second / share, max(1.0, settings.bitrix24_burst / share))
        session = _session(url)
        options.setdefault("times", _portal_times(url))
    return Bitrix24Client(url, pacer=pacer, session=session, deadline=deadline, **options)


def side_client(settings: Settings, deadline: Deadline | None = None, **options: Any) -> Bitrix24Client:
    """A client for a job beside the writer (alerts, digests): the writer's instances share the portal's rate and
    burst among ``BITRIX24_WRITER_CONCURRENCY``; such a job takes one more share of the rate and a small burst, so
    it never drains the bucket the writer counts on (its few calls a day, measured in the demo, fit easily)."""
    settings.require("bitrix24_webhook_url")
    url = settings.bitrix24_webhook_url or ""
    share = settings.bitrix24_writer_concurrency + 1
    with _lock:
        pacer = _portal_pacer(url + "#side", settings.bitrix24_rate_per_second / share, 3.0)
        session = _session(url)
        options.setdefault("times", _portal_times(url))
    return Bitrix24Client(url, pacer=pacer, session=session, deadline=deadline, **options)


def reset_portal_state() -> None:
    """Forget the process's pacers and sessions (the local stack and tests point at new portals)."""
    with _lock:
        _portal_pacer.cache_clear()
        _session.cache_clear()
        _portal_times.cache_clear()
