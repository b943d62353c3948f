"""The «Путь клиента» field is a projection of the journey store: rendered from the stored touches, never appended to.

Two writers may add touches to one entity at the same moment (a form's repeat request grouped per person, a CRM event
grouped per entity). Each bumps the entity's version after storing its touches, then calls ``Projector.project``,
which renders the field from the store and writes it only while the version it rendered is still current:

1. read the version ``v`` (and ``applied``, the version the field is known to show); render all touches;
2. skip the write when ``applied >= v`` (someone already wrote this or a newer render) or the field already says it
   — but not in a second round: a writer that rendered the newer text may have recorded ``applied`` before our older
   write landed over it;
3. write the field, then read the version again: unchanged → record ``applied = v`` (a conditional update that never
   moves backwards); changed → a touch arrived meanwhile and our text may be the older one: render again.

Whichever write lands last was followed by a version check, so the field ends with every stored touch.

For the writer's repeat-request path (``writer/leads/write.py``): after its touch is stored and the version bumped
(``JourneyStore.bump_version``), call ``Projector.project(["LEAD#<id>"])`` instead of appending to the text it read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24 import Bitrix24Client, BitrixAccessDenied
from throughline.journey.lines import FIRST_CONTACT, SEPARATOR, Touch, _text, format_line

UPDATE_METHODS = {"LEAD": "crm.lead.update", "DEAL": "crm.deal.update"}
MAX_ROUNDS = 5


@dataclass
class Projection:
    entity: str
    version: int
    text: str


class Projector:
    def __init__(self, bitrix: Bitrix24Client, store: JourneyStore, field: str, zone: ZoneInfo, max_chars: int = 4000):
        self.bitrix = bitrix
        self.store = store
        self.field = field
        self.zone = zone
        self.max_chars = max_chars

    def render(self, entity: str) -> str:
        return render_journey(self.touches(entity), self.zone, self.max_chars)

    def touches(self, entity: str) -> list[Touch]:
        """The entity's own touches; for a deal those of the lead it came from (its journey before the deal); for a
        returning person's lead (and its deals) the person's earlier touches (``earlier`` in the lead's meta: their
        entities), those before the lead's own."""
        touches = {touch.touch_id: touch for touch in self.store.journey(entity)}
        meta = self.store.metas([entity]).get(entity) or {}
        lead = entity
        if entity.startswith("DEAL#") and meta.get("lead_id"):
            lead = f"LEAD#{int(meta['lead_id'])}"
            meta = self.store.metas([lead]).get(lead) or {}
            for touch in self.store.journey(lead):
                touches.setdefault(touch.touch_id, touch)
        earlier = [other for other in meta.get("earlier") or [] if other not in (entity, lead)]
        if earlier:
            own = [touch.at for touch in self.store.journey(lead)] or [touch.at for touch in touches.values()]
            before = min(own) if own else None
            for other in earlier:
                for touch in self.store.journey(other):
                    if before is None or touch.at <= before:
                        touches.setdefault(touch.touch_id, touch)
        return list(touches.values())

    def project(self, entities: Iterable[str], current: Mapping[str, str | None] | None = None) -> int:
        """Bring each entity's field up to its stored journey; returns the number of fields written.

        ``current``: field values just read from Bitrix24, where known (a field that already says it is not written).
        Raises Bitrix24 errors; the caller retries (every step is safe to repeat).
        """
        current = dict(current or {})
        pending = {entity for entity in entities if entity.split("#")[0] in UPDATE_METHODS}
        # Entities whose write may have landed after a newer one (the version moved while we wrote): whatever
        # ``applied`` says now, the field may show our older text, so they are written again.
        overwritten: set[str] = set()
        written = 0
        for _ in range(MAX_ROUNDS):
            if not pending:
                break
            versions = self.store.versions(pending)
            to_write: list[Projection] = []
            for entity in sorted(pending):
                version, applied = versions[entity]
                if entity not in current and entity not in overwritten and version and applied >= version:
                    continue
                text = self.render(entity)
                if current.get(entity) is not None and current[entity] == text:
                    if version:
                        self.store.mark_applied(entity, version)
                    continue
                to_write.append(Projection(entity, version, text))
            pending = set()
            if not to_write:
                break
            commands = {
                f"field{index}": (
                    UPDATE_METHODS[item.entity.split("#")[0]],
                    {"id": int(item.entity.split("#")[1]), "fields": {self.field: item.text}},
                )
                for index, item in enumerate(to_write)
            }
            # At most 50 commands a batch, and as many field writes as the portal's pace allows in one request (one
            # call linked to a hundred records re-renders a hundred fields).
            size = self.bitrix.batch_capacity(["crm.lead.update"])
            items = list(commands.items())
            failed = 0
            for start in range(0, len(items), size):
                result = self.bitrix.batch(dict(items[start : start + size]))
                for error in result.errors.values():
                    if "not found" in str(error).lower():
                        continue  # deleted meanwhile: nothing to show the journey in
                    if isinstance(error, BitrixAccessDenied):
                        continue  # the webhook's user may not change it (counted by the client): the store keeps it all
                    raise error
                failed += len(result.errors)
            written += len(to_write) - failed
            after = self.store.versions(item.entity for item in to_write)
            for item in to_write:
                current.pop(item.entity, None)
                if after[item.entity][0] == item.version:
                    overwritten.discard(item.entity)
                    if item.version:
                        self.store.mark_applied(item.entity, item.version)
                else:
                    pending.add(item.entity)  # a touch arrived while we wrote: our text may be the older one
                    overwritten.add(item.entity)
        return written


