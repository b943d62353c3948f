"""Erase one person from what this stack stores (152-FZ Art. 21, GDPR Art. 17): found by the HMAC keys of their phone
and e-mail (``throughline.person_keys``), never by scanning for the contact itself.

Removed: the raw copies of their form posts (every version: the bucket is versioned), their posts held by the flood
limits or the captcha (``raw/held/``: never written to the journey store, so found by reading each held copy's contact's
person key — they expire with the raw copies, so there are at most that many days of them), their rows in every journey
snapshot and its packed copy (the parts are rewritten without them, and the older versions of those parts deleted),
their records' touches and bookkeeping in the journey store, and their person-index and raw-copy index entries, in that
order — the indexes are what finds the rest, so a run that fails half-way can simply be run again. Only the contacts
given are searched by: the other contacts the records carried lose their index entries for those records, nothing more
(a shared office phone must not widen one person's erasure to everyone who ever gave it).

Not touched: Bitrix24. The portal owner erases the person there (the leads, deals and contacts); until then the
portal's next event about those records brings their journey back (CRM events are not checked against the marks
below: the portal owner erases there first).

First of all, an erasure mark per person key searched by (``FORGOTTEN#<hmac>``: the time, nothing else;
``privacy.erasure``): a post of theirs still in the writes queue, in its DLQ (redriven later) or held and released
afterwards, received before the erasure, is dropped by the writer (and by release-held) with its raw copy, instead of
writing the person again. A post received after the erasure is a new consent and is written.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from throughline.adapters.journey_store import PERSON_PREFIX, RAW_PREFIX, JourneyStore
from throughline.contacts import mask_email, mask_phone, normalize_email, normalize_phone
from throughline.journey.export import ENTITY_TYPES, PREFIX, gzip_lines
from throughline.journey.packed import PACKED_PREFIX, NotPackable, drop_rows
from throughline.person_keys import person_key
from throughline.privacy.erasure import delete_every_version

SNAPSHOTS = f"{PREFIX}/snapshot="
PACKED_SNAPSHOTS = f"{PACKED_PREFIX}/snapshot="  # the touch parts' packed copies (journey/packed.py)
HELD = "raw/held/"  # throughline.capture.receive.HELD_PREFIX (not imported: it would load the capture path)
NOT_BITRIX24 = (
    "Bitrix24 is not touched: the portal owner erases this person's leads, deals and contacts in the portal "
    "(until then the portal's next event about them records their journey again)."
)


@dataclass
class Forgotten:
    """What one ``forget`` removed."""

    contacts: list[str] = field(default_factory=list)  # masked
    entities: list[str] = field(default_factory=list)  # LEAD#5, CONTACT#7, …
    touches: int = 0  # touch items deleted from the journey store (bookkeeping items not counted)
    index_entries: int = 0  # person-index and raw-copy index items deleted
    raw_copies: list[str] = field(default_factory=list)  # S3 keys whose every version was deleted
    snapshot_rows: int = 0  # lines dropped from journey snapshots
    snapshot_objects: list[str] = field(default_factory=list)  # snapshot objects rewritten
    other_contacts: int = 0  # further phones or e-mails the erased records carried (not searched by)
    erased_at: str = ""  # the erasure marks' time (ISO, UTC): posts received up to it are dropped by the writer

    def as_dict(self) -> dict[str, Any]:
        return {
            "contacts": self.contacts,
            "entities": self.entities,
            "touches": self.touches,
            "index_entries": self.index_entries,
            "raw_copies": self.raw_copies,
            "snapshot_rows": self.snapshot_rows,
            "snapshot_objects": self.snapshot_objects,
            "other_contacts": self.other_contacts,
            "erased_at": self.erased_at,
            "bitrix24": NOT_BITRIX24,
        }

    def lines(self) -> list[str]:
        return [
            f"person: {', '.join(self.contacts)}",
            f"erasure marks: {len(self.contacts)} (posts received until {self.erased_at} and still queued, "
            "dead-lettered or held are dropped by the writer and release-held)",
            f"journey store: {len(self.entities)} records ({', '.join(self.entities) or 'none'}), "
            f"{self.touches} touches deleted",
            f"indexes: {self.index_entries} entries deleted",
            f"raw copies: {len(self.raw_copies)} deleted with every version",
            *(f"  {key}" for key in self.raw_copies),
            f"journey snapshots: {self.snapshot_rows} rows removed from {len(self.snapshot_objects)} objects",
            *(f"  {key}" for key in self.snapshot_objects),
            *(
                [
                    f"these records also carried {self.other_contacts} other phone(s) or e-mail(s): their index entries"
                    " for these records are gone; give them too (--phone/--email) to erase posts made with them alone"
                ]
                if self.other_contacts
                else []
            ),
            NOT_BITRIX24,
        ]


def contact_keys(phones: Iterable[str], emails: Iterable[str], secret: str, region: str = "RU") -> dict[str, str]:
    """Person key → masked contact, for the phones and e-mails given (normalized as capture normalizes them)."""
    keys: dict[str, str] = {}
    for phone in phones:
        normalized = normalize_phone(phone, region)
        keys[person_key(normalized, secret)] = mask_phone(normalized) or ""
    for email in emails:
        normalized = normalize_email(email)
        keys[person_key(normalized, secret)] = mask_email(normalized) or ""
    return keys


def forget_person(
    store: JourneyStore,
    s3: Any,
    bucket: str,
    secret: str,
    *,
    phones: Iterable[str] = (),
    emails: Iterable[str] = (),
    region: str = "RU",
    now: datetime | None = None,
) -> Forgotten:
    emails = list(emails)  # read twice: the keys, and whether the marks name e-mails
    keys = contact_keys(phones, emails, secret, region)
    if not keys:
        raise ValueError("give a phone or an e-mail")
    if now is None:
        # AWS's clock (DynamoDB's Date header), the one capture dates posts by: an operator's laptop running behind
        # would date the erasure before posts received before it (kept), one running ahead after the person's new
        # posts (dropped: real leads lost). The header gives whole seconds, rounded down: this machine's clock (read
        # after it) where it falls in that second (the same clock, finer), else the next second, not before now.
        # This machine's clock alone only when DynamoDB gives no Date.
        server = store.server_now()
        local = datetime.now(UTC)
        if server is None or server <= local < server + timedelta(seconds=1):
            now = local
        else:
            now = server + timedelta(seconds=1)
    moment = now.astimezone(UTC)
    result = Forgotten(contacts=list(keys.values()), erased_at=moment.isoformat(timespec="microseconds"))
    person = set(keys)
    # First: from now on the writer drops their posts received until now (still queued, dead-lettered, held), so none
    # written while this run deletes can bring them back once it has passed.
    store.mark_forgotten(sorted(person), moment, emails_named=bool(emails))
    entities = store.index_lookup(person)
    entities |= {entity for values in store.links(entities).values() for entity in values}  # a lead's deals
    result.entities = sorted(entities)
    # The other contacts these records were filed under (#meta's index_keys): their entries pointing at the erased
    # records go too. Nothing is searched by them: a shared office phone must not widen the erasure to other people.
    others = {str(key) for meta in store.metas(entities).values() for key in meta.get("index_keys") or ()} - person
    result.other_contacts = len(others)

    for raw_key in sorted(store.raw_keys(person)):
        if delete_every_version(s3, bucket, raw_key):
            result.raw_copies.append(raw_key)
    _forget_in_snapshots(s3, bucket, person, entities, result)
    for entity in result.entities:
        result.touches += sum(1 for key in store.delete_partition(entity) if not key.startswith("#"))
    if others:
        # Their entries that point at what was erased: the records, and the raw copies just deleted.
        store.delete_items(
            [(PERSON_PREFIX + key, entity) for key in sorted(others) for entity in result.entities]
            + [(RAW_PREFIX + key, raw_key) for key in sorted(others) for raw_key in result.raw_copies]
        )
    for key in sorted(person):
        result.index_entries += len(store.delete_partition(PERSON_PREFIX + key))
        result.index_entries += len(store.delete_partition(RAW_PREFIX + key))
    # Last: held posts are found by reading each one (a flood may have left many), and need no index to be found
    # again, so a run that runs out of time here has erased everything else and can simply be run again.
    for held_key in _held_copies(s3, bucket, person, secret):
        if delete_every_version(s3, bucket, held_key):
            result.raw_copies.append(held_key)
    return result


def _held_copies(s3: Any, bucket: str, keys: set[str], secret: str) -> list[str]:
    """Held posts (``raw/held/``) whose phone or e-mail is one of the person's keys."""
    found = []
    for key in _keys(s3, bucket, HELD):
        if not key.endswith(".json"):
            continue
        try:
            record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            submission = record["message"]["submission"]
        except (s3.exceptions.NoSuchKey, ValueError, KeyError, TypeError):
            continue  # released or expired since listed, or not a held post
        contacts = [submission.get("phone"), submission.get("email")]
        if any(contact and person_key(str(contact), secret) in keys for contact in contacts):
            found.append(key)
    return found


