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

Customer Match (``POST /v1/audienceMembers:ingest`` and ``:remove``, reference/rest/v1/audienceMembers, limits,
devguides/audiences): the same bearer and destination checks, ``productDestinationId`` one of the customer's
``user_lists``; ``audienceMembers`` required, at most 10 000 (the limit is documented for ingest; applied to remove
too); each member's ``userData.userIdentifiers`` 1–10 entries of exactly one ``emailAddress`` / ``phoneNumber``
SHA-256 hash in ``encoding`` (required); ingest needs ``termsOfService.customerMatchTermsOfServiceStatus``
``ACCEPTED`` and takes ``consent`` (ConsentStatus values only); remove takes neither (unknown fields refused).
Field violations carry the documented ``ErrorReason`` values (INVALID_USER_LIST_ID, TOO_MANY_AUDIENCE_MEMBERS,
TOO_MANY_USER_IDENTIFIERS, TERMS_AND_CONDITIONS_NOT_SIGNED, INVALID_SHA256_FORMAT, REQUIRED_FIELD_MISSING, ...).
Accepted requests are kept in ``audience_requests``; ``list_members`` holds each list's (kind, hash) identifiers.
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
MAX_AUDIENCE_MEMBERS = 10_000  # per IngestAudienceMembersRequest (limits page); the same bound is applied to remove
MAX_IDENTIFIERS = 10  # user identifiers in the UserData of one AudienceMember
CONSENT_STATUSES = {"CONSENT_STATUS_UNSPECIFIED", "CONSENT_GRANTED", "CONSENT_DENIED"}


