"""Segment rules users edit: ``config/segments.yaml`` in the data bucket, validated by pydantic.

``bitrix-setup`` writes :data:`DEFAULT_RULES_YAML` there when the file is absent (never over an edited one). A rule
is a set of conditions, all of which must hold; the rules are tried in their order and a customer takes the first
that matches (none: no segment). Every condition is optional:

- ``won_in_window``: won deals at most ``window_days`` days old (0 today … 365), ``{min, max}``;
- ``won_total``: won deals ever, ``{min, max}``; ``deals_total``: deals in any stage, ``{min, max}``;
- ``open_deals``: deals in progress (``STAGE_SEMANTIC_ID`` P), ``{min, max}``;
- ``days_since_last_win``: days from the last won deal's day to today, ``{min, max}`` (inclusive);
- ``days_since_first_contact``: days from the customer's creation in the CRM to today, ``{min, max}``;
- ``average_check_percentile``: the customer's average check over won deals in the window is at or above this
  percentile (nearest rank) of the average checks of every customer with a won deal in the window. With
  ``freeze: month`` the threshold is computed on the first night of a calendar month and kept for that month, and a
  customer who entered the segment keeps it until that monthly review: the segment does not flip night to night.

RFM scores (1–5, quintiles by mid-rank among customers with a won deal: recency of the last win, number of won deals,
their revenue) are stored beside the segment. Company size (B2B) comes from ``EMPLOYEES`` (the portal's own list
values, mapped to the seed's bounds here) and ``REVENUE`` (annual, in the report currency); the larger wins.
"""

from __future__ import annotations

import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CONFIG_KEY = "config/segments.yaml"
SIZES = ("small", "medium", "large")
SIZE_LABELS = {"small": "Малый бизнес", "medium": "Средний бизнес", "large": "Крупный бизнес"}

DEFAULT_RULES_YAML = """\
# Throughline customer segments (python -m throughline segments; nightly build_segments).
# Written by `python -m throughline bitrix-setup` when absent; edit freely, it is never overwritten.
# Rules are tried in order; a customer (a contact; a company for deals with a company) takes the first that matches.
# Conditions (all optional, all must hold), each {min: N, max: N} inclusive:
#   won_in_window            won deals at most window_days days old (today is 0 days)
#   won_total                won deals ever
#   deals_total              deals in any stage
#   open_deals               deals in progress
#   days_since_last_win      days since the last won deal's day
#   days_since_first_contact days since the customer was created in the CRM
# average_check_percentile: N - the average check over won deals in the window is at or above the N-th percentile
#   (nearest rank) of all customers with a won deal in the window; freeze: month keeps the threshold and the
#   segment's members for the calendar month (no nightly flips).
# code is the enumeration value's XML_ID in Bitrix24 (UF_CRM_TL_SEGMENT); label is what managers see.
window_days: 365
segments:
  - code: VIP
    label: VIP
    won_in_window: {min: 2}
    days_since_last_win: {max: 182}
    average_check_percentile: 80
    freeze: month
  - code: SLEEPING
    label: Спящий
    days_since_last_win: {min: 183, max: 365}
  - code: ACTIVE
    label: Активный
    won_in_window: {min: 2}
  - code: ONE_TIME
    label: Разовый
    won_total: {min: 1, max: 1}
  - code: POTENTIAL
    label: Потенциальный
    open_deals: {min: 1}
    won_total: {max: 0}
  - code: NEWCOMER
    label: Новичок
    days_since_first_contact: {max: 30}
    deals_total: {max: 0}
# Company size (B2B), written to companies' UF_CRM_TL_COMPANY_SIZE. The seed's bounds: small up to 10 staff or
# 10 M turnover, medium 10-100 staff or 10-100 M, large over 100 staff or 100 M; the larger of the two wins.
# employees maps the portal's EMPLOYEES list values (crm.status.list ENTITY_ID=EMPLOYEES; bitrix-setup prints them)
# to a size. A fresh portal's values cross the seed's bounds, so each is mapped by its lower end:
#   EMPLOYEES_1 «менее 50» -> small, EMPLOYEES_2 «50-250» -> medium,
#   EMPLOYEES_3 «250-500» and EMPLOYEES_4 «более 500» -> large
company_size:
  employees: {EMPLOYEES_1: small, EMPLOYEES_2: medium, EMPLOYEES_3: large, EMPLOYEES_4: large}
  revenue_small_max: 10000000
  revenue_medium_max: 100000000
# Moves into these segments create a Bitrix24 task for the responsible manager (once per move; the alerts ledger).
task_on_moves: [SLEEPING, VIP]
# At most this many such tasks a night (0: none). An edit of the rules above can move thousands of customers in one
# night: the first moves get tasks (those into the segment listed first in task_on_moves first), the rest are only
# counted and logged as over the limit — they get no task later either.
task_limit: 200
# Ad audiences: the customers of chosen segments sent each night (after the write-back) as hashed phones and
# e-mails, read from Bitrix24 at export time and never stored. Off while the list is empty. Each audience:
#   name      unique; the segment's name on the platform
#   platform  yandex (Yandex Audiences, a CRM segment; YANDEX_AUDIENCE_TOKEN in the ads secret),
#             vk (VK Ads remarketing user lists; the spend import's VK_ADS_CLIENT_ID / VK_ADS_CLIENT_SECRET) or
#             google (Customer Match through the Data Manager API; the GOOGLE_ADS_* settings)
#   segments  the segment codes whose customers make the audience
#   list_id   Yandex, optional: an existing segment (digits) whose data each night replaces (else one is created
#             and its id remembered); VK, optional: phone:<id>,email:<id> — existing lists that each night's
#             changes are sent to (else they are uploaded once and kept); Google, required:
#             customers/<customer id>/userLists/<user list id> (the Customer Match list made in Google Ads)
# For example:
#   audiences:
#     - {name: "Throughline VIP", platform: yandex, segments: [VIP]}
#     - {name: "Throughline спящие", platform: vk, segments: [SLEEPING]}
audiences: []
"""


