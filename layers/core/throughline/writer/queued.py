"""The Bitrix24 writer's job: a batch of queued writes in, an outcome per message out.

Failed messages go back to the queue with a growing delay (base × 2^(attempt−1), capped; at least until the end of
an operating-time block), so an outage of the portal spends few receives and the redrive limit covers hours.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.writes_queue import WritesQueue
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import bitrix_client
from throughline.capture.submissions import Submission
from throughline.config import ConfigError, Settings
from throughline.journey.events import MESSAGE_TYPE as EVENT_MESSAGE
from throughline.journey.events import CrmEvent
from throughline.observability import logger
from throughline.writer.journey_wiring import crm_event_writer, follow_form_writes, person_index
from throughline.writer.leads import LeadRules, LeadWriter, Outcome


@dataclass(frozen=True)
class QueuedWrite:
    message_id: str
    body: str
    receive_count: int = 1
    receipt_handle: str | None = None


class PoisonMessage(Exception):
    """A message no retry can fix (not JSON, unknown type, missing fields); it ends in the DLQ for a human."""


def write_queued(
    items: list[QueuedWrite], writer: LeadWriter, queue: WritesQueue | None, settings: Settings
) -> dict[str, Outcome]:
    """Write every queued submission; schedule the failed ones' retries; return outcomes by message id."""
    outcomes: dict[str, Outcome] = {}
    submissions: dict[str, Submission] = {}
    events: dict[str, CrmEvent] = {}
    for item in items:
        try:
            message = json.loads(item.body)
            if message.get("type") == EVENT_MESSAGE:
                events[item.message_id] = CrmEvent.from_message(message)
            else:
                submissions[item.message_id] = Submission.from_message(message)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            logger.error("unreadable message", extra={"message_id": item.message_id, "error": str(error)})
            outcomes[item.message_id] = Outcome(item.message_id, False, "failed", error=PoisonMessage(str(error)))
    by_submission = writer.write(submissions.values()) if submissions else {}
    for message_id, submission in submissions.items():
        outcomes[message_id] = by_submission.get(
            submission.submission_id,
            Outcome(submission.submission_id, False, "skipped", error=RuntimeError("not reached in this invocation")),
        )
    if events or any(outcome.action in ("created", "appended") for outcome in by_submission.values()):
        try:
            journeys = crm_event_writer(settings, writer.bitrix, writer.journeys)
        except ConfigError as error:  # no PERSON_KEY_SECRET: the leads are written, the events wait for it
            logger.error("journey events need configuration", extra={"error": str(error)})
            outcomes.update({key: Outcome(key, False, "failed", error=error) for key in events})
        else:
            follow_form_writes(journeys, submissions, by_submission)
            outcomes.update(journeys.write(events) if events else {})
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


def _schedule_retry(queue: WritesQueue, item: QueuedWrite, outcome: Outcome, settings: Settings) -> None:
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
            "error": str(outcome.error),
        },
    )


# -- wiring -----------------------------------------------------------------------------------------------------------


def lead_writer(settings: Settings, deadline: Deadline | None = None, **client_options: Any) -> LeadWriter:
    settings.require("journey_table")
    writer = LeadWriter(
        bitrix_client(settings, deadline, **client_options),
        JourneyStore(settings.journey_table or ""),
        LeadRules.from_settings(settings),
    )
    if settings.person_key_secret:
        writer.person_index = person_index(writer.journeys, settings.person_key_secret)
    return writer
