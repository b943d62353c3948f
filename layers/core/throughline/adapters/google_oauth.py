"""Google OAuth 2.0: an access token from the refresh-token grant, shared by every Google client of Throughline.

``POST <token url>`` (``https://oauth2.googleapis.com/token``) with the form ``grant_type=refresh_token``,
``client_id``, ``client_secret``, ``refresh_token`` answers ``{"access_token", "expires_in", ...}``
(developers.google.com/identity/protocols/oauth2/web-server#offline). One token serves the Google Ads API (spend),
and the Data Manager API (offline conversions, Customer Match) when the refresh token was granted both scopes.

The token is cached until 60 s before it expires. 429, 5xx and an unreachable endpoint are retried with backoff
(at most ``attempts`` calls, never past the caller's deadline) and then raised as ``RetryableError``; a refusal
(400 ``invalid_grant``, 401 ``invalid_client``) raises ``GoogleAuthError`` naming Google's error code and what to
do — never the client secret or the refresh token.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import requests

from throughline.spend.http import CONNECT_TIMEOUT, PlatformError, RetryableError, backoff, new_session

EARLY_REFRESH = 60.0  # seconds before expiry when a cached token is replaced
ATTEMPTS = 3
HINTS = {
    "invalid_grant": "the refresh token expired or was revoked — issue a new GOOGLE_ADS_REFRESH_TOKEN (an OAuth "
    "consent screen in 'Testing' expires tokens after 7 days)",
    "invalid_client": "GOOGLE_ADS_CLIENT_ID / GOOGLE_ADS_CLIENT_SECRET are wrong",
    "unauthorized_client": "the refresh token was issued to another OAuth client than GOOGLE_ADS_CLIENT_ID",
}


class GoogleAuthError(PlatformError):
    """Google refused the refresh-token grant; not retryable."""


class _SecondsLeft(Protocol):
    def seconds_left(self) -> float: ...


class GoogleOAuth:
    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        token_url: str,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        attempts: int = ATTEMPTS,
    ):
        self._client = (client_id, client_secret, refresh_token)
        self.token_url = token_url
        self.session = session or new_session()
        self.sleep = sleep
        self.clock = clock
        self.attempts = max(1, attempts)
        self._access: tuple[str, float] | None = None
        self.tokens_issued = 0

    def __repr__(self) -> str:  # never the secret or the refresh token
        return f"GoogleOAuth(token_url={self.token_url!r})"

    def invalidate(self) -> None:
        self._access = None

    def access_token(self, force: bool = False, deadline: _SecondsLeft | None = None) -> str:
        if self._access and not force and self._access[1] > self.clock() + EARLY_REFRESH:
            return self._access[0]
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._grant()
            except RetryableError as error:
                if attempt >= self.attempts:
                    raise
                wait = error.retry_after or backoff(attempt, base=1.0, cap=10.0)
                if deadline is not None and deadline.seconds_left() < wait + 5:
                    raise
                self.sleep(wait)

    def _grant(self) -> str:
        client_id, client_secret, refresh_token = self._client
        form = {"grant_type": "refresh_token", "client_id": client_id, "client_secret": client_secret,
                "refresh_token": refresh_token}  # fmt: skip
        try:
            response = self.session.post(self.token_url, data=form, timeout=(CONNECT_TIMEOUT, 30))
        except requests.RequestException as error:
            raise RetryableError(f"Google OAuth unreachable: {type(error).__name__}") from None
        payload = json_object(response)
        if response.status_code == 429 or response.status_code >= 500:
            raise RetryableError(
                f"Google OAuth could not answer: HTTP {response.status_code}", retry_after=_retry_after(response)
            )
        if response.status_code != 200 or not isinstance(payload.get("access_token"), str):
            code = str(payload.get("error") or f"HTTP {response.status_code}")[:80]
            hint = HINTS.get(code)
            raise GoogleAuthError(f"Google OAuth refused the refresh token: {code}" + (f" ({hint})" if hint else ""))
        try:
            lifetime = float(payload.get("expires_in", 3599))
        except (TypeError, ValueError):
            lifetime = 3599.0
        self.tokens_issued += 1
        self._access = (payload["access_token"], self.clock() + lifetime)
        return self._access[0]


def json_object(response: requests.Response) -> dict[str, Any]:
    """A Google answer's JSON object; {} for a body that is not one (an HTML error page, a list)."""
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(float(value), 60.0) if value else None
    except ValueError:
        return None
