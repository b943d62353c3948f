"""``roi.json``: the report's pydantic models. ``docs/roi.schema.json`` is generated from ``RoiReport``.

Money and percentages are exact decimals rounded at the end (kopecks, hundredths of a percent) and written as JSON
strings of that decimal (``"525.00"``: a float would turn kopecks into binary fractions); an empty cell (nothing to
divide by) is ``null``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from throughline.report.segments import SegmentsSection

SCHEMA_VERSION = 2  # 2: money and percentages as decimal strings, the paid rule, cohort CR


def _plain(value: Decimal) -> str:
    """A decimal string without exponent: ``Decimal(1) / Decimal("0.01")`` is "100", never "1E+2"."""
    return format(value, "f")


Number = Annotated[Decimal, PlainSerializer(_plain, return_type=str, when_used="json")]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(_Model):
    date_from: date
    date_to: date

    @property
    def days(self) -> int:
        return (self.date_to - self.date_from).days + 1


class MetricValues(_Model):
    """One row's figures. Percentages are in % (525 means 525 %); money is in the report currency."""

    impressions: int
    clicks: int
    ctr: Number | None = Field(description="clicks / impressions × 100 %")
    cpc: Number | None = Field(description="spend / clicks")
    cpm: Number | None = Field(description="spend / impressions × 1000")
    spend: Number
    leads: int
    cpl: Number | None = Field(description="spend / leads")
    deals: int
    cr: Number | None = Field(description="leads of the period that became a deal / leads × 100 % (a cohort rate)")
    deals_per_lead: Number | None = Field(
        default=None, description="deals created / leads created × 100 % (the old CR: different cohorts, can pass 100)"
    )
    won_deals: int
    revenue: Number
    average_check: Number | None = Field(description="revenue / won deals with an amount")
    cpo: Number | None = Field(description="spend / paid won deals")
    new_customers: int
    cac: Number | None = Field(description="spend / paid new customers")
    romi: Number | None = Field(description="(paid revenue − spend) / spend × 100 %")
    roi: Number | None = Field(
        description="(gross profit of paid rows − spend) / spend × 100 %; equals ROMI without a margin or profit field"
    )
    roas: Number | None = Field(description="paid revenue / spend × 100 %")
    drr: Number | None = Field(description="ДРР: spend / paid revenue × 100 %")
    sales_cycle_days: Number | None = Field(description="mean days from lead (or deal) creation to the won close")
    paid_leads: int = Field(default=0, description="leads of the rows below that carry spend (the paid rule)")
    paid_won_deals: int = Field(default=0, description="won deals of the rows below that carry spend")
    paid_revenue: Number = Field(default=Decimal(0), description="revenue of the rows below that carry spend")
    unpaid_revenue: Number = Field(
        default=Decimal(0), description="«выручка без расхода»: revenue of the rows below without spend"
    )
    no_rate_revenue: Number = Field(
        default=Decimal(0),
        description="revenue of the rows below whose spend has no exchange rate («нет курса»): out of every ratio, "
        "and not «выручка без расхода»",
    )


class Change(_Model):
    """Against the previous period: relative change in % for amounts, difference in points for ROMI and CR."""

    spend_pct: Number | None
    leads_pct: Number | None
    deals_pct: Number | None
    won_deals_pct: Number | None
    revenue_pct: Number | None
    cpl_pct: Number | None
    romi_pp: Number | None
    cr_pp: Number | None


class Drilldown(_Model):
    """Leads and deals of a campaign by utm_medium × utm_content × utm_term (spend is not imported at this grain)."""

    medium: str
    content: str
    term: str
    leads: int
    deals: int
    won_deals: int
    revenue: Number


