"""Nightly (and on-demand) ad-spend import into S3: Yandex Direct, Google Ads, VK Ads and manual CSV files.

Events: the schedule's ``{}`` (the lookback window ending yesterday), an on-demand
``{"date_from": "YYYY-MM-DD", "date_to": "YYYY-MM-DD", "platforms": [...]}``, or an EventBridge "Object Created"
event about a file in ``spend/manual/inbox/`` (manual files only). What succeeded is stored before the function
fails on what did not, so the schedule's error alarm names the failing platform while the others' spend is in place.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit

from throughline.bitrix24 import Deadline
from throughline.config import get_settings
from throughline.observability import logger, metrics, tracer
from throughline.spend.manual import REJECTS_SUFFIX
from throughline.spend.run import RunRequest, raise_for_failures, run_spend_import

DEADLINE_RESERVE_SECONDS = 15.0  # time to write the state object and answer


@logger.inject_lambda_context
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    manual_file = event.get("source") == "aws.s3"
    if manual_file:  # EventBridge: a file arrived in the manual inbox
        key = str((event.get("detail") or {}).get("object", {}).get("key", ""))
        if key.endswith(REJECTS_SUFFIX):
            return {"ignored": key}  # our own rejects file: importing again would write it again, for ever
        event = {"platforms": ["manual"]}
    request = RunRequest.parse(event, settings)
    result = run_spend_import(settings, request, deadline=Deadline.from_context(context, DEADLINE_RESERVE_SECONDS))
    summary = result.summary()
    for name, platform in result.platforms.items():
        if name.startswith("_"):
            continue
        metrics.add_metric(name=f"SpendRows_{name}", unit=MetricUnit.Count, value=platform.rows)
    metrics.add_metric(name="SpendChunksPending", unit=MetricUnit.Count, value=len(result.pending))
    metrics.add_metric(name="SpendFailures", unit=MetricUnit.Count, value=len(result.failures))
    logger.info("spend import finished", extra={"spend": summary})
    raise_for_failures(result)
    if not manual_file:
        # One per complete platform import (the nightly run, an on-demand one): the SpendImportNotRun alarm fires
        # when a day passes without one. A manual file alone is not the nightly import.
        metrics.add_metric(name="SpendImportsCompleted", unit=MetricUnit.Count, value=1)
    return summary