class DataManagerSandbox(SandboxServer):
    name = "data-manager-sandbox"

    def __init__(self, oauth: Any, actions: dict[str, set[str]] | None = None,
                 managed_by: dict[str, str] | None = None, user_lists: dict[str, set[str]] | None = None,
                 **server: Any):  # fmt: skip
        super().__init__(**server)
        # customer → its Customer Match user list ids; (customer, list) → the (kind, hash) identifiers it holds
        self.user_lists = {customer: set(ids) for customer, ids in (user_lists or {"1234567890": {"777"}}).items()}
        self.list_members: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.audience_requests: list[tuple[str, dict[str, Any]]] = []  # (method, body) of every accepted request
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
        audience = path in ("/v1/audienceMembers:ingest", "/v1/audienceMembers:remove")
        if method != "POST" or (path != "/v1/events:ingest" and not audience):
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
        if audience:
            return self._audience(path.rsplit(":", 1)[1], request)
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

    def _audience(self, verb: str, request: dict[str, Any]) -> tuple[int, dict, bytes]:
        """``audienceMembers:ingest`` / ``:remove`` for Customer Match user lists (see the module docstring)."""
        allowed = {"destinations", "audienceMembers", "validateOnly", "encoding", "encryptionInfo"}
        if verb == "ingest":
            allowed |= {"consent", "termsOfService"}
        unknown = set(request) - allowed
        if unknown:
            return _status(400, "INVALID_ARGUMENT", f"Unknown name {sorted(unknown)[0]!r}: Cannot find field.")
        violations: list[tuple[str, str, str]] = []
        destinations = request.get("destinations") or []
        if not isinstance(destinations, list) or not destinations:
            return _bad([("destinations", "REQUIRED_FIELD_MISSING", "destinations is required")])
        targets = []
        for index, destination in enumerate(destinations):
            account = destination.get("operatingAccount") if isinstance(destination, dict) else None
            if not isinstance(account, dict):
                violations.append((f"destinations[{index}]", "INVALID_DESTINATION", "operatingAccount is required"))
                continue
            customer, user_list = (
                str(account.get("accountId") or ""),
                str(destination.get("productDestinationId") or ""),
            )
            if account.get("accountType") != "GOOGLE_ADS" or not customer.isdigit():
                violations.append((f"destinations[{index}].operatingAccount", "INVALID_ACCOUNT", "not a Google Ads id"))
                continue
            if user_list not in self.user_lists.get(customer, set()):
                violations.append((f"destinations[{index}].productDestinationId", "INVALID_USER_LIST_ID",
                                   "no such user list in the operating account"))  # fmt: skip
                continue
            manager = self.managed_by.get(customer)
            login_account = destination.get("loginAccount")
            login = str(login_account.get("accountId") or "") if isinstance(login_account, dict) else ""
            if manager and login != manager:
                return _status(403, "PERMISSION_DENIED", "The caller does not have permission (loginAccount)")
            targets.append((customer, user_list))
        members = request.get("audienceMembers") or []
        if not isinstance(members, list) or not members:
            violations.append(("audienceMembers", "REQUIRED_FIELD_MISSING", "audienceMembers is required"))
        elif len(members) > MAX_AUDIENCE_MEMBERS:
            return _bad([("audienceMembers", "TOO_MANY_AUDIENCE_MEMBERS",
                          f"at most {MAX_AUDIENCE_MEMBERS} audience members per request")])  # fmt: skip
        encoding = request.get("encoding")
        if encoding not in ("HEX", "BASE64"):
            violations.append(("encoding", "REQUIRED_FIELD_MISSING", "encoding is required for UserData uploads"))
        if verb == "ingest":
            terms = request.get("termsOfService")
            terms = terms.get("customerMatchTermsOfServiceStatus") if isinstance(terms, dict) else None
            if terms != "ACCEPTED":
                field, text = (
                    "termsOfService.customerMatchTermsOfServiceStatus",
                    "the Customer Match terms must be accepted",
                )
                violations.append((field, "TERMS_AND_CONDITIONS_NOT_SIGNED", text))
            violations += _consent_violations("consent", request.get("consent"))
        found: set[tuple[str, str]] = set()
        for index, member in enumerate(members if isinstance(members, list) else []):
            problems, identifiers = self._member(member, encoding, verb)
            violations += [(f"audienceMembers[{index}]{field}", reason, text) for field, reason, text in problems]
            found |= identifiers
        if violations:
            return _bad(violations)
        with self.lock:
            self.audience_requests.append((verb, request))
            if not request.get("validateOnly"):
                self.requests_ingested += 1
                for target in targets:
                    held = self.list_members.setdefault(target, set())
                    if verb == "ingest":
                        held |= found
                    else:
                        held -= found
        return json_answer(200, {"requestId": secrets.token_hex(12)})

    def _member(self, member: Any, encoding: Any, verb: str) -> tuple[list[tuple[str, str, str]], set]:
        if not isinstance(member, dict):
            return [("", "INVALID_AUDIENCE_MEMBER", "an audience member must be an object")], set()
        problems: list[tuple[str, str, str]] = []
        allowed = {"userData", "destinationReferences"} | ({"consent"} if verb == "ingest" else set())
        for name in sorted(set(member) - allowed):
            problems.append((f".{name}", "UNKNOWN_FIELD", f"unknown field {name}"))
        problems += _consent_violations(".consent", member.get("consent"))
        user_data = member.get("userData")
        users = user_data.get("userIdentifiers") if isinstance(user_data, dict) else None
        if not isinstance(users, list) or not users:
            return [*problems, (".userData", "REQUIRED_FIELD_MISSING", "userData.userIdentifiers is required")], set()
        if len(users) > MAX_IDENTIFIERS:
            problems.append((".userData.userIdentifiers", "TOO_MANY_USER_IDENTIFIERS",
                             f"at most {MAX_IDENTIFIERS} user identifiers per audience member"))  # fmt: skip
        identifiers: set[tuple[str, str]] = set()
        for position, entry in enumerate(users):
            field = f".userData.userIdentifiers[{position}]"
            if not isinstance(entry, dict) or len(entry) != 1:
                problems.append((field, "INVALID_AUDIENCE_MEMBER", "exactly one identifier per UserIdentifier"))
                continue
            ((name, hashed),) = entry.items()
            if name not in ("emailAddress", "phoneNumber"):
                problems.append((field, "UNKNOWN_FIELD", f"unsupported identifier {name}"))
            elif not _is_sha256(str(hashed), encoding):
                problems.append((field, "INVALID_SHA256_FORMAT",
                                 f"user identifiers must be SHA-256 hashes, {encoding or 'HEX'} encoded"))  # fmt: skip
            else:
                identifiers.add((name, str(hashed)))
        return problems, identifiers

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


def _consent_violations(field: str, consent: Any) -> list[tuple[str, str, str]]:
    if consent is None:
        return []
    if not isinstance(consent, dict):
        return [(field, "INVALID_CONSENT", "consent must be an object")]
    found = [(f"{field}.{name}", "UNKNOWN_FIELD", f"unknown field {name}")
             for name in sorted(set(consent) - {"adUserData", "adPersonalization"})]  # fmt: skip
    for name in ("adUserData", "adPersonalization"):
        if name in consent and consent[name] not in CONSENT_STATUSES:
            found.append((f"{field}.{name}", "INVALID_ENUM_VALUE", "not a ConsentStatus"))
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
