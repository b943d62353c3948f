"""Hourly (and on-demand) offline conversions: won and qualified deals sent to Yandex Metrica, Google Ads and VK Ads.

Events: the schedule's ``{}`` (conversions of the last ``HOURLY_LOOKBACK_DAYS`` days, plus every conversion the
ledger holds as failed), or an on-demand ``{"date_from": "YYYY-MM-DD", "date_to": "YYYY-MM-DD"}``. What was sent is
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
HOURLY_LOOKBACK_DAYS = 3


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
    date_from = date_from or (date_to - timedelta(days=HOURLY_LOOKBACK_DAYS))
    result = execute(
        settings,
        date_from=date_from,
        date_to=date_to,
        deadline=Deadline.from_context(context, DEADLINE_RESERVE_SECONDS),
        retry_failed=not on_demand,
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
