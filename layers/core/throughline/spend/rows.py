"""The normalized spend row (DESIGN.md) and its storage form: one JSON line, cost as an exact decimal number."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from throughline.text import storable

Platform = Literal["yandex_direct", "google_ads", "vk_ads", "manual"]
PLATFORMS: tuple[str, ...] = ("yandex_direct", "google_ads", "vk_ads", "manual")
API_PLATFORMS: tuple[str, ...] = ("yandex_direct", "google_ads", "vk_ads")
# The Glue tables project dates from here to NOW (template.yaml): a row dated before it would be stored but never
# seen by Athena, so no importer accepts one.
EARLIEST_DATE = date(2020, 1, 1)
# Athena reads cost as decimal(18,6): at most 12 digits before the point. One bigger value fails every query.
MAX_COST = Decimal(10) ** 12


class SpendRow(BaseModel):
    """One date × platform × account × campaign (× ad group when imported at that grain)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    date: date
    platform: Platform
    account_id: str = Field(min_length=1)
    campaign_id: str = Field(min_length=1)
    campaign_name: str
    impressions: int = Field(ge=0)
    clicks: int = Field(ge=0)
    cost: Decimal = Field(ge=0, lt=MAX_COST, decimal_places=6, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    include_vat: bool
    account_timezone: str
    ingested_at: datetime
    ad_group_id: str | None = None
    ad_group_name: str | None = None
    # Manual rows keep their tags: the report matches manual spend to leads by them.
    utm_source: str | None = None
    utm_medium: str | None = None
    utm_campaign: str | None = None

    @field_validator("date")
    @classmethod
    def _queryable(cls, value: date) -> date:
        if value < EARLIEST_DATE:
            raise ValueError(f"dates before {EARLIEST_DATE} are outside the Athena tables")
        return value

    @field_validator("campaign_id", "campaign_name", "ad_group_id", "ad_group_name", "utm_source", "utm_medium",
                     "utm_campaign", "account_timezone", mode="before")  # fmt: skip
    @classmethod
    def _storable(cls, value: Any) -> Any:
        # A lone surrogate (JSON's "\\ud83d": a name cut in the middle of an emoji) has no UTF-8 form, so no line
        # could store the row (and pydantic refuses it in a constrained string): it becomes U+FFFD, as on the
        # capture path. A name is worth less than the spend it comes with.
        return storable(value) if isinstance(value, str) else value

    @field_validator("ingested_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("ingested_at must carry a time zone")
        return value.astimezone(UTC)

    def to_json_line(self) -> str:
        """One line of JSON Lines. ``cost`` is written from the Decimal's digits, never through a float."""
        parts = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None and name in _OPTIONAL:
                continue
            if name == "cost":
                text = format(value, "f")
            elif name == "date":
                text = json.dumps(value.isoformat())
            elif name == "ingested_at":
                text = json.dumps(value.isoformat(timespec="seconds").replace("+00:00", "Z"))
            else:
                text = json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)
            parts.append(f"{json.dumps(name)}:{text}")
        return "{" + ",".join(parts) + "}"

    @classmethod
    def from_json_line(cls, line: str) -> SpendRow:
        # parse_float=Decimal keeps the written digits exactly.
        return cls.model_validate(json.loads(line, parse_float=Decimal))


# Characters that some line readers (Python's str.splitlines among them) take for the end of a line, though JSON may
# carry them raw: escaped, a campaign name holding one cannot cut its JSON line in two for any reader.
_LINE_BREAKS = {ord(ch): f"\\u{ord(ch):04x}" for ch in "\x85\u2028\u2029"}
_OPTIONAL = frozenset({"ad_group_id", "ad_group_name", "utm_source", "utm_medium", "utm_campaign"})


def invalid_reason(error: ValidationError) -> str:
    """A refused row's problems in one line (``cost: Input should be greater than or equal to 0``)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in error.errors())


def now_utc() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def total_cost(rows: Iterable[SpendRow]) -> Decimal:
    return sum((row.cost for row in rows), Decimal(0))
