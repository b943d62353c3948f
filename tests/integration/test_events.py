"""The sample events in events/ stay valid: each runs through its function on the local stack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


@pytest.fixture
def site(make_stack):
    # The Marquiz sample's map, as docs/forms/json.md tells to configure it.
    maps = {"okna-quiz": {"name": "contacts.name", "phone": "contacts.phone", "email": "contacts.email"}}
    parameters = {"AllowedOrigins": "https://shop.example.ru", "FormFieldMaps": json.dumps(maps)}
    return make_stack(poll_queues=False, parameters=parameters)


@pytest.mark.parametrize(
    ("event", "status"),
    [("capture_form_json.json", 202), ("capture_form_urlencoded.json", 303), ("capture_form_preflight.json", 204)],
)
def test_capture_form_events(site, event, status):
    response = site.invoke("capture_form", load(event))
    assert response["statusCode"] == status
    assert response["headers"]["Access-Control-Allow-Origin"] == "https://shop.example.ru"


@pytest.mark.parametrize(
    "event",
    [
        "capture_hook_tilda.json",
        "capture_hook_tilda_check.json",
        "capture_hook_elementor_simple.json",
        "capture_hook_elementor_advanced.json",
        "capture_hook_json_marquiz.json",
        "capture_hook_json_cf7.json",
    ],
)
def test_form_builder_events_are_answered_200(site, event):
    response = site.invoke("capture_form", load(event))
    assert response["statusCode"] == 200, response["body"]
    assert "Access-Control-Allow-Origin" not in response["headers"]


def test_bitrix_writer_event_creates_the_lead(site):
    assert site.invoke("bitrix_writer", load("bitrix_writer_sqs.json")) == {"batchItemFailures": []}
    [lead] = site.sandbox.entities("lead")
    assert lead["ORIGIN_ID"] == "7f0c9a52-3b1e-4d7a-9a43-5f1f0f6c2b11"
    assert lead["UTM_CAMPAIGN"] == "zima_sale"
    assert lead["UF_CRM_CUSTOMER_JOURNEY"].startswith("Первичный контакт: 01.11.2026 — Google — Органический поиск")


def test_bitrix_events_event_is_queued(site):
    assert site.invoke("bitrix_events", load("bitrix_events_lead_add.json"))["statusCode"] == 200


def test_journey_sweep_event_runs_a_sweep(site):
    result = site.invoke("journey_sweep", load("journey_sweep_schedule.json"))
    assert result["touches_added"] == 0 and result["rest_calls"] >= 1
