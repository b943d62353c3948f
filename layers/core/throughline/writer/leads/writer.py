"""The lead writer: prepares each submission alone, then runs rounds (look up, read open records, write, comment)
until every submission has an outcome, retrying transient failures while the invocation has time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.locks import Locks
from throughline.bitrix24 import (
    Bitrix24Client,
    BitrixBadRequest,
    BitrixError,
    BitrixNotFound,
    NotEnoughTime,
    OperationTimeLimit,
)
from throughline.capture.submissions import Submission
from throughline.observability import logger
from throughline.writer.leads.fields import LeadRules, prepare
from throughline.writer.leads.lookup import PersonIndex, crm_mode, look_up
from throughline.writer.leads.model import CLASSIC, InDoubt, Outcome, PortalState, Prepared, Unwritable
from throughline.writer.leads.records import read_open
from throughline.writer.leads.rounds import PORTAL_REQUEST_LIMIT_SECONDS, RoundLeases, pick_round, round_limit
from throughline.writer.leads.write import RoundWrite


class LeadWriter:
    def __init__(
        self,
        bitrix: Bitrix24Client,
        journeys: JourneyStore,
        rules: LeadRules,
        *,
        locks: Locks | None = None,
        portal: PortalState | None = None,
        attempts: int = 3,
        retry_pause: float = 1.0,
        settle_seconds: float = PORTAL_REQUEST_LIMIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.bitrix = bitrix
        self.journeys = journeys
        self.rules = rules
        self.locks = locks
        self.portal = portal or PortalState()
        self.attempts = attempts
        self.retry_pause = retry_pause
        self.settle_seconds = settle_seconds
        self._sleep = sleep
        # Our own index of normalized phones and e-mails (journey.person_index): findbycomm compares whole strings
        # and misses a lead typed as "8 (916) 123-45-67". Its hits are candidates; the portal still decides.
        self.person_index: PersonIndex | None = None
        # The CRM-events writer (writer.crm_events) sharing this client and store; set when PERSON_KEY_SECRET is.
        self.crm_events: Any = None

    def write(self, submissions: Iterable[Submission]) -> dict[str, Outcome]:
        """Write every submission; returns an outcome per submission id (failures included, never raised)."""
        submissions = list(submissions)
        outcomes: dict[str, Outcome] = {}
        try:
            mode = crm_mode(self.bitrix, self.portal)  # leads, or deals and contacts: it shapes the preparation
        except Exception as error:  # the portal is unreachable: every submission waits in the queue
            logger.warning("bitrix24 unavailable", extra={"error": str(error)})
            for submission in submissions:
                submission_id = str(getattr(submission, "submission_id", ""))
                outcomes[submission_id] = Outcome(submission_id, False, "failed", error=error)
            return outcomes
        pending: list[Prepared] = []
        for submission in submissions:
            try:
                pending.append(prepare(submission, self.rules, mode))
            except Exception as error:
                submission_id = str(getattr(submission, "submission_id", ""))
                logger.error("submission cannot be written", extra={"submission_id": submission_id}, exc_info=True)
                outcomes[submission_id] = Outcome(submission_id, False, "failed", error=Unwritable(repr(error)))
        tries: dict[str, int] = {}
        failed_people: set[str] = set()
        alone: set[str] = set()  # submissions whose round broke unexpectedly: each now runs in a round of its own
        while pending:
            round_ = pick_round(pending, self._round_limit(), failed_people, outcomes, alone)
            if not round_:
                break
            try:
                results = self._run_round(round_)
            except _Isolate as isolate:
                if len(round_) == 1:
                    item = round_[0]
                    logger.error("submission failed unexpectedly", extra={"submission_id": item.submission_id})
                    results = {item.submission_id: Outcome(item.submission_id, False, "failed", error=isolate.cause)}
                else:
                    alone |= {item.submission_id for item in round_}
                    continue
            retry_soon = False
            for item in round_:
                result = results.get(item.submission_id)
                if result is None:  # deferred: its lead is being written by another submission of this round
                    continue
                if result.ok:
                    outcomes[item.submission_id] = result
                    continue
                tries[item.submission_id] = tries.get(item.submission_id, 0) + 1
                if self._retry_now(result, tries[item.submission_id]):
                    retry_soon = True
                else:
                    outcomes[item.submission_id] = result
                    failed_people.add(item.person)
            pending = [item for item in pending if item.submission_id not in outcomes]
            if retry_soon and pending:
                self._sleep(self.retry_pause)
        return outcomes

    def _retry_now(self, result: Outcome, tries: int) -> bool:
        """Worth another round in this invocation: a transient error, and nothing may have been written."""
        error = result.error
        if result.in_doubt or not getattr(error, "retryable", False):
            return False
        if isinstance(error, NotEnoughTime | OperationTimeLimit):
            return False  # minutes away: the queue waits better than we do
        return tries < self.attempts and self.bitrix.deadline.seconds_left() > self.retry_pause + 10

    def _round_limit(self) -> int:
        return round_limit(self.bitrix, self.portal.mode)

    def _run_round(self, round_: list[Prepared]) -> dict[str, Outcome]:
        """Look up, read the open records, write and comment: one round's outcomes. A round that breaks before any
        write for a reason no retry fixes raises ``_Isolate``; after a write request has left, nothing is repeated."""
        outcomes: dict[str, Outcome] = {}
        leases = RoundLeases(self.locks, self.bitrix)
        mode = self.portal.mode or CLASSIC
        writing = RoundWrite(self.bitrix, self.journeys, self.rules, mode, self.settle_seconds)
        plans = []
        try:
            plans = leases.take_people(round_, outcomes)
            if not plans:
                return outcomes
            look_up(self.bitrix, plans, mode, self.person_index)
            plans = leases.take_records(plans, mode, outcomes)
            read_open(self.bitrix, plans, mode, self.rules.journey_field)
            outcomes |= writing.write(plans)
            return outcomes
        except BitrixError as error:
            if not writing.sent and len(round_) > 1 and isinstance(error, BitrixBadRequest | BitrixNotFound):
                # The portal refused a read of this round for good, before anything was written: one submission's
                # lookup no retry will fix. Run them one by one, so only that one fails.
                raise _Isolate(error) from error
            logger.warning("bitrix24 round failed", extra={"error": str(error), "submissions": len(round_)})
            in_doubt = writing.sent and error.maybe_executed
            failure = InDoubt(error, time.time() + self.settle_seconds) if in_doubt else error
            for plan in plans:
                outcomes.setdefault(
                    plan.item.submission_id,
                    Outcome(plan.item.submission_id, False, "failed", plan.entity_id, failure, in_doubt),
                )
            return outcomes
        except Exception as error:
            if writing.sent:  # the write request may have reached the portal: nothing is repeated in this invocation
                logger.error("write round failed", extra={"submissions": len(round_)}, exc_info=True)
                failure = InDoubt(error, time.time() + self.settle_seconds)
                for plan in plans:
                    outcomes.setdefault(
                        plan.item.submission_id,
                        Outcome(plan.item.submission_id, False, "failed", plan.entity_id, failure, True),
                    )
                return outcomes
            raise _Isolate(error) from error
        finally:
            leases.release()


class _Isolate(Exception):
    """A round broke in a way no REST error explains (a bug or a bad record): run its submissions one by one, so
    only the one that breaks fails."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause
