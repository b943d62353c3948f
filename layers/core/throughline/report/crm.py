"""Reading the CRM fast, and only what changed: a compact snapshot of leads, deals, contacts and companies in S3.

- The first run (and every ``REPORT_FULL_RESCAN_DAYS``) scans everything: ``>ID`` windows with ``order ID ASC`` and
  ``start=-1`` (no COUNT query, research/bitrix24.md §3), fifty list commands to a ``batch``, each command starting
  after the last ID of the one before it (``$result[lead3][49][ID]``). One REST call reads up to 2 500 records.
- Later runs read only records with ``DATE_MODIFY`` at or after the last run's start minus a safety margin (clock
  skew between us and the portal, records saved while the last run read), and merge them into the snapshot.
- Deletions come from the journey issue's ``crm/deleted/<lead|deal|contact>/<id>.json`` marks; the periodic full
  rescan catches any deletion that left no mark (companies have none: the writer does not subscribe to their events).
- Contacts and companies (the customers segments are computed for, ``throughline.segments``) are scanned the same
  way: contacts with their person keys and the segment fields Throughline writes back (so the write-back compares
  with what the portal holds), companies with ``COMPANY_TYPE``, ``EMPLOYEES`` (a list value of the portal's
  ``EMPLOYEES`` dictionary) and ``REVENUE`` (annual revenue, in the company's ``CURRENCY_ID``).
- Deals' stage history (``crm.stagehistory.list``, append-only) is read the same way after the last entry seen.
- Dictionaries (stages, currencies) ride in the first batch, so a run with nothing changed costs one REST call.

The snapshot is gzip JSON Lines in ``crm/snapshot/entity=<entity>/bucket=<id // 100 000>/part.json.gz``, so a
merge rewrites only the buckets that changed and Athena reads it through partition projection. Phones and e-mails
never enter it: only ``PERSON_KEYS``, the person keys of every phone and e-mail (duplicate detection), and
``PERSON_KEY``, the key of the first one: the person key of the journey export (``throughline.person_keys``, the one
HMAC-SHA256 with ``PERSON_KEY_SECRET`` over ``contacts``' normalized forms), so the two join.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from throughline.bitrix24.client import MAX_BATCH, PAGE_SIZE, Bitrix24Client
from throughline.contacts import InvalidContact, normalize_email, normalize_phone
from throughline.person_keys import first_contact, person_key
from throughline.report import columns, jsonlines
from throughline.text import storable, storable_values

SNAPSHOT_PREFIX = "crm/snapshot/"
STATE_KEY = SNAPSHOT_PREFIX + "state.json"
DELETED_PREFIX = "crm/deleted/"
BUCKET_SIZE = 100_000
# 2: person keys of throughline.person_keys; 3: deals' COMPANY_ID; 4: deals' ASSIGNED_BY_ID (the weekly digest's
# managers, stalled deals' recipients) on one branch, contacts and companies on another; 5: both (a stack that ran
# either version 4 rescans once to get what the other added); 6: texts storable (``_compact``: U+FFFE/FFFF, which a
# version 5 kept, become U+FFFD as in the stage dictionaries, so a bucket no change touches joins them too). A
# snapshot of another version is rescanned whole.
SNAPSHOT_VERSION = 6
ENTITIES = ("lead", "deal", "contact", "company")
CRM_MODES = {"1": "classic", "2": "simple"}  # crm.settings.mode.get
UTM = ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")
LEAD_FIELDS = ("ID", "DATE_CREATE", "DATE_MODIFY", "STATUS_ID", "STATUS_SEMANTIC_ID", "SOURCE_ID", "CONTACT_ID",
               "DATE_CLOSED", *UTM)  # fmt: skip
DEAL_FIELDS = ("ID", "DATE_CREATE", "DATE_MODIFY", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "OPPORTUNITY",
               "CURRENCY_ID", "CLOSEDATE", "LEAD_ID", "CONTACT_ID", "COMPANY_ID", "SOURCE_ID", "ASSIGNED_BY_ID",
               *UTM)  # fmt: skip
# The segment fields written back on contacts and companies (throughline.segments.writeback): read with them, so a
# night writes only where the portal's value differs.
SEGMENT_FIELDS = ("UF_CRM_TL_SEGMENT", "UF_CRM_TL_RFM", "UF_CRM_TL_SEGMENT_SINCE")
COMPANY_SEGMENT_FIELDS = ("UF_CRM_TL_COMPANY_SIZE", *SEGMENT_FIELDS)  # B2B customers carry their segment too
CONTACT_FIELDS = ("ID", "DATE_CREATE", "DATE_MODIFY", "TYPE_ID", "SOURCE_ID", "COMPANY_ID", "LEAD_ID", "ASSIGNED_BY_ID",
                  *UTM, *SEGMENT_FIELDS)  # fmt: skip
COMPANY_FIELDS = ("ID", "DATE_CREATE", "DATE_MODIFY", "COMPANY_TYPE", "EMPLOYEES", "REVENUE", "CURRENCY_ID",
                  "IS_MY_COMPANY", "ASSIGNED_BY_ID", *COMPANY_SEGMENT_FIELDS)  # fmt: skip
PERSON_FIELDS = ("PHONE", "EMAIL")  # read from leads, kept only as PERSON_KEYS
HISTORY = "deal_history"  # crm.stagehistory.list of deals (entityTypeId 2)
HISTORY_FIELDS = ("ID", "TYPE_ID", "OWNER_ID", "CREATED_TIME", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID")


class Objects(Protocol):
    """The few object-store operations the snapshot needs (S3 in ``adapters.report_store``; a dict in tests)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, body: bytes) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...


