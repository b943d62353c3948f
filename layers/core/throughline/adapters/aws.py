"""Cached boto3 clients. boto3 honours AWS_ENDPOINT_URL, so the local stack's moto server stands in unchanged."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()


@cache
def _client(service: str) -> Any:
    # Short connect timeouts and standard retries: an HTTP request waits on these calls.
    config = Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
    return boto3.session.Session().client(service, config=config)


def client(service: str) -> Any:
    """One client per service per process (clients are thread-safe; building one is not cheap)."""
    with _lock:
        return _client(service)


def reset_clients() -> None:
    """Forget cached clients (the local stack and tests switch endpoints)."""
    with _lock:
        _client.cache_clear()