def render_journey(touches: list[Touch], zone: ZoneInfo, max_chars: int = 4000) -> str:
    """All touches in time order, the oldest as the first contact; folded to ``max_chars`` (see ``fold``)."""
    ordered = sorted(touches, key=_order)
    # A returning person's lead never opens with a second «Первичный контакт» (when no earlier touch is stored).
    lines = [
        render_line(touch, zone, first=index == 0 and not (touch.extra or {}).get("repeat"))
        for index, touch in enumerate(ordered)
    ]
    return fold(lines, ordered, zone, max_chars)


def render_line(touch: Touch, zone: ZoneInfo, *, first: bool = False) -> str:
    """A CRM touch carries its own labels (``label_source``, ``label_medium``); a site touch uses the seed format."""
    labels = touch.extra or {}
    if "label_source" not in labels:
        return format_line(touch, zone, first=first)
    date = touch.at.astimezone(zone).strftime("%d.%m.%Y")
    parts = (date, _text(labels["label_source"]), _text(labels.get("label_medium", "")), _text(touch.detail or ""))
    line = SEPARATOR.join(part for part in parts if part)
    return (FIRST_CONTACT + line) if first else line


def fold(lines: list[str], touches: list[Touch], zone: ZoneInfo, max_chars: int) -> str:
    """Keep the first contact and as many of the newest lines as fit; the oldest middle lines become one summary line.

    Lines too long to fit even so (a small limit, long details) are shortened with «…»; the summary never is, so it
    always says how many touches it stands for. Linear in the number of lines.
    """
    text = "\n".join(lines)
    if len(text) <= max_chars:
        return text
    if len(lines) <= 2:
        return _fit(lines, max_chars, keep=set())
    first, rest = lines[0], lines[1:]
    # Newest first: how many of the newest lines fit beside the first contact and the summary of the others?
    kept, used = 1, len(first) + 1 + len(rest[-1])
    while kept < len(rest) - 1:
        candidate = used + 1 + len(rest[-kept - 1])
        summary = _summary(touches[1 : len(touches) - kept - 1], zone)
        if candidate + 1 + len(summary) > max_chars:
            break
        kept, used = kept + 1, candidate
    summary = _summary(touches[1 : len(touches) - kept], zone)
    return _fit([first, summary, *rest[len(rest) - kept :]], max_chars, keep={1})


def _fit(lines: list[str], max_chars: int, keep: set[int]) -> str:
    """Shorten the longest lines (never those in ``keep``) to one common length, with «…», until the text fits."""

    def clipped(cap: int) -> list[str]:
        return [
            line if index in keep or len(line) <= cap else line[: cap - 1].rstrip() + "…"
            for index, line in enumerate(lines)
        ]

    low, high = 2, max((len(line) for line in lines), default=2)
    while low < high:  # the longest common length that fits
        cap = (low + high + 1) // 2
        if len("\n".join(clipped(cap))) <= max_chars:
            low = cap
        else:
            high = cap - 1
    return "\n".join(clipped(low))[:max_chars]


def _summary(folded: list[Touch], zone: ZoneInfo) -> str:
    start = folded[0].at.astimezone(zone).strftime("%d.%m.%Y")
    end = folded[-1].at.astimezone(zone).strftime("%d.%m.%Y")
    return f"… ещё {len(folded)} {_touches_word(len(folded))} с {start} по {end} (полный путь — в отчёте)"


def _touches_word(count: int) -> str:
    if count % 10 == 1 and count % 100 != 11:
        return "касание"
    if 2 <= count % 10 <= 4 and not 12 <= count % 100 <= 14:
        return "касания"
    return "касаний"


# Touches of one second: the record's creation first, then a form, then activities, then stage moves; inside one kind
# by id (an activity id, a stage-history row id), which only orders touches of the same kind.
_CREATED_KINDS = frozenset({"crm_lead", "crm_deal", "deal_created"})
_FORM_KINDS = frozenset({"first_visit", "form", "repeat_request"})
_STAGE_KINDS = frozenset({"stage", "won", "lost"})


def _rank(touch: Touch) -> int:
    if touch.kind in _CREATED_KINDS:
        return 0
    if touch.kind in _FORM_KINDS:
        return 1
    return 3 if touch.kind in _STAGE_KINDS else 2


def _order(touch: Touch) -> tuple[Any, ...]:
    seq = str((touch.extra or {}).get("seq", 0) or 0)
    # A lead's touches before its deal's (ids of the two stage histories are numbered apart).
    deal_side = 0 if touch.touch_id.startswith("lead:") else 1
    # Ties within one second by kind: the portal dates in whole seconds, a form's time (our clock) has microseconds.
    second = touch.at.replace(microsecond=0)
    return (second, _rank(touch), touch.at, deal_side, int(seq) if seq.isdigit() else 0, touch.touch_id)
