"""DynamoDB applies each request to an item atomically; moto in-process does not (two threads' conditional writes can
both pass their condition). ``AtomicCalls`` gives a moto client that guarantee and nothing more: each call runs alone,
threads interleave between calls. Code that read an item and then wrote it (two calls) would still race here; only a
conditional write (or a transaction) in one call holds."""

from __future__ import annotations

import threading
from typing import Any


class AtomicCalls:
    def __init__(self, client: Any):
        self._client, self._lock = client, threading.Lock()
        self.exceptions = client.exceptions
        self.meta = client.meta

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return method(*args, **kwargs)

        return call
