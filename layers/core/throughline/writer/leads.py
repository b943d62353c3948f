"""Turn form submissions into Bitrix24 leads: one lead per person, repeat requests as journey lines.

Each submission is first *prepared* on its own (touches, lines, fields, comment): one that cannot be planned or
formatted fails there, alone, and never shares a request with anyone. The rest are written in rounds of a few
``batch`` calls, whatever the number of submissions:

1. look up (reads): leads already created for these submissions (``ORIGIN_ID``), and each person by phone and
   e-mail (``crm.duplicate.findbycomm``);
2. read the open leads found (status, journey field, contacts) — only when someone was found;
3. write: ``crm.lead.add`` for new people, ``crm.lead.update`` for repeat requests; then, only for lines that are
   in, the manager's timeline comment.

A round holds short DynamoDB leases on each person's contacts (and the lead it changes), so two writer instances
never write one person at once (``adapters.locks``). Reads are repeated freely; a write whose outcome is unknown
(a timeout, a lost answer) is never repeated in the invocation: the message returns to the queue once the portal
has surely finished, and the ``ORIGIN_ID`` look-up (or, for a repeat line, the count of equal lines noted before
the write) then tells what happened.

Simple CRM mode (``crm.settings.mode.get`` = 2: no leads) writes deals and contacts instead: a person is found by
contact, a repeat request goes to their open deal, a new person gets a contact and a deal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from throughline.adapters.journey_store import APPLIED, PENDING, JourneyStore, encode_item, touch_key
from throughline.adapters.locks import LEASE_SECONDS, Busy, Locks
from throughline.bitrix24 import (
    BatchResult,
    Bitrix24Client,
    BitrixBadRequest,
    BitrixError,
    BitrixMethodNotFound,
    BitrixNotFound,
    BitrixUnavailable,
    NotEnoughTime,
    OperationTimeLimit,
)
from throughline.bitrix24.query import build_query
from throughline.capture.submissions import Submission
from throughline.config import Settings
from throughline.contacts import mask_email, mask_phone
from throughline.journey.lines import FIRST_CONTACT, Touch, append_line, format_journey, format_line
from throughline.journey.touches import last_source, submission_touches
from throughline.observability import logger
from throughline.sources import (
    DIRECT,
    DISPLAY,
    EMAIL,
    MESSENGER,
    OFFLINE,
    ORGANIC_SEARCH,
    PAID_SEARCH,
    REFERRAL,
    SOCIAL,
    Source,
)

ORIGINATOR_ID = "throughline"
LEAD_ENTITY = "LEAD#{}"
DEAL_ENTITY = "DEAL#{}"
MAX_FINDBYCOMM_PER_ROUND = 20  # two commands per person; keeps a round's lookup batch well under 50 commands
CLASSIC, SIMPLE = 1, 2  # crm.settings.mode.get: 1 classic (with leads), 2 simple (no leads)
MODE_MAX_AGE_SECONDS = 600  # an administrator may switch the mode: look again now and then
# A portal cuts a request off after 60 s, batch sub-calls included, so a batch can run part-way. Write batches are
# sized from what a write took there lately (the client keeps the answers' ``time`` blocks) to end well inside it.
PORTAL_REQUEST_LIMIT_SECONDS = 60.0
BATCH_SECONDS_BUDGET = PORTAL_REQUEST_LIMIT_SECONDS / 2
# Until measured: real portals take up to seconds per crm.lead.add, and a cold writer's first batch must not be the
# one that runs into the cut-off (up to 7 s per create stays inside it). A fast portal is learned from one answer.
INITIAL_SECONDS_PER_WRITE = 4.0

# Where each channel lands in the portal's default source dictionary (crm.status.list ENTITY_ID=SOURCE).
DEFAULT_SOURCE_IDS = {
    PAID_SEARCH: "ADVERTISING",
    DISPLAY: "ADVERTISING",
    ORGANIC_SEARCH: "WEB",
    SOCIAL: "WEB",
    MESSENGER: "WEB",
    REFERRAL: "WEB",
    DIRECT: "WEB",
    EMAIL: "EMAIL",
    OFFLINE: "OTHER",
}
# Analytics client ids and VK Ads' click id, each in a lead (and deal) user field that ``bitrix-setup`` creates: offline
# conversions are sent back to the platforms with them. A portal without the fields ignores them (unknown keys).
CLIENT_ID_FIELDS = {
    "ym_client_id": ("UF_CRM_TL_YM_CLIENT_ID", {"ru": "ClientID Яндекс Метрики", "en": "Yandex Metrica ClientID"}),
    "ga_client_id": ("UF_CRM_TL_GA_CLIENT_ID", {"ru": "Client ID Google Analytics", "en": "Google Analytics ClientID"}),
    "rb_clickid": ("UF_CRM_TL_VK_CLICK_ID", {"ru": "rb_clickid VK Рекламы", "en": "VK Ads click id (rb_clickid)"}),
}


@dataclass(frozen=True)
class LeadRules:
    """How leads are filled in: the portal-specific choices an operator configures."""

    journey_field: str = "UF_CRM_CUSTOMER_JOURNEY"
    source_map: dict[str, str] = field(default_factory=dict)
    responsible_map: dict[str, str] = field(default_factory=dict)
    default_responsible_id: int | None = None
    title_template: str = "Заявка с формы «{form}»"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Moscow"))

    @classmethod
    def from_settings(cls, settings: Settings) -> LeadRules:
        return cls(
            journey_field=settings.bitrix24_journey_field,
            source_map=settings.bitrix24_source_map,
            responsible_map=settings.bitrix24_responsible_map,
            default_responsible_id=settings.bitrix24_default_responsible_id,
            title_template=settings.lead_title_template,
            zone=settings.zone,
        )

    def source_id(self, source: Source) -> str:
        """Most specific first: ``channel/source``, ``channel``, ``paid``, then the built-in default."""
        for key in (f"{source.channel}/{source.source}", source.channel, "paid" if source.paid else "organic"):
            if key in self.source_map:
                return self.source_map[key]
        return "ADVERTISING" if source.paid else DEFAULT_SOURCE_IDS[source.channel]

    def responsible_id(self, source: Source) -> int | None:
        for key in (f"{source.channel}/{source.source}", source.channel, "paid" if source.paid else "organic"):
            if key in self.responsible_map:
                return int(self.responsible_map[key])
        return self.default_responsible_id


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


@dataclass
class PortalState:
    """What one writer process learns about a portal beyond method times (those the client keeps): its CRM mode."""

    mode: int | None = None
    mode_checked_at: float = 0.0


@dataclass
class _Prepared:
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
class _Plan:
    """What one round decided for one submission."""

    item: _Prepared
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
        self.person_index: Callable[[Submission], tuple[set[int], set[int]]] | None = None
        # The CRM-events writer (writer.crm_events) sharing this client and store; set when PERSON_KEY_SECRET is.
        self.crm_events: Any = None

    def write(self, submissions: Iterable[Submission]) -> dict[str, Outcome]:
        """Write every submission; returns an outcome per submission id (failures included, never raised)."""
        submissions = list(submissions)
        outcomes: dict[str, Outcome] = {}
        try:
            self._mode()  # what to write (leads, or deals and contacts) shapes the preparation
        except Exception as error:  # the portal is unreachable: every submission waits in the queue
            logger.warning("bitrix24 unavailable", extra={"error": str(error)})
            for submission in submissions:
                submission_id = str(getattr(submission, "submission_id", ""))
                outcomes[submission_id] = Outcome(submission_id, False, "failed", error=error)
            return outcomes
        pending: list[_Prepared] = []
        for submission in submissions:
            try:
                pending.append(self._prepare(submission))
            except Exception as error:
                submission_id = str(getattr(submission, "submission_id", ""))
                logger.error("submission cannot be written", extra={"submission_id": submission_id}, exc_info=True)
                outcomes[submission_id] = Outcome(submission_id, False, "failed", error=Unwritable(repr(error)))
        tries: dict[str, int] = {}
        failed_people: set[str] = set()
        alone: set[str] = set()  # submissions whose round broke unexpectedly: each now runs in a round of its own
        while pending:
            round_ = self._pick_round(pending, failed_people, outcomes, alone)
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

    # -- preparing ------------------------------------------------------------------------------------------------

    def _prepare(self, submission: Submission) -> _Prepared:
        if not isinstance(submission.submission_id, str) or not submission.submission_id:
            raise TypeError("submission_id must be a non-empty string")
        for name in ("phone", "email"):
            if not isinstance(getattr(submission, name), str | None):
                raise TypeError(f"{name} must be text")
        zone = self.rules.zone
        touches = submission_touches(submission, zone)
        lines = {touch.touch_id: format_line(touch, zone, first=i == 0) for i, touch in enumerate(touches)}
        [repeat_touch] = submission_touches(submission, zone, repeat=True)
        contacts = frozenset(value for value in (submission.phone, submission.email) if value)
        item = _Prepared(
            submission=submission,
            person=submission.person_key(),
            contacts=contacts,
            lock_names=tuple(sorted(f"contact:{value}" for value in contacts)),
            touches=touches,
            lines=lines,
            fields=self._new_fields(submission, format_journey(touches, zone)),
            contact_fields=self._contact_fields(submission),
            repeat_touch=repeat_touch,
            repeat_line=format_line(repeat_touch, zone),
            comment=_repeat_comment(submission),
        )
        # What the round will send and store must encode: find out now, not in the middle of a shared round.
        build_query({"fields": item.fields})
        build_query({"fields": item.contact_fields})
        build_query({"fields": {"COMMENT": item.comment}})
        for touch in [*touches, repeat_touch]:
            encode_item("LEAD#0", touch, APPLIED, line=item.repeat_line)
        return item

    # -- rounds ---------------------------------------------------------------------------------------------------

    def _pick_round(
        self, pending: list[_Prepared], failed_people: set[str], outcomes: dict[str, Outcome], alone: set[str]
    ) -> list[_Prepared]:
        """The oldest waiting submission of each person, none sharing a phone or e-mail with another, as many as
        one write request can carry on this portal in the time left."""
        limit = self._round_limit()
        chosen: list[_Prepared] = []
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

    def _round_limit(self) -> int:
        """New people per round: their creates must end well inside the portal's 60 s request limit (half of it, the
        client's ``request_budget``), priced by what each create took on this portal lately (the answers' ``time``
        blocks), and inside the time this invocation has left."""
        methods = ("crm.contact.add", "crm.deal.add") if self.portal.mode == SIMPLE else ("crm.lead.add",)
        per_person = sum(self.bitrix.method_seconds(method, INITIAL_SECONDS_PER_WRITE) for method in methods)
        budget = getattr(self.bitrix, "request_budget", BATCH_SECONDS_BUDGET)
        limit = min(MAX_FINDBYCOMM_PER_ROUND, max(1, int(budget // max(per_person, 1e-3))))
        seconds_left = self.bitrix.deadline.seconds_left()
        if seconds_left != float("inf"):
            # Never start a round the invocation cannot finish (its reads take a few seconds more).
            limit = min(limit, int((seconds_left - 10) // max(per_person, 1e-3)))
        return max(0, limit)

    def _run_round(self, round_: list[_Prepared]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        plans: list[_Plan] = []
        leases: list[Any] = []
        self._sent = False
        try:
            for item in round_:
                lease = self._lock(item.lock_names)
                if lease is False:
                    outcomes[item.submission_id] = Outcome(item.submission_id, False, "busy", error=Busy())
                    continue
                leases.append(lease)
                plans.append(_Plan(item))
            if not plans:
                return outcomes
            mode = self.portal.mode or CLASSIC
            self._look_up(plans, mode)
            plans = self._lock_records(plans, mode, leases, outcomes)
            self._read_open(plans, mode)
            outcomes |= self._write(plans, mode)
            return outcomes
        except BitrixError as error:
            if not self._sent and len(round_) > 1 and isinstance(error, BitrixBadRequest | BitrixNotFound):
                # The portal refused a read of this round for good, before anything was written: one submission's
                # lookup no retry will fix. Run them one by one, so only that one fails.
                raise _Isolate(error) from error
            logger.warning("bitrix24 round failed", extra={"error": str(error), "submissions": len(round_)})
            in_doubt = self._sent and error.maybe_executed
            failure = InDoubt(error, time.time() + self.settle_seconds) if in_doubt else error
            for plan in plans:
                outcomes.setdefault(
                    plan.item.submission_id,
                    Outcome(plan.item.submission_id, False, "failed", plan.entity_id, failure, in_doubt),
                )
            return outcomes
        except Exception as error:
            if self._sent:  # the write request may have reached the portal: nothing is repeated in this invocation
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
            for lease in leases:
                self._unlock(lease)

    def _lock(self, names: Iterable[str]) -> Any:
        """A lease on ``names`` (``None`` without a lock table), or False when someone else holds one."""
        if self.locks is None:
            return None
        lease = self.locks.acquire(names, lease_seconds=self._lease_seconds())
        return False if lease is None else lease

    def _unlock(self, lease: Any) -> None:
        if self.locks is None or not lease:
            return
        try:
            self.locks.release(lease)
        except Exception:  # it expires by itself
            logger.warning("could not release a lease", exc_info=True)

    def _lease_seconds(self) -> float:
        left = self.bitrix.deadline.seconds_left()
        return min(LEASE_SECONDS, left + 15) if left != float("inf") else LEASE_SECONDS

    def _lock_records(self, plans: list[_Plan], mode: int, leases: list[Any], outcomes: dict[str, Outcome]):
        """Lease the leads (or, in simple mode, the contacts) a repeat request may change: two people's posts with
        different contacts can still meet in one record."""
        if self.locks is None:
            return plans
        kept = []
        for index, plan in enumerate(plans):
            names = (
                [f"contact-record:{value}" for value in plan.contact_ids]
                if mode == SIMPLE
                else [f"lead:{value}" for value in plan.candidates]
            )
            lease = leases[index] if index < len(leases) else None
            if not names or plan.done or lease is None:
                kept.append(plan)
                continue
            extended = self.locks.extend(lease, names)
            if extended is None:
                outcomes[plan.item.submission_id] = Outcome(plan.item.submission_id, False, "busy", error=Busy())
                continue
            leases[index] = extended
            kept.append(plan)
        return kept

    def _mode(self) -> int:
        """The portal's CRM mode (``crm.settings.mode.get``: 1 classic, 2 simple), cached and re-checked now and
        then, as an administrator may switch it."""
        state = self.portal
        if state.mode is None or time.monotonic() - state.mode_checked_at > MODE_MAX_AGE_SECONDS:
            mode = read_crm_mode(self.bitrix)
            if mode != state.mode:
                logger.info("crm mode", extra={"mode": "simple" if mode == SIMPLE else "classic"})
            state.mode, state.mode_checked_at = mode, time.monotonic()
        return state.mode or CLASSIC

    def _look_up(self, plans: list[_Plan], mode: int) -> None:
        entity = "deal" if mode == SIMPLE else "lead"
        commands: dict[str, tuple[str, dict[str, Any]]] = {
            "origin": (
                f"crm.{entity}.list",
                {
                    "filter": {
                        "ORIGINATOR_ID": ORIGINATOR_ID,
                        "@ORIGIN_ID": [plan.item.submission_id for plan in plans],
                    },
                    "select": ["ID", "ORIGIN_ID"],
                },
            )
        }
        comm_entity = {"entity_type": "CONTACT"} if mode == SIMPLE else {}
        for index, plan in enumerate(plans):
            item = plan.item.submission
            if item.phone:
                commands[f"phone{index}"] = (
                    "crm.duplicate.findbycomm",
                    {"type": "PHONE", "values": [item.phone], **comm_entity},
                )
            if item.email:
                commands[f"email{index}"] = (
                    "crm.duplicate.findbycomm",
                    {"type": "EMAIL", "values": [item.email], **comm_entity},
                )
        found = self.bitrix.batch(commands)
        if "origin" in found.errors:
            raise found.errors["origin"]
        created = {str(row["ORIGIN_ID"]): int(row["ID"]) for row in found.get("origin") or []}
        for index, plan in enumerate(plans):
            if plan.item.submission_id in created:
                plan.entity_id, plan.done = created[plan.item.submission_id], True
                continue
            leads, contacts = _matches(found, f"phone{index}", f"email{index}")
            if self.person_index is not None:
                indexed_leads, indexed_contacts = self.person_index(plan.item.submission)
                leads |= indexed_leads
                contacts |= indexed_contacts
            plan.candidates = leads if mode == CLASSIC else set()
            plan.contact_ids = contacts
            plan.contact_id = max(contacts) if contacts else None

    def _read_open(self, plans: list[_Plan], mode: int) -> None:
        if mode == SIMPLE:
            self._read_open_deals(plans)
            return
        candidates = sorted({lead for plan in plans if not plan.done for lead in plan.candidates})
        leads = self._read("lead", {"@ID": candidates}, ["STATUS_ID", "STATUS_SEMANTIC_ID", "PHONE", "EMAIL"])
        for plan in plans:
            if plan.done:
                continue
            open_leads = [lead for lead in plan.candidates if _is_open(leads.get(lead))]
            if open_leads:
                plan.entity_id = max(open_leads)
                plan.record = leads[plan.entity_id]

    def _read_open_deals(self, plans: list[_Plan]) -> None:
        """Simple mode: each person's open deal (``STAGE_SEMANTIC_ID`` P) through their contacts."""
        contacts = sorted({contact for plan in plans if not plan.done for contact in plan.contact_ids})
        if not contacts:
            return
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for start in range(0, len(contacts), 50):
            chunk = contacts[start : start + 50]
            commands[f"deals{start}"] = (
                "crm.deal.list",
                {
                    "filter": {"@CONTACT_ID": chunk, "STAGE_SEMANTIC_ID": "P"},
                    "select": ["ID", "CONTACT_ID", "STAGE_SEMANTIC_ID", self.rules.journey_field],
                },
            )
            commands[f"contacts{start}"] = (
                "crm.contact.list",
                {"filter": {"@ID": chunk}, "select": ["ID", "PHONE", "EMAIL"]},
            )
        found = self.bitrix.batch(commands)
        deals: dict[int, dict[str, Any]] = {}
        people: dict[int, dict[str, Any]] = {}
        for key in commands:
            rows = found.get(key) or []
            target = deals if key.startswith("deals") else people
            for row in rows:
                target[int(row["ID"])] = row
        for plan in plans:
            if plan.done:
                continue
            open_deals = [
                deal_id
                for deal_id, deal in deals.items()
                if _to_int(deal.get("CONTACT_ID")) in plan.contact_ids and deal.get("STAGE_SEMANTIC_ID", "P") == "P"
            ]
            if open_deals:
                plan.entity_id = max(open_deals)
                deal = deals[plan.entity_id]
                plan.contact_id = _to_int(deal.get("CONTACT_ID")) or plan.contact_id
                contact = people.get(plan.contact_id or 0, {})
                plan.record = {**deal, "PHONE": contact.get("PHONE"), "EMAIL": contact.get("EMAIL")}

    def _read(self, entity: str, filter_: dict[str, Any], select: list[str]) -> dict[int, dict[str, Any]]:
        ids = filter_.get("@ID") or []
        if not ids:
            return {}
        select = ["ID", *select, self.rules.journey_field]
        commands = {
            f"{entity}s{start}": (f"crm.{entity}.list", {"filter": {"@ID": ids[start : start + 50]}, "select": select})
            for start in range(0, len(ids), 50)
        }
        found = self.bitrix.batch(commands)
        rows: dict[int, dict[str, Any]] = {}
        for key in commands:
            for row in found.get(key) or []:
                rows[int(row["ID"])] = row
        return rows

    def _write(self, plans: list[_Plan], mode: int) -> dict[str, Outcome]:
        entity = "deal" if mode == SIMPLE else "lead"
        prefix = DEAL_ENTITY if mode == SIMPLE else LEAD_ENTITY
        outcomes: dict[str, Outcome] = {}
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        targeted: set[int] = set()
        comments: list[tuple[_Plan, str]] = []
        pending_repeats: list[_Plan] = []
        if mode == SIMPLE:
            # The phone and e-mail live on the contact: a deal is written only once its contact exists (in one
            # batch, a failed contact add would leave the deal's $result reference empty and the deal unreachable).
            outcomes |= self._add_contacts([plan for plan in plans if not plan.done and not plan.repeat])
        for index, plan in enumerate(plans):
            item = plan.item
            if item.submission_id in outcomes:
                continue
            if plan.done:
                self._record_new(prefix.format(plan.entity_id), item)  # created earlier, its answer lost
                outcomes[item.submission_id] = Outcome(item.submission_id, True, "already_done", plan.entity_id)
            elif plan.repeat:
                if plan.entity_id in targeted:
                    continue  # another person's submission writes this record in this round; wait for the next
                targeted.add(plan.entity_id)
                state = self._repeat_state(plan, prefix)
                if state is not None:
                    outcomes[item.submission_id] = Outcome(item.submission_id, True, "already_done", plan.entity_id)
                    if state.get("comment") != "sent":
                        comments.append((plan, prefix))
                    continue
                commands[f"update{index}"] = (f"crm.{entity}.update", {"id": plan.entity_id, "fields": plan.update})
                if plan.contact_update and plan.contact_id:
                    commands[f"contact{index}"] = (
                        "crm.contact.update",
                        {"id": plan.contact_id, "fields": plan.contact_update},
                    )
                pending_repeats.append(plan)
            else:
                fields = {**item.fields}
                if plan.contact_id:
                    fields["CONTACT_ID"] = plan.contact_id
                commands[f"add{index}"] = (
                    f"crm.{entity}.add",
                    {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}},
                )
        for plan in pending_repeats:
            self._mark_repeat(plan, prefix, PENDING, before=plan.before)
        written = self._send(commands)
        for index, plan in enumerate(plans):
            item = plan.item
            if item.submission_id in outcomes or (plan.repeat and f"update{index}" not in commands):
                continue
            key = f"update{index}" if plan.repeat else f"add{index}"
            if key not in written.errors and key not in written.results:  # no word on it: it may or may not have run
                written.errors[key] = BitrixUnavailable("NO_RESULT", "the batch answered without this command", None)
            if key in written.errors:
                error = written.errors[key]
                in_doubt = error.maybe_executed and not isinstance(error, NotEnoughTime | OperationTimeLimit)
                failure = InDoubt(error, time.time() + self.settle_seconds) if in_doubt else error
                outcomes[item.submission_id] = Outcome(
                    item.submission_id, False, "failed", plan.entity_id, failure, in_doubt
                )
                continue
            try:
                if plan.repeat:
                    self._mark_repeat(plan, prefix, APPLIED)
                    comments.append((plan, prefix))
                    outcomes[item.submission_id] = Outcome(item.submission_id, True, "appended", plan.entity_id)
                    _log_outcome(f"repeat request added to {entity}", item.submission, plan.entity_id)
                else:
                    record_id = int(written.results[key])
                    self._record_new(prefix.format(record_id), item)
                    outcomes[item.submission_id] = Outcome(item.submission_id, True, "created", record_id)
                    _log_outcome(f"{entity} created", item.submission, record_id)
            except Exception as error:  # written, but our bookkeeping failed: a retry finds it and finishes
                logger.error("bookkeeping failed", extra={"submission_id": item.submission_id}, exc_info=True)
                outcomes[item.submission_id] = Outcome(item.submission_id, False, "failed", plan.entity_id, error)
        for submission_id, error in self._add_comments(comments, entity).items():
            # Its line is in but its notice surely never ran: the message comes back, and the retry finds the line
            # applied and sends only the notice.
            entity_id = outcomes[submission_id].lead_id if submission_id in outcomes else None
            outcomes[submission_id] = Outcome(submission_id, False, "failed", entity_id, error)
        for outcome in outcomes.values():
            if outcome.lead_id is not None:
                outcome.entity = prefix.format(outcome.lead_id)  # a deal's number may also be some lead's number
        return outcomes

    def _add_contacts(self, plans: list[_Plan]) -> dict[str, Outcome]:
        """Simple mode: the contacts of new people who have none yet, before their deals. Returns the failures: a
        contact add that may have run is in doubt (the retry's look-up finds the contact by its phone or e-mail)."""
        new = {f"contact{index}": plan for index, plan in enumerate(plans) if not plan.contact_id}
        commands = {key: ("crm.contact.add", {"fields": plan.item.contact_fields}) for key, plan in new.items()}
        written = self._send(commands)
        failures: dict[str, Outcome] = {}
        for key, plan in new.items():
            submission_id = plan.item.submission_id
            contact_id = _to_int(written.results.get(key)) if key not in written.errors else None
            if contact_id:
                plan.contact_id = contact_id
                continue
            error = written.errors.get(key) or BitrixUnavailable("NO_RESULT", "the batch gave no contact id", None)
            in_doubt = error.maybe_executed and not isinstance(error, NotEnoughTime | OperationTimeLimit)
            failure = InDoubt(error, time.time() + self.settle_seconds) if in_doubt else error
            logger.warning("contact not created", extra={"submission_id": submission_id, "error": str(error)})
            failures[submission_id] = Outcome(submission_id, False, "failed", None, failure, in_doubt)
        return failures

    def _send(self, commands: dict[str, tuple[str, dict[str, Any]]]) -> BatchResult:
        if not commands:
            return BatchResult({}, {}, {}, {})
        self._sent = True  # from here on, an error leaves the outcome in doubt
        return self.bitrix.batch(commands)

    def _add_comments(self, comments: list[tuple[_Plan, str]], entity: str) -> dict[str, BaseException]:
        """The manager's timeline notice of a repeat request, sent only once its line is in the field, and at most
        once: a notice that may have run (a lost answer) or that the portal refused is marked sent (a missing notice,
        never a double one). A notice that surely never ran and may run later (no connection, the leaky bucket, the
        operating-time block, the deadline) is not: its submission id and error are returned, so its message comes
        back and the retry sends it."""
        if not comments:
            return {}
        commands = {
            f"comment{index}": (
                "crm.timeline.comment.add",
                {"fields": {"ENTITY_ID": plan.entity_id, "ENTITY_TYPE": entity, "COMMENT": plan.item.comment}},
            )
            for index, (plan, _) in enumerate(comments)
        }
        errors: dict[str, BaseException] = {}
        try:
            errors = dict(self.bitrix.batch(commands).errors)
        except BitrixError as error:
            errors = dict.fromkeys(commands, error)
        unsent: dict[str, BaseException] = {}
        for index, (plan, prefix) in enumerate(comments):
            error = errors.get(f"comment{index}")
            if error is not None:
                logger.warning("timeline comment not added", extra={"entity_id": plan.entity_id, "error": str(error)})
                if getattr(error, "retryable", False) and not getattr(error, "maybe_executed", True):
                    unsent[plan.item.submission_id] = error
                    continue
            try:
                self._mark_repeat(plan, prefix, APPLIED, comment="sent")
            except Exception:
                logger.warning("comment state not stored", extra={"entity_id": plan.entity_id}, exc_info=True)
        return unsent

    # -- details --------------------------------------------------------------------------------------------------

    def _repeat_state(self, plan: _Plan, prefix: str) -> dict[str, Any] | None:
        """The stored state when an earlier attempt already wrote this repeat line; else prepare the update."""
        item, record = plan.item, plan.record or {}
        entity = prefix.format(plan.entity_id)
        key = touch_key(entity, item.repeat_touch)
        state = self.journeys.states([key]).get(key)
        current = record.get(self.rules.journey_field) or ""
        count = count_line(current, item.repeat_line)
        if state and state.get("state") == APPLIED:
            return state
        if state and state.get("state") == PENDING and count > int(state.get("before") or 0):
            self._mark_repeat(plan, prefix, APPLIED)  # its own line arrived: the count grew
            return state
        plan.before = count
        plan.update = {self.rules.journey_field: append_line(current, item.repeat_line)}
        known_phones = {entry.get("VALUE") for entry in record.get("PHONE") or []}
        known_emails = {str(entry.get("VALUE", "")).lower() for entry in record.get("EMAIL") or []}
        contact_details: dict[str, Any] = {}
        if item.submission.phone and item.submission.phone not in known_phones:
            contact_details["PHONE"] = [{"VALUE": item.submission.phone, "VALUE_TYPE": "WORK"}]
        if item.submission.email and item.submission.email not in known_emails:
            contact_details["EMAIL"] = [{"VALUE": item.submission.email, "VALUE_TYPE": "WORK"}]
        if self.portal.mode == SIMPLE:
            plan.contact_update = contact_details
        else:
            plan.update |= contact_details
        return None

    def _new_fields(self, item: Submission, journey_text: str) -> dict[str, Any]:
        """A new lead's fields (in simple mode the deal's; its phone and e-mail go to the contact)."""
        source = last_source(item)
        visit = item.last_visit
        tags = visit.tags()
        if not any(tags.values()) and source.channel != DIRECT:
            # No tags were sent, but we know where the visit came from: record it as GA-style source / medium.
            tags = {**tags, "utm_source": source.source, "utm_medium": source.medium}
        fields: dict[str, Any] = {
            "TITLE": self.rules.title_template.format(
                form=item.form_id, name=item.name or "", channel=source.channel_label, source=source.source_label
            ).strip(),
            "NAME": item.name,
            "LAST_NAME": item.last_name,
            "SECOND_NAME": item.second_name,
            "COMMENTS": _comments(item),
            "SOURCE_ID": self.rules.source_id(source),
            "SOURCE_DESCRIPTION": _source_description(item, source),
            "UTM_SOURCE": tags["utm_source"],
            "UTM_MEDIUM": tags["utm_medium"],
            "UTM_CAMPAIGN": tags["utm_campaign"],
            "UTM_CONTENT": tags["utm_content"],
            "UTM_TERM": tags["utm_term"],
            "ASSIGNED_BY_ID": self.rules.responsible_id(source),
            "ORIGINATOR_ID": ORIGINATOR_ID,
            "ORIGIN_ID": item.submission_id,
            "OPENED": "Y",
            self.rules.journey_field: journey_text,
        }
        ids = {**item.client_ids, **item.click_ids}
        fields |= {name: ids[key] for key, (name, _) in CLIENT_ID_FIELDS.items() if ids.get(key)}
        if self.portal.mode == SIMPLE:
            for name in ("NAME", "LAST_NAME", "SECOND_NAME"):
                fields.pop(name)  # a deal has no person's name: it is the contact's
        else:
            if item.phone:
                fields["PHONE"] = [{"VALUE": item.phone, "VALUE_TYPE": "WORK"}]
            if item.email:
                fields["EMAIL"] = [{"VALUE": item.email, "VALUE_TYPE": "WORK"}]
        return {key: value for key, value in fields.items() if value not in (None, "")}

    def _contact_fields(self, item: Submission) -> dict[str, Any]:
        """Simple mode: the contact of a new person (a deal cannot hold a phone or an e-mail)."""
        source = last_source(item)
        fields: dict[str, Any] = {
            "NAME": item.name,
            "LAST_NAME": item.last_name,
            "SECOND_NAME": item.second_name,
            "SOURCE_ID": self.rules.source_id(source),
            "SOURCE_DESCRIPTION": _source_description(item, source),
            "ASSIGNED_BY_ID": self.rules.responsible_id(source),
            "OPENED": "Y",
        }
        if item.phone:
            fields["PHONE"] = [{"VALUE": item.phone, "VALUE_TYPE": "WORK"}]
        if item.email:
            fields["EMAIL"] = [{"VALUE": item.email, "VALUE_TYPE": "WORK"}]
        return {key: value for key, value in fields.items() if value not in (None, "")}

    def _mark_repeat(self, plan: _Plan, prefix: str, state: str, **attributes: Any) -> None:
        touch = plan.item.repeat_touch
        self.journeys.put(
            prefix.format(plan.entity_id),
            [touch],
            state=state,
            lines={touch.touch_id: plan.item.repeat_line},
            **attributes,
        )

    def _record_new(self, entity: str, item: _Prepared) -> None:
        self.journeys.put(entity, item.touches, state=APPLIED, lines=item.lines)


