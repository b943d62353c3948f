"""The nightly ROI report (EventBridge Scheduler) and on-demand runs for a period: ``{"date_from", "date_to"}``.

Without dates it reports month to date beside the previous full month. Writes ``reports/roi/<date>/`` and then
``reports/roi/latest/``; any failure raises, so the scheduler retries and, in the end, the run lands in the DLQ.
"""

from __future__ import annotations

from datetime import date

from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.report_store import S3Objects
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.observability import logger, metrics, tracer
from throughline.report.job import run_report


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    settings.require("data_bucket")
    event = event if isinstance(event, dict) else {}
    date_from, date_to = _day(event.get("date_from")), _day(event.get("date_to"))
    client = bitrix_client(settings, Deadline.from_context(context, reserve=60.0))
    result = run_report(
        settings, client, S3Objects(settings.data_bucket or ""), date_from=date_from, date_to=date_to,
        progress=logger.info,
    )  # fmt: skip
    report = result.report
    metrics.add_metric(name="ReportBitrixCalls", unit=MetricUnit.Count, value=client.calls)
    metrics.add_metric(name="ReportLeads", unit=MetricUnit.Count, value=report.headline.leads)
    # One per finished report: the ReportNotBuilt alarm fires when a day passes without one.
    metrics.add_metric(name="ReportsBuilt", unit=MetricUnit.Count, value=1)
    return {
        "period": {"date_from": report.period.date_from.isoformat(), "date_to": report.period.date_to.isoformat()},
        "locations": result.locations,
        "headline": report.headline.model_dump(mode="json", include={"spend", "leads", "won_deals", "revenue", "romi"}),
        "crm": report.crm,
    }


def _day(value: object) -> date | None:
    if value in (None, ""):
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"not a date (YYYY-MM-DD): {value!r}") from None
