"""The Bitrix24 writer's job: a batch of queued writes in, an outcome per message out.

Every message is decoded on its own and dispatched by its ``type`` to the module that writes that kind of message
(``form_submission`` → ``writer.leads``, ``bitrix_event`` → ``writer.crm_events``). A message that is not JSON, not
an object, of an unknown type or that its module cannot plan is a poison message: it fails alone (and ends in the DLQ
for a human); its batch-mates are written.

Failed messages go back to the queue with a growing delay (base × 2^(attempt−1), capped; at least until the end of
an operating-time block, or until the portal has surely finished a write whose outcome is unknown), so an outage of
the portal spends few receives and the redrive limit covers hours. A message whose person another writer is writing
right now comes back within seconds.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from throughline.adapters import aws
from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import LEASE_SECONDS, Locks
from throughline.adapters.raw_store import RawStore
from throughline.adapters.writes_queue import WritesQueue
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import bitrix_client
from throughline.capture.submissions import MESSAGE_TYPE, RAW_COPY, Submission
from throughline.config import ConfigError, Settings, get_settings
from throughline.contacts import mask_email, mask_phone
from throughline.journey.events import MESSAGE_TYPE as EVENT_MESSAGE
from throughline.journey.events import CrmEvent
from throughline.observability import logger
from throughline.privacy.erasure import delete_every_version, erased
from throughline.writer.journey_wiring import crm_event_writer, follow_form_writes, index_raw_copies, person_index
from throughline.writer.leads import LeadRules, LeadWriter, Outcome, PortalState, Unwritable

BUSY_RETRY_SECONDS = 3  # another writer holds this person: look again soon, the lease is short
# ... but a lease may be held for its whole length (a crashed invocation, a slow portal): busy waits double, up to the
# lease's length, so a message's receives (maxReceiveCount) always outlast a lease and "busy" never ends in the DLQ.
# A poison message holds up its FIFO group (the person's later posts) until it leaves: let it use up its receives
# within seconds and wait in the DLQ (alarm) instead of retrying for hours.
POISON_RETRY_SECONDS = 1


@dataclass(frozen=True)
class QueuedWrite:
    message_id: str
    body: str
    receive_count: int = 1
    receipt_handle: str | None = None


class PoisonMessage(Exception):
    """A message no retry can fix (not JSON, unknown type, missing fields); it ends in the DLQ for a human."""

    retryable = False


# One writer per message type: it gets the decoded messages of its type (message id → body) and returns an outcome
# for each message id. Add a type here (and its module) to let the queue carry it.
Processor = Callable[[dict[str, dict[str, Any]], LeadWriter], dict[str, Outcome]]


def write_form_submissions(messages: dict[str, dict[str, Any]], writer: LeadWriter) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    submissions: dict[str, Submission] = {}
    for message_id, body in messages.items():
        try:
            submission = Submission.from_message(body)
            if not isinstance(submission.submission_id, str) or not submission.submission_id:
                raise ValueError("submission_id must be a non-empty string")
            submissions[message_id] = submission
        except Exception as error:
            outcomes[message_id] = _poison(message_id, error)
    journeys = writer.crm_events
    if journeys is not None and submissions and writer.journeys.table:
        drop_erased(writer.journeys, journeys.person_secret, submissions, outcomes)
    keep_raw_copies(messages, submissions, outcomes)
    if journeys is not None and submissions and writer.journeys.table:
        # Before the leads: a person's raw copies must be findable (forget) even when their write fails for good.
        index_raw_copies(
            writer.journeys,
            journeys.person_secret,
            submissions.values(),
            get_settings().raw_retention_days,
            now=datetime.now(UTC),
        )
    by_submission = writer.write(submissions.values())
    for message_id, submission in submissions.items():
        outcomes[message_id] = by_submission.get(
            submission.submission_id,
            Outcome(submission.submission_id, False, "skipped", error=RuntimeError("not reached in this invocation")),
        )
    if journeys is not None and any(outcome.action in ("created", "appended") for outcome in by_submission.values()):
        follow_form_writes(journeys, submissions, by_submission)  # the person index and the field's projection
    return outcomes


def drop_erased(
    store: JourneyStore, secret: str, submissions: dict[str, Submission], outcomes: dict[str, Outcome]
) -> None:
    """Drop the submissions of people ``forget`` erased after they posted (``privacy.erasure``): no lead, no raw copy
    (the one capture or release-held stored is deleted, every version; the one the message carries is never put),
    no index entry. Their outcome is ``erased`` (ok: the message leaves the queue). One BatchGetItem for the batch;
    if it fails, the batch's posts wait (a post must never be written without the check)."""
    if not submissions:
        return
    try:
        found = erased(store, secret, submissions.values())
    except Exception as error:
        logger.error("erasure marks not read; the submissions wait", exc_info=True)
        for message_id, submission in list(submissions.items()):
            del submissions[message_id]
            outcomes[message_id] = Outcome(submission.submission_id, False, "failed", error=error)
        return
    for message_id, submission in list(submissions.items()):
        if submission.submission_id not in found:
            continue
        try:
            if submission.raw_key:
                settings = get_settings()
                settings.require("data_bucket")
                delete_every_version(aws.client("s3"), settings.data_bucket or "", submission.raw_key)
        except Exception as error:
            logger.error("raw copy of an erased person not deleted; the submission waits", exc_info=True)
            del submissions[message_id]
            outcomes[message_id] = Outcome(submission.submission_id, False, "failed", error=error)
            continue
        del submissions[message_id]
        outcomes[message_id] = Outcome(submission.submission_id, True, "erased")
        logger.info(
            "submission dropped: its person was erased after it was received",
            extra={
                "message_id": message_id,
                "submission_id": submission.submission_id,
                "phone": mask_phone(submission.phone),
                "email": mask_email(submission.email),
                "received_at": submission.received_at.isoformat(),
                "erased_at": found[submission.submission_id].isoformat(),
            },
        )


