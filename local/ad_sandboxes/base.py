"""The server skeleton and the deterministic statistics every ad sandbox serves."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class DailyStat:
    day: date
    campaign_id: str
    campaign_name: str
    impressions: int
    clicks: int
    cost: Decimal  # two decimals, the account's currency


def campaign_ids(account: str, count: int, start: int = 1000) -> list[str]:
    seed = int(hashlib.sha256(account.encode()).hexdigest()[:6], 16) % 900
    return [str((start + seed) * 1000 + n) for n in range(1, count + 1)]


def daily_stats(
    account: str, campaigns: list[str], day_from: date, day_to: date, *, names: Mapping[str, str] | None = None
) -> Iterator[DailyStat]:
    """Deterministic figures; about one campaign-day in seven has no impressions (and is not reported). ``names``
    gives campaigns the names an advertiser tags their links with (the demo), else «Кампания <id> «Поиск»»."""
    day = day_from
    while day <= day_to:
        for campaign in campaigns:
            digest = hashlib.sha256(f"{account}|{campaign}|{day}".encode()).digest()
            if digest[0] % 7 == 0:
                continue
            impressions = int.from_bytes(digest[1:3], "big") % 5000 + 1
            clicks = impressions * (digest[3] % 10) // 100
            cost = Decimal(int.from_bytes(digest[4:7], "big") % 500_000) / 100 if clicks else Decimal("0.00")
            name = (names or {}).get(campaign) or f"Кампания {campaign} «Поиск»"
            yield DailyStat(day, campaign, name, impressions, clicks, cost)
        day += timedelta(days=1)


class SandboxServer(ABC):
    """Start/stop a ThreadingHTTPServer on a free port around a ``handle(method, path, headers, body)`` method."""

    name = "sandbox"

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.campaign_names: dict[str, str] = {}  # campaign id → name; unnamed campaigns get a generated name

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Any:
        self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @abstractmethod
    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        """One request of the platform's protocol: (status, headers, body or streamed body parts)."""


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_answer(status: int, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    # A lone surrogate (a name cut in the middle of an emoji) goes as its JSON escape, as JSON.stringify writes it.
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(payload, ensure_ascii=False))
    body = text.encode("utf-8")
    return status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body


def _handler(sandbox: SandboxServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def _dispatch(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            with sandbox.lock:
                sandbox.requests.append((method, self.path))
            status, answer_headers, payload = sandbox.handle(method, self.path, headers, body)
            self.send_response(status)
            for key, value in answer_headers.items():
                self.send_header(key, value)
            if isinstance(payload, bytes):
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            # Streamed answers (a year of rows) go out chunked, as the real services send them.
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in payload:
                if part:
                    self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")

    return Handler
