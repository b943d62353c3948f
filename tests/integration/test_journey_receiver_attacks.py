"""A hostile reviewer's attacks on POST /v1/bitrix/events: bad input gets 400 or 401, never a 5xx, and leaves nothing.

A real SQS FIFO queue refuses a MessageDeduplicationId or MessageGroupId over 128 characters or with characters
other than letters, digits and punctuation (the local moto queue does not check), so what the receiver builds them
from (the entity id, ``ts``) must be checked before anything is queued.
"""

from __future__ import annotations

import re

import pytest

from local.stack import LOCAL_APP_TOKEN
from tests.integration.test_journey_events import post_event, queued

SQS_ID = re.compile(r"^[!-~]{1,128}$")  # letters, digits and ASCII punctuation, at most 128


def form(entity_id: str = "5", ts: str = "1766047124") -> bytes:
    return (
        f"event=ONCRMLEADADD&event_handler_id=5&data%5BFIELDS%5D%5BID%5D={entity_id}&ts={ts}"
        f"&auth%5Bdomain%5D=sandbox.bitrix24.ru&auth%5Bmember_id%5D=m1&auth%5Bapplication_token%5D={LOCAL_APP_TOKEN}"
    ).encode()


@pytest.mark.parametrize(
    "data",
    [
        form(entity_id="%C2%B2"),  # "²": str.isdigit() says yes, int() says no
        form(entity_id="9" * 5000),  # more digits than int() converts
        form(entity_id="9" * 200),  # a group id and a deduplication id over SQS's 128 characters
        form(entity_id="%E0%A5%A7"),  # Devanagari "1": a digit to Python, not an id to Bitrix24
        form(ts="a%20b"),  # a space in the deduplication id
        form(ts="%D0%B6"),  # Cyrillic in the deduplication id
        form(ts="1" * 300),  # a deduplication id over 128 characters
    ],
    ids=["superscript id", "5000-digit id", "200-digit id", "devanagari id", "ts with space", "cyrillic ts", "long ts"],
)
def test_odd_ids_and_timestamps_get_400_and_nothing_queued(stack, data):
    response = post_event(stack, data)
    assert response.status_code == 400, response.text
    assert queued(stack) == []


def test_a_queued_event_has_ids_sqs_accepts(stack):
    assert post_event(stack, form(entity_id="123456789", ts="1766047124")).status_code == 200
    [message] = queued(stack)
    assert SQS_ID.match(message["Attributes"]["MessageDeduplicationId"])
    assert SQS_ID.match(message["Attributes"]["MessageGroupId"])


@pytest.mark.parametrize("raw", ["abc", "a", "=="])
def test_a_body_that_is_not_base64_gets_400(stack, raw):
    event = {
        "version": "2.0", "rawPath": "/v1/bitrix/events", "requestContext": {"http": {"method": "POST"}},
        "headers": {"content-type": "application/x-www-form-urlencoded"}, "body": raw, "isBase64Encoded": True,
    }  # fmt: skip
    assert stack.invoke("bitrix_events", event)["statusCode"] == 400
    assert queued(stack) == []
