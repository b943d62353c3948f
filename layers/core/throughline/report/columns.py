"""The report's columnar copy of the CRM snapshot's leads, deals and deals' stage history: what the report reads,
cheaper to decode.

Each bucket of ``crm/snapshot/entity=<lead|deal|deal_history>/`` (gzip JSON Lines, read by Athena) gets a copy in
``crm/snapshot/columns/entity=<entity>/bucket=<id // 100 000>/part.columns.gz``, outside every Glue table's location.
It is two gzip members (``zcat`` shows both): a header line, then one JSON array per column, each holding that field of
every row of the bucket in the bucket's order::

    {"format": "throughline.crm.columns", "version": 1, "entity": "lead", "columns": ["ID", …], "rows": 2,
     "source_sha256": "<SHA-256 of the JSON bucket object it was made from>"}
    ["1","2"]
    ["2026-11-01T10:00:00+03:00","2026-11-02T12:00:00+03:00"]
    …

Values are as in the JSON rows (strings as written, ``PERSON_KEYS`` lists); a field a row lacks is ``null`` (the
report reads every field with ``.get``: missing and null are one to it; "" stays ""), except the ID (the first
column): a bucket with a row without one keeps no copy (the funnel's ``row["ID"]`` of a stage history entry without
one raises, of a null one skips it; the JSON reader gives :data:`ABSENT` for it). A lead or deal whose ID cannot be
read is :class:`DamagedRow`, from the copy and from the JSON alike. Decoding a column is one
orjson call over one array, and rows come out as tuples (``zip``): a third of the time of decoding a JSON object per
row. A copy is used only when its version is this module's, it holds every column asked for, and its
``source_sha256`` is the hash of the JSON bucket now in place: a bucket rewritten after its copy (a crash between
the two writes, an older copy, a hand edit) is read from the JSON instead, so the copy can never be staler than the
snapshot. ``report.crm._SnapshotWriter`` writes both together and remakes a copy that does not match.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson

FORMAT = "throughline.crm.columns"
VERSION = 1
PREFIX = "crm/snapshot/columns/"
UTM = ("UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")
# What the report reads of a lead and of a deal (report.build._Builder.add_leads / add_deals), in this order.
LEAD_COLUMNS = ("ID", "DATE_CREATE", "STATUS_ID", "SOURCE_ID", *UTM, "PERSON_KEYS")
DEAL_COLUMNS = ("ID", "DATE_CREATE", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "OPPORTUNITY", "CURRENCY_ID",
                "CLOSEDATE", "LEAD_ID", "CONTACT_ID", "COMPANY_ID", "SOURCE_ID", *UTM)  # fmt: skip
# What the report reads of a stage history entry (report.build: last wins, the funnel's moves), in this order.
HISTORY_COLUMNS = ("ID", "OWNER_ID", "CREATED_TIME", "STAGE_ID", "STAGE_SEMANTIC_ID")


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT = _Absent()  # a stage history entry's ID its JSON row lacks (no copy holds one): ``row["ID"]`` of it raises


class DamagedRow(ValueError):
    """A lead or deal of the CRM snapshot whose ``ID`` the report cannot read (missing, null, not a whole number: a hand
    edit): the report stops with this one error, naming the bucket's JSON object and the row's position in it (its
    n-th JSON line), whether the bucket was read from its columnar copy or from the JSON. A record without its ID
    cannot be counted or joined to its deals, and skipping it would change the report's numbers unseen (the damaged
    fields of a readable record are judged instead: no date, no amount)."""

    def __init__(self, key: str, position: int, value: Any):
        self.key, self.position = key, position
        found = "has no ID" if value is MISSING else f"has ID {repr(value)[:40]}, not a record ID"
        super().__init__(
            f"CRM snapshot {key}: row {position} {found}; correct or remove that line, or delete "
            f"crm/snapshot/state.json so that the next run scans the CRM in full and rewrites the snapshot"
        )


MISSING = object()  # a row's field it lacks (not null)


def columns_of(entity: str, profit_field: str | None = None) -> tuple[str, ...] | None:
    """The columns kept of an entity (deals: with the profit field, when one is set); None: no copy is kept."""
    if entity == "lead":
        return LEAD_COLUMNS
    if entity == "deal":
        return DEAL_COLUMNS + ((profit_field,) if profit_field and profit_field not in DEAL_COLUMNS else ())
    if entity == "deal_history":
        return HISTORY_COLUMNS
    return None


def key_of(entity: str, bucket: int) -> str:
    return f"{PREFIX}entity={entity}/bucket={bucket:05d}/part.columns.gz"


def source_hash(source: bytes) -> str:
    return hashlib.sha256(source).hexdigest()


def encode(entity: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], source: bytes) -> bytes | None:
    """The copy of a bucket whose JSON object is ``source`` and whose rows are ``rows`` (in the object's order).
    None when a value does not survive orjson (an integer past 64 bits), or a row lacks the first column (the ID: a
    copy cannot tell it from null, the report can): that bucket is then read from the JSON."""
    if columns and any(columns[0] not in row for row in rows):
        return None
    header = {"format": FORMAT, "version": VERSION, "entity": entity, "columns": list(columns), "rows": len(rows),
              "source_sha256": source_hash(source)}  # fmt: skip
    try:
        body = b"\n".join(orjson.dumps([row.get(column) for row in rows]) for column in columns)
    except (TypeError, orjson.JSONEncodeError):
        return None
    head = gzip.compress(orjson.dumps(header) + b"\n", compresslevel=6, mtime=0)
    return head + gzip.compress(body + b"\n", compresslevel=6, mtime=0)


def header(data: bytes | None) -> dict[str, Any] | None:
    """The header of a copy (only its first gzip member is inflated), or None when it is no copy of this format."""
    if not data:
        return None
    try:
        inflate = zlib.decompressobj(wbits=31)
        found = orjson.loads(inflate.decompress(data, 1 << 16))
    except (zlib.error, orjson.JSONDecodeError):
        return None
    return found if isinstance(found, dict) and found.get("format") == FORMAT else None


def matches(data: bytes | None, source: bytes, columns: Iterable[str]) -> bool:
    """Whether ``data`` is a current copy of the JSON object ``source`` holding ``columns``."""
    found = header(data)
    return (
        found is not None
        and found.get("version") == VERSION
        and found.get("source_sha256") == source_hash(source)
        and set(columns) <= set(found.get("columns") or ())
    )


def decode(data: bytes | None, source: bytes, columns: Sequence[str]) -> Iterator[tuple[Any, ...]] | None:
    """The rows of a current copy of ``source`` as tuples of ``columns``; None when it is none (read the JSON)."""
    picked = _decode_columns(data, source, columns)
    if picked is None:
        return None
    return zip(*picked, strict=True) if picked else iter(())


def _decode_columns(data: bytes | None, source: bytes, columns: Sequence[str]) -> list[list[Any]] | None:
    """The values of ``columns`` (one list each) of a current copy of ``source``; None when it is none."""
    if not data or not matches(data, source, columns):
        return None
    inflate = zlib.decompressobj(wbits=31)
    found = orjson.loads(inflate.decompress(data))
    try:
        lines = gzip.decompress(inflate.unused_data).split(b"\n")
        stored = {name: orjson.loads(line) for name, line in zip(found["columns"], lines, strict=False)}
        picked = [stored[column] for column in columns]
    except (OSError, EOFError, zlib.error, orjson.JSONDecodeError, KeyError):
        return None
    if any(not isinstance(values, list) or len(values) != found.get("rows") for values in picked):
        return None
    return picked


def readable_id(value: Any) -> bool:
    """Whether the report reads ``value`` as a record ID: ``int()`` of it, as the report does, a whole number and not
    negative. Not ``true`` (``int()`` makes it 1: another record's ID, counted twice), nor 2.5 (``int()`` cuts it to
    2), nor -2 (the builder's per-ID arrays would take it from their end: an IndexError, or another deal's slot)."""
    if type(value) is str and value.isdigit() and value.isascii():  # what Bitrix24 sends: at once
        return True
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        return False
    try:
        return int(value) >= 0
    except (TypeError, ValueError, OverflowError):
        return False


def _unreadable_id(ids: list[Any]) -> int | None:
    """The index of the first value of an ID column the report cannot read, else None. A bucket of digit strings (every
    one the snapshot's writer makes) is passed in a few C calls, not a Python call per row."""
    try:
        joined = "".join(ids)
    except TypeError:  # not all strings (a null, an integer): each one looked at
        joined = None
    if joined is not None and all(ids) and joined.isascii() and joined.isdigit():
        return None
    return next((index for index, value in enumerate(ids) if not readable_id(value)), None)


def checked(key: str, rows: Iterable[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    """The JSON rows of one lead, deal, contact or company bucket (``key``), each with an ID the report reads (as a
    copy's IDs are checked), else :class:`DamagedRow` naming the first that has none."""
    for position, row in enumerate(rows, 1):
        value = row.get("ID", MISSING)
        if not (type(value) is str and value.isdigit() and value.isascii()) and not readable_id(value):
            raise DamagedRow(key, position, value)
        yield row


def tuples(rows: Iterable[Mapping[str, Any]], columns: Sequence[str], absent: Any = None) -> Iterator[tuple[Any, ...]]:
    """JSON rows as the copy gives them: a tuple of ``columns``, None for a field a row lacks. A row without the first
    column (the ID: every row the snapshot's writer keeps has one) is no record: ``KeyError``, as ``row["ID"]``;
    with ``absent`` (the stage history: :data:`ABSENT`), that value in its place instead, for the reader to judge."""
    first = columns[0] if columns else None
    rest = columns[1:]
    for row in rows:
        if first is not None and first not in row:
            if absent is None:
                raise KeyError(first)
            yield (absent, *map(row.get, rest))
        else:
            yield tuple(map(row.get, columns))


class Rows:
    """The rows of one entity of the snapshot as tuples of ``columns``: each bucket from its copy when that is current,
    else from its JSON object (``from_copy`` and ``from_json`` count the buckets read each way, last pass)."""

    def __init__(self, objects: Any, entity: str, columns: Sequence[str], snapshot_prefix: str):
        self.objects, self.entity, self.columns = objects, entity, tuple(columns)
        self.snapshot_prefix = snapshot_prefix
        # The stage history's entries without an ID are no error to the report (it skips what it cannot read).
        self.absent = ABSENT if entity == "deal_history" else None
        self.from_copy = 0
        self.from_json = 0

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        from throughline.report import jsonlines  # orjson too; imported with the reader, not with the format

        self.from_copy = self.from_json = 0
        for key in sorted(self.objects.keys(f"{self.snapshot_prefix}entity={self.entity}/")):
            if not key.endswith(".json.gz"):
                continue
            source = self.objects.get(key) or b""
            bucket = _bucket_of(key)
            picked = None if bucket is None else _decode_columns(self.objects.get(key_of(self.entity, bucket)), source,
                                                                 self.columns)  # fmt: skip
            if picked is not None:
                self.from_copy += 1
                if self.absent is None and picked:
                    position = _unreadable_id(picked[0])
                    if position is not None:
                        raise DamagedRow(key, position + 1, picked[0][position])
                yield from zip(*picked, strict=True) if picked else iter(())
            elif self.absent is None:
                self.from_json += 1
                yield from tuples(checked(key, jsonlines.iter_decode(source)), self.columns)
            else:
                self.from_json += 1
                yield from tuples(jsonlines.iter_decode(source), self.columns, self.absent)


def _bucket_of(key: str) -> int | None:
    text = key.partition("bucket=")[2].partition("/")[0]
    return int(text) if text.isdigit() else None
