"""Bitrix24 REST errors as typed exceptions.

Two properties decide what a caller may do: ``retryable`` (the same call may succeed later) and ``maybe_executed``
(the portal may have done the work even though we saw an error — a lost response). A write is repeated blindly
only when it certainly did not run; otherwise the caller must check first.
"""

from __future__ import annotations

from typing import Any


class BitrixError(Exception):
    retryable = False
    maybe_executed = False

    def __init__(self, code: str, description: str = "", status: int | None = None, method: str | None = None):
        super().__init__(f"{method or 'bitrix24'}: {code or 'error'} ({status}) {description}".strip())
        self.code = code
        self.description = description
        self.status = status
        self.method = method


class BitrixTransientError(BitrixError):
    """Worth retrying later: the portal is busy, limited or briefly broken."""

    retryable = True
    maybe_executed = True


class QueryLimitExceeded(BitrixTransientError):
    """503 QUERY_LIMIT_EXCEEDED: the leaky bucket is full; the request was rejected, not run."""

    maybe_executed = False


class OperationTimeLimit(BitrixTransientError):
    """429 OPERATION_TIME_LIMIT: this method is blocked for this webhook until ``retry_at`` (Unix time)."""

    maybe_executed = False

    def __init__(self, *args: Any, retry_at: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_at = retry_at


class BitrixUnavailable(BitrixTransientError):
    """5xx, a dropped connection or a timeout. ``maybe_executed`` is False only when nothing reached the portal."""

    def __init__(self, *args: Any, maybe_executed: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.maybe_executed = maybe_executed


class BatchIncomplete(BitrixUnavailable):
    """A ``batch`` answer without some of its commands' keys: the portal did not run what we sent (a redirect turned
    the POST into a GET) or the answer is cut short. Retry later; never read a missing key as «not found»."""


class BitrixAuthError(BitrixError):
    """Wrong or expired webhook, missing scope or permission, or REST not available on the portal's plan."""


class BitrixAccessDenied(BitrixAuthError):
    """«Access denied» for one record (crm-lead-get.md): the webhook's user may not read it. Inside a batch it
    concerns that command alone; the others ran."""


class BitrixNotFound(BitrixError):
    """The entity does not exist (or was deleted)."""


class BitrixMethodNotFound(BitrixError):
    """Unknown method: a typo, or a REST 3.0 method called at the old path."""


class BitrixBadRequest(BitrixError):
    """The portal refused the parameters."""


class NotEnoughTime(BitrixTransientError):
    """Waiting for the portal (pacing or back-off) would outlast the Lambda deadline; try again from the queue."""

    maybe_executed = False

    def __init__(self, wait_seconds: float, method: str | None = None, description: str | None = None):
        super().__init__("NOT_ENOUGH_TIME", description or f"would need to wait {wait_seconds:.1f} s", method=method)
        self.wait_seconds = wait_seconds


_AUTH_CODES = {
    "NO_AUTH_FOUND",
    "EXPIRED_TOKEN",
    "INVALID_TOKEN",
    "INVALID_CREDENTIALS",
    "INSUFFICIENT_SCOPE",
    "ACCESS_DENIED",
    "USER_ACCESS_ERROR",
    "WRONG_AUTH_TYPE",
    "AUTHORIZATION_ERROR",
}
_SERVER_CODES = {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "OVERLOAD_LIMIT"}
_NOT_FOUND_DESCRIPTIONS = ("not found", "element not found")


def error_from_response(status: int, body: Any, method: str | None = None) -> BitrixError:
    """Map an HTTP status and a (possibly non-JSON) body onto the exception hierarchy."""
    code, description = "", ""
    if isinstance(body, dict):
        code = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    upper = code.upper()
    # crm.*.get says «Access denied», a write «Access denied.» (crm-lead-add.md): one record refused either way.
    if description.strip().rstrip(".").lower() == "access denied" and upper in ("", "ACCESS_DENIED"):
        return BitrixAccessDenied(code, description, status, method)
    if upper == "QUERY_LIMIT_EXCEEDED":
        return QueryLimitExceeded(code, description, status, method)
    if upper == "OPERATION_TIME_LIMIT":
        time_block = body.get("time") if isinstance(body, dict) else None
        retry_at = time_block.get("operating_reset_at") if isinstance(time_block, dict) else None
        return OperationTimeLimit(code, description, status, method, retry_at=retry_at)
    if upper in _AUTH_CODES or status in (401, 403):
        return BitrixAuthError(code, description, status, method)
    if upper == "ERROR_METHOD_NOT_FOUND":
        return BitrixMethodNotFound(code, description, status, method)
    if upper == "PORTAL_DELETED":
        return BitrixAuthError(code, description, status, method)
    if upper == "NOT_FOUND" or description.strip().lower() in _NOT_FOUND_DESCRIPTIONS:
        return BitrixNotFound(code, description, status, method)
    if upper in _SERVER_CODES or status >= 500 or (not isinstance(body, dict) and status in (408, 425)):
        return BitrixUnavailable(code or f"HTTP_{status}", description, status, method)
    if 200 <= status < 300 and not isinstance(body, dict):
        # The portal answered "OK" but the body is not a REST envelope (cut short, or mangled on the way): it ran the
        # call, so a write must be treated as maybe done, never as refused.
        return BitrixUnavailable("BROKEN_RESPONSE", "a 2xx answer without a JSON object body", status, method)
    if not isinstance(body, dict):
        # An HTML 404 or similar: not a Bitrix24 REST answer at all — most likely a wrong portal URL.
        hint = "not a Bitrix24 REST response (check BITRIX24_WEBHOOK_URL)"
        return BitrixBadRequest(f"HTTP_{status}", hint, status, method)
    return BitrixBadRequest(code, description, status, method)
