"""Google Customer Match through the Data Manager API: a segment's customers as a Google Ads user list.

Entry point (registered by the export orchestrator for the platform ``google``)::

    sync(audience: str, members: Sequence[Member], *, list_id: str | None, settings: GoogleAudienceSettings,
         session: requests.Session | None = None, previous: Mapping[str, Any] | None = None,
         deadline: Deadline | None = None, oauth: GoogleOAuth | None = None) -> tuple[AudienceSync, dict[str, Any]]

- ``list_id``: ``customers/<customer id>/userLists/<user list id>`` (dashes allowed in the customer id), or the bare
  user list id when ``GOOGLE_ADS_CUSTOMER_IDS`` names exactly one customer. The Customer Match list itself is made
  once in Google Ads (Audience manager → Your data segments → Customer list) or with the Google Ads API
  ``UserListService`` (``crmBasedUserList``); Throughline only fills it. ``None`` → ``ValueError``.
- ``previous``: what the last successful ``sync`` of this audience returned as its second value (``None`` the first
  night). The returned state is ``{"version": 1, "list_id", "emailAddress": [hashes], "phoneNumber": [hashes]}``:
  the sorted SHA-256 hashes Google was sent — no contact ids, no raw values. The orchestrator stores it (e.g.
  ``segments/audiences/google/<audience>.json`` in the data bucket, under a lifecycle rule) and passes it back the
  next night. A state for another list id is ignored (nothing is removed from a list it never filled).
- Each night is a full replace: identifiers in ``previous`` and not in tonight's members are removed first
  (``audienceMembers:remove``, one identifier per member, 10 000 members a request), then every current member is
  ingested (``audienceMembers:ingest``, 10 000 a request, at most 10 identifiers each) — re-sending everyone is
  idempotent and renews Google's membership duration. A removed phone that still belongs to a current member is
  ingested again right after.
- Any failure (OAuth refused, Data Manager unreachable, 4xx / 5xx after retries, deadline) raises
  ``GoogleAudienceError`` with a secret-free, PII-free message. Its ``state``, when not ``None``, is what the caller
  stores instead (the previous hashes ∪ tonight's: an ingest batch may have landed before the failure, and those
  members must still be removable once they leave); when ``None`` (nothing reached Google) the previous state stays.
  The next night repeats the removals (harmless) and re-ingests everyone.

Normalization (developers.google.com/data-manager/api/get-started/formatting): e-mails without leading, trailing
and inner whitespace, lower-cased, and for gmail.com / googlemail.com without the dots before the ``@``; phones in
E.164 with the ``+`` (``throughline.contacts.normalize_phone``, default region ``DEFAULT_PHONE_REGION``); each then
SHA-256, hex-encoded (``encoding: HEX``). See docs/audiences.md, "Google Customer Match".
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from throughline.adapters.google_oauth import GoogleOAuth, json_object
from throughline.contacts import InvalidContact, normalize_phone
from throughline.observability import logger
from throughline.segments.audiences.members import AudienceSync, Member
from throughline.spend.http import CONNECT_TIMEOUT, MAX_ATTEMPTS, PlatformError, RetryableError, backoff, new_session

PLATFORM = "google"
MAX_MEMBERS = 10_000  # AudienceMember resources per IngestAudienceMembersRequest (limits page)
MAX_IDENTIFIERS = 10  # user identifiers in the UserData of one AudienceMember
READ_TIMEOUT = 120.0
STATE_VERSION = 1
KINDS = ("emailAddress", "phoneNumber")
CONSENT = {"granted": "CONSENT_GRANTED", "denied": "CONSENT_DENIED"}
LIST = re.compile(r"^customers/(\d{1,20})/userLists/(\d{1,20})$")


class GoogleAudienceError(PlatformError):
    """The audience could not be sent; the message names the step and Google's status, never a value.

    ``state`` (set when requests may have reached Google) is what to remember instead of the previous state: the
    previous hashes and tonight's, since some of tonight's may already be in the list and must be removable later.
    """

    def __init__(self, message: str, state: dict[str, Any] | None = None):
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class GoogleAudienceSettings:
    client_id: str
    client_secret: str
    refresh_token: str
    token_url: str = "https://oauth2.googleapis.com/token"
    api_url: str = "https://datamanager.googleapis.com/v1/"
    login_customer_id: str | None = None
    customer_ids: tuple[str, ...] = ()
    phone_region: str = "RU"
    consent: str | None = None  # "granted" | "denied" | None (not sent): request-level DMA consent
    validate_only: bool = False

    def __repr__(self) -> str:  # never the secret or the refresh token
        return f"GoogleAudienceSettings(api_url={self.api_url!r}, customers={self.customer_ids!r})"

    @classmethod
    def from_settings(cls, settings: Any) -> GoogleAudienceSettings:
        return cls(
            client_id=settings.google_ads_client_id or "",
            client_secret=settings.google_ads_client_secret or "",
            refresh_token=settings.google_ads_refresh_token or "",
            token_url=settings.google_oauth_token_url,
            api_url=settings.google_data_manager_api_url,
            login_customer_id=settings.google_ads_login_customer_id,
            customer_ids=tuple(settings.google_ads_customer_ids),
            phone_region=settings.default_phone_region,
            consent=getattr(settings, "google_customer_match_consent", None),
        )


# -- normalization -------------------------------------------------------------------------------------------------


def normalize_email(raw: str) -> str | None:
    """Whitespace removed everywhere, lower case; gmail.com / googlemail.com lose the dots of the local part."""
    text = "".join(raw.split()).lower()
    if text.count("@") != 1:
        return None
    local, domain = text.split("@")
    if domain in ("gmail.com", "googlemail.com"):
        local = local.replace(".", "")
    if not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        return None
    return f"{local}@{domain}"


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def identifiers(member: Member, region: str = "RU") -> list[dict[str, str]]:
    """The member's hashed identifiers, e-mails first, without duplicates, at most 10 (invalid values dropped)."""
    found: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    emails = [e for e in member.emails or () if isinstance(e, str)]
    candidates: list[tuple[str, str | None]] = [("emailAddress", normalize_email(e)) for e in emails]
    for phone in member.phones or ():
        if not isinstance(phone, str):
            continue
        try:
            candidates.append(("phoneNumber", normalize_phone(phone, region)))
        except InvalidContact:
            candidates.append(("phoneNumber", None))
    for kind, value in candidates:
        if value is None:
            continue
        key = (kind, sha256_hex(value))
        if key not in seen:
            seen.add(key)
            found.append({kind: key[1]})
    return found[:MAX_IDENTIFIERS]


