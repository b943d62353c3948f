"""roi.json's ``attribution`` and ``cohorts`` sections: the journey export meets the period's won deals.

- Touches come from the journey export (``journey/export.py``): ``journeys/latest.json`` names the snapshot's parts,
  read one at a time — their packed copies (``journey/packed.py``) when it names them, else the JSON Lines. Only
  marketing touches take credit: the site's visits, forms and repeat requests, and the first touch of a record typed
  in the CRM (its source: an ad, a call, an e-mail). Activities on a record already in the sales process — our calls,
  e-mails and meetings, and the person's replies to them (incoming calls, e-mails, chats), stage moves, the win itself
  — are the sales process, not a channel, and take no credit (else last click would hand the deal to whoever phoned
  last). Direct visits stay (last non-direct needs them).
- Conversions are the period's won deals whose revenue converted into the report currency: exactly the deals behind
  the headline revenue, so every model's total equals it to the kopeck.
- A deal's person: its line in ``entities.json.gz`` (the export resolves it through the deal's lead or contact),
  else the person of the lead it came from (its ``lead_id`` there, else the CRM's ``LEAD_ID``). A deal with no known
  person converts on the one-touch path "(no touches)": its revenue is still counted.
- A conversion happens when the journey recorded the deal's ``won`` touch; without one, at the end of its
  ``CLOSEDATE`` day in the report's time zone.
- The paid rule (as in the table): ROMI of a channel under a model counts only the revenue credited to its paid
  touches: (revenue credited to touches whose channel and source carry spend in the period − the channel's spend) /
  spend × 100 %. A touch of a record typed in the CRM takes its table row's channel and source. Models run with a
  channel's paid and unpaid touches as two labels, summed back into one row per channel; the row's ``revenue`` is
  all the credit, its ``paid_revenue`` the part behind ROMI. Markov and Shapley credit a label by what removing it
  loses, so two labels of one channel on a path take more than the channel would: their rows' conversions and
  revenue come from a second run on the unsplit paths (the channel's credit does not depend on which of its sources
  carry spend), and ``paid_revenue`` is that revenue times the paid label's share of the split run's credit.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from operator import itemgetter
from typing import Any, Protocol

import numpy as np
import orjson

from throughline.attribution import (
    ALL_MODELS,
    DIRECT,
    UNTRACKED,
    CohortDeal,
    Conversion,
    PathTable,
    TouchPoint,
    acquisition_cohorts,
    build_paths,
    packed_paths,
    path_table,
)
from throughline.attribution import attribute as run_models
from throughline.journey.packed import VERSION as PACKED_VERSION
from throughline.journey.packed import NotPackable, read_packed, read_packed_entities
from throughline.report import jsonlines, metrics
from throughline.report.channels import channel_label, source_label
from throughline.report.models import AttributionRow, AttributionSection, CohortRow

LATEST_KEY = "journeys/latest.json"
SALES_CHANNEL = "crm"  # sales-side touches in the journey export: not a marketing channel
# Journey-export kinds that are marketing touches (journey/export.py lists them all); the rest are the sales process.
MARKETING_KINDS = frozenset({"first_visit", "form", "repeat_request", "crm_lead", "crm_deal"})
CRM_KINDS = frozenset({"crm_lead", "crm_deal"})  # records typed in the CRM: their channel is the report's
UNTRACKED_LABEL = "Без касаний"
SPLIT_SENSITIVE = ("markov", "shapley")  # models whose per-channel credit changes when a channel is two labels
PAID_MARK = "\x1fpaid"  # a paid touch's model label: its channel and this mark (no channel code holds \x1f)
_FIELDS = itemgetter("kind", "person_key", "channel", "at", "source", "campaign")


class Objects(Protocol):
    def get(self, key: str) -> bytes | None: ...


@dataclass(frozen=True)
class AttributionOptions:
    default_model: str = "last_click"
    half_life_days: float = 7.0
    markov_order: int = 1


@dataclass(frozen=True)
class WonDeal:
    """A won deal of the report: revenue already in the report currency."""

    deal_id: int
    lead_id: int
    closed: date
    revenue: Decimal
    customer: str = ""
    source: str = ""
    channel: str = ""


@dataclass
class Journeys:
    """The newest journey export. Touches are streamed part by part; of the entities, only the won deals' and their
    leads' lines are kept (a portal has millions of leads, a period thousands of won deals)."""

    objects: Objects
    snapshot: str
    parts: list[str]
    deal_person: dict[int, str | None] = field(default_factory=dict)
    deal_lead: dict[int, int] = field(default_factory=dict)
    lead_person: dict[int, str | None] = field(default_factory=dict)
    won_at: dict[int, datetime] = field(default_factory=dict)  # deal → its `won` touch, filled while streaming
    access_denied: int = 0  # «Access denied» answers the writers met (records the webhook's user may not see)
    streamed: bool = False  # every part read: won_at is complete
    packed: list[str] | None = None  # the parts' packed copies (journey/packed.py), one per part, when named
    packed_entities: str | None = None  # entities.json.gz's packed copy, when named
    read_from: str = "json"  # what the last read took the touches from: "packed" or "json"

    def touches(self, channel_of: Callable[[str, int], tuple[str, str] | None] | None = None) -> Iterator[TouchPoint]:
        """``channel_of(entity_type, entity_id)``: the report's (channel, source) of a record typed in the CRM; its
        ``crm_lead`` / ``crm_deal`` touch takes them, so a deal has one row in the table and in every model."""
        self.streamed = False
        # Channel, source and campaign are passed as decoded, not interned: build_paths keeps only a code per distinct
        # label, never a touch (interning them was three calls a touch for nothing).
        won_at, new, marketing, fromiso = self.won_at, tuple.__new__, MARKETING_KINDS, datetime.fromisoformat
        for key in self.parts:
            for line in _lines(self.objects.get(key)):  # the hot loop: two million touches a year
                try:  # the export writes every field: one C call picks them (a .get call each was a fifth of this)
                    kind, person, channel, at, source, campaign = _FIELDS(line)
                except KeyError:
                    get = line.get
                    kind, person, channel, at = get("kind"), get("person_key"), get("channel"), get("at")
                    source, campaign = get("source"), get("campaign")
                if kind == "won" and line.get("entity_type") == "deal":
                    moment = _at(at)
                    deal = int(line["entity_id"])
                    if deal not in won_at or moment > won_at[deal]:
                        won_at[deal] = moment
                if not person or not channel or channel == SALES_CHANNEL or kind not in marketing:
                    continue
                if channel_of is not None and kind in CRM_KINDS and str(line.get("entity_id")).isdigit():
                    row = channel_of(str(line.get("entity_type")), int(line["entity_id"]))
                    if row is not None:
                        channel, source = row
                moment = fromiso(at)  # _at, inline: a trailing "Z" reads as UTC, a time without offset is UTC
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                # TouchPoint(...) without its Python-level __new__: the same tuple
                yield new(TouchPoint, (person, moment, channel, source or "", campaign or ""))
        self.streamed = True

    def packed_touches(
        self,
        channel_of: Callable[[str, int], tuple[str, str] | None] | None,
        label: Callable[[str, str], str],
    ) -> Columns | None:
        """The marketing touches of the packed copies as columns, labelled by ``label(channel, source)`` (the same
        touches, labels and order as :meth:`touches`); ``None``, with nothing read into this object, when a copy is
        missing, damaged, of another version or another part's (the caller then reads the JSON parts)."""
        if not self.packed or len(self.packed) != len(self.parts):
            return None
        won_at: dict[int, datetime] = {}
        people: dict[str, int] = {}  # person → number, in the order of their first marketing touch
        names: dict[str, int] = {}
        chunks: list[tuple[Any, Any, Any]] = []
        marketing_kinds, crm_kinds = MARKETING_KINDS, CRM_KINDS

        def code(name: str) -> int:
            found = names.get(name)
            if found is None:
                found = names[name] = len(names)
            return found

        for part, key in zip(self.parts, self.packed, strict=True):
            body = self.objects.get(key)
            try:
                if body is None:
                    raise NotPackable(f"{key} is missing")
                touches = read_packed(body)
            except NotPackable:
                return None
            if touches.part.rsplit("/", 1)[-1] != part.rsplit("/", 1)[-1]:
                return None  # not this part's copy (a copy carried over from an earlier snapshot keeps its file name)
            labels = touches.labels
            won = np.array([kind == "won" and kind_of == "deal" for kind, kind_of, *_ in labels], dtype=bool)
            for row in np.flatnonzero(won[touches.label]).tolist():
                try:
                    moment = _EPOCH + timedelta(microseconds=int(touches.micros[row]))
                except OverflowError:  # past year 9999 (or before year 1) in UTC: no copy this code writes
                    return None
                deal = int(touches.entity[row])
                if deal not in won_at or moment > won_at[deal]:
                    won_at[deal] = moment
            counted = np.array(
                [bool(channel) and channel != SALES_CHANNEL and kind in marketing_kinds
                 for kind, _, channel, *_ in labels], dtype=bool)  # fmt: skip
            known = np.array([bool(person) for person in touches.people], dtype=bool)
            rows = np.flatnonzero(counted[touches.label] & known[touches.person])
            if not len(rows):
                continue
            row_labels = touches.label[rows]
            crm = [channel_of is not None and kind in crm_kinds for kind, *_ in labels]
            codes_of = np.array(
                [-1 if crm[index] else code(label(str(fields[2]), fields[3] or "")) if counted[index] else -1
                 for index, fields in enumerate(labels)], dtype=np.int64)  # fmt: skip
            codes = codes_of[row_labels]
            if channel_of is not None and any(crm):
                for at in np.flatnonzero(np.array(crm, dtype=bool)[row_labels]).tolist():
                    _, kind_of, channel, source, _ = labels[row_labels[at]]
                    entity = int(touches.entity[rows[at]])
                    if entity >= 0:  # str(entity_id).isdigit(), as the JSON reader asks
                        found = channel_of(str(kind_of), entity)
                        if found is not None:
                            channel, source = found
                    codes[at] = code(label(str(channel), source or ""))
            owners = touches.person[rows]
            local, first = np.unique(owners, return_index=True)
            local = local[np.argsort(first, kind="stable")]  # this part's people in the order of their first touch
            number = np.zeros(len(touches.people), dtype=np.int32)
            listed = touches.people
            number[local] = [people.setdefault(listed[owner], len(people)) for owner in local.tolist()]
            chunks.append((number[owners], touches.micros[rows], codes.astype(np.int32)))
        self.won_at.update(won_at)
        self.streamed, self.read_from = True, "packed"
        if not chunks:
            empty = np.zeros(0, dtype=np.int64)
            return Columns(list(people), empty, empty, empty, list(names))
        return Columns(
            list(people),
            np.concatenate([chunk[0] for chunk in chunks]),
            np.concatenate([chunk[1] for chunk in chunks]),
            np.concatenate([chunk[2] for chunk in chunks]),
            list(names),
        )

    def read_entities(self, won: list[WonDeal]) -> None:
        """The people of the won deals: their own lines, and the lines of the leads they came from."""
        deals = {deal.deal_id for deal in won}
        leads = {deal.lead_id for deal in won if deal.lead_id}
        if self.packed_entities and self._read_packed_entities(deals, leads):
            return
        key = f"journeys/snapshot={self.snapshot}/entities.json.gz"
        missing: set[int] = set()
        for line in jsonlines.iter_decode(self.objects.get(key) or b""):
            kind, entity_id = line.get("entity_type"), int(line["entity_id"])
            if kind == "deal" and entity_id in deals:
                self.deal_person[entity_id] = line.get("person_key")
                if line.get("lead_id"):
                    self.deal_lead[entity_id] = int(line["lead_id"])
                    if not line.get("person_key") and int(line["lead_id"]) not in leads:
                        missing.add(int(line["lead_id"]))
            elif kind == "lead" and entity_id in leads:
                self.lead_person[entity_id] = line.get("person_key")
        if missing:  # a deal linked to a lead the CRM's LEAD_ID does not name: read those leads too
            for line in jsonlines.iter_decode(self.objects.get(key) or b""):
                if line.get("entity_type") == "lead" and int(line["entity_id"]) in missing:
                    self.lead_person[int(line["entity_id"])] = line.get("person_key")

    def _read_packed_entities(self, deals: set[int], leads: set[int]) -> bool:
        """read_entities from the packed copy: the same lines taken in the same order; False (nothing read) when the
        copy is missing or not one this code reads."""
        body = self.objects.get(self.packed_entities or "")
        try:
            if body is None:
                raise NotPackable("the packed entities copy is missing")
            entities = read_packed_entities(body)
        except NotPackable:
            return False
        kinds = entities.kinds
        deal_code = kinds.index("deal") if "deal" in kinds else -1
        lead_code = kinds.index("lead") if "lead" in kinds else -1
        people, ids, leads_of, persons = entities.people, entities.entity, entities.lead, entities.person
        try:
            wanted_deals = np.fromiter(deals, dtype=np.int64, count=len(deals))
            wanted_leads = np.fromiter(leads, dtype=np.int64, count=len(leads))
        except OverflowError:  # an id past 64 bits is in no packed copy: the JSON lines say what becomes of it
            return False
        is_lead = entities.kind == lead_code
        missing: set[int] = set()
        for row in np.flatnonzero((entities.kind == deal_code) & np.isin(ids, wanted_deals)).tolist():
            deal, person, lead = int(ids[row]), people[persons[row]], int(leads_of[row])
            self.deal_person[deal] = person
            if lead:
                self.deal_lead[deal] = lead
                if not person and lead not in leads:
                    missing.add(lead)
        for row in np.flatnonzero(is_lead & np.isin(ids, wanted_leads)).tolist():
            self.lead_person[int(ids[row])] = people[persons[row]]
        if missing:  # a deal linked to a lead the CRM's LEAD_ID does not name: those leads too
            wanted = np.fromiter(missing, dtype=np.int64, count=len(missing))
            for row in np.flatnonzero(is_lead & np.isin(ids, wanted)).tolist():
                self.lead_person[int(ids[row])] = people[persons[row]]
        return True

    def person_of(self, deal: WonDeal) -> str | None:
        person = self.deal_person.get(deal.deal_id)
        if person:
            return person
        lead_id = self.deal_lead.get(deal.deal_id) or deal.lead_id
        return self.lead_person.get(lead_id) if lead_id else None


