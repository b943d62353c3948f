"""Short leases in DynamoDB that serialise the writes of one person (and one CRM record) across writer instances.

FIFO message groups keep one group's messages in order, but one person can reach two groups (a post with a phone and
a post with the e-mail only), and two writer instances would then look the person up at the same time and create two
leads. A lease per normalized contact (and per lead or deal about to be changed) closes that gap:

- a lease is one item, written only when absent, expired or already ours (a conditional put), with an expiry
  (``expiration``, the table's TTL attribute, which also cleans up after a crashed writer);
- a writer never waits for a lease: it takes all of a submission's leases in sorted order or none, and hands the
  message back to the queue when one is busy — so two writers can never deadlock;
- the key is an HMAC of the name with a key from the stack's secret: no phone number or e-mail leaves the function.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from throughline.adapters import aws

LEASE_SECONDS = 150.0  # longer than one writer invocation (template.yaml: Timeout 120)


@dataclass(frozen=True)
class Lease:
    keys: tuple[str, ...]
    owner: str


class Busy(Exception):
    """Someone else holds a lease on this person or record; the message returns to the queue shortly."""

    retryable = True
    maybe_executed = False

    def __init__(self, retry_in: float = 2.0):
        super().__init__(f"another writer is writing this person; retry in {retry_in:.0f} s")
        self.retry_at = time.time() + retry_in


class Locks:
    @classmethod
    def for_settings(cls, settings: Any) -> Locks | None:
        """The writers' leases (``LOCKS_TABLE``), or None without one. The form writer and the CRM-events writer share
        them, so a repeat request and an event's redraw of one record never interleave. Keys are HMACs keyed by
        PERSON_KEY_SECRET (else a key derived from the webhook secret): no contact leaves in clear or plainly hashed."""
        if not settings.locks_table:
            return None
        url = settings.bitrix24_webhook_url or ""
        key = settings.person_key_secret or hashlib.sha256(b"throughline-locks\0" + url.encode()).hexdigest()
        return cls(settings.locks_table, key.encode())

    def __init__(
        self,
        table: str,
        secret: bytes,
        client: Any = None,
        *,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ):
        self.table = table
        self._secret = secret
        self._client = client
        self.lease_seconds = lease_seconds
        self._clock = clock

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def key(self, name: str) -> str:
        return "lock#" + hmac.new(self._secret, name.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def acquire(
        self, names: Iterable[str], *, owner: str | None = None, lease_seconds: float | None = None
    ) -> Lease | None:
        """All leases for ``names`` or none (``None``: one is held by someone else). Never waits.

        With ``owner`` (a lease's token) the new leases join that lease; those it already holds are renewed."""
        owner = owner or uuid.uuid4().hex
        keys = sorted({self.key(name) for name in names})
        taken: list[str] = []
        now = self._clock()
        expires = int(now + (lease_seconds or self.lease_seconds)) + 1
        for key in keys:
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={"id": {"S": key}, "owner": {"S": owner}, "expiration": {"N": str(expires)}},
                    ConditionExpression="attribute_not_exists(id) OR expiration < :now OR #o = :owner",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":now": {"N": str(int(now))}, ":owner": {"S": owner}},
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                self.release(Lease(tuple(taken), owner))
                return None
            except BaseException:
                self.release(Lease(tuple(taken), owner))
                raise
            taken.append(key)
        return Lease(tuple(taken), owner)

    def extend(self, lease: Lease, names: Iterable[str]) -> Lease | None:
        """``lease`` plus leases for more names (all or none); ``None`` leaves ``lease`` as it was."""
        more = self.acquire([name for name in names if self.key(name) not in lease.keys], owner=lease.owner)
        return None if more is None else Lease(tuple(sorted({*lease.keys, *more.keys})), lease.owner)

    def release(self, lease: Lease | None) -> None:
        """Give leases back; only our own (an expired lease someone else took since is left alone)."""
        if lease is None:
            return
        for key in lease.keys:
            with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
                self.client.delete_item(
                    TableName=self.table,
                    Key={"id": {"S": key}},
                    ConditionExpression="#o = :owner",
                    ExpressionAttributeNames={"#o": "owner"},
                    ExpressionAttributeValues={":owner": {"S": lease.owner}},
                )
