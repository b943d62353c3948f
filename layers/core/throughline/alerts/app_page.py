"""``POST /v1/app/report``: the ROI report opened from Bitrix24 (a local application's page in the left menu).

Bitrix24 opens the application's handler URL in a frame with a POST: ``DOMAIN``, ``PROTOCOL``, ``LANG``, ``APP_SID``
in the query, ``AUTH_ID`` (the user's access token), ``AUTH_EXPIRES``, ``REFRESH_ID``, ``member_id``, ``status``,
``PLACEMENT`` in the form body. We serve the report only when

1. ``member_id`` is our portal's (``BITRIX24_MEMBER_ID``; without it configured nothing is served) and ``DOMAIN`` is
   our portal's (``BITRIX24_DOMAIN``); and
2. ``AUTH_ID`` is a live token *of our portal*: ``app.info`` is called with it at ``https://BITRIX24_DOMAIN`` (the
   stack's parameter, or ``BITRIX24_PORTAL_URL`` locally) — never at the ``DOMAIN`` the request names, which a
   forger controls, and never with the webhook: this public function reads no secret — and it is a local
   application's (``STATUS`` ``L``), not a marketplace application's installed on the same portal.

Anything else is 401 and never the report. A valid token is remembered for five minutes, or until the ``AUTH_EXPIRES``
seconds the placement gives run out when that comes first (a claim can only shorten the five minutes), so a user who
switches dates costs the portal one call, not one per page. A token the portal refused is remembered (by its SHA-256)
for a minute, and at most ``MAX_CHECKS_PER_MINUTE`` unknown tokens a minute are sent to ``app.info`` per process: a
flood of forged tokens costs the portal a bounded number of calls (the rest are 401 without asking; a real user's
token in that minute is refused too and works on the next open).
``date`` (query or form, ``YYYY-MM-DD``) picks an earlier report; the latest otherwise. Kept light: no pydantic, one
``requests`` call.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPORT_PREFIX = "reports/roi/"
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,512}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII only: \d also matches other scripts' digits
MAX_TOKEN_CACHE = 1000
REFUSED_SECONDS = 60.0  # a refused token is not re-asked for this long
MAX_CHECKS_PER_MINUTE = 30  # app.info calls for tokens not already known, per process
NOT_BUILT = (
    "<!doctype html><html lang=ru><meta charset=utf-8><title>Отчёт</title>"
    "<p>Отчёт за этот день ещё не построен. Он строится каждую ночь; последний — без параметра date.</p></html>"
)


class Refused(Exception):
    """401: the request is not from our portal (the reason is logged, never shown)."""


@dataclass(frozen=True)
class Placement:
    auth_id: str
    member_id: str
    domain: str
    date: str | None
    expires_in: float | None = None  # AUTH_EXPIRES: the token's remaining seconds, as the request claims


def parse_placement(body: bytes, query: Mapping[str, str]) -> Placement:
    try:
        fields = parse_qs(body.decode("utf-8", "replace"), max_num_fields=50)
    except ValueError:  # more fields than any placement sends
        raise Refused("not a placement request") from None
    form = {key: values[0] for key, values in fields.items()}
    merged = {**query, **form}
    auth_id, member_id = str(merged.get("AUTH_ID") or ""), str(merged.get("member_id") or "")
    if not _TOKEN.fullmatch(auth_id):
        raise Refused("no AUTH_ID, or not a token")
    if not member_id:
        raise Refused("no member_id")
    day = merged.get("date") or None
    if day is not None and not _calendar_day(day):
        day = None
    return Placement(
        auth_id, member_id, str(merged.get("DOMAIN") or "").lower(), day, _seconds(merged.get("AUTH_EXPIRES"))
    )


def _seconds(value: Any) -> float | None:
    """``AUTH_EXPIRES`` as seconds (Bitrix24 sends the token's lifetime, e.g. ``3600``); ``None`` when absent or not
    a whole number (then the five minutes apply). Zero or less: already expired, nothing to remember."""
    text = str(value or "").strip()
    if not re.fullmatch(r"-?[0-9]{1,10}", text):
        return None
    return float(max(int(text), 0))


def _calendar_day(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


class TokenCheck:
    """``app.info`` with the placement's token at our portal; live tokens remembered until they would expire."""

    def __init__(
        self,
        portal_url: str,
        *,
        post: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.time,
        lifetime: float = 300.0,
        refused_lifetime: float = REFUSED_SECONDS,
        checks_per_minute: int = MAX_CHECKS_PER_MINUTE,
    ):
        parts = urlsplit(portal_url)
        self.endpoint = f"{parts.scheme}://{parts.netloc}/rest/app.info.json"
        self._post = post
        self._clock = clock
        self.lifetime = lifetime
        self.refused_lifetime = refused_lifetime
        self.checks_per_minute = checks_per_minute
        self._valid: dict[str, float] = {}
        self._refused: dict[bytes, float] = {}  # SHA-256 of a refused token → until when it is not re-asked
        self._calls: deque[float] = deque()  # moments of app.info calls in the last minute
        self._lock = threading.Lock()

    def verify(self, token: str, expires_in: float | None = None) -> None:
        """Refused unless ``app.info`` confirms the token (or confirmed it lately). ``expires_in``: the placement's
        ``AUTH_EXPIRES``; the token is remembered for the shorter of it and ``lifetime``."""
        now = self._clock()
        digest = hashlib.sha256(token.encode()).digest()
        with self._lock:
            until = self._valid.get(token)
            if until is not None and until > now:
                return
            if self._refused.get(digest, 0.0) > now:
                raise Refused("the portal refused this token a moment ago")
            while self._calls and self._calls[0] <= now - 60.0:
                self._calls.popleft()
            if len(self._calls) >= self.checks_per_minute:
                raise Refused("too many unknown tokens this minute: not asking the portal")
            self._calls.append(now)
        post = self._post
        if post is None:
            import requests

            post = requests.post
        try:
            answer = post(self.endpoint, json={"auth": token}, timeout=(3.05, 8), allow_redirects=False)
            body = answer.json()
        except Exception:  # the portal unreachable or not answering JSON: nothing verified, nothing served
            raise Refused("the portal did not confirm the token") from None
        result = body.get("result") if isinstance(body, dict) else None
        if answer.status_code != 200 or not isinstance(result, dict) or not result.get("ID"):
            # Remembered only when the portal judged the token (401 invalid_token / expired_token, a 200 without our
            # application): a portal over its request limit (503 QUERY_LIMIT_EXCEEDED, 429) or failing (5xx) did
            # not, and a real user's next open must be asked again.
            if answer.status_code < 500 and answer.status_code != 429:
                self._refuse(digest, now)
            raise Refused(f"app.info refused the token ({body.get('error') if isinstance(body, dict) else '?'})")
        if result.get("STATUS") != "L":
            # app.info describes whichever application issued the token: ours is a local one (STATUS L); a token
            # of a marketplace application someone installed on the portal opens nothing here.
            self._refuse(digest, now)
            raise Refused(f"the token is not a local application's (STATUS {str(result.get('STATUS'))[:8]})")
        lifetime = self.lifetime if expires_in is None else min(self.lifetime, expires_in)
        if lifetime <= 0:
            return  # valid now, expiring now: served, not remembered
        with self._lock:
            if len(self._valid) >= MAX_TOKEN_CACHE:
                self._valid = {key: value for key, value in self._valid.items() if value > now}
            self._valid[token] = now + lifetime

    def _refuse(self, digest: bytes, now: float) -> None:
        with self._lock:
            if len(self._refused) >= MAX_TOKEN_CACHE:
                self._refused = {key: value for key, value in self._refused.items() if value > now}
                if len(self._refused) >= MAX_TOKEN_CACHE:  # a minute's flood fills it: the rate bound still holds
                    self._refused.clear()
            self._refused[digest] = now + self.refused_lifetime


def check_portal(placement: Placement, member_id: str | None, domain: str | None) -> None:
    if not member_id:
        raise Refused("BITRIX24_MEMBER_ID is not configured: the application page serves nobody")
    if not hmac.compare_digest(placement.member_id.encode(), member_id.encode()):
        raise Refused("member_id of another portal")
    if domain and placement.domain != domain.lower():
        raise Refused("DOMAIN of another portal")


def report_page(objects: Any, day: str | None) -> bytes | None:
    key = f"{REPORT_PREFIX}{day or 'latest'}/index.html"
    return objects.get(key)


def page_headers(domain: str | None, webhook_url: str | None = None) -> dict[str, str]:
    """Only our portal may frame the page: ``BITRIX24_DOMAIN`` and the host of ``BITRIX24_WEBHOOK_URL`` (the portal
    the token was verified at) — never every ``*.bitrix24.*`` portal, and a portal on another zone or its own domain
    still can."""
    hosts = [domain.lower()] if domain else []
    host = urlsplit(webhook_url).hostname if webhook_url else None
    if host and host not in hosts:
        hosts.append(host)
    ancestors = " ".join(f"https://{name}" for name in hosts) or "'none'"
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Cache-Control": "private, no-store",
        # Only the portal may frame the page; the report is self-contained (inline scripts and styles).
        "Content-Security-Policy": f"frame-ancestors {ancestors}",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
