"""Optional captcha verification of form posts: Yandex SmartCaptcha and Cloudflare Turnstile.

Off unless a server key is configured (``SMARTCAPTCHA_SERVER_KEY`` / ``TURNSTILE_SECRET_KEY``, keys of the stack's
secret). The widget puts its one-time token into a hidden field of the form, which the capture snippet posts with
the other fields (``FormData``): ``smart-token`` (SmartCaptcha) or ``cf-turnstile-response`` (Turnstile). The token
is checked with the provider's server API and dropped from the submission.

- SmartCaptcha: ``POST https://smartcaptcha.yandexcloud.net/validate``, urlencoded ``secret``, ``token``, ``ip``;
  the answer ``{"status": "ok" | "failed", "message": …, "host": …}``. Its documentation recommends treating an HTTP
  error (a status other than 200) as ``ok`` so that users are not delayed (yandex.cloud/docs/smartcaptcha,
  «Verifying a CAPTCHA response»).
- Turnstile: ``POST https://challenges.cloudflare.com/turnstile/v0/siteverify``, ``secret``, ``response``,
  ``remoteip``; the answer ``{"success": bool, "error-codes": [...]}`` (``missing-input-response``,
  ``invalid-input-response``, ``timeout-or-duplicate`` are the visitor's; ``missing-input-secret``,
  ``invalid-input-secret``, ``bad-request``, ``internal-error`` are ours or theirs).

A post whose token is missing or refused is *held* by the caller (kept, not queued). When the provider cannot be
asked (network, HTTP error) or refuses *our* key, the post passes and the failure is logged and counted
(``CaptchaUnavailable``): a captcha outage or a mistyped key must not turn every real lead away; the rate limits
still apply. The HTTP client (urllib) is imported only when a key is configured.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

SMARTCAPTCHA_FIELD = "smart-token"
TURNSTILE_FIELD = "cf-turnstile-response"
TOKEN_FIELDS = (SMARTCAPTCHA_FIELD, TURNSTILE_FIELD)
TIMEOUT_SECONDS = 3.0
MAX_TOKEN_CHARS = 4096  # Turnstile: tokens are at most 2048 characters; SmartCaptcha's are a few hundred
# Turnstile's codes that say the token (the visitor), not our request or the service, failed.
TURNSTILE_VISITOR_CODES = frozenset({"missing-input-response", "invalid-input-response", "timeout-or-duplicate"})


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""  # why it failed, or why it was not verified; safe to log (never the token or the key)
    unavailable: bool = False  # the provider could not say (or refused our key): passed on purpose


class CaptchaVerifier:
    def __init__(
        self,
        *,
        smartcaptcha_key: str | None = None,
        smartcaptcha_url: str = "https://smartcaptcha.yandexcloud.net/validate",
        turnstile_key: str | None = None,
        turnstile_url: str = "https://challenges.cloudflare.com/turnstile/v0/siteverify",
        timeout: float = TIMEOUT_SECONDS,
    ):
        self.smartcaptcha_key = smartcaptcha_key
        self.smartcaptcha_url = smartcaptcha_url
        self.turnstile_key = turnstile_key
        self.turnstile_url = turnstile_url
        self.timeout = timeout

    @property
    def enabled(self) -> bool:
        return bool(self.smartcaptcha_key or self.turnstile_key)

    def verify(self, tokens: dict[str, str], ip: str | None) -> Verdict:
        """``tokens``: the posted token fields (``smart-token`` / ``cf-turnstile-response``) and their values."""
        smart, turnstile = tokens.get(SMARTCAPTCHA_FIELD, "").strip(), tokens.get(TURNSTILE_FIELD, "").strip()
        if self.smartcaptcha_key and smart:
            return self._checked(smart, lambda: self._smartcaptcha(smart, ip))
        if self.turnstile_key and turnstile:
            return self._checked(turnstile, lambda: self._turnstile(turnstile, ip))
        return Verdict(False, "no captcha token (form field smart-token or cf-turnstile-response)")

    @staticmethod
    def _checked(token: str, ask) -> Verdict:
        if len(token) > MAX_TOKEN_CHARS:
            return Verdict(False, "captcha token too long")
        return ask()

    def _smartcaptcha(self, token: str, ip: str | None) -> Verdict:
        fields = {"secret": self.smartcaptcha_key or "", "token": token}
        if ip:
            fields["ip"] = ip
        status, answer = self._post(self.smartcaptcha_url, fields)
        if status != 200 or not isinstance(answer, dict):
            # The documentation's advice: an HTTP error counts as "ok".
            return Verdict(True, f"SmartCaptcha answered HTTP {status}", unavailable=True)
        if answer.get("status") == "ok":
            return Verdict(True)
        message = str(answer.get("message") or "")
        if message.startswith("Authentication failed"):  # our server key is missing or wrong
            return Verdict(True, "SmartCaptcha refused the server key (SMARTCAPTCHA_SERVER_KEY)", unavailable=True)
        return Verdict(False, f"SmartCaptcha: {message or 'failed'}"[:200])

    def _turnstile(self, token: str, ip: str | None) -> Verdict:
        fields = {"secret": self.turnstile_key or "", "response": token}
        if ip:
            fields["remoteip"] = ip
        status, answer = self._post(self.turnstile_url, fields)
        if status != 200 or not isinstance(answer, dict):
            return Verdict(True, f"Turnstile answered HTTP {status}", unavailable=True)
        if answer.get("success") is True:
            return Verdict(True)
        codes = [str(code) for code in answer.get("error-codes") or []]
        if codes and all(code in TURNSTILE_VISITOR_CODES for code in codes):
            return Verdict(False, f"Turnstile: {', '.join(codes)}"[:200])
        return Verdict(True, f"Turnstile refused our request: {', '.join(codes) or 'no code'}"[:200], unavailable=True)

    def _post(self, url: str, fields: dict[str, str]) -> tuple[int, object]:
        """(HTTP status, parsed JSON or None); status 0 when the service could not be reached or did not answer
        within ``timeout`` in all. urllib's timeout bounds each socket read, not the request: an answer trickled a
        byte at a time (or a slow DNS lookup) would hold the post until Lambda ends the invocation, unstored. So the
        request runs in a daemon thread that is left to its own socket timeouts if it overruns."""
        answer: list[tuple[int, object]] = []
        worker = threading.Thread(target=lambda: answer.append(self._request(url, fields)), daemon=True)
        worker.start()
        worker.join(self.timeout)
        return answer[0] if answer else (0, None)

    def _request(self, url: str, fields: dict[str, str]) -> tuple[int, object]:
        import urllib.error
        import urllib.request
        from urllib.parse import urlencode

        request = urllib.request.Request(
            url,
            data=urlencode(fields).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, body = response.status, response.read(65536)
        except urllib.error.HTTPError as error:
            return error.code, None
        except (OSError, ValueError):  # refused, timed out, DNS, a malformed URL
            return 0, None
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None
