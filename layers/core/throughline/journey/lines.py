"""The customer journey: structured touches, and the text lines of the «Путь клиента» field.

One line per touch, oldest first, in the seed's format::

    Первичный контакт: 15.01.2025 — Google — CPC — «Купить CRM систему»
    16.01.2025 — Email — Рассылка — «Преимущества Битрикс24»

Reports read the structured touches; the text is a projection for people working in Bitrix24.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from throughline.sources import CHANNEL_LABELS, SOURCE_LABELS
from throughline.text import storable

FIRST_CONTACT = "Первичный контакт: "
SEPARATOR = " — "

# What a touch was. Labels are what the journey line says when there is no campaign to name.
FIRST_VISIT = "first_visit"
FORM = "form"
REPEAT_REQUEST = "repeat_request"

_MEDIUM_LABELS = {
    "cpc": "CPC",
    "ppc": "PPC",
    "cpm": "CPM",
    "cpv": "CPV",
    "cpa": "CPA",
    "organic": "Органический поиск",
    "referral": "Переход с сайта",
    "social": "Социальные сети",
    "email": "Рассылка",
    "newsletter": "Рассылка",
    "(none)": "Прямой заход",
    "messenger": "Мессенджер",
    "display": "Медийная реклама",
}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_PART = 120
_TEXTS = ("touch_id", "kind", "channel", "source", "medium", "campaign", "content", "term", "detail")


@dataclass(frozen=True)
class Touch:
    """One interaction of a person with the business, as stored in the journey store."""

    touch_id: str
    at: datetime
    kind: str
    channel: str
    source: str
    medium: str
    campaign: str | None = None
    content: str | None = None
    term: str | None = None
    detail: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Outside text enters the journey here, whoever makes the touch (a CRM title, an activity's subject, a stage
        or source name, a form's tags): a lone surrogate (JSON's "\\ud83d", an emoji a portal cut in half) has no
        UTF-8 form, so no store, export or field could take it; it becomes U+FFFD (``throughline.text``). Every text
        is searched at once (one join, one search): a touch read from the store (``from_item``) costs little more."""
        extra = self.extra
        try:
            texts = (self.touch_id, self.kind, self.channel, self.source, self.medium, self.campaign or "",
                     self.content or "", self.term or "", self.detail or "", *extra, *extra.values())  # fmt: skip
            joined = "".join(texts)
        except TypeError:  # a value not text (an item written by hand): each one looked at below
            joined = None
        if joined is not None and storable(joined) is joined:
            return
        for name in _TEXTS:
            value = getattr(self, name)
            if isinstance(value, str) and value is not (clean := storable(value)):
                object.__setattr__(self, name, clean)
        if any(isinstance(value, str) and storable(value) is not value for value in (*extra, *extra.values())):
            object.__setattr__(self, "extra", {storable(str(key)): storable(value) if isinstance(value, str) else value
                                               for key, value in extra.items()})  # fmt: skip

    def to_item(self) -> dict[str, Any]:
        item = asdict(self)
        item["at"] = self.at.isoformat()
        return {key: value for key, value in item.items() if value not in (None, {}, "")}

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Touch:
        values = {name: item.get(name) for name in cls.__dataclass_fields__}
        values["at"] = datetime.fromisoformat(item["at"])
        values["extra"] = dict(item.get("extra") or {})
        return cls(**values)


def format_line(touch: Touch, zone: ZoneInfo, *, first: bool = False) -> str:
    """The journey line for one touch: ``DD.MM.YYYY — source — channel — campaign or detail``."""
    date = touch.at.astimezone(zone).strftime("%d.%m.%Y")
    source = _text(SOURCE_LABELS.get(touch.source, touch.source))
    medium = _MEDIUM_LABELS.get(touch.medium.lower(), touch.medium) if touch.medium else CHANNEL_LABELS[touch.channel]
    line = SEPARATOR.join(part for part in (date, source, _text(medium), _describe(touch)) if part)
    return (FIRST_CONTACT + line) if first else line


def format_journey(touches: list[Touch], zone: ZoneInfo) -> str:
    """The whole field for a new entity: the oldest touch is the first contact."""
    ordered = sorted(touches, key=lambda touch: touch.at)
    return "\n".join(format_line(touch, zone, first=index == 0) for index, touch in enumerate(ordered))


def append_line(journey_text: str | None, line: str) -> str:
    """Add a line at the end of an existing field value (which people may have edited by hand)."""
    text = (journey_text or "").rstrip("\n")
    return f"{text}\n{line}" if text else line


def has_line(journey_text: str | None, line: str) -> bool:
    """Whether the field already holds this exact line (ignoring the first-contact prefix and blanks)."""
    wanted = line.removeprefix(FIRST_CONTACT).strip()
    return any(
        existing.strip().removeprefix(FIRST_CONTACT).strip() == wanted for existing in (journey_text or "").splitlines()
    )


def _describe(touch: Touch) -> str:
    campaign = f"«{_text(touch.campaign, _MAX_PART - 2)}»" if touch.campaign else None
    detail = _text(touch.detail) if touch.detail else None
    if touch.kind == REPEAT_REQUEST:
        return "Повторное обращение" + (f": {campaign}" if campaign else (f": {detail}" if detail else ""))
    if campaign:
        return campaign
    if detail:
        return detail
    return "Первый визит" if touch.kind == FIRST_VISIT else ""


def _text(value: str, limit: int = _MAX_PART) -> str:
    """One column's text: whatever a visitor typed into a tag, it stays one line and one column."""
    text = _UNSAFE.sub(" ", value)
    text = re.sub(r"\s*—\s*", " - ", text).strip()  # a dash with spaces around it would read as a separator
    return text if len(text) <= limit else text[: limit - 1] + "…"
