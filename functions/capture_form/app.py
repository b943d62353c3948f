"""POST /v1/forms/{form_id}/submissions — a site's web form becomes a durable submission; answer 202 at once.

Also the form builders' webhooks, ``POST /v1/hooks/{tilda|elementor|json}/{form_id}``: the same capture after the
builder's format is read (``throughline.capture.hooks``), answered 200 as each builder expects (Tilda's ``test=test``
connection check included), without CORS (a builder's server posts, not a browser).

Thin handler: HTTP in and out, then ``throughline.capture``; bad input maps to 4xx here and nowhere else.
No Tracer on this path: the X-Ray SDK import would cost more than boto3 on every cold start (Lambda's own active
tracing still records the invocation).
"""

from __future__ import annotations

# isort: off
from throughline import coldstart  # first of all: no garbage collector until the first call is answered
# isort: on

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters.http import (
    HttpRequest,
    UnreadableRequest,
    cors_headers,
    empty_response,
    json_response,
)
from throughline.capture.forms import FormRejected
from throughline.capture.hooks import BUILDERS
from throughline.capture.receive import capture_from_settings
from throughline.config import get_settings
from throughline.observability import logger, metrics


# log_event=False whatever POWERTOOLS_LOGGER_LOG_EVENT says: the event holds the phone and e-mail unmasked.
@coldstart.after_first_call
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    settings = get_settings()
    try:
        request = HttpRequest.from_event(event)
    except UnreadableRequest as unreadable:
        metrics.add_metric(name="SubmissionsRejected", unit=MetricUnit.Count, value=1)
        return json_response(400, {"error": "request could not be read", "fields": {"body": str(unreadable)}})
    builder = _builder(str(event.get("routeKey") or "").rpartition(" ")[2] or request.path)
    cors = {} if builder else cors_headers(request, settings.allowed_origins)
    if request.method == "OPTIONS" and not builder:
        metrics.add_metric(name="PreflightsAnswered" if cors else "PreflightsRefused", unit=MetricUnit.Count, value=1)
        return empty_response(204 if cors else 403, cors)
    if request.method != "POST":
        allow = "POST" if builder else "POST, OPTIONS"
        return json_response(405, {"error": "method not allowed", "fields": {}}, {**cors, "Allow": allow})

    origin = request.headers.get("origin")
    if origin and not cors and origin != "null" and not builder:
        # Still stored (nothing lost), but the page cannot read our answer: a site missing from ALLOWED_ORIGINS.
        logger.warning("form posted from an origin not in ALLOWED_ORIGINS", extra={"origin": origin[:200]})
        metrics.add_metric(name="PostsFromUnlistedOrigins", unit=MetricUnit.Count, value=1)

    capture = capture_from_settings(settings)
    try:
        accepted = capture.receive(
            request.path_parameters.get("form_id", ""),
            request.body,
            request.content_type,
            request.headers,
            builder=builder,
            source_ip=request.source_ip,
        )
    except FormRejected as rejected:
        metrics.add_metric(name="SubmissionsRejected", unit=MetricUnit.Count, value=1)
        return json_response(rejected.status, rejected.body(), cors)
    except Exception:
        # Only our own side can fail here (storage, queue): say so, and let the site retry.
        logger.exception("submission not stored")
        metrics.add_metric(name="SubmissionsUnavailable", unit=MetricUnit.Count, value=1)
        return json_response(503, {"error": "temporarily unavailable, please retry"}, {**cors, "Retry-After": "5"})

    if accepted.captcha_unavailable:
        metrics.add_metric(name="CaptchaUnavailable", unit=MetricUnit.Count, value=1)
    if accepted.limits_unavailable:
        metrics.add_metric(name="RateLimitsUnavailable", unit=MetricUnit.Count, value=1)
    if accepted.held:
        # Kept under raw/held/, not queued (python -m throughline release-held queues it if it was a real customer).
        metrics.add_metric(name="SubmissionsHeld", unit=MetricUnit.Count, value=1)
        metrics.add_metric(name=f"HeldBy{accepted.held.title()}", unit=MetricUnit.Count, value=1)
        if builder:  # a builder's server would retry anything but 200, and each retry would be held again
            return json_response(200, {"submission_id": accepted.submission_id})
        if accepted.held == "captcha":
            fields = {"captcha": "the captcha was not passed; please solve it again"}
            return json_response(422, {"error": "captcha not passed", "fields": fields}, cors)
        body = {"error": "too many submissions, please retry later", "submission_id": accepted.submission_id}
        return json_response(429, body, {**cors, "Retry-After": str(accepted.retry_after)})
    if accepted.check:
        metrics.add_metric(name="HookChecksAnswered", unit=MetricUnit.Count, value=1)
        return json_response(200, {"ok": True})
    # SubmissionsAccepted counts distinct submissions: a builder's redelivery of one (the same tranid, answered from
    # its claim) and a second send of the same form (another tranid, or the form route's double click) apart.
    if accepted.spam:
        metric = "SpamDropped"
    elif accepted.redelivered:
        metric = "SubmissionsRedelivered"
    else:
        metric = "DoubleSubmissions" if accepted.duplicate else "SubmissionsAccepted"
    metrics.add_metric(name=metric, unit=MetricUnit.Count, value=1)
    if builder:  # Tilda and Elementor count anything but 200 as a failed delivery
        return json_response(200, {"submission_id": accepted.submission_id})
    if accepted.redirect_to:
        return empty_response(303, {**cors, "Location": accepted.redirect_to})
    return json_response(202, {"submission_id": accepted.submission_id}, cors)


def _builder(route: str) -> str | None:
    """``tilda`` for the route ``/v1/hooks/tilda/{form_id}`` (one route per builder in template.yaml; the route key,
    not the raw path, which a custom domain's base path may prefix), None for the form route."""
    parts = route.strip("/").split("/")
    if len(parts) == 4 and parts[:2] == ["v1", "hooks"] and parts[2] in BUILDERS:
        return parts[2]
    return None
