"""Preparing: what a submission alone decides, before it shares a round with anyone — its touches and journey lines,
the new lead's (or, in simple CRM mode, the deal's and contact's) fields, and the manager's repeat-request notice."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from throughline.adapters.journey_store import APPLIED, encode_item
from throughline.bitrix24.query import build_query
from throughline.capture.submissions import Submission
from throughline.config import Settings
from throughline.journey.lines import format_journey, format_line
from throughline.journey.touches import last_source, submission_touches
from throughline.sources import (
    DIRECT,
    DISPLAY,
    EMAIL,
    MESSENGER,
    OFFLINE,
    ORGANIC_SEARCH,
    PAID_SEARCH,
    REFERRAL,
    SOCIAL,
    Source,
)
from throughline.writer.leads.model import ORIGINATOR_ID, SIMPLE, Prepared

# Where each channel lands in the portal's default source dictionary (crm.status.list ENTITY_ID=SOURCE).
DEFAULT_SOURCE_IDS = {
    PAID_SEARCH: "ADVERTISING",
    DISPLAY: "ADVERTISING",
    ORGANIC_SEARCH: "WEB",
    SOCIAL: "WEB",
    MESSENGER: "WEB",
    REFERRAL: "WEB",
    DIRECT: "WEB",
    EMAIL: "EMAIL",
    OFFLINE: "OTHER",
}
# Analytics client ids and VK Ads' click id, each in a lead (and deal) user field that ``bitrix-setup`` creates: offline
# conversions are sent back to the platforms with them. A portal without the fields ignores them (unknown keys).
CLIENT_ID_FIELDS = {
    "ym_client_id": ("UF_CRM_TL_YM_CLIENT_ID", {"ru": "ClientID Яндекс Метрики", "en": "Yandex Metrica ClientID"}),
    "ga_client_id": ("UF_CRM_TL_GA_CLIENT_ID", {"ru": "Client ID Google Analytics", "en": "Google Analytics ClientID"}),
    "rb_clickid": ("UF_CRM_TL_VK_CLICK_ID", {"ru": "rb_clickid VK Рекламы", "en": "VK Ads click id (rb_clickid)"}),
}


@dataclass(frozen=True)
class LeadRules:
    """How leads are filled in: the portal-specific choices an operator configures."""

    journey_field: str = "UF_CRM_CUSTOMER_JOURNEY"
    source_map: dict[str, str] = field(default_factory=dict)
    responsible_map: dict[str, str] = field(default_factory=dict)
    default_responsible_id: int | None = None
    title_template: str = "Заявка с формы «{form}»"
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Europe/Moscow"))

    @classmethod
    def from_settings(cls, settings: Settings) -> LeadRules:
        return cls(
            journey_field=settings.bitrix24_journey_field,
            source_map=settings.bitrix24_source_map,
            responsible_map=settings.bitrix24_responsible_map,
            default_responsible_id=settings.bitrix24_default_responsible_id,
            title_template=settings.lead_title_template,
            zone=settings.zone,
        )

    def source_id(self, source: Source) -> str:
        """Most specific first: ``channel/source``, ``channel``, ``paid``, then the built-in default."""
        for key in (f"{source.channel}/{source.source}", source.channel, "paid" if source.paid else "organic"):
            if key in self.source_map:
                return self.source_map[key]
        return "ADVERTISING" if source.paid else DEFAULT_SOURCE_IDS[source.channel]

    def responsible_id(self, source: Source) -> int | None:
        for key in (f"{source.channel}/{source.source}", source.channel, "paid" if source.paid else "organic"):
            if key in self.responsible_map:
                return int(self.responsible_map[key])
        return self.default_responsible_id


def prepare(submission: Submission, rules: LeadRules, mode: int) -> Prepared:
    """Everything the rounds need of one submission; raises when it cannot be planned, formatted or encoded."""
    if not isinstance(submission.submission_id, str) or not submission.submission_id:
        raise TypeError("submission_id must be a non-empty string")
    for name in ("phone", "email"):
        if not isinstance(getattr(submission, name), str | None):
            raise TypeError(f"{name} must be text")
    zone = rules.zone
    touches = submission_touches(submission, zone)
    lines = {touch.touch_id: format_line(touch, zone, first=i == 0) for i, touch in enumerate(touches)}
    [repeat_touch] = submission_touches(submission, zone, repeat=True)
    contacts = frozenset(value for value in (submission.phone, submission.email) if value)
    item = Prepared(
        submission=submission,
        person=submission.person_key(),
        contacts=contacts,
        lock_names=tuple(sorted(f"contact:{value}" for value in contacts)),
        touches=touches,
        lines=lines,
        fields=new_fields(submission, format_journey(touches, zone), rules, mode),
        contact_fields=contact_fields(submission, rules),
        repeat_touch=repeat_touch,
        repeat_line=format_line(repeat_touch, zone),
        comment=repeat_comment(submission),
    )
    # What the round will send and store must encode: find out now, not in the middle of a shared round.
    build_query({"fields": item.fields})
    build_query({"fields": item.contact_fields})
    build_query({"fields": {"COMMENT": item.comment}})
    for touch in [*touches, repeat_touch]:
        encode_item("LEAD#0", touch, APPLIED, line=item.repeat_line)
    return item


def new_fields(item: Submission, journey_text: str, rules: LeadRules, mode: int) -> dict[str, Any]:
    """A new lead's fields (in simple mode the deal's; its phone and e-mail go to the contact)."""
    source = last_source(item)
    visit = item.last_visit
    tags = visit.tags()
    if not any(tags.values()) and source.channel != DIRECT:
        # No tags were sent, but we know where the visit came from: record it as GA-style source / medium.
        tags = {**tags, "utm_source": source.source, "utm_medium": source.medium}
    fields: dict[str, Any] = {
        "TITLE": rules.title_template.format(
            form=item.form_id, name=item.name or "", channel=source.channel_label, source=source.source_label
        ).strip(),
        "NAME": item.name,
        "LAST_NAME": item.last_name,
        "SECOND_NAME": item.second_name,
        "COMMENTS": _comments(item),
        "SOURCE_ID": rules.source_id(source),
        "SOURCE_DESCRIPTION": _source_description(item, source),
        "UTM_SOURCE": tags["utm_source"],
        "UTM_MEDIUM": tags["utm_medium"],
        "UTM_CAMPAIGN": tags["utm_campaign"],
        "UTM_CONTENT": tags["utm_content"],
        "UTM_TERM": tags["utm_term"],
        "ASSIGNED_BY_ID": rules.responsible_id(source),
        "ORIGINATOR_ID": ORIGINATOR_ID,
        "ORIGIN_ID": item.submission_id,
        "OPENED": "Y",
        rules.journey_field: journey_text,
    }
    ids = {**item.client_ids, **item.click_ids}
    fields |= {name: ids[key] for key, (name, _) in CLIENT_ID_FIELDS.items() if ids.get(key)}
    if mode == SIMPLE:
        for name in ("NAME", "LAST_NAME", "SECOND_NAME"):
            fields.pop(name)  # a deal has no person's name: it is the contact's
    else:
        fields |= contact_details(item)
    return {key: value for key, value in fields.items() if value not in (None, "")}


def contact_fields(item: Submission, rules: LeadRules) -> dict[str, Any]:
    """Simple mode: the contact of a new person (a deal cannot hold a phone or an e-mail)."""
    source = last_source(item)
    fields: dict[str, Any] = {
        "NAME": item.name,
        "LAST_NAME": item.last_name,
        "SECOND_NAME": item.second_name,
        "SOURCE_ID": rules.source_id(source),
        "SOURCE_DESCRIPTION": _source_description(item, source),
        "ASSIGNED_BY_ID": rules.responsible_id(source),
        "OPENED": "Y",
        **contact_details(item),
    }
    return {key: value for key, value in fields.items() if value not in (None, "")}


def contact_details(
    item: Submission, known_phones: Collection[Any] = (), known_emails: Collection[Any] = ()
) -> dict[str, Any]:
    """The submission's phone and e-mail as CRM multi-fields, leaving out those a record already holds."""
    details: dict[str, Any] = {}
    if item.phone and item.phone not in known_phones:
        details["PHONE"] = [{"VALUE": item.phone, "VALUE_TYPE": "WORK"}]
    if item.email and item.email not in known_emails:
        details["EMAIL"] = [{"VALUE": item.email, "VALUE_TYPE": "WORK"}]
    return details


def _comments(item: Submission) -> str | None:
    parts = [item.comment] if item.comment else []
    if item.extra:
        parts.append("\n".join(f"{key}: {value}" for key, value in item.extra.items()))
    return "\n\n".join(parts) or None


def _source_description(item: Submission, source: Source) -> str:
    text = f"{source.channel_label}: {source.source_label}"
    if item.last_visit.utm_campaign:
        text += f", кампания «{item.last_visit.utm_campaign}»"
    text += f"\nФорма «{item.form_id}»"
    if item.last_visit.landing_url:
        text += f", страница {item.last_visit.landing_url}"
    return text


def repeat_comment(item: Submission) -> str:
    """The manager's timeline notice of a repeat request."""
    source = last_source(item)
    text = f"Повторное обращение через форму «{item.form_id}» ({source.channel_label}: {source.source_label})"
    if item.name:
        text += f"\nИмя: {item.name}"
    details = _comments(item)
    return f"{text}\n\n{details}" if details else text