class _Isolate(Exception):
    """A round broke in a way no REST error explains (a bug or a bad record): run its submissions one by one, so
    only the one that breaks fails."""

    def __init__(self, cause: BaseException):
        super().__init__(repr(cause))
        self.cause = cause


def read_crm_mode(bitrix: Bitrix24Client) -> int:
    """``crm.settings.mode.get``: 1 classic CRM (with leads), 2 simple CRM (no leads); classic when unanswered."""
    try:
        answer = _to_int(bitrix.call("crm.settings.mode.get").result)
    except BitrixMethodNotFound:
        return CLASSIC
    return answer if answer in (CLASSIC, SIMPLE) else CLASSIC


def _matches(found: BatchResult, *keys: str) -> tuple[set[int], set[int]]:
    leads: set[int] = set()
    contacts: set[int] = set()
    for key in keys:
        if key in found.errors:
            raise found.errors[key]
        result = found.results.get(key)
        if isinstance(result, dict):  # an empty answer is [] (PHP)
            leads |= {int(value) for value in result.get("LEAD") or []}
            contacts |= {int(value) for value in result.get("CONTACT") or []}
    return leads, contacts


def _to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def count_line(journey_text: str | None, line: str) -> int:
    """How many lines of the field read as ``line`` (ignoring the first-contact prefix and blanks)."""
    wanted = line.removeprefix(FIRST_CONTACT).strip()
    return sum(
        existing.strip().removeprefix(FIRST_CONTACT).strip() == wanted for existing in (journey_text or "").splitlines()
    )


