"""SQS FIFO consumer: the only writer to Bitrix24. Partial batch failures, FIFO order kept per message group.

The whole batch is written together (a few ``batch`` REST calls for up to ten messages); Powertools' FIFO processor
then reports each message's outcome, failing the later messages of a group whose earlier message failed.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from throughline.adapters.writes_queue import WritesQueue
from throughline.bitrix24 import Deadline
from throughline.config import get_settings
from throughline.observability import logger, metrics, tracer
from throughline.writer.leads import Unwritable
from throughline.writer.queued import PoisonMessage, QueuedWrite, lead_writer, write_queued


class WriteFailed(Exception):
    """Reported for a message whose write did not succeed; the queue brings it back later."""


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: queued submissions hold phones and e-mails unmasked.
@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    records = event.get("Records") or []
    writer = lead_writer(settings, Deadline.from_context(context))
    paced_before = writer.bitrix.pacer.waited
    queue = WritesQueue(settings.writes_queue_url) if settings.writes_queue_url else None
    items = [
        QueuedWrite(
            message_id=record["messageId"],
            body=record["body"],
            receive_count=int(record.get("attributes", {}).get("ApproximateReceiveCount", "1")),
            receipt_handle=record.get("receiptHandle"),
        )
        for record in records
    ]
    outcomes = write_queued(items, writer, queue, settings)
    _realtime_alerts(settings, writer, items, outcomes)

    actions = [outcome.action for outcome in outcomes.values()]
    metrics.add_metric(name="LeadsCreated", unit=MetricUnit.Count, value=actions.count("created"))
    metrics.add_metric(name="RepeatRequests", unit=MetricUnit.Count, value=actions.count("appended"))
    # Posts of people erased (forget) after they posted, dropped unwritten (privacy.erasure).
    metrics.add_metric(name="SubmissionsErased", unit=MetricUnit.Count, value=actions.count("erased"))
    metrics.add_metric(name="WritesFailed", unit=MetricUnit.Count, value=sum(not o.ok for o in outcomes.values()))
    poison = sum(isinstance(o.error, PoisonMessage | Unwritable) for o in outcomes.values())
    metrics.add_metric(name="PoisonMessages", unit=MetricUnit.Count, value=poison)
    metrics.add_metric(name="WritesDeferredBusy", unit=MetricUnit.Count, value=actions.count("busy"))
    metrics.add_metric(name="BitrixCalls", unit=MetricUnit.Count, value=writer.bitrix.calls)
    metrics.add_metric(name="RecordsAccessDenied", unit=MetricUnit.Count, value=writer.bitrix.access_denied)
    if writer.bitrix.access_denied:
        logger.warning("records skipped: access denied", extra={"records": writer.bitrix.access_denied})
    metrics.add_metric(
        name="BitrixPacingSeconds", unit=MetricUnit.Seconds, value=writer.bitrix.pacer.waited - paced_before
    )

    def report(record: SQSRecord) -> None:
        outcome = outcomes[record.message_id]
        if not outcome.ok:
            raise WriteFailed(f"{outcome.action}: {outcome.error}")

    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # A Bitrix24 outage fails whole batches; that is a retry, not a function error (the queue-age alarm watches it).
    processor.raise_on_entire_batch_failure = False
    return process_partial_response(event=event, record_handler=report, processor=processor, context=context)


def _realtime_alerts(settings, writer, items: list[QueuedWrite], outcomes: dict) -> None:
    """Hot leads' and repeat requests' tasks, big deals' notifications (throughline.alerts.realtime): after the
    writes, never in their way — a failure here is logged and the writes stand."""
    if not settings.alerts_table:
        return
    try:
        import json

        from throughline.alerts.realtime import after_writes

        bodies = {}
        for item in items:
            try:
                bodies[item.message_id] = json.loads(item.body)
            except ValueError:
                continue
        done = after_writes(settings, writer.bitrix, bodies, outcomes)
        if done.get("tasks"):
            metrics.add_metric(name="AlertTasks", unit=MetricUnit.Count, value=done["tasks"])
        if done.get("calls"):
            metrics.add_metric(name="AlertsBitrixCalls", unit=MetricUnit.Count, value=done["calls"])
    except Exception:
        logger.warning("real-time alerts failed; the writes stand", exc_info=True)