class RulesError(ValueError):
    """``config/segments.yaml`` is not valid: the message names each bad field."""


class Bounds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    min: int | None = Field(default=None, ge=0)
    max: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self

    def holds(self, value: int | None) -> bool:
        if value is None:
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class SegmentRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,31}$")
    label: str = Field(min_length=1, max_length=64)
    won_in_window: Bounds | None = None
    won_total: Bounds | None = None
    deals_total: Bounds | None = None
    open_deals: Bounds | None = None
    days_since_last_win: Bounds | None = None
    days_since_first_contact: Bounds | None = None
    average_check_percentile: float | None = Field(default=None, gt=0, le=100)
    freeze: Literal["month"] | None = None

    @model_validator(mode="after")
    def _freeze_needs_percentile(self) -> SegmentRule:
        if self.freeze and self.average_check_percentile is None:
            raise ValueError("freeze applies to a rule with average_check_percentile")
        return self


class CompanySize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    employees: dict[str, Literal["small", "medium", "large"]] = Field(default_factory=dict)
    revenue_small_max: float = Field(default=10_000_000, gt=0)
    revenue_medium_max: float = Field(default=100_000_000, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> CompanySize:
        if self.revenue_small_max >= self.revenue_medium_max:
            raise ValueError("revenue_small_max must be below revenue_medium_max")
        return self


PLATFORMS = ("yandex", "vk", "google")


class Audience(BaseModel):
    """One exported audience: the customers of ``segments``, sent to ``platform`` under ``name``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64)
    platform: Literal["yandex", "vk", "google"]
    segments: list[str] = Field(min_length=1, max_length=20)
    list_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_/:.,-]{1,128}$")

    @model_validator(mode="after")
    def _list_id_for_the_platform(self) -> Audience:
        """Each platform's list id in its own form, refused when the file is read rather than at night's export."""
        forms = {
            "yandex": (r"^\d{1,20}$", "a segment id (digits)"),
            "vk": (
                r"^(phone:\d{1,20}(,email:\d{1,20})?|email:\d{1,20})$",
                "phone:<list id>,email:<list id> (either part)",
            ),
            "google": (r"^(customers/[\d-]{1,24}/userLists/)?\d{1,20}$", "customers/<customer id>/userLists/<id>"),
        }
        pattern, form = forms[self.platform]
        if self.platform == "google" and not self.list_id:
            raise ValueError(f"audience {self.name!r}: Google needs list_id ({form}); the Customer Match list is "
                             "made once in Google Ads")  # fmt: skip
        if self.list_id and not re.fullmatch(pattern, self.list_id):
            raise ValueError(f"audience {self.name!r}: list_id for {self.platform} must be {form}")
        return self


class SegmentRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    window_days: int = Field(default=365, ge=1, le=3650)
    segments: list[SegmentRule] = Field(min_length=1, max_length=20)
    company_size: CompanySize = CompanySize()
    task_on_moves: list[str] = Field(default_factory=list)
    task_limit: int = Field(default=200, ge=0, le=10000)
    audiences: list[Audience] = Field(default_factory=list, max_length=50)

    @model_validator(mode="after")
    def _unique(self) -> SegmentRules:
        codes = [rule.code for rule in self.segments]
        if len(set(codes)) != len(codes):
            raise ValueError(f"segment codes repeat: {codes}")
        labels = [rule.label for rule in self.segments]
        if len(set(labels)) != len(labels):
            raise ValueError(f"segment labels repeat: {labels}")
        unknown = set(self.task_on_moves) - set(codes)
        if unknown:
            raise ValueError(f"task_on_moves names unknown segments: {sorted(unknown)}")
        names = [audience.name for audience in self.audiences]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"audience names repeat: {repeated}")
        for audience in self.audiences:
            unknown = sorted(set(audience.segments) - set(codes))
            if unknown:
                raise ValueError(f"audience {audience.name!r} names unknown segments: {unknown}")
        return self

    def rule(self, code: str) -> SegmentRule | None:
        return next((rule for rule in self.segments if rule.code == code), None)


MAX_BYTES = 65_536  # a rules file is a few hundred bytes; a bigger one is a mistake (or an alias bomb)


def parse_rules(text: str | bytes) -> SegmentRules:
    """Validate the YAML text of ``config/segments.yaml``."""
    if len(text) > MAX_BYTES:
        raise RulesError(f"{CONFIG_KEY} is larger than {MAX_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RulesError(f"{CONFIG_KEY} is not YAML: {error}") from None
    if not isinstance(data, dict):
        raise RulesError(f"{CONFIG_KEY} must be a mapping with 'segments'")
    try:
        return SegmentRules.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            (f"{'.'.join(str(part) for part in item['loc'])}: " if item["loc"] else "")
            + str(item["msg"]).removeprefix("Value error, ")
            for item in error.errors()
        )
        raise RulesError(f"{CONFIG_KEY}: {problems}") from None


def default_rules() -> SegmentRules:
    return parse_rules(DEFAULT_RULES_YAML)


def load_rules(objects: object) -> SegmentRules:
    """The bucket's rules, or the documented defaults when the file is absent."""
    body = objects.get(CONFIG_KEY)  # type: ignore[attr-defined]
    return default_rules() if body is None else parse_rules(body)
