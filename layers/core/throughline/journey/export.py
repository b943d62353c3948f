"""The journey store exported for attribution and Athena: gzip JSON Lines under ``journeys/snapshot=<date>/``.

- ``part-<bucket>-<seq>.json.gz``: one touch per line, ``{"person_key", "entity_type", "entity_id", "touch_id",
  "at" (ISO 8601 UTC), "kind", "channel", "source", "medium", "campaign", "content", "term", "detail"}`` (phones
  and e-mails in ``detail`` masked);
- ``entities.json.gz``: one line per entity, ``{"entity_type", "entity_id", "person_key", "deleted", "lead_id",
  "contact_id"}`` (a deal's ``lead_id`` links it to the lead it came from, whose touches are its journey before the
  deal; ``contact_id`` to its contact), sorted by ``<TYPE>#<id>``;
- ``journeys/latest.json`` = ``{"snapshot": "<date>", "parts": [...], "access_denied": <count>, ...}``, written last,
  so a reader never sees a half-written snapshot (``access_denied``: «Access denied» answers the writers met so far).
  A snapshot folder is complete by itself.

``kind`` says what a touch was: ``first_visit``, ``form``, ``repeat_request`` (the site); ``crm_lead`` / ``crm_deal``
(a record typed in the CRM: its own first touch, channel from its UTM tags or SOURCE_ID); ``incoming_call``,
``missed_call``, ``incoming_email``, ``chat`` (the person reached out: channel ``offline``, ``email``, ``messenger``);
``outgoing_call``, ``outgoing_email``, ``meeting``, ``task``, ``activity``, ``deal_created``, ``stage``, ``won``,
``lost`` (sales-side: channel ``crm``, which is not a marketing channel and should not take attribution credit).

Parts are buckets: an entity's touch lines all sit in bucket ``crc32("LEAD#5") % buckets``, in
``part-<bucket:04d>-<seq:04d>.json.gz`` (a bucket may span several files). ``latest.json`` also says how the snapshot
was made: ``buckets``, ``changes_since`` (when the run began reading the store: the next run reads the change log
from there) and ``rebuilt`` (the day of the last full rebuild).

Two ways to a snapshot, with equal output (the tests compare them line for line):
- **full** (the first export, ``full=True``, a changed bucket count, a change log older than the previous run's
  start allows, a same-day rerun, and weekly): two parallel scans of the table (one thread per segment): the entities'
  ``#meta`` first, then every touch, each bucket's file written as it fills (or when the buffers pass a memory budget);
- **incremental**: the store's change log (``JourneyStore.changed``: a Query per day and shard) names the entities
  written since the previous run began (less a margin); with the deals that borrow their person from a changed lead or
  contact (``lead_id`` / ``contact_id`` in the previous ``entities.json.gz``) each is read whole by one Query; the
  buckets holding one of them are rewritten from the previous snapshot's files, the others copied server-side, and
  ``entities.json.gz`` is patched. DynamoDB reads follow the day's changes, not the table's history.
People who never converted are included: every lead's touches are, whatever became of it.
"""

from __future__ import annotations

import gzip
import heapq
import io
import json
import re
import threading
import uuid
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

from throughline.adapters.journey_store import CHANGE_LOG_DAYS, META, PERSON_PREFIX, JourneyStore
from throughline.adapters.raw_store import RawStore
from throughline.journey.packed import (
    ENTITIES_NAME,
    NotPackable,
    PackedWriter,
    pack_entities,
    pack_lines,
    packed_folder,
    packed_name,
    pointer,
)
from throughline.journey.packed import VERSION as PACKED_VERSION
from throughline.privacy.masking import mask_contacts
from throughline.text import storable_values

