"""Outbound webhooks: the POSTs Bitrix24 sends to a handler URL when CRM records change.

The body is form-encoded with PHP-style keys, exactly like the example in the docs::

    event=ONCRMLEADADD&event_handler_id=3&data[FIELDS][ID]=7405&ts=1766047124&auth[domain]=…
    &auth[client_endpoint]=https://…/rest/&auth[server_endpoint]=https://oauth.bitrix.info/rest/
    &auth[member_id]=…&auth[application_token]=…

Delivery runs on a background thread so that a slow handler never delays the REST call that caused the event, just as
the real queue server decouples them. There are no retries: the docs state that a failed delivery is logged and
dropped.
"""

from __future__ import annotations

import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from .php import build_query

__all__ = ["EVENT_NAMES", "OutboundEvent", "OutboundSender"]

EVENT_NAMES = tuple(
    f"ONCRM{entity}{action}"
    for entity in ("LEAD", "DEAL", "CONTACT", "ACTIVITY")
    for action in ("ADD", "UPDATE", "DELETE")
)
USER_AGENT = "Bitrix24 Webhook Engine"


@dataclass(frozen=True)
class OutboundEvent:
    url: str
    body: bytes


def event_body(
    *, event: str, record_id: int, domain: str, member_id: str, application_token: str, timestamp: int
) -> bytes:
    """Build the form body of one event; every value goes out as a string, as PHP serialises it."""
    payload = {
        "event": event,
        # One outgoing webhook holds one handler binding per event, so each event name has its own stable id.
        "event_handler_id": EVENT_NAMES.index(event) + 1 if event in EVENT_NAMES else 0,
        "data": {"FIELDS": {"ID": record_id}},
        "ts": timestamp,
        "auth": {
            "domain": domain,
            "client_endpoint": f"https://{domain}/rest/",
            "server_endpoint": "https://oauth.bitrix.info/rest/",
            "member_id": member_id,
            "application_token": application_token,
        },
    }
    return build_query(payload).encode("ascii")


class OutboundSender:
    """A single worker thread that POSTs queued events and reports each outcome through ``on_result(ok)``."""

    def __init__(self, *, timeout: float, on_result: Callable[[bool], None]) -> None:
        self._timeout = timeout
        self._on_result = on_result
        self._queue: queue.Queue[OutboundEvent | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        # Bitrix24's queue server calls the handler directly, so local proxy settings must not apply.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bitrix24-sandbox-outbound", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def enqueue(self, event: OutboundEvent) -> None:
        self._queue.put(event)

    def wait_idle(self, timeout: float) -> bool:
        """Block until every queued event has been attempted; ``False`` if ``timeout`` ran out first."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._queue.all_tasks_done.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                self._on_result(self._deliver(event))
            finally:
                self._queue.task_done()

    def _deliver(self, event: OutboundEvent) -> bool:
        request = urllib.request.Request(
            event.url,
            data=event.body,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT},
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False
