"""Google Ads REST sandbox: the OAuth refresh-token grant and ``googleAds:searchStream`` with GAQL at campaign level.

Follows developers.google.com/google-ads/api/rest (auth, common/search, handle-errors) and the reference of
SearchGoogleAdsStreamResponse / GoogleAdsFailure:
- ``POST /token`` (form): ``grant_type=refresh_token`` with the client id/secret and a known refresh token gives a
  Bearer access token valid ``expires_in`` seconds; otherwise ``invalid_grant`` / ``invalid_client`` (RFC 6749).
- ``POST /<version>/customers/{id}/googleAds:searchStream`` with ``{"query"}``; only the served versions exist;
  customer ids are digits only; a customer under a manager needs ``login-customer-id`` (USER_PERMISSION_DENIED
  otherwise); a disabled customer answers CUSTOMER_NOT_ENABLED; ``developer-token`` is accepted and ignored.
- GAQL: snake_case fields from the campaign resource, ``WHERE segments.date BETWEEN 'a' AND 'b'``; unknown fields
  are QueryError.UNRECOGNIZED_FIELD.
- The answer is a JSON array of batches (≤10,000 rows each) with ``results``, a camelCase ``fieldMask`` and
  ``requestId``; int64 values are strings and zero values are omitted (proto3 JSON); rows with no impressions are
  not returned. Errors: ``{"error": {"code", "message", "status", "details": [GoogleAdsFailure]}}``.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from local.ad_sandboxes.base import SandboxServer, campaign_ids, daily_stats, json_answer

ALLOWED_FIELDS = {
    "segments.date", "campaign.id", "campaign.name", "campaign.status", "metrics.cost_micros", "metrics.clicks",
    "metrics.impressions", "customer.id", "customer.currency_code", "customer.time_zone",
    "customer.descriptive_name",
}  # fmt: skip
QUERY = re.compile(
    r"^\s*SELECT\s+(?P<fields>.+?)\s+FROM\s+campaign\s+WHERE\s+segments\.date\s+BETWEEN\s+"
    r"'(?P<from>\d{4}-\d{2}-\d{2})'\s+AND\s+'(?P<to>\d{4}-\d{2}-\d{2})'\s*$",
    re.IGNORECASE | re.DOTALL,
)
BATCH_ROWS = 10_000


class GoogleAdsSandbox(SandboxServer):
    name = "google-ads-sandbox"

    def __init__(
        self,
        customers: dict[str, tuple[str, str, int]] | None = None,
        *,
        managed_by: dict[str, str] | None = None,
        disabled: set[str] | None = None,
        client_id: str = "sandbox-client-id",
        client_secret: str = "sandbox-client-secret",
        refresh_token: str = "sandbox-refresh-token",
        versions: tuple[str, ...] = ("v24", "v25", "v26"),
        token_lifetime: int = 3599,
        **server: Any,
    ):
        super().__init__(**server)
        # customer id → (currency, time zone, campaigns)
        self.customers = customers or {"1234567890": ("RUB", "Europe/Moscow", 5)}
        self.managed_by = dict(managed_by or {})  # customer → manager customer id
        self.disabled = set(disabled or ())
        self.client = (client_id, client_secret)
        self.refresh_tokens = {refresh_token}
        self.versions = versions
        self.token_lifetime = token_lifetime
        self.access_tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self.faults: list[str] = []  # gRPC statuses answered to the next searchStream requests
        self.token_faults: list[int] = []  # HTTP statuses answered to the next token requests (an outage)
        self.stream_requests = 0

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def api_url(self, version: str = "v26") -> str:
        return f"{self.url}/{version}/"

    def campaigns(self, customer: str) -> list[str]:
        return campaign_ids(customer, self.customers[customer][2], start=2000)

    def expected_micros(self, customer: str, day_from: date, day_to: date) -> int:
        return sum(
            int(s.cost * 1_000_000)
            for s in daily_stats(customer, self.campaigns(customer), day_from, day_to, names=self.campaign_names)
        )

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)

    # -- HTTP -------------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        if method == "POST" and path == "/token":
            return self._token(headers, body)
        found = re.fullmatch(r"/(v\d+)/customers/([^/]+)/googleAds:searchStream", path)
        if method == "POST" and found and found.group(1) in self.versions:
            return self._search_stream(found.group(2), headers, body)
        return _error(404, "NOT_FOUND", f"The requested URL {path} was not found on this server.")

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        with self.lock:
            if self.token_faults:
                status = self.token_faults.pop(0)
                return json_answer(status, {"error": "internal_failure", "error_description": "Backend Error"})
        if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return json_answer(400, {"error": "invalid_request", "error_description": "form body required"})
        form = dict(parse_qsl(body.decode()))
        if form.get("grant_type") != "refresh_token":
            return json_answer(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"})
        if (form.get("client_id"), form.get("client_secret")) != self.client:
            return json_answer(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        if form.get("refresh_token") not in self.refresh_tokens:
            return json_answer(
                400, {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
            )
        token = "ya29.sandbox-" + secrets.token_urlsafe(24)
        with self.lock:
            self.access_tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_issued += 1
        return json_answer(
            200,
            {
                "access_token": token,
                "expires_in": self.token_lifetime,
                "scope": "https://www.googleapis.com/auth/adwords",
                "token_type": "Bearer",
            },
        )

    def _search_stream(self, customer: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self.lock:
            self.stream_requests += 1
            expires = self.access_tokens.get(token)
            if expires is None:
                return _failure(
                    401, "UNAUTHENTICATED", "authenticationError", "OAUTH_TOKEN_INVALID", "Oauth token is invalid."
                )
            if expires < time.monotonic():
                return _failure(
                    401, "UNAUTHENTICATED", "authenticationError", "OAUTH_TOKEN_EXPIRED", "Oauth token is expired."
                )
            if self.faults:
                status = self.faults.pop(0)
                if status == "RESOURCE_EXHAUSTED":
                    return _failure(
                        429,
                        status,
                        "quotaError",
                        "RESOURCE_EXHAUSTED",
                        "Too many requests. Retry in 1 seconds.",
                        retry_delay="1s",
                    )
                return _error(503 if status == "UNAVAILABLE" else 500, status, "The service is currently unavailable.")
        if not customer.isdigit():
            return _failure(
                400,
                "INVALID_ARGUMENT",
                "requestError",
                "INVALID_CUSTOMER_ID",
                "Invalid customer ID: digits only, without dashes.",
            )
        login = headers.get("login-customer-id")
        if login is not None and not login.isdigit():
            return _failure(
                400,
                "INVALID_ARGUMENT",
                "requestError",
                "INVALID_CUSTOMER_ID",
                "Invalid login-customer-id header: digits only.",
            )
        if customer not in self.customers:
            return _failure(
                403,
                "PERMISSION_DENIED",
                "authorizationError",
                "USER_PERMISSION_DENIED",
                "User doesn't have permission to access customer.",
            )
        manager = self.managed_by.get(customer)
        if manager and login != manager:
            return _failure(
                403,
                "PERMISSION_DENIED",
                "authorizationError",
                "USER_PERMISSION_DENIED",
                "User doesn't have permission to access customer. Note: If you're accessing a client "
                "customer, the manager's customer id must be set in the 'login-customer-id' header.",
            )
        if customer in self.disabled:
            return _failure(
                403,
                "PERMISSION_DENIED",
                "authorizationError",
                "CUSTOMER_NOT_ENABLED",
                "The customer account can't be accessed because it is not yet enabled or has been deactivated.",
            )
        try:
            query = json.loads(body)["query"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        parsed = QUERY.match(query)
        if not parsed:
            return _failure(
                400,
                "INVALID_ARGUMENT",
                "queryError",
                "UNEXPECTED_INPUT",
                "The sandbox serves SELECT … FROM campaign WHERE segments.date BETWEEN '…' AND '…'.",
            )
        fields = [f.strip() for f in parsed.group("fields").split(",")]
        unknown = [f for f in fields if f not in ALLOWED_FIELDS]
        if unknown:
            return _failure(
                400,
                "INVALID_ARGUMENT",
                "queryError",
                "UNRECOGNIZED_FIELD",
                f"Unrecognized fields in the query: '{unknown[0]}'.",
            )
        day_from, day_to = date.fromisoformat(parsed.group("from")), date.fromisoformat(parsed.group("to"))
        return (
            200,
            {"Content-Type": "application/json; charset=UTF-8"},
            self._batches(customer, fields, day_from, day_to),
        )

    def _batches(self, customer: str, fields: list[str], day_from: date, day_to: date) -> Iterator[bytes]:
        currency, zone, _ = self.customers[customer]
        mask = ",".join(_camel(f) for f in fields)
        request_id = secrets.token_hex(11)
        yield b"["
        rows: list[dict] = []
        first = True
        for stat in daily_stats(customer, self.campaigns(customer), day_from, day_to, names=self.campaign_names):
            values = {
                "segments.date": stat.day.isoformat(), "campaign.id": stat.campaign_id,
                "campaign.name": stat.campaign_name, "campaign.status": "ENABLED",
                "metrics.cost_micros": str(int(stat.cost * 1_000_000)), "metrics.clicks": str(stat.clicks),
                "metrics.impressions": str(stat.impressions), "customer.id": customer,
                "customer.currency_code": currency, "customer.time_zone": zone,
                "customer.descriptive_name": f"Customer {customer}",
            }  # fmt: skip
            row: dict[str, Any] = {}
            for field in fields:
                if values[field] == "0" and field.startswith("metrics."):
                    continue  # proto3 JSON leaves out zero values
                resource, _, name = field.partition(".")
                row.setdefault(_camel(resource), {})[_camel(name)] = values[field]
            if "campaign" in row:
                row["campaign"]["resourceName"] = f"customers/{customer}/campaigns/{stat.campaign_id}"
            if "customer" in row:
                row["customer"]["resourceName"] = f"customers/{customer}"
            rows.append(row)
            if len(rows) == BATCH_ROWS:
                yield (b"" if first else b",") + json.dumps(
                    {"results": rows, "fieldMask": mask, "requestId": request_id}, ensure_ascii=False
                ).encode()
                first, rows = False, []
        last = {"results": rows, "fieldMask": mask, "requestId": request_id,
                "queryResourceConsumption": str(len(rows) + 1)} if rows else {
                "fieldMask": mask, "requestId": request_id, "queryResourceConsumption": "1"}  # fmt: skip
        yield (b"" if first else b",") + json.dumps(last, ensure_ascii=False).encode() + b"]"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _error(code: int, status: str, message: str) -> tuple[int, dict, bytes]:
    return json_answer(code, {"error": {"code": code, "message": message, "status": status}})


def _failure(code: int, status: str, category: str, value: str, message: str, retry_delay: str | None = None):
    error: dict[str, Any] = {"errorCode": {category: value}, "message": message}
    if retry_delay:
        error["details"] = {
            "quotaErrorDetails": {
                "rateScope": "ACCOUNT",
                "rateName": "Requests per service per method",
                "retryDelay": retry_delay,
            }
        }
    failure = {
        "@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure",
        "errors": [error],
        "requestId": secrets.token_hex(11),
    }
    envelope = {
        "error": {
            "code": code,
            "message": "Request contains an invalid argument." if code == 400 else message,
            "status": status,
            "details": [failure],
        }
    }
    # searchStream errors arrive wrapped in the stream's array.
    return code, {"Content-Type": "application/json; charset=UTF-8"}, json.dumps([envelope]).encode()