PREFIX = "journeys"
LATEST = f"{PREFIX}/latest.json"
ENTITY_TYPES = {"LEAD": "lead", "DEAL": "deal", "CONTACT": "contact"}
KINDS = {value: key for key, value in ENTITY_TYPES.items()}
TOUCH_FIELDS = ("kind", "channel", "source", "medium", "campaign", "content", "term", "detail")
FULL_EVERY_DAYS = 7  # a full rebuild at least weekly: what no change mark names (a hand edit) heals within a week
# A write is marked before it lands; the mark's day is read again by the next run, less this margin for a write
# in flight when a run began (a Lambda's longest life) and for eventually consistent reads.
CHANGE_MARGIN = timedelta(minutes=20)
PART_NAME = re.compile(r"part-\d{4}-\d{4}\.json\.gz")
BUFFER_BUDGET = 64 * 2**20  # compressed bytes a full rebuild holds before writing its largest bucket early


def export_journeys(
    store: JourneyStore,
    bucket: str | RawStore,
    day: date,
    *,
    segments: int = 4,
    lines_per_part: int = 100_000,
    buckets: int | None = None,
    full: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write one snapshot; returns ``latest.json``'s content (with line counts, the mode and why)."""
    started = (now or datetime.now(UTC)).astimezone(UTC)
    target = bucket if isinstance(bucket, RawStore) else RawStore(bucket)
    folder = f"{PREFIX}/snapshot={day.isoformat()}"
    previous = _previous(target)
    reason = _full_reason(previous, day, started, buckets, full)
    # The packed copy (journey/packed.py) goes to a folder of its own each run: never one the current latest.json names.
    run = f"run={started:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    packing = _Packing(day.isoformat(), packed_folder(day.isoformat(), run))
    if previous and previous.get("snapshot") == day.isoformat() and previous.get("packed"):
        # This run rewrites the parts of the folder latest.json names: until it ends, readers take the JSON parts.
        unpacked = {key: value for key, value in previous.items() if key != "packed"}
        target.put(LATEST, json.dumps(unpacked).encode(), "application/json")
    if not reason:
        assert previous is not None
        count = int(previous["buckets"])
        try:
            parts, touches, entities = _incremental(
                store, target, folder, previous, count, started, lines_per_part, packing
            )
            rebuilt = str(previous["rebuilt"])
        except _Rebuild as missing:
            reason = str(missing)
            packing = _Packing(packing.snapshot, packing.folder + "-full")
    if reason:
        count = buckets or _bucket_count(store, lines_per_part)
        parts, touches, entities = _full(store, target, folder, count, segments, lines_per_part, packing)
        rebuilt = day.isoformat()
    latest = {
        "snapshot": day.isoformat(),
        "parts": parts,
        "buckets": count,
        "changes_since": started.isoformat(),
        "rebuilt": rebuilt,
        # «Access denied» answers so far: records the webhook's user may not see, missing from every journey.
        "access_denied": store.access_denied(),
    }
    if packing.ok and set(packing.names) >= set(parts) and packing.entities:
        latest["packed"] = pointer([packing.names[part] for part in parts], packing.entities)
    target.put(LATEST, json.dumps(latest).encode(), "application/json")  # last: the snapshot is complete
    return {**latest, "mode": "full" if reason else "incremental", "reason": reason, **touches, "entities": entities}


class _Packing:
    """The packed copies of one run's parts (part → packed key); ``ok`` turns false for good when a line cannot be
    packed (the snapshot then has no packed copy: the report reads its JSON parts)."""

    def __init__(self, snapshot: str, folder: str):
        self.snapshot, self.folder = snapshot, folder
        self.names: dict[str, str] = {}
        self.entities: str | None = None
        self.ok = True
        self.lock = threading.Lock()

    def pack_entities(self, target: RawStore, lines: Iterable[str]) -> None:
        """entities.json.gz's packed copy, from its lines."""
        if not self.ok:
            return
        try:
            body = pack_entities(self.snapshot, (json.loads(line) for line in lines))
        except NotPackable:
            self.ok = False
            return
        name = f"{self.folder}/{ENTITIES_NAME}"
        target.put(name, body, "application/octet-stream")
        self.entities = name

    def put(self, target: RawStore, part: str, body: bytes | None) -> None:
        """Store a part's packed copy (``None``: it could not be packed)."""
        if body is None or not self.ok:
            self.ok = False
            return
        name = packed_name(self.folder, part)
        target.put(name, body, "application/octet-stream")
        with self.lock:
            self.names[part] = name

    def pack(self, target: RawStore, part: str, lines: Iterable[str]) -> None:
        """Pack a part from its JSON lines."""
        if self.ok:
            self.pack_rows(target, part, (json.loads(line) for line in lines))

    def pack_rows(self, target: RawStore, part: str, rows: Iterable[dict[str, Any]]) -> None:
        """Pack a part from its lines' fields."""
        if not self.ok:
            return
        try:
            body = pack_lines(self.snapshot, part, rows)
        except NotPackable:
            body = None
        self.put(target, part, body)


class _Rebuild(Exception):
    """The previous snapshot cannot be built upon (an object it names is gone): rebuild in full."""


def _previous(target: RawStore) -> dict[str, Any] | None:
    raw = target.get(LATEST)
    return json.loads(raw) if raw else None


def _full_reason(
    previous: dict[str, Any] | None, day: date, started: datetime, buckets: int | None, full: bool
) -> str | None:
    """Why this run rebuilds in full, or ``None`` when the change log may be followed."""
    if full:
        return "asked"
    if not previous:
        return "no previous snapshot"
    if not previous.get("changes_since") or not previous.get("buckets") or not previous.get("rebuilt"):
        return "the previous snapshot predates the change log"
    if not all(PART_NAME.fullmatch(name.rsplit("/", 1)[-1]) for name in previous.get("parts") or []):
        return "the previous parts are not buckets"  # rewritten by another tool: their entities' buckets are unknown
    if buckets and int(previous["buckets"]) != buckets:
        return "bucket count changed"
    if previous["snapshot"] == day.isoformat():
        return "same-day rerun"  # never rewrite, file by file, the folder latest.json points to
    if (day - date.fromisoformat(previous["rebuilt"])).days >= FULL_EVERY_DAYS:
        return "weekly rebuild"
    since = datetime.fromisoformat(previous["changes_since"])
    if started - since > timedelta(days=CHANGE_LOG_DAYS - 1) or since > started:
        return "change log does not cover the gap"
    return None


def _bucket_count(store: JourneyStore, lines_per_part: int) -> int:
    """Buckets of about ``lines_per_part`` items each (a power of two, 8 to 4096)."""
    wanted = max(1, -(-store.item_count() // lines_per_part))
    count = 8
    while count < wanted and count < 4096:
        count *= 2
    return count


def bucket_of(entity: str, buckets: int) -> int:
    return zlib.crc32(entity.encode()) % buckets


def _part_name(folder: str, bucket: int, seq: int) -> str:
    return f"{folder}/part-{bucket:04d}-{seq:04d}.json.gz"


def _bucket_of_part(name: str) -> int:
    return int(name.rsplit("/", 1)[-1].split("-")[1])


# -- full rebuild ----------------------------------------------------------------------------------------------------


def _full(
    store: JourneyStore,
    target: RawStore,
    folder: str,
    buckets: int,
    segments: int,
    lines_per_part: int,
    packing: _Packing,
) -> tuple[list[str], dict[str, int], int]:
    entities = _entities(store, segments)
    writer = _BucketWriter(target, folder, buckets, lines_per_part, packing)
    touches = [0] * segments

    def export(segment: int) -> None:
        for item in store.scan(segment, segments):
            entity, touch = item["entity"], item["touch"]
            if touch.startswith("#") or entity.startswith(PERSON_PREFIX) or entity.split("#")[0] not in ENTITY_TYPES:
                continue
            writer.add(bucket_of(entity, buckets), _touch_line(entity, item, entities))
            touches[segment] += 1

    with ThreadPoolExecutor(max_workers=segments) as pool:
        list(pool.map(export, range(segments)))
    parts = writer.close()
    lines = [_entity_line(entity, meta, entities) for entity, meta in sorted(entities.items())]
    target.put(f"{folder}/entities.json.gz", gzip_lines(lines), "application/gzip")
    packing.pack_entities(target, lines)
    return parts, {"touches": sum(touches)}, len(lines)


class _BucketWriter:
    """One gzip stream per bucket, shared by the scan threads; a bucket's file is written when it holds
    ``lines_per_part`` lines, or early (its largest first) when the buffers pass ``BUFFER_BUDGET``."""

    def __init__(self, target: RawStore, folder: str, buckets: int, lines_per_part: int, packing: _Packing):
        self.target, self.folder, self.lines_per_part, self.packing = target, folder, lines_per_part, packing
        self.snapshot = folder.rpartition("snapshot=")[2]
        self.lock = threading.Lock()
        self.streams: dict[int, tuple[io.BytesIO, gzip.GzipFile, list[int], PackedWriter | None]] = {}
        self.seq = [0] * buckets
        self.names: list[str] = []

    def add(self, bucket: int, line: dict[str, Any]) -> None:
        _, data, line = _encoded(line)
        with self.lock:
            if bucket not in self.streams:
                buffer = io.BytesIO()
                part = _part_name(self.folder, bucket, self.seq[bucket])
                packer = PackedWriter(self.snapshot, part) if self.packing.ok else None
                self.streams[bucket] = (buffer, gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0), [0], packer)
            buffer, archive, count, packer = self.streams[bucket]
            archive.write(data + b"\n")
            if packer is not None and self.packing.ok:
                try:
                    packer.add(line)
                except NotPackable:
                    self.packing.ok = False
            count[0] += 1
            if count[0] >= self.lines_per_part:
                self._flush(bucket)
            elif sum(s[0].tell() + (s[3].nbytes if s[3] else 0) for s in self.streams.values()) > BUFFER_BUDGET:
                self._flush(max(self.streams, key=lambda b: self.streams[b][0].tell()))

    def _flush(self, bucket: int) -> None:
        buffer, archive, _, packer = self.streams.pop(bucket)
        archive.close()
        name = _part_name(self.folder, bucket, self.seq[bucket])
        self.seq[bucket] += 1
        self.target.put(name, buffer.getvalue(), "application/gzip")
        self.packing.put(self.target, name, packer.to_bytes() if packer is not None and self.packing.ok else None)
        self.names.append(name)

    def close(self) -> list[str]:
        for bucket in sorted(self.streams):
            self._flush(bucket)
        return sorted(self.names)


def _entities(store: JourneyStore, segments: int) -> dict[str, dict[str, Any]]:
    """Every CRM entity with its ``#meta`` (empty for an entity known only by its touches)."""

    def read(segment: int) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for item in store.scan(segment, segments):
            entity = item["entity"]
            if entity.split("#")[0] not in ENTITY_TYPES:
                continue
            if item["touch"] == META:
                found[entity] = item
            else:
                found.setdefault(entity, {})
        return found

    merged: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=segments) as pool:
        for part in pool.map(read, range(segments)):
            for entity, meta in part.items():
                if meta or entity not in merged:
                    merged[entity] = meta
    return merged


# -- incremental -----------------------------------------------------------------------------------------------------


def _incremental(
    store: JourneyStore,
    target: RawStore,
    folder: str,
    previous: dict[str, Any],
    buckets: int,
    started: datetime,
    lines_per_part: int,
    packing: _Packing,
) -> tuple[list[str], dict[str, int], int]:
    old_folder = f"{PREFIX}/snapshot={previous['snapshot']}"
    since = datetime.fromisoformat(previous["changes_since"]) - CHANGE_MARGIN
    days = [since.date() + timedelta(days=n) for n in range((started.date() - since.date()).days + 1)]
    changed = {entity for entity in store.changed(days) if entity.split("#")[0] in ENTITY_TYPES}
    old_entities = target.get(f"{old_folder}/entities.json.gz")
    if old_entities is None:
        raise _Rebuild("the previous entities.json.gz is missing")
    affected = changed | _dependents(old_entities, changed)

    # Each affected entity read whole (one Query), and the #meta of the leads and contacts they borrow a person from.
    with ThreadPoolExecutor(max_workers=8) as pool:
        items = dict(zip(sorted(affected), pool.map(store.entity_items, sorted(affected)), strict=True))
    entities: dict[str, dict[str, Any]] = {}
    for entity, found in items.items():
        if found:
            entities[entity] = next((item for item in found if item["touch"] == META), {})
    linked = {
        f"{kind}#{int(meta[link])}"
        for meta in entities.values()
        for link, kind in (("lead_id", "LEAD"), ("contact_id", "CONTACT"))
        if meta.get(link)
    } - set(entities)
    lookup = {**store.metas(sorted(linked)), **entities}

    # Touch lines by bucket: the affected buckets rewritten, the others copied.
    fresh: dict[int, list[tuple[str, dict[str, Any]]]] = {}  # (line, its fields: for the packed copy)
    touches = 0
    for entity in sorted(entities):
        for item in items[entity]:
            if not item["touch"].startswith("#"):
                text, _, row = _encoded(_touch_line(entity, item, lookup))
                fresh.setdefault(bucket_of(entity, buckets), []).append((text, row))
                touches += 1
    rewritten = {bucket_of(entity, buckets) for entity in affected}
    old_parts: dict[int, list[str]] = {}
    for name in previous["parts"]:
        old_parts.setdefault(_bucket_of_part(name), []).append(name)
    gone = {(ENTITY_TYPES[e.split("#")[0]], int(e.split("#")[1])) for e in affected}

    def rewrite(bucket: int) -> list[str]:
        kept = []
        for name in old_parts.get(bucket, []):
            for line in _lines(_part(name)):
                row = json.loads(line)  # each kept line decoded once: for its owner and for the packed copy
                if (row["entity_type"], int(row["entity_id"])) not in gone:
                    kept.append((line, row))
        lines = kept + fresh.get(bucket, [])
        names = []
        for seq, start in enumerate(range(0, len(lines), lines_per_part)):
            chunk = lines[start : start + lines_per_part]
            names.append(_part_name(folder, bucket, seq))
            target.put(names[-1], gzip_lines(line for line, _ in chunk), "application/gzip")
            packing.pack_rows(target, names[-1], [row for _, row in chunk])
        return names

    def _part(name: str) -> bytes:
        body = target.get(name)
        if body is None:
            raise _Rebuild("a previous part is missing")
        return body

    def copy(name: str) -> str:
        new = f"{folder}/{name.rsplit('/', 1)[-1]}"
        try:
            target.copy(name, new)
        except target.client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            raise _Rebuild("a previous part is missing") from error
        packed = old_packed.get(name)
        if packed is not None and packing.ok:  # its packed copy too, else packed from the part (once, after an upgrade)
            try:
                target.copy(packed, packed_name(packing.folder, new))
                with packing.lock:
                    packing.names[new] = packed_name(packing.folder, new)
                return new
            except target.client.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                    raise
        if packing.ok:
            packing.pack(target, new, _lines(_part(name)))
        return new

    old_packed: dict[str, str] = {}
    named = previous.get("packed")
    if isinstance(named, dict) and named.get("version") == PACKED_VERSION:
        copies = named.get("parts") or []
        if len(copies) == len(previous["parts"]):  # else they cannot be told apart: packed again from the parts
            old_packed = dict(zip(previous["parts"], copies, strict=True))

    copies = [name for bucket, names in old_parts.items() if bucket not in rewritten for name in names]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parts = [name for names in pool.map(rewrite, sorted(rewritten)) for name in names]
        parts += list(pool.map(copy, copies))

    # entities.json.gz: the previous lines, less the affected entities, merged in order with their new lines.
    new_lines = [(entity, _entity_line(entity, meta, lookup)) for entity, meta in sorted(entities.items())]
    kept_lines = ((key, line) for key, line in _entity_keys(old_entities) if key not in affected)
    merged = [line for _, line in heapq.merge(kept_lines, new_lines, key=lambda pair: pair[0])]
    target.put(f"{folder}/entities.json.gz", gzip_lines(merged), "application/gzip")
    packing.pack_entities(target, merged)
    return (
        sorted(parts),
        {"touches_rewritten": touches, "changed": len(changed), "affected": len(affected)},
        len(merged),
    )


def _dependents(entities_gz: bytes, changed: set[str]) -> set[str]:
    """Entities whose person comes from a changed lead or contact (their lines carry that person's key)."""
    leads = {int(e.split("#")[1]) for e in changed if e.startswith("LEAD#")}
    contacts = {int(e.split("#")[1]) for e in changed if e.startswith("CONTACT#")}
    if not leads and not contacts:
        return set()
    found = set()
    for key, raw in _entity_keys(entities_gz):
        line = json.loads(raw)
        if line.get("lead_id") in leads or line.get("contact_id") in contacts:
            found.add(key)
    return found


def _entity_keys(entities_gz: bytes) -> Iterator[tuple[str, str]]:
    """``(LEAD#5, line)`` per line of an ``entities.json.gz``, in the file's order."""
    for raw in _lines(entities_gz):
        line = json.loads(raw)
        yield f"{KINDS[line['entity_type']]}#{line['entity_id']}", raw


def _lines(body: bytes) -> Iterator[str]:
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as archive:
        for raw in archive:
            if raw.strip():
                yield raw.decode("utf-8").rstrip("\n")


def _touch_line(entity: str, item: dict[str, Any], entities: dict[str, dict[str, Any]]) -> dict[str, Any]:
    kind, _, id_ = entity.partition("#")
    at = datetime.fromisoformat(item["at"]).astimezone(UTC)
    line = {
        "person_key": _person_key(entity, entities),
        "entity_type": ENTITY_TYPES[kind],
        "entity_id": int(id_),
        "touch_id": item["touch_id"],
        "at": at.isoformat().replace("+00:00", "Z"),
    }
    line.update({name: item.get(name) for name in TOUCH_FIELDS})
    line["detail"] = mask_contacts(line["detail"])  # touches stored before the store masked them
    return line


def _encoded(line: dict[str, Any]) -> tuple[str, bytes, dict[str, Any]]:
    """A touch line's JSON text, its UTF-8 bytes and the line itself. A text no UTF-8 can carry (a lone surrogate a
    touch stored before ``journey.lines.Touch`` made its texts storable) is made storable here rather than stopping
    the night's export; found by the encoding failing, so the other lines cost no search."""
    text = json.dumps(line, ensure_ascii=False)
    try:
        return text, text.encode("utf-8"), line
    except UnicodeEncodeError:
        line = storable_values(line)
        text = json.dumps(line, ensure_ascii=False)
        return text, text.encode("utf-8"), line


def _entity_line(entity: str, meta: dict[str, Any], entities: dict[str, dict[str, Any]]) -> str:
    kind, _, id_ = entity.partition("#")
    lead_id, contact_id = meta.get("lead_id"), meta.get("contact_id")
    return json.dumps(
        {
            "entity_type": ENTITY_TYPES[kind],
            "entity_id": int(id_),
            "person_key": _person_key(entity, entities),
            "deleted": bool(meta.get("deleted")),
            "lead_id": int(lead_id) if lead_id else None,
            "contact_id": int(contact_id) if contact_id else None,
        }
    )


def _person_key(entity: str, entities: dict[str, dict[str, Any]]) -> str | None:
    meta = entities.get(entity) or {}
    if meta.get("person_key"):
        return str(meta["person_key"])
    # A deal whose person we know through its lead or its contact (either may have been seen after the deal).
    for link, kind in (("lead_id", "LEAD"), ("contact_id", "CONTACT")):
        if meta.get(link):
            found = (entities.get(f"{kind}#{int(meta[link])}") or {}).get("person_key")
            if found:
                return str(found)
    return None


def gzip_lines(lines: Iterable[str]) -> bytes:
    """Gzip JSON Lines, byte for byte the same for the same lines (no timestamp in the header)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as archive:
        for line in lines:
            archive.write(line.encode("utf-8") + b"\n")
    return buffer.getvalue()