class Row(_Model):
    level: Literal["total", "channel", "source", "campaign"]
    channel: str = Field(description="channel code (sources taxonomy), e.g. paid_search")
    channel_label: str = Field(description="the channel's Russian label")
    source: str | None = Field(description="canonical source, e.g. yandex")
    source_label: str | None
    campaign: str | None = Field(description="campaign name (or the utm_campaign value when no spend matched)")
    campaign_id: str | None = Field(description="the ad platform's campaign id when spend matched")
    platform: str | None = Field(description="spend platform: yandex_direct, google_ads, vk_ads, manual")
    matched: Literal["spend_and_leads", "spend_only", "leads_only", "no_rate", "none"] | None = Field(
        description="campaign rows: whether spend and CRM records met in this row; no_rate: spend with no exchange rate"
    )
    unconverted_spend: dict[str, Number] = Field(
        default_factory=dict,
        description="spend with no exchange rate, per currency in that currency: out of `spend` and every ratio",
    )
    metrics: MetricValues
    previous: MetricValues | None
    change: Change | None
    drilldown: list[Drilldown] = Field(default_factory=list)


class StageCount(_Model):
    stage_id: str
    name: str
    semantics: Literal["process", "success", "failure"]
    count: int = Field(description="records now in this stage")
    reached: int = Field(description="records that reached this stage or a later one (process and success stages)")
    conversion_from_previous: Number | None = Field(description="% of the previous stage's `reached`")
    mean_days_in_stage: Number | None = Field(description="from stage history; null when no history was read")


class Pipeline(_Model):
    entity: Literal["lead", "deal"]
    category_id: int | None
    name: str
    total: int
    won: int
    lost: int
    stages: list[StageCount]
    loss_reasons: dict[str, int] = Field(description="failure stage name → records that ended there")
    source: Literal["stage_history", "current_stage"] = Field(
        description="how `reached` was counted: from crm.stagehistory.list, or derived from current stages"
    )


class UnknownTag(_Model):
    utm_source: str
    leads: int


class UnmatchedSpend(_Model):
    platform: str
    campaign_id: str | None
    campaign: str | None
    spend: Number


class BadAmountDeal(_Model):
    deal_id: int
    amount: str = Field(description="OPPORTUNITY as the CRM gave it")
    problem: Literal["empty", "negative", "not_a_number"]


class SharedCampaign(_Model):
    platform: str
    campaign: str
    campaign_ids: list[str]


class DataQuality(_Model):
    leads: int
    leads_with_source: int
    known_source_share: Number | None = Field(description="% of leads with a UTM source or a CRM source")
    target_share: Number = Decimal(95)
    meets_target: bool | None
    leads_without_source: int
    unknown_tags: list[UnknownTag] = Field(description="utm_source values the taxonomy does not know, most leads first")
    suspected_duplicates: int = Field(description="leads of the period sharing a phone or e-mail with an earlier one")
    webform_leads_without_tags: int = Field(
        default=0,
        description="leads of Bitrix24's own CRM forms (SOURCE_ID WEBFORM) without utm_source or utm_medium: a form "
        "embedded without its UTM fields, so the ad that brought them is unknown",
    )
    unmatched_spend: Number = Field(description="spend whose campaign matched no lead in the period")
    unmatched_spend_campaigns: list[UnmatchedSpend]
    spend_rows_with_vat: int = Field(description="spend rows of the period imported with VAT (the rest without)")
    deals_without_rate: int = Field(description="won deals in a currency with no known rate (left out of revenue)")
    deals_without_amount: int = Field(
        default=0, description="won deals with an empty OPPORTUNITY: counted as won, left out of the average check"
    )
    deals_invalid_amount: int = Field(
        default=0, description="won deals whose OPPORTUNITY is negative or no number: counted as won, no revenue"
    )
    bad_amount_deals: list[BadAmountDeal] = Field(
        default_factory=list, description="the won deals above by id (the first 100)"
    )
    deals_without_profit: int = Field(
        default=0, description="won deals whose profit field is empty: unknown profit, left out of ROI"
    )
    won_deals_without_date: int = Field(
        default=0, description="won deals with no CLOSEDATE and no win in the stage history: in no period"
    )
    spend_vat_basis: Literal["net", "gross"] = Field(
        default="net", description="spend is shown without VAT (net) or with it (REPORT_SPEND_WITH_VAT)"
    )
    vat_rate: Number = Field(default=Decimal("0.22"), description="VAT_RATE used to convert spend rows")
    spend_rows_vat_converted: int = Field(
        default=0, description="spend rows imported on the other VAT basis and converted with VAT_RATE"
    )
    shared_campaign_names: list[SharedCampaign] = Field(
        default_factory=list,
        description="campaign names two accounts share whose leads matched by name only: one row with both spends",
    )
    spend_without_rate: dict[str, Number] = Field(
        default_factory=dict,
        description="spend in a currency with no known rate, per currency in that currency (left out of spend)",
    )
    journeys: str | None = Field(default=None, description="why attribution is missing (no journey export yet)")
    records_access_denied: int = Field(
        default=0,
        description="«Access denied» answers the writers met: CRM records the webhook's user may not see, whose "
        "touches are missing from journeys (make the webhook's user an administrator)",
    )


