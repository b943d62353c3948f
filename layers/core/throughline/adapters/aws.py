"""Cached boto3 clients. boto3 honours AWS_ENDPOINT_URL, so the local stack's moto server stands in unchanged."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import boto3
from botocore.config import Config

_lock = threading.Lock()


@cache
def _session() -> Any:
    # One session for every client of the process: its loader caches what each client reads (the list of services,
    # endpoints.json, the partitions, the retry and defaults files). A session per client read them once per client:
    # capture_form's first call builds four (secrets, DynamoDB, S3, SQS), and that was most of its cold start.
    return boto3.session.Session()


@cache
def _client(service: str) -> Any:
    # Short connect timeouts and standard retries: an HTTP request waits on these calls.
    config = Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
    return _session().client(service, config=config)


def client(service: str) -> Any:
    """One client per service per process (clients are thread-safe; building one is not cheap, nor is a session
    thread-safe: both are built under the lock)."""
    with _lock:
        return _client(service)


def reset_clients() -> None:
    """Forget cached clients and their session (the local stack and tests switch endpoints and credentials)."""
    with _lock:
        _client.cache_clear()
        _session.cache_clear()
