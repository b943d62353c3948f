"""A small Bitrix24 REST client for an inbound webhook: JSON POST, typed errors, pacing, retries, batch, fast scans.

Why not b24pysdk or fast_bitrix24: neither paces to the portal's leaky bucket across Lambda instances nor bounds its
waits by the Lambda deadline, and fast_bitrix24 drags asyncio/aiohttp onto a cold start (research/bitrix24.md §5).

Slow portals and the 60-second limit (limits.md). A cloud portal interrupts a request after 60 s, batch sub-calls
included, so a batch can run part-way: the commands that finished are done, the rest are not, and the client gets
500 ``INTERNAL_SERVER_ERROR`` (``BitrixUnavailable`` with ``maybe_executed``). What a caller uses:

- ``client.method_seconds(method)``: seconds one call of ``method`` took on this portal (the longest of the last 20
  answers' ``time.duration``, batch ``result_time`` included), ``UNKNOWN_METHOD_SECONDS`` (2 s) before any answer;
- ``client.batch_capacity(methods_per_item)``: how many items fit in one batch when each item sends these methods,
  so the batch stays within ``request_budget`` (half the portal's 60 s by default) and 50 commands; a batch of
  several commands that got no answer (5xx, timeout, broken body) doubles its methods' estimates until an answer
  gives their real cost, so a batch that is always cut off shrinks instead of coming back for ever;
- ``read_timeout`` defaults to 75 s, past the portal's 60 s, so we see the portal's own answer (or cut-off) instead
  of timing out first; it is still capped by the Lambda deadline;
- an ``OperationTimeLimit`` carries ``retry_at`` from the last successful answer's ``operating_reset_at`` for that
  method (the 429 body has none), as limits.md advises.

What a client learns is kept in a ``MethodTimes`` that ``bitrix24.portal`` shares per portal within the process.
Every ``requests`` failure (cut-off bodies, bad gzip, redirect loops, TLS errors…) becomes ``BitrixUnavailable``:
``maybe_executed`` unless the request surely never left.

A renamed portal (settings/how-to-call-rest-api/change-domen.md) answers 301/302 at its old address, and a client
that follows it turns the POST into a GET without parameters: ``batch`` then answers 200 with no results and no
errors. So redirects are never followed: the same POST is sent once more to the ``Location`` (same path, https or
loopback only), the client keeps the new address for its later calls, and the log and the ``PortalMoved`` metric
say «the portal moved: update BITRIX24_WEBHOOK_URL». A ``batch`` answer that lacks a command's key is
``BatchIncomplete``, never «not found».
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3

from throughline.bitrix24.errors import (
    BatchIncomplete,
    BitrixAccessDenied,
    BitrixBadRequest,
    BitrixError,
    BitrixUnavailable,
    NotEnoughTime,
    OperationTimeLimit,
    QueryLimitExceeded,
    error_from_response,
)
from throughline.bitrix24.pacing import (
    PORTAL_REQUEST_LIMIT_SECONDS,
    UNKNOWN_METHOD_SECONDS,
    LeakyBucket,
    MethodTimes,
)
from throughline.bitrix24.query import build_query
from throughline.config import is_loopback

PORTAL_MOVED = "the portal moved: update BITRIX24_WEBHOOK_URL"
_REDIRECTS = (301, 302, 303, 307, 308)

# urllib3 logs each request line at DEBUG, and a webhook's request line carries its secret: never let it through.
logging.getLogger("urllib3").setLevel(logging.INFO)

PAGE_SIZE = 50
MAX_BATCH = 50
USER_AGENT = "throughline/0.1 (+https://github.com/throughline)"
# Past the portal's own 60 s limit, so its answer (or its cut-off) reaches us before our timeout does.
DEFAULT_READ_TIMEOUT = PORTAL_REQUEST_LIMIT_SECONDS + 15
# How much of the portal's 60 s a batch may plan to use: observed costs vary from call to call.
DEFAULT_REQUEST_BUDGET = PORTAL_REQUEST_LIMIT_SECONDS / 2
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
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        times: MethodTimes | None = None,
        request_budget: float = DEFAULT_REQUEST_BUDGET,
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
        self.times = times or MethodTimes()
        self.request_budget = request_budget
        self.calls = 0  # HTTP requests sent by this client object (one per batch)
        self.moved_to: str | None = None  # the portal's new address (scheme://host) after a redirect, if any
        # «Access denied» answers seen (per batch command or call): records the webhook's user may not read or write.
        self.access_denied = 0
        # The portal's clock as its last answer gave it (``time.date_finish``, with its offset), if any.
        self.portal_time: str | None = None

    def __repr__(self) -> str:
        return "Bitrix24Client(<webhook hidden>)"  # the URL carries the webhook secret

    # -- what answers taught us -------------------------------------------------------------------------------------

    def method_seconds(self, method: str, default: float = UNKNOWN_METHOD_SECONDS) -> float:
        """Seconds one call of ``method`` takes on this portal: the longest ``time.duration`` of its last 20 answers
        (top-level or batch ``result_time``), or ``default`` before any answer."""
        return self.times.seconds(method, default)

    def batch_capacity(self, methods_per_item: Iterable[str], budget: float | None = None) -> int:
        """How many items fit in one batch when each item sends one command of each of ``methods_per_item``.

        The batch's expected seconds (the sum of ``method_seconds``) stay within ``budget`` (``request_budget``, half
        of the portal's 60 s limit, by default) and its commands within 50. At least 1: an item whose own commands
        take longer than the budget still has to go alone.
        """
        methods = list(methods_per_item)
        if not methods:
            raise ValueError("an item sends at least one command")
        per_item = sum(self.method_seconds(method) for method in methods)
        budget = self.request_budget if budget is None else budget
        by_time = int(budget // per_item) if per_item > 0 else MAX_BATCH
        return max(1, min(by_time, MAX_BATCH // len(methods)))

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
        try:
            response = self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd}, idempotent=idempotent)
        except BitrixUnavailable as error:
            if error.maybe_executed and len(commands) > 1:
                # No answer: perhaps cut off at the portal's 60 s. Plan the next batch of these methods smaller.
                self.times.penalize(method for method, _ in commands.values())
            raise
        body = response.result if isinstance(response.result, dict) else {}
        _check_complete(commands, body, halt)
        for key, time_block in _as_map(body.get("result_time")).items():
            if key in commands:
                self.times.observe(commands[key][0], time_block)
        errors = {
            key: self._with_retry_at(error_from_response(400, value, commands[key][0] if key in commands else None))
            for key, value in _as_map(body.get("result_error")).items()
        }
        self.access_denied += sum(isinstance(error, BitrixAccessDenied) for error in errors.values())
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
                response = self._post(method, payload)
            except BitrixError as error:
                self._with_retry_at(error)
                if isinstance(error, BitrixAccessDenied):
                    self.access_denied += 1
                if isinstance(error, QueryLimitExceeded):
                    self.pacer.saturated()
                if not self._should_retry(error, attempt, idempotent):
                    raise
                delay = self._backoff(error, attempt)
                if delay > self._time_left_for_request():
                    raise
                self._sleep(delay)
                continue
            self.times.observe(method, response.time)
            finished = response.time.get("date_finish") if isinstance(response.time, Mapping) else None
            if isinstance(finished, str) and finished:
                self.portal_time = finished
            return response

    def _with_retry_at(self, error: BitrixError) -> BitrixError:
        """A 429 body has no ``time`` block: take the retry time from the last successful answer for the method."""
        if isinstance(error, OperationTimeLimit) and error.retry_at is None and error.method:
            error.retry_at = self.times.retry_at(error.method)
        return error

    def _post(self, method: str, payload: dict[str, Any]) -> Response:
        url = self._base + method + ".json"
        http = self._post_once(url, method, payload)
        if http.status_code in _REDIRECTS:
            url = self._moved(url, http, method)
            http = self._post_once(url, method, payload)
            if http.status_code in _REDIRECTS:
                raise BitrixUnavailable("TOO_MANY_REDIRECTS", "the new address redirects again", http.status_code,
                                        method)  # fmt: skip
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

    def _post_once(self, url: str, method: str, payload: dict[str, Any]) -> requests.Response:
        self.calls += 1
        timeout = (self.connect_timeout, max(1.0, min(self.read_timeout, self._time_left())))
        try:
            # Never follow a redirect: requests would repeat a POST after a 301/302 as a GET without its body.
            return self.session.post(url, json=payload, timeout=timeout, allow_redirects=False)
        except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
            raise _unavailable(error, method) from None

    def _moved(self, url: str, http: requests.Response, method: str) -> str:
        """The address a redirect names, checked: the same path (a renamed portal keeps the called method's path,
        change-domen.md) over https, or http on a loopback host. Remembered for this client's later calls; logged
        (origin only: the path holds the webhook's secret) and counted as ``PortalMoved``."""
        location = urljoin(url, http.headers.get("Location") or "")
        old, new = urlsplit(url), urlsplit(location)
        if new.scheme == old.scheme and new.netloc == old.netloc and new.path == old.path:
            # A redirect to itself is no move but a loop (a broken proxy); the request may have reached the portal.
            raise BitrixUnavailable("TOO_MANY_REDIRECTS", "the portal redirects to the same address", None, method)
        safe_scheme = new.scheme == "https" or (new.scheme == "http" and is_loopback(new.hostname or ""))
        if not safe_scheme or new.path != old.path or not new.hostname or new.username or new.password:
            # Never send the webhook's secret to an address that is not the same portal path over a safe scheme.
            raise BitrixBadRequest("PORTAL_MOVED", f"{PORTAL_MOVED}; the redirect is not followed: it names "
                                   "another path or an insecure address", http.status_code, method)  # fmt: skip
        origin = f"{new.scheme}://{new.netloc}"  # no user or password (refused above): safe to log
        self._base = origin + urlsplit(self._base).path
        self.moved_to = origin
        _announce_move(origin, http.status_code, method)
        return location

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


def _unavailable(error: BaseException, method: str) -> BitrixUnavailable:
    """Any transport failure as ``BitrixUnavailable``; ``maybe_executed`` is False only when the request surely never
    reached the portal. ``from None`` at the raise site and the class name as the description keep the webhook URL
    (and its secret), which requests puts in its messages, out of logs and tracebacks."""
    name = type(error).__name__
    text = f"{error!r} {error}"
    if isinstance(error, requests.ConnectTimeout):
        return BitrixUnavailable("CONNECT_TIMEOUT", name, None, method, maybe_executed=False)
    if isinstance(error, requests.Timeout):
        return BitrixUnavailable("TIMEOUT", name, None, method)
    if isinstance(error, requests.exceptions.SSLError):
        # A failed handshake (untrusted certificate, wrong protocol) happens before the request is sent; a TLS error
        # while reading the answer may come after the portal ran it.
        unsent = any(mark in text for mark in _TLS_BEFORE_SENDING)
        return BitrixUnavailable("TLS_ERROR", name, None, method, maybe_executed=not unsent)
    if isinstance(error, requests.ConnectionError):
        unsent = any(mark in text for mark in _NOT_CONNECTED)
        return BitrixUnavailable("CONNECTION_ERROR", name, None, method, maybe_executed=not unsent)
    if isinstance(error, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        # The portal answered, so it ran the request; only its body was cut off or unreadable.
        return BitrixUnavailable("BROKEN_RESPONSE", name, None, method)
    if isinstance(error, requests.TooManyRedirects):
        return BitrixUnavailable("TOO_MANY_REDIRECTS", name, None, method)
    if isinstance(error, _NEVER_SENT):
        # Raised while preparing the request (a body that is not JSON, a malformed URL or header): nothing left.
        return BitrixUnavailable("REQUEST_NOT_SENT", name, None, method, maybe_executed=False)
    return BitrixUnavailable("TRANSPORT_ERROR", name, None, method)


# Marks of a connection that was never made, in requests'/urllib3's messages.
_NOT_CONNECTED = ("NewConnectionError", "NameResolutionError", "Connection refused", "Failed to resolve")
_TLS_BEFORE_SENDING = ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "handshake", "doesn't match", "hostname")
_NEVER_SENT = (
    requests.exceptions.InvalidJSONError,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _announce_move(origin: str, status: int, method: str) -> None:
    """The warning and the ``PortalMoved`` metric that template.yaml alarms on (imported here: the client itself
    needs no Powertools)."""
    from aws_lambda_powertools.metrics import MetricUnit

    from throughline.observability import logger, metrics

    logger.warning(PORTAL_MOVED, extra={"new_address": origin, "status": status, "method": method})
    metrics.add_metric(name="PortalMoved", unit=MetricUnit.Count, value=1)


def _check_complete(commands: Mapping[str, Any], body: Mapping[str, Any], halt: bool) -> None:
    """Every command of a batch answers in ``result`` or ``result_error`` (batch.md). A missing key is no «not
    found»: the request lost its parameters (a followed redirect) or was cut short, so nothing can be concluded."""
    results, errors = _as_map(body.get("result")), _as_map(body.get("result_error"))
    if halt and errors:
        return  # halt=1 stops at the first failed command: the later ones have no answer, as asked
    missing = [key for key in commands if key not in results and key not in errors]
    if missing:
        raise BatchIncomplete(
            "BATCH_INCOMPLETE", f"the batch answer lacks {len(missing)} of {len(commands)} commands", 200, "batch"
        )


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
    "DEFAULT_READ_TIMEOUT",
    "MAX_BATCH",
    "PAGE_SIZE",
    "PORTAL_REQUEST_LIMIT_SECONDS",
    "UNKNOWN_METHOD_SECONDS",
    "BatchResult",
    "Bitrix24Client",
    "Deadline",
    "MethodTimes",
    "NotEnoughTime",
    "Response",
    "is_read_method",
]
