"""Schedule-based alerts (EventBridge Scheduler: hourly, and after the nightly report) and on demand with
``{"date": "YYYY-MM-DD"}`` (the complete day to check; default yesterday); ``{"only": "hot_leads"}`` (every five
minutes) looks only at hot leads past their deadline. Each alert goes out once (the ledger);
a delivery that failed on every channel is listed and retried by the next run."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.report_store import S3Objects
from throughline.alerts.job import parse_day, run_check_alerts
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import side_client
from throughline.config import get_settings
from throughline.observability import logger, metrics, tracer


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    settings.require("data_bucket", "alerts_table")
    event = event if isinstance(event, dict) else {}
    client = side_client(settings, Deadline.from_context(context, reserve=20.0))
    only = event.get("only")
    if only not in (None, "hot_leads"):
        raise ValueError(f'"only" may be "hot_leads", got {only!r}')
    result = run_check_alerts(settings, S3Objects(settings.data_bucket or ""), client, day=parse_day(event.get("date")),
                              hot_leads_only=only == "hot_leads")  # fmt: skip
    metrics.add_metric(name="AlertsFired", unit=MetricUnit.Count, value=len(result["fired"]))
    metrics.add_metric(name="AlertsBitrixCalls", unit=MetricUnit.Count, value=result["bitrix_calls"])
    if result["failed"]:
        metrics.add_metric(name="AlertsUndelivered", unit=MetricUnit.Count, value=len(result["failed"]))
        logger.warning("alerts not delivered on any channel", extra={"failed": result["failed"]})
    return result
