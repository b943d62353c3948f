"""Spend objects in the data bucket: whole-partition writes, small JSON state, the manual inbox.

Layout (the storage contract the report reads):
``spend/platform=<platform>/date=<YYYY-MM-DD>/<account_id>.json.gz`` — gzip'd JSON Lines, one object per
platform × date × account, replaced whole by one PUT (S3 PUTs are atomic), so a rerun never double-counts and a
failing account never touches another account's object.
"""

from __future__ import annotations

import gzip
import json
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import date
from typing import Any

from botocore.exceptions import ClientError

from throughline.adapters import aws

SPEND_PREFIX = "spend/"
STATE_PREFIX = "spend/_state/"
MANUAL_INBOX = "spend/manual/inbox/"
MANUAL_PROCESSED = "spend/manual/processed/"
RATES_PREFIX = "rates/"
# Credentials a platform hands out at run time (VK's tokens): outside spend/, which the report function and anyone
# querying the Athena tables may read; only the import function may touch it.
PRIVATE_PREFIX = "private/"
_SAFE_ACCOUNT = re.compile(r"^[A-Za-z0-9._@+-]{1,200}$")


def partition_key(platform: str, day: date, account_id: str) -> str:
    if not _SAFE_ACCOUNT.fullmatch(account_id):
        raise ValueError(f"account id {account_id!r} cannot name an object")
    return f"{SPEND_PREFIX}platform={platform}/date={day.isoformat()}/{account_id}.json.gz"


# The gzip member as GzipFile(mtime=0) writes it at level 9 (RFC 1952): no name, mtime 0 — the same rows give the same
# bytes, so a rerun writes an identical object —, XFL 2 (best compression), OS 255 (unknown). Not a GzipFile: in
# Python 3.12 and 3.13.0 a writing GzipFile is a reference cycle (CPython gh-129640), and its 32 kB buffer stays until
# a full garbage collection — a long import piled one up per partition. Not gzip.compress(mtime=0) either: in Python
# 3.11 and 3.12 it lets zlib write the header (OS 3), so the bytes would depend on the Python that wrote them.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"


def _gzip(data: bytes) -> bytes:
    trailer = struct.pack("<LL", zlib.crc32(data), len(data) & 0xFFFFFFFF)
    return _GZIP_HEADER + zlib.compress(data, level=9, wbits=-15) + trailer  # wbits -15: a raw deflate stream


class GzipLines:
    """A partition's lines compressed as they are added: ``write_partition`` stores the same bytes as for the lines
    themselves, while a day of a large report is held at a fraction of its size (a Direct chunk may hold a million
    rows: ~0.4 kB each as lines, ~420 MB — more than the function has). Small days stay plain lines until
    ``PLAIN_BYTES`` (a compressor holds ~0.3 MB of its own)."""

    PLAIN_BYTES = 256 * 1024
    __slots__ = ("_crc", "_deflate", "_parts", "_size", "count")

    def __init__(self) -> None:
        self._deflate: Any = None
        self._parts: list[bytes] = []  # plain lines until the compressor starts, then its output
        self._crc = 0
        self._size = 0
        self.count = 0

    def add(self, line: bytes) -> None:
        data = line + b"\n"
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self.count += 1
        if self._deflate is None:
            self._parts.append(data)
            if self._size > self.PLAIN_BYTES:
                self._deflate = zlib.compressobj(level=9, wbits=-15)
                plain, self._parts = b"".join(self._parts), []
                self._parts.append(self._deflate.compress(plain))
        else:
            out = self._deflate.compress(data)
            if out:
                self._parts.append(out)

    def body(self) -> bytes:
        """The gzip object (byte for byte what ``_gzip`` makes of the lines); the lines are let go."""
        if self._deflate is None:
            deflated = zlib.compress(b"".join(self._parts), level=9, wbits=-15)
        else:
            deflated = b"".join(self._parts) + self._deflate.flush()
        self._parts, self._deflate = [], None
        return _GZIP_HEADER + deflated + struct.pack("<LL", self._crc, self._size & 0xFFFFFFFF)


class SpendStore:
    def __init__(self, bucket: str, client: Any = None):
        self.bucket = bucket
        self._client = client
        self.objects_written = 0

    @property
    def client(self) -> Any:
        return self._client or aws.client("s3")

    # -- partitions -------------------------------------------------------------------------------------------------

    def write_partition(
        self, platform: str, day: date, account_id: str, lines: Iterable[str | bytes] | GzipLines
    ) -> str:
        """Replace one partition object with these JSON lines (zero lines is a valid, 'imported, no spend' object);
        a line as bytes is already UTF-8; ``GzipLines`` are already compressed."""
        if isinstance(lines, GzipLines):
            body = lines.body()
        else:
            text = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n" for line in lines)
            body = _gzip(text)
        key = partition_key(platform, day, account_id)
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/x-ndjson",
            ContentEncoding="gzip",
        )
        self.objects_written += 1
        return key

    def read_partition(self, platform: str, day: date, account_id: str) -> list[str]:
        body = self.get_bytes(partition_key(platform, day, account_id))
        if body is None:
            return []
        # Lines end at "\n" only (str.splitlines would also cut at U+2028 and the like).
        return [line for line in gzip.decompress(body).decode("utf-8").split("\n") if line]

    def partition_days(self, platform: str, account_id: str) -> set[date]:
        """The days that hold an object of this account (what a replacement of the account's spend must clear)."""
        prefix = f"{SPEND_PREFIX}platform={platform}/date="
        suffix = f"/{account_id}.json.gz"
        return {
            date.fromisoformat(key[len(prefix) : -len(suffix)])
            for key in self.keys(prefix)
            if key.endswith(suffix) and len(key) == len(prefix) + 10 + len(suffix)
        }

    def delete_partition(self, platform: str, day: date, account_id: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=partition_key(platform, day, account_id))

    # -- plain objects ----------------------------------------------------------------------------------------------

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def get_json(self, key: str) -> Any:
        body = self.get_bytes(key)
        return None if body is None else json.loads(body)

    def put_json(self, key: str, value: Any) -> None:
        # One line: Athena's JSON SerDe reads one object per line (rates/ is a table too).
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def update_json(self, key: str, change: Callable[[Any], Any], attempts: int = 20) -> Any:
        """Read-modify-write one small JSON object, atomic against other writers: the PUT is conditional on the
        object being the one read (S3 conditional writes), and ``change`` runs again on the newer one otherwise."""
        for _ in range(attempts):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
                current, etag = json.loads(answer["Body"].read()), answer.get("ETag")
            except self.client.exceptions.NoSuchKey:
                current, etag = None, None
            value = change(current)
            body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"} if current is None else {}
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType="application/json", **condition
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    continue  # another writer came first: apply the change to what it wrote
                raise
            return value
        raise RuntimeError(f"{key} kept changing under {attempts} attempts to update it")

    def put_bytes(self, key: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def move(self, source: str, target: str) -> None:
        self.client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source})
        self.client.delete_object(Bucket=self.bucket, Key=source)

    def keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self.sizes(prefix):
            yield key

    def sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        """``(key, size in bytes)`` under ``prefix``: what a reader can refuse before reading it."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], int(item.get("Size", 0))
