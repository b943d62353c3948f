"""Issue 5, item 1 over HTTP: poison messages in the writes queue next to good form posts, on the running local stack
(HTTP API, queue pollers playing the SQS event source, redrive to the DLQ). The good posts become leads; only the
poison messages fail, again and again, until they alone sit in the dead-letter queue."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import boto3
import requests

from throughline.capture.submissions import Submission, Visit


def poison_bodies() -> list[str]:
    crashing = Submission(
        submission_id="poison-year-one",
        form_id="contact",
        received_at=datetime.now(UTC),
        last_visit=Visit(utm_source="yandex", utm_medium="cpc"),
        phone="+79160009009",
    ).to_message()
    # A first visit in year 1 at +14:00 is before datetime.min in UTC: planning it raises OverflowError.
    crashing["submission"]["first_visit"] = {"utm_source": "google", "seen_at": "0001-01-01T00:00:00+14:00"}
    return [json.dumps(crashing), "null", "[]"]


def test_poison_messages_fail_alone_and_the_good_posts_become_leads(make_stack):
    stack = make_stack(environment={"POWERTOOLS_LOG_LEVEL": "CRITICAL"})
    sqs = boto3.client("sqs")
    queue = stack.resources.physical["WritesQueue"]
    dead_letters = stack.resources.physical["WritesDeadLetterQueue"]
    bodies = poison_bodies()
    for index, body in enumerate(bodies):
        sqs.send_message(
            QueueUrl=queue, MessageBody=body, MessageGroupId=f"poison-{index}", MessageDeduplicationId=f"p{index}"
        )
    for phone in ("+79160009101", "+79160009102"):
        answer = requests.post(
            f"{stack.url}/v1/forms/contact/submissions", json={"phone": phone, "utm_source": "vk", "utm_medium": "cpc"}
        )
        assert answer.status_code == 202, answer.text

    deadline = time.monotonic() + 120
    moved: list[str] = []
    while time.monotonic() < deadline and len(moved) < len(bodies):
        found = sqs.receive_message(QueueUrl=dead_letters, MaxNumberOfMessages=10, VisibilityTimeout=600)
        moved += [message["Body"] for message in found.get("Messages", [])]
        time.sleep(0.5)
    assert sorted(moved) == sorted(bodies)  # the poison, and only the poison, ended in the DLQ
    assert stack.wait_until_idle(timeout=60)
    leads = stack.sandbox.entities("lead")
    assert sorted(lead["PHONE"][0]["VALUE"] for lead in leads) == ["+79160009101", "+79160009102"]
