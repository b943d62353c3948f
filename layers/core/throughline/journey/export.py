"""The journey store exported for attribution and Athena: gzip JSON Lines under ``journeys/snapshot=<date>/``.

- ``part-<n>.json.gz``: one touch per line, ``{"person_key", "entity_type", "entity_id", "touch_id", "at" (ISO 8601
  UTC), "kind", "channel", "source", "medium", "campaign", "content", "term", "detail"}`` (phones and e-mails in
  ``detail`` masked);
- ``entities.json.gz``: one line per entity, ``{"entity_type", "entity_id", "person_key", "deleted", "lead_id"}``
  (a deal's ``lead_id`` links it to the lead it came from, whose touches are its journey before the deal);
- ``journeys/latest.json`` = ``{"snapshot": "<date>", "parts": [...], "access_denied": <count>}``, written last, so a
  reader never sees a half-written snapshot (``access_denied``: «Access denied» answers the writers met so far).

``kind`` says what a touch was: ``first_visit``, ``form``, ``repeat_request`` (the site); ``crm_lead`` / ``crm_deal``
(a record typed in the CRM: its own first touch, channel from its UTM tags or SOURCE_ID); ``incoming_call``,
``missed_call``, ``incoming_email``, ``chat`` (the person reached out: channel ``offline``, ``email``, ``messenger``);
``outgoing_call``, ``outgoing_email``, ``meeting``, ``task``, ``activity``, ``deal_created``, ``stage``, ``won``,
``lost`` (sales-side: channel ``crm``, which is not a marketing channel and should not take attribution credit).

The table is read with a parallel scan (one thread per segment) and each part is written as soon as it is full.
People who never converted are included: every lead's touches are, whatever became of it.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime
from typing import Any

from throughline.adapters.journey_store import ACCESS_DENIED, META, PERSON_PREFIX, JourneyStore
from throughline.adapters.raw_store import RawStore
from throughline.privacy.masking import mask_contacts

PREFIX = "journeys"
ENTITY_TYPES = {"LEAD": "lead", "DEAL": "deal", "CONTACT": "contact"}
TOUCH_FIELDS = ("kind", "channel", "source", "medium", "campaign", "content", "term", "detail")


def export_journeys(
    store: JourneyStore,
    bucket: str | RawStore,
    day: date,
    *,
    segments: int = 4,
    lines_per_part: int = 100_000,
) -> dict[str, Any]:
    """Write one snapshot; returns ``latest.json``'s content (with line counts)."""
    target = bucket if isinstance(bucket, RawStore) else RawStore(bucket)
    folder = f"{PREFIX}/snapshot={day.isoformat()}"
    denied: list[int] = []  # the «Access denied» count, met in the same scan (the report's role may only Scan)
    entities = _entities(store, segments, denied)
    with ThreadPoolExecutor(max_workers=segments) as pool:
        results = list(
            pool.map(
                lambda segment: _export_segment(store, target, folder, entities, segment, segments, lines_per_part),
                range(segments),
            )
        )
    parts = [name for names, _ in results for name in names]
    touches = sum(count for _, count in results)
    lines = [_entity_line(entity, meta, entities) for entity, meta in sorted(entities.items())]
    target.put(f"{folder}/entities.json.gz", _gzip(lines), "application/gzip")
    # «Access denied» answers so far: records the webhook's user may not see, missing from every journey.
    latest = {"snapshot": day.isoformat(), "parts": parts, "access_denied": sum(denied)}
    target.put(f"{PREFIX}/latest.json", json.dumps(latest).encode(), "application/json")
    return {**latest, "touches": touches, "entities": len(lines)}


def _entities(store: JourneyStore, segments: int, denied: list[int]) -> dict[str, dict[str, Any]]:
    """Every CRM entity with its ``#meta`` (empty for an entity known only by its touches); the «Access denied»
    count, when the scan meets it, goes into ``denied``."""

    def read(segment: int) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for item in store.scan(segment, segments):
            entity = item["entity"]
            if entity == ACCESS_DENIED and item["touch"] == META:
                denied.append(int(item.get("answers") or 0))
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


def _export_segment(
    store: JourneyStore,
    target: RawStore,
    folder: str,
    entities: dict[str, dict[str, Any]],
    segment: int,
    segments: int,
    lines_per_part: int,
) -> tuple[list[str], int]:
    names: list[str] = []
    lines: list[str] = []
    count = 0

    def flush() -> None:
        name = f"{folder}/part-{segment * 10000 + len(names):05d}.json.gz"  # unique across parallel segments
        target.put(name, _gzip(lines), "application/gzip")
        names.append(name)
        lines.clear()

    for item in store.scan(segment, segments):
        entity, touch = item["entity"], item["touch"]
        if touch.startswith("#") or entity.startswith(PERSON_PREFIX) or entity.split("#")[0] not in ENTITY_TYPES:
            continue
        lines.append(json.dumps(_touch_line(entity, item, entities), ensure_ascii=False))
        count += 1
        if len(lines) >= lines_per_part:
            flush()
    if lines:
        flush()
    return names, count


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


def _entity_line(entity: str, meta: dict[str, Any], entities: dict[str, dict[str, Any]]) -> str:
    kind, _, id_ = entity.partition("#")
    lead_id = meta.get("lead_id")
    return json.dumps(
        {
            "entity_type": ENTITY_TYPES[kind],
            "entity_id": int(id_),
            "person_key": _person_key(entity, entities),
            "deleted": bool(meta.get("deleted")),
            "lead_id": int(lead_id) if lead_id else None,
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


def _gzip(lines: Iterable[str]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as archive:
        for line in lines:
            archive.write(line.encode("utf-8") + b"\n")
    return buffer.getvalue()
