"""What the ad-platform clients share: an HTTP session with sane timeouts, and retry pacing bounded by the deadline."""

from __future__ import annotations

import random

import requests
from requests.adapters import HTTPAdapter

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # a year of one account's rows can take a while to arrive
MAX_ATTEMPTS = 5


class PlatformError(RuntimeError):
    """A clear, secret-free message about what a platform refused."""

    retryable = False


class RetryableError(PlatformError):
    retryable = True

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=8, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Exponential backoff with full jitter (attempt 1 → up to ``base`` seconds)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
