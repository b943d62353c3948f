"""One report run: refresh the CRM snapshot, read spend and rates, build, render, publish dated then ``latest``."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from throughline.adapters.report_store import S3Objects, publish, read_rates, read_spend, run_lock
from throughline.bitrix24.client import Bitrix24Client
from throughline.config import Settings
from throughline.report.attribution import AttributionOptions, read_journeys
from throughline.report.build import ReportOptions, build_report, default_periods, previous_period
from throughline.report.conversions import with_conversions
from throughline.report.crm import HISTORY, SnapshotOptions, read_rows, read_snapshot, refresh_snapshot
from throughline.report.funnel import StageBook
from throughline.report.models import Period, RoiReport
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_html, render_json

# Longer than the function's 900 s timeout: a lease that ran out belongs to a run that no longer exists.
LOCK_LEASE = timedelta(minutes=20)
LOCK_MARGIN = timedelta(minutes=2)  # past the invocation's own end: its reserve, clock skew between runs


def lock_lease(seconds_left: float) -> timedelta:
    """How long a run holds the lock: until its invocation must have ended (a run killed at the timeout then blocks
    the retries Lambda makes a minute or three later no longer than needed), at most ``LOCK_LEASE``."""
    if not math.isfinite(seconds_left):
        return LOCK_LEASE
    return min(LOCK_LEASE, timedelta(seconds=max(seconds_left, 0.0)) + LOCK_MARGIN)


@dataclass(frozen=True)
class RunResult:
    report: RoiReport
    locations: dict[str, str]
    files: dict[str, bytes]


DICTIONARIES_KEY = "crm/snapshot/dictionaries.json"


def report_options(settings: Settings, crm_info: dict) -> ReportOptions:
    """The report's options from the settings: one place, so alerts and digests count as the report does."""
    return ReportOptions(
        currency=settings.report_currency,
        timezone=settings.timezone,
        margin=settings.report_margin,
        profit_field=settings.report_profit_field,
        source_map=settings.bitrix24_source_map,
        spend_with_vat=settings.report_spend_with_vat,
        simple_crm={"simple": True, "classic": False}.get(str(crm_info.get("crm_mode"))),  # None: no leads → simple
        vat_rate=settings.vat_rate,
    )


def periods_for(date_from: date | None, date_to: date | None, today: date) -> tuple[Period, Period]:
    """An on-demand period (with the same number of days before it to compare), or the nightly default."""
    if date_from is None and date_to is None:
        return default_periods(today)
    date_to = date_to or today - timedelta(days=1)
    date_from = date_from or date_to.replace(day=1)
    if date_from > date_to:
        raise ValueError(f"date_from {date_from} is after date_to {date_to}")
    period = Period(date_from=date_from, date_to=date_to)
    return period, previous_period(period)


