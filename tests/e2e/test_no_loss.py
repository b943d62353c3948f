"""No loss under fire: people post forms over HTTP while the portal fails calls at random (some after doing the
work), limits bursts with its leaky bucket (2/s) and goes down for a stretch. Afterwards the portal holds exactly one
lead (or, in simple CRM mode, one deal and one contact) per person with the tags they came with, and the writer stayed
under the rate limit. Three portals:

- normal: 500 people, 30 % faults, a 15 s outage;
- slow: seconds per write (crm.lead.add 6.5 s: a batch of ten would pass the portal's 60 s cut-off), fewer people;
  the portal's seconds are simulated, a tenth of them slept (``time_scale``): its answers' ``time`` blocks and its
  60 s cut-off count them in full, so the writer sizes its batches as against a portal that sleeps them all;
- simple CRM mode: 60 people, no leads, contacts and deals, on an Enterprise portal's rate (5/s; the writer is told
  so): the pacing is the normal portal's test (the portal's seconds simulated, none slept), and what matters is that
  every kind of fault is met, which a few dozen failed calls do.

The figures (REST calls per lead, 503 share, batches cut off, replays from the DLQ) are printed for the issue's
closing note.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import boto3
import pytest

from local.traffic import burst, send, utm_campaigns
from throughline.bitrix24.portal import bitrix_client
from throughline.config import get_settings
from throughline.dlq import replay_dead_letters

BURST = 20

pytestmark = pytest.mark.slow

# In-doubt writes come back after the portal settled: seconds locally, not the production minute.
LOCAL_WRITER = {"POWERTOOLS_LOG_LEVEL": "WARNING", "BITRIX24_RATE_PER_SECOND": "2", "BITRIX24_BURST": str(BURST)}


def run_burst(stack, people: int, seed: int, *, outage: float | None = None) -> dict:
    traffic = burst(people, seed=seed, repeats=0, doubles=0.02, spam=0, invalid=0)
    timer = threading.Timer(3.0, lambda: stack.sandbox.start_outage(outage)) if outage else None
    if timer:
        timer.start()
    started = time.monotonic()
    answers = send(stack.url, traffic.first_wave, concurrency=8)
    posted = time.monotonic() - started
    assert Counter(status for _, status, _ in answers) == {202: len(traffic.first_wave)}
    replayed = 0
    for _ in range(3):
        assert stack.wait_until_idle(timeout=600), "the writer did not drain the queue"
        # Whatever exhausted its receives waits in the DLQ; the documented replay puts it back.
        moved = replay_dead_letters(
            boto3.client("sqs"),
            dead_letter_queue_url=stack.resources.physical["WritesDeadLetterQueue"],
            queue_url=stack.resources.physical["WritesQueue"],
        ).moved
        replayed += moved
        if not moved:
            break
    if timer:
        timer.join()
    return {"traffic": traffic, "posted": posted, "elapsed": time.monotonic() - started, "replayed": replayed}


def check_one_record_per_person(records: list[dict], phone_of, traffic) -> None:
    by_phone: dict[str, list[dict]] = {}
    for record in records:
        by_phone.setdefault(phone_of(record), []).append(record)
    expected = {person.e164: person for person in traffic.people}
    assert len(records) == len(expected)
    assert set(by_phone) == set(expected)
    assert all(len(found) == 1 for found in by_phone.values())
    for phone, [record] in by_phone.items():
        tags = expected[phone].tags
        if "utm_source" in tags:
            assert (record["UTM_SOURCE"], record["UTM_MEDIUM"]) == (tags["utm_source"], tags["utm_medium"])
            assert record["UTM_CAMPAIGN"] in utm_campaigns(tags)
        assert record["UF_CRM_CUSTOMER_JOURNEY"].startswith("Первичный контакт: ")


def report(name: str, stack, run: dict, people: int) -> dict:
    stats = stack.sandbox.stats()
    paced = bitrix_client(get_settings()).pacer.waited  # the writers' shared pacer in this process
    answered = stats["requests"] - stats["faults"]["outage"]  # requests the portal answered at all
    limited_share = stats["rate_limited"] / answered
    print(
        f"\n{name}, {people} people: {len(run['traffic'].first_wave)} posts in {run['posted']:.1f} s, all written in "
        f"{run['elapsed']:.1f} s; REST requests {stats['requests']} ({answered} answered, "
        f"{stats['faults']['outage']} during the outage), {stats['requests'] / people:.2f} per lead; "
        f"injected faults {stats['faults']}; 503 QUERY_LIMIT_EXCEEDED {stats['rate_limited']} = "
        f"{limited_share:.2%} of answered calls; requests cut off at 60 s: {stats.get('cut_off', 0)}; "
        f"leaky-bucket peak {stats['bucket_peak']} of {BURST}; the writer waited {paced:.1f} s for the bucket; "
        f"replayed from the DLQ: {run['replayed']}"
    )
    assert limited_share < 0.01
    return {**stats, "paced": paced}


@pytest.mark.slow(seconds=190)
def test_500_people_under_faults_outage_and_rate_limit_make_500_leads(make_stack):
    # A portal whose bucket (2/s, burst 20) the writer must respect: with burst 50 a run this size fits in the
    # burst on a slow machine, and then the pacing would not be tested at all. The writer is told the same limits.
    # Its methods answer at once (time_scale 0): a portal that takes seconds per call paces the writer by itself
    # (the slow-portal test below), and the bucket would then never fill.
    people = 500
    stack = make_stack(
        sandbox_options={"seed": 500, "rate": 2.0, "burst": BURST, "time_scale": 0},
        # The writer is told a smaller burst than the portal allows (5 of 20): it must pace itself after five quick
        # calls, however fast or slow the machine runs it, so the pacing is always exercised, never only on a fast
        # machine; the portal's own bucket stays the judge of whether it kept under the limit.
        environment={**LOCAL_WRITER, "BITRIX24_BURST": "5", "WRITER_SETTLE_SECONDS": "2"},
    )
    stack.sandbox.set_faults(error_rate=0.2, lost_response_rate=0.1)  # 30 % of calls fail, a third after the work
    run = run_burst(stack, people, seed=500, outage=15)
    check_one_record_per_person(stack.sandbox.entities("lead"), lambda lead: lead["PHONE"][0]["VALUE"], run["traffic"])
    stats = report("normal portal", stack, run, people)
    # The writer really pressed against its limit (so the pacing was needed, not idle), yet stayed under the portal's.
    assert stats["paced"] > 1


@pytest.mark.slow(seconds=20)
def test_a_slow_portal_with_the_60_second_cut_off_loses_no_lead(make_stack):
    # 6.5 s per crm.lead.add: the writer's former batch of ten adds (one SQS batch) would run 65 s and be cut off
    # part-way. Batches are sized from measured write times instead; whatever is cut off is found by ORIGIN_ID.
    people = 30
    stack = make_stack(
        sandbox_options={
            "seed": 41,
            "rate": 2.0,
            "burst": BURST,
            "method_seconds": {"crm.lead.add": 6.5, "crm.lead.update": 3.0, "crm.timeline.comment.add": 2.0},
            "time_scale": 0.1,
        },
        environment={**LOCAL_WRITER, "WRITER_SETTLE_SECONDS": "2"},
    )
    stack.sandbox.set_faults(error_rate=0.1, lost_response_rate=0.05)
    run = run_burst(stack, people, seed=41)
    check_one_record_per_person(stack.sandbox.entities("lead"), lambda lead: lead["PHONE"][0]["VALUE"], run["traffic"])
    stats = report("slow portal (6.5 s per lead add)", stack, run, people)
    assert stats.get("cut_off", 0) == 0  # no batch ran into the portal's 60 s limit


@pytest.mark.slow(seconds=70)
def test_a_simple_mode_portal_gets_one_deal_and_one_contact_per_person(make_stack):
    # What is tested here is simple mode's shape (a contact and a deal per person, never a lead) through every kind of
    # fault, not the size of the crowd (the 500-person run above) nor the pacing (the writer never waits for this
    # bucket): 60 people meet a few dozen failed and in-doubt calls, as 150 did, in well under half the time.
    people = 60
    stack = make_stack(
        sandbox_options={"seed": 150, "rate": 5.0, "burst": BURST, "crm_mode": "simple", "time_scale": 0},
        environment={**LOCAL_WRITER, "BITRIX24_RATE_PER_SECOND": "5", "WRITER_SETTLE_SECONDS": "2"},
    )
    stack.sandbox.set_faults(error_rate=0.2, lost_response_rate=0.1)
    run = run_burst(stack, people, seed=150)
    assert stack.sandbox.entities("lead") == []
    contacts = {contact["ID"]: contact for contact in stack.sandbox.entities("contact")}
    assert len(contacts) == people
    check_one_record_per_person(
        stack.sandbox.entities("deal"),
        lambda deal: contacts[str(deal["CONTACT_ID"])]["PHONE"][0]["VALUE"],
        run["traffic"],
    )
    stats = report("simple CRM mode", stack, run, people)
    assert stats["faults"]["error"] >= 5 and stats["faults"]["lost_response"] >= 5  # both kinds of fault were met
