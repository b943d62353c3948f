"""EventBridge Scheduler → the reconciliation sweep: touches that lost outbound webhooks would have added.

Bitrix24 never retries an outbound webhook; this reads what changed since the last sweep and feeds it to the same
event writer, idempotently (``throughline.journey.sweep``).
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24 import Deadline
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.journey.sweep import sweep
from throughline.observability import logger, metrics, tracer
from throughline.writer.journey_wiring import crm_event_writer


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    settings.require("journey_table")
    writer = crm_event_writer(
        settings, bitrix_client(settings, Deadline.from_context(context)), JourneyStore(settings.journey_table or "")
    )
    result = sweep(writer)
    logger.info("sweep done", extra={"scanned": result.scanned, "touches_added": result.touches_added})
    metrics.add_metric(name="SweepTouchesAdded", unit=MetricUnit.Count, value=result.touches_added)
    metrics.add_metric(name="SweepBitrixCalls", unit=MetricUnit.Count, value=result.rest_calls)
    metrics.add_metric(name="RecordsAccessDenied", unit=MetricUnit.Count, value=writer.bitrix.access_denied)
    if writer.bitrix.access_denied:
        logger.warning("records skipped: access denied", extra={"records": writer.bitrix.access_denied})
    return {"scanned": result.scanned, "touches_added": result.touches_added, "rest_calls": result.rest_calls}