@dataclass(frozen=True)
class SnapshotOptions:
    full_rescan_days: int = 7
    modify_margin: timedelta = timedelta(hours=1)
    profit_field: str | None = None
    person_key_secret: str | None = None  # PERSON_KEY_SECRET; without it the snapshot holds no person keys
    stage_history: bool = True  # also keep deals' stage history (time in stage, where lost deals fell out)
    customers: bool = True  # also keep contacts and companies (segments)

    @classmethod
    def from_settings(cls, settings: Any) -> SnapshotOptions:
        """The nightly jobs' options (the report, segments): one snapshot, read and refreshed the same way."""
        return cls(
            full_rescan_days=settings.report_full_rescan_days,
            modify_margin=timedelta(minutes=settings.report_modify_margin_minutes),
            profit_field=settings.report_profit_field,
            person_key_secret=settings.person_key_secret,
        )


@dataclass
class CrmData:
    """Dictionaries read with the snapshot; the records themselves are streamed from it (``read_snapshot``)."""

    statuses: list[dict[str, Any]]
    currencies: list[dict[str, Any]]
    info: dict[str, int | str | None] = field(default_factory=dict)


def refresh_snapshot(
    client: Bitrix24Client,
    objects: Objects,
    *,
    options: SnapshotOptions = SnapshotOptions(),
    now: Callable[[], datetime],
    progress: Callable[[str], None] = lambda message: None,
) -> CrmData:
    """Bring the snapshot up to date with as few REST calls as possible and save it."""
    started = now()
    calls_before = client.calls
    state = json.loads(objects.get(STATE_KEY) or b"{}")
    last_full = _parse_time(state.get("last_full_scan"))
    last_run = _parse_time(state.get("last_run_started"))
    full = (
        last_full is None
        or last_run is None
        or state.get("version") != SNAPSHOT_VERSION
        or started - last_full >= timedelta(days=options.full_rescan_days)
    )
    since = None if full or last_run is None else last_run - options.modify_margin
    profit = (options.profit_field,) if options.profit_field else ()
    entities = ENTITIES if options.customers else ENTITIES[:2]
    writers = {entity: _SnapshotWriter(objects, entity, options, replace=full) for entity in entities}
    known_categories = {int(category) for category in state.get("categories") or [0]}
    categories = set(known_categories)

    def add_deals(rows: list[dict[str, Any]]) -> None:
        categories.update(int(row.get("CATEGORY_ID") or 0) for row in rows)
        writers["deal"].add(rows)

    scans = [
        _Scan("lead", "crm.lead.list", (*LEAD_FIELDS, *PERSON_FIELDS), since, sink=writers["lead"].add),
        _Scan("deal", "crm.deal.list", (*DEAL_FIELDS, *profit), since, sink=add_deals),
    ]
    if options.customers:
        scans.append(_Scan("contact", "crm.contact.list", (*CONTACT_FIELDS, *PERSON_FIELDS), since,
                           sink=writers["contact"].add))  # fmt: skip
        scans.append(_Scan("company", "crm.company.list", COMPANY_FIELDS, since, sink=writers["company"].add))
    if options.stage_history:
        # Stage history only grows: each run reads the entries after the last one it has (all of them when full).
        writers[HISTORY] = _SnapshotWriter(objects, HISTORY, options, replace=full)
        after = 0 if full else int(state.get("history_last_id") or 0)
        history = _Scan(HISTORY, "crm.stagehistory.list", HISTORY_FIELDS, sink=writers[HISTORY].add, last_id=after)
        scans.append(replace(history, extra={"entityTypeId": 2}, wrapped=True))
    # Stage dictionaries by name (an unfiltered crm.status.list stops at 50 rows): leads, every known pipeline.
    # ... and the CRM mode (1 classic, 2 simple: no leads, a deal is the request), in the same first batch.
    extra = {"currencies": ("crm.currency.list", {}), "crm_mode": ("crm.settings.mode.get", {}),
             **_stage_commands({-1, *known_categories})}  # fmt: skip
    progress("CRM: full scan" if since is None else f"CRM: changes since {since.isoformat()}")
    dictionaries = scan(client, scans, extra, progress=progress)
    new_categories = categories - known_categories
    if new_categories:  # a pipeline first seen in this run: one more call for its stages
        dictionaries.update(client.batch(_stage_commands(new_categories)).results)
    statuses = [row for name, rows in dictionaries.items() if name.startswith("stages") for row in rows or []]
    counts = {entity: writers[entity].finish(_deleted_ids(objects, entity)) for entity in entities}
    if HISTORY in writers:
        counts[HISTORY] = writers[HISTORY].finish(set())
    history_last_id = max((item.last_id_seen for item in scans if item.entity == HISTORY), default=0)
    objects.put(
        STATE_KEY,
        json.dumps(
            {
                "version": SNAPSHOT_VERSION,
                "last_run_started": started.isoformat(),
                "last_full_scan": started.isoformat() if full else state.get("last_full_scan"),
                "counts": counts,
                "history_last_id": max(history_last_id, 0 if full else int(state.get("history_last_id") or 0)),
                "categories": sorted(categories),
            }
        ).encode(),
    )
    info: dict[str, int | str | None] = {
        "mode": "full" if full else "incremental",
        "modified_since": since.isoformat() if since else None,
        "rest_calls": client.calls - calls_before,
        "leads_read": writers["lead"].read,
        "deals_read": writers["deal"].read,
        "leads": counts["lead"],
        "deals": counts["deal"],
        "stage_history_read": writers[HISTORY].read if HISTORY in writers else None,
        "contacts_read": writers["contact"].read if "contact" in writers else None,
        "companies_read": writers["company"].read if "company" in writers else None,
        "contacts": counts.get("contact"),
        "companies": counts.get("company"),
        "crm_mode": CRM_MODES.get(str(dictionaries.get("crm_mode"))),  # None when the portal did not say
    }
    progress(f"CRM: {info['rest_calls']} REST calls, {info['leads_read']} leads and {info['deals_read']} deals read")
    # Stage and currency names are the portal's text too: storable, as the records' (``_compact``) they name.
    return CrmData(storable_values(statuses), storable_values(dictionaries.get("currencies") or []), info)