def keep_raw_copies(
    messages: dict[str, dict[str, Any]], submissions: dict[str, Submission], outcomes: dict[str, Outcome]
) -> None:
    """Put the raw copies that travelled in the messages (``capture.receive``) under their ``raw_key``, before
    anything else is written for them. A copy that cannot be put fails its message, and its lead waits with it: the
    message comes back (or ends in the DLQ, copy included), so the copy is never lost. Putting it again on a later
    receive writes the same bytes."""
    store: RawStore | None = None
    for message_id, submission in list(submissions.items()):
        copy = messages[message_id].get(RAW_COPY)
        if copy is None:  # put by capture itself (too large to travel), or a message from release-held
            continue
        if not isinstance(copy, str) or not submission.raw_key:
            del submissions[message_id]
            outcomes[message_id] = _poison(message_id, ValueError("a raw copy must be text with its raw_key"))
            continue
        try:
            if store is None:
                settings = get_settings()
                settings.require("data_bucket")
                store = RawStore(settings.data_bucket or "")
            store.put(submission.raw_key, copy.encode())
        except Exception as error:
            logger.error("raw copy not stored; the submission waits", extra={"message_id": message_id}, exc_info=True)
            del submissions[message_id]
            outcomes[message_id] = Outcome(submission.submission_id, False, "failed", error=error)


def write_crm_events(messages: dict[str, dict[str, Any]], writer: LeadWriter) -> dict[str, Outcome]:
    """Bitrix24 outbound-webhook events (``journey.events``) become journey touches (``writer.crm_events``)."""
    outcomes: dict[str, Outcome] = {}
    events: dict[str, CrmEvent] = {}
    for message_id, body in messages.items():
        try:
            events[message_id] = CrmEvent.from_message(body)
        except Exception as error:
            outcomes[message_id] = _poison(message_id, error)
    journeys = writer.crm_events
    if journeys is None:  # no PERSON_KEY_SECRET: the events wait in the queue for the configuration
        error = ConfigError("missing configuration: PERSON_KEY_SECRET (journey events need it)")
        logger.error("journey events need configuration", extra={"error": str(error)})
        return outcomes | {key: Outcome(key, False, "failed", error=error) for key in events}
    return outcomes | (journeys.write(events) if events else {})


PROCESSORS: dict[str, Processor] = {MESSAGE_TYPE: write_form_submissions, EVENT_MESSAGE: write_crm_events}


