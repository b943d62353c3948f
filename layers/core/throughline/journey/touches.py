"""What a submission says about the journey: where its visits came from, and the touches it adds.

Kept apart from ``submissions`` so the HTTP path (which only validates and stores) never loads the classifier.
"""

from __future__ import annotations

from datetime import tzinfo

from throughline.capture.submissions import Submission, Visit, click_ids_in
from throughline.journey import lines as journey
from throughline.journey.lines import Touch
from throughline.sources import Source, classify, referrer_host


def last_source(submission: Submission) -> Source:
    """The visit that sent the form: the lead's source."""
    return _classify(submission.last_visit, submission.click_ids, own_hosts(submission))


def first_source(submission: Submission) -> Source | None:
    """The first visit the site remembered (first-touch tags from the capture snippet), if any."""
    if submission.first_visit is None:
        return None
    # Messages queued before first_click_ids existed carry them only in the (clipped) first landing address.
    click_ids = submission.first_click_ids or click_ids_in(submission.first_visit.landing_url)
    if submission.first_visit.is_empty() and not click_ids:  # a click id alone (auto-tagged Google Ads) is a visit
        return None
    return _classify(submission.first_visit, click_ids, own_hosts(submission))


def own_hosts(submission: Submission) -> tuple[str, ...]:
    """The site's own hosts: a referrer from them is navigation inside the site, not a source."""
    hosts = {referrer_host(submission.last_visit.landing_url), referrer_host(submission.origin)}
    if submission.first_visit:
        hosts.add(referrer_host(submission.first_visit.landing_url))
    return tuple(sorted(host for host in hosts if host))


def submission_touches(submission: Submission, zone: tzinfo, *, repeat: bool = False) -> list[Touch]:
    """The touches a submission adds: for a new lead, the first remembered visit when it differs from the
    converting one (another source, or another day in ``zone``, the journey's time zone), then the form request
    itself; for a repeat request, the request alone."""
    last = last_source(submission)
    visit = submission.last_visit
    form_touch = Touch(
        touch_id=f"{submission.submission_id}:form",
        at=submission.received_at,
        kind=journey.REPEAT_REQUEST if repeat else journey.FORM,
        channel=last.channel,
        source=last.source,
        medium=last.medium,
        campaign=visit.utm_campaign,
        content=visit.utm_content,
        term=visit.utm_term,
        detail=f"форма «{submission.form_id}»" if repeat else f"Заявка: форма «{submission.form_id}»",
        # Click and analytics client ids: what offline conversions are sent back to the ad platforms with.
        extra={"form_id": submission.form_id, **submission.client_ids, **submission.click_ids},
    )
    first = None if repeat else first_source(submission)
    if first is None or submission.first_visit is None:
        return [form_touch]
    first_visit = submission.first_visit
    first_at = min(first_visit.seen_at or submission.received_at, submission.received_at)
    same_day = first_at.astimezone(zone).date() == submission.received_at.astimezone(zone).date()
    if _same_visit(first, first_visit, last, visit) and same_day:
        return [form_touch]
    first_touch = Touch(
        touch_id=f"{submission.submission_id}:first",
        at=first_at,
        kind=journey.FIRST_VISIT,
        channel=first.channel,
        source=first.source,
        medium=first.medium,
        campaign=first_visit.utm_campaign,
        content=first_visit.utm_content,
        term=first_visit.utm_term,
    )
    return [first_touch, form_touch]


def _same_visit(first: Source, first_visit: Visit, last: Source, last_visit: Visit) -> bool:
    return (first.channel, first.source, first.medium, first_visit.utm_campaign) == (
        last.channel,
        last.source,
        last.medium,
        last_visit.utm_campaign,
    )


def _classify(visit: Visit, click_ids: dict[str, str], hosts: tuple[str, ...]) -> Source:
    return classify(
        utm_source=visit.utm_source,
        utm_medium=visit.utm_medium,
        click_ids=click_ids,
        referrer=visit.referrer,
        own_hosts=hosts,
        ignored=_ignored_referrers(),
    )


def _ignored_referrers() -> tuple[str, ...]:
    """The stack's IGNORE_REFERRERS, on top of the built-in list (sources.IGNORED_REFERRERS)."""
    from throughline.config import get_settings

    return get_settings().ignore_referrers
