"""An in-memory stand-in for the report's object store (``report.crm.Objects``: get, put, keys), recording its puts."""

from __future__ import annotations

from collections.abc import Iterator


class MemoryObjects:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.puts: list[str] = []

    def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    def put(self, key: str, body: bytes) -> None:
        self.data[key] = body
        self.puts.append(key)

    def keys(self, prefix: str) -> Iterator[str]:
        return iter(sorted(key for key in self.data if key.startswith(prefix)))
