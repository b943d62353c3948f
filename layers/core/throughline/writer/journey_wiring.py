"""Wiring of the journey into the writer: the CRM-event writer from settings, and what a form write tells the journey
(the person index learns our new leads; a repeat request's lead is re-rendered from the store)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import Locks
from throughline.adapters.raw_store import RawStore
from throughline.bitrix24 import Bitrix24Client
from throughline.capture.submissions import Submission
from throughline.config import Settings
from throughline.journey.projection import Projector
from throughline.observability import logger
from throughline.person_keys import first_contact, person_key
from throughline.writer.crm_events import CrmEventWriter, deletion_marker
from throughline.writer.leads import Outcome


def crm_event_writer(
    settings: Settings, bitrix: Bitrix24Client, store: JourneyStore, *, locks: Locks | None = None
) -> CrmEventWriter:
    settings.require("person_key_secret")
    bucket = RawStore(settings.data_bucket) if settings.data_bucket else None

    def mark_deleted(entity: str, entity_id: int, details: dict[str, Any]) -> None:
        if bucket is not None:
            key, body = deletion_marker(entity, entity_id, details)
            bucket.put(key, body)

    projector = Projector(bitrix, store, settings.bitrix24_journey_field, settings.zone, settings.journey_max_chars)
    return CrmEventWriter(
        bitrix,
        store,
        projector,
        person_secret=settings.person_key_secret or "",
        mark_deleted=mark_deleted,
        locks=locks,
        source_map=settings.bitrix24_source_map,
    )


def follow_form_writes(
    journeys: CrmEventWriter, submissions: Mapping[str, Submission], outcomes: Mapping[str, Outcome]
) -> None:
    """New leads enter the person index; a repeat request's lead is re-rendered from the store, so a CRM event
    handled at the same moment (another FIFO group) keeps its line. Failures here are logged, never raised: the
    leads are written, and the lead's own update event repairs its field."""
    try:
        _follow_form_writes(journeys, submissions, outcomes)
    except Exception:  # the store or the portal failed: the leads are written; their update events repair the rest
        logger.warning("journey bookkeeping of form writes failed", exc_info=True)


def _follow_form_writes(
    journeys: CrmEventWriter, submissions: Mapping[str, Submission], outcomes: Mapping[str, Outcome]
) -> None:
    by_id = {submission.submission_id: submission for submission in submissions.values()}
    repeats = []
    for submission_id, outcome in outcomes.items():
        submission = by_id.get(submission_id)
        if submission is None or not outcome.ok or not outcome.entity:
            continue
        entity = outcome.entity  # LEAD#<id>, or DEAL#<id> in simple mode (the numbers of the two may meet)
        if outcome.action == "created" and not entity.startswith("LEAD#"):
            # A simple-mode deal: only the index learns it; its stage and links come with its ONCRMDEALADD event.
            contacts = [value for value in (submission.phone, submission.email) if value]
            journeys.store.index_put([person_key(value, journeys.person_secret) for value in contacts], entity)
        elif outcome.action == "created":
            contacts = [value for value in (submission.phone, submission.email) if value]
            keys = [person_key(value, journeys.person_secret) for value in contacts]
            journeys.store.index_put(keys, entity)
            first = first_contact(contacts[:1] if submission.phone else [], contacts[-1:] if submission.email else [])
            # What the lead's ONCRMLEADADD would tell: the event is then answered without reading the lead.
            journeys.store.put_meta(
                entity,
                {
                    "kind": "lead",
                    "id": outcome.lead_id,
                    "ours": True,
                    "deleted": False,
                    "stage": "NEW",
                    "semantic": "P",
                    "index_keys": keys,
                    "person_key": person_key(first, journeys.person_secret) if first else None,
                },
            )
        elif outcome.action == "appended":
            journeys.store.bump_version(entity)
            repeats.append(entity)
    if repeats:
        journeys.projector.project(repeats)


def index_raw_copies(
    store: JourneyStore, secret: str, submissions: Iterable[Submission], retention_days: int, *, now: datetime
) -> None:
    """File each submission's raw copy (``raw/forms/…``) under its phone's and e-mail's person keys, so that
    ``python -m throughline forget`` finds a person's copies. Done here, off the HTTP path (``queued.keep_raw_copies``
    puts the copies that travelled in the messages, ``now``). The entries expire a day after the bucket's lifecycle
    rule deletes the copies (``RAW_RETENTION_DAYS``), counted from the later of the arrival and ``now``: the
    lifecycle counts from the copy's last put, which the writer makes when it takes the message (days after the post
    when the portal was down or the message came back from the DLQ)."""
    entries = []
    for submission in submissions:
        contacts = [value for value in (submission.phone, submission.email) if value]
        if not submission.raw_key or not contacts:
            continue
        stored_at = max(submission.received_at, now)
        expires_at = int((stored_at + timedelta(days=retention_days + 1)).timestamp())
        entries += [(person_key(value, secret), submission.raw_key, expires_at) for value in contacts]
    if entries:
        store.raw_keys_put(entries)


def person_index(store: JourneyStore, secret: str) -> Callable[[Submission], tuple[set[int], set[int]]]:
    """The lead writer's lookup in our person index: (lead ids, contact ids) filed under the submission's phone or
    e-mail, however a manager typed them. An entry may be stale (a lead since deleted, merged or closed): the writer
    reads every candidate from the portal and keeps only open leads, so the portal wins a disagreement, and the
    delete and update events (and the sweep) drop stale entries."""

    def lookup(submission: Submission) -> tuple[set[int], set[int]]:
        contacts = [value for value in (submission.phone, submission.email) if value]
        found = store.index_lookup(person_key(value, secret) for value in contacts)
        leads = {int(entity.split("#")[1]) for entity in found if entity.startswith("LEAD#")}
        people = {int(entity.split("#")[1]) for entity in found if entity.startswith("CONTACT#")}
        return leads, people

    return lookup
