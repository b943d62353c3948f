"""Build the ROI report from the CRM snapshot, the spend rows and the currency rates (pure logic, one pass each).

Counting rules (per period, days in the report's ``TIMEZONE``: a creation time Bitrix24 writes with another offset is
moved into that zone first; ``CLOSEDATE`` and spend dates are calendar days and are taken as written):
- leads: leads created in the period; deals: deals created in the period;
- won deals and revenue: deals in a success stage whose ``CLOSEDATE`` falls in the period (empty: the day of the
  deal's last move into a success stage in the stage history, never ``DATE_MODIFY``: a later edit must not move
  revenue between months); a won deal with an empty, negative or non-numeric amount is a won deal with no revenue,
  left out of the average check and listed in data quality;
- the paid rule: ROMI, ROI, ROAS, ДРР, CPL, CPO and CAC of a source, channel or the headline count only the leads,
  won deals and revenue of the campaign rows that carry spend in that period; the rest is shown beside them
  («выручка без расхода»);
- CR: the share of the period's leads that became a deal (whenever it was created);
- simple CRM mode (crm.settings.mode.get says so, or no lead at all): a deal's creation is the request, and CR is the
  share of them that was won; leads left from before the switch are no requests (their deals are), only lend tags;
- a deal belongs to the row of its lead (the lead's UTM tags), else its own tags, else its ``SOURCE_ID``; in the
  medium × content × term drill-down it counts by its own tags (Bitrix24 copies the lead's onto the deal);
- new customers: won deals whose contact (without one, the company; without either, the deal itself) had no earlier
  won deal.
"""

from __future__ import annotations

import gc
import heapq
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from itertools import repeat
from typing import Any
from zoneinfo import ZoneInfo

from throughline.report import columns, metrics
from throughline.report.attribution import AttributionOptions, Journeys, WonDeal, attribution_section, cohort_rows
from throughline.report.channels import (
    NO_CAMPAIGN,
    UNKNOWN,
    SourceIds,
    channel_label,
    is_known_source,
    origin_from_tags,
    source_label,
    spend_channel,
    spend_source,
    tag_key,
)
from throughline.report.dynamics import LEADS as DYNAMICS_LEADS
from throughline.report.dynamics import SPEND as DYNAMICS_SPEND
from throughline.report.dynamics import DynamicsBook
from throughline.report.funnel import StageBook, build_funnels
from throughline.report.metrics import ZERO, Totals
from throughline.report.models import (
    BadAmountDeal,
    Change,
    CurrencyRate,
    DataQuality,
    Drilldown,
    MetricValues,
    Period,
    RoiReport,
    Row,
    SharedCampaign,
    UnknownTag,
    UnmatchedSpend,
)
from throughline.report.rates import RateBook

CURRENT, PREVIOUS = 0, 1
DENSE_SPAN, DENSE_BASE = 4, 1 << 20  # per-ID arrays cover IDs below 4 × leads read + 1 M (8 bytes an ID)
DAY_BITS = 22  # a day ordinal (below 4 M: any date up to the year 9999) packed under a slot index in one integer
DAY_MASK = (1 << DAY_BITS) - 1
DEFAULT_ATTRIBUTION = AttributionOptions()
NO_JOURNEYS = "нет выгрузки путей клиентов (journeys/latest.json): атрибуция по моделям появится после первой"
ATTRIBUTION_BASIS = "last touch on the lead: its UTM tags, else the deal's own tags, else its CRM source (SOURCE_ID)"


@dataclass(frozen=True)
class ReportOptions:
    currency: str = "RUB"
    timezone: str = "Europe/Moscow"
    margin: Decimal | None = None  # 0..1
    profit_field: str | None = None  # a deal field holding gross profit in the deal's currency
    source_map: Mapping[str, str] = field(default_factory=dict)  # BITRIX24_SOURCE_MAP
    spend_with_vat: bool = False  # REPORT_SPEND_WITH_VAT: show spend with VAT (default: net)
    vat_rate: Decimal = Decimal("0.22")  # VAT_RATE: converts spend rows imported on the other basis
    simple_crm: bool | None = None  # simple CRM mode; None: detected (no lead in the snapshot, some deals)


def default_periods(today: date) -> tuple[Period, Period]:
    """Month to date (through yesterday) beside the same days of the previous month (1–15 Nov against 1–15 Oct; days
    the shorter month lacks are cut: 1–30 Mar against 1–28 Feb); on the 1st, the previous month whole against the
    month before it."""
    yesterday = today - timedelta(days=1)
    start = yesterday.replace(day=1)
    previous_end = start - timedelta(days=1)
    whole = (yesterday + timedelta(days=1)).day == 1
    last = previous_end.day if whole else min(yesterday.day, previous_end.day)
    previous = Period(date_from=previous_end.replace(day=1), date_to=previous_end.replace(day=last))
    return Period(date_from=start, date_to=yesterday), previous


def comparison_kind(period: Period, previous: Period) -> str:
    """What the comparison period is, for the page to name it."""
    month_before = period.date_from.replace(day=1) - timedelta(days=1)
    if period.date_from.day == 1 and previous.date_from == month_before.replace(day=1):
        whole = (period.date_to + timedelta(days=1)).day == 1
        if whole and previous.date_to == month_before:
            return "previous_month"
        if not whole and previous.date_to == month_before.replace(day=min(period.date_to.day, month_before.day)):
            return "same_days_previous_month"
    if previous.date_to == period.date_from - timedelta(days=1) and previous.days == period.days:
        return "preceding_days"
    return "custom"


def previous_period(period: Period) -> Period:
    """The same number of days right before ``period``."""
    end = period.date_from - timedelta(days=1)
    return Period(date_from=end - timedelta(days=period.days - 1), date_to=end)


_History = Iterable[Mapping[str, Any]] | columns.Rows  # JSON rows, or the columnar reader (report.crm.read_rows)


def build_report(
    *,
    period: Period,
    previous: Period,
    leads: Iterable[Mapping[str, Any]] | columns.Rows,
    deals: Iterable[Mapping[str, Any]] | columns.Rows,
    spend: Iterable[Mapping[str, Any]],
    rates: RateBook,
    stages: StageBook,
    stage_history: _History | Callable[[], _History] = (),
    options: ReportOptions = ReportOptions(),
    crm_info: Mapping[str, int | str | None] | None = None,
    journeys: Journeys | None = None,
    attribution: AttributionOptions = DEFAULT_ATTRIBUTION,
    now: Callable[[], datetime] = datetime.now,
    acquisitions: dict[int, Decimal | None] | None = None,
    wins: dict[int, str] | None = None,
) -> RoiReport:
    """``acquisitions``, when given, is filled with the period's new customers (the deal ID of each one's first won
    deal) and what acquiring each cost: its source row's CAC (the source's spend / its paid new customers, the paid
    rule) when the deal's campaign row carries spend, else None (the segments section's CAC per segment).
    ``journeys``: the newest journey export (``report.attribution.read_journeys``); without one, roi.json's
    attribution section is null and data quality says why. ``stage_history`` is read once: an iterable, or a function
    returning one (the job passes a reader of the snapshot). The one pass dates the wins of deals without
    ``CLOSEDATE`` (needed before the deals) and keeps a compact copy of the moves the funnel needs after them.
    ``wins``: a dict to fill with what :func:`last_wins` gives for that history (the job's segments section dates
    wins the same way), so a caller need not read the history again. ``leads`` and ``deals``: JSON rows, or the
    snapshot's columnar copy (``report.crm.read_rows``: tuples, cheaper to read; the same report)."""
    with _collector_paused():
        builder = _Builder(period, previous, rates, options, stages)
        builder.add_spend(spend)
        builder.add_leads(leads)
        moves = _Moves()
        builder.read_wins(moves.kept(_history(stage_history() if callable(stage_history) else stage_history)))
        if wins is not None:
            wins.update(builder.win_moments)
        builder.add_deals(deals)
        funnels = build_funnels(builder.lead_statuses, builder.deal_stages, stages, builder.deal_paths(moves))
        del moves
        report = builder.finish(funnels, crm_info or {}, journeys, attribution, now)
        if acquisitions is not None:
            acquisitions.update(builder.acquisitions())
        return report


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the report is built: the build allocates tens of millions of dicts,
    tuples and lists (a million decoded leads, two million touches) and makes no reference cycles, yet each 2 000
    allocations started a collection that walked the young objects, and the full collections walked everything kept
    so far (a sixth of the 365-day benchmark's CPU time). Reference counting still frees every record as it is passed;
    the collector is switched back on (if it was on) whatever happens."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def deal_sources(
    deals: Iterable[Mapping[str, Any]],
    *,
    leads: Iterable[Mapping[str, Any]],
    spend: Iterable[Mapping[str, Any]],
    rates: RateBook,
    options: ReportOptions,
    period: Period,
) -> dict[int, tuple[str, str]]:
    """(channel, source) of each deal's report row — its lead's tags, else its own, else its ``SOURCE_ID`` — exactly
    as ``build_report`` assigns it (the alerts' weekly loss reasons per source use it)."""
    builder = _Builder(period, previous_period(period), rates, options)
    builder.add_spend(spend)
    builder.add_leads(leads)
    rows: dict[int, tuple[str, str]] = {}
    for deal in deals:
        found = builder._lead_of(int(deal.get("LEAD_ID") or 0))
        campaign = builder._slots[found[0] if found is not None else builder.slot(deal)].campaign
        rows[int(deal["ID"])] = (campaign.channel, campaign.source)
    return rows


