"""One conversions run: collect the range's conversions, then per platform claim, send, follow up and record.

A platform without its settings is skipped and the result says which settings are missing. Failures are per
conversion, with the platform's reason; a platform that stays unreachable after the retries leaves its conversions
``failed`` in the ledger, and the next run (hourly) sends them again — nothing is lost, nothing is sent twice.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from throughline.bitrix24 import Deadline
from throughline.config import Settings
from throughline.conversions import data_manager, metrica, vk
from throughline.conversions.collect import KINDS, QUALIFIED, WON, Conversion
from throughline.conversions.ledger import (
    ACCEPTED,
    DEAD,
    FAILED,
    MAX_ATTEMPTS,
    NO_IDENTIFIER,
    REFUSED,
    REJECTED,
    SENDING,
    SENT,
    Ledger,
    ledger_id,
)
from throughline.conversions.platforms import Item, PlatformError, Rejected, RetryableError

PLATFORMS = (metrica.PLATFORM, data_manager.PLATFORM, vk.PLATFORM)
LEDGER_EXPORT_KEY = "conversions/ledger.json.gz"  # the report's input (throughline.report.conversions)
METRICA_BATCH = 10_000  # rows per uploaded file (the documented limit is the file's size, 1 GB)
POLL_SECONDS = 20.0  # between checks of a Metrica upload within one run
POLL_BUDGET_SECONDS = 120.0  # then later runs follow it (processing takes up to two hours)
STUCK_AFTER = timedelta(days=2)  # a followed Metrica upload not finished by then is given up (rejected)
AHEAD = "its time is less than two minutes ago: a later run sends it"
FRESH = timedelta(minutes=2)  # clocks differ: a conversion younger than this may be "in the future" at a platform
NEGATIVE = "its amount is negative"
NOT_ISO = "its currency is not an ISO 4217 code"


@dataclass
class PlatformResult:
    platform: str
    skipped: str | None = None
    states: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    already_done: int = 0
    planned: list[dict[str, Any]] = field(default_factory=list)

    def count(self, state: str, reason: str | None = None, n: int = 1) -> None:
        self.states[state] += n
        if reason:
            self.reasons[reason] += n

    def summary(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped}
        out: dict[str, Any] = {"states": dict(self.states), "already_done": self.already_done}
        if self.reasons:
            out["reasons"] = dict(self.reasons.most_common(20))
        if self.planned:
            out["planned"] = len(self.planned)
        return out


@dataclass
class RunResult:
    date_from: date
    date_to: date
    conversions: list[Conversion]
    platforms: dict[str, PlatformResult]
    dry_run: bool = False

    @property
    def failures(self) -> int:
        return sum(p.states[FAILED] + p.states[DEAD] for p in self.platforms.values())

    def summary(self) -> dict[str, Any]:
        return {
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "dry_run": self.dry_run,
            "conversions": dict(Counter(c.kind for c in self.conversions)),
            "platforms": {name: result.summary() for name, result in self.platforms.items()},
        }


@dataclass
class Clients:
    metrica: metrica.MetricaClient | None = None
    google: data_manager.DataManagerClient | None = None
    vk: vk.VkTrackerClient | None = None


def goals(settings: Settings) -> dict[str, tuple[dict[str, str], str | None]]:
    """Platform → ({kind: goal}, why it is skipped). Each goal setting is ``<won goal>[,<qualified goal>]``."""

    def named(values: tuple[str, ...]) -> dict[str, str]:
        return {kind: value for kind, value in zip(KINDS, values, strict=False) if value}

    def missing(*names: str) -> str | None:
        absent = [name.upper() for name in names if not getattr(settings, name)]
        return f"missing {', '.join(absent)}" if absent else None

    return {
        metrica.PLATFORM: (named(settings.metrica_goal),
                           missing("metrica_token", "metrica_counter_id", "metrica_goal")),
        data_manager.PLATFORM: (named(settings.google_ads_conversion_action),
                                missing("google_ads_client_id", "google_ads_client_secret",
                                        "google_ads_refresh_token", "google_ads_conversion_action")),
        vk.PLATFORM: (named(settings.vk_ads_goal), missing("vk_ads_pixel_id", "vk_ads_goal")),
    }  # fmt: skip


def default_clients(settings: Settings) -> Clients:
    clients = Clients()
    found = goals(settings)
    if not found[metrica.PLATFORM][1]:
        clients.metrica = metrica.MetricaClient(
            settings.metrica_token or "", settings.metrica_counter_id or "", settings.metrica_api_url
        )
    if not found[data_manager.PLATFORM][1]:
        clients.google = data_manager.DataManagerClient(
            client_id=settings.google_ads_client_id or "",
            client_secret=settings.google_ads_client_secret or "",
            refresh_token=settings.google_ads_refresh_token or "",
            token_url=settings.google_oauth_token_url,
            api_url=settings.google_data_manager_api_url,
            login_customer_id=settings.google_ads_login_customer_id,
        )
    if not found[vk.PLATFORM][1]:
        clients.vk = vk.VkTrackerClient(settings.vk_ads_pixel_id or "", settings.vk_ads_tracker_url)
    return clients


def identifier_for(platform: str, conversion: Conversion) -> tuple[str, str] | None:
    if platform == metrica.PLATFORM:
        return metrica.identifier(conversion.identifiers)
    if platform == data_manager.PLATFORM:
        return data_manager.identifier(conversion.identifiers, conversion.contacts)
    return vk.identifier(conversion.identifiers)


def run_conversions(
    settings: Settings,
    conversions: list[Conversion],
    *,
    date_from: date,
    date_to: date,
    ledger: Ledger | None,
    clients: Clients | None = None,
    deadline: Deadline | None = None,
    dry_run: bool = False,
    validate_only: bool = False,
    now: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> RunResult:
    deadline = deadline or Deadline()
    clock = now or (lambda: datetime.now(UTC))
    dry_run = dry_run or validate_only  # validateOnly ingests nothing: nothing may be recorded as sent
    clients = clients or (Clients() if dry_run and not validate_only else default_clients(settings))
    result = RunResult(date_from, date_to, conversions, {}, dry_run)
    for platform, (platform_goals, skipped) in goals(settings).items():
        outcome = result.platforms[platform] = PlatformResult(platform, skipped)
        if skipped:
            continue
        if ledger is not None and platform == metrica.PLATFORM and not dry_run and clients.metrica:
            _follow_metrica(clients.metrica, ledger, outcome, deadline, clock())
        portal = data_manager.portal_key(settings.bitrix24_domain, settings.bitrix24_webhook_url)
        items = _claim(platform, platform_goals, conversions, ledger, outcome, dry_run, clock(), portal)
        if dry_run and validate_only and platform == data_manager.PLATFORM and clients.google and items:
            _validate_google(clients.google, [item for item, _ in items], outcome, deadline)
        if dry_run or not items:
            continue
        assert ledger is not None
        try:
            if platform == metrica.PLATFORM and clients.metrica:
                _send_metrica(clients.metrica, items, ledger, outcome, deadline, clock, sleep)
            elif platform == data_manager.PLATFORM and clients.google:
                _send_google(clients.google, items, ledger, outcome, deadline)
            elif platform == vk.PLATFORM and clients.vk:
                _send_vk(clients.vk, items, ledger, outcome, deadline)
        except (PlatformError, RetryableError) as error:  # a whole platform failed (its setup, its goal)
            for item in items:
                _fail(ledger, outcome, item, str(error))
    return result


def _claim(
    platform: str,
    platform_goals: dict[str, str],
    conversions: list[Conversion],
    ledger: Ledger | None,
    outcome: PlatformResult,
    dry_run: bool,
    now: datetime,
    portal: str = "",
) -> list[tuple[Item, int]]:
    items: list[tuple[Item, int]] = []
    for conversion in conversions:
        goal = platform_goals.get(conversion.kind)
        if goal is None:
            if conversion.kind == QUALIFIED:
                outcome.reasons["no goal for qualified conversions"] += 1
            continue
        if conversion.at > now - FRESH:
            # No platform takes a future time (Metrica refuses the whole file for one DateTime not yet reached there, an
            # eventTimestamp in the future is invalid), and the CRM's clock, ours and the platform's differ by seconds
            # or minutes. Not claimed, so a later run sends it rather than never.
            outcome.reasons[AHEAD] += 1
            continue
        found = identifier_for(platform, conversion)
        item_id = ledger_id(platform, goal, conversion.kind, conversion.entity)
        google = platform == data_manager.PLATFORM
        transaction = data_manager.transaction_id(portal, item_id) if google else None
        attributes = {
            "platform": platform, "goal": goal, "kind": conversion.kind, "entity": conversion.entity,
            "at": conversion.at.isoformat(), "amount": str(conversion.amount), "currency": conversion.currency,
            "identifier": found[0] if found else None,
        }  # fmt: skip
        attributes = {key: value for key, value in attributes.items() if value is not None}
        # No platform takes a negative value or a currency that is not an ISO code, and one such row makes Metrica
        # refuse its whole file: refused alone, with the reason.
        unsendable = NEGATIVE if conversion.amount < 0 else None
        if not re.fullmatch(r"[A-Z]{3}", conversion.currency):
            unsendable = NOT_ISO
        if dry_run:
            outcome.planned.append({**attributes, "would_send": bool(found) and not unsendable})
            if unsendable:
                outcome.count(REFUSED, unsendable)
                continue
            outcome.count("would_send" if found else NO_IDENTIFIER)
            if found:
                items.append((Item(item_id, conversion, goal, found, transaction), 0))
            continue
        assert ledger is not None
        if transaction is not None:
            claimed = ledger.claim_with_transaction(
                item_id, attributes, transaction, data_manager.legacy_transaction_id(item_id)
            )
            attempt, transaction = claimed if claimed is not None else (None, None)
        else:
            attempt = ledger.claim(item_id, attributes)
        if attempt is None:
            outcome.already_done += 1
            continue
        if unsendable:
            ledger.settle(item_id, REFUSED, reason=unsendable)
            outcome.count(REFUSED, unsendable)
            continue
        if found is None:
            ledger.settle(item_id, NO_IDENTIFIER, attempts=0)
            outcome.count(NO_IDENTIFIER)
            continue
        items.append((Item(item_id, conversion, goal, found, transaction), attempt))
    return items


def _fail(ledger: Ledger, outcome: PlatformResult, claimed: tuple[Item, int], reason: str) -> None:
    item, attempt = claimed
    state = DEAD if attempt >= MAX_ATTEMPTS else FAILED
    ledger.settle(item.ledger_id, state, reason=reason)
    outcome.count(state, reason)


def _send_metrica(
    client: metrica.MetricaClient,
    claimed: list[tuple[Item, int]],
    ledger: Ledger,
    outcome: PlatformResult,
    deadline: Deadline,
    clock: Callable[[], datetime],
    sleep: Callable[[float], None],
) -> None:
    for goal in sorted({item.goal for item, _ in claimed}):
        problem = client.check_goal(goal, deadline)
        if problem:
            for entry in [entry for entry in claimed if entry[0].goal == goal]:
                _fail(ledger, outcome, entry, problem)
            claimed = [entry for entry in claimed if entry[0].goal != goal]
    if not claimed:
        return
    days = client.join_threshold_days(deadline)
    oldest = clock() - timedelta(days=days)
    sendable = []
    for item, attempt in claimed:
        # Metrica adds a conversion to the visit it follows only while that visit is within the window (the docs:
        # the time between the user's last session and the file's processing); the visit is the touch that carried
        # the id, never later than the conversion.
        key = next(k for k, (column, _) in metrica.COLUMNS.items() if column == item.identifier[0])
        visit = item.conversion.seen_at.get(key, item.conversion.at)
        if min(visit, item.conversion.at) < oldest:
            reason = f"older than the counter's {days}-day window for joining conversions to visits"
            ledger.settle(item.ledger_id, REFUSED, reason=reason)
            outcome.count(REFUSED, reason)
        elif item.conversion.at > clock():
            reason = "its time is in the future (Metrica accepts only past DateTime)"
            ledger.settle(item.ledger_id, REFUSED, reason=reason)
            outcome.count(REFUSED, reason)
        else:
            sendable.append((item, attempt))
    uploads: dict[str, list[tuple[Item, int]]] = {}
    sendable = _already_uploaded(client, sendable, ledger, outcome, deadline, uploads)
    for column in sorted({item.identifier[0] for item, _ in sendable}):
        group = [entry for entry in sendable if entry[0].identifier[0] == column]
        for start in range(0, len(group), METRICA_BATCH):
            batch = group[start : start + METRICA_BATCH]
            # The file's comment is unique and written to its rows before it is sent: a run that dies after the
            # upload, or an answer that never comes, leaves the next run able to find the file instead of resending.
            comment = f"throughline {secrets.token_hex(8)}"
            for item, _ in batch:
                ledger.settle(item.ledger_id, SENDING, batch=comment)
            try:
                uploading = client.upload([item for item, _ in batch], deadline, comment)
            except Rejected as error:
                for item, _ in batch:
                    ledger.settle(item.ledger_id, REJECTED, reason=str(error))
                    outcome.count(REJECTED, str(error))
                continue
            except (PlatformError, RetryableError) as error:
                for entry in batch:
                    _fail(ledger, outcome, entry, str(error))
                continue
            upload_id = str(uploading["id"])
            for item, _ in batch:
                ledger.settle(item.ledger_id, SENT, upload_id=upload_id)
            uploads[upload_id] = batch
    # Follow the uploads for a while; what is still being processed is followed by the next runs.
    waited = 0.0
    while uploads and waited <= POLL_BUDGET_SECONDS and deadline.seconds_left() > POLL_SECONDS + 30:
        for upload_id in list(uploads):
            try:
                status = str(client.uploading(upload_id, deadline).get("status") or "")
            except (PlatformError, RetryableError):
                continue  # uploaded all the same: the next runs ask again (never upload it twice)
            if status not in metrica.FINAL_STATUSES:
                continue  # UPLOADED, or a status this client does not know: never final on it
            _settle_upload(ledger, outcome, [item.ledger_id for item, _ in uploads.pop(upload_id)], status)
        if uploads:
            sleep(POLL_SECONDS)
            waited += POLL_SECONDS
    for batch in uploads.values():
        outcome.count(SENT, n=len(batch))


def _already_uploaded(
    client: metrica.MetricaClient,
    sendable: list[tuple[Item, int]],
    ledger: Ledger,
    outcome: PlatformResult,
    deadline: Deadline,
    uploads: dict[str, list[tuple[Item, int]]],
) -> list[tuple[Item, int]]:
    """Conversions claimed again (a failed upload, a run that died) whose file Metrica has after all: recorded as sent
    with that upload (followed like the others) rather than uploaded twice. The rest is returned, to be uploaded."""
    batches = {}
    for item, attempt in sendable:
        if attempt > 1:
            batch = (ledger.get(item.ledger_id) or {}).get("batch")
            if batch:
                batches[item.ledger_id] = str(batch)
    if not batches:
        return sendable
    found: dict[str, str] = {}
    rest = []
    for comment in sorted(set(batches.values())):
        try:
            uploading = client.find_upload(comment, deadline)
        except (PlatformError, RetryableError) as error:
            for entry in [e for e in sendable if batches.get(e[0].ledger_id) == comment]:
                _fail(ledger, outcome, entry, f"could not check whether its earlier upload arrived: {error}")
            found[comment] = ""
            continue
        found[comment] = str(uploading["id"]) if uploading else "-"
    for entry in sendable:
        upload_id = found.get(batches.get(entry[0].ledger_id, ""), "-")
        if upload_id == "":
            continue  # failed above
        if upload_id == "-":
            rest.append(entry)
            continue
        ledger.settle(entry[0].ledger_id, SENT, upload_id=upload_id)
        uploads.setdefault(upload_id, []).append(entry)
    return rest


def _settle_upload(ledger: Ledger, outcome: PlatformResult, ids: list[str], status: str) -> None:
    for item_id in ids:
        if status in metrica.FAILED_STATUSES:
            reason = f"the upload ended {status}: Metrica could not join it to visits"
            ledger.settle(item_id, REJECTED, reason=reason)
            outcome.count(REJECTED, reason)
        else:
            ledger.settle(item_id, ACCEPTED)
            outcome.count(ACCEPTED)


def _follow_metrica(
    client: metrica.MetricaClient, ledger: Ledger, outcome: PlatformResult, deadline: Deadline, now: datetime
) -> None:
    """Uploads earlier runs left being processed: settle what Metrica has finished. Metrica says processing takes up
    to two hours; an upload still not finished ``STUCK_AFTER`` after it was sent is rejected with that reason (never
    uploaded again: Metrica may still have it), so it stops being followed and shows in the report."""
    waiting: dict[str, list[str]] = {}
    since: dict[str, datetime] = {}
    for row in ledger.items():
        if row.get("platform") == metrica.PLATFORM and row.get("state") == SENT and row.get("upload_id"):
            upload_id = str(row["upload_id"])
            waiting.setdefault(upload_id, []).append(str(row["id"]))
            try:
                sent_at = datetime.fromisoformat(str(row.get("settled_at")))
            except ValueError:
                continue
            since[upload_id] = min(since.get(upload_id, sent_at), sent_at)
    for upload_id, ids in waiting.items():
        try:
            status = str(client.uploading(upload_id, deadline).get("status") or "")
        except (PlatformError, RetryableError) as error:
            status = f"not read: {error}"
        if status in metrica.FINAL_STATUSES:
            _settle_upload(ledger, outcome, ids, status)
        elif upload_id in since and now - since[upload_id] >= STUCK_AFTER:
            reason = f"Metrica had not finished processing the upload two days after it (status {status or 'none'})"
            for item_id in ids:
                ledger.settle(item_id, REJECTED, reason=reason)
                outcome.count(REJECTED, reason)


def _send_google(
    client: data_manager.DataManagerClient,
    claimed: list[tuple[Item, int]],
    ledger: Ledger,
    outcome: PlatformResult,
    deadline: Deadline,
) -> None:
    for action in sorted({item.goal for item, _ in claimed}):
        group = [entry for entry in claimed if entry[0].goal == action]
        for start in range(0, len(group), data_manager.MAX_EVENTS):
            batch = group[start : start + data_manager.MAX_EVENTS]
            for _round in range(2):  # the rest is sent again once after per-event rejections
                try:
                    answer = client.ingest([item for item, _ in batch], action, deadline)
                except (PlatformError, RetryableError) as error:
                    for entry in batch:
                        _fail(ledger, outcome, entry, str(error))
                    break
                rejected = answer["rejected"]
                if not rejected:
                    for item, _ in batch:
                        ledger.settle(item.ledger_id, ACCEPTED, request_id=answer["request_id"] or "")
                        outcome.count(ACCEPTED)
                    break
                for index, reason in rejected.items():
                    if index < len(batch):
                        ledger.settle(batch[index][0].ledger_id, REJECTED, reason=reason)
                        outcome.count(REJECTED, reason.split(": ", 1)[-1])
                batch = [entry for index, entry in enumerate(batch) if index not in rejected]
                if not batch:
                    break
            else:
                for entry in batch:
                    _fail(ledger, outcome, entry, "rejected again after the invalid events were removed")


def _validate_google(
    client: data_manager.DataManagerClient, items: list[Item], outcome: PlatformResult, deadline: Deadline
) -> None:
    """A dry run's check at Google: ``validateOnly`` requests (nothing is ingested, nothing recorded)."""
    for action in sorted({item.goal for item in items}):
        group = [item for item in items if item.goal == action]
        for start in range(0, len(group), data_manager.MAX_EVENTS):
            batch = group[start : start + data_manager.MAX_EVENTS]
            try:
                rejected = client.ingest(batch, action, deadline, validate_only=True)["rejected"]
            except (PlatformError, RetryableError) as error:
                outcome.count("not_validated", str(error), n=len(batch))
                continue
            outcome.count("valid", n=len(batch) - len(rejected))
            for reason in rejected.values():
                outcome.count("invalid", reason.split(": ", 1)[-1])


