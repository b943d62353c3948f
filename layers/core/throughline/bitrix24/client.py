"""A small Bitrix24 REST client for an inbound webhook: JSON POST, typed errors, pacing, retries, batch, fast scans.

Why not b24pysdk or fast_bitrix24: neither paces to the portal's leaky bucket across Lambda instances nor bounds its
waits by the Lambda deadline, and fast_bitrix24 drags asyncio/aiohttp onto a cold start (research/bitrix24.md §5).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from throughline.bitrix24.errors import (
    BitrixError,
    BitrixUnavailable,
    NotEnoughTime,
    OperationTimeLimit,
    QueryLimitExceeded,
    error_from_response,
)
from throughline.bitrix24.pacing import LeakyBucket
from throughline.bitrix24.query import build_query

# urllib3 logs each request line at DEBUG, and a webhook's request line carries its secret: never let it through.
logging.getLogger("urllib3").setLevel(logging.INFO)

PAGE_SIZE = 50
MAX_BATCH = 50
USER_AGENT = "throughline/0.1 (+https://github.com/throughline)"
# Methods that only read: safe to repeat after an error that may have reached the portal.
_READ_SUFFIXES = (".get", ".list", ".fields", ".findbycomm", ".current")
_READ_METHODS = {"profile", "user.get", "methods", "scope", "app.info", "server.time"}


def is_read_method(method: str) -> bool:
    method = method.lower()
    return method in _READ_METHODS or method.endswith(_READ_SUFFIXES)


@dataclass(frozen=True)
class Response:
    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchResult:
    """Per-command results and errors of one ``batch`` call, keyed by the command names we gave."""

    results: dict[str, Any]
    errors: dict[str, BitrixError]
    totals: dict[str, int]
    nexts: dict[str, int]

    def get(self, key: str) -> Any:
        """The command's result, or its error raised."""
        if key in self.errors:
            raise self.errors[key]
        return self.results.get(key)


class Deadline:
    """Seconds left to work, from the Lambda context; ``reserve`` keeps time to answer and clean up."""

    def __init__(self, remaining_seconds: Callable[[], float] | None = None, reserve: float = 5.0):
        self._remaining = remaining_seconds
        self.reserve = reserve

    @classmethod
    def from_context(cls, context: Any, reserve: float = 5.0) -> Deadline:
        return cls(lambda: context.get_remaining_time_in_millis() / 1000.0, reserve)

    def seconds_left(self) -> float:
        return float("inf") if self._remaining is None else self._remaining() - self.reserve