class CurrencyRate(_Model):
    currency: str
    rate: Number = Field(description="1 unit = rate × report currency")
    date: date | None
    source: str = Field(description="rates/ file source, or crm.currency.list")


class AttributionRow(_Model):
    channel: str = Field(description='channel code, or "(no touches)" for won deals with no known journey')
    channel_label: str
    conversions: Number = Field(description="won deals credited to the channel (fractions to 0.0001)")
    revenue: Number = Field(description="revenue credited to the channel, in the report currency")
    paid_revenue: Number = Field(
        description="the part credited to the channel's paid touches (their channel and source carry spend)"
    )
    spend: Number = Field(description="the channel's spend in the period")
    romi: Number | None = Field(description="the paid rule: (paid_revenue − spend) / spend × 100 %; null without spend")


class AttributionSection(_Model):
    """The period's won deals credited over whole journeys (throughline.attribution, docs/attribution.md)."""

    default_model: str = Field(description="the model roi.csv's attributed columns use (ATTRIBUTION_DEFAULT_MODEL)")
    snapshot: str = Field(description="the journey export read (journeys/snapshot=<date>)")
    half_life_days: Number = Field(description="time decay's half-life (ATTRIBUTION_HALF_LIFE_DAYS)")
    markov_order: int = Field(description="the Markov chain's order (ATTRIBUTION_MARKOV_ORDER)")
    conversions: Number = Field(description="won deals attributed: every model's rows add up to this")
    revenue: Number = Field(description="their revenue: every model's rows add up to this, to the kopeck")
    touches: int = Field(description="marketing touches read (sales-side `crm` touches left out)")
    converting_paths: int = Field(description="distinct paths that ended in a won deal")
    non_converting_journeys: int = Field(description="journeys (or journey tails) without a won deal")
    deals_without_person: int = Field(description='won deals the export links to no person: path "(no touches)"')
    models: dict[str, list[AttributionRow]] = Field(description="model id → one row per channel, sorted by code")


class CohortRow(_Model):
    """Customers (contacts, else companies) by the month, channel and source of their first won deal."""

    month: str = Field(description="YYYY-MM of the first won deal")
    channel: str = Field(default="", description="channel code: Yandex Direct and Yandex organic are two cohorts")
    channel_label: str = ""
    source: str
    source_label: str
    customers: int
    repeat_customers: int = Field(description="customers with two or more won deals")
    repeat_rate: Number | None = Field(description="repeat customers / customers × 100 %")
    revenue: list[Number] = Field(description="cumulative revenue by month since acquisition (0 = that month)")
    ltv: list[Number] = Field(description="cumulative revenue per customer, by month since acquisition")


class Span(_Model):
    """A day or an ISO week (clipped to the period) of the dynamics."""

    date_from: date
    date_to: date
    label: str = Field(description="YYYY-MM-DD of a day, or the ISO week YYYY-Www")


class DynamicsPoint(Span):
    spend: Number
    leads: int
    won_deals: int
    revenue: Number