# ---- the batched fast scan ----------------------------------------------------------------------------------------


@dataclass
class _Scan:
    entity: str
    method: str
    select: tuple[str, ...]
    modified_since: datetime | None = None
    sink: Callable[[list[dict[str, Any]]], None] = lambda rows: None
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. entityTypeId for crm.stagehistory.list
    wrapped: bool = False  # rows come as {"items": [...]} (crm.stagehistory.list, crm.item.list)
    last_id: int = 0
    done: bool = False
    read: int = 0
    last_id_seen: int = 0

    def params(self, after: int | str) -> dict[str, Any]:
        filter_: dict[str, Any] = {">ID": after}
        if self.modified_since is not None:
            # The documented datetime form, YYYY-MM-DDThh:mm:ss±hh:mm (api-reference/data-types.md): a run's clock
            # has microseconds a portal may not read; floored to the second the window only grows.
            filter_[">=DATE_MODIFY"] = self.modified_since.replace(microsecond=0).isoformat(timespec="seconds")
        return {**self.extra, "order": {"ID": "ASC"}, "filter": filter_, "select": list(self.select), "start": -1}

    def last_row_of(self, command: str) -> str:
        """A batch reference to the ID of the last row of an earlier command's full page."""
        return f"$result[{command}]{'[items]' if self.wrapped else ''}[{PAGE_SIZE - 1}][ID]"