# ---- internals --------------------------------------------------------------------------------------------------


@dataclass
class _Campaign:
    channel: str
    source: str
    campaign: str
    campaign_id: str | None = None
    platform: str | None = None
    has_spend: bool = False
    named_on: str = ""  # the spend date of the name shown: a renamed campaign shows its latest name
    totals: tuple[Totals, Totals] = field(default_factory=lambda: (Totals(), Totals()))
    drill: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    unconverted: tuple[dict[str, Decimal], dict[str, Decimal]] = field(default_factory=lambda: ({}, {}))
    shared_of: list[tuple] = field(default_factory=list)  # a name two accounts share: their spend campaigns' keys


_Path = tuple[str, list[tuple[str, datetime]]]  # a deal's current stage and its moves (stage, entered), oldest first


@dataclass(frozen=True)
class _Slot:
    """What a distinct combination of tags means: its campaign row and its data-quality flags."""

    campaign: _Campaign
    known: bool
    unknown_tag: str | None
    by_content: bool = False  # utm_campaign met no spend: the row depends on utm_content (a campaign id there)
    medium: str = ""  # its utm_medium (the drill-down's first key)
    webform: bool = False  # Bitrix24's own CRM form (SOURCE_ID WEBFORM) posted without UTM tags


class _Builder:
    """One pass over spend and leads and two over a compact copy of the deals; memory grows with the number of
    distinct tag combinations, not with the number of leads (a lead costs two integers in arrays indexed by ID)."""

    def __init__(
        self, period: Period, previous: Period, rates: RateBook, options: ReportOptions, stages: StageBook | None = None
    ):
        self.period, self.previous, self.rates, self.options = period, previous, rates, options
        self._success_stages = success_stages(stages)
        self._ordinals = tuple(
            (low.toordinal(), high.toordinal())
            for low, high in ((period.date_from, period.date_to), (previous.date_from, previous.date_to))
        )
        self._bounds = (
            (period.date_from.isoformat(), period.date_to.isoformat()),
            (previous.date_from.isoformat(), previous.date_to.isoformat()),
        )
        self.zone = ZoneInfo(options.timezone)
        self.source_ids = SourceIds(options.source_map)
        self.campaigns: dict[tuple, _Campaign] = {}
        # (source, tag_key of a campaign id) and (source, tag_key of a name) → spend campaign key. Two maps, ids first:
        # one campaign's id may be another's name, and the match must not depend on which spend row came first.
        self._by_id: dict[tuple[str, str], tuple] = {}
        self._by_name: dict[tuple[str, str], list[tuple]] = {}  # a name two accounts share: both campaigns' keys
        self._no_rate_ids: dict[tuple[str, str], tuple] = {}  # the same for spend with no exchange rate
        self._no_rate_names: dict[tuple[str, str], tuple] = {}
        self._blank: dict[tuple[str, str], tuple] = {}  # manual spend without utm_campaign: (source, medium) → key
        self._id_sources: set[str] = set()  # sources with campaign ids: their leads' utm_content may carry one
        self._slot_index: dict[tuple[str, str, str, str], int] = {}  # (utm_source, medium, campaign, SOURCE_ID)
        self._slots: list[_Slot] = []
        # "YYYY-MM-DD" of a calendar day, or the date and offset of a moment ("YYYY-MM-DD+03:00") whose offset is the
        # report zone's all that day → (period index, ordinal of the report-zone day)
        self._days: dict[str, tuple[int | None, int]] = {}
        self._lead_slot = array("i")  # by lead ID: slot, or -1
        self._lead_day = array("i")  # by lead ID: creation day ordinal
        self._far_leads: dict[int, tuple[int, int]] = {}  # lead ID past the dense arrays → (slot, day ordinal)
        self._leads_seen = 0
        self.lead_statuses: Counter[str] = Counter()  # STATUS_ID of the period's leads
        self.deal_stages: dict[int, Counter[str]] = defaultdict(Counter)  # CATEGORY_ID → STAGE_ID of its deals
        self.period_deals: dict[int, tuple[int, str]] = {}  # the period's deals: ID → (CATEGORY_ID, STAGE_ID)
        self.spend_rows_with_vat = 0
        self.spend_rows_vat_converted = 0
        self.deals_without_rate = 0
        self.spend_without_rate: dict[str, Decimal] = {}
        self.deals_without_amount = 0
        self.deals_invalid_amount = 0
        self.bad_amounts: list[BadAmountDeal] = []
        self.deals_without_profit = 0
        self.won_without_date = 0
        self.win_moments: dict[int, str] = {}  # deal ID → its last move into a success stage (stage history)
        # deal ID → slot + 1 of a deal with no lead read: its journey's crm_deal touch takes the table's channel.
        # Dense like the leads' arrays (4 bytes a deal); far IDs go to a dict.
        self._deal_rows = array("i")
        self._far_deals: dict[int, int] = {}
        self.simple = bool(options.simple_crm)
        self.leads_total = 0
        self.leads_with_source = 0
        self.unknown_tags: Counter[str] = Counter()
        self.duplicates = 0
        self.webform_leads_without_tags = 0  # Bitrix24's own CRM forms (SOURCE_ID WEBFORM) posted without UTM tags
        self._person_keys: set[str] = set()
        self._end = period.date_to.toordinal()
        self.won: list[WonDeal] = []  # the period's won deals with a rate: the conversions of attribution
        self.won_to_date: list[WonDeal] = []  # every won deal up to the period's end: the cohorts
        self.new_customer_deals: list[tuple[int, _Campaign]] = []  # the period's new customers: first won deal, row
        self.dynamics = DynamicsBook(period)  # the period's figures by row and day or week (report.dynamics)

    def day(self, value: Any, *, moment: bool = False) -> tuple[int | None, int]:
        """(0 = the period, 1 = the previous one, None = neither; the day's ordinal, 0 when there is no date).

        A ``moment`` (DATE_CREATE: a time with an offset) counts on its day in the report's zone; a calendar day
        (CLOSEDATE, a spend date) as written. Moments whose offset is the zone's all day (every record of a portal
        in that zone) are cached by date and offset, so the hot loops parse one string per day, not per record."""
        text = str(value or "")
        key = text[:10] + text[19:] if moment else text[:10]
        found = self._days.get(key)
        if found is None:
            local, cacheable = self._local_day(text) if moment else (text[:10], True)
            which = next((index for index, (low, high) in enumerate(self._bounds) if low <= local <= high), None)
            try:
                ordinal = date.fromisoformat(local).toordinal()
            except ValueError:
                which, ordinal = None, 0
            found = (which, ordinal)
            if cacheable:
                self._days[key] = found
        return found

    def _local_day(self, text: str) -> tuple[str, bool]:
        """The report-zone day of an ISO time, and whether every time of that date and offset falls on it."""
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return text[:10], True
        if moment.tzinfo is None:
            return text[:10], True
        local = moment.astimezone(self.zone).date()
        offset = moment.utcoffset()
        same = offset == datetime.combine(local, time(0), self.zone).utcoffset()
        same = same and offset == datetime.combine(local, time(23, 59, 59), self.zone).utcoffset()
        return local.isoformat(), same and local.isoformat() == text[:10]

    # -- spend ------------------------------------------------------------------------------------------------------

    def add_spend(self, rows: Iterable[Mapping[str, Any]]) -> None:
        vat = Decimal(1) + self.options.vat_rate
        # The period's spend per (campaign, day), handed to the dynamics once each after the rows (exact Decimal sums:
        # the same cells, in the same first-seen order, as one call a row).
        by_day: dict[tuple[int, int], list[Any]] = {}
        for row in rows:
            which, spend_day = self.day(row.get("date"))
            if which is None:
                continue
            platform = str(row["platform"])
            utm_source, utm_medium = row.get("utm_source"), row.get("utm_medium")
            source = spend_source(platform, utm_source)
            amount = _decimal(row.get("cost"))
            with_vat = row.get("include_vat") in (True, "true", "True", "YES", "Y")
            if with_vat != self.options.spend_with_vat:  # one VAT basis for every row (net by default)
                amount = amount / vat if with_vat else amount * vat
                self.spend_rows_vat_converted += which == CURRENT
            self.spend_rows_with_vat += with_vat and which == CURRENT
            cost = self._money(amount, str(row.get("currency") or ""), str(row["date"]))
            rated = cost is not None
            if platform == "manual":
                campaign_id, name = None, str(row.get("utm_campaign") or row.get("campaign_name") or "")
                key = ("spend", platform, source, tag_key(name)) if name else ("spend", platform, source, "",
                                                                               tag_key(utm_medium))  # fmt: skip
            else:
                campaign_id, name = str(row.get("campaign_id") or ""), str(row.get("campaign_name") or "")
                key = ("spend", platform, source, campaign_id or tag_key(name))
            if not rated:
                key = (*key, "no_rate")
            campaign = self.campaigns.get(key)
            if campaign is None:
                channel = spend_channel(platform, utm_source, utm_medium)
                campaign = self.campaigns[key] = _Campaign(
                    channel, source, name or campaign_id or NO_CAMPAIGN, campaign_id or None, platform, True
                )
                if campaign_id:
                    (self._by_id if rated else self._no_rate_ids).setdefault((source, tag_key(campaign_id)), key)
                    self._id_sources.add(source)
            if name:  # every name a campaign had in the period: one renamed mid-month is tagged with both
                if rated:
                    keys = self._by_name.setdefault((source, tag_key(name)), [])
                    if key not in keys:
                        keys.append(key)
                else:
                    self._no_rate_names.setdefault((source, tag_key(name)), key)
                if platform != "manual" and str(row["date"]) >= campaign.named_on:
                    campaign.campaign, campaign.named_on = name, str(row["date"])
            elif platform == "manual" and (utm_source or utm_medium):
                # Manual spend without a campaign meets the leads of its source and medium that carry none.
                self._blank.setdefault((source, tag_key(utm_medium)), key)
            if cost is None:
                # Never a crash of the whole night and never a silent loss: a row of its own in its own currency,
                # out of every ratio, and named in data quality and on the headline.
                currency = str(row.get("currency") or "?").upper()
                amount = metrics.money(amount)  # to the cent per row, as rated spend: rows then add up to the total
                left_out = campaign.unconverted[which]
                left_out[currency] = left_out.get(currency, ZERO) + amount
                if which == CURRENT:
                    self.spend_without_rate[currency] = self.spend_without_rate.get(currency, ZERO) + amount
                continue
            totals = campaign.totals[which]
            totals.spend += cost
            totals.impressions += int(row.get("impressions") or 0)
            totals.clicks += int(row.get("clicks") or 0)
            if which == CURRENT:
                found = by_day.get((id(campaign), spend_day))
                if found is None:
                    by_day[id(campaign), spend_day] = [campaign, ZERO + cost]
                else:
                    found[1] += cost
        self.dynamics.add(DYNAMICS_SPEND, ((campaign, day, cost) for (_, day), (campaign, cost) in by_day.items()))

    def _money(self, amount: Decimal, currency: str, day: str) -> Decimal | None:
        """``amount`` in the report currency, rounded to kopecks here, once per spend row or deal: every row, total
        and file then adds up the same kopecks (rounding only the sums made campaign rows disagree with their total).
        """
        converted = self.rates.convert(amount, currency, day)
        return None if converted is None else metrics.money(converted)

    # -- leads ------------------------------------------------------------------------------------------------------

    def slot(self, record: Mapping[str, Any]) -> int:
        tags = (record.get("UTM_SOURCE") or "", record.get("UTM_MEDIUM") or "", record.get("UTM_CAMPAIGN") or "",
                record.get("SOURCE_ID") or "")  # fmt: skip
        return self._slot_for(tags, record.get("UTM_CONTENT") or "")

    def _slot_for(self, tags: tuple[str, str, str, str], content: str) -> int:
        """The slot of (utm_source, utm_medium, utm_campaign, SOURCE_ID), each "" when absent, and utm_content."""
        index = self._slot_index.get(tags)
        if index is None:
            index = self._slot_index[tags] = len(self._slots)
            self._slots.append(self._new_slot(*tags))
        if self._slots[index].by_content:
            return self._content_slot(tags, content)
        return index

    def _content_slot(self, tags: tuple[str, str, str, str], content: str) -> int:
        """A row whose utm_campaign met no spend: a campaign id in utm_content (Yandex ``{campaign_id}``, Google
        ``{campaignid}``, VK ``{{campaign_id}}`` put there) still meets its spend."""
        key = (*tags, content)
        index = self._slot_index.get(key)
        if index is None:
            index = self._slot_index[key] = len(self._slots)
            self._slots.append(self._new_slot(*tags, content=content))
        return index

    def _new_slot(self, utm_source: str, utm_medium: str, utm_campaign: str, source_id: str, *,
                  content: str | None = None) -> _Slot:  # fmt: skip
        if utm_source or utm_medium:
            origin = origin_from_tags(utm_source, utm_medium)
        else:
            origin = self.source_ids.origin(source_id)
        spend_key = None
        tag = (origin.source, tag_key(utm_campaign))
        if utm_campaign:
            spend_key = self._by_id.get(tag)
            if spend_key is None:
                keys = self._by_name.get(tag) or []
                if len(keys) > 1:  # one name in two accounts: one row with both spends, said in data quality
                    spend_key = ("shared", origin.source, tag[1])
                    if spend_key not in self.campaigns:
                        self.campaigns[spend_key] = _Campaign(origin.channel, origin.source, utm_campaign.strip(),
                                                              shared_of=list(keys))  # fmt: skip
                elif keys:
                    spend_key = keys[0]
        elif utm_source or utm_medium:
            spend_key = self._blank.get((origin.source, tag_key(utm_medium)))
        if spend_key is None and content:
            spend_key = self._by_id.get((origin.source, tag_key(content)))
        if spend_key is None and utm_campaign:
            spend_key = self._no_rate_ids.get(tag) or self._no_rate_names.get(tag)
        if spend_key is None and content:  # an id in utm_content of spend with no exchange rate: its «нет курса» row
            spend_key = self._no_rate_ids.get((origin.source, tag_key(content)))
        if spend_key is None and content is None and origin.source in self._id_sources:
            # Never counted: ``slot`` sends each record on to the row of its utm_content.
            return _Slot(_Campaign(origin.channel, origin.source, ""), origin.known, None, by_content=True)
        if spend_key is not None:
            campaign = self.campaigns[spend_key]
        else:
            key = ("tags", origin.channel, origin.source, tag_key(utm_campaign))
            campaign = self.campaigns.get(key) or self.campaigns.setdefault(
                key, _Campaign(origin.channel, origin.source, utm_campaign.strip() or NO_CAMPAIGN)
            )
        # The canonical source, as the rows group it: "Partner-XYZ " and "partner-xyz" are one unknown tag, not two.
        unknown = origin.source if utm_source.strip() and not is_known_source(origin.source) else None
        return _Slot(campaign, origin.known, unknown, medium=utm_medium,
                     webform=source_id == "WEBFORM" and not (utm_source or utm_medium))  # fmt: skip

    def add_leads(self, leads: Iterable[Mapping[str, Any]] | columns.Rows) -> None:
        """Leads as JSON rows, or as tuples of ``columns.LEAD_COLUMNS`` (``crm.read_rows``: the columnar copy)."""
        # The hot loop of the report (a million leads): a lead is a tuple unpacked into locals, the common case is
        # two dict hits, and a lead of the period costs a few more (its drill-down cell, its status, its person keys).
        # What depends only on its row (the row's lead count, known source, unknown tag, web form) is counted per
        # (slot, day) here and added to the rows, the data quality and the dynamics once, after the loop.
        slots, slot_index, days = self._slots, self._slot_index, self._days
        lead_slot, lead_day, far = self._lead_slot, self._lead_day, self._far_leads
        seen, simple = self._leads_seen, self.simple  # simple mode set by the portal (leads left from before it)
        person_keys = self._person_keys
        add_key = person_keys.add
        duplicates = 0
        by_day: dict[int, int] = {}  # slot << DAY_BITS | day ordinal → leads of the period
        previous: dict[int, int] = {}  # slot → leads of the previous period
        cells: dict[tuple[int, str, str], int] = {}  # (slot, utm_content, utm_term) → leads of the period
        statuses: dict[str, int] = {}
        for (lead_id, created, status, source_id, utm_source, utm_medium, utm_campaign, utm_content, utm_term,
             keys) in _rows(leads, columns.LEAD_COLUMNS):  # fmt: skip
            tags = (utm_source or "", utm_medium or "", utm_campaign or "", source_id or "")
            index = slot_index.get(tags)
            if index is None:
                index = self._slot_for(tags, utm_content or "")
            elif slots[index].by_content:  # its row is its utm_content's: looked up at once, as ``slot`` would
                index = slot_index.get((*tags, utm_content or ""))
                if index is None:
                    index = self._slot_for(tags, utm_content or "")
            created = created or ""
            which, ordinal = days.get(created[:10] + created[19:]) or self.day(created, moment=True)
            lead_id = int(lead_id)
            seen += 1
            if lead_id >= len(lead_slot):
                # The arrays stay dense: they grow only while IDs are near the number of leads read (a portal that
                # numbers from a billion would otherwise cost gigabytes of gap); far IDs go to a dict.
                if lead_id >= DENSE_SPAN * seen + DENSE_BASE:
                    far[lead_id] = (index, ordinal)
                    lead_id = -1
                else:
                    grow = max(lead_id + 1 - len(lead_slot), len(lead_slot), 1024)
                    lead_slot.extend(repeat(-1, grow))
                    lead_day.extend(repeat(0, grow))
            if lead_id >= 0:
                lead_slot[lead_id] = index
                lead_day[lead_id] = ordinal
            if which is None or simple:  # simple mode: the deal is the request; a lead only lends it its tags
                continue
            if which != CURRENT:
                previous[index] = previous.get(index, 0) + 1
                continue
            key = (index, utm_content or "", utm_term or "")
            cells[key] = cells.get(key, 0) + 1
            if status.__class__ is not str:
                status = str(status or "")
            statuses[status] = statuses.get(status, 0) + 1
            if keys:
                if keys.__class__ is list and len(keys) == 1:  # nearly every lead: one lookup and add, not
                    # isdisjoint and update
                    key = keys[0]
                    if key in person_keys:
                        duplicates += 1
                    else:
                        add_key(key)
                else:
                    if not person_keys.isdisjoint(keys):
                        duplicates += 1
                    person_keys.update(keys)
            day_key = index << DAY_BITS | ordinal
            by_day[day_key] = by_day.get(day_key, 0) + 1
        self._leads_seen = seen
        self.duplicates += duplicates
        self.lead_statuses.update(statuses)
        for index, count in previous.items():
            slots[index].campaign.totals[PREVIOUS].leads += count
        current: dict[int, int] = {}  # slot → leads of the period, in the order the slots first had one
        for day_key, count in by_day.items():
            index = day_key >> DAY_BITS
            current[index] = current.get(index, 0) + count
        self.dynamics.add(DYNAMICS_LEADS, ((slots[key >> DAY_BITS].campaign, key & DAY_MASK, count)
                                           for key, count in by_day.items()))  # fmt: skip
        for index, count in current.items():
            slot = slots[index]
            slot.campaign.totals[CURRENT].leads += count
            self.leads_total += count
            self.leads_with_source += count if slot.known else 0
            if slot.unknown_tag:  # first met in the order the leads first met them (most_common breaks ties so)
                self.unknown_tags[slot.unknown_tag] += count
            if slot.webform:
                self.webform_leads_without_tags += count
        for (index, content, term), count in cells.items():
            slot = slots[index]
            self._drill(slot.campaign, (slot.medium, content, term))[0] += count

    @staticmethod
    def _drill(campaign: _Campaign, key: tuple[str, str, str]) -> list[Any]:
        """The drill-down cell of (utm_medium, utm_content, utm_term), each "" when absent."""
        cell = campaign.drill.get(key)
        if cell is None:
            cell = campaign.drill[key] = [0, 0, 0, ZERO]
        return cell

    # -- deals ------------------------------------------------------------------------------------------------------

    def read_wins(self, history: Iterable[tuple[Any, ...]]) -> None:
        """Each deal's last move into a success stage: the day of a won deal without ``CLOSEDATE``. ``history``:
        tuples of ``columns.HISTORY_COLUMNS`` (:func:`_history`)."""
        self.win_moments = _last_wins(history, self._success_stages, self.zone)

    def _which(self, ordinal: int) -> int | None:
        for index, (low, high) in enumerate(self._ordinals):  # a loop, not next() over a generator: once a deal
            if low <= ordinal <= high:
                return index
        return None

    def _lead_of(self, lead_id: int) -> tuple[int, int] | None:
        """(slot, creation day ordinal) of a lead read, or ``None``."""
        if 0 < lead_id < len(self._lead_slot) and self._lead_slot[lead_id] >= 0:
            return self._lead_slot[lead_id], self._lead_day[lead_id]
        return self._far_leads.get(lead_id)

    def add_deals(self, deals: Iterable[Mapping[str, Any]] | columns.Rows) -> None:
        """First pass: each deal to a compact tuple (its row, when it counts) and every customer's first win; second
        pass: the totals, now that "new customer" can be told."""
        if self.options.simple_crm is None:
            self.simple = self._leads_seen == 0  # no lead at all: the portal works in simple mode (deals only)
        # Leads come before deals (as the simple-mode test above needs): their person keys, a set of up to a million
        # strings kept only to tell duplicate leads, are let go before the deals and the attribution are read.
        self._person_keys = set()
        first_won: dict[str, tuple[int, int]] = {}  # customer → (day, deal ID) of their first won deal
        converted: set[int] = set()  # leads that became a deal: counted once however many deals they have
        compact = []
        wanted = columns.columns_of("deal", self.options.profit_field) or ()
        profit_at = wanted.index(self.options.profit_field) if self.options.profit_field else None
        for row in _rows(deals, wanted):
            (deal_id, created, category, stage, semantic, opportunity, currency, closedate, lead_id, contact, company,
             source_id, utm_source, utm_medium, utm_campaign, utm_content, utm_term) = row[:17]  # fmt: skip
            created_which, created = self.day(created, moment=True)
            won = semantic == "S"
            won_which, closed = self._closed(closedate, deal_id) if won else (None, 0)
            customer, deal_id = _customer_of(contact, company, deal_id), int(deal_id)
            if won and closed and (customer not in first_won or (closed, deal_id) < first_won[customer]):
                first_won[customer] = (closed, deal_id)
            lead_id = int(lead_id or 0)
            if lead_id and lead_id not in converted and not self.simple:
                found = self._lead_of(lead_id)
                if found is not None and (which := self._which(found[1])) is not None:
                    converted.add(lead_id)
                    self._slots[found[0]].campaign.totals[which].converted_leads += 1
            found = self._lead_of(lead_id)
            if found is not None:
                index, started = found
            else:  # a deal typed in the CRM: its journey's crm_deal touch takes this row's channel
                tags = (utm_source or "", utm_medium or "", utm_campaign or "", source_id or "")
                index, started = self._slot_for(tags, utm_content or ""), created
                self._remember_deal(deal_id, index)
            currency = str(currency or "")
            if won and closed and closed <= self._end:
                amount, _ = _amount(opportunity)
                revenue = None
                if amount is not None:
                    revenue = self._money(amount, currency, date.fromordinal(closed).isoformat())
                if revenue is not None:
                    campaign = self._slots[index].campaign
                    self.won_to_date.append(WonDeal(deal_id, lead_id, date.fromordinal(closed), revenue, customer,
                                                    campaign.source, campaign.channel))  # fmt: skip
            if created_which is None and won_which is None:
                continue
            if created_which == CURRENT:
                category, stage = int(category or 0), str(stage or "")
                self.deal_stages[category][stage] += 1
                self.period_deals[deal_id] = (category, stage)
            profit = row[profit_at] if profit_at is not None else None
            drill = (utm_medium or "", utm_content or "", utm_term or "")
            compact.append((index, created_which, won_which, closed, started, customer, opportunity, currency, profit,
                            drill, deal_id, lead_id))  # fmt: skip
        for (index, created_which, won_which, closed, started, customer, raw, currency, profit, drill, deal_id,
             lead_id) in compact:  # fmt: skip
            slot = self._slots[index]
            campaign = slot.campaign
            if created_which is not None:
                totals = campaign.totals[created_which]
                totals.deals += 1
                if self.simple:  # the deal is the request
                    totals.leads += 1
                    totals.converted_leads += bool(closed)
                if created_which == CURRENT:
                    self._drill(campaign, drill)[1] += 1
                    if self.simple:
                        self._drill(campaign, drill)[0] += 1
                        self.leads_total += 1
                        self.leads_with_source += slot.known
                        if slot.unknown_tag:
                            self.unknown_tags[slot.unknown_tag] += 1
            if won_which is None:
                continue
            day = date.fromordinal(closed).isoformat()
            amount, problem = _amount(raw)
            revenue = self._money(amount, currency, day) if amount is not None else ZERO
            if revenue is None:
                self.deals_without_rate += won_which == CURRENT
                continue
            totals = campaign.totals[won_which]
            totals.won_deals += 1
            if problem is None:
                totals.revenue += revenue
                totals.priced_deals += 1
            elif won_which == CURRENT:
                if problem == "empty":
                    self.deals_without_amount += 1
                else:
                    self.deals_invalid_amount += 1
                if len(self.bad_amounts) < BAD_AMOUNTS_LISTED:
                    self.bad_amounts.append(BadAmountDeal(deal_id=deal_id, amount=str(raw or "")[:40],
                                                          problem=problem))  # fmt: skip
            if self.options.profit_field and problem is None:
                gross, _ = _amount(profit, negative=True)
                gross = self._money(gross, currency, day) if gross is not None else None
                if gross is None:  # unknown profit, not zero profit: out of ROI, counted
                    self.deals_without_profit += won_which == CURRENT
                else:
                    totals.gross_profit = (totals.gross_profit or ZERO) + gross
            if first_won.get(customer) == (closed, deal_id):
                totals.new_customers += 1
                if won_which == CURRENT:
                    self.new_customer_deals.append((deal_id, campaign))
            if started:
                totals.cycle_days_sum += max(closed - started, 0)
                totals.cycle_deals += 1
            if won_which == CURRENT:
                cell = self._drill(campaign, drill)
                cell[2] += 1
                if problem is None:
                    cell[3] += revenue
                    self.won.append(WonDeal(deal_id, lead_id, date.fromordinal(closed), revenue, customer))
                self.dynamics.won(campaign, closed, revenue if problem is None else ZERO)  # a won deal all the same

    def acquisitions(self) -> dict[int, Decimal | None]:
        """Each new customer of the period (its first won deal's ID) → its source row's CAC when its campaign row
        carries spend (the paid rule: the source's spend / the new customers of its campaign rows that carry spend,
        the CAC the report shows for the source), else None. Read after ``finish`` (shared campaigns merged)."""
        spend: dict[tuple[str, str], Decimal] = defaultdict(lambda: ZERO)
        paid_new: Counter[tuple[str, str]] = Counter()
        for campaign in self.campaigns.values():
            totals = campaign.totals[CURRENT]
            spend[campaign.channel, campaign.source] += totals.spend
            if totals.spend > 0:
                paid_new[campaign.channel, campaign.source] += totals.new_customers
        found: dict[int, Decimal | None] = {}
        for deal_id, campaign in self.new_customer_deals:
            key = (campaign.channel, campaign.source)
            paid = campaign.totals[CURRENT].spend > 0 and paid_new[key] > 0 and spend[key] > 0
            found[deal_id] = spend[key] / paid_new[key] if paid else None
        return found

    def _remember_deal(self, deal_id: int, index: int) -> None:
        rows = self._deal_rows
        if deal_id >= len(rows):
            if deal_id >= DENSE_SPAN * (self._leads_seen + len(rows)) + DENSE_BASE:
                self._far_deals[deal_id] = index
                return
            rows.extend(repeat(0, max(deal_id + 1 - len(rows), len(rows), 1024)))
        rows[deal_id] = index + 1

    def _deal_row(self, deal_id: int) -> int | None:
        if 0 <= deal_id < len(self._deal_rows) and self._deal_rows[deal_id]:
            return self._deal_rows[deal_id] - 1
        return self._far_deals.get(deal_id)

    def _closed(self, closedate: Any, deal_id: Any) -> tuple[int | None, int]:
        """A won deal's day: its ``CLOSEDATE``, else its last move into a success stage in the stage history; never
        ``DATE_MODIFY`` (any later edit would move the revenue to another month). Without either: in no period."""
        if closedate:
            return self.day(closedate)
        won_at = self.win_moments.get(int(deal_id))
        if won_at:
            return self.day(won_at, moment=True)
        self.won_without_date += 1
        return None, 0

    def deal_paths(
        self, history: Iterable[Mapping[str, Any]] | _Moves
    ) -> dict[int, list[tuple[str, list[tuple[str, datetime]]]]]:
        """The stage history of the period's deals, per pipeline: (current stage, [(stage, entered)…] oldest first).
        ``history``: the entries, or the compact copy :class:`_Moves` kept of them while the wins were read."""
        entries: dict[int, list[tuple[int, str, datetime]]] = defaultdict(list)
        rows = history
        if isinstance(history, _Moves):
            rows, names, zone, deals = history.odd(self.period_deals), history.stage_names, self.zone, self.period_deals
            for owner, entry, code, text in history.plain():
                if owner in deals:
                    try:
                        at = _time(text)
                    except (TypeError, ValueError):
                        continue
                    entries[owner].append((entry, names[code], at if at.tzinfo else at.replace(tzinfo=zone)))
        for row in rows:
            try:  # a malformed entry is skipped, not fatal
                owner = int(row.get("OWNER_ID") or 0)
                if owner in self.period_deals and row.get("CREATED_TIME"):
                    at = _time(row["CREATED_TIME"])
                    at = at if at.tzinfo else at.replace(tzinfo=self.zone)
                    entries[owner].append((int(row["ID"]), str(row.get("STAGE_ID") or ""), at))
            except (TypeError, ValueError):
                continue
        paths: dict[int, list[_Path]] = defaultdict(list)
        for owner, (category, current) in self.period_deals.items():
            moves = [(stage, at) for _, stage, at in sorted(entries.get(owner, ()))]
            paths[category].append((current, moves))
        return paths

    # -- output -----------------------------------------------------------------------------------------------------

    def finish(
        self,
        funnels: list,
        crm_info: Mapping[str, Any],
        journeys: Journeys | None,
        options: AttributionOptions,
        now: Callable[[], datetime],
    ):
        margin, profit_field = self.options.margin, bool(self.options.profit_field)
        shared = self._merge_shared()
        channels: dict[str, dict[str, list[_Campaign]]] = defaultdict(lambda: defaultdict(list))
        for campaign in self.campaigns.values():
            if any(_nonempty(totals) for totals in campaign.totals) or any(campaign.unconverted):
                channels[campaign.channel][campaign.source].append(campaign)
        rows: list[Row] = []
        grand = (Totals(), Totals())
        grand_paid = (Totals(), Totals())

        grand_no_rate = [ZERO, ZERO]

        def values(part: Totals, paid: Totals | None, no_rate: Decimal) -> MetricValues:
            computed = metrics.compute(part, paid, margin=margin, profit_field=profit_field, no_rate_revenue=no_rate)
            return _values(computed)

        def add_row(level: str, channel: str, source: str | None, campaigns: list[_Campaign], **extra: Any) -> None:
            totals, paid = _sum(campaigns)
            current = values(totals[CURRENT], paid[CURRENT], _no_rate_revenue(campaigns, CURRENT))
            previous = values(totals[PREVIOUS], paid[PREVIOUS], _no_rate_revenue(campaigns, PREVIOUS))
            unconverted: dict[str, Decimal] = {}
            for campaign in campaigns:
                for currency, amount in campaign.unconverted[CURRENT].items():
                    unconverted[currency] = unconverted.get(currency, ZERO) + amount
            rows.append(
                Row(
                    level=level,
                    channel=channel,
                    channel_label=channel_label(channel),
                    source=source,
                    source_label=source_label(source) if source is not None else None,
                    metrics=current,
                    previous=previous if _nonempty(totals[PREVIOUS]) else None,
                    change=_change(current, previous) if _nonempty(totals[PREVIOUS]) else None,
                    unconverted_spend={name: metrics.money(amount) for name, amount in sorted(unconverted.items())},
                    **{"campaign": None, "campaign_id": None, "platform": None, "matched": None, **extra},
                )
            )

        for channel, sources in sorted(channels.items(), key=lambda item: _rank(item[1])):
            everything = [campaign for campaigns in sources.values() for campaign in campaigns]
            add_row("channel", channel, None, everything)
            for source, campaigns in sorted(sources.items(), key=lambda item: _rank({"": item[1]})):
                add_row("source", channel, source, campaigns)
                for campaign in sorted(campaigns, key=lambda item: _rank({"": [item]})):
                    add_row(
                        "campaign",
                        channel,
                        source,
                        [campaign],
                        campaign=campaign.campaign,
                        campaign_id=campaign.campaign_id,
                        platform=campaign.platform,
                        matched=_matched(campaign),
                        drilldown=_drilldown(campaign),
                    )
            totals, paid = _sum(everything)
            for index in (CURRENT, PREVIOUS):
                grand[index].add(totals[index])
                grand_paid[index].add(paid[index])
                grand_no_rate[index] += _no_rate_revenue(everything, index)
        headline = values(grand[CURRENT], grand_paid[CURRENT], grand_no_rate[CURRENT])
        zone = ZoneInfo(self.options.timezone)
        section = None
        if journeys is not None:
            spend = {row.channel: row.metrics.spend for row in rows if row.level == "channel"}
            paid = {(c.channel, c.source) for c in self.campaigns.values() if c.totals[CURRENT].spend > 0}
            section = attribution_section(journeys, self.won, spend, options, zone, self._touch_row, paid)
        headline_previous = values(grand[PREVIOUS], grand_paid[PREVIOUS], grand_no_rate[PREVIOUS])
        return RoiReport(
            generated_at=now(),
            currency=self.options.currency,
            timezone=self.options.timezone,
            period=self.period,
            previous_period=self.previous,
            comparison=comparison_kind(self.period, self.previous),
            simple_crm=self.simple,
            attribution_basis=ATTRIBUTION_BASIS,
            roi_basis="profit_field" if self.options.profit_field else "margin" if margin is not None else "romi",
            headline=headline,
            headline_previous=headline_previous,
            headline_change=_change(headline, headline_previous),
            rows=rows,
            funnels=funnels,
            data_quality=self._quality(journeys, shared),
            currency_rates=[CurrencyRate(**rate) for rate in self.rates.used(self.period.date_to.isoformat())],
            crm=dict(crm_info),
            attribution=section,
            cohorts=cohort_rows(self.won_to_date, self.period.date_to, zone),
            dynamics=self.dynamics.section(self.period, lambda campaign: bool(campaign.totals[CURRENT].spend)),
        )

    def _touch_row(self, entity_type: str, entity_id: int) -> tuple[str, str] | None:
        """The table's (channel, source) of a record typed in the CRM, for its journey's crm_lead / crm_deal touch: one
        mapping of SOURCE_ID and tags (BITRIX24_SOURCE_MAP included) for the table and the attribution paths."""
        if entity_type == "lead":
            found = self._lead_of(entity_id)
            index = found[0] if found is not None else None
        else:
            index = self._deal_row(entity_id)
        if index is None:
            return None
        campaign = self._slots[index].campaign
        return campaign.channel, campaign.source

    def _merge_shared(self) -> list[SharedCampaign]:
        """A name two accounts share whose leads matched by name only: one row with both accounts' spend (and the
        records matched by either id), so no spend and no lead is counted twice or given to whichever came first."""
        merged = []
        for target in list(self.campaigns.values()):
            if not target.shared_of or not any(_nonempty(totals) for totals in target.totals):
                continue
            ids, platforms = [], []
            for spend_key in target.shared_of:
                source = self.campaigns.pop(spend_key, None)
                if source is None:
                    continue
                for mine, theirs in zip(target.totals, source.totals, strict=True):
                    mine.add(theirs)
                for cell, values in source.drill.items():
                    mine_cell = target.drill.setdefault(cell, [0, 0, 0, ZERO])
                    for position, value in enumerate(values):
                        mine_cell[position] += value
                for index, part in enumerate(source.unconverted):
                    for currency, amount in part.items():
                        target.unconverted[index][currency] = target.unconverted[index].get(currency, ZERO) + amount
                ids.append(source.campaign_id or source.campaign)
                platforms.append(source.platform or "")
                target.channel = source.channel
            target.has_spend, target.platform = True, platforms[0] if platforms else None
            target.campaign_id = ", ".join(sorted(ids))
            merged.append(SharedCampaign(platform=target.platform or "", campaign=target.campaign,
                                         campaign_ids=sorted(ids)))  # fmt: skip
        return merged

    def _quality(self, journeys: Journeys | None, shared: list[SharedCampaign]) -> DataQuality:
        unmatched = [c for c in self.campaigns.values() if c.has_spend and _matched(c) == "spend_only"]
        unmatched.sort(key=lambda c: -c.totals[CURRENT].spend)
        share = metrics.percent(self.leads_with_source, self.leads_total)
        return DataQuality(
            leads=self.leads_total,
            leads_with_source=self.leads_with_source,
            known_source_share=share,
            meets_target=None if share is None else share >= 95,
            leads_without_source=self.leads_total - self.leads_with_source,
            unknown_tags=[UnknownTag(utm_source=tag, leads=count) for tag, count in self.unknown_tags.most_common(20)],
            suspected_duplicates=self.duplicates,
            webform_leads_without_tags=self.webform_leads_without_tags,
            unmatched_spend=metrics.money(sum((c.totals[CURRENT].spend for c in unmatched), ZERO)),
            unmatched_spend_campaigns=[
                UnmatchedSpend(
                    platform=c.platform or "",
                    campaign_id=c.campaign_id,
                    campaign=c.campaign,
                    spend=metrics.money(c.totals[CURRENT].spend),
                )
                for c in unmatched[:50]
            ],
            spend_rows_with_vat=self.spend_rows_with_vat,
            deals_without_rate=self.deals_without_rate,
            spend_without_rate={name: metrics.money(cost) for name, cost in sorted(self.spend_without_rate.items())},
            deals_without_amount=self.deals_without_amount,
            deals_invalid_amount=self.deals_invalid_amount,
            bad_amount_deals=self.bad_amounts,
            deals_without_profit=self.deals_without_profit,
            won_deals_without_date=self.won_without_date,
            spend_vat_basis="gross" if self.options.spend_with_vat else "net",
            vat_rate=self.options.vat_rate,
            spend_rows_vat_converted=self.spend_rows_vat_converted,
            shared_campaign_names=shared,
            journeys=None if journeys is not None else NO_JOURNEYS,
            records_access_denied=journeys.access_denied if journeys is not None else 0,
        )


