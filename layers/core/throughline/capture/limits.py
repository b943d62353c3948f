"""Rate limits on the capture path: how many valid submissions one client IP and one contact may send per window.

A bot that posts valid-looking forms would otherwise fill the portal: every submission costs REST calls at the
portal's shared rate (2 per second), so 1 000 fake leads hold real ones back for minutes. Counters live in the
idempotency table (it has TTL on ``expiration``), one item per key and fixed window::

    id = "rate#<kind>#<HMAC of kind and value>#<window number>",  n = posts counted,  expiration = window end + 1 h

The value (an IP address or a normalized phone / e-mail) never leaves the function: the key is an HMAC keyed with
``PERSON_KEY_SECRET`` (``throughline.person_keys``). One conditional ``UpdateItem`` per key counts a post only while
the count is under the limit, so two functions counting at once never let more than the limit through, and a flood
does not grow the item. Over the limit the post is *held*, not refused: the caller keeps it under ``raw/held/`` and
does not queue it (``python -m throughline release-held`` queues it later if a real customer was held).
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from typing import Any

from throughline.adapters import aws
from throughline.person_keys import person_key

PREFIX = "rate#"
KINDS = ("ip", "contact")  # checked in this order; the first one over its limit is the reason given
EXPIRY_GRACE_SECONDS = 3600  # TTL deletes within days anyway; a counter must outlive its window, never the reverse


class RateLimiter:
    def __init__(
        self,
        table: str,
        secret: str,
        window_seconds: int,
        limits: Mapping[str, int],
        client: Any = None,
        clock: Callable[[], float] = time.time,
    ):
        self.table = table
        self.secret = secret
        self.window_seconds = window_seconds
        self.limits = {kind: limit for kind, limit in limits.items() if limit > 0}  # 0 turns a limit off
        self._client = client
        self._clock = clock

    @property
    def dynamodb(self) -> Any:
        return self._client or aws.client("dynamodb")

    @staticmethod
    def client(ip: str | None) -> str | None:
        """The client an address stands for: an IPv4 address itself, an IPv6 address its /64 network (one household
        or server gets a whole /64 and can post from any address in it), an IPv4-mapped one its IPv4 address."""
        if not ip:
            return None
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            return ip.strip()[:100]  # not an address (a local test's header): counted as given
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped:
                return str(address.ipv4_mapped)
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def key(self, kind: str, value: str, window: int) -> str:
        return f"{PREFIX}{kind}#{person_key(f'{kind}|{value}', self.secret)}#{window}"

    def over_limit(self, values: Mapping[str, str | None]) -> str | None:
        """Count this post against each kind's counter (``{"ip": "203.0.113.7", "contact": "+79161234567"}``);
        the kind whose limit it is over, or None when it is within every limit. A missing value is not counted."""
        now = self._clock()
        window = int(now // self.window_seconds)
        expiration = (window + 1) * self.window_seconds + EXPIRY_GRACE_SECONDS
        values = {**values, "ip": self.client(values.get("ip"))}
        for kind in KINDS:
            value, limit = values.get(kind), self.limits.get(kind)
            if not value or not limit:
                continue
            if not self._count(self.key(kind, value, window), limit, expiration):
                return kind
        return None

    def seconds_left(self) -> int:
        """Seconds until the current window ends (the Retry-After of a held post)."""
        return max(1, int(self.window_seconds - self._clock() % self.window_seconds))

    def _count(self, key: str, limit: int, expiration: int) -> bool:
        """One more post on ``key`` if it is under ``limit``; False (nothing written) when it is not."""
        client = self.dynamodb
        try:
            client.update_item(
                TableName=self.table,
                Key={"id": {"S": key}},
                UpdateExpression="ADD #n :one SET #e = if_not_exists(#e, :exp)",
                ConditionExpression="attribute_not_exists(#n) OR #n < :limit",
                ExpressionAttributeNames={"#n": "n", "#e": "expiration"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":exp": {"N": str(expiration)},
                    ":limit": {"N": str(limit)},
                },
            )
        except client.exceptions.ConditionalCheckFailedException:
            return False
        return True