def _send_vk(
    client: vk.VkTrackerClient,
    claimed: list[tuple[Item, int]],
    ledger: Ledger,
    outcome: PlatformResult,
    deadline: Deadline,
) -> None:
    for entry in claimed:
        item = entry[0]
        try:
            client.send(item, deadline)
        except Rejected as error:
            ledger.settle(item.ledger_id, REJECTED, reason=str(error))
            outcome.count(REJECTED, str(error))
            continue
        except (PlatformError, RetryableError) as error:
            _fail(ledger, outcome, entry, str(error))
            continue
        ledger.settle(item.ledger_id, ACCEPTED)
        outcome.count(ACCEPTED)


def export_ledger(ledger: Ledger, objects: Any) -> int:
    """Write the whole ledger as gzip JSON Lines for the report (it holds ids of deals, never a contact)."""
    from throughline.journey.export import gzip_lines

    rows = sorted(ledger.items(), key=lambda row: str(row["id"]))
    lines = [json.dumps(row, ensure_ascii=False, sort_keys=True, default=str) for row in rows]
    objects.put(LEDGER_EXPORT_KEY, gzip_lines(lines))
    return len(rows)


__all__ = ["QUALIFIED", "WON", "Clients", "RunResult", "export_ledger", "goals", "run_conversions"]