class _Moves:
    """A compact copy of the stage history taken as it streams past (read once, not twice): per entry its deal
    (``OWNER_ID``), ``ID``, ``STAGE_ID`` and ``CREATED_TIME`` as written. Deals and entries IDs go to integer arrays
    and stages to a short list of the distinct ones, times to one UTF-8 buffer: about 50 bytes an entry.
    An entry the funnel would skip whatever the deal (no time, an unreadable deal) is not kept; an entry whose fields
    are not plain is kept as a dict of the fields the funnel reads, as read (without ``ID`` when its JSON row had
    none: ``columns.ABSENT``), so :meth:`odd` gives :meth:`_Builder.deal_paths` what the JSON rows gave it."""

    def __init__(self) -> None:
        self._owners = array("q")
        self._ids = array("q")
        self._stages = array("i")
        self.stage_names: list[str] = []
        self._stage_codes: dict[Any, int] = {}
        # CREATED_TIME of each entry as written, UTF-8 in one buffer (not half a million small strings kept across
        # the deals: freed after them, they left the allocator's arenas fragmented, +50 MB of peak at full size).
        self._times = bytearray()
        self._ends = array("q")  # where each entry's time ends in _times
        self._odd: dict[int, list[Mapping[str, Any]]] = {}  # deal → its entries not kept in the arrays

    def kept(self, history: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        """Passes ``history`` (tuples of ``columns.HISTORY_COLUMNS``, :func:`_history`) on, keeping what it needs."""
        owners, ids, stages, codes = self._owners, self._ids, self._stages, self._stage_codes
        times, ends = self._times, self._ends
        for row in history:
            yield row
            entry, raw_owner, text, stage = row[0], row[1], row[2], row[3]
            try:
                owner = int(raw_owner or 0)
            except (TypeError, ValueError):
                continue  # deal_paths skips it whatever the period's deals are
            if not text:
                continue
            if (type(entry) is int and type(stage) is str and type(text) is str
                    and -(2**63) <= entry < 2**63 and -(2**63) <= owner < 2**63):  # fmt: skip
                code = codes.get(stage)
                if code is None:
                    code = codes[stage] = len(self.stage_names)
                    self.stage_names.append(stage)
                owners.append(owner)
                ids.append(entry)
                stages.append(code)
                times += text.encode("utf-8", "surrogatepass")
                ends.append(len(times))
            else:  # an ID written as text, a missing or odd field: the entry as read, for deal_paths to judge
                whole = {"OWNER_ID": raw_owner, "CREATED_TIME": text, "STAGE_ID": stage}
                if entry is not columns.ABSENT:  # a JSON row without an ID: row["ID"] raises, as it did
                    whole["ID"] = entry
                self._odd.setdefault(owner, []).append(whole)

    def plain(self) -> Iterator[tuple[int, int, int, Any]]:
        """(deal, entry ID, stage code in :attr:`stage_names`, ``CREATED_TIME``) of each entry kept in the arrays."""
        times, start = self._times, 0
        for owner, entry, code, end in zip(self._owners, self._ids, self._stages, self._ends, strict=True):
            yield owner, entry, code, times[start:end].decode("utf-8", "surrogatepass")
            start = end

    def odd(self, deals: Mapping[int, Any]) -> Iterator[Mapping[str, Any]]:
        """The entries kept whole, of these deals, as read."""
        for owner, rows in self._odd.items():
            if owner in deals:
                yield from rows


def _time(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


def success_stages(stages: StageBook | None) -> set[str]:
    """The pipelines' success stages (``STAGE_ID``) of a stage book."""
    return {
        stage_id for entries in (stages.stages.values() if stages else ()) for stage_id, _, kind in entries
        if kind == "success"
    }  # fmt: skip


def last_wins(history: Iterable[Mapping[str, Any]] | columns.Rows, stages: Iterable[str] = (),
              zone: ZoneInfo | None = None) -> dict[int, str]:  # fmt: skip
    """Each deal's last move into a success stage (``STAGE_SEMANTIC_ID`` S or one of ``stages``) in the stage
    history: deal ID → the entry's ``CREATED_TIME`` as written. The win of a deal without ``CLOSEDATE``.
    ``history``: JSON rows, or the snapshot's columnar reader (``report.crm.read_rows``)."""
    return _last_wins(_history(history), stages, zone)


def _last_wins(history: Iterable[tuple[Any, ...]], stages: Iterable[str] = (), zone: ZoneInfo | None = None
               ) -> dict[int, str]:  # fmt: skip
    """:func:`last_wins` of tuples of ``columns.HISTORY_COLUMNS``."""
    known = set(stages)
    wins: dict[int, tuple[datetime, str]] = {}
    for _, raw_owner, created, stage, semantic in history:
        if semantic == "S" or stage in known:
            try:  # a malformed entry dates nothing; it must not stop the night's run
                owner, text = int(raw_owner or 0), str(created or "")
                at = _time(text)
                if at.tzinfo is None:
                    at = at.replace(tzinfo=zone or UTC)
            except (TypeError, ValueError):
                continue
            if owner not in wins or at > wins[owner][0]:
                wins[owner] = (at, text)
    return {owner: text for owner, (_, text) in wins.items()}


def _history(history: Iterable[Mapping[str, Any]] | columns.Rows) -> Iterable[tuple[Any, ...]]:
    """The stage history as tuples of ``columns.HISTORY_COLUMNS``: the columnar reader's, or JSON rows' (an entry
    without an ``ID`` gives ``columns.ABSENT`` there: no error until the funnel reads ``row["ID"]`` of it)."""
    if isinstance(history, columns.Rows):
        return _rows(history, columns.HISTORY_COLUMNS)
    return columns.tuples(history, columns.HISTORY_COLUMNS, columns.ABSENT)


def won_day(deal: Mapping[str, Any], wins: Mapping[int, str], zone: ZoneInfo) -> date | None:
    """A won deal's day, as the report counts it: ``CLOSEDATE`` as written (a calendar day), else the day in ``zone``
    of its last move into a success stage (``wins`` from :func:`last_wins`); never ``DATE_MODIFY`` (a later edit
    must not move revenue). None: neither is known."""
    closed = str(deal.get("CLOSEDATE") or "")
    if closed:
        try:
            return date.fromisoformat(closed[:10])
        except ValueError:
            return None
    try:
        text = wins.get(int(deal.get("ID") or 0))
    except (TypeError, ValueError):
        return None
    if not text:
        return None
    try:
        moment = _time(text)
    except ValueError:
        return None
    return moment.date() if moment.tzinfo is None else moment.astimezone(zone).date()


def _customer(deal: Mapping[str, Any]) -> str:
    """The contact; without one, the company (its deals are one customer's); without either, the deal itself."""
    return _customer_of(deal.get("CONTACT_ID"), deal.get("COMPANY_ID"), deal.get("ID"))


def _customer_of(contact: Any, company: Any, deal_id: Any) -> str:
    if contact and str(contact) != "0":
        return f"c{contact}"
    return f"o{company}" if company and str(company) != "0" else f"d{deal_id}"


def _rows(records: Iterable[Mapping[str, Any]] | columns.Rows, wanted: tuple[str, ...]) -> Iterable[tuple[Any, ...]]:
    """Records as tuples of ``wanted``: the columnar reader's own (asked again for other columns), or JSON rows'."""
    if isinstance(records, columns.Rows):
        if records.columns == wanted:
            return records
        return columns.Rows(records.objects, records.entity, wanted, records.snapshot_prefix)
    return columns.tuples(records, wanted)


MAX_AMOUNT = Decimal("1e16")  # Bitrix24 keeps OPPORTUNITY as DECIMAL(18,2): anything past it is no money


def _decimal(value: Any) -> Decimal:
    """A money amount; ``ValueError`` for text that is no finite amount ("NaN", "Infinity", "1e400")."""
    if value is None or value == "":
        return ZERO
    if type(value) is Decimal:  # a spend row's cost, decoded as Decimal: a copy through str would be the same number
        number = value
    else:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite() or abs(number) >= MAX_AMOUNT:
        raise ValueError(f"not an amount of money: {value!r}")
    return number


BAD_AMOUNTS_LISTED = 100


def _amount(value: Any, *, negative: bool = False) -> tuple[Decimal | None, str | None]:
    """A won deal's amount, or why it has none: ``empty``, ``negative`` (unless allowed: a profit may be a loss),
    ``not_a_number``."""
    if value is None or str(value).strip() == "":
        return None, "empty"
    try:
        number = _decimal(value)
    except ValueError:
        return None, "not_a_number"
    if number < 0 and not negative:
        return None, "negative"
    return number, None


def _nonempty(totals: Totals) -> bool:
    return bool(totals.spend or totals.leads or totals.deals or totals.won_deals or totals.impressions)


def _sum(campaigns: Iterable[_Campaign]) -> tuple[tuple[Totals, Totals], tuple[Totals, Totals]]:
    """Per period: the totals of the campaigns, and of those that carry spend in that period (the paid rule)."""
    result, paid = (Totals(), Totals()), (Totals(), Totals())
    for campaign in campaigns:
        for part, paid_part, totals in zip(result, paid, campaign.totals, strict=True):
            part.add(totals)
            if totals.spend > 0:  # a refund larger than the cost is no paid row
                paid_part.add(totals)
    return result, paid


def _no_rate_revenue(campaigns: Iterable[_Campaign], index: int) -> Decimal:
    """Revenue of the campaign rows whose only spend in that period has no exchange rate («нет курса»): there is spend,
    so it is no «выручка без расхода»; with no rate, it is out of every ratio as well."""
    return sum(
        (c.totals[index].revenue for c in campaigns if c.unconverted[index] and c.totals[index].spend <= 0), ZERO
    )


def _rank(sources: Mapping[str, list[_Campaign]]) -> tuple:
    """Most money first (spend, then revenue), then most leads; names break ties so the order is stable."""
    current = _sum(c for campaigns in sources.values() for c in campaigns)[0][CURRENT]
    names = min((c.channel, c.source, c.campaign) for campaigns in sources.values() for c in campaigns)
    return (-current.spend, -current.revenue, -current.leads, names)


def _matched(campaign: _Campaign) -> str:
    current = campaign.totals[CURRENT]
    has_records = bool(current.leads or current.deals or current.won_deals)
    if campaign.has_spend and current.spend:
        return "spend_and_leads" if has_records else "spend_only"
    if campaign.unconverted[CURRENT]:
        return "no_rate"  # never «лиды без расхода»: there is spend, in a currency with no rate
    return "leads_only" if has_records else "none"


DRILLDOWN_LIMIT = 50


def _drilldown(campaign: _Campaign) -> list[Drilldown]:
    """The campaign's medium × content × term cells, most leads first; past the first fifty, one "(другие)" cell."""
    # Ordered by (-leads, -revenue, cell): decorated in one pass (no key function called per cell), and past the
    # limit only the first 49 picked out (a campaign of a year has a thousand cells); the rest is summed whatever
    # its order (integers and kopecks: exact).
    order = [(-values[0], -values[3], key, values) for key, values in campaign.drill.items()]
    if len(order) > DRILLDOWN_LIMIT:
        first = heapq.nsmallest(DRILLDOWN_LIMIT - 1, order)
        shown = {key for _, _, key, _ in first}
        leads_rest, deals_rest, won_rest, revenue_rest = 0, 0, 0, ZERO
        for key, (leads, deals, won, revenue) in campaign.drill.items():
            if key not in shown:
                leads_rest += leads
                deals_rest += deals
                won_rest += won
                revenue_rest += revenue
        rest = [leads_rest, deals_rest, won_rest, revenue_rest]
        cells = [*((key, values) for _, _, key, values in first), (("(другие)", "", ""), rest)]
    else:
        order.sort()
        cells = [(key, values) for _, _, key, values in order]
    return [
        Drilldown(
            medium=medium,
            content=content,
            term=term,
            leads=leads,
            deals=deals,
            won_deals=won,
            revenue=metrics.money(revenue),
        )
        for (medium, content, term), (leads, deals, won, revenue) in cells
    ]


def _values(computed: metrics.Metrics) -> MetricValues:
    return MetricValues(**computed.__dict__)


def _change(current: MetricValues, previous: MetricValues) -> Change:
    def points(now: Decimal | None, before: Decimal | None) -> Decimal | None:
        return None if now is None or before is None else now - before

    return Change(
        spend_pct=metrics.change(current.spend, previous.spend),
        leads_pct=metrics.change(current.leads, previous.leads),
        deals_pct=metrics.change(current.deals, previous.deals),
        won_deals_pct=metrics.change(current.won_deals, previous.won_deals),
        revenue_pct=metrics.change(current.revenue, previous.revenue),
        cpl_pct=metrics.change(current.cpl, previous.cpl),
        romi_pp=points(current.romi, previous.romi),
        cr_pp=points(current.cr, previous.cr),
    )


__all__ = ["UNKNOWN", "ReportOptions", "build_report", "default_periods", "previous_period"]
