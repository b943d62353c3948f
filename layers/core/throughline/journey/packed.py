"""The packed copy of the journey export's touch parts: what the ROI report's attribution reads, without decoding two
million JSON objects a year.

Each touch part ``journeys/snapshot=<date>/part-….json.gz`` gets a twin ``journeys-packed/snapshot=<date>/<run>/
part-….bin`` holding the same lines, in the same order, as columns: per line the person (an index into the file's
list of person keys), the label (an index into its list of distinct ``(kind, entity_type, channel, source,
campaign)``), the time (microseconds since the epoch, UTC; a time without offset is UTC) and the entity id. The other
fields (``touch_id``, ``medium``, ``detail``, …) are not kept: attribution does not read them.

Layout (version 1): ``TLJP`` + version (uint16 little-endian) + zlib of: header length (uint32) + the header (JSON:
``snapshot``, ``part``, ``rows``, ``people``, ``labels``) + the columns (uint32 person, uint32 label, int64 time, int64
entity id, little-endian).

The JSON Lines parts stay the contract (Athena reads them; DESIGN.md): the packed copy lives outside the Glue table's
location, expires with the snapshots (``journeys-packed/snapshot=``, 7 days) and is named by ``journeys/latest.json``
(``"packed": {"version": 1, "parts": [...]}``, one per part, in the parts' order), written last. The run folder
``<run>`` is new each run, so a later run never rewrites a copy that the current ``latest.json`` names. A reader
falls back to the JSON parts when ``latest.json`` names no copy, another version, a missing or damaged copy, or one
whose header names a part of another file name (an unchanged bucket's copy is carried to the next snapshot by a
server-side copy: its header keeps the snapshot it was packed in). A line the format cannot hold exactly (a field of
another type, an unreadable time) makes the whole snapshot go without a packed copy (:class:`NotPackable`).
"""

from __future__ import annotations

import json
import struct
import zlib
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