class ChannelWeeks(_Model):
    channel: str
    channel_label: str
    spend: list[Number] = Field(description="the channel's spend by week")
    revenue: list[Number] = Field(description="by week, revenue of the channel's rows that carry spend (paid rule)")
    romi: list[Number | None] = Field(description="(revenue − spend) / spend × 100 % by week; null without spend")


class Dynamics(_Model):
    """The period by day (by ISO week past 62 days): the points add up to the headline; ROMI by channel by week."""

    granularity: Literal["day", "week"]
    points: list[DynamicsPoint]
    weeks: list[Span] = Field(description="the ISO weeks of romi_by_channel, clipped to the period")
    romi_by_channel: list[ChannelWeeks] = Field(description="channels with spend in the period, most spend first")


class ConversionReason(_Model):
    reason: str
    count: int


class ConversionsPlatform(_Model):
    """Won deals of the period sent back to one ad platform as offline conversions (throughline.conversions)."""

    platform: str = Field(description="yandex_metrica, google_ads or vk_ads")
    label: str
    won_deals: int = Field(description="won deals of the period the conversions run looked at")
    revenue: Number = Field(description="their revenue in the report currency")
    with_identifier: int = Field(description="won deals that carried an id this platform joins on")
    sent: int = Field(description="delivered to the platform (accepted, rejected or still processing)")
    accepted: int
    rejected: int
    refused: int = Field(description="not sent: older than the platform's join window")
    pending: int = Field(description="delivered, the platform's processing not finished (Metrica)")
    failed: int = Field(description="not delivered yet (the platform was unreachable); retried every hour")
    revenue_accepted: Number = Field(description="revenue of the accepted conversions: what the platform can see")
    visible_share: Number | None = Field(description="revenue accepted / revenue × 100 %")
    reasons: list[ConversionReason] = Field(default_factory=list, description="why conversions were rejected/refused")


class RoiReport(_Model):
    schema_version: Literal[2] = SCHEMA_VERSION
    generated_at: datetime
    currency: str
    timezone: str
    period: Period
    previous_period: Period
    comparison: Literal["same_days_previous_month", "previous_month", "preceding_days", "custom"] = Field(
        default="custom", description="what previous_period is: like for like (the same days of the month before)"
    )
    simple_crm: bool = Field(
        default=False, description="simple CRM mode (no leads): a deal's creation is the request («Обращения»)"
    )
    attribution_basis: str = Field(
        description="how leads and deals are assigned to rows: the lead's UTM tags, else the deal's, else SOURCE_ID"
    )
    roi_basis: Literal["margin", "profit_field", "romi"]
    headline: MetricValues
    headline_previous: MetricValues
    headline_change: Change
    rows: list[Row] = Field(description="channel → source → campaign, in that order, each followed by its children")
    funnels: list[Pipeline]
    data_quality: DataQuality
    currency_rates: list[CurrencyRate]
    crm: dict[str, int | str | None] = Field(description="how the CRM snapshot was read: calls, records, mode")
    attribution: AttributionSection | None = Field(
        default=None, description="every attribution model over the journeys; null before the first journey export"
    )
    cohorts: list[CohortRow] = Field(
        default_factory=list, description="monthly acquisition cohorts by source, up to the period's end"
    )
    dynamics: Dynamics | None = Field(default=None, description="the period by day or week (report.dynamics)")
    segments: SegmentsSection | None = Field(
        default=None, description="customer segments (report.segments); null before the segments job's first night"
    )
    conversions: list[ConversionsPlatform] = Field(
        default_factory=list, description="won deals sent back to the ad platforms (report.conversions)"
    )


def json_schema() -> str:
    """The committed ``docs/roi.schema.json``: ``python -m throughline.report.models > docs/roi.schema.json``."""
    import json

    schema = RoiReport.model_json_schema(mode="serialization")
    schema["$id"] = "https://github.com/throughline/throughline/docs/roi.schema.json"
    return json.dumps(schema, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(json_schema(), end="")
