"""API Gateway HTTP API (payload v2) requests and responses, and CORS, for the public HTTP functions.

Hand-written on purpose: each HTTP function serves one route, and Powertools' event handler costs about 30 ms of
import on every cold start (it loads every resolver, AppSync's asyncio included) for routing we do not need.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

CORS_ALLOW_HEADERS = "Content-Type"
CORS_MAX_AGE = "600"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    path_parameters: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    source_ip: str | None = None
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> HttpRequest:
        """Raises ``UnreadableRequest`` for a body that cannot be bytes (invalid base64, not text): the caller
        answers 400, never a function error (which API Gateway turns into a 500)."""
        http = (event.get("requestContext") or {}).get("http") or {}
        return cls(
            method=(http.get("method") or "GET").upper(),
            path=event.get("rawPath") or http.get("path") or "/",
            path_parameters=dict(event.get("pathParameters") or {}),
            headers={
                str(key).lower(): str(value) for key, value in (event.get("headers") or {}).items() if value is not None
            },
            body=_body(event.get("body"), bool(event.get("isBase64Encoded"))),
            source_ip=http.get("sourceIp"),
            query=dict(event.get("queryStringParameters") or {}),
        )

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")


class UnreadableRequest(ValueError):
    """The event's body cannot be read as bytes; the message says why and is safe to send back."""


def _body(raw: Any, is_base64: bool) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise UnreadableRequest(f"the body must be text, got {type(raw).__name__}")
    if not is_base64:
        # surrogatepass: a lone surrogate becomes bytes that are no UTF-8, which the body's reader refuses with a 400
        return raw.encode("utf-8", "surrogatepass")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableRequest("the body is marked base64 but is not valid base64") from None


def json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json; charset=utf-8", **(headers or {})},
        "body": json.dumps(body, ensure_ascii=False),
        "isBase64Encoded": False,
    }


def empty_response(status: int, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"statusCode": status, "headers": dict(headers or {}), "body": "", "isBase64Encoded": False}


def cors_headers(
    request: HttpRequest, allowed_origins: Iterable[str], methods: str = "POST, OPTIONS"
) -> dict[str, str]:
    """CORS headers for an allowed ``Origin``; none for others (the browser then keeps the answer from the page).

    ``allowed_origins`` are compared in one spelling (``origin_of``): an operator's ``https://Shop.example.ru/`` or
    ``https://пример.рф`` is the origin a browser sends as ``https://shop.example.ru`` or ``https://xn--e1afmkfd.xn--p1ai``.
    The answer echoes only an ``Origin`` already in that spelling, which is how browsers send it.
    """
    origin = request.headers.get("origin")
    if not origin or _clean_origin(origin) != origin or origin not in origins(allowed_origins):
        return {}
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS":
        headers |= {
            "Access-Control-Allow-Methods": methods,
            "Access-Control-Allow-Headers": _allowed_request_headers(
                request.headers.get("access-control-request-headers")
            ),
            "Access-Control-Max-Age": CORS_MAX_AGE,
            "Vary": "Origin, Access-Control-Request-Headers",
        }
    else:
        headers["Access-Control-Expose-Headers"] = "Retry-After"  # so a page can honour our 503's advice
    return headers


# A header list as a preflight asks for it: comma-separated names (RFC 9110 tokens), nothing else.
_HEADER_LIST = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def _allowed_request_headers(requested: str | None) -> str:
    """Whatever headers an allowed site's script adds (Laravel's axios adds ``X-Requested-With`` to every request):
    we read none of them, so none is a risk, and refusing one fails the preflight and loses the post. Echoed only as
    a clean list of names."""
    requested = (requested or "").strip()
    if len(requested) <= 1000 and _HEADER_LIST.fullmatch(requested):
        return requested
    return CORS_ALLOW_HEADERS


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an http(s) address in the spelling browsers send in ``Origin`` (lower case, IDNA
    host, no default port), or None. Raises ``ValueError`` or ``UnicodeError`` for an unreadable address."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname or parts.username is not None or parts.password:
        return None
    host = parts.hostname
    host = f"[{host}]" if ":" in host else host.encode("idna").decode("ascii")
    port = parts.port
    return f"{scheme}://{host}" + (f":{port}" if port and port != {"http": 80, "https": 443}[scheme] else "")


def origins(urls: Iterable[str]) -> set[str]:
    """Configured origins in ``origin_of``'s spelling; one unreadable entry spoils no other."""
    return {origin for origin in map(_clean_origin, urls) if origin}


def _clean_origin(url: str) -> str | None:
    try:
        return origin_of(url)
    except (ValueError, UnicodeError):
        return None