def run_report(
    settings: Settings,
    client: Bitrix24Client,
    objects: S3Objects,
    *,
    date_from: date | None = None,
    date_to: date | None = None,
    now: Callable[[], datetime] | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> RunResult:
    clock = now or (lambda: datetime.now(settings.zone))
    started = clock()
    period, previous = periods_for(date_from, date_to, started.date())
    lease = lock_lease(client.deadline.seconds_left() + client.deadline.reserve)
    with run_lock(objects, f"run {uuid.uuid4().hex[:12]} at {started.isoformat()}", started, lease):
        return _run(settings, client, objects, period, previous, started, clock, progress)


def _run(
    settings: Settings,
    client: Bitrix24Client,
    objects: S3Objects,
    period: Period,
    previous: Period,
    started: datetime,
    clock: Callable[[], datetime],
    progress: Callable[[str], None],
) -> RunResult:
    progress(f"period {period.date_from} … {period.date_to}, compared with {previous.date_from} … {previous.date_to}")
    crm = refresh_snapshot(
        client,
        objects,
        options=SnapshotOptions.from_settings(settings),
        now=clock,
        progress=progress,
    )
    # The dictionaries beside the snapshot: alerts and digests (throughline.alerts) build from the same data.
    objects.put(DICTIONARIES_KEY, json.dumps({"statuses": crm.statuses, "currencies": crm.currencies,
                                              "info": crm.info}, ensure_ascii=False).encode("utf-8"))  # fmt: skip
    earliest, latest = previous.date_from, period.date_to
    rates = RateBook(settings.report_currency, read_rates(objects, earliest, latest), crm.currencies)
    if settings.journey_table:
        # The nightly export of the journey store (journeys/, Athena-readable) is the attribution's input.
        from throughline.adapters.journey_store import JourneyStore
        from throughline.journey.export import export_journeys

        exported = export_journeys(JourneyStore(settings.journey_table), objects.bucket, started.date())
        why = exported.get("reason") or "the changes since the previous export"
        progress(f"journeys exported: snapshot {exported.get('snapshot')}, {exported.get('mode')} ({why})")
    journeys = read_journeys(objects)
    progress(f"journeys: snapshot {journeys.snapshot}" if journeys else "journeys: no export yet, no attribution")
    progress("building the report")
    acquisitions: dict[int, Decimal | None] = {}  # the period's new customers and their source's CAC (segments)
    wins: dict[int, str] = {}  # each deal's last win in the stage history: the segments section's too
    report = build_report(
        period=period,
        previous=previous,
        # Leads and deals from the snapshot's columnar copy (report.columns), bucket by bucket where it is current.
        leads=read_rows(objects, "lead"),
        deals=read_rows(objects, "deal", settings.report_profit_field),
        # Read once (wins without CLOSEDATE, the funnel's moves), from its columnar copy too.
        stage_history=lambda: read_rows(objects, HISTORY),
        spend=read_spend(objects, earliest, latest),
        rates=rates,
        stages=StageBook(crm.statuses),
        options=report_options(settings, crm.info),
        crm_info=crm.info,
        journeys=journeys,
        attribution=AttributionOptions(
            default_model=settings.attribution_default_model,
            half_life_days=settings.attribution_half_life_days,
            markov_order=settings.attribution_markov_order,
        ),
        now=clock,
        acquisitions=acquisitions,
        wins=wins,
    )
    # Customer segments (issue 18): tonight's are computed here first, on the snapshot just refreshed and under the
    # same lock (build_segments' runs from 05:10 create the tasks and write back), so the section is not a night
    # behind. A failure there leaves the section on the latest earlier night (it names the snapshot it read).
    from throughline.segments.job import compute_for_report, segment_options

    try:
        done = compute_for_report(client, objects, options=segment_options(settings), started=started,
                                  progress=progress)  # fmt: skip
        progress(f"segments of tonight: {done}")
    except Exception as error:  # the report is the product; the segments function computes them at 05:10
        progress(f"segments not computed before the report: {type(error).__name__}: {str(error)[:200]}")
    # Customer segments (issue 18): the section reads what the segments job stored, beside the same deals and rates.
    from throughline.report.segments import segments_section
    from throughline.segments.rules import RulesError, load_rules

    try:
        labels = {rule.code: rule.label for rule in load_rules(objects).segments}
    except RulesError as error:
        progress(f"segments: {error}; the section uses the codes")
        labels = {}
    section = segments_section(objects, period, read_snapshot(objects, "deal"), convert=rates.convert,
                               zone=settings.zone, labels=labels, wins=wins, acquisitions=acquisitions)  # fmt: skip
    report = report.model_copy(update={"segments": section})
    report = with_conversions(report, objects, rates)  # the offline-conversions section (report.conversions)
    # Render all three before writing any: a failure here leaves both the dated folder and latest/ untouched.
    files = {"roi.json": render_json(report), "roi.csv": render_csv(report), "index.html": render_html(report)}
    locations = publish(objects, started.date(), files)
    progress(f"written {locations['dated']} and {locations['latest']}")
    return RunResult(report, locations, files)
