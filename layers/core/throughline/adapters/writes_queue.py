"""The FIFO queue of Bitrix24 writes: one message group per person or CRM entity keeps their writes in order."""

from __future__ import annotations

import json
import re
from typing import Any

from throughline.adapters import aws

MAX_VISIBILITY_SECONDS = 43200  # SQS limit: 12 hours
# SQS refuses a message with U+FFFE or U+FFFF in it (InvalidMessageContents; it takes #x9, #xA, #xD, #x20-#xD7FF,
# #xE000-#xFFFD, #x10000-#x10FFFF). JSON escapes the control characters itself; these two it writes as they are.
_REFUSED_BY_SQS = re.compile("[\ufffe\uffff]")


def message_body(message: dict[str, Any]) -> str:
    """The message as SQS takes it: JSON (UTF-8 text as it is), with the two characters SQS refuses escaped (in JSON
    text they can only stand inside a string, where ``\\uffff`` means the same)."""
    return _REFUSED_BY_SQS.sub(lambda found: f"\\u{ord(found.group()):04x}", json.dumps(message, ensure_ascii=False))


class WritesQueue:
    def __init__(self, url: str, client: Any = None):
        self.url = url
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("sqs")

    def send(self, message: dict[str, Any], *, group_id: str, deduplication_id: str) -> str:
        response = self.client.send_message(
            QueueUrl=self.url,
            MessageBody=message_body(message),
            MessageGroupId=group_id,
            MessageDeduplicationId=deduplication_id,
        )
        return response["MessageId"]

    def retry_after(self, receipt_handle: str, seconds: int) -> None:
        """Make a received message visible again after ``seconds`` (the queue's own back-off for a failed write)."""
        self.client.change_message_visibility(
            QueueUrl=self.url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(int(seconds), MAX_VISIBILITY_SECONDS)),
        )