def execute(
    settings: Settings,
    *,
    date_from: date,
    date_to: date,
    dry_run: bool = False,
    deadline: Deadline | None = None,
    crm: Any = None,
    clients: Clients | None = None,
    now: Callable[[], datetime] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    retry_failed: bool = False,
    changed_since: date | None = None,
    validate_only: bool = False,
) -> RunResult:
    """The whole run from the stack's settings: the journey store, the CRM (amounts), the ledger, the platforms.
    ``retry_failed`` (the hourly run): conversions the ledger holds as failed are looked at again whatever their
    date, so an outage longer than the hourly window loses nothing."""
    from throughline.adapters.journey_store import JourneyStore
    from throughline.conversions.collect import collect_conversions

    settings.require("journey_table")
    if not dry_run:
        settings.require("conversions_table")
        if crm is None:  # the amounts: without them every deal would be sent (and recorded) at 0, never again right
            settings.require("bitrix24_webhook_url")
    if date_from > date_to:
        raise ValueError(f"date_from {date_from} is after date_to {date_to}")
    deadline = deadline or Deadline()
    clock = now or (lambda: datetime.now(UTC))
    if crm is None and settings.bitrix24_webhook_url:
        from throughline.bitrix24.portal import bitrix_client

        crm = bitrix_client(settings, deadline)  # the process's share of the portal's rate, as every other function
    ledger = None if dry_run else Ledger(settings.conversions_table or "", clock=clock)
    also: set[str] = set()
    if ledger is not None and retry_failed:
        for row in ledger.items():
            if row.get("state") == FAILED and row.get("entity") and row.get("at"):
                also.add(str(row["entity"]))
                date_from = min(date_from, datetime.fromisoformat(str(row["at"])).astimezone(settings.zone).date())
    conversions = collect_conversions(
        JourneyStore(settings.journey_table or ""),
        crm,
        also=also,
        changed_since=changed_since,
        date_from=date_from,
        date_to=date_to,
        zone=settings.zone,
        today=clock().astimezone(settings.zone).date(),
        qualified_stages=settings.conversion_qualified_stages,
        currency=settings.report_currency,
    )
    result = run_conversions(
        settings, conversions, date_from=date_from, date_to=date_to, ledger=ledger, clients=clients,
        deadline=deadline, dry_run=dry_run, validate_only=validate_only, now=clock, sleep=sleep,
    )  # fmt: skip
    if ledger is not None and settings.data_bucket:
        from throughline.adapters.report_store import S3Objects

        export_ledger(ledger, S3Objects(settings.data_bucket))
    return result
