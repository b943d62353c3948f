"""The FIFO queue of Bitrix24 writes: one message group per person or CRM entity keeps their writes in order."""

from __future__ import annotations

import json
from typing import Any

from throughline.adapters import aws

MAX_VISIBILITY_SECONDS = 43200  # SQS limit: 12 hours


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
            MessageBody=json.dumps(message, ensure_ascii=False),
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
