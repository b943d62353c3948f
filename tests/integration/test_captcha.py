"""The captcha client (throughline.capture.captcha) against the SmartCaptcha and Turnstile sandboxes, and the
sandboxes against their providers' documentation: one-time tokens valid five minutes, the documented error answers."""

from __future__ import annotations

import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
import requests

from local.captcha_sandboxes import SmartCaptchaSandbox, TurnstileSandbox
from throughline.capture.captcha import CaptchaVerifier

T0 = 1_796_000_000.0
IP = "203.0.113.7"


@pytest.fixture
def clock():
    return [T0]


@pytest.fixture
def smart(clock):
    with SmartCaptchaSandbox(clock=lambda: clock[0]) as sandbox:
        yield sandbox


@pytest.fixture
def turnstile(clock):
    with TurnstileSandbox(clock=lambda: clock[0]) as sandbox:
        yield sandbox


def smart_client(sandbox, key=None) -> CaptchaVerifier:
    return CaptchaVerifier(smartcaptcha_key=key or sandbox.secret_key, smartcaptcha_url=sandbox.validate_url)


def turnstile_client(sandbox, key=None) -> CaptchaVerifier:
    return CaptchaVerifier(turnstile_key=key or sandbox.secret_key, turnstile_url=sandbox.verify_url)


# -- the sandboxes, as strict as the documentation ---------------------------------------------------------------


def test_smartcaptcha_sandbox_answers_as_documented(smart, clock):
    token = smart.issue("shop.example.ru")
    post = lambda **fields: requests.post(smart.validate_url, data=fields, timeout=5).json()  # noqa: E731
    assert post(token=token, ip=IP) == {
        "status": "failed",
        "message": "Authentication failed. Secret has not provided.",
    }
    assert post(secret="wrong", token=token, ip=IP)["status"] == "failed"
    assert post(secret=smart.secret_key, ip=IP) == {"status": "failed", "message": "Token invalid or expired."}
    assert post(secret=smart.secret_key, token="dD0xforged", ip=IP)["message"] == "Token invalid or expired."
    passed = post(secret=smart.secret_key, token=token, ip=IP)
    assert passed == {"status": "ok", "message": "", "host": "shop.example.ru"}
    assert post(secret=smart.secret_key, token=token, ip=IP)["status"] == "failed"  # one time only
    late = smart.issue()
    clock[0] += 301
    assert post(secret=smart.secret_key, token=late, ip=IP)["message"] == "Token invalid or expired."
    assert requests.get(smart.validate_url, params={"secret": smart.secret_key}, timeout=5).status_code == 405


def test_turnstile_sandbox_answers_with_the_documented_error_codes(turnstile, clock):
    token = turnstile.issue("shop.example.ru")
    codes = lambda **fields: requests.post(turnstile.verify_url, data=fields, timeout=5).json()["error-codes"]  # noqa: E731
    assert codes(response=token) == ["missing-input-secret"]
    assert codes(secret="wrong", response=token) == ["invalid-input-secret"]
    assert codes(secret=turnstile.secret_key) == ["missing-input-response"]
    assert codes(secret=turnstile.secret_key, response="0.forged") == ["invalid-input-response"]
    ok = requests.post(turnstile.verify_url, json={"secret": turnstile.secret_key, "response": token}, timeout=5).json()
    assert ok["success"] is True and ok["hostname"] == "shop.example.ru" and ok["error-codes"] == []
    assert codes(secret=turnstile.secret_key, response=token) == ["timeout-or-duplicate"]  # reused
    late = turnstile.issue()
    clock[0] += 301
    assert codes(secret=turnstile.secret_key, response=late) == ["timeout-or-duplicate"]  # expired
    bad = requests.post(turnstile.verify_url, data=b"{", headers={"Content-Type": "application/json"}, timeout=5).json()
    assert bad == {"success": False, "error-codes": ["bad-request"], "messages": []}


# -- the client -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["smartcaptcha", "turnstile"])
def test_a_fresh_token_passes_once_and_a_reused_fake_or_missing_one_fails(provider, smart, turnstile):
    sandbox, client, field = {
        "smartcaptcha": (smart, smart_client(smart), "smart-token"),
        "turnstile": (turnstile, turnstile_client(turnstile), "cf-turnstile-response"),
    }[provider]
    token = sandbox.issue()
    assert client.verify({field: token}, IP).passed
    reused = client.verify({field: token}, IP)
    assert not reused.passed and not reused.unavailable
    assert not client.verify({field: "forged-token"}, IP).passed
    missing = client.verify({}, IP)
    assert not missing.passed and "no captcha token" in missing.reason
    assert not client.verify({field: "x" * 5000}, IP).passed
    # The other provider's field is no token for this one.
    other = "cf-turnstile-response" if field == "smart-token" else "smart-token"
    assert not client.verify({other: sandbox.issue()}, IP).passed


def test_an_expired_token_fails(smart, turnstile, clock):
    tokens = {"smart-token": smart.issue(), "cf-turnstile-response": turnstile.issue()}
    clock[0] += 300.5
    assert not smart_client(smart).verify(tokens, IP).passed
    assert not turnstile_client(turnstile).verify(tokens, IP).passed


@pytest.mark.parametrize("provider", ["smartcaptcha", "turnstile"])
def test_a_wrong_server_key_lets_posts_through_and_says_so(provider, smart, turnstile):
    # A mistyped key must not turn every real customer away; it is logged and counted (CaptchaUnavailable).
    client = smart_client(smart, key="wrong") if provider == "smartcaptcha" else turnstile_client(turnstile, "wrong")
    field = "smart-token" if provider == "smartcaptcha" else "cf-turnstile-response"
    verdict = client.verify({field: (smart if provider == "smartcaptcha" else turnstile).issue()}, IP)
    assert verdict.passed and verdict.unavailable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_provider_that_cannot_answer_lets_posts_through(smart):
    # SmartCaptcha's documentation: treat an HTTP error as "ok", so that visitors are not held up.
    class Failing(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/validate"
        down = CaptchaVerifier(smartcaptcha_key="k", smartcaptcha_url=url).verify({"smart-token": "t"}, IP)
        assert down.passed and down.unavailable and "503" in down.reason
    finally:
        server.shutdown()
        server.server_close()
    refused = CaptchaVerifier(turnstile_key="k", turnstile_url=f"http://127.0.0.1:{free_port()}/siteverify", timeout=1)
    verdict = refused.verify({"cf-turnstile-response": "t"}, IP)
    assert verdict.passed and verdict.unavailable


def test_without_a_key_the_captcha_is_off():
    assert not CaptchaVerifier().enabled
    assert CaptchaVerifier(turnstile_key="k").enabled


def test_a_provider_that_answers_a_byte_at_a_time_cannot_hold_the_post_past_the_timeout():
    # The socket timeout is per read: a provider (or a proxy in front of it) trickling its answer a byte at a time
    # never trips it, and capture_form would wait until Lambda kills it (10 s) and the post is lost unstored.
    class Trickling(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for byte in b'Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{"status":"ok"}'[:12]:
                time.sleep(0.4)
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Trickling)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/validate"
        client = CaptchaVerifier(smartcaptcha_key="k", smartcaptcha_url=url, timeout=1.0)
        started = time.monotonic()
        verdict = client.verify({"smart-token": "t"}, IP)
        assert time.monotonic() - started < 2.0  # the answer would take 4.8 s
        assert verdict.passed and verdict.unavailable
    finally:
        server.shutdown()
        server.server_close()