PACKED_PREFIX = "journeys-packed"
VERSION = 1
MAGIC = b"TLJP"
ENTITIES_MAGIC = b"TLJE"
ENTITIES_NAME = "entities.bin"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_INT64 = 2**63
# The instants a datetime can hold in UTC (the report turns a `won` touch's time back into one): a time whose offset
# takes it past year 1 or 9999 in UTC is refused.
_MIN_MICROS = (datetime.min.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
_MAX_MICROS = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MICROSECOND
# The most a copy may unpack to: a forged or damaged one (a zlib bomb) is refused before it takes the report's memory.
# Columns are 24 bytes a line; a part holds 100 000 lines, entities.bin one line per record of the portal.
MAX_UNPACKED = 512 * 2**20
_LABEL_FIELDS = ("kind", "entity_type", "channel", "source", "campaign")


class NotPackable(ValueError):
    """A touch line the packed format cannot hold exactly: the snapshot goes without a packed copy."""


def packed_folder(snapshot: str, run: str) -> str:
    return f"{PACKED_PREFIX}/snapshot={snapshot}/{run}"


def packed_name(folder: str, part: str) -> str:
    """The packed twin of a part: its file name, ``.bin`` for ``.json.gz``, in the run's folder."""
    base = part.rsplit("/", 1)[-1]
    return f"{folder}/{base.removesuffix('.json.gz')}.bin"


class PackedWriter:
    """One part's packed copy, built line by line (``add``) as the part is written."""

    def __init__(self, snapshot: str, part: str):
        self.snapshot, self.part = snapshot, part
        self.people: dict[str | None, int] = {}
        self.labels: dict[tuple[str | None, ...], int] = {}
        self.person, self.label = array("I"), array("I")
        self.micros, self.entity = array("q"), array("q")

    def add(self, line: Mapping[str, Any]) -> None:
        get = line.get
        person = get("person_key")
        label = tuple([get(name) for name in _LABEL_FIELDS])
        entity, at = get("entity_id"), get("at")
        if not all(value is None or type(value) is str for value in (person, *label)):
            raise NotPackable("a touch's person, kind, type, channel, source or campaign is not a string")
        if type(entity) is not int or not -_INT64 <= entity < _INT64:
            raise NotPackable(f"entity_id {entity!r} is not a 64-bit integer")
        try:
            moment = datetime.fromisoformat(at)  # as the report reads it: a trailing "Z" is UTC
        except (TypeError, ValueError) as error:
            raise NotPackable(f"unreadable time {at!r}") from error
        micros = (moment - (_NAIVE_EPOCH if moment.tzinfo is None else _EPOCH)) // _MICROSECOND
        if not _MIN_MICROS <= micros <= _MAX_MICROS:
            raise NotPackable(f"time {at!r} is out of a datetime's range in UTC")
        people, labels = self.people, self.labels
        self.person.append(people.setdefault(person, len(people)))
        self.label.append(labels.setdefault(label, len(labels)))
        self.micros.append(micros)
        self.entity.append(entity)

    @property
    def nbytes(self) -> int:
        return 24 * len(self.micros)

    def to_bytes(self) -> bytes:
        header = {
            "snapshot": self.snapshot,
            "part": self.part,
            "rows": len(self.micros),
            "people": list(self.people),
            "labels": [list(label) for label in self.labels],
        }
        return _encode(MAGIC, header, [self.person, self.label, self.micros, self.entity])


def pointer(names: list[str], entities: str | None = None) -> dict[str, Any]:
    """``latest.json``'s ``packed``: the packed copies, one per part in the parts' order, and of entities.json.gz."""
    found: dict[str, Any] = {"version": VERSION, "parts": list(names)}
    if entities:
        found["entities"] = entities
    return found


def pack_entities(snapshot: str, lines: Iterable[Mapping[str, Any]]) -> bytes:
    """``entities.json.gz``'s packed copy (``entities.bin`` in the run's folder): per line the entity type (an index
    into the file's list), the id, the person (an index) and ``lead_id`` (0 for none: the report reads a missing, null
    and 0 ``lead_id`` alike). ``deleted`` and ``contact_id`` are not kept."""
    people: dict[str | None, int] = {}
    kinds: dict[str | None, int] = {}
    kind, person, entity, lead = array("I"), array("I"), array("q"), array("q")
    for line in lines:
        get = line.get
        type_, key, id_, lead_id = get("entity_type"), get("person_key"), get("entity_id"), get("lead_id")
        if not all(value is None or type(value) is str for value in (type_, key)):
            raise NotPackable("an entity's type or person is not a string")
        for number in (id_, lead_id or 0):
            if type(number) is not int or not -_INT64 <= number < _INT64:
                raise NotPackable(f"entity id {number!r} is not a 64-bit integer")
        kind.append(kinds.setdefault(type_, len(kinds)))
        person.append(people.setdefault(key, len(people)))
        entity.append(id_)
        lead.append(lead_id or 0)
    header = {"snapshot": snapshot, "rows": len(entity), "people": list(people), "kinds": list(kinds)}
    return _encode(ENTITIES_MAGIC, header, [kind, person, entity, lead])


@dataclass(frozen=True)
class PackedEntities:
    snapshot: str
    kinds: list[str | None]
    people: list[str | None]
    kind: Any  # numpy uint32 (array.array with numpy=False)
    person: Any  # numpy uint32 (array.array with numpy=False)
    entity: Any  # numpy int64
    lead: Any  # numpy int64, 0: none


def read_packed_entities(body: bytes, *, numpy: bool = True) -> PackedEntities:
    """Decode an entities copy: columns as numpy arrays, or as ``array.array`` (``numpy=False``: ``forget``)."""
    if numpy:
        header, (kind, person, entity, lead) = _decode(ENTITIES_MAGIC, body, ["<u4", "<u4", "<i8", "<i8"])
    else:
        header, (kind, person, entity, lead) = _decode_arrays(ENTITIES_MAGIC, body, "IIqq")
    try:
        kinds, people = list(header["kinds"]), list(header["people"])
    except (KeyError, TypeError) as error:
        raise NotPackable(f"a damaged packed entities copy: {error}") from error
    if len(kind) and (_largest(kind) >= len(kinds) or _largest(person) >= len(people)):
        raise NotPackable("a packed entities copy names a type or person it does not list")
    if not _strings(kinds, people):
        raise NotPackable("a packed entities copy's types or people are not what this version writes")
    return PackedEntities(str(header.get("snapshot")), kinds, people, kind, person, entity, lead)


def _largest(column: Any) -> int:
    """A column's largest value: numpy's max, or the built-in's for an ``array.array``."""
    return int(column.max()) if hasattr(column, "max") else max(column)


def _strings(*lists: Any) -> bool:
    """Every value a string or null, as the writer allows."""
    return all(value is None or type(value) is str for values in lists for value in values)


def _encode(magic: bytes, header: dict[str, Any], columns: list[array]) -> bytes:
    text = json.dumps(header).encode()  # ASCII escapes: any string the JSON lines held, even a lone surrogate
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        columns = [array(column.typecode, column) for column in columns]
        for column in columns:
            column.byteswap()
    body = struct.pack("<I", len(text)) + text + b"".join(column.tobytes() for column in columns)
    return magic + struct.pack("<H", VERSION) + zlib.compress(body, 6)


def _decode(magic: bytes, body: bytes, dtypes: list[str]) -> tuple[dict[str, Any], list[Any]]:
    """The header and the columns as numpy arrays (views of the unpacked bytes)."""
    import numpy as np

    header, data, offset, rows = _unpack(magic, body, [np.dtype(dtype).itemsize for dtype in dtypes])
    columns = []
    for dtype in dtypes:
        columns.append(np.frombuffer(data, dtype, rows, offset))
        offset += np.dtype(dtype).itemsize * rows
    return header, columns


def _decode_arrays(magic: bytes, body: bytes, typecodes: str) -> tuple[dict[str, Any], list[array]]:
    """:func:`_decode` without numpy (``forget`` runs on the core layer alone): the columns as ``array.array``."""
    widths = [array(code).itemsize for code in typecodes]
    if widths != [{"I": 4, "q": 8}[code] for code in typecodes]:  # pragma: no cover - exotic hosts
        raise NotPackable("this host's array sizes differ from the format's")
    header, data, offset, rows = _unpack(magic, body, widths)
    columns = []
    for code, width in zip(typecodes, widths, strict=True):
        column = array(code, data[offset : offset + width * rows])
        if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
            column.byteswap()
        columns.append(column)
        offset += width * rows
    return header, columns


def _unpack(magic: bytes, body: bytes, widths: list[int]) -> tuple[dict[str, Any], bytes, int, int]:
    """The header, the unpacked bytes, where the columns start and the row count (checked against the length)."""
    if body[:4] != magic or len(body) < 6:
        raise NotPackable("not a packed journey copy of this kind")
    (version,) = struct.unpack("<H", body[4:6])
    if version != VERSION:
        raise NotPackable(f"packed version {version}, this code reads {VERSION}")
    try:
        inflate = zlib.decompressobj()
        data = inflate.decompress(body[6:], MAX_UNPACKED + 1)
        if len(data) > MAX_UNPACKED:
            raise NotPackable(f"a packed copy unpacks past {MAX_UNPACKED} bytes")
        if not inflate.eof:
            raise NotPackable("a truncated packed copy")
        (size,) = struct.unpack("<I", data[:4])
        header = json.loads(data[4 : 4 + size])
        rows = int(header["rows"])
        offset = 4 + size
        if rows < 0 or len(data) != offset + sum(widths) * rows:
            raise NotPackable("a packed copy of the wrong length")
    except (zlib.error, struct.error, ValueError, KeyError, TypeError) as error:
        if isinstance(error, NotPackable):
            raise
        raise NotPackable(f"a damaged packed copy: {error}") from error
    return header, data, offset, rows


def pack_lines(snapshot: str, part: str, lines: Iterable[Mapping[str, Any]]) -> bytes:
    """A part's packed copy from its decoded lines."""
    writer = PackedWriter(snapshot, part)
    for line in lines:
        writer.add(line)
    return writer.to_bytes()


@dataclass(frozen=True)
class PackedPart:
    """A decoded packed copy: the columns as numpy arrays, the people and labels as lists."""

    snapshot: str
    part: str
    people: list[str | None]
    labels: list[tuple[str | None, ...]]
    person: Any  # numpy uint32 (array.array with numpy=False)
    label: Any  # numpy uint32
    micros: Any  # numpy int64
    entity: Any  # numpy int64

    def __len__(self) -> int:
        return len(self.micros)


def read_packed(body: bytes, *, numpy: bool = True) -> PackedPart:
    """Decode a part's packed copy; ``NotPackable`` when it is not one of this version or is damaged. The columns are
    numpy arrays, or ``array.array`` with ``numpy=False`` (``forget`` runs on the core layer, which has no numpy)."""
    if numpy:
        header, (person, label, micros, entity) = _decode(MAGIC, body, ["<u4", "<u4", "<i8", "<i8"])
    else:
        header, (person, label, micros, entity) = _decode_arrays(MAGIC, body, "IIqq")
    try:
        people, labels = list(header["people"]), [tuple(label) for label in header["labels"]]
    except (KeyError, TypeError) as error:
        raise NotPackable(f"a damaged packed part: {error}") from error
    if len(person) and (_largest(person) >= len(people) or _largest(label) >= len(labels)):
        raise NotPackable("a packed part names a person or label it does not list")
    if not all(len(fields) == len(_LABEL_FIELDS) for fields in labels) or not _strings(people, *labels):
        raise NotPackable("a packed part's people or labels are not what this version writes")
    return PackedPart(str(header.get("snapshot")), str(header.get("part")), people, labels, person, label, micros,
                      entity)  # fmt: skip


def drop_rows(body: bytes, doomed: Any) -> tuple[bytes, int]:
    """A packed copy (of a part or of entities.json.gz) without the lines ``doomed(person_key, entity_type,
    entity_id)`` names (``forget``), and how many were dropped; the same bytes when none was. Decoded without numpy
    (the core layer has none), the columns iterated in place (no list of millions of integers)."""
    if body[:4] == ENTITIES_MAGIC:
        entities = read_packed_entities(body, numpy=False)
        people, kinds = entities.people, entities.kinds
        keep = bytearray(
            not doomed(people[person], kinds[kind], entity)
            for kind, person, entity in zip(entities.kind, entities.person, entities.entity, strict=True)
        )
        if all(keep):
            return body, 0
        lines = (
            {"entity_type": kinds[kind], "entity_id": entity, "person_key": people[person], "lead_id": lead or None}
            for kind, person, entity, lead, kept in zip(entities.kind, entities.person, entities.entity, entities.lead,
                                                        keep, strict=True)
            if kept
        )  # fmt: skip
        return pack_entities(entities.snapshot, lines), keep.count(0)
    part = read_packed(body, numpy=False)
    writer = PackedWriter(part.snapshot, part.part)
    dropped = 0
    for person, label, micros, entity in zip(part.person, part.label, part.micros, part.entity, strict=True):
        key, fields = part.people[person], part.labels[label]
        if doomed(key, fields[1], entity):
            dropped += 1
            continue
        people, labels = writer.people, writer.labels
        writer.person.append(people.setdefault(key, len(people)))
        writer.label.append(labels.setdefault(fields, len(labels)))
        writer.micros.append(micros)
        writer.entity.append(entity)
    return (writer.to_bytes() if dropped else body), dropped