class Bitrix24Client:
    def __init__(
        self,
        webhook_url: str,
        *,
        pacer: LeakyBucket | None = None,
        session: requests.Session | None = None,
        deadline: Deadline | None = None,
        connect_timeout: float = 3.05,
        read_timeout: float = 30.0,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._base = webhook_url if webhook_url.endswith("/") else webhook_url + "/"
        self.pacer = pacer or LeakyBucket(rate=2.0, burst=50)
        self.session = session or new_session()
        self.deadline = deadline or Deadline()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self._sleep = sleep
        self.calls = 0  # HTTP requests sent by this client object (one per batch)

    def __repr__(self) -> str:
        return "Bitrix24Client(<webhook hidden>)"  # the URL carries the webhook secret

    # -- calls ----------------------------------------------------------------------------------------------------

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Response:
        """One REST method. Reads are retried on any transient error; writes only when they surely did not run."""
        return self._send(method, dict(params or {}), idempotent=is_read_method(method))

    def batch(self, commands: Mapping[str, tuple[str, Mapping[str, Any]]], *, halt: bool = False) -> BatchResult:
        """Up to 50 commands in one request. Keys must not be numbers (PHP would turn the map into a list)."""
        if not commands:
            return BatchResult({}, {}, {}, {})
        if len(commands) > MAX_BATCH:
            raise ValueError(f"a batch holds at most {MAX_BATCH} commands, got {len(commands)}")
        for key in commands:
            if not key or key.isdigit() or not key.replace("_", "").isalnum():
                raise ValueError(f"batch command keys must be non-numeric words, got {key!r}")
        cmd = {key: f"{method}?{build_query(params)}" for key, (method, params) in commands.items()}
        idempotent = all(is_read_method(method) for method, _ in commands.values())
        response = self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd}, idempotent=idempotent)
        body = response.result if isinstance(response.result, dict) else {}
        errors = {
            key: error_from_response(400, value, commands[key][0] if key in commands else None)
            for key, value in _as_map(body.get("result_error")).items()
        }
        return BatchResult(
            results=_as_map(body.get("result")),
            errors=errors,
            totals={key: int(value) for key, value in _as_map(body.get("result_total")).items()},
            nexts={key: int(value) for key, value in _as_map(body.get("result_next")).items()},
        )

    def list_all(self, method: str, params: Mapping[str, Any] | None = None, *, id_key: str = "ID") -> Iterator[dict]:
        """Every row of a list method by the fast scan: ``>ID`` windows, ``order ID ASC``, ``start=-1`` (no count).

        ``crm.item.list`` wraps rows in ``items`` and names the key ``id``; pass ``id_key="id"`` for it.
        """
        params = dict(params or {})
        base_filter = dict(params.pop("filter", {}) or {})
        last_id = int(base_filter.pop(f">{id_key}", 0) or 0)  # a caller may resume after a known id
        while True:
            page_params = {
                **params,
                "order": {id_key: "ASC"},
                "filter": {**base_filter, f">{id_key}": last_id},
                "start": -1,
            }
            rows = self.call(method, page_params).result
            if isinstance(rows, dict) and "items" in rows:
                rows = rows["items"]
            rows = rows or []
            yield from rows
            if len(rows) < PAGE_SIZE:
                return
            last_id = int(rows[-1][id_key])

    # -- transport ------------------------------------------------------------------------------------------------

    def _send(self, method: str, payload: dict[str, Any], *, idempotent: bool) -> Response:
        attempt = 0
        while True:
            attempt += 1
            if self._time_left_for_request() <= 0:
                raise NotEnoughTime(0.0, method, f"{self._time_left():.1f} s left, less than a request may take")
            self.pacer.acquire(max_wait=self._time_left_for_request())
            try:
                return self._post(method, payload)
            except BitrixError as error:
                if isinstance(error, QueryLimitExceeded):
                    self.pacer.saturated()
                if not self._should_retry(error, attempt, idempotent):
                    raise
                delay = self._backoff(error, attempt)
                if delay > self._time_left_for_request():
                    raise
                self._sleep(delay)

    def _post(self, method: str, payload: dict[str, Any]) -> Response:
        self.calls += 1
        timeout = (self.connect_timeout, max(1.0, min(self.read_timeout, self._time_left())))
        try:
            http = self.session.post(self._base + method + ".json", json=payload, timeout=timeout)
        except requests.ConnectTimeout as error:
            raise BitrixUnavailable(
                "CONNECT_TIMEOUT", type(error).__name__, None, method, maybe_executed=False
            ) from None
        except requests.Timeout as error:
            raise BitrixUnavailable("TIMEOUT", type(error).__name__, None, method) from None
        except requests.ConnectionError as error:
            refused = "NewConnectionError" in repr(error) or "Connection refused" in str(error)
            raise BitrixUnavailable(
                "CONNECTION_ERROR", type(error).__name__, None, method, maybe_executed=not refused
            ) from None
        try:
            body = http.json()
        except ValueError:
            body = None
        if http.status_code == 200 and isinstance(body, dict) and "error" not in body:
            return Response(
                result=body.get("result"),
                total=body.get("total"),
                next=body.get("next"),
                time=body.get("time") or {},
            )
        raise error_from_response(http.status_code, body, method)

    def _should_retry(self, error: BitrixError, attempt: int, idempotent: bool) -> bool:
        if not error.retryable or attempt >= self.max_attempts:
            return False
        if isinstance(error, OperationTimeLimit):
            return False  # blocked for minutes: the queue waits better than we do
        return idempotent or not error.maybe_executed

    def _backoff(self, error: BitrixError, attempt: int) -> float:
        if isinstance(error, QueryLimitExceeded):
            return 1.0 / self.pacer.rate  # the pacer already holds the next request until a slot drains
        return self.backoff_base * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)

    def _time_left(self) -> float:
        return self.deadline.seconds_left()

    def _time_left_for_request(self) -> float:
        # Keep room for the request itself: a connect plus a short answer.
        return self._time_left() - self.connect_timeout


def new_session() -> requests.Session:
    session = requests.Session()
    session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
    return session


def _as_map(value: Any) -> dict[str, Any]:
    """PHP serializes an empty map as ``[]``; a map with numeric keys may come back as a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return {str(index): item for index, item in enumerate(value)}
    return {}


__all__ = [
    "MAX_BATCH",
    "PAGE_SIZE",
    "BatchResult",
    "Bitrix24Client",
    "Deadline",
    "NotEnoughTime",
    "Response",
    "is_read_method",
]
