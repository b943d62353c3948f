"""`make serve` as a user runs it: a separate process, spoken to over HTTP only."""

from __future__ import annotations

import re
import time

import requests


def test_a_form_post_becomes_a_lead_in_the_sandbox(served):
    url, banner = served.url, served.banner
    sandbox = re.search(r"sandbox state: (http://127\.0\.0\.1:\d+)/_sandbox/state", banner).group(1)
    assert requests.get(f"{url}/_local/health").json() == {"ok": True}

    response = requests.post(
        f"{url}/v1/forms/landing/submissions",
        data={"name": "Мария", "phone": "+7 (926) 111-22-33", "utm_source": "google", "utm_medium": "cpc"},
    )
    assert response.status_code == 202
    deadline = time.monotonic() + 30
    leads = []
    while not leads and time.monotonic() < deadline:
        leads = requests.get(f"{sandbox}/_sandbox/state", params={"entity": "lead"}).json()
        time.sleep(0.3)
    [lead] = leads
    assert lead["PHONE"][0]["VALUE"] == "+79261112233"
    assert lead["UF_CRM_CUSTOMER_JOURNEY"].startswith("Первичный контакт: ")


def test_any_function_can_be_invoked_once_with_a_json_event(served):
    url, banner = served.url, served.banner
    event = {
        "version": "2.0",
        "requestContext": {"http": {"method": "POST", "path": "/v1/forms/x/submissions"}},
        "pathParameters": {"form_id": "x"},
        "headers": {"content-type": "application/json"},
        "body": '{"name": "только имя"}',
    }
    result = requests.post(f"{url}/_local/invoke/capture_form", json=event).json()
    assert result["statusCode"] == 422
    assert requests.post(f"{url}/_local/invoke/nope", json={}).status_code == 404
    assert requests.post(f"{url}/v1/unknown").status_code == 404
    document = requests.get(f"{url}/_local/openapi.yaml")  # the routes, described (tests/e2e/test_openapi.py)
    assert document.status_code == 200 and document.text.startswith("openapi: 3.1.0")
    assert "/_local/openapi.yaml" in banner


def test_the_demo_shop_is_served_on_its_own_origin_and_allowed_to_post(served):
    url, banner, site = served.url, served.banner, served.site
    assert f"{site}/demo/?endpoint={url}/v1/forms" in banner
    page = requests.get(f"{site}/demo/")
    assert page.status_code == 200 and "throughline.js" in page.text
    assert requests.get(f"{site}/throughline.js").status_code == 200
    preflight = requests.options(f"{url}/v1/forms/demo-lead/submissions", headers={"Origin": site})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == site


def test_the_spend_import_reads_the_ad_sandboxes(served):
    url, banner = served.url, served.banner
    assert "yandex-direct-sandbox: http://" in banner and "vk-ads-sandbox: http://" in banner
    summary = requests.post(f"{url}/_local/invoke/import_ad_spend",
                            json={"date_from": "2026-10-01", "date_to": "2026-10-07"}, timeout=120).json()  # fmt: skip
    assert summary["ok"] is True
    assert {name for name, platform in summary["platforms"].items() if platform["rows"]} == {
        "yandex_direct", "google_ads", "vk_ads"}  # fmt: skip