@dataclass(frozen=True)
class Columns:
    """Touches as columns (``attribution.packed_paths``'s input): person number, time in microseconds, label code."""

    people: list[str]
    person: Any
    micros: Any
    code: Any
    names: list[str]

    def __len__(self) -> int:
        return len(self.micros)


def read_journeys(objects: Objects) -> Journeys | None:
    """The export named by ``journeys/latest.json``, or ``None`` when there is none yet."""
    raw = objects.get(LATEST_KEY)
    if not raw:
        return None
    latest = json.loads(raw)
    denied = latest.get("access_denied")
    parts = list(latest.get("parts") or [])
    packed = latest.get("packed")
    named = None
    if isinstance(packed, dict) and packed.get("version") == PACKED_VERSION and isinstance(packed.get("parts"), list):
        named = [str(key) for key in packed["parts"]] if len(packed["parts"]) == len(parts) else None
    entities = packed.get("entities") if named is not None and isinstance(packed, dict) else None
    return Journeys(
        objects,
        str(latest["snapshot"]),
        parts,
        access_denied=denied if isinstance(denied, int) and denied > 0 else 0,
        packed=named,
        packed_entities=str(entities) if entities else None,
    )


def attribution_section(
    journeys: Journeys,
    won: list[WonDeal],
    spend_by_channel: Mapping[str, Decimal],
    options: AttributionOptions,
    zone: tzinfo,
    channel_of: Callable[[str, int], tuple[str, str] | None] | None = None,
    paid_sources: Collection[tuple[str, str]] = (),
) -> AttributionSection:
    """Every model over the export's paths and the period's won deals. Each model has a row for every channel it
    credits and every channel with spend (0 and −100 % when no path reached it): the rows add up to the total.
    ``paid_sources``: the (channel, source) pairs whose rows carry spend in the period (the paid rule)."""
    journeys.read_entities(won)
    counted = {"touches": 0, "without_person": 0}

    def touches() -> Iterator[TouchPoint]:
        for touch in journeys.touches(channel_of):
            counted["touches"] += 1
            yield touch

    def conversions() -> Iterator[Conversion]:
        # build_paths reads every touch before the first conversion; the parts are streamed once, never held whole,
        # and each deal's `won` moment is known by the time its conversion is asked for.
        if not journeys.streamed:
            raise RuntimeError("conversions asked for before every journey part was read")
        for deal in won:
            person = journeys.person_of(deal)
            if person is None:
                counted["without_person"] += 1
                person = f"deal#{deal.deal_id}"  # no touches: the "(no touches)" path, revenue still counted
            at = journeys.won_at.get(deal.deal_id) or _end_of_day(deal.closed, zone)
            yield Conversion(person, at, deal.revenue)

    paid = frozenset(paid_sources)

    def label(touch: TouchPoint) -> str:
        return touch.channel + PAID_MARK if (touch.channel, touch.source) in paid else touch.channel

    def label_of(channel: str, source: str) -> str:  # label(), for a touch given as its channel and source
        if channel == DIRECT or (channel, source) not in paid:
            return channel
        return channel + PAID_MARK

    columns = journeys.packed_touches(channel_of, label_of)
    if columns is not None:
        counted["touches"] = len(columns)
        table = packed_paths(columns.people, columns.person, columns.micros, columns.code, columns.names,
                             conversions())  # fmt: skip
    else:
        journeys.read_from = "json"
        table = build_paths(touches(), conversions(), by=label if paid else "channel")
    results = run_models(table, ALL_MODELS, half_life_days=options.half_life_days, markov_order=options.markov_order)
    # Markov and Shapley credit a label for what removing it loses: two labels of one channel on one path take more
    # than the channel would (a channel's credit would depend on which of its sources carry spend). Their channel
    # rows come from the unsplit paths; the split gives only the paid share of each channel's credit.
    whole_models = [model for model in SPLIT_SENSITIVE if model in results]
    whole: dict[str, Any] = {}
    if paid and whole_models:
        whole = run_models(_by_channel(table), whole_models, half_life_days=options.half_life_days,
                           markov_order=options.markov_order)  # fmt: skip
    models = {}
    for model, credits in results.items():
        credited: dict[str, list[Decimal]] = {}  # channel → [conversions, revenue, paid revenue]
        for credit in credits:
            channel, mark, _ = credit.channel.partition(PAID_MARK)
            sums = credited.setdefault(channel, [Decimal(0), Decimal(0), Decimal(0)])
            sums[0] += credit.conversions
            sums[1] += credit.revenue
            if mark:
                sums[2] += credit.revenue
        if model in whole:
            split, credited = credited, {}
            for credit in whole[model]:
                _, revenue, paid_part = split.get(credit.channel, [Decimal(0), Decimal(0), Decimal(0)])
                share = paid_part / revenue if revenue > 0 else Decimal(0)
                paid_revenue = min(credit.revenue, (credit.revenue * share).quantize(metrics.KOPECK))
                credited[credit.channel] = [credit.conversions, credit.revenue, paid_revenue]
        for channel, spent in spend_by_channel.items():
            if spent and channel not in credited:
                credited[channel] = [Decimal(0), Decimal(0), Decimal(0)]
        models[model] = [
            AttributionRow(
                channel=channel,
                channel_label=UNTRACKED_LABEL if channel == UNTRACKED else channel_label(channel),
                conversions=conversions,
                revenue=revenue,
                paid_revenue=paid_revenue,
                spend=metrics.money(spend_by_channel.get(channel, metrics.ZERO)),
                romi=_romi(paid_revenue, spend_by_channel.get(channel, metrics.ZERO)),
            )
            for channel, (conversions, revenue, paid_revenue) in sorted(credited.items())
        ]
    return AttributionSection(
        default_model=options.default_model,
        snapshot=journeys.snapshot,
        half_life_days=Decimal(str(options.half_life_days)),
        markov_order=options.markov_order,
        conversions=table.total_conversions,
        revenue=table.total_revenue,
        touches=counted["touches"],
        converting_paths=int((table.conversions > 0).sum()),
        non_converting_journeys=int(table.nulls.sum()),
        deals_without_person=counted["without_person"],
        models=models,
    )


