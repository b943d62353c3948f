"""Put messages from a dead-letter queue back on their queue, in order, once the cause is fixed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class ReplayResult:
    moved: int = 0
    failed: int = 0


def replay_dead_letters(
    sqs: Any,
    *,
    dead_letter_queue_url: str,
    queue_url: str,
    limit: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> ReplayResult:
    """Move up to ``limit`` messages (all by default). Each is sent before it is deleted from the DLQ, so a crash
    leaves a duplicate at worst — and the writer is idempotent. Message groups keep their order."""
    result = ReplayResult()
    empty_polls = 0
    stamp = int(time.time())
    while empty_polls < 2 and (limit is None or result.moved < limit):
        want = 10 if limit is None else max(1, min(10, limit - result.moved))
        messages = sqs.receive_message(
            QueueUrl=dead_letter_queue_url,
            MaxNumberOfMessages=want,
            WaitTimeSeconds=1,
            VisibilityTimeout=120,
            MessageSystemAttributeNames=["MessageGroupId", "MessageDeduplicationId"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            empty_polls += 1
            continue
        empty_polls = 0
        for message in messages:
            attributes = message.get("Attributes", {})
            send: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": message["Body"]}
            if message.get("MessageAttributes"):
                send["MessageAttributes"] = message["MessageAttributes"]
            if queue_url.endswith(".fifo"):
                send["MessageGroupId"] = attributes.get("MessageGroupId") or "replayed"
                # A fresh deduplication id: the original may still be inside the queue's 5-minute window.
                original = attributes.get("MessageDeduplicationId") or message["MessageId"]
                send["MessageDeduplicationId"] = f"{original[:100]}-replay-{stamp}"
            try:
                sqs.send_message(**send)
            except Exception as error:
                # Stop here: moving later messages of the same group first would break their order.
                result.failed += 1
                progress(f"could not move {message['MessageId']}: {error}; stopping (it stays in the DLQ)")
                return result
            sqs.delete_message(QueueUrl=dead_letter_queue_url, ReceiptHandle=message["ReceiptHandle"])
            result.moved += 1
        progress(f"moved {result.moved} message(s) so far")
    return result
