"""POST /v1/bitrix/events — a Bitrix24 outbound webhook: check its application token, queue it, answer 200 at once.

Thin handler: HTTP in and out, then ``throughline.journey.events``. Bitrix24 never retries an event, so anything
authentic is queued before we answer; a forged or foreign event gets 401 and leaves no trace but a log line.
No Tracer and no Bitrix24 call on this path: Bitrix24 widens its intervals for slow handlers.
"""

from __future__ import annotations

# isort: off
from throughline import coldstart  # first of all: no garbage collector until the first call is answered
# isort: on

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.http import HttpRequest, json_response
from throughline.adapters.writes_queue import WritesQueue
from throughline.config import get_settings
from throughline.journey.events import EventRejected, receive_event
from throughline.observability import logger, metrics


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the body carries the application token.
@coldstart.after_first_call
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    try:
        request = HttpRequest.from_event(event)
    except ValueError:  # a body flagged base64 that is not (binascii.Error is a ValueError)
        metrics.add_metric(name="EventsMalformed", unit=MetricUnit.Count, value=1)
        return json_response(400, {"error": "body is not valid base64"})
    if request.method != "POST":
        return json_response(405, {"error": "method not allowed"}, {"Allow": "POST"})
    settings = get_settings()
    try:
        received = receive_event(
            request.body,
            app_tokens=settings.bitrix24_app_tokens,
            member_id=settings.bitrix24_member_id,
            domain=settings.bitrix24_domain,
            queue=WritesQueue(settings.writes_queue_url or ""),
            request_id=(event.get("requestContext") or {}).get("requestId"),
            moved=_portal_moved,
        )
    except EventRejected as rejected:
        logger.warning("event refused", extra={"status": rejected.status, "reason": rejected.reason})
        metrics.add_metric(
            name="EventsForged" if rejected.status == 401 else "EventsMalformed", unit=MetricUnit.Count, value=1
        )
        return json_response(rejected.status, {"error": rejected.reason})
    except Exception:
        logger.exception("event not queued")
        metrics.add_metric(name="EventsUnavailable", unit=MetricUnit.Count, value=1)
        return json_response(503, {"error": "temporarily unavailable"})
    if received is None:
        metrics.add_metric(name="EventsIgnored", unit=MetricUnit.Count, value=1)
        return json_response(200, {"queued": False})
    logger.info("event queued", extra={"event": received.name, "entity_id": received.entity_id})
    metrics.add_metric(name="EventsQueued", unit=MetricUnit.Count, value=1)
    return json_response(200, {"queued": True})


def _portal_moved(new_domain: str) -> None:
    """An event from our portal (member_id matches) at another address: accepted, and said loudly."""
    logger.warning(
        "the portal moved: events come from a new address (member_id matches); update BITRIX24_DOMAIN and "
        "BITRIX24_WEBHOOK_URL",
        extra={"new_domain": new_domain},
    )
    metrics.add_metric(name="PortalMoved", unit=MetricUnit.Count, value=1)
