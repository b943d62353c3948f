"""Sandboxes of the captcha providers' server-side verification: Yandex SmartCaptcha and Cloudflare Turnstile.

Each is a standard-library HTTP server (``local.ad_sandboxes.base.SandboxServer``) that answers as strictly as the
provider documents, never more forgivingly: a token is issued by ``issue()`` (what the widget does when a visitor
passes), is valid once and for five minutes, and belongs to the sandbox's server key.

- SmartCaptcha (yandex.cloud/docs/smartcaptcha, «Verifying a CAPTCHA response»): ``POST /validate``, urlencoded
  ``secret``, ``token``, ``ip``; ``{"status": "ok", "message": "", "host": …}`` or ``{"status": "failed",
  "message": …}``: "Authentication failed. Secret has not provided." without a key, "Token invalid or expired." for
  a missing, fake, used or expired token. The message for a wrong key is not documented; the sandbox answers
  "Authentication failed. Secret is invalid." (a failure either way, never an ``ok``).
- Turnstile (developers.cloudflare.com/turnstile, «Validate the token»): ``POST /turnstile/v0/siteverify``,
  urlencoded or JSON ``secret``, ``response``, ``remoteip``; ``{"success": true, "challenge_ts", "hostname",
  "error-codes": [], …}`` or ``{"success": false, "error-codes": [...]}`` with ``missing-input-secret``,
  ``invalid-input-secret``, ``missing-input-response``, ``invalid-input-response`` (fake), ``timeout-or-duplicate``
  (used, or older than 300 s), ``bad-request``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from local.ad_sandboxes.base import SandboxServer, json_answer

TOKEN_SECONDS = 300  # both providers: a token is valid for five minutes


class _CaptchaSandbox(SandboxServer):
    def __init__(self, secret_key: str | None = None, clock: Callable[[], float] = time.time, **options):
        super().__init__(**options)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self.clock = clock
        self._tokens: dict[str, tuple[float, str]] = {}  # token → (issued at, host)
        self._used: set[str] = set()
        self.verifications = 0

    def issue(self, host: str = "shop.example.ru") -> str:
        """A token, as the widget gives one to a visitor who passed."""
        token = self.token_prefix + secrets.token_urlsafe(48)
        with self.lock:
            self._tokens[token] = (self.clock(), host)
        return token

    def _redeem(self, token: str) -> tuple[str, str]:
        """("ok", host), ("fake", ""), ("used", "") or ("expired", "")."""
        with self.lock:
            self.verifications += 1
            if token not in self._tokens:
                return "fake", ""
            if token in self._used:
                return "used", ""
            issued, host = self._tokens[token]
            if self.clock() - issued > TOKEN_SECONDS:
                return "expired", ""
            self._used.add(token)
            return "ok", host

    token_prefix = ""

    def _issue_route(self, method: str, path: str):
        """``POST /_sandbox/token[?host=…]``: a token, as the widget would give a visitor who passed (for demos and
        scripts against ``make serve``; not part of the provider's API)."""
        if path.split("?")[0] != "/_sandbox/token" or method != "POST":
            return None
        host = parse_qs(path.partition("?")[2]).get("host", ["shop.example.ru"])[0]
        return json_answer(200, {"token": self.issue(host)})


class SmartCaptchaSandbox(_CaptchaSandbox):
    name = "smartcaptcha-sandbox"
    token_prefix = "dD0x"

    @property
    def validate_url(self) -> str:
        return f"{self.url}/validate"

    def handle(self, method, path, headers, body):
        issued = self._issue_route(method, path)
        if issued:
            return issued
        if path.split("?")[0] != "/validate":
            return json_answer(404, {"status": "failed", "message": "Not found."})
        if method != "POST":
            return json_answer(405, {"status": "failed", "message": "Method not allowed."})
        fields = {name: values[0] for name, values in parse_qs(body.decode("utf-8", "replace")).items()}
        if not fields.get("secret"):
            return json_answer(200, {"status": "failed", "message": "Authentication failed. Secret has not provided."})
        if fields["secret"] != self.secret_key:
            return json_answer(200, {"status": "failed", "message": "Authentication failed. Secret is invalid."})
        outcome, host = self._redeem(fields.get("token", ""))
        if outcome != "ok":
            return json_answer(200, {"status": "failed", "message": "Token invalid or expired."})
        return json_answer(200, {"status": "ok", "message": "", "host": host})


class TurnstileSandbox(_CaptchaSandbox):
    name = "turnstile-sandbox"
    token_prefix = "0.cf"

    @property
    def verify_url(self) -> str:
        return f"{self.url}/turnstile/v0/siteverify"

    def handle(self, method, path, headers, body):
        issued = self._issue_route(method, path)
        if issued:
            return issued
        if path.split("?")[0] != "/turnstile/v0/siteverify":
            return json_answer(404, {"success": False, "error-codes": ["bad-request"]})
        if method != "POST":
            return json_answer(405, {"success": False, "error-codes": ["bad-request"]})
        content_type = headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                fields = json.loads(body or b"{}")
                if not isinstance(fields, dict):
                    raise ValueError
            else:
                fields = {name: values[0] for name, values in parse_qs(body.decode("utf-8")).items()}
        except ValueError:
            return self._failed("bad-request")
        secret, token = str(fields.get("secret") or ""), str(fields.get("response") or "")
        if not secret:
            return self._failed("missing-input-secret")
        if secret != self.secret_key:
            return self._failed("invalid-input-secret")
        if not token:
            return self._failed("missing-input-response")
        if len(token) > 2048:
            return self._failed("invalid-input-response")
        outcome, host = self._redeem(token)
        if outcome == "fake":
            return self._failed("invalid-input-response")
        if outcome in ("used", "expired"):
            return self._failed("timeout-or-duplicate")
        solved = datetime.fromtimestamp(self.clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        answer = {"success": True, "challenge_ts": solved, "hostname": host, "error-codes": []}
        return json_answer(200, {**answer, "action": "", "cdata": ""})

    @staticmethod
    def _failed(*codes: str):
        return json_answer(200, {"success": False, "error-codes": list(codes), "messages": []})


def start_captcha(provider: str) -> tuple[_CaptchaSandbox, dict[str, str], dict[str, str]]:
    """Start the sandbox of ``provider`` (``smartcaptcha`` or ``turnstile``): (sandbox, the environment pointing the
    capture at it, the secret's keys to merge into the stack's secret)."""
    if provider == "smartcaptcha":
        sandbox = SmartCaptchaSandbox().start()
        environment = {"SMARTCAPTCHA_VALIDATE_URL": sandbox.validate_url}
        return sandbox, environment, {"SMARTCAPTCHA_SERVER_KEY": sandbox.secret_key}
    if provider == "turnstile":
        sandbox = TurnstileSandbox().start()
        environment = {"TURNSTILE_VERIFY_URL": sandbox.verify_url}
        return sandbox, environment, {"TURNSTILE_SECRET_KEY": sandbox.secret_key}
    raise ValueError(f"unknown captcha provider {provider!r}: smartcaptcha or turnstile")