def parse_list(list_id: str | None, customer_ids: Sequence[str] = ()) -> tuple[str, str]:
    """``customers/<id>/userLists/<id>`` (or a bare list id with one configured customer) → (customer, list)."""
    if not list_id or not str(list_id).strip():
        raise ValueError("a Google audience needs list_id: customers/<customer id>/userLists/<user list id>")
    text = str(list_id).strip().replace("-", "")
    found = LIST.match(text)
    if found:
        return found.group(1), found.group(2)
    customers = [c.replace("-", "").strip() for c in customer_ids if c.strip()]
    if text.isdigit() and len(customers) == 1 and customers[0].isdigit():
        return customers[0], text
    raise ValueError("list_id must look like customers/<customer id>/userLists/<user list id>")


# -- request bodies ------------------------------------------------------------------------------------------------


def destination(customer: str, user_list: str, login_customer: str | None) -> dict[str, Any]:
    found: dict[str, Any] = {"operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": customer}}
    login = (login_customer or "").replace("-", "").strip()
    if login and login != customer:
        found["loginAccount"] = {"accountType": "GOOGLE_ADS", "accountId": login}
    found["productDestinationId"] = user_list
    return found


def ingest_body(dest: dict, members: list[list[dict[str, str]]], *, consent: str | None, validate_only: bool) -> dict:
    if not 0 < len(members) <= MAX_MEMBERS:
        raise ValueError(f"1 to {MAX_MEMBERS} audience members per request")
    body: dict[str, Any] = {
        "destinations": [dest],
        "audienceMembers": [{"userData": {"userIdentifiers": ids}} for ids in members],
    }
    if consent:
        body["consent"] = {"adUserData": CONSENT[consent], "adPersonalization": CONSENT[consent]}
    body["validateOnly"] = validate_only
    body["encoding"] = "HEX"
    body["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
    return body


def remove_body(dest: dict, members: list[list[dict[str, str]]], *, validate_only: bool) -> dict:
    if not 0 < len(members) <= MAX_MEMBERS:
        raise ValueError(f"1 to {MAX_MEMBERS} audience members per request")
    return {
        "destinations": [dest],
        "audienceMembers": [{"userData": {"userIdentifiers": ids}} for ids in members],
        "validateOnly": validate_only,
        "encoding": "HEX",
    }


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- the night's sync ----------------------------------------------------------------------------------------------


def sync(
    audience: str,
    members: Sequence[Member],
    *,
    list_id: str | None,
    settings: GoogleAudienceSettings,
    session: requests.Session | None = None,
    previous: Mapping[str, Any] | None = None,
    deadline: Any = None,
    oauth: GoogleOAuth | None = None,
) -> tuple[AudienceSync, dict[str, Any]]:
    customer, user_list = parse_list(list_id, settings.customer_ids)
    if settings.consent not in (None, "", *CONSENT):
        raise ValueError("consent must be 'granted', 'denied' or unset")
    session = session or new_session()
    oauth = oauth or GoogleOAuth(client_id=settings.client_id, client_secret=settings.client_secret,
                                 refresh_token=settings.refresh_token, token_url=settings.token_url,
                                 session=session)  # fmt: skip
    client = _Client(settings.api_url, session, oauth, deadline)
    dest = destination(customer, user_list, settings.login_customer_id)
    list_name = f"customers/{customer}/userLists/{user_list}"

    current: list[list[dict[str, str]]] = []
    skipped = 0
    for member in members:
        found = identifiers(member, settings.phone_region)
        if found:
            current.append(found)
        else:
            skipped += 1
    now = {kind: sorted({entry[kind] for ids in current for entry in ids if kind in entry}) for kind in KINDS}
    before = _previous(previous, list_name)
    gone = [[{kind: value}] for kind in KINDS for value in sorted(set(before[kind]) - set(now[kind]))]

    try:
        for batch in _chunks(gone, MAX_MEMBERS):
            client.in_time()
            client.post("audienceMembers:remove", remove_body(dest, batch, validate_only=settings.validate_only))
        for batch in _chunks(current, MAX_MEMBERS):
            client.in_time()
            body = ingest_body(dest, batch, consent=settings.consent or None, validate_only=settings.validate_only)
            client.post("audienceMembers:ingest", body)
    except PlatformError as error:
        logger.warning("google audience failed", extra={"audience": audience, "list": list_name,
                                                        "calls": client.calls, "reason": str(error)})  # fmt: skip
        sent_some = client.calls > 0 and not settings.validate_only
        union = {kind: sorted(set(before[kind]) | set(now[kind])) for kind in KINDS}
        state = {"version": STATE_VERSION, "list_id": list_name, **union} if sent_some else None
        raise GoogleAudienceError(f"Google Customer Match {audience!r} ({list_name}): {error}", state) from None

    result = AudienceSync(
        platform=PLATFORM,
        audience=audience,
        list_id=list_name,
        members=len(current),
        identifiers=sum(len(ids) for ids in current),
        calls=client.calls,
        removed=len(gone),
        skipped=skipped,
    )
    logger.info("google audience sent", extra={"audience": audience, "list": list_name, "members": result.members,
                                               "identifiers": result.identifiers, "removed": result.removed,
                                               "skipped": skipped, "requests": client.request_ids})  # fmt: skip
    state = {"version": STATE_VERSION, "list_id": list_name, **now}
    if settings.validate_only:  # nothing was changed at Google: what it holds is still the previous state
        state = {"version": STATE_VERSION, "list_id": list_name, **before}
    return result, state


def _previous(previous: Mapping[str, Any] | None, list_name: str) -> dict[str, list[str]]:
    empty: dict[str, list[str]] = {kind: [] for kind in KINDS}
    if not previous or previous.get("list_id") != list_name or previous.get("version") != STATE_VERSION:
        return empty
    hexes = re.compile(r"^[0-9a-f]{64}$")
    return {kind: [h for h in previous.get(kind) or [] if isinstance(h, str) and hexes.match(h)] for kind in KINDS}


class _Client:
    def __init__(self, api_url: str, session: requests.Session, oauth: GoogleOAuth, deadline: Any):
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.session, self.oauth, self.deadline = session, oauth, deadline
        self.calls = 0
        self.request_ids: list[str] = []

    def in_time(self) -> None:
        """Refuse a request that might not finish before the invocation's end: a run killed mid-request would store
        no state, and members ingested on that night could never be removed (the error's state keeps them)."""
        if self.deadline is not None and self.deadline.seconds_left() < CONNECT_TIMEOUT + READ_TIMEOUT + 5:
            raise PlatformError("too little time left in this run for another Data Manager request")

    def post(self, method: str, body: dict) -> None:
        data = json.dumps(body, separators=(",", ":"))
        attempt, refreshed = 0, False
        while True:
            failure: PlatformError
            try:
                token = self.oauth.access_token(deadline=self.deadline)
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                self.calls += 1
                response = self.session.post(self.api_url + method, data=data, headers=headers,
                                             timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip
            except RetryableError as error:
                failure = error
            except requests.RequestException as error:
                failure = RetryableError(f"Data Manager unreachable: {type(error).__name__}")
            else:
                if response.status_code == 200:
                    self.request_ids.append(str(json_object(response).get("requestId") or ""))
                    return
                failure = _failure(method, response)
                if response.status_code == 401 and not refreshed:
                    refreshed = True
                    self.oauth.invalidate()
                    continue
            attempt += 1
            if not failure.retryable or attempt >= MAX_ATTEMPTS:
                raise failure
            wait = getattr(failure, "retry_after", None) or backoff(attempt, base=2.0)
            if self.deadline is not None and self.deadline.seconds_left() < wait + 5:
                raise failure
            self.oauth.sleep(wait)


def _failure(method: str, response: requests.Response) -> PlatformError:
    error = json_object(response).get("error") or {}
    status = str(error.get("status") or f"HTTP {response.status_code}")
    message = f"{method} answered {status}: {str(error.get('message') or '')[:200]}"
    fields = [
        f"{v.get('field')} {v.get('reason') or ''}".strip()
        for detail in error.get("details") or []
        if isinstance(detail, dict)
        for v in detail.get("fieldViolations") or []
        if isinstance(v, dict)
    ]
    if fields:
        message += " (" + "; ".join(fields[:5]) + (f"; +{len(fields) - 5} more" if len(fields) > 5 else "") + ")"
    if response.status_code == 429 or response.status_code >= 500:
        return RetryableError(message)
    if status == "PERMISSION_DENIED":
        message += (
            " (a customer under a manager account needs GOOGLE_ADS_LOGIN_CUSTOMER_ID; the OAuth user needs access)"
        )
    return GoogleAudienceError(message)
