"""The digests (EventBridge Scheduler: daily at 09:00, weekly on Monday, monthly on the 1st) and on demand with
``{"kind": "daily" | "weekly" | "monthly", "date": "YYYY-MM-DD"}`` (the day it is sent; default today): each goes
out once per period, to Bitrix24 first, linking to the report opened in Bitrix24."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.report_store import S3Objects
from throughline.alerts.job import parse_day, run_send_digests
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
    kind = str(event.get("kind") or "daily")
    client = side_client(settings, Deadline.from_context(context, reserve=20.0))
    result = run_send_digests(settings, S3Objects(settings.data_bucket or ""), client, kind=kind,
                              day=parse_day(event.get("date")))  # fmt: skip
    metrics.add_metric(name="DigestsSent", unit=MetricUnit.Count, value=1 if result.get("sent") else 0)
    metrics.add_metric(name="AlertsBitrixCalls", unit=MetricUnit.Count, value=result["bitrix_calls"])
    result.pop("text", None)  # the digest may name managers: not in the invocation's result or logs
    return result
