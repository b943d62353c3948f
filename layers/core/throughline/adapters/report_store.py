"""The report's S3 side: spend and rates to read, the CRM snapshot to keep, the report files to publish."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from throughline.adapters import aws
from throughline.report import jsonlines

REPORT_PREFIX = "reports/roi/"
LOCK_KEY = "crm/snapshot/run.lock"
CONTENT_TYPES = {
    "roi.json": "application/json; charset=utf-8",
    "roi.csv": "text/csv; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
}


class S3Objects:
    """Get, put and list keys of one bucket (the ``Objects`` protocol of ``report.crm``)."""

    def __init__(self, bucket: str, client: Any = None):
        self.bucket = bucket
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("s3")

    def get(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    def keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        options = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            options["StartAfter"] = start_after
        for page in paginator.paginate(**options):
            for item in page.get("Contents", []):
                yield item["Key"]

    def prefixes(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/"):
            found.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return found


def read_spend(objects: S3Objects, date_from: date, date_to: date) -> Iterator[dict[str, Any]]:
    """Spend rows of ``spend/platform=<p>/date=<d>/*.json.gz`` with ``date_from <= d <= date_to``; cost as Decimal."""
    for platform_prefix in objects.prefixes("spend/"):
        if not platform_prefix.startswith("spend/platform="):
            continue  # spend/manual/inbox/ and anything else that is not a partition
        start_after = f"{platform_prefix}date={(date_from - timedelta(days=1)).isoformat()}/~"
        for key in objects.keys(platform_prefix, start_after=start_after):
            day = _partition_value(key, "date")
            if day is None or not key.endswith(".json.gz"):
                continue
            if day > date_to.isoformat():
                break
            yield from jsonlines.decode(objects.get(key) or b"", decimals=True)


def read_rates(objects: S3Objects, date_from: date, date_to: date) -> list[dict[str, Any]]:
    """Rate files from a month before ``date_from`` (amounts on a day without a file use the one before)."""
    files = []
    start_after = f"rates/date={(date_from - timedelta(days=32)).isoformat()}"
    for key in objects.keys("rates/", start_after=start_after):
        day = _partition_value(key, "date")
        if day is None or not key.endswith("rates.json"):
            continue
        if day > date_to.isoformat():
            break
        files.append(json.loads(objects.get(key) or b"{}", parse_float=Decimal))
    return files


def publish(objects: S3Objects, day: date, files: Mapping[str, bytes]) -> dict[str, str]:
    """Write ``reports/roi/<day>/`` first, then copy to ``latest/``: a failed run leaves ``latest`` as it was.

    S3 has no multi-object transaction, so ``latest/`` is kept whole by hand: its files are read before the copies
    and, when a copy fails, written back (a file that did not exist before stays new: the function may not delete),
    so the page, the JSON and the CSV there always come from one run.
    """
    dated = f"{REPORT_PREFIX}{day.isoformat()}/"
    latest = f"{REPORT_PREFIX}latest/"
    for name, body in files.items():
        objects.put(dated + name, body, CONTENT_TYPES.get(name, "application/octet-stream"))
    previous = {name: objects.get(latest + name) for name in files}
    try:
        for name in files:
            objects.client.copy_object(
                Bucket=objects.bucket, Key=latest + name, CopySource={"Bucket": objects.bucket, "Key": dated + name}
            )
    except Exception:
        for name, body in previous.items():
            if body is not None:
                objects.put(latest + name, body, CONTENT_TYPES.get(name, "application/octet-stream"))
        raise
    return {"dated": f"s3://{objects.bucket}/{dated}", "latest": f"s3://{objects.bucket}/{latest}"}


def _partition_value(key: str, name: str) -> str | None:
    for part in key.split("/"):
        if part.startswith(f"{name}="):
            return part[len(name) + 1 :]
    return None


class ReportBusy(RuntimeError):
    """Another report run holds the lock: this one read and wrote nothing (the scheduler retries it)."""


@contextmanager
def run_lock(objects: S3Objects, owner: str, now: datetime, lease: timedelta) -> Iterator[None]:
    """One report run at a time: two at once would interleave their writes of the CRM snapshot and of ``latest/``.

    The lock is one object taken with S3's conditional writes — ``If-None-Match: *`` when there is none, ``If-Match``
    on the ETag of one that was released or whose lease (longer than the function's timeout) ran out — so of two runs
    only one can take it. Releasing overwrites it (the function may not delete); a crashed run's lease runs out.
    """
    client = objects.client
    try:
        found = client.get_object(Bucket=objects.bucket, Key=LOCK_KEY)
    except client.exceptions.NoSuchKey:
        condition = {"IfNoneMatch": "*"}
    else:
        held = json.loads(found["Body"].read() or b"{}")
        until = held.get("until")
        if not held.get("released") and until and datetime.fromisoformat(until) > now:
            raise ReportBusy(f"another report run ({held.get('owner')}) holds the lock until {until}")
        condition = {"IfMatch": found["ETag"]}
    body = json.dumps({"owner": owner, "since": now.isoformat(), "until": (now + lease).isoformat()}).encode()
    try:
        taken = client.put_object(Bucket=objects.bucket, Key=LOCK_KEY, Body=body, **condition)
    except client.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
            raise ReportBusy("another report run took the lock at the same moment") from None
        raise
    try:
        yield
    finally:
        released = json.dumps({"owner": owner, "released": True}).encode()
        with suppress(client.exceptions.ClientError):  # taken over after our lease ran out: someone else's now
            client.put_object(Bucket=objects.bucket, Key=LOCK_KEY, Body=released, IfMatch=taken["ETag"])
