"""Google Data Manager API sandbox: ``POST /v1/events:ingest`` for Google Ads offline conversions.

Follows developers.google.com/data-manager/api/reference/rest/v1/events/ingest and the devguides on events:
- ``Authorization: Bearer`` with an unexpired access token the Google OAuth sandbox issued (``GoogleAdsSandbox``);
  401 ``UNAUTHENTICATED`` otherwise.
- ``destinations`` required: ``operatingAccount.accountType`` ``GOOGLE_ADS`` with a digits-only ``accountId``, and
  ``productDestinationId`` one of the customer's conversion actions; a customer under a manager needs
  ``loginAccount`` (``PERMISSION_DENIED`` otherwise).
- ``events`` required, at most 2 000; each needs ``eventTimestamp`` (RFC 3339, not in the future) and an
  ``adIdentifiers`` click id (``gclid`` / ``gbraid`` / ``wbraid``, URL-safe base64 characters; no length is
  documented) or ``userData`` ``userIdentifiers`` SHA-256 hashes in the request's ``encoding`` (then required): ``HEX``
  64 lower-case hex characters, ``BASE64`` the base64 of the 32 bytes; ``currency`` three capital letters;
  ``conversionValue`` not negative; unknown fields are refused.
- Any invalid event fails the whole request: 400 ``INVALID_ARGUMENT`` with ``google.rpc.BadRequest``
  ``fieldViolations`` (``field`` = ``events[i]…``). Success: ``{"requestId"}``; ``validateOnly`` checks and stores
  nothing. Events are deduplicated by ``transactionId`` per destination: a second one is ingested but not counted.
- ``faults``: HTTP statuses answered to the next requests (an outage).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from local.ad_sandboxes.base import SandboxServer, json_answer

EVENT_FIELDS = {"transactionId", "eventTimestamp", "eventSource", "currency", "conversionValue", "adIdentifiers",
                "userData", "consent", "destinationReferences", "lastUpdatedTimestamp"}  # fmt: skip
CLICK = re.compile(r"^[A-Za-z0-9_\-]{1,500}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SOURCES = {"WEB", "APP", "IN_STORE", "PHONE", "OTHER"}


class DataManagerSandbox(SandboxServer):
    name = "data-manager-sandbox"

    def __init__(self, oauth: Any, actions: dict[str, set[str]] | None = None,
                 managed_by: dict[str, str] | None = None, **server: Any):  # fmt: skip
        super().__init__(**server)
        self.oauth = oauth  # the GoogleAdsSandbox whose /token issued the access tokens
        self.actions = {customer: set(ids) for customer, ids in (actions or {"1234567890": {"555"}}).items()}
        self.managed_by = dict(managed_by or {})
        self.faults: list[int] = []
        self.conversions: dict[tuple[str, str, str], dict[str, Any]] = {}  # (customer, action, transactionId)
        self.requests_ingested = 0
        self.clock = lambda: datetime.now(UTC)

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1/"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        with self.lock:
            if self.faults:
                status = self.faults.pop(0)
                return _status(status, "UNAVAILABLE" if status >= 500 else "RESOURCE_EXHAUSTED", "try again later")
        if method != "POST" or path != "/v1/events:ingest":
            return _status(404, "NOT_FOUND", f"no method {method} {path}")
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        with self.oauth.lock:
            valid = self.oauth.access_tokens.get(token, 0.0) > time.monotonic()
        if not valid:
            return _status(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        try:
            request = json.loads(body)
        except ValueError:
            return _status(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        if not isinstance(request, dict):
            return _status(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        unknown = set(request) - {"destinations", "events", "consent", "validateOnly", "encoding", "encryptionInfo"}
        if unknown:
            return _status(400, "INVALID_ARGUMENT", f"Unknown name {sorted(unknown)[0]!r}: Cannot find field.")
        destinations = request.get("destinations") or []
        if not destinations:
            return _bad([("destinations", "REQUIRED_FIELD_MISSING", "destinations is required")])
        violations: list[tuple[str, str, str]] = []
        targets = []
        for index, destination in enumerate(destinations):
            account = destination.get("operatingAccount") or {}
            customer, action = str(account.get("accountId") or ""), str(destination.get("productDestinationId") or "")
            if account.get("accountType") != "GOOGLE_ADS" or not customer.isdigit():
                violations.append((f"destinations[{index}].operatingAccount", "INVALID_ACCOUNT", "not a Google Ads id"))
                continue
            if action not in self.actions.get(customer, set()):
                violations.append((f"destinations[{index}].productDestinationId", "INVALID_PRODUCT_DESTINATION_ID",
                                   "no such conversion action"))  # fmt: skip
                continue
            manager = self.managed_by.get(customer)
            login = str((destination.get("loginAccount") or {}).get("accountId") or "")
            if manager and login != manager:
                return _status(403, "PERMISSION_DENIED", "The caller does not have permission (loginAccount)")
            targets.append((customer, action))
        events = request.get("events") or []
        if not events:
            violations.append(("events", "REQUIRED_FIELD_MISSING", "events is required"))
        if len(events) > 2000:
            return _bad([("events", "TOO_MANY_EVENTS", "at most 2000 events per request")])
        hashed = False
        encoding = request.get("encoding")
        for index, event in enumerate(events):
            violations += [(f"events[{index}].{field}", reason, text)
                           for field, reason, text in self._check(event, encoding)]  # fmt: skip
            hashed = hashed or "userData" in event
        if hashed and request.get("encoding") not in ("HEX", "BASE64"):
            violations.append(("encoding", "REQUIRED_FIELD_MISSING", "encoding is required for userData"))
        if violations:
            return _bad(violations)
        if not request.get("validateOnly"):
            with self.lock:
                self.requests_ingested += 1
                for customer, action in targets:
                    for event in events:
                        key = (customer, action, str(event.get("transactionId") or secrets.token_hex(8)))
                        self.conversions.setdefault(key, event)
        return json_answer(200, {"requestId": secrets.token_hex(12)})

    def _check(self, event: Any, encoding: Any = None) -> list[tuple[str, str, str]]:
        if not isinstance(event, dict):
            return [("", "INVALID_EVENT", "an event must be an object")]
        found: list[tuple[str, str, str]] = []
        for name in sorted(set(event) - EVENT_FIELDS):
            found.append((name, "UNKNOWN_FIELD", f"unknown field {name}"))
        stamp = event.get("eventTimestamp")
        try:
            moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError
            if moment > self.clock():
                found.append(("eventTimestamp", "INVALID_TIMESTAMP", "the event time is in the future"))
        except ValueError:
            found.append(("eventTimestamp", "INVALID_TIMESTAMP", "eventTimestamp must be an RFC 3339 time"))
        if "eventSource" in event and event["eventSource"] not in SOURCES:
            found.append(("eventSource", "INVALID_ENUM", "unknown event source"))
        if "currency" in event and not re.fullmatch(r"[A-Z]{3}", str(event["currency"])):
            found.append(("currency", "INVALID_CURRENCY_CODE", "currency must be an ISO 4217 code"))
        value = event.get("conversionValue")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
            found.append(("conversionValue", "INVALID_CONVERSION_VALUE", "conversionValue must be a number ≥ 0"))
        ads = event.get("adIdentifiers") or {}
        users = ((event.get("userData") or {}).get("userIdentifiers")) or []
        for name, click in ads.items():
            if name not in ("gclid", "gbraid", "wbraid"):
                found.append((f"adIdentifiers.{name}", "UNKNOWN_FIELD", f"unknown field {name}"))
            elif not CLICK.fullmatch(str(click)):
                found.append((f"adIdentifiers.{name}", "INVALID_CLICK_ID", f"the {name} cannot be decoded"))
        for position, entry in enumerate(users):
            for name, hashed in (entry or {}).items():
                if name not in ("emailAddress", "phoneNumber") or not _is_sha256(str(hashed), encoding):
                    found.append((f"userData.userIdentifiers[{position}]", "INVALID_HASH",
                                  f"user identifiers must be SHA-256 hashes, {encoding or 'HEX'} encoded"))  # fmt: skip
        if not ads and not users:
            found.append(("adIdentifiers", "REQUIRED_FIELD_MISSING", "a click id or user data is required"))
        return found


def _is_sha256(value: str, encoding: Any) -> bool:
    """A SHA-256 digest in the request's ``encoding``: 64 hex characters, or the 44-character base64 of 32 bytes."""
    if encoding == "BASE64":
        try:
            return len(value) == 44 and len(base64.b64decode(value, validate=True)) == 32
        except ValueError:
            return False
    return bool(HEX64.fullmatch(value))


def _status(code: int, status: str, message: str, details: list | None = None) -> tuple[int, dict, bytes]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return json_answer(code, {"error": error})


def _bad(violations: list[tuple[str, str, str]]) -> tuple[int, dict, bytes]:
    details = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": field, "reason": reason, "description": text}
                                    for field, reason, text in violations]}]  # fmt: skip
    return _status(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", details)
