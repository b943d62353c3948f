"""Google Ads offline conversions through the Data Manager API (``events:ingest``).

Google closed ``UploadClickConversions`` of the Google Ads API to new adopters in 2026; the Data Manager API is the
documented way (developers.google.com/data-manager/api/reference/rest/v1/events/ingest, devguides/events):
- ``POST {GOOGLE_DATA_MANAGER_API_URL}events:ingest`` (``https://datamanager.googleapis.com/v1/``) with an OAuth
  access token (scope ``https://www.googleapis.com/auth/datamanager``; the refresh-token grant of the spend import's
  Google OAuth client).
- Body: ``destinations`` (``operatingAccount {accountType: GOOGLE_ADS, accountId}``, ``loginAccount`` when access
  goes through a manager, ``productDestinationId`` = the conversion action's id), ``events`` (at most 2 000 per
  request), ``validateOnly``, and ``encoding`` (``HEX``) when events carry hashed ``userData``.
- Event: ``transactionId`` (Google deduplicates on it), ``eventTimestamp`` (RFC 3339), ``conversionValue``,
  ``currency``, ``eventSource``, ``adIdentifiers`` (``gclid`` / ``gbraid`` / ``wbraid``) and/or ``userData``
  ``userIdentifiers`` of ``emailAddress`` / ``phoneNumber``, each normalized then SHA-256 hashed, hex-encoded:
  e-mails without whitespace and lower-cased, a gmail.com / googlemail.com local part without its dots and without a
  ``+`` and what follows it (devguides/concepts/formatting), phones in E.164 with the ``+``.
- Success answers ``{"requestId"}``; processing is asynchronous (``requestStatus:retrieve`` gives diagnostics — not
  read here: an ingested event counts as accepted). A bad request fails whole (400 ``INVALID_ARGUMENT``) with
  ``google.rpc.BadRequest`` ``fieldViolations`` naming ``events[i]``: those events are rejected with that reason and
  the rest are sent again.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import requests

from throughline.adapters.google_oauth import GoogleOAuth
from throughline.bitrix24 import Deadline
from throughline.contacts import InvalidContact, normalize_phone
from throughline.conversions.platforms import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    Item,
    PlatformError,
    RetryableError,
    with_retries,
)
from throughline.spend.http import new_session

PLATFORM = "google_ads"
MAX_EVENTS = 2000
SCOPE = "https://www.googleapis.com/auth/datamanager"
CLICK_IDS = ("gclid", "gbraid", "wbraid")
ACTION = re.compile(r"^customers/(\d{1,20})/conversionActions/(\d{1,20})$")
_VIOLATION = re.compile(r"^events\[(\d+)\]")


def parse_action(value: str) -> tuple[str, str]:
    """``customers/<customer id>/conversionActions/<id>`` → (customer id, conversion action id)."""
    found = ACTION.match(value.strip().replace("-", ""))
    if not found:
        raise ValueError("must look like customers/<customer id>/conversionActions/<conversion action id>")
    return found.group(1), found.group(2)


def identifier(identifiers: dict[str, str], contacts: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """A click id (gclid, else gbraid, else wbraid), else the hashed contact data."""
    for key in CLICK_IDS:
        if identifiers.get(key, "").strip():
            return key, identifiers[key].strip()
    if user_identifiers(contacts):
        return "user_data", "hashed e-mail/phone"
    return None


def normalize_email(raw: str) -> str | None:
    """As the Data Manager formatting guide says: whitespace removed (leading, trailing and inside), lower case; for
    gmail.com / googlemail.com every dot of the local part removed, and a ``+`` with all that follows it."""
    text = "".join(raw.split()).lower()
    if text.count("@") != 1:
        return None
    local, domain = text.split("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.split("+", 1)[0].replace(".", "")
    if not local or "." not in domain:
        return None
    return f"{local}@{domain}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def user_identifiers(contacts: tuple[str, ...], region: str = "RU") -> list[dict[str, str]]:
    """The contact's e-mails and phones, normalized and hashed (at most 10 identifiers, as UserData allows)."""
    found: list[dict[str, str]] = []
    for value in contacts:
        if "@" in value:
            email = normalize_email(value)
            if email:
                found.append({"emailAddress": sha256_hex(email)})
            continue
        try:
            found.append({"phoneNumber": sha256_hex(normalize_phone(value, region))})
        except InvalidContact:
            continue
    unique = list({tuple(entry.items()): entry for entry in found}.values())
    return unique[:10]


def legacy_transaction_id(ledger_id: str) -> str:
    """The id conversions sent before the portal was part of it carry: ``<kind>#<entity>`` (``won#DEAL#5``)."""
    return ledger_id.split("#", 2)[2]


