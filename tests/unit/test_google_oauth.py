"""The one Google OAuth refresh-token exchange (spend, offline conversions, Customer Match)."""

from __future__ import annotations

import logging

import pytest
import requests

from throughline.adapters.google_oauth import GoogleAuthError, GoogleOAuth
from throughline.spend.http import RetryableError

SECRET = "s3cr3t-client-secret"
REFRESH = "1//refresh-token-value"


class Answer:
    def __init__(self, status: int, body: dict | None = None, headers: dict | None = None):
        self.status_code = status
        self._body = body
        self.headers = headers or {}

    def json(self):
        if self._body is None:
            raise ValueError("no JSON")
        return self._body


class FakeSession:
    def __init__(self, answers: list):
        self.answers = list(answers)
        self.forms: list[dict] = []

    def post(self, url, data=None, timeout=None):
        self.forms.append(dict(data))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def oauth(answers: list, **options) -> tuple[GoogleOAuth, FakeSession, Clock, list[float]]:
    session, clock, sleeps = FakeSession(answers), Clock(), []
    client = GoogleOAuth(client_id="cid", client_secret=SECRET, refresh_token=REFRESH, token_url="https://t/token",
                         session=session, sleep=sleeps.append, clock=clock, **options)  # fmt: skip
    return client, session, clock, sleeps


def token(value: str, lifetime: int = 3599) -> Answer:
    return Answer(200, {"access_token": value, "expires_in": lifetime, "token_type": "Bearer"})


def test_token_is_cached_and_the_form_is_the_refresh_grant():
    client, session, clock, _ = oauth([token("a1")])
    assert client.access_token() == "a1"
    clock.now += 3000
    assert client.access_token() == "a1"  # 599 s left: still the cached one
    assert session.forms == [
        {"grant_type": "refresh_token", "client_id": "cid", "client_secret": SECRET, "refresh_token": REFRESH}
    ]
    assert client.tokens_issued == 1


def test_refreshed_sixty_seconds_before_expiry_and_on_force():
    client, session, clock, _ = oauth([token("a1"), token("a2"), token("a3")])
    client.access_token()
    clock.now += 3599 - 60  # exactly 60 s left: replaced
    assert client.access_token() == "a2"
    assert client.access_token(force=True) == "a3"
    assert client.tokens_issued == 3 and len(session.forms) == 3


def test_429_and_5xx_are_retried_with_backoff():
    client, session, _, sleeps = oauth([Answer(429, {}, {"Retry-After": "2"}), Answer(503, None), token("a1")])
    assert client.access_token() == "a1"
    assert len(session.forms) == 3 and sleeps[0] == 2.0 and len(sleeps) == 2


def test_unreachable_endpoint_is_retried_then_raised_as_retryable():
    client, session, _, sleeps = oauth([requests.ConnectionError("x")] * 3)
    with pytest.raises(RetryableError, match="unreachable: ConnectionError"):
        client.access_token()
    assert len(session.forms) == 3 and len(sleeps) == 2


def test_retry_stops_before_the_deadline():
    class Deadline:
        def seconds_left(self) -> float:
            return 3.0

    client, session, _, sleeps = oauth([Answer(429, {}, {"Retry-After": "5"}), token("a1")])
    with pytest.raises(RetryableError, match="HTTP 429"):
        client.access_token(deadline=Deadline())
    assert len(session.forms) == 1 and sleeps == []


def test_invalid_grant_is_a_clear_error_without_secrets(caplog):
    caplog.set_level(logging.DEBUG)
    body = {"error": "invalid_grant", "error_description": f"Bad Request {REFRESH}"}
    client, session, _, sleeps = oauth([Answer(400, body)])
    with pytest.raises(GoogleAuthError) as raised:
        client.access_token()
    text = str(raised.value)
    assert "invalid_grant" in text and "GOOGLE_ADS_REFRESH_TOKEN" in text
    assert not raised.value.retryable and sleeps == [] and len(session.forms) == 1
    for leaked in (SECRET, REFRESH):
        assert leaked not in text and leaked not in caplog.text and leaked not in repr(client)


def test_a_200_without_a_token_is_refused():
    client, _, _, _ = oauth([Answer(200, {"error": "nope"})])
    with pytest.raises(GoogleAuthError, match="nope"):
        client.access_token()
