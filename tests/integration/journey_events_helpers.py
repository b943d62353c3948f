"""Delivering one Bitrix24 outbound event to a local stack's receiver, as the portal does."""

from __future__ import annotations

import requests

from local.bitrix24_sandbox.outbound import event_body
from local.stack import LOCAL_APP_TOKEN


def deliver_event(stack, event: str, record_id: int) -> None:
    """POST ``event`` about ``record_id`` to ``/v1/bitrix/events`` with the local app token; it must be taken."""
    data = event_body(event=event, record_id=record_id, domain="sandbox.bitrix24.ru", member_id="m1",
                      application_token=LOCAL_APP_TOKEN, timestamp=1)  # fmt: skip
    response = requests.post(f"{stack.url}/v1/bitrix/events", data=data,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=10)  # fmt: skip
    assert response.status_code == 200
