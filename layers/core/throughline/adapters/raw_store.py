"""Raw copies of what arrived, in the data bucket: stored before anything is written from them, so nothing is lost."""

from __future__ import annotations

from typing import Any

from throughline.adapters import aws


class RawStore:
    def __init__(self, bucket: str, client: Any = None):
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("s3")

    def put(self, key: str, body: bytes, content_type: str = "application/json") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def get(self, key: str) -> bytes | None:
        """The object's body, or ``None`` when there is none."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def copy(self, source: str, key: str) -> None:
        """A server-side copy within the bucket (no bytes pass through the caller)."""
        self.client.copy_object(Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": source})