def scan(
    client: Bitrix24Client,
    scans: list[_Scan],
    extra: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    *,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run every scan to its end, fifty chained list commands per ``batch``; ``extra`` commands ride in the first."""
    extra_results: dict[str, Any] = {}
    pending_extra = dict(extra or {})
    while True:
        active = [item for item in scans if not item.done]
        if not active and not pending_extra:
            return extra_results
        commands: dict[str, tuple[str, Mapping[str, Any]]] = dict(pending_extra)
        slots = MAX_BATCH - len(commands)
        shares = _shares(slots, len(active))
        for item, share in zip(active, shares, strict=True):
            for index in range(share):
                after: int | str = item.last_id if index == 0 else item.last_row_of(f"{item.entity}{index - 1}")
                commands[f"{item.entity}{index}"] = (item.method, item.params(after))
        result = client.batch(commands)
        for name in pending_extra:
            extra_results[name] = result.get(name)
        pending_extra = {}
        for item, share in zip(active, shares, strict=True):
            for index in range(share):
                # Only pages up to the first short one count: after it, a chained reference has nothing to point
                # at, and whatever those commands returned is not ours to read.
                rows = result.get(f"{item.entity}{index}") or []
                if item.wrapped:
                    rows = rows.get("items") or [] if isinstance(rows, dict) else []
                item.sink(rows)
                item.read += len(rows)
                if rows:
                    item.last_id_seen = max(item.last_id_seen, int(rows[-1]["ID"]))
                if len(rows) < PAGE_SIZE:
                    item.done = True
                    break
                item.last_id = int(rows[-1]["ID"])
            progress(f"CRM: {item.entity}s read {item.read}")


def _shares(slots: int, active: int) -> list[int]:
    if not active:
        return []
    base, rest = divmod(slots, active)
    return [base + (1 if index < rest else 0) for index in range(active)]


def _stage_commands(categories: set[int]) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """crm.status.list of lead statuses (-1) and of each deal pipeline's stages (0: DEAL_STAGE, n: DEAL_STAGE_n)."""
    commands: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for category in sorted(categories)[: MAX_BATCH - 2]:
        entity_id = "STATUS" if category < 0 else "DEAL_STAGE" if category == 0 else f"DEAL_STAGE_{category}"
        name = "stages_lead" if category < 0 else f"stages_c{category}"
        commands[name] = ("crm.status.list", {"filter": {"ENTITY_ID": entity_id}, "order": {"SORT": "ASC"}})
    return commands


# ---- the snapshot ---------------------------------------------------------------------------------------------------


def snapshot_key(entity: str, bucket: int) -> str:
    return f"{SNAPSHOT_PREFIX}entity={entity}/bucket={bucket:05d}/part.json.gz"


def read_snapshot(objects: Objects, entity: str) -> Iterator[dict[str, Any]]:
    """An entity's records as JSON rows. A record whose ID cannot be read (a hand edit) is ``columns.DamagedRow``, as
    from ``read_rows``; the stage history's entries are given as they are (the report judges each one)."""
    for key in sorted(objects.keys(f"{SNAPSHOT_PREFIX}entity={entity}/")):
        if key.endswith(".json.gz"):
            rows = jsonlines.iter_decode(objects.get(key) or b"")  # a chunk of a bucket at a time
            yield from rows if entity == HISTORY else columns.checked(key, rows)


def read_rows(objects: Objects, entity: str, profit_field: str | None = None) -> columns.Rows:
    """The report's read of leads or deals: tuples of ``columns.columns_of(entity, profit_field)``, each bucket from
    its columnar copy (``report.columns``) when that copy is current, else from the JSON bucket itself."""
    wanted = columns.columns_of(entity, profit_field)
    if wanted is None:
        raise ValueError(f"no columnar copy of {entity}")
    return columns.Rows(objects, entity, wanted, SNAPSHOT_PREFIX)


def write_snapshot(objects: Objects, entity: str, batches: Iterable[list[dict[str, Any]]],
                   options: SnapshotOptions = SnapshotOptions()) -> int:  # fmt: skip
    """Write an entity's snapshot whole from rows in ID order (batches of them), as a full scan writes it: the JSON
    buckets and their columnar copies (the report benchmark's data). Returns how many records it holds."""
    writer = _SnapshotWriter(objects, entity, options, replace=True)
    for rows in batches:
        writer.add(rows)
    return writer.finish(set())


class _SnapshotWriter:
    """Compacts rows as they arrive and writes the buckets they belong to.

    A full scan arrives in ID order, so each bucket is written as soon as the scan has passed it and memory holds one
    bucket at a time; an incremental run holds only the changed rows and rewrites only the buckets they touch.
    """

    def __init__(self, objects: Objects, entity: str, options: SnapshotOptions, *, replace: bool):
        self.objects, self.entity, self.options, self.replace = objects, entity, options, replace
        self.pending: dict[int, dict[int, dict[str, Any]]] = {}
        self.written: set[int] = set()
        self.read = 0
        self.count = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            record_id = int(row["ID"])
            self.pending.setdefault(record_id // BUCKET_SIZE, {})[record_id] = _compact(row, self.options)
            self.read += 1
        if self.replace and rows:
            passed = int(rows[-1]["ID"]) // BUCKET_SIZE
            for bucket in [bucket for bucket in self.pending if bucket < passed]:
                self._write(bucket, self.pending.pop(bucket))

    def finish(self, deleted: set[int]) -> int:
        """Write what is left, apply deletions; returns how many records the snapshot holds."""
        prefix = f"{SNAPSHOT_PREFIX}entity={self.entity}/"
        existing = {int(key.split("bucket=")[1].split("/")[0]) for key in self.objects.keys(prefix)}
        deleted_buckets = {record_id // BUCKET_SIZE for record_id in deleted}
        for bucket in sorted(existing | set(self.pending) | self.written):
            if bucket in self.written:
                continue
            changed = self.pending.pop(bucket, {})
            if self.replace:
                rows = changed
            elif changed or bucket in deleted_buckets:
                key = snapshot_key(self.entity, bucket)
                rows = {int(row["ID"]): row for row in columns.checked(key, _read_lines(self.objects.get(key) or b""))}
                rows.update(changed)
            else:
                data = self.objects.get(snapshot_key(self.entity, bucket)) or b""
                self.count += _count_lines(data)
                wanted = columns.columns_of(self.entity, self.options.profit_field)
                if wanted and not columns.matches(self.objects.get(columns.key_of(self.entity, bucket)), data, wanted):
                    # No copy yet (a stack upgraded), an older format, a crash after the bucket's write: remade here.
                    self._write_copy(bucket, _read_lines(data), data)
                continue
            self._write(bucket, {key: row for key, row in rows.items() if key not in deleted})
        return self.count

    def _write(self, bucket: int, rows: dict[int, dict[str, Any]]) -> None:
        ordered = [rows[key] for key in sorted(rows)]
        data = _write_lines(ordered)
        self.objects.put(snapshot_key(self.entity, bucket), data)
        # The bucket first, then its columnar copy naming the bucket's hash: a crash between the two leaves a copy
        # that names the old bucket, which the report then does not use (report.columns), and the next run remakes.
        self._write_copy(bucket, ordered, data)
        self.written.add(bucket)
        self.count += len(rows)

    def _write_copy(self, bucket: int, rows: list[dict[str, Any]], data: bytes) -> None:
        wanted = columns.columns_of(self.entity, self.options.profit_field)
        if wanted is None:
            return
        key = columns.key_of(self.entity, bucket)
        copy = columns.encode(self.entity, rows, wanted, data)
        if copy is not None:
            self.objects.put(key, copy)
        elif self.objects.get(key):
            # A value orjson cannot hold: the report reads that bucket's JSON. The copy of its previous version is
            # emptied (the store has no delete here), not left holding records deleted since (their person keys).
            self.objects.put(key, b"")


def _deleted_ids(objects: Objects, entity: str) -> set[int]:
    found = set()
    for key in objects.keys(f"{DELETED_PREFIX}{entity}/"):
        name = key.rsplit("/", 1)[-1].removesuffix(".json")
        if name.isdigit():
            found.add(int(name))
    return found


def _compact(row: Mapping[str, Any], options: SnapshotOptions) -> dict[str, Any]:
    """What the snapshot keeps of a record: its texts storable (a title or a tag cut in the middle of an emoji, JSON's
    "\\ud83d", has no UTF-8 form: the bucket could not be written, nor read by Athena), no phones or e-mails."""
    compact = {
        key: storable(value) if type(value) is str else storable_values(value)
        for key, value in row.items()
        if key not in PERSON_FIELDS and value not in (None, "")
    }
    if options.person_key_secret:
        phones = _normalized(row.get("PHONE"), normalize_phone)
        emails = _normalized(row.get("EMAIL"), normalize_email)
        keys = [person_key(contact, options.person_key_secret) for contact in (*phones, *emails)]
        if keys:
            compact["PERSON_KEYS"] = sorted(set(keys))
            compact["PERSON_KEY"] = person_key(first_contact(phones, emails) or "", options.person_key_secret)
    return compact


def _normalized(entries: Any, normalize: Callable[[str], str]) -> list[str]:
    """The valid values of a multi-field, normalized, in the CRM's order, without repeats (as the journey keys them)."""
    found = []
    for entry in entries or []:
        try:
            found.append(normalize(str(entry.get("VALUE") or "")))
        except InvalidContact:
            continue
    return list(dict.fromkeys(found))


def _count_lines(data: bytes) -> int:
    return gzip.decompress(data).count(b"\n") if data else 0


def _read_lines(data: bytes) -> list[dict[str, Any]]:
    return jsonlines.decode(data)


def _write_lines(rows: Iterable[Mapping[str, Any]]) -> bytes:
    return jsonlines.encode(rows)


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
