"""The report opened from Bitrix24 on the local stack: the sandbox posts a placement to POST /v1/app/report; a valid
one gets the page, a forged token, another portal's member_id, a missing token or a GET get 401 (or 405), never it."""

from __future__ import annotations

import hashlib

import boto3
import requests

DOMAIN = "sandbox.bitrix24.ru"
MEMBER_ID = hashlib.md5(DOMAIN.encode()).hexdigest()  # the sandbox's default member_id


def test_only_a_verified_placement_of_our_portal_gets_the_report(make_stack):
    stack = make_stack(poll_queues=False, parameters={"BitrixMemberId": MEMBER_ID, "BitrixDomain": DOMAIN})
    bucket = stack.resources.environment()["DATA_BUCKET"]
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key="reports/roi/latest/index.html", Body="<html>ROI сегодня</html>".encode())
    s3.put_object(Bucket=bucket, Key="reports/roi/2026-12-01/index.html", Body="<html>ROI 1 декабря</html>".encode())
    url = stack.url + "/v1/app/report"
    sandbox = stack.sandbox

    page = sandbox.open_application(url)
    assert page.status_code == 200 and "ROI сегодня" in page.text
    assert "frame-ancestors https://sandbox.bitrix24.ru" in page.headers["Content-Security-Policy"]
    query, form = sandbox.placement_request()
    earlier = requests.post(url, params={**query, "date": "2026-12-01"}, data=form, timeout=10)
    assert earlier.status_code == 200 and "1 декабря" in earlier.text
    missing = requests.post(url, params={**query, "date": "2020-01-01"}, data=form, timeout=10)
    assert missing.status_code == 404 and "ROI" not in missing.text

    forged = {**form, "AUTH_ID": "f" * 32}
    answer = requests.post(url, params=query, data=forged, timeout=10)
    assert answer.status_code == 401 and "ROI" not in answer.text
    other_portal = {**sandbox.placement_request()[1], "member_id": "0" * 32}
    assert requests.post(url, params=query, data=other_portal, timeout=10).status_code == 401
    other_domain = {**query, "DOMAIN": "evil.bitrix24.ru"}
    assert requests.post(url, params=other_domain, data=sandbox.placement_request()[1], timeout=10).status_code == 401
    no_token = {key: value for key, value in sandbox.placement_request()[1].items() if key != "AUTH_ID"}
    assert requests.post(url, params=query, data=no_token, timeout=10).status_code == 401
    expired = {**form, "AUTH_ID": sandbox.issue_app_token(expires_in=-1)}
    assert requests.post(url, params=query, data=expired, timeout=10).status_code == 401
    assert requests.get(url, timeout=10).status_code in (404, 405)
