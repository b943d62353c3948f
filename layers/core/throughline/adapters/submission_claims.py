"""Which submission id a form post's content was first accepted under, in the idempotency table.

Powertools' idempotency record answers a double post once the first one is stored. It cannot help when the first
attempt stored the raw copy and queued the message but its own record failed to save (or the attempt died between
them): the record is then absent or stuck in progress, and a retry would be run afresh, under a new submission id —
a second lead. So before storing anything, capture claims the content's key here (``claim#<HMAC of the
fingerprint>``) with its submission id and arrival time; a retry of the same content finds the claim and stores the
*same* submission again (the same raw-copy key; the same SQS deduplication id, which the FIFO queue drops within
five minutes, and the writer is idempotent per submission beyond that). The item holds no personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from throughline.adapters import aws

PREFIX = "claim#"


class SubmissionClaims:
    def __init__(self, table: str, key: str, window_seconds: int, client: Any = None):
        self.table = table
        self._key = key.encode()
        self.window_seconds = window_seconds
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def _key_of(self, fingerprint: str) -> str:
        return PREFIX + hmac.new(self._key, fingerprint.encode(), hashlib.sha256).hexdigest()

    def claimed(self, fingerprint: str) -> str | None:
        """The submission id the content was accepted under within the window, or None (nothing is written)."""
        item = self.client.get_item(
            TableName=self.table, Key={"id": {"S": self._key_of(fingerprint)}}, ConsistentRead=True
        )
        item = item.get("Item")
        if not item or int(item.get("expiration", {}).get("N", "0")) < int(time.time()):
            return None
        return item["submission_id"]["S"]

    def claim(self, fingerprint: str, submission_id: str, received_at: str) -> tuple[str, str]:
        """``(submission_id, received_at)`` the content was first claimed under within the window: the ones given
        when this is the first claim."""
        key = self._key_of(fingerprint)
        now = int(time.time())
        try:
            self.client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": key},
                    "submission_id": {"S": submission_id},
                    "received_at": {"S": received_at},
                    "expiration": {"N": str(now + self.window_seconds)},
                },
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
            return submission_id, received_at
        except self.client.exceptions.ConditionalCheckFailedException:
            item = self.client.get_item(TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)["Item"]
            return item["submission_id"]["S"], item["received_at"]["S"]
