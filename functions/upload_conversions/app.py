"""Hourly (and on-demand) offline conversions: won and qualified deals sent to Yandex Metrica, Google Ads and VK Ads.

Events: the schedule's ``{}`` (the conversions — of the last ``CONVERSION_WINDOW_DAYS`` days — of every deal and lead
that changed in the last ``HOURLY_LOOKBACK_DAYS`` days, plus every conversion the ledger holds as failed), or an
on-demand ``{"date_from": "YYYY-MM-DD", "date_to": "YYYY-MM-DD"}`` (the conversions of those days). What was sent is
recorded before the function fails on what was not, so the error alarm (and the event in the DLQ) names a platform
outage while the ledger keeps the failed conversions for the next run.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from aws_lambda_powertools.metrics import MetricUnit

from throughline.bitrix24 import Deadline
from throughline.config import get_settings
from throughline.conversions.run import execute
from throughline.observability import logger, metrics, tracer

DEADLINE_RESERVE_SECONDS = 30.0  # time to export the ledger and answer
HOURLY_LOOKBACK_DAYS = 3  # deals and leads changed in these days are looked at every hour
CONVERSION_WINDOW_DAYS = 90  # Google's longest click-through window; Metrica's shorter one is applied per platform


class ConversionsFailed(RuntimeError):
    """Some conversions could not be delivered; they wait in the ledger for the next run."""


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    today = datetime.now(settings.zone).date()
    on_demand = bool(event.get("date_from") or event.get("date_to"))
    date_to = date.fromisoformat(event["date_to"]) if event.get("date_to") else today
    date_from = date.fromisoformat(event["date_from"]) if event.get("date_from") else None
    date_from = date_from or (date_to - timedelta(days=CONVERSION_WINDOW_DAYS))
    result = execute(
        settings,
        date_from=date_from,
        date_to=date_to,
        deadline=Deadline.from_context(context, DEADLINE_RESERVE_SECONDS),
        retry_failed=not on_demand,
        changed_since=None if on_demand else today - timedelta(days=HOURLY_LOOKBACK_DAYS),
    )
    summary = result.summary()
    for name, platform in result.platforms.items():
        for state, count in platform.states.items():
            metrics.add_metric(name=f"Conversions_{name}_{state}", unit=MetricUnit.Count, value=count)
    metrics.add_metric(name="ConversionFailures", unit=MetricUnit.Count, value=result.failures)
    logger.info("conversions uploaded", extra={"conversions": summary})
    if result.failures:
        raise ConversionsFailed(f"{result.failures} conversions not delivered (kept for the next run): {summary}")
    return summary