def portal_key(domain: str | None, webhook_url: str | None) -> str:
    """Eight hex digits of SHA-256 of the portal's host — the webhook's (the function and the CLI both read it from
    the secret), else ``BITRIX24_DOMAIN`` — lower-cased: two portals feeding one Google Ads account never share a
    deal's transactionId. (A ledger item keeps the id it was first sent with, whatever this gives later.)"""
    from urllib.parse import urlsplit

    host = ((urlsplit(webhook_url).hostname if webhook_url else "") or domain or "").strip().lower()
    return hashlib.sha256(host.encode()).hexdigest()[:8]


def transaction_id(portal: str, ledger_id: str) -> str:
    """``<portal key>:<kind>#<entity>`` (``1a2b3c4d:won#DEAL#5``): one per portal, deal and goal, stable across runs."""
    return f"{portal}:{legacy_transaction_id(ledger_id)}"


def event(item: Item) -> dict[str, Any]:
    conversion = item.conversion
    body: dict[str, Any] = {
        # Stored in the ledger with the claim: a retry sends the id the first attempt used (legacy ones included).
        "transactionId": item.transaction_id or legacy_transaction_id(item.ledger_id),
        "eventTimestamp": conversion.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "OTHER",
        "currency": conversion.currency,
        "conversionValue": float(conversion.amount),
    }
    if item.identifier[0] in CLICK_IDS:
        body["adIdentifiers"] = {item.identifier[0]: item.identifier[1]}
    else:
        body["userData"] = {"userIdentifiers": user_identifiers(conversion.contacts)}
    return body


def ingest_body(items: list[Item], customer: str, action: str, login_customer: str | None, validate_only: bool) -> dict:
    if len(items) > MAX_EVENTS:
        raise ValueError(f"at most {MAX_EVENTS} events per request")
    destination: dict[str, Any] = {
        "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": customer},
        "productDestinationId": action,
    }
    if login_customer and login_customer != customer:
        destination["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login_customer}
    events = [event(item) for item in items]
    body: dict[str, Any] = {"destinations": [destination], "events": events, "validateOnly": validate_only}
    if any("userData" in e for e in events):
        body["encoding"] = "HEX"
    return body


class DataManagerClient:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str,
        api_url: str,
        login_customer_id: str | None = None,
        session: requests.Session | None = None,
    ):
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.login_customer_id = (login_customer_id or "").replace("-", "") or None
        self.session = session or new_session()
        self.oauth = GoogleOAuth(client_id=client_id, client_secret=client_secret, refresh_token=refresh_token,
                                 token_url=token_url, session=self.session)  # fmt: skip

    def __repr__(self) -> str:
        return f"DataManagerClient(api={self.api_url})"

    def access_token(self, force: bool = False) -> str:
        return self.oauth.access_token(force)

    def ingest(self, items: list[Item], action: str, deadline: Deadline, *, validate_only: bool = False) -> dict:
        """Send up to 2 000 events; item index → the field violation that rejected it (empty: all ingested).
        Raises ``PlatformError`` / ``RetryableError`` when the whole request failed for another reason."""
        customer, action_id = parse_action(action)
        body = ingest_body(items, customer, action_id, self.login_customer_id, validate_only)
        refreshed = False

        def send() -> requests.Response:
            headers = {"Authorization": f"Bearer {self.access_token()}", "Content-Type": "application/json"}
            return self.session.post(self.api_url + "events:ingest", json=body, headers=headers,
                                     timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip

        while True:
            try:
                response = with_retries(send, _classify, deadline)
                return {"request_id": response.json().get("requestId"), "rejected": {}}
            except _Unauthenticated:
                if refreshed:
                    raise PlatformError("Data Manager refused a fresh access token (UNAUTHENTICATED)") from None
                refreshed = True
                self.access_token(force=True)
            except _Invalid as invalid:
                if not invalid.rejected:
                    raise PlatformError(f"Data Manager refused the request: {invalid}") from None
                return {"request_id": None, "rejected": invalid.rejected}


class _Unauthenticated(PlatformError):
    pass


class _Invalid(PlatformError):
    def __init__(self, message: str, rejected: dict[int, str]):
        super().__init__(message)
        self.rejected = rejected


def _classify(response: requests.Response) -> None:
    if response.status_code == 200:
        return
    try:
        error = (response.json() or {}).get("error") or {}
    except ValueError:
        error = {}
    message = f"{error.get('status') or response.status_code}: {error.get('message') or response.reason}"
    if response.status_code == 401:
        raise _Unauthenticated(message)
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"Data Manager answered {message}")
    if response.status_code == 400:
        rejected: dict[int, str] = {}
        for detail in error.get("details") or []:
            for violation in detail.get("fieldViolations") or []:
                found = _VIOLATION.match(str(violation.get("field") or ""))
                if found:
                    text = violation.get("description") or violation.get("reason") or "invalid"
                    rejected.setdefault(int(found.group(1)), f"{violation.get('field')}: {text}")
        raise _Invalid(message, rejected)
    raise PlatformError(f"Data Manager answered {message}")
