"""Turn form submissions into Bitrix24 leads: one lead per person, repeat requests as journey lines.

A batch of submissions is written in rounds of three ``batch`` calls at most, whatever the number of submissions:

1. look up (reads): leads already created for these submissions (``ORIGIN_ID``), and each person by phone and
   e-mail (``crm.duplicate.findbycomm``);
2. read the open leads found (status, journey field, contacts) — only when someone was found;
3. write: ``crm.lead.add`` for new people, ``crm.lead.update`` (+ a timeline comment) for repeat requests.

Every step can be repeated safely, so a failed round is simply run again. A lead carries ``ORIGIN_ID`` = the
submission id, so a create whose answer was lost is found in step 1 instead of made twice; a repeat line is marked
``pending`` in the journey store before the write and checked against the field on a retry.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from throughline.adapters.journey_store import APPLIED, PENDING, JourneyStore, touch_key
from throughline.bitrix24 import (
    BatchResult,
    Bitrix24Client,
    BitrixError,
    BitrixTransientError,
    NotEnoughTime,
    OperationTimeLimit,
)
from throughline.capture.submissions import Submission
from throughline.config import Settings
from throughline.contacts import mask_email, mask_phone
from throughline.journey.lines import append_line, format_journey, format_line, has_line
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
MAX_FINDBYCOMM_PER_ROUND = 20  # two commands per person; keeps a round's lookup batch well under 50 commands

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
    action: str = ""  # created | appended | already_done | failed | skipped
    lead_id: int | None = None
    error: BaseException | None = None

    @property
    def retry_at(self) -> float | None:
        return getattr(self.error, "retry_at", None)


@dataclass
class _Plan:
    """What one round decided for one submission."""

    submission: Submission
    lead_id: int | None = None  # an existing lead: already created, or the open lead to append to
    contact_id: int | None = None  # an existing contact (a returning customer) to link a new lead to
    done: bool = False  # the lead was created by an earlier attempt
    candidate_leads: set[int] = field(default_factory=set)
    lead: dict[str, Any] | None = None  # the open lead's current fields, for a repeat request
    update: dict[str, Any] = field(default_factory=dict)
    line: str | None = None

    @property
    def repeat(self) -> bool:
        return self.lead is not None


class LeadWriter:
    def __init__(
        self,
        bitrix: Bitrix24Client,
        journeys: JourneyStore,
        rules: LeadRules,
        *,
        attempts: int = 3,
        retry_pause: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.bitrix = bitrix
        self.journeys = journeys
        self.rules = rules
        self.attempts = attempts
        self.retry_pause = retry_pause
        self._sleep = sleep
        # Our own index of normalized phones and e-mails (journey.person_index): findbycomm compares whole strings
        # and misses a lead typed as "8 (916) 123-45-67". Its hits are candidates; the portal still decides.
        self.person_index: Callable[[Submission], tuple[set[int], set[int]]] | None = None

    def write(self, submissions: Iterable[Submission]) -> dict[str, Outcome]:
        """Write every submission; returns an outcome per submission id (failures included, never raised)."""
        pending = list(submissions)
        outcomes: dict[str, Outcome] = {}
        tries: dict[str, int] = {}
        failed_people: set[str] = set()
        while pending:
            round_ = self._pick_round(pending, failed_people, outcomes)
            if not round_:
                break
            results = self._run_round(round_)
            retry_soon = False
            for submission in round_:
                result = results.get(submission.submission_id)
                if result is None:  # deferred: its lead is being written by another submission of this round
                    continue
                if result.ok:
                    outcomes[submission.submission_id] = result
                    continue
                tries[submission.submission_id] = tries.get(submission.submission_id, 0) + 1
                error = result.error
                can_retry = (
                    isinstance(error, BitrixTransientError)
                    and not isinstance(error, NotEnoughTime | OperationTimeLimit)  # minutes away: the queue waits
                    and tries[submission.submission_id] < self.attempts
                    and self.bitrix.deadline.seconds_left() > self.retry_pause + 10
                )
                if can_retry:
                    retry_soon = True
                else:
                    outcomes[submission.submission_id] = result
                    failed_people.add(submission.person_key())
            pending = [item for item in pending if item.submission_id not in outcomes]
            if retry_soon and pending:
                self._sleep(self.retry_pause)
        return outcomes

    # -- rounds ---------------------------------------------------------------------------------------------------

    def _pick_round(
        self, pending: list[Submission], failed_people: set[str], outcomes: dict[str, Outcome]
    ) -> list[Submission]:
        """The oldest waiting submission of each person, none sharing a phone or e-mail with another."""
        chosen: list[Submission] = []
        people: set[str] = set()
        contacts: set[str] = set()
        for submission in pending:
            person = submission.person_key()
            if person in failed_people:
                # Order matters within a person: after a failure their later submissions wait for the retry.
                outcomes[submission.submission_id] = Outcome(
                    submission.submission_id, False, "skipped", error=RuntimeError("an earlier submission failed")
                )
                continue
            if person in people or contacts & submission.contacts() or len(chosen) >= MAX_FINDBYCOMM_PER_ROUND:
                people.add(person)  # keep this person's later submissions behind this one
                continue
            chosen.append(submission)
            people.add(person)
            contacts |= submission.contacts()
        return chosen

    def _run_round(self, round_: list[Submission]) -> dict[str, Outcome]:
        try:
            plans = self._look_up(round_)
            self._read_open_leads(plans)
            return self._write(plans)
        except BitrixError as error:
            logger.warning("bitrix24 round failed", extra={"error": str(error), "submissions": len(round_)})
            return {item.submission_id: Outcome(item.submission_id, False, "failed", error=error) for item in round_}

    def _look_up(self, round_: list[Submission]) -> list[_Plan]:
        commands: dict[str, tuple[str, dict[str, Any]]] = {
            "origin": (
                "crm.lead.list",
                {
                    "filter": {"ORIGINATOR_ID": ORIGINATOR_ID, "@ORIGIN_ID": [item.submission_id for item in round_]},
                    "select": ["ID", "ORIGIN_ID"],
                },
            )
        }
        for index, item in enumerate(round_):
            if item.phone:
                commands[f"phone{index}"] = ("crm.duplicate.findbycomm", {"type": "PHONE", "values": [item.phone]})
            if item.email:
                commands[f"email{index}"] = ("crm.duplicate.findbycomm", {"type": "EMAIL", "values": [item.email]})
        found = self.bitrix.batch(commands)
        created = {row["ORIGIN_ID"]: int(row["ID"]) for row in found.get("origin") or []}
        plans = []
        for index, item in enumerate(round_):
            plan = _Plan(item)
            if item.submission_id in created:
                plan.lead_id, plan.done = created[item.submission_id], True
            else:
                plan.candidate_leads, contacts = _matches(found, f"phone{index}", f"email{index}")
                if self.person_index is not None:
                    indexed_leads, indexed_contacts = self.person_index(item)
                    plan.candidate_leads |= indexed_leads
                    contacts |= indexed_contacts
                plan.contact_id = max(contacts) if contacts else None
            plans.append(plan)
        return plans

    def _read_open_leads(self, plans: list[_Plan]) -> None:
        candidates = sorted({lead for plan in plans if not plan.done for lead in plan.candidate_leads})
        leads: dict[int, dict[str, Any]] = {}
        if candidates:
            select = ["ID", "STATUS_ID", "STATUS_SEMANTIC_ID", "PHONE", "EMAIL", self.rules.journey_field]
            commands = {
                f"leads{start}": (
                    "crm.lead.list",
                    {"filter": {"@ID": candidates[start : start + 50]}, "select": select},
                )
                for start in range(0, len(candidates), 50)
            }
            found = self.bitrix.batch(commands)
            for key in commands:
                for row in found.get(key) or []:
                    leads[int(row["ID"])] = row
        for plan in plans:
            if plan.done:
                continue
            open_leads = [lead for lead in plan.candidate_leads if _is_open(leads.get(lead))]
            if open_leads:
                plan.lead_id = max(open_leads)
                plan.lead = leads[plan.lead_id]

    def _write(self, plans: list[_Plan]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        targeted: set[int] = set()
        pending_repeats: list[_Plan] = []
        for index, plan in enumerate(plans):
            item = plan.submission
            if plan.done:
                self._record_new_lead(plan.lead_id, item)  # created earlier, its answer lost: finish the bookkeeping
                outcomes[item.submission_id] = Outcome(item.submission_id, True, "already_done", plan.lead_id)
            elif plan.repeat:
                if plan.lead_id in targeted:
                    continue  # another person's submission writes this lead in this round; wait for the next
                targeted.add(plan.lead_id)
                if self._repeat_already_applied(plan):
                    outcomes[item.submission_id] = Outcome(item.submission_id, True, "already_done", plan.lead_id)
                    continue
                commands[f"update{index}"] = ("crm.lead.update", {"id": plan.lead_id, "fields": plan.update})
                commands[f"comment{index}"] = (
                    "crm.timeline.comment.add",
                    {"fields": {"ENTITY_ID": plan.lead_id, "ENTITY_TYPE": "lead", "COMMENT": _repeat_comment(item)}},
                )
                pending_repeats.append(plan)
            else:
                commands[f"add{index}"] = (
                    "crm.lead.add",
                    {"fields": self._new_lead_fields(plan), "params": {"REGISTER_SONET_EVENT": "Y"}},
                )
        for plan in pending_repeats:
            touches = submission_touches(plan.submission, self.rules.zone, repeat=True)
            lines = {touch.touch_id: plan.line or "" for touch in touches}
            self.journeys.put(LEAD_ENTITY.format(plan.lead_id), touches, state=PENDING, lines=lines)
        written = self.bitrix.batch(commands) if commands else BatchResult({}, {}, {}, {})
        for index, plan in enumerate(plans):
            item = plan.submission
            if item.submission_id in outcomes or (plan.repeat and f"update{index}" not in commands):
                continue
            key = f"update{index}" if plan.repeat else f"add{index}"
            if key in written.errors:
                error = written.errors[key]
                outcomes[item.submission_id] = Outcome(item.submission_id, False, "failed", plan.lead_id, error)
                continue
            if plan.repeat:
                if f"comment{index}" in written.errors:  # the line is in; only the manager's notice is missing
                    logger.warning("timeline comment not added", extra={"lead_id": plan.lead_id})
                touches = submission_touches(item, self.rules.zone, repeat=True)
                self.journeys.put(LEAD_ENTITY.format(plan.lead_id), touches, state=APPLIED)
                outcomes[item.submission_id] = Outcome(item.submission_id, True, "appended", plan.lead_id)
                _log_outcome("repeat request added to lead", item, plan.lead_id)
            else:
                lead_id = int(written.results[key])
                self._record_new_lead(lead_id, item)
                outcomes[item.submission_id] = Outcome(item.submission_id, True, "created", lead_id)
                _log_outcome("lead created", item, lead_id)
        return outcomes

    # -- details --------------------------------------------------------------------------------------------------

    def _repeat_already_applied(self, plan: _Plan) -> bool:
        """Prepare a repeat request's update; True when an earlier attempt already wrote it."""
        item, lead = plan.submission, plan.lead or {}
        touch = submission_touches(item, self.rules.zone, repeat=True)[0]
        plan.line = format_line(touch, self.rules.zone)
        current = lead.get(self.rules.journey_field) or ""
        entity = LEAD_ENTITY.format(plan.lead_id)
        state = self.journeys.states([touch_key(entity, touch)]).get(touch_key(entity, touch))
        if state == APPLIED or (state == PENDING and has_line(current, plan.line)):
            if state == PENDING:
                self.journeys.put(entity, [touch], state=APPLIED)
            return True
        update: dict[str, Any] = {self.rules.journey_field: append_line(current, plan.line)}
        known_phones = {entry.get("VALUE") for entry in lead.get("PHONE") or []}
        known_emails = {str(entry.get("VALUE", "")).lower() for entry in lead.get("EMAIL") or []}
        if item.phone and item.phone not in known_phones:
            update["PHONE"] = [{"VALUE": item.phone, "VALUE_TYPE": "WORK"}]
        if item.email and item.email not in known_emails:
            update["EMAIL"] = [{"VALUE": item.email, "VALUE_TYPE": "WORK"}]
        plan.update = update
        return False

    def _new_lead_fields(self, plan: _Plan) -> dict[str, Any]:
        item = plan.submission
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
            "CONTACT_ID": plan.contact_id,
            "OPENED": "Y",
            self.rules.journey_field: format_journey(submission_touches(item, self.rules.zone), self.rules.zone),
        }
        if item.phone:
            fields["PHONE"] = [{"VALUE": item.phone, "VALUE_TYPE": "WORK"}]
        if item.email:
            fields["EMAIL"] = [{"VALUE": item.email, "VALUE_TYPE": "WORK"}]
        return {key: value for key, value in fields.items() if value not in (None, "")}

    def _record_new_lead(self, lead_id: int | None, item: Submission) -> None:
        touches = submission_touches(item, self.rules.zone)
        lines = {touch.touch_id: format_line(touch, self.rules.zone, first=i == 0) for i, touch in enumerate(touches)}
        self.journeys.put(LEAD_ENTITY.format(lead_id), touches, state=APPLIED, lines=lines)


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