def _by_channel(table: PathTable) -> PathTable:
    """The split table's paths with each channel's paid and unpaid labels made one again (no times: the models that
    need this table use none)."""
    rows = [
        (
            tuple(label.partition(PAID_MARK)[0] for label in path),
            Decimal(round(float(table.conversions[index]) * 10_000)) / 10_000,
            Decimal(round(float(table.revenue[index]) * 100)) / 100,
            float(table.nulls[index]),
            None,
        )
        for index, path in enumerate(table.paths)
    ]
    return path_table(rows, direct_label=table.direct_label)


def _romi(revenue: Decimal, spend: Decimal) -> Decimal | None:
    """A model's ROMI of a channel from the revenue credited to its paid touches; none without positive spend (a
    refund larger than the cost)."""
    return metrics.percent(revenue - spend, spend) if spend > 0 else None


def cohort_rows(deals: list[WonDeal], as_of: date, zone: tzinfo) -> list[CohortRow]:
    """Monthly acquisition cohorts by channel and source (``throughline.attribution.acquisition_cohorts``): Yandex
    Direct and Yandex organic are two cohorts."""
    ends: dict[date, datetime] = {}  # a year's won deals close on a few hundred days

    def end_of(day: date) -> datetime:
        found = ends.get(day)
        if found is None:
            found = ends[day] = _end_of_day(day, zone)
        return found

    cohorts = acquisition_cohorts(
        (
            CohortDeal(deal.customer, end_of(deal.closed), deal.revenue, f"{deal.channel}\t{deal.source}")
            for deal in deals
        ),
        _end_of_day(as_of, zone),
        zone,
    )
    rows = []
    for cohort in cohorts:
        channel, _, source = cohort.source.partition("\t")
        rows.append(_cohort_row(cohort, channel, source))
    return rows


def _cohort_row(cohort: Any, channel: str, source: str) -> CohortRow:
    return CohortRow(
        month=cohort.month,
        channel=channel,
        channel_label=channel_label(channel) if channel else "",
        source=source,
        source_label=source_label(source),
        customers=cohort.customers,
        repeat_customers=cohort.repeat_customers,
        repeat_rate=metrics.percent(cohort.repeat_customers, cohort.customers),
        revenue=list(cohort.revenue),
        ltv=list(cohort.ltv),
    )


def _lines(data: bytes | None) -> Iterator[dict[str, Any]]:
    """A gzip JSON Lines object decoded one line at a time: a part of 100 000 touches never becomes 100 000 dicts."""
    if data:
        for raw in io.BytesIO(gzip.decompress(data)):
            if raw.strip():
                yield orjson.loads(raw)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _end_of_day(day: date, zone: tzinfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), zone) - timedelta(microseconds=1)


def _at(text: str) -> datetime:
    moment = datetime.fromisoformat(text)  # reads a trailing "Z" as UTC (Python 3.11+)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
