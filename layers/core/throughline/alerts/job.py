"""One run of ``check_alerts`` or ``send_digests``: rules from the bucket, the report's data, the ledger, delivery."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from throughline.adapters.alert_ledger import LEASE_SECONDS, AlertLedger
from throughline.alerts.delivery import Notifier, optional_channels
from throughline.alerts.store import load_rules, publish_realtime

KINDS = ("daily", "weekly", "monthly")


def parse_day(value: object) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {value!r}") from None


def snapshot_started(objects: Any, zone: Any) -> datetime | None:
    """When the newest CRM snapshot's run started (``crm/snapshot/state.json``'s ``last_run_started``), or ``None``."""
    import json

    from throughline.report.crm import STATE_KEY

    try:
        started = datetime.fromisoformat(json.loads(objects.get(STATE_KEY) or b"{}").get("last_run_started") or "")
    except (ValueError, TypeError, AttributeError):
        return None
    return started.replace(tzinfo=zone) if started.tzinfo is None else started


def snapshot_covers(objects: Any, day: date, zone: Any) -> bool:
    """Whether the CRM snapshot was refreshed after ``day`` ended (in ``zone``): only then are its leads and deals
    all in it (``crm/snapshot/state.json``'s ``last_run_started``)."""
    started = snapshot_started(objects, zone)
    return started is not None and started >= datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)


DIGEST_LEASE_SECONDS = 6 * 3600  # Lambda keeps an asynchronous event (and retries it) for up to six hours


def stale_note(started: datetime | None, last_day: date) -> str:
    """The digest's warning when the CRM snapshot ends before the period does."""
    when = started.strftime("%d.%m.%Y %H:%M") if started else "никогда"
    return (
        f"⚠ Данные CRM последний раз обновлены {when} — до конца {last_day.strftime('%d.%m.%Y')}: ночной отчёт "
        "ещё не построен, лиды и сделки за период учтены не все."
    )


def notifier_for(settings: Any, objects: Any, client: Any, *, lease_seconds: int = LEASE_SECONDS) -> Notifier:
    settings.require("alerts_table")
    config = load_rules(objects)
    channels = optional_channels(settings)
    ledger = AlertLedger(settings.alerts_table or "", lease_seconds=lease_seconds)
    return Notifier(config, ledger, client, webhook_url=settings.bitrix24_webhook_url,
                    telegram=channels.get("telegram"), email=channels.get("email"))  # fmt: skip


def run_check_alerts(settings: Any, objects: Any, client: Any, *, day: date | None = None,
                     now: datetime | None = None, hot_leads_only: bool = False) -> dict[str, Any]:  # fmt: skip
    """Every schedule-based rule for ``day`` (default: yesterday in ``TIMEZONE``, the last complete day); with
    ``hot_leads_only`` (the 5-minute schedule) only the hot leads past their deadline, without reading the report's
    data."""
    from throughline.alerts.checks import load_report_data, run_checks

    now = now or datetime.now(settings.zone)
    day = day or (now.date() - timedelta(days=1))
    if day >= now.date():
        raise ValueError(f"{day} is not over yet: alerts look at complete days only (yesterday or earlier)")
    notifier = notifier_for(settings, objects, client)
    publish_realtime(objects, notifier.config)  # the writer's real-time rules follow the validated file
    data = None if hot_leads_only else load_report_data(settings, objects, day)
    covered = data is not None and snapshot_covers(objects, day, settings.zone)
    if data is not None and not covered:
        # Yesterday's spend may be imported (03:30) before the report refreshes the CRM snapshot (05:00): its leads
        # after the last snapshot are missing, and every campaign would look like spend without leads.
        data = None
    result = run_checks(data, day, now, notifier.config, notifier, webhook_url=settings.bitrix24_webhook_url)
    return {
        "date": day.isoformat(),
        "fired": result.fired,
        "failed": result.failed,
        "report_data": data is not None,
        **({} if covered or hot_leads_only else {"why": "the CRM snapshot does not cover the day yet"}),
        "hot_leads_only": hot_leads_only,
        "bitrix_calls": client.calls if client is not None else 0,
    }


def run_send_digests(settings: Any, objects: Any, client: Any, *, kind: str, day: date | None = None,
                     now: datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """The ``kind`` digest sent on ``day`` (default today in ``TIMEZONE``): daily covers the day before, weekly the
    week before, monthly the month before.

    - Claimed in the ledger for ``DIGEST_LEASE_SECONDS`` before it is posted: a run killed after ``im.message.add``
      and before the ledger's ``sent`` leaves a claim that every retry within six hours (Lambda's own retry, the
      scheduler's, a re-run by hand) respects, so the digest is not posted twice. The price: a run killed after the
      claim and *before* the post leaves no digest for those six hours (at most once); after them a run by hand
      (``{"kind": ..., "date": ...}``) sends it. A delivery that fails cleanly releases the claim at once.
    - A CRM snapshot that does not cover the period's last day (the night's report has not run yet, or failed) does
      not hold the digest back — there is no later run to wait for — but the digest says so in its second line.
    """
    from throughline.alerts.checks import load_report_data
    from throughline.alerts.digests import periods, send_digest, user_names

    now = now or datetime.now(settings.zone)
    day = day or now.date()
    notifier = notifier_for(settings, objects, client, lease_seconds=DIGEST_LEASE_SECONDS)
    data = load_report_data(settings, objects, day - timedelta(days=1))
    stale = None
    if data is not None and kind in KINDS:
        last_day = periods(kind, day)[0].date_to
        if not snapshot_covers(objects, last_day, settings.zone):
            stale = snapshot_started(objects, settings.zone)
            stale = stale_note(stale.astimezone(settings.zone) if stale else None, last_day)
    result = send_digest(kind, day, data, notifier, users=(lambda: user_names(client)) if client else None,
                         note=stale)  # fmt: skip
    result["snapshot_fresh"] = stale is None
    result["bitrix_calls"] = client.calls if client is not None else 0
    return result