def _forget_in_snapshots(s3: Any, bucket: str, keys: set[str], entities: set[str], result: Forgotten) -> None:
    """Rewrite every snapshot object that holds the person's rows without them (touch parts and entities.json.gz
    share the columns used here: person_key, entity_type, entity_id). The parts' packed copies go first: a run that
    stops half-way leaves a copy without the person beside a part still with them, never the other way round. A copy
    that cannot be read is deleted."""
    ids = {(ENTITY_TYPES.get(entity.split("#")[0]), entity.partition("#")[2]) for entity in entities}
    for key in _keys(s3, bucket, PACKED_SNAPSHOTS):
        if not key.endswith(".bin"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        try:
            kept, dropped = drop_rows(body, lambda person, kind, entity: person in keys or (kind, str(entity)) in ids)
        except NotPackable:
            # A copy this code cannot read (damaged, or of a later format version) may hold the person: it is only
            # the report's shortcut to its part, so it goes, every version (the report then reads the JSON parts).
            delete_every_version(s3, bucket, key)
            result.snapshot_objects.append(key)
            continue
        if not dropped:
            continue
        s3.put_object(Bucket=bucket, Key=key, Body=kept, ContentType="application/octet-stream")
        delete_every_version(s3, bucket, key, keep_current=True)
        result.snapshot_rows += dropped
        result.snapshot_objects.append(key)
    for key in _keys(s3, bucket, SNAPSHOTS):
        if not key.endswith(".json.gz"):
            continue
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        lines = gzip.decompress(body).decode("utf-8").splitlines()
        kept = [line for line in lines if not _theirs(line, keys, ids)]
        if len(kept) == len(lines):
            continue
        s3.put_object(Bucket=bucket, Key=key, Body=gzip_lines(kept), ContentType="application/gzip")
        delete_every_version(s3, bucket, key, keep_current=True)
        result.snapshot_rows += len(lines) - len(kept)
        result.snapshot_objects.append(key)


def _theirs(line: str, keys: set[str], ids: set[tuple[str | None, str]]) -> bool:
    if not line.strip():
        return False
    row = json.loads(line)
    return row.get("person_key") in keys or (row.get("entity_type"), str(row.get("entity_id"))) in ids


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys
