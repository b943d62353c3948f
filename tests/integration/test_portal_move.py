"""A renamed portal over HTTP, end to end (issue 14): the local stack with its queue consumed, the sandbox renamed
while the stack still holds the old BITRIX24_WEBHOOK_URL and BITRIX24_DOMAIN. Nothing may be lost, and the log and the
PortalMoved metric must say the portal moved."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import boto3
import pytest
import requests

from local.bitrix24_sandbox.outbound import event_body
from local.stack import LOCAL_APP_TOKEN

JOURNEY = "UF_CRM_CUSTOMER_JOURNEY"
MEMBER_ID = "member-of-our-portal"
PORTAL_NOW = datetime.fromisoformat("2026-11-01T10:00:00+03:00")  # the portal's clock, fixed whatever day we run


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Warnings logged by the functions (they run in this process; Powertools writes to the stdout of its import)."""
    from throughline.observability import logger

    seen: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logger, "warning", lambda message, *a, **k: seen.append((message, k.get("extra") or {})))
    return seen


@pytest.fixture
def portal(make_stack):
    stack = make_stack(
        sandbox_options={"member_id": MEMBER_ID, "portal_domain": "old-name.bitrix24.ru"},
        environment={"BITRIX24_MEMBER_ID": MEMBER_ID, "BITRIX24_DOMAIN": "old-name.bitrix24.ru"},
    )
    set_clock(stack, PORTAL_NOW)
    return stack


def set_clock(stack, moment: datetime) -> None:
    stack.sandbox.set_clock_offset((moment - datetime.now(moment.tzinfo)).total_seconds())


def settle(stack) -> None:
    for _ in range(3):  # our field writes come back as update events: let them run out
        assert stack.sandbox.wait_for_outbound(10)
        assert stack.wait_until_idle(120)


def lines(stack, kind: str, record_id: int) -> list[str]:
    record = next(row for row in stack.sandbox.entities(kind) if int(row["ID"]) == record_id)
    return (record.get(JOURNEY) or "").splitlines()


def completed_call(stack, lead: int, subject: str, start: str) -> int:
    return stack.sandbox.call("crm.activity.add", {"fields": {
        "OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "DIRECTION": 2, "SUBJECT": subject, "RESPONSIBLE_ID": 1,
        "START_TIME": start, "END_TIME": start, "COMPLETED": "Y",
        "COMMUNICATIONS": [{"VALUE": "+79161234567", "ENTITY_TYPE_ID": 1, "ENTITY_ID": lead}]}})  # fmt: skip


def dead_letters(stack) -> int:
    sqs = boto3.client("sqs")
    urls = [url for url in sqs.list_queues().get("QueueUrls", []) if "dead" in url.lower() or "dlq" in url.lower()]
    return sum(
        int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
            "ApproximateNumberOfMessages"])
        for url in urls
    )  # fmt: skip


def test_after_a_rename_nothing_is_lost_and_the_log_says_the_portal_moved(portal, warnings) -> None:
    lead = portal.sandbox.call("crm.lead.add", {"fields": {
        "TITLE": "Звонок", "SOURCE_ID": "CALL", "SOURCE_DESCRIPTION": "Звонок с сайта",
        "PHONE": [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}]}})  # fmt: skip
    completed_call(portal, lead, "До переезда", "2026-11-03T12:00:00+03:00")
    settle(portal)
    before = lines(portal, "lead", lead)
    assert before[-1] == "03.11.2026 — Телефон — Исходящий звонок — До переезда"

    old_url = portal.sandbox.webhook_url
    portal.sandbox.rename("new-name.bitrix24.ru")  # the stack keeps the old webhook URL and domain
    portal.sandbox.reset_stats()
    completed_call(portal, lead, "После переезда", "2026-11-04T12:00:00+03:00")
    set_clock(portal, datetime.fromisoformat("2026-11-05T10:00:00+03:00"))
    portal.sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
    settle(portal)

    after = lines(portal, "lead", lead)
    assert after[: len(before)] == before
    assert "04.11.2026 — Телефон — Исходящий звонок — После переезда" in after[len(before) :]
    assert any("Стадия" in line for line in after[len(before) :])  # the stage move came through too
    stats = portal.sandbox.stats()
    assert stats["outbound"]["failed"] == 0 and stats["redirected"] >= 1  # events accepted; old address redirected
    assert stats["status_codes"].get("400", 0) == 0  # no POST turned into a GET without its parameters
    assert dead_letters(portal) == 0
    messages = [message for message, _ in warnings]
    assert "the portal moved: update BITRIX24_WEBHOOK_URL" in messages
    assert any(m.startswith("the portal moved: events come from a new address") for m in messages)
    moved = next(extra for message, extra in warnings if message == "the portal moved: update BITRIX24_WEBHOOK_URL")
    assert moved["new_address"] == portal.sandbox.base_url and portal.sandbox.secret not in str(warnings)
    assert old_url != portal.sandbox.webhook_url


def test_an_event_from_another_portal_is_still_refused_after_the_domain_check_was_relaxed(portal) -> None:
    foreign = event_body(event="ONCRMLEADADD", record_id=1, domain="new-name.bitrix24.ru", member_id="someone-else",
                         application_token=LOCAL_APP_TOKEN, timestamp=1)  # fmt: skip
    response = requests.post(f"{portal.url}/v1/bitrix/events", data=foreign,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)  # fmt: skip
    assert response.status_code == 401
