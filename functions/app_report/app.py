"""POST /v1/app/report — the ROI report opened from Bitrix24 (a local application): verify the placement's token
against our portal and its member_id, then serve ``reports/roi/latest/index.html`` (or ``date``'s). Anything else
gets 401, never the report. Light on purpose: no pydantic, no report code, one REST call per new token."""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit

from throughline.adapters import aws
from throughline.adapters.http import HttpRequest, json_response
from throughline.alerts.app_page import (
    NOT_BUILT,
    Refused,
    TokenCheck,
    check_portal,
    page_headers,
    parse_placement,
)
from throughline.config import get_settings
from throughline.observability import logger, metrics


class _Objects:
    def __init__(self, bucket: str):
        self.bucket = bucket

    def get(self, key: str) -> bytes | None:
        client = aws.client("s3")
        try:
            return client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return None


@cache
def _token_check(portal_url: str) -> TokenCheck:
    return TokenCheck(portal_url)  # one per process: a verified token is remembered across warm invocations


# log_event=False: the body carries the user's access token.
@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    try:
        request = HttpRequest.from_event(event)
    except ValueError:
        return json_response(400, {"error": "body is not valid base64"})
    if request.method != "POST":
        return json_response(405, {"error": "method not allowed"}, {"Allow": "POST"})
    settings = get_settings()
    try:
        placement = parse_placement(request.body, request.query)
        check_portal(placement, settings.bitrix24_member_id, settings.bitrix24_domain)
        domain = settings.bitrix24_domain
        portal = settings.bitrix24_portal_url or (f"https://{domain}/" if domain else "")
        if not portal:
            raise Refused("BITRIX24_DOMAIN is not configured: no portal to verify the token with")
        _token_check(portal).verify(placement.auth_id, placement.expires_in)
    except Refused as refused:
        logger.warning("report page refused", extra={"reason": str(refused)})
        metrics.add_metric(name="AppReportRefused", unit=MetricUnit.Count, value=1)
        return json_response(401, {"error": "unauthorized"})
    from throughline.alerts.app_page import report_page

    page = report_page(_Objects(settings.data_bucket or ""), placement.date)
    metrics.add_metric(name="AppReportServed", unit=MetricUnit.Count, value=1)
    headers = page_headers(settings.bitrix24_domain, settings.bitrix24_webhook_url)
    if page is None:
        return {"statusCode": 404, "headers": headers, "body": NOT_BUILT, "isBase64Encoded": False}
    return {"statusCode": 200, "headers": headers, "body": page.decode("utf-8"), "isBase64Encoded": False}
