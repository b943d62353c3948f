"""Customer segments (EventBridge Scheduler through the night, and on demand with ``{}``).

Each run continues an unfinished write-back, else computes today's segments once (after the report's CRM refresh;
it refreshes the snapshot itself, one REST call when nothing changed) and writes back what changed until the
invocation's deadline. A run that finds the report's run lock held, or today's work done, returns at once.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.report_store import S3Objects
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.observability import logger, metrics, tracer
from throughline.segments.job import run_segments


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    settings.require("data_bucket")
    client = bitrix_client(settings, Deadline.from_context(context, reserve=60.0))
    summary = run_segments(settings, client, S3Objects(settings.data_bucket or ""), progress=logger.info)
    metrics.add_metric(name="SegmentsBitrixCalls", unit=MetricUnit.Count, value=client.calls)
    written = (summary.get("writeback") or {}).get("written") or 0
    metrics.add_metric(name="SegmentsWritten", unit=MetricUnit.Count, value=written)
    failed = len((summary.get("audiences") or {}).get("failed") or {})
    metrics.add_metric(name="SegmentsAudiencesFailed", unit=MetricUnit.Count, value=failed)
    return {key: value for key, value in summary.items() if key != "crm"}
