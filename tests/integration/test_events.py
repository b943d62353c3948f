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
    return make_stack(poll_queues=False, parameters={"AllowedOrigins": "https://shop.example.ru"})


@pytest.mark.parametrize(
    ("event", "status"),
    [("capture_form_json.json", 202), ("capture_form_urlencoded.json", 303), ("capture_form_preflight.json", 204)],
)
def test_capture_form_events(site, event, status):
    response = site.invoke("capture_form", load(event))
    assert response["statusCode"] == status
    assert response["headers"]["Access-Control-Allow-Origin"] == "https://shop.example.ru"


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