def write_queued(
    items: list[QueuedWrite], writer: LeadWriter, queue: WritesQueue | None, settings: Settings
) -> dict[str, Outcome]:
    """Write every queued message; schedule the failed ones' retries; return outcomes by message id."""
    outcomes: dict[str, Outcome] = {}
    by_type: dict[str, dict[str, dict[str, Any]]] = {}
    for item in items:
        try:
            body = json.loads(item.body)
            if not isinstance(body, dict):
                raise ValueError(f"a message must be a JSON object, not {type(body).__name__}")
            kind = body.get("type")
            if not isinstance(kind, str) or kind not in PROCESSORS:
                raise ValueError(f"unknown message type {str(kind)[:40]!r}")
            by_type.setdefault(kind, {})[item.message_id] = body
        except Exception as error:
            outcomes[item.message_id] = _poison(item.message_id, error)
    for kind, messages in by_type.items():
        try:
            results = PROCESSORS[kind](messages, writer)
        except Exception as error:  # a processor must return outcomes; if it breaks, its messages retry
            logger.error("writer failed", extra={"type": kind}, exc_info=True)
            results = {message_id: Outcome(message_id, False, "failed", error=error) for message_id in messages}
        for message_id in messages:
            outcomes[message_id] = results.get(
                message_id, Outcome(message_id, False, "skipped", error=RuntimeError("no outcome"))
            )
    if writer.bitrix.access_denied:
        try:  # for the report's data quality; the metric and the log say it too
            writer.journeys.count_access_denied(writer.bitrix.access_denied)
        except Exception:
            logger.warning("could not count access-denied answers", exc_info=True)
    if queue is not None:
        for item in items:
            outcome = outcomes[item.message_id]
            if not outcome.ok and item.receipt_handle:
                _schedule_retry(queue, item, outcome, settings)
    return outcomes


def retry_delay(receive_count: int, base: int, cap: int, retry_at: float | None = None) -> int:
    delay = min(cap, base * 2 ** max(0, receive_count - 1))
    if retry_at:
        delay = max(delay, int(retry_at - time.time()) + 1)
    return int(delay)


def _poison(message_id: str, error: BaseException) -> Outcome:
    logger.error("unreadable message", extra={"message_id": message_id, "error": repr(error)[:500]})
    return Outcome(message_id, False, "failed", error=PoisonMessage(repr(error)[:500]))


def _schedule_retry(queue: WritesQueue, item: QueuedWrite, outcome: Outcome, settings: Settings) -> None:
    if outcome.action == "busy":
        delay = retry_delay(item.receive_count, BUSY_RETRY_SECONDS, math.ceil(LEASE_SECONDS))
    elif isinstance(outcome.error, PoisonMessage | Unwritable):
        delay = POISON_RETRY_SECONDS
    else:
        delay = retry_delay(
            item.receive_count, settings.writer_retry_base_seconds, settings.writer_retry_max_seconds, outcome.retry_at
        )
    try:
        queue.retry_after(item.receipt_handle or "", delay)
    except Exception:  # the message still returns after the queue's visibility timeout
        logger.warning("could not set the retry delay", extra={"message_id": item.message_id}, exc_info=True)
    logger.warning(
        "write failed; will retry",
        extra={
            "message_id": item.message_id,
            "attempt": item.receive_count,
            "retry_in_seconds": delay,
            "error": str(outcome.error)[:500],
        },
    )


# -- wiring -----------------------------------------------------------------------------------------------------------

_lock = threading.Lock()


@cache
def _portal_state(webhook_url: str) -> PortalState:
    # What this process learned about the portal (its CRM mode) outlives the invocation.
    return PortalState()


def lead_writer(settings: Settings, deadline: Deadline | None = None, **client_options: Any) -> LeadWriter:
    settings.require("journey_table")
    bitrix = bitrix_client(settings, deadline, **client_options)
    url = settings.bitrix24_webhook_url or ""
    with _lock:
        portal = _portal_state(url)
    locks = Locks.for_settings(settings)
    writer = LeadWriter(
        bitrix,
        JourneyStore(settings.journey_table or ""),
        LeadRules.from_settings(settings),
        locks=locks,
        portal=portal,
        settle_seconds=settings.writer_settle_seconds,
    )
    if settings.person_key_secret:
        writer.person_index = person_index(writer.journeys, settings.person_key_secret)
        writer.crm_events = crm_event_writer(settings, writer.bitrix, writer.journeys, locks=locks)
    return writer


def reset_portal_states() -> None:
    """Forget what the process learned about portals (tests and the local stack point at new ones)."""
    with _lock:
        _portal_state.cache_clear()
