"""Property tests: whatever a queued message holds, the writer returns an outcome per message and never raises.

Submissions are arbitrary (any unicode, datetimes from year 1 to 9999 in zones from −12 to +14, empty and huge
values, wrong types where JSON allows them); message bodies are arbitrary text and JSON. The Bitrix24 client is a fake
that encodes every command as the real one does (so an unencodable value shows), and the journey store a fake that
encodes every item as DynamoDB would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from throughline.adapters.journey_store import encode_item, touch_key
from throughline.bitrix24 import BatchResult, Deadline, LeakyBucket, Response
from throughline.bitrix24.query import build_query
from throughline.capture.submissions import MESSAGE_TYPE, Submission, Visit
from throughline.config import Settings
from throughline.writer.leads import CLASSIC, SIMPLE, LeadRules, LeadWriter, PortalState
from throughline.writer.queued import QueuedWrite, write_queued


class FakeBitrix:
    """Answers like an empty portal that accepts every write; encodes each command as the real client does."""

    def __init__(self, mode: int = CLASSIC, known: bool = False):
        self.mode = mode
        self.known = known  # whether every phone/e-mail belongs to lead 7 / contact 9 with an open deal 11
        self.deadline = Deadline()
        self.pacer = LeakyBucket(rate=100, burst=100)
        self.request_budget = 30.0
        self.access_denied = 0  # «Access denied» answers seen (the real client counts them)
        self.seconds: dict[str, float] = {}
        self.calls = 0
        self.next_id = 100

    def method_seconds(self, method: str, default: float = 2.0) -> float:
        return self.seconds.get(method, default)

    def call(self, method: str, params: dict | None = None) -> Response:
        self.calls += 1
        build_query(params or {})
        return Response(result=self.mode if method == "crm.settings.mode.get" else None)

    def batch(self, commands: dict[str, tuple[str, dict[str, Any]]], *, halt: bool = False) -> BatchResult:
        self.calls += 1
        results: dict[str, Any] = {}
        for key, (method, params) in commands.items():
            build_query(params)
            if method == "crm.duplicate.findbycomm":
                results[key] = {"LEAD": [7], "CONTACT": [9]} if self.known else []
            elif method in ("crm.lead.list", "crm.deal.list", "crm.contact.list"):
                rows = []
                if self.known and key != "origin":
                    row_id = {"crm.lead.list": 7, "crm.deal.list": 11, "crm.contact.list": 9}[method]
                    rows = [{"ID": str(row_id), "STATUS_SEMANTIC_ID": "P", "STAGE_SEMANTIC_ID": "P", "CONTACT_ID": "9"}]
                results[key] = rows
            elif method.endswith(".add"):
                self.next_id += 1
                results[key] = self.next_id
            else:
                results[key] = True
        return BatchResult(results, {}, {}, {})


class FakeJourneys:
    def __init__(self):
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def put(self, entity, touches, *, state, lines=None, **attributes):
        for touch in touches:
            encode_item(entity, touch, state, line=(lines or {}).get(touch.touch_id), **attributes)
            self.items[touch_key(entity, touch)] = {"state": state, **attributes}

    def states(self, keys):
        return {key: self.items[key] for key in keys if key in self.items}


ZONES = [UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12)), ZoneInfo("Europe/Moscow")]
texts = st.text(max_size=300) | st.just("") | st.text(min_size=2000, max_size=2500)
optional_texts = st.none() | texts
moments = st.datetimes(timezones=st.sampled_from(ZONES)) | st.sampled_from(
    [datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)]
)
# What JSON can put where a text belongs.
junk = st.none() | st.integers() | st.floats(allow_nan=True) | st.booleans() | st.lists(st.text(max_size=5), max_size=3)
loose = optional_texts | junk
visits = st.builds(
    Visit,
    utm_source=loose,
    utm_medium=loose,
    utm_campaign=loose,
    utm_content=loose,
    utm_term=loose,
    referrer=loose,
    landing_url=loose | st.just("https://[") | st.just("https://shop.example.ru/?yclid=1&gclid=2"),
    seen_at=st.none() | moments,
)
submissions = st.builds(
    Submission,
    submission_id=st.text(min_size=1, max_size=60) | junk,
    form_id=texts | junk,
    received_at=moments,
    last_visit=visits,
    first_visit=st.none() | visits,
    name=loose,
    last_name=loose,
    second_name=loose,
    phone=st.none() | st.sampled_from(["+79161234567", "+79160000000"]) | texts | junk,
    email=st.none() | st.sampled_from(["ivan@example.ru"]) | texts | junk,
    comment=loose,
    click_ids=st.dictionaries(st.text(max_size=10), loose, max_size=3),
    client_ids=st.dictionaries(st.text(max_size=10), loose, max_size=3),
    extra=st.dictionaries(st.text(max_size=20), loose, max_size=5),
    origin=loose,
)


def writer(mode: int = CLASSIC, known: bool = False) -> LeadWriter:
    return LeadWriter(
        FakeBitrix(mode, known),  # type: ignore[arg-type]
        FakeJourneys(),  # type: ignore[arg-type]
        LeadRules(),
        portal=PortalState(),
        retry_pause=0,
        sleep=lambda seconds: None,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(submissions, max_size=6), st.sampled_from([CLASSIC, SIMPLE]), st.booleans())
def test_the_writer_returns_an_outcome_for_every_submission_and_never_raises(items, mode, known):
    outcomes = writer(mode, known).write(items)
    for item in items:
        key = item.submission_id if isinstance(item.submission_id, str) else str(item.submission_id)
        assert key in outcomes
        outcome = outcomes[key]
        assert outcome.ok or outcome.error is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def submission_message(submission: dict[str, Any]) -> str:
    return json.dumps({"type": MESSAGE_TYPE, "version": 1, "submission": submission}, default=str)


valid_submission = st.fixed_dictionaries(
    {
        "submission_id": st.uuids().map(str),
        "form_id": st.text(max_size=20),
        "received_at": moments.map(datetime.isoformat),
        "last_visit": st.fixed_dictionaries({"utm_source": optional_texts, "seen_at": st.none()}),
    },
    optional={
        "first_visit": st.fixed_dictionaries(
            {"utm_source": optional_texts, "seen_at": st.none() | moments.map(datetime.isoformat) | texts}
        ),
        "phone": loose,
        "email": loose,
        "extra": json_values,
        "click_ids": json_values,
    },
)
bodies = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | st.dictionaries(st.text(max_size=10), json_values, max_size=5).map(
        lambda d: json.dumps({"type": MESSAGE_TYPE, **d})
    )
    | valid_submission.map(submission_message)
    | st.dictionaries(st.text(max_size=15), json_values, max_size=6).map(submission_message)
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(bodies, min_size=1, max_size=10))
def test_write_queued_answers_every_message_whatever_its_body(texts_):
    items = [QueuedWrite(message_id=f"m{index}", body=text) for index, text in enumerate(texts_)]
    outcomes = write_queued(items, writer(), None, Settings())
    assert set(outcomes) == {item.message_id for item in items}


def test_a_poison_submission_does_not_fail_its_round_mates():
    good = Submission(
        submission_id="good",
        form_id="contact",
        received_at=datetime(2026, 11, 29, 12, tzinfo=UTC),
        last_visit=Visit(utm_source="yandex", utm_medium="cpc"),
        phone="+79161234567",
    )
    poison = Submission(
        submission_id="poison",
        form_id="contact",
        received_at=datetime(2026, 11, 29, 12, tzinfo=UTC),
        last_visit=Visit(utm_source="google", utm_medium="cpc"),
        first_visit=Visit(utm_source="vk", seen_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))),
        phone="+79160000000",
    )
    outcomes = writer().write([poison, good])
    assert (outcomes["good"].ok, outcomes["good"].action) == (True, "created")
    assert (outcomes["poison"].ok, type(outcomes["poison"].error).__name__) == (False, "Unwritable")


def test_rounds_fit_well_inside_the_portal_cut_off_and_follow_its_speed():
    lead_writer = writer()
    lead_writer.portal.mode = CLASSIC
    cold = lead_writer._round_limit()
    assert cold >= 1 and cold * 7.0 <= 60  # before any answer: careful enough for 7 s per create
    lead_writer.bitrix.seconds = {"crm.lead.add": 0.1}
    assert lead_writer._round_limit() == 20  # a fast portal: as many as one look-up batch carries
    lead_writer.bitrix.seconds = {"crm.lead.add": 6.5}
    slow = lead_writer._round_limit()
    assert slow >= 1 and slow * 6.5 <= 30
    lead_writer.portal.mode = SIMPLE  # a contact and a deal per new person
    lead_writer.bitrix.seconds = {"crm.contact.add": 3.0, "crm.deal.add": 3.0}
    assert lead_writer._round_limit() == 5


class RecordingQueue:
    def __init__(self):
        self.delays: dict[str, int] = {}

    def retry_after(self, receipt_handle: str, seconds: int) -> None:
        self.delays[receipt_handle] = seconds


def test_a_poison_message_leaves_its_group_within_seconds_and_other_failures_back_off():
    good = Submission(
        submission_id="good",
        form_id="contact",
        received_at=datetime(2026, 11, 29, 12, tzinfo=UTC),
        last_visit=Visit(utm_source="yandex", utm_medium="cpc"),
        phone="+79161234567",
    )
    poison = {**good.to_message(), "submission": {**good.to_message()["submission"], "submission_id": "p"}}
    poison["submission"]["first_visit"] = {"utm_source": "vk", "seen_at": "0001-01-01T00:00:00+14:00"}
    items = [
        QueuedWrite("m1", "null", receipt_handle="r1"),
        QueuedWrite("m2", json.dumps(poison), receipt_handle="r2"),
        QueuedWrite("m3", json.dumps(good.to_message()), receipt_handle="r3"),
    ]
    queue = RecordingQueue()
    unreachable = writer()
    unreachable.bitrix.call = lambda *args, **kwargs: (_ for _ in ()).throw(ConnectionError("down"))
    unreachable.portal.mode = None
    outcomes = write_queued(items, unreachable, queue, Settings())  # type: ignore[arg-type]
    assert not any(outcome.ok for outcome in outcomes.values())
    assert queue.delays["r1"] == 1  # poison: to the DLQ within seconds, unblocking the person's group
    assert queue.delays["r3"] >= Settings().writer_retry_base_seconds  # the portal is down: the usual back-off


def test_a_write_the_batch_answer_does_not_mention_is_in_doubt_not_done():
    lead_writer = writer(CLASSIC, known=True)  # the person has open lead 7: a repeat request updates it
    answer = lead_writer.bitrix.batch

    def silent_about_writes(commands, *, halt=False):
        result = answer(commands, halt=halt)
        return BatchResult({k: v for k, v in result.results.items() if not k.startswith(("update", "add"))}, {}, {}, {})

    lead_writer.bitrix.batch = silent_about_writes
    submission = Submission(
        submission_id="repeat",
        form_id="contact",
        received_at=datetime(2026, 11, 29, 12, tzinfo=UTC),
        last_visit=Visit(utm_source="vk", utm_medium="cpc"),
        phone="+79161234567",
    )
    outcome = lead_writer.write([submission])["repeat"]
    assert (outcome.ok, outcome.in_doubt) == (False, True)
    [state] = lead_writer.journeys.items.values()
    assert state["state"] == "pending"  # not marked applied on no evidence
