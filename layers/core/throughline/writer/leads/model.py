"""What the lead writer's parts share: the outcome of a submission, its errors, the portal's CRM mode, and the
records a round passes along (a prepared submission, then its plan)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from throughline.bitrix24 import NotEnoughTime, OperationTimeLimit
from throughline.capture.submissions import Submission
from throughline.journey.lines import Touch

ORIGINATOR_ID = "throughline"
LEAD_ENTITY = "LEAD#{}"
DEAL_ENTITY = "DEAL#{}"
CLASSIC, SIMPLE = 1, 2  # crm.settings.mode.get: 1 classic (with leads), 2 simple (no leads)


def entity_of(mode: int) -> tuple[str, str]:
    """What a mode writes: the REST entity (``lead`` or ``deal``) and the journey store's key prefix."""
    return ("deal", DEAL_ENTITY) if mode == SIMPLE else ("lead", LEAD_ENTITY)


@dataclass
class Outcome:
    submission_id: str
    ok: bool
    action: str = ""  # created | appended | already_done | failed | skipped | busy
    lead_id: int | None = None  # the lead (classic mode) or the deal (simple mode) written
    error: BaseException | None = None
    in_doubt: bool = False  # the write may have run although we saw an error: never repeat it in this invocation
    entity: str | None = None  # the journey store's key of the record written: LEAD#<id>, or DEAL#<id> in simple mode

    @property
    def retry_at(self) -> float | None:
        return getattr(self.error, "retry_at", None)


class Unwritable(Exception):
    """A submission the writer cannot plan or format (a poison message): it fails alone, never its batch-mates."""

    retryable = False
    maybe_executed = False


class InDoubt(Exception):
    """A write whose outcome is unknown (a timeout, a lost answer, a cut-off request). The message goes back to the
    queue until the portal has surely finished the request, so the ``ORIGIN_ID`` look-up then sees what it did."""

    retryable = True
    maybe_executed = True

    def __init__(self, cause: BaseException, retry_at: float):
        super().__init__(f"write may have run, checked again later: {cause}")
        self.cause = cause
        self.retry_at = retry_at


def write_failed(submission_id: str, error: BaseException, entity_id: int | None, settle_seconds: float) -> Outcome:
    """The outcome of one write command the portal answered with an error (or not at all): in doubt when it may have
    run, unless the portal surely refused it before running (the operating-time block, not enough time)."""
    in_doubt = bool(getattr(error, "maybe_executed", False)) and not isinstance(
        error, NotEnoughTime | OperationTimeLimit
    )
    failure = InDoubt(error, time.time() + settle_seconds) if in_doubt else error
    return Outcome(submission_id, False, "failed", entity_id, failure, in_doubt)


@dataclass
class PortalState:
    """What one writer process learns about a portal beyond method times (those the client keeps): its CRM mode."""

    mode: int | None = None
    mode_checked_at: float = 0.0


@dataclass
class Prepared:
    """Everything derived from the submission alone, computed once and up front: a submission that cannot be
    planned or formatted fails here, alone, before it shares a round (or a REST request) with anyone."""

    submission: Submission
    person: str
    contacts: frozenset[str]
    lock_names: tuple[str, ...]
    touches: list[Touch]
    lines: dict[str, str]
    fields: dict[str, Any]  # the new lead's (or deal's) fields, without CONTACT_ID
    contact_fields: dict[str, Any]  # simple mode: a new person's contact
    repeat_touch: Touch
    repeat_line: str
    comment: str

    @property
    def submission_id(self) -> str:
        return self.submission.submission_id


@dataclass
class Plan:
    """What one round decided for one submission."""

    item: Prepared
    entity_id: int | None = None  # the lead/deal: already created, or the open one to append to
    contact_id: int | None = None  # an existing contact (a returning customer) to link a new lead/deal to
    contact_ids: set[int] = field(default_factory=set)
    done: bool = False  # created by an earlier attempt
    candidates: set[int] = field(default_factory=set)
    record: dict[str, Any] | None = None  # the open lead/deal's current fields, for a repeat request
    update: dict[str, Any] = field(default_factory=dict)
    contact_update: dict[str, Any] = field(default_factory=dict)  # simple mode: new phone/e-mail for the contact
    before: int = 0  # equal lines in the field before our write

    @property
    def repeat(self) -> bool:
        return self.record is not None


def to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