def _is_open(lead: dict[str, Any] | None) -> bool:
    if not lead:
        return False
    semantic = lead.get("STATUS_SEMANTIC_ID")
    if semantic:
        return semantic == "P"
    return lead.get("STATUS_ID") not in ("CONVERTED", "JUNK")


def _comments(item: Submission) -> str | None:
    parts = [item.comment] if item.comment else []
    if item.extra:
        parts.append("\n".join(f"{key}: {value}" for key, value in item.extra.items()))
    return "\n\n".join(parts) or None


def _source_description(item: Submission, source: Source) -> str:
    text = f"{source.channel_label}: {source.source_label}"
    if item.last_visit.utm_campaign:
        text += f", кампания «{item.last_visit.utm_campaign}»"
    text += f"\nФорма «{item.form_id}»"
    if item.last_visit.landing_url:
        text += f", страница {item.last_visit.landing_url}"
    return text


def _repeat_comment(item: Submission) -> str:
    source = last_source(item)
    text = f"Повторное обращение через форму «{item.form_id}» ({source.channel_label}: {source.source_label})"
    if item.name:
        text += f"\nИмя: {item.name}"
    details = _comments(item)
    return f"{text}\n\n{details}" if details else text


def _log_outcome(message: str, item: Submission, lead_id: int | None) -> None:
    logger.info(
        message,
        extra={
            "submission_id": item.submission_id,
            "lead_id": lead_id,
            "phone": mask_phone(item.phone),
            "email": mask_email(item.email),
        },
    )
