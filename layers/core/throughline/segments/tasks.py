"""Bitrix24 tasks on segment moves: a move into a segment named in ``task_on_moves`` (``config/segments.yaml``; by
default to Спящий and to VIP) gives the customer's responsible manager a task, once per move.

- Who: ``ASSIGNED_BY_ID`` of the customer (the contact; the company for B2B), as the night's snapshot has it; the
  webhook's own user when the record has none.
- What: ``tasks.task.add`` with ``UF_CRM_TASK`` ``["C_<id>"]`` / ``["CO_<id>"]`` (the alerts' ``ENTITY_LINKS``), a
  Russian title and a description naming the move and why (the figures the rule looked at), a deadline
  :data:`DEADLINE_DAYS` days after the night at 18:00 in the report's zone.
- Pacing: up to 50 ``tasks.task.add`` in one ``batch`` (fewer while the client has not yet seen what the method costs,
  as the write-back does); the invocation's deadline stops the phase, and the next run continues it.
- Limit: at most ``task_limit`` (``config/segments.yaml``, 200 by default) tasks a night — an edit of the rules can
  move thousands of customers at once. The first moves in ``task_on_moves``' order of segments get them; the rest are
  counted (``over_limit``) and logged, and get no task on a later night either (their move is that night's).
- Once: each move is claimed in the alerts ledger (``ALERTS_TABLE``; rule ``segment_move``, object
  ``contact:<id>`` / ``company:<id>``, period ``<night>><segment>``) before the batch that creates its task and marked
  sent with the task's id after. A re-run of the night finds the claim or the sent record and creates nothing.
  A claim is never retaken (its lease is the ledger's whole keep time): a run killed between the batch and the
  ledger's ``mark_sent``, or a batch whose answer was lost (the portal may have created the tasks), leaves those
  moves claimed and unconfirmed — they get no second task; at worst (the request never reached the portal) a move
  gets no task at all, and the log names the moves left claimed. At most once, never twice.
- A command the portal refuses for a manager (fired, deactivated, without access to tasks) is sent once more, under
  the same claim, with the webhook's user as the responsible. A command refused for the webhook's user releases its
  claim and is counted ``failed``: a re-run of the same night tries it again; the nightly runs do not retry it in a
  loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from throughline.adapters.alert_ledger import KEEP_SECONDS, AlertLedger, Claim
from throughline.alerts.delivery import ENTITY_LINKS, record_link, webhook_user_id
from throughline.bitrix24.client import MAX_BATCH, Bitrix24Client
from throughline.bitrix24.errors import BitrixTransientError
from throughline.segments.rules import SegmentRules

RULE = "segment_move"
METHOD = "tasks.task.add"
DEADLINE_DAYS = 3  # the task is due three days after the night, at 18:00
BATCH_MARGIN_SECONDS = 30.0
KIND_LABELS = {"contact": ("Контакт", "контакта"), "company": ("Компания", "компании")}


def never_retaken(table: str, client: Any = None) -> AlertLedger:
    """The alerts ledger with a lease as long as its records live: a claim left by a crash is never retaken."""
    return AlertLedger(table, client, lease_seconds=KEEP_SECONDS)


@dataclass
class TaskCounts:
    created: int = 0
    already: int = 0  # claimed or sent before (a re-run of the night)
    failed: int = 0
    unconfirmed: int = 0  # claimed, the batch's answer lost: left claimed, never sent twice
    calls: int = 0


def moves_for_tasks(transitions: Iterable[Mapping[str, Any]], rules: SegmentRules) -> list[Mapping[str, Any]]:
    """The night's moves into a segment of ``task_on_moves`` (a first night has no moves at all), in the list's order
    of segments (then as the night recorded them): the order :func:`within_limit` keeps."""
    rank = {code: index for index, code in enumerate(rules.task_on_moves)}
    moves = [move for move in transitions if move.get("to") in rank and move.get("from") != move.get("to")]
    return sorted(moves, key=lambda move: rank[move["to"]])


def within_limit(moves: list[Mapping[str, Any]], rules: SegmentRules) -> tuple[list[Mapping[str, Any]], int]:
    """The moves that get a task tonight (the first ``task_limit``) and how many are over the limit. Deterministic:
    a re-run of the night keeps to the same moves."""
    return moves[: rules.task_limit], max(0, len(moves) - rules.task_limit)


def _user_id(value: Any) -> int:
    """A user id from the snapshot (a string of digits); anything else is no user."""
    text = str(value or "").strip()
    return int(text) if text.isdigit() else 0


def _money(value: Any, currency: str) -> str:
    amount = Decimal(str(value)).quantize(Decimal("1"))
    return f"{amount:,}".replace(",", " ") + f" {currency}"


def reason(row: Mapping[str, Any], today: date, window_days: int, currency: str) -> str:
    """Why the customer is in the segment, in the figures the rules look at."""
    parts = []
    if row.get("last_win"):
        days = (today - date.fromisoformat(str(row["last_win"]))).days
        parts.append(f"последняя покупка {days} дн. назад ({date.fromisoformat(str(row['last_win'])):%d.%m.%Y})")
    if row.get("won_in_window") is not None:
        parts.append(f"покупок за {window_days} дн.: {row['won_in_window']}")
    if row.get("average_check"):
        parts.append(f"средний чек {_money(row['average_check'], currency)}")
    if not row.get("won_total") and row.get("open_deals"):
        parts.append(f"открытых сделок: {row['open_deals']}")
    return ", ".join(parts) or "нет сделок"


def task_fields(
    move: Mapping[str, Any],
    row: Mapping[str, Any],
    rules: SegmentRules,
    *,
    today: date,
    zone: ZoneInfo,
    currency: str,
    responsible: int,
    webhook_url: str | None,
) -> dict[str, Any]:
    labels = {rule.code: rule.label for rule in rules.segments}
    kind, record_id = str(move["kind"]), int(move["id"])
    to_label = labels.get(str(move["to"]), str(move["to"]))
    from_label = labels.get(str(move.get("from")), str(move.get("from"))) if move.get("from") else "без сегмента"
    why = reason(row, today, rules.window_days, currency)
    name, genitive = KIND_LABELS[kind]
    deadline = datetime.combine(today + timedelta(days=DEADLINE_DAYS), time(18, 0), tzinfo=zone)
    description = "\n".join(
        [
            f"Клиент перешёл в сегмент «{to_label}»: {why}.",
            f"{name} {record_id}: «{from_label}» → «{to_label}», {today:%d.%m.%Y}.",
            f"Карточка {genitive}: {record_link(webhook_url, kind, record_id)}",
            "Задача поставлена Throughline по правилам config/segments.yaml (task_on_moves).",
        ]
    )
    return {
        "TITLE": f"Клиент перешёл в сегмент «{to_label}»: {name.lower()} {record_id}"[:250],
        "DESCRIPTION": description,
        "RESPONSIBLE_ID": responsible,
        "DEADLINE": deadline.isoformat(timespec="seconds"),
        "UF_CRM_TASK": [f"{ENTITY_LINKS[kind]}_{record_id}"],
    }


def create_move_tasks(
    client: Bitrix24Client,
    ledger: AlertLedger,
    moves: list[Mapping[str, Any]],
    rows: Mapping[str, Mapping[str, Any]],
    rules: SegmentRules,
    *,
    today: date,
    zone: ZoneInfo,
    currency: str,
    webhook_url: str | None,
    report: Callable[[str], None] = lambda message: None,
) -> tuple[TaskCounts, bool]:
    """Create the moves' tasks, each once; ``(counts, finished)`` — not finished when the deadline came first."""
    counts = TaskCounts()
    default_user = webhook_user_id(webhook_url)
    period = today.isoformat()
    position = 0
    while position < len(moves):
        if client.deadline.seconds_left() < BATCH_MARGIN_SECONDS:
            report(f"segments tasks: deadline near, stopped at {position} of {len(moves)}")
            return counts, False
        size = min(MAX_BATCH, client.batch_capacity([METHOD]))
        chunk = moves[position : position + size]
        position += len(chunk)
        claimed: dict[str, tuple[Claim, Mapping[str, Any], int]] = {}
        for index, move in enumerate(chunk):
            key = str(move["customer"])
            responsible = _user_id(move.get("assigned_by_id") or (rows.get(key) or {}).get("assigned_by_id"))
            responsible = responsible or (default_user or 0)
            if not responsible:
                counts.failed += 1
                report(f"segments tasks: {key} has no responsible manager and the webhook names no user")
                continue
            claim = ledger.claim(RULE, key, f"{period}>{move['to']}")
            if claim is None:
                counts.already += 1
                continue
            claimed[f"t{index}"] = (claim, move, responsible)
        while claimed:
            commands = {
                name: (METHOD, {"fields": task_fields(move, rows.get(str(move["customer"])) or {}, rules, today=today,
                                                      zone=zone, currency=currency, responsible=responsible,
                                                      webhook_url=webhook_url)})
                for name, (_, move, responsible) in claimed.items()
            }  # fmt: skip
            try:
                result = client.batch(commands)
            except BitrixTransientError as error:
                counts.calls += 1
                if getattr(error, "maybe_executed", False):
                    # The portal may have created them: the claims stay (never retaken), so no move gets two tasks.
                    counts.unconfirmed += len(claimed)
                    report(f"segments tasks: the answer was lost ({type(error).__name__}); left claimed, not re-sent: "
                           + ", ".join(str(move["customer"]) for _, move, _ in claimed.values()))  # fmt: skip
                    return counts, True
                for claim, _, _ in claimed.values():
                    ledger.release(claim)
                report(f"segments tasks: {type(error).__name__}; the next run continues")
                return counts, False
            except Exception:
                for claim, _, _ in claimed.values():
                    ledger.release(claim)
                raise
            counts.calls += 1
            again: dict[str, tuple[Claim, Mapping[str, Any], int]] = {}
            for name, (claim, move, responsible) in claimed.items():
                error = result.errors.get(name)
                if error is None:
                    task = (result.results.get(name) or {}).get("task") or {}
                    ledger.mark_sent(claim, f"task {task.get('id', '')}")
                    counts.created += 1
                elif default_user and responsible != default_user and not isinstance(error, BitrixTransientError):
                    # The manager refused (fired, deactivated, no access): the webhook's user takes the task, under
                    # the same claim, in the next batch.
                    code = f"{type(error).__name__} {getattr(error, 'code', '')}"
                    report(f"segments tasks: {move['customer']}: manager {responsible} refused ({code}); "
                           "the webhook's user takes it")  # fmt: skip
                    again[name] = (claim, move, default_user)
                else:
                    ledger.release(claim)
                    counts.failed += 1
                    report(f"segments tasks: {move['customer']}: {type(error).__name__} {getattr(error, 'code', '')}")
            claimed = again
    return counts, True
