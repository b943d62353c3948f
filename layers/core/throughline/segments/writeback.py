"""Segments written back to Bitrix24, only where something changed, resumable across invocations.

The plan compares each customer's computed fields with what the CRM snapshot read from the portal (the snapshot
selects the segment fields): contacts get ``UF_CRM_TL_SEGMENT`` (the enumeration item's id), ``UF_CRM_TL_RFM`` and
``UF_CRM_TL_SEGMENT_SINCE``; companies the same three (when bitrix-setup has created them on companies) and
``UF_CRM_TL_COMPANY_SIZE``. Only records with a difference are in it. The plan
is saved in S3 (``segments/writeback/plan=<date>.json.gz``) with a cursor in ``segments/state.json``; each invocation
sends 50 ``crm.contact.update`` / ``crm.company.update`` commands per ``batch`` until its deadline and saves the
cursor after each batch, so the next one continues where it stopped (100 000 changed contacts: 2 000 batches, about
17 minutes at the portal's 2 requests a second — longer than one Lambda run).

Our own writes come back as ``ONCRMCONTACTUPDATE`` / company events: the journey compares a contact with its last
seen state (phones and e-mails) and adds nothing for a user-field change (``writer/crm_events.py``); the writer does
not subscribe to company events at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from throughline.bitrix24 import Bitrix24Client, BitrixAccessDenied, BitrixNotFound
from throughline.bitrix24.client import MAX_BATCH
from throughline.bitrix24.errors import BitrixTransientError
from throughline.report import jsonlines
from throughline.segments.fields import RFM_FIELD, SEGMENT_FIELD, SINCE_FIELD, SIZE_FIELD, Enumerations

UPDATE_METHODS = {"contact": "crm.contact.update", "company": "crm.company.update"}
# crm-contact-update.md: no activity-stream post, and no history entry for a nightly score (the segment's start date
# and segments/transitions/ keep the history); without them every night would add a line to thousands of cards.
UPDATE_PARAMS = {"REGISTER_SONET_EVENT": "N", "REGISTER_HISTORY_EVENT": "N"}
# Seconds kept before the deadline: one batch of 50 updates takes a few seconds on a real portal.
BATCH_MARGIN_SECONDS = 20.0


def _same_day(current: Any, wanted: str) -> bool:
    """A date field as the portal renders it (``2026-12-06T00:00:00+03:00`` or ``06.12.2026``) against YYYY-MM-DD."""
    text = str(current or "")
    if not text:
        return not wanted
    if len(text) >= 10 and text[2] == "." and text[5] == ".":
        text = f"{text[6:10]}-{text[3:5]}-{text[0:2]}"
    return text[:10] == wanted


def plan_updates(
    rows: Iterable[Mapping[str, Any]],
    current: Mapping[str, Mapping[str, Any]],
    ids: Enumerations,
) -> list[list[Any]]:
    """``[entity, id, fields]`` for each record whose portal values differ from the computed ones, in key order.

    ``current`` is the CRM snapshot's row of each customer (``contact:<id>`` / ``company:<id>``)."""
    plan: list[list[Any]] = []
    for row in rows:
        key, kind = str(row["customer"]), str(row["kind"])
        have = current.get(key)
        if have is None:
            continue  # deleted since the snapshot
        fields: dict[str, Any] = {}
        segment_ids = ids.segments if kind == "contact" else ids.company_segments
        if segment_ids is not None:
            segment_id = segment_ids.get(str(row["segment"])) if row.get("segment") else ""
            if segment_id is None and kind == "contact":
                continue  # a code with no value in the portal's list: bitrix-setup warned about it
            if segment_id is not None:  # (a company still gets its size)
                if str(have.get(SEGMENT_FIELD) or "") != segment_id:
                    fields[SEGMENT_FIELD] = segment_id
                if str(have.get(RFM_FIELD) or "") != str(row.get("rfm") or ""):
                    fields[RFM_FIELD] = str(row.get("rfm") or "")
                if not _same_day(have.get(SINCE_FIELD), str(row.get("since") or "")):
                    fields[SINCE_FIELD] = str(row.get("since") or "")
        if kind == "company":
            size_id = ids.sizes.get(str(row.get("size"))) if row.get("size") else ""
            if size_id is not None and str(have.get(SIZE_FIELD) or "") != size_id:
                fields[SIZE_FIELD] = size_id
        if fields:
            plan.append([kind, int(row["id"]), fields])
    return plan


def encode_plan(plan: list[list[Any]]) -> bytes:
    return jsonlines.encode({"entity": kind, "id": id_, "fields": fields} for kind, id_, fields in plan)


def decode_plan(body: bytes) -> list[list[Any]]:
    return [[row["entity"], int(row["id"]), row["fields"]] for row in jsonlines.decode(body)]


@dataclass
class Progress:
    position: int  # items of the plan already sent
    written: int = 0
    missing: int = 0  # deleted meanwhile
    denied: int = 0  # the webhook's user may not edit it
    failed: int = 0  # any other error (counted, not retried: the next night plans it again)
    calls: int = 0


def execute(
    client: Bitrix24Client,
    plan: list[list[Any]],
    progress: Progress,
    *,
    save: Callable[[Progress], None],
    report: Callable[[str], None] = lambda message: None,
) -> bool:
    """Send the plan from ``progress.position`` on, 50 updates per ``batch``; ``save`` after each. True when done."""
    while progress.position < len(plan):
        # 50 a batch once the portal's answers showed what an update costs; fewer before (the client's 2 s guess per
        # unknown method keeps a batch within half the portal's 60 s request limit).
        size = min(MAX_BATCH, client.batch_capacity([UPDATE_METHODS[kind] for kind in ("contact",)]))
        if client.deadline.seconds_left() < BATCH_MARGIN_SECONDS:
            report(f"segments write-back: deadline near, stopped at {progress.position} of {len(plan)}")
            return False
        chunk = plan[progress.position : progress.position + size]
        commands = {f"u{n}": (UPDATE_METHODS[kind], {"id": id_, "fields": fields, "params": UPDATE_PARAMS})
                    for n, (kind, id_, fields) in enumerate(chunk)}  # fmt: skip
        try:
            result = client.batch(commands)
        except BitrixTransientError as error:
            # The portal is busy, out of operating time or unreachable: nothing is lost, the next run resumes here.
            report(f"segments write-back: {type(error).__name__}, stopped at {progress.position} of {len(plan)}")
            return False
        finally:
            progress.calls += 1
        sent = len(chunk)
        for index, name in enumerate(commands):
            error = result.errors.get(name)
            if isinstance(error, BitrixTransientError):
                # OPERATION_TIME_LIMIT (or a limit like it) inside the batch: the commands from here on are sent
                # again by the next run (an update is idempotent, so any that did run are only repeated).
                sent = index
                break
            if error is None:
                progress.written += 1
            elif isinstance(error, BitrixNotFound):
                progress.missing += 1
            elif isinstance(error, BitrixAccessDenied):
                progress.denied += 1
            else:
                progress.failed += 1
        progress.position += sent
        save(progress)
        if sent < len(chunk):
            report(f"segments write-back: {type(error).__name__}, stopped at {progress.position} of {len(plan)}")
            return False
        if progress.calls % 20 == 0 or progress.position == len(plan):
            report(f"segments write-back: {progress.position} of {len(plan)} records sent")
    return True
