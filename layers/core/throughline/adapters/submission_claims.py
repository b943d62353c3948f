"""Which submission id a form post's content was first accepted under, and whether it was queued, in the
idempotency table: the double-submit answer of the capture path.

One item per content (``claim#<HMAC of the fingerprint>``), put before anything is stored, with the submission id and
arrival time the content is accepted under. A post that finds the content *completed* (queued) within the window is
a double submission: it is answered with the first submission id, and nothing is stored or queued again. A post that
finds it claimed but not completed (its twin is being stored right now, or an earlier attempt died or failed before
it was done) stores the *same* submission again: the same raw-copy key, the same SQS deduplication id, which the FIFO
queue drops within five minutes, and the writer is idempotent per submission beyond that. So neither a failure
between the claim and the queue, nor one of the completion's own write (the sender still gets 202), can make a
second lead (issue 15 #15).

Until issue 15 #9 a Powertools idempotency record did the completed part, and this claim (a third write) covered its
gaps: one item now does both, one DynamoDB write fewer per post. The item holds no personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import Any

from throughline.adapters import aws

PREFIX = "claim#"
COMPLETED = "completed"


@dataclass(frozen=True)
class Claim:
    submission_id: str
    received_at: str
    completed: bool  # the submission was queued: a repeat is answered, not stored again


class SubmissionClaims:
    def __init__(self, table: str, key: str, window_seconds: int, client: Any = None, clock: Any = time.time):
        self.table = table
        self._key = key.encode()
        self.window_seconds = window_seconds
        self._client = client
        self._clock = clock

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
        if not item or int(item.get("expiration", {}).get("N", "0")) < int(self._clock()):
            return None
        return item["submission_id"]["S"]

    def current(self, fingerprint: str) -> Claim | None:
        """The content's claim within the window as it stands, or None; nothing is written."""
        item = self.client.get_item(
            TableName=self.table, Key={"id": {"S": self._key_of(fingerprint)}}, ConsistentRead=True
        ).get("Item")
        if not item or int(item.get("expiration", {}).get("N", "0")) < int(self._clock()):
            return None
        state = item.get("state", {}).get("S")
        return Claim(item["submission_id"]["S"], item["received_at"]["S"], completed=state == COMPLETED)

    def claim(self, fingerprint: str, submission_id: str, received_at: str) -> Claim:
        """The claim of the content within the window: the one given when this is the first (not completed), else
        the first one's, as it stands. One conditional ``PutItem``; a refused one returns the item it found."""
        key = self._key_of(fingerprint)
        now = int(self._clock())
        client = self.client
        try:
            client.put_item(
                TableName=self.table,
                Item={
                    "id": {"S": key},
                    "submission_id": {"S": submission_id},
                    "received_at": {"S": received_at},
                    "expiration": {"N": str(now + self.window_seconds)},
                },
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
            return Claim(submission_id, received_at, completed=False)
        except client.exceptions.ConditionalCheckFailedException as refused:
            item = refused.response.get("Item")
            if item is None:  # a store that does not return the item: read it
                item = client.get_item(TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True)["Item"]
            state = item.get("state", {}).get("S")
            return Claim(item["submission_id"]["S"], item["received_at"]["S"], completed=state == COMPLETED)

    def complete(self, fingerprint: str, submission_id: str) -> None:
        """Mark the content's claim queued: repeats within the window are answered without storing anything.

        Only the claim of ``submission_id``: an attempt slower than the window may find its claim replaced by a newer
        submission of the content, and marking that one would answer its retry (after a 503) as a double of a
        submission never queued. Raises ``ConditionalCheckFailedException`` then (the caller logs it)."""
        self.client.update_item(
            TableName=self.table,
            Key={"id": {"S": self._key_of(fingerprint)}},
            UpdateExpression="SET #state = :completed",
            ConditionExpression="submission_id = :submission",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={":completed": {"S": COMPLETED}, ":submission": {"S": submission_id}},
        )
