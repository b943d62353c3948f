"""Planning a round: which waiting submissions go together (one per person, no shared phone or e-mail, as many as one
write request carries in the time left), and the leases that keep two writers off one person or record meanwhile."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from throughline.adapters.locks import LEASE_SECONDS, Busy, Locks
from throughline.bitrix24 import Bitrix24Client
from throughline.bitrix24.pacing import PORTAL_REQUEST_LIMIT_SECONDS
from throughline.observability import logger
from throughline.writer.leads.model import SIMPLE, Outcome, Plan, Prepared

MAX_FINDBYCOMM_PER_ROUND = 20  # two commands per person; keeps a round's lookup batch well under 50 commands
# A portal cuts a request off after 60 s, batch sub-calls included, so a batch can run part-way. Write batches are
# sized from what a write took there lately (the client keeps the answers' ``time`` blocks) to end well inside it.
BATCH_SECONDS_BUDGET = PORTAL_REQUEST_LIMIT_SECONDS / 2
# Until measured: real portals take up to seconds per crm.lead.add, and a cold writer's first batch must not be the
# one that runs into the cut-off (up to 7 s per create stays inside it). A fast portal is learned from one answer.
INITIAL_SECONDS_PER_WRITE = 4.0


def pick_round(
    pending: list[Prepared], limit: int, failed_people: set[str], outcomes: dict[str, Outcome], alone: set[str]
) -> list[Prepared]:
    """The oldest waiting submission of each person, none sharing a phone or e-mail with another, at most ``limit``
    (one only when it is to run ``alone``). A person's submissions after one that failed are skipped (outcomes)."""
    chosen: list[Prepared] = []
    people: set[str] = set()
    contacts: set[str] = set()
    for item in pending:
        if item.person in failed_people:
            # Order matters within a person: after a failure their later submissions wait for the retry.
            outcomes[item.submission_id] = Outcome(
                item.submission_id, False, "skipped", error=RuntimeError("an earlier submission failed")
            )
            continue
        isolated = item.submission_id in alone or (chosen and chosen[0].submission_id in alone)
        full = len(chosen) >= limit or bool(chosen and isolated)
        if item.person in people or contacts & item.contacts or full:
            people.add(item.person)  # keep this person's later submissions behind this one
            continue
        chosen.append(item)
        people.add(item.person)
        contacts |= item.contacts
    return chosen


def round_limit(bitrix: Bitrix24Client, mode: int | None) -> int:
    """New people per round: their creates must end well inside the portal's 60 s request limit (half of it, the
    client's ``request_budget``), priced by what each create took on this portal lately (the answers' ``time``
    blocks), and inside the time this invocation has left."""
    methods = ("crm.contact.add", "crm.deal.add") if mode == SIMPLE else ("crm.lead.add",)
    per_person = sum(bitrix.method_seconds(method, INITIAL_SECONDS_PER_WRITE) for method in methods)
    budget = getattr(bitrix, "request_budget", BATCH_SECONDS_BUDGET)
    limit = min(MAX_FINDBYCOMM_PER_ROUND, max(1, int(budget // max(per_person, 1e-3))))
    seconds_left = bitrix.deadline.seconds_left()
    if seconds_left != float("inf"):
        # Never start a round the invocation cannot finish (its reads take a few seconds more).
        limit = min(limit, int((seconds_left - 10) // max(per_person, 1e-3)))
    return max(0, limit)


class RoundLeases:
    """The leases one round holds: each person's contacts first, then the records their repeat requests may change.
    Without a lock table (``locks`` None) every lease is granted as ``None``."""

    def __init__(self, locks: Locks | None, bitrix: Bitrix24Client):
        self.locks = locks
        self.bitrix = bitrix
        self.held: list[Any] = []

    def take_people(self, round_: list[Prepared], outcomes: dict[str, Outcome]) -> list[Plan]:
        """A plan for each submission whose contacts are leased; the others are ``busy`` (outcomes)."""
        plans: list[Plan] = []
        for item in round_:
            lease = self._lock(item.lock_names)
            if lease is False:
                outcomes[item.submission_id] = Outcome(item.submission_id, False, "busy", error=Busy())
                continue
            self.held.append(lease)
            plans.append(Plan(item))
        return plans

    def take_records(self, plans: list[Plan], mode: int, outcomes: dict[str, Outcome]) -> list[Plan]:
        """Lease the leads (or, in simple mode, the contacts) a repeat request may change: two people's posts with
        different contacts can still meet in one record. Returns the plans that hold them; the others are busy."""
        if self.locks is None:
            return plans
        kept = []
        for index, plan in enumerate(plans):
            names = (
                [f"contact-record:{value}" for value in plan.contact_ids]
                if mode == SIMPLE
                else [f"lead:{value}" for value in plan.candidates]
            )
            lease = self.held[index] if index < len(self.held) else None
            if not names or plan.done or lease is None:
                kept.append(plan)
                continue
            extended = self.locks.extend(lease, names)
            if extended is None:
                outcomes[plan.item.submission_id] = Outcome(plan.item.submission_id, False, "busy", error=Busy())
                continue
            self.held[index] = extended
            kept.append(plan)
        return kept

    def release(self) -> None:
        for lease in self.held:
            if self.locks is None or not lease:
                continue
            try:
                self.locks.release(lease)
            except Exception:  # it expires by itself
                logger.warning("could not release a lease", exc_info=True)

    def _lock(self, names: Iterable[str]) -> Any:
        """A lease on ``names`` (``None`` without a lock table), or False when someone else holds one."""
        if self.locks is None:
            return None
        lease = self.locks.acquire(names, lease_seconds=self._lease_seconds())
        return False if lease is None else lease

    def _lease_seconds(self) -> float:
        left = self.bitrix.deadline.seconds_left()
        return min(LEASE_SECONDS, left + 15) if left != float("inf") else LEASE_SECONDS
