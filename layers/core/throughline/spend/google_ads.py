"""Google Ads REST (no gRPC library): daily spend per campaign through ``googleAds:searchStream`` and GAQL.

Protocol (developers.google.com/google-ads/api/rest): an OAuth access token from the refresh-token grant;
``POST <api>/customers/{id}/googleAds:searchStream`` with ``{"query": GAQL}``; the answer is a JSON array of
batches whose int64 values (ids, costMicros, clicks, impressions) are strings and whose zero values may be absent.
``login-customer-id`` names the manager account when access goes through one; ``developer-token`` is optional
(sunset 2026-09-09). Errors carry a GoogleAdsFailure; quota and transient errors are retried with backoff.
Campaign level on purpose: Performance Max spend is missing at lower grains.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import requests
from pydantic import ValidationError

from throughline.adapters.google_oauth import GoogleAuthError, GoogleOAuth
from throughline.spend.http import CONNECT_TIMEOUT, MAX_ATTEMPTS, READ_TIMEOUT, PlatformError, RetryableError, backoff
from throughline.spend.importer import Deadline
from throughline.spend.json_stream import array_items
from throughline.spend.plan import Chunk
from throughline.spend.rows import SpendRow, invalid_reason

PLATFORM = "google_ads"
FIELDS = (
    "segments.date",
    "campaign.id",
    "campaign.name",
    "metrics.cost_micros",
    "metrics.clicks",
    "metrics.impressions",
    "customer.currency_code",
    "customer.time_zone",
)
RETRY_STATUSES = {"RESOURCE_EXHAUSTED", "UNAVAILABLE", "INTERNAL", "UNKNOWN", "DEADLINE_EXCEEDED", "ABORTED"}
HINTS = {
    "USER_PERMISSION_DENIED": "set GOOGLE_ADS_LOGIN_CUSTOMER_ID to the manager account that owns this customer",
    "CUSTOMER_NOT_ENABLED": "the account is not active (cancelled or suspended)",
    "OAUTH_TOKEN_REVOKED": "the refresh token was revoked — issue a new GOOGLE_ADS_REFRESH_TOKEN",
    "invalid_grant": "the refresh token expired or was revoked — issue a new GOOGLE_ADS_REFRESH_TOKEN (an OAuth "
    "consent screen in 'Testing' expires tokens after 7 days)",
    "invalid_client": "GOOGLE_ADS_CLIENT_ID / GOOGLE_ADS_CLIENT_SECRET are wrong",
}
MICROS = Decimal(1_000_000)
STREAM_CHUNK = 64 * 1024  # characters of the answer read at a time


class GoogleAdsError(PlatformError):
    pass


def gaql(date_from: date, date_to: date) -> str:
    return (
        f"SELECT {', '.join(FIELDS)} FROM campaign "
        f"WHERE segments.date BETWEEN '{date_from.isoformat()}' AND '{date_to.isoformat()}'"
    )


class GoogleAdsSource:
    platform = PLATFORM

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        customer_ids: tuple[str, ...],
        api_url: str,
        token_url: str,
        login_customer_id: str | None = None,
        developer_token: str | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        chunk_days: int = 31,
        ingested_at: datetime | None = None,
    ):
        self.customer_ids = tuple(_digits(c) for c in customer_ids)
        self.login_customer_id = _digits(login_customer_id) if login_customer_id else None
        self._developer_token = developer_token
        self._api = api_url if api_url.endswith("/") else api_url + "/"
        self.session = session or requests.Session()
        self.sleep = sleep
        self.oauth = GoogleOAuth(client_id=client_id, client_secret=client_secret, refresh_token=refresh_token,
                                 token_url=token_url, session=self.session, sleep=sleep)  # fmt: skip
        self.chunk_days = chunk_days
        self.ingested_at = ingested_at

    def __repr__(self) -> str:
        return f"GoogleAdsSource(customers={self.customer_ids!r})"

    def accounts(self) -> list[str]:
        return list(self.customer_ids)

    # -- OAuth ------------------------------------------------------------------------------------------------------

    def access_token(self, force: bool = False) -> str:
        try:
            return self.oauth.access_token(force)
        except GoogleAuthError as error:
            raise GoogleAdsError(str(error)) from None

    @property
    def tokens_issued(self) -> int:
        return self.oauth.tokens_issued

    # -- reports ----------------------------------------------------------------------------------------------------

    def fetch(self, chunk: Chunk, deadline: Deadline) -> Iterator[SpendRow]:
        url = f"{self._api}customers/{chunk.account_id}/googleAds:searchStream"
        body = json.dumps({"query": gaql(chunk.date_from, chunk.date_to)})
        attempt = 0
        refreshed = False
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.access_token()}", "Content-Type": "application/json"}
                if self.login_customer_id:
                    headers["login-customer-id"] = self.login_customer_id
                if self._developer_token:
                    headers["developer-token"] = self._developer_token
                response = self.session.post(
                    url, data=body, headers=headers, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True
                )
                if response.status_code == 200:
                    # Read batch by batch: the answer whole is ~2.5 kB a row as text and as much again parsed.
                    # The first batch decides about retrying (an error comes alone, as the array's one element).
                    response.encoding = "utf-8"
                    batches = array_items(response.iter_content(chunk_size=STREAM_CHUNK, decode_unicode=True))
                    first = next(batches, None)
                    payload: Any = [] if first is None else [first]
                else:
                    payload = _json(response)  # an error: a small envelope (or an HTML page)
            except RetryableError as error:  # the OAuth endpoint could not answer: back off like any call
                failure: PlatformError = error
            except requests.RequestException as error:
                failure = RetryableError(f"Google Ads unreachable: {type(error).__name__}")
            except ValueError as error:  # no JSON array of batches
                response.close()
                raise GoogleAdsError(f"Google Ads searchStream answered no JSON array of batches ({error})") from None
            else:
                failure_or_none = _failure(response.status_code, payload)
                if failure_or_none is None:
                    try:
                        yield from self.parse(itertools.chain(payload, batches), chunk.account_id)
                    finally:
                        response.close()
                    return
                response.close()
                failure = failure_or_none
                if response.status_code == 401 and not refreshed:
                    self.access_token(force=True)  # expired early or revoked: one fresh token, then give up
                    refreshed = True
                    continue
            attempt += 1
            if not failure.retryable or attempt >= MAX_ATTEMPTS:
                raise failure
            wait = getattr(failure, "retry_after", None) or backoff(attempt, base=2.0)
            if deadline.seconds_left() < wait + 5:
                raise failure
            self.sleep(wait)

    def parse(self, batches: Iterable[Any], account_id: str) -> Iterator[SpendRow]:
        """Rows of searchStream batches (a list, or the stream's batches as they arrive). An error after rows were
        read (the stream failing part way) fails the chunk: its rows are already handed on, so it is not retried in
        this run, and the chunk — stored whole or not at all — is left for the next."""
        if isinstance(batches, dict | str | bytes) or not isinstance(batches, Iterable):
            raise GoogleAdsError("Google Ads searchStream answered something other than a JSON array of batches")
        number = 0
        try:
            for batch in batches:
                if isinstance(batch, dict) and "error" in batch:
                    failure = _failure(200, [batch]) or GoogleAdsError("Google Ads searchStream sent an error")
                    raise type(failure)(f"{failure} (after {number} rows of the stream)")
                results = batch.get("results", []) if isinstance(batch, dict) else None
                if not isinstance(results, list):
                    message = "Google Ads searchStream sent a batch that is no object with a list of results"
                    raise GoogleAdsError(message)
                for result in results:
                    number += 1
                    try:
                        row = self._row(result, account_id)
                    except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as error:
                        # A result without its date or currency, a count that is no integer, a negative cost…: the
                        # answer is not what the API documents, and the chunk is refused whole with the reason.
                        raise GoogleAdsError(f"Google Ads searchStream result {number}: {_reason(error)}") from None
                    yield row
                del results, batch  # the batch goes before the next is read
        except requests.RequestException as error:
            broke = f"Google Ads searchStream broke off after {number} rows: {type(error).__name__}"
            raise RetryableError(broke) from None
        except ValueError as error:  # the stream's text is no JSON array (cut short, malformed)
            raise GoogleAdsError(f"Google Ads searchStream answer after {number} rows: {error}") from None

    def _row(self, result: dict[str, Any], account_id: str) -> SpendRow:
        segments, campaign = result.get("segments", {}), result.get("campaign", {})
        metrics, customer = result.get("metrics", {}), result.get("customer", {})
        costs = str(metrics.get("costMicros", "0"))
        if not re.fullmatch(r"[0-9]{1,20}", costs):  # int64 micros as a decimal string (or a JSON number)
            raise ValueError(f"costMicros {costs[:40]!r} is not a count of micros")
        return SpendRow(
            date=date.fromisoformat(segments["date"]),
            platform=PLATFORM,
            account_id=account_id,
            campaign_id=str(campaign["id"]),
            campaign_name=campaign.get("name", ""),
            impressions=int(metrics.get("impressions", "0")),
            clicks=int(metrics.get("clicks", "0")),
            cost=Decimal(costs) / MICROS,
            currency=customer["currencyCode"],
            include_vat=False,  # Google reports cost before taxes
            account_timezone=customer["timeZone"],
            ingested_at=self.ingested_at or datetime.now().astimezone(),
        )


def _failure(status: int, payload: Any) -> PlatformError | None:
    """None for a good answer; otherwise the error, from the envelope alone or wrapped in the stream's array."""
    envelope = None
    if isinstance(payload, dict) and "error" in payload:
        envelope = payload["error"]
    elif isinstance(payload, list):
        envelope = next((item["error"] for item in payload if isinstance(item, dict) and "error" in item), None)
    if envelope is None and status == 200:
        return None
    # No JSON error (e.g. the HTML 404 of a sunset API version): the HTTP status alone decides about retrying.
    envelope = envelope or {
        "code": status,
        "message": f"HTTP {status} (is GOOGLE_ADS_API_URL a live API version?)" if status == 404 else f"HTTP {status}",
    }
    grpc_status = str(envelope.get("status", ""))
    codes, retry_after, request_id = [], None, None
    for detail in envelope.get("details", []) or []:
        if "GoogleAdsFailure" not in str(detail.get("@type", "")):
            continue
        request_id = detail.get("requestId", request_id)
        for error in detail.get("errors", []):
            for category, value in (error.get("errorCode") or {}).items():
                codes.append((f"{category}.{value}", value, error.get("message", "")))
            delay = ((error.get("details") or {}).get("quotaErrorDetails") or {}).get("retryDelay")
            if delay:
                retry_after = _duration(delay)
    if codes:
        text = "; ".join(f"{name}: {message}" + (f" ({HINTS[value]})" if value in HINTS else "")
                         for name, value, message in codes)  # fmt: skip
    else:
        text = str(envelope.get("message", ""))
    message = f"Google Ads {grpc_status or status}: {text}" + (f" [request {request_id}]" if request_id else "")
    if grpc_status in RETRY_STATUSES or status in (429, 500, 502, 503, 504):
        return RetryableError(message, retry_after=retry_after)
    return GoogleAdsError(message)


def _reason(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return invalid_reason(error)
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r}"
    return f"{type(error).__name__}: {error}"[:300]


def _duration(value: str) -> float | None:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)s", str(value))
    return float(found.group(1)) if found else None


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return {}


def _digits(customer_id: str) -> str:
    digits = customer_id.replace("-", "").strip()
    if not digits.isdigit():
        raise PlatformError(f"Google Ads customer id {customer_id!r} must be 10 digits (dashes allowed)")
    return digits
