"""Writing one round: ``crm.lead.add`` for new people (in simple CRM mode a contact, then a deal), ``crm.lead.update``
(``crm.deal.update``) for repeat requests, and the journey store's bookkeeping of each. A repeat line is noted
``PENDING`` with the count of equal lines before its write, so a retry after a lost answer tells whether it landed."""

from __future__ import annotations

from typing import Any

from throughline.adapters.journey_store import APPLIED, PENDING, JourneyStore, touch_key
from throughline.bitrix24 import BatchResult, Bitrix24Client, BitrixUnavailable
from throughline.capture.submissions import Submission
from throughline.contacts import mask_email, mask_phone
from throughline.journey.lines import FIRST_CONTACT, append_line
from throughline.observability import logger
from throughline.writer.leads.comments import add_comments
from throughline.writer.leads.fields import LeadRules, contact_details
from throughline.writer.leads.model import SIMPLE, Outcome, Plan, Prepared, entity_of, to_int, write_failed


class RoundWrite:
    """The writes of one round. ``sent`` turns true once a write request has left: from then on an error leaves
    the round's outcome in doubt."""

    def __init__(
        self, bitrix: Bitrix24Client, journeys: JourneyStore, rules: LeadRules, mode: int, settle_seconds: float
    ):
        self.bitrix = bitrix
        self.journeys = journeys
        self.rules = rules
        self.mode = mode
        self.settle_seconds = settle_seconds
        self.sent = False

    def write(self, plans: list[Plan]) -> dict[str, Outcome]:
        entity, prefix = entity_of(self.mode)
        outcomes: dict[str, Outcome] = {}
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        targeted: set[int] = set()
        comments: list[tuple[Plan, str]] = []
        pending_repeats: list[Plan] = []
        if self.mode == SIMPLE:
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
                outcomes[item.submission_id] = write_failed(
                    item.submission_id, written.errors[key], plan.entity_id, self.settle_seconds
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
        unsent = add_comments(self.bitrix, comments, entity, self._comment_sent)
        for submission_id, error in unsent.items():
            # Its line is in but its notice surely never ran: the message comes back, and the retry finds the line
            # applied and sends only the notice.
            entity_id = outcomes[submission_id].lead_id if submission_id in outcomes else None
            outcomes[submission_id] = Outcome(submission_id, False, "failed", entity_id, error)
        for outcome in outcomes.values():
            if outcome.lead_id is not None:
                outcome.entity = prefix.format(outcome.lead_id)  # a deal's number may also be some lead's number
        return outcomes

    def _add_contacts(self, plans: list[Plan]) -> dict[str, Outcome]:
        """Simple mode: the contacts of new people who have none yet, before their deals. Returns the failures: a
        contact add that may have run is in doubt (the retry's look-up finds the contact by its phone or e-mail)."""
        new = {f"contact{index}": plan for index, plan in enumerate(plans) if not plan.contact_id}
        commands = {key: ("crm.contact.add", {"fields": plan.item.contact_fields}) for key, plan in new.items()}
        written = self._send(commands)
        failures: dict[str, Outcome] = {}
        for key, plan in new.items():
            submission_id = plan.item.submission_id
            contact_id = to_int(written.results.get(key)) if key not in written.errors else None
            if contact_id:
                plan.contact_id = contact_id
                continue
            error = written.errors.get(key) or BitrixUnavailable("NO_RESULT", "the batch gave no contact id", None)
            logger.warning("contact not created", extra={"submission_id": submission_id, "error": str(error)})
            failures[submission_id] = write_failed(submission_id, error, None, self.settle_seconds)
        return failures

    def _send(self, commands: dict[str, tuple[str, dict[str, Any]]]) -> BatchResult:
        if not commands:
            return BatchResult({}, {}, {}, {})
        self.sent = True  # from here on, an error leaves the outcome in doubt
        return self.bitrix.batch(commands)

    def _repeat_state(self, plan: Plan, prefix: str) -> dict[str, Any] | None:
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
        details = contact_details(item.submission, known_phones, known_emails)
        if self.mode == SIMPLE:
            plan.contact_update = details
        else:
            plan.update |= details
        return None

    def _comment_sent(self, plan: Plan, prefix: str) -> None:
        self._mark_repeat(plan, prefix, APPLIED, comment="sent")

    def _mark_repeat(self, plan: Plan, prefix: str, state: str, **attributes: Any) -> None:
        touch = plan.item.repeat_touch
        self.journeys.put(
            prefix.format(plan.entity_id),
            [touch],
            state=state,
            lines={touch.touch_id: plan.item.repeat_line},
            **attributes,
        )

    def _record_new(self, entity: str, item: Prepared) -> None:
        self.journeys.put(entity, item.touches, state=APPLIED, lines=item.lines)


def count_line(journey_text: str | None, line: str) -> int:
    """How many lines of the field read as ``line`` (ignoring the first-contact prefix and blanks)."""
    wanted = line.removeprefix(FIRST_CONTACT).strip()
    return sum(
        existing.strip().removeprefix(FIRST_CONTACT).strip() == wanted for existing in (journey_text or "").splitlines()
    )


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
