"""A flood of valid-looking form posts on the local stack (issue 15, item 5), with the template's default limits
(30 posts per client IP and 5 per contact an hour):

- a bot posts 200 forms from one address, each with another made-up phone (the per-IP limit holds it after 30);
- a bot posts 100 forms with one phone from 100 addresses (the per-contact limit holds it after 5);
- 40 real visitors post once each, from their own addresses, mixed into the flood.

Hand-computed: 40 + 30 + 5 = 75 posts accepted, which make 40 + 30 + 1 = 71 leads (the five posts of one phone are
one person: one lead and its repeat requests), 170 + 95 = 265 posts held (kept under raw/held/, never queued), and the
``SubmissionsHeld`` metric the handler emits sums to 265, over the threshold of template.yaml's HeldSubmissionsAlarm
(the local stack has no CloudWatch: the EMF lines the functions print are the metric). Every real visitor's lead is
written within a bound in the sandbox's time scale (a portal of 2 requests per second, burst 50), and the REST calls
spent are those of 71 leads, not of 340 posts.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter

import boto3
import pytest

from local.template import load_template
from local.traffic import Post, people, send, visitor_ip

pytestmark = pytest.mark.slow

BOT_IP = "203.0.113.99"
BOT_PHONE = "+79991112233"
# Every real lead written within this many seconds of the last post's answer. The 71 leads need about 50 REST calls,
# about the sandbox portal's burst of 50 at 2 per second: seconds. With the limits off the same traffic made 241 leads
# with 497 calls, and the last real lead came about two minutes after the posting ended (README, Floods and abuse).
REAL_LEADS_WITHIN = 60


def bot_posts() -> list[Post]:
    flood = []
    for index in range(200):  # one address, a new phone each time
        body = {"name": "Бот", "phone": f"+7999{index:07d}", "comment": "Купить"}
        flood.append(Post("contact", body, None, "flood", ip=BOT_IP))
    for index in range(100):  # one phone, a new address each time
        body = {"name": "Бот", "phone": BOT_PHONE, "comment": f"Заявка {index}"}
        flood.append(Post("callback", body, None, "flood", ip=visitor_ip(f"bot-{index}")))
    return flood


def emitted_metrics(output: str, name: str) -> list[float]:
    """Values of ``name`` in the CloudWatch embedded-metric-format objects the functions printed. Read object by
    object, not line by line: functions print from several threads at once, and two objects may share a line."""
    decoder, values, start = json.JSONDecoder(), [], output.find('{"_aws"')
    while start != -1:
        record, end = decoder.raw_decode(output, start)
        if name in record and any(
            metric["Name"] == name
            for directive in record["_aws"]["CloudWatchMetrics"]
            for metric in directive["Metrics"]
        ):
            value = record[name]
            values += value if isinstance(value, list) else [value]
        start = output.find('{"_aws"', end)
    return values


def alarm_threshold() -> tuple[float, int, dict]:
    alarm = load_template()["Resources"]["HeldSubmissionsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]) == ("Throughline", "SubmissionsHeld", "Sum")
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    return float(alarm["Threshold"]), int(alarm["Period"]), {d["Name"]: d["Value"] for d in alarm["Dimensions"]}


def test_a_flood_is_held_and_counted_while_real_visitors_become_leads_promptly(make_stack, capfd):
    stack = make_stack(environment={"POWERTOOLS_LOG_LEVEL": "WARNING"})
    rng = random.Random(15)
    crowd = people(40, rng)
    real = [Post("contact", {"name": p.name, "phone": p.e164, "utm_source": "yandex"}, p, "new") for p in crowd]
    flood = bot_posts()
    posts = real + flood
    rng.shuffle(posts)  # bots and people interleaved
    started = time.monotonic()
    answers = send(stack.url, posts, concurrency=4)
    posted = time.monotonic() - started

    statuses = Counter((post.kind, status) for post, status, _ in answers)
    assert statuses == {("new", 202): 40, ("flood", 202): 35, ("flood", 429): 265}, statuses
    held_answers = [body for post, status, body in answers if status == 429]
    assert all(body["error"] and body["submission_id"] for body in held_answers)

    # Every real visitor's lead is written promptly: the portal is not busy with 300 fake ones.
    real_phones = {post.person.e164 for post in real}
    deadline = time.monotonic() + REAL_LEADS_WITHIN
    while time.monotonic() < deadline:
        phones = {lead["PHONE"][0]["VALUE"] for lead in stack.sandbox.entities("lead") if lead.get("PHONE")}
        if real_phones <= phones:
            break
        time.sleep(0.2)
    real_done = time.monotonic() - started
    assert real_phones <= phones, f"{len(real_phones - phones)} real visitors have no lead after {real_done:.0f} s"
    assert stack.wait_until_idle(timeout=300)
    elapsed = time.monotonic() - started

    leads = stack.sandbox.entities("lead")
    by_phone = Counter(lead["PHONE"][0]["VALUE"] for lead in leads if lead.get("PHONE"))
    assert len(leads) == 71
    assert len(set(by_phone) - real_phones - {BOT_PHONE}) == 30  # the first 30 of the one address
    assert by_phone[BOT_PHONE] == 1  # five posts of one person: one lead, its repeat requests on the journey
    assert real_phones <= set(by_phone)

    # Held posts are kept with their reason, and none of them reached the queue.
    s3 = boto3.client("s3")
    bucket = stack.resources.physical["DataBucket"]
    held = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="raw/held/")
        for item in page.get("Contents", [])
    ]
    reasons = Counter(
        json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["held"]["reason"] for key in held
    )
    assert reasons == {"ip": 170, "contact": 95}
    assert {body["submission_id"] for body in held_answers} == {key.rsplit("/", 1)[1][:-5] for key in held}

    # The metric the alarm watches crossed its threshold within one period of the alarm.
    threshold, period, dimensions = alarm_threshold()
    assert dimensions == {"service": "capture_form"}
    output = capfd.readouterr().out
    held_metric = sum(emitted_metrics(output, "SubmissionsHeld"))
    assert posted < period
    assert held_metric == 265 > threshold
    assert sum(emitted_metrics(output, "HeldByIp")) == 170
    assert sum(emitted_metrics(output, "HeldByContact")) == 95

    stats = stack.sandbox.stats()
    requests_spent = stats["requests"]
    print(
        f"\nflood: {len(posts)} posts ({len(real)} real, {len(flood)} flood) in {posted:.1f} s; leads {len(leads)} "
        f"(real {len(real_phones)}, flood {len(leads) - len(real_phones)}); held {len(held)} {dict(reasons)}; "
        f"SubmissionsHeld {held_metric:.0f} > alarm threshold {threshold:.0f} per {period} s; REST calls "
        f"{requests_spent} ({requests_spent / len(leads):.2f} per lead); every real lead written "
        f"{real_done:.1f} s after the first post ({real_done - posted:.1f} s after the last), queue drained after "
        f"{elapsed:.1f} s"
    )
    # What 75 leads cost, never what 340 would: at most two calls per lead written (batched, it is far fewer).
    assert requests_spent <= 2 * len(leads)
