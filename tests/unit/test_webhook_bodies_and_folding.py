"""Outbound-webhook bodies (parsing, authenticity) and the journey field's rendering and folding."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from throughline.journey import events
from throughline.journey.events import CrmEvent, EventRejected, parse_event, parse_form, receive_event, verify
from throughline.journey.lines import Touch
from throughline.journey.projection import render_journey, render_line
from throughline.person_keys import person_key

DOCS_BODY = (
    b"event=ONCRMLEADADD&event_handler_id=975&data%5BFIELDS%5D%5BID%5D=7405&ts=1766047124"
    b"&auth%5Bdomain%5D=some-domain.bitrix24.com&auth%5Bclient_endpoint%5D=https%3A%2F%2Fsome-domain.bitrix24.com%2Frest%2F"
    b"&auth%5Bserver_endpoint%5D=https%3A%2F%2Foauth.bitrix.info%2Frest%2F&auth%5Bmember_id%5D=d897063e1ce7c5eb9f04b9751eef5915"
    b"&auth%5Bapplication_token%5D=jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
)
TOKEN = "jvh9y1ulvt2m6k5or90v9mg8nn32ozas"
MOSCOW = ZoneInfo("Europe/Moscow")


class Queue:
    def __init__(self):
        self.sent = []

    def send(self, message, *, group_id, deduplication_id):
        self.sent.append((message, group_id, deduplication_id))
        return "id"


def test_the_docs_example_body_is_read_with_every_value_a_string():
    fields = parse_form(DOCS_BODY)
    assert fields["data"] == {"FIELDS": {"ID": "7405"}}
    assert fields["auth"]["member_id"] == "d897063e1ce7c5eb9f04b9751eef5915"
    assert parse_event(fields) == CrmEvent("ONCRMLEADADD", "lead", 7405, "1766047124", "975")


def test_an_authentic_event_is_queued_in_its_entitys_group():
    queue = Queue()
    event = receive_event(DOCS_BODY, app_tokens=("other", TOKEN), member_id=None, domain=None, queue=queue)
    assert event is not None and event.group_id == "LEAD#7405"
    assert queue.sent == [(event.to_message(), "LEAD#7405", hashlib.sha256(DOCS_BODY).hexdigest())]


def test_two_events_for_one_record_in_one_second_are_two_messages():
    # Two updates of lead 7405 within one second send the same body twice; each delivery has its own request id.
    queue = Queue()
    for request_id in ("Ab1Cd2Ef3gh=", "Ab1Cd2Ef3gi="):
        receive_event(DOCS_BODY, app_tokens=(TOKEN,), member_id=None, domain=None, queue=queue, request_id=request_id)
    assert [dedup for _, _, dedup in queue.sent] == ["Ab1Cd2Ef3gh=", "Ab1Cd2Ef3gi="]
    # A request id SQS would refuse (spaces, over 128 characters) falls back to the body's hash.
    for bad in ("a b", "x" * 129, ""):
        assert events.deduplication_id(DOCS_BODY, bad) == hashlib.sha256(DOCS_BODY).hexdigest()


def test_a_renamed_portal_is_recognised_by_its_member_id():
    queue, moved = Queue(), []
    event = receive_event(DOCS_BODY, app_tokens=(TOKEN,), member_id="d897063e1ce7c5eb9f04b9751eef5915",
                          domain="old-name.bitrix24.com", queue=queue, moved=moved.append)  # fmt: skip
    assert event is not None and len(queue.sent) == 1
    assert moved == ["some-domain.bitrix24.com"]
    # The configured domain itself (any case) is no move.
    moved.clear()
    receive_event(DOCS_BODY, app_tokens=(TOKEN,), member_id="d897063e1ce7c5eb9f04b9751eef5915",
                  domain="Some-Domain.bitrix24.com", queue=queue, moved=moved.append)  # fmt: skip
    assert moved == []
    # No domain at all, but our token and member_id: accepted, and nothing to announce.
    no_domain = DOCS_BODY.replace(b"auth%5Bdomain%5D=some-domain.bitrix24.com&", b"")
    assert receive_event(no_domain, app_tokens=(TOKEN,), member_id="d897063e1ce7c5eb9f04b9751eef5915",
                         domain="old-name.bitrix24.com", queue=queue, moved=moved.append) is not None  # fmt: skip
    assert moved == []


@pytest.mark.parametrize(
    ("tokens", "member_id", "domain"),
    [
        (("nope",), None, None),
        ((), None, None),
        ((TOKEN,), "another-portal", None),
        ((TOKEN,), None, "evil.bitrix24.ru"),  # no member_id configured: the domain alone decides
        ((TOKEN,), "another-portal", "some-domain.bitrix24.com"),  # the domain matches, the member_id does not
    ],
)
def test_forged_or_foreign_events_are_refused_and_not_queued(tokens, member_id, domain):
    queue = Queue()
    with pytest.raises(EventRejected) as refused:
        receive_event(DOCS_BODY, app_tokens=tokens, member_id=member_id, domain=domain, queue=queue)
    assert refused.value.status == 401
    assert queue.sent == []


def test_tokens_are_compared_in_constant_time(monkeypatch):
    compared = []
    real = events.hmac.compare_digest
    monkeypatch.setattr(events.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b))
    verify(
        parse_form(DOCS_BODY), app_tokens=("first", TOKEN), member_id="d897063e1ce7c5eb9f04b9751eef5915", domain=None
    )
    assert (TOKEN.encode(), b"first") in compared and (TOKEN.encode(), TOKEN.encode()) in compared
    assert len(compared) == 3  # every token, then the member_id


def test_event_names_are_case_insensitive_and_comments_carry_data_id():
    fields = parse_form(b"event=onCrmTimelineCommentAdd&data%5BID%5D=12&ts=5")
    assert parse_event(fields) == CrmEvent("ONCRMTIMELINECOMMENTADD", "timeline_comment", 12, "5", "")
    fields = parse_form(b"event=onCrmActivityAdd&data%5BFIELDS%5D%5BID%5D=999&ts=1466439714")
    assert parse_event(fields).group_id == "ACTIVITY#999"


def test_events_the_journey_does_not_follow_are_accepted_but_ignored():
    assert parse_event(parse_form(b"event=ONCRMCOMPANYADD&data%5BFIELDS%5D%5BID%5D=1")) is None
    assert parse_event(parse_form(b"event=ONCRMLEADUSERFIELDADD&data%5BFIELDS%5D%5BID%5D=1")) is None


@pytest.mark.parametrize(
    "body", [b"", b"\xff", b"event=ONCRMLEADADD", b"event=ONCRMLEADADD&data%5BFIELDS%5D%5BID%5D=x"]
)
def test_malformed_bodies_are_400(body):
    with pytest.raises(EventRejected) as refused:
        parse_event(parse_form(body))
    assert refused.value.status == 400


def test_person_keys_are_64_hex_characters_of_an_hmac():
    key = person_key("+79161234567", "secret")
    assert len(key) == 64 and key == person_key("+79161234567", "secret") != person_key("+79161234567", "other")


def _touch(index: int, at: datetime, **extra: str) -> Touch:
    labels = {"label_source": "Телефон", "label_medium": "Исходящий звонок", **extra}
    return Touch(f"activity:{index}", at, "outgoing_call", "crm", "phone", "outgoing_call", detail=f"Звонок {index}",
                 extra=labels)  # fmt: skip


def test_lines_render_in_time_order_with_the_first_contact_marked():
    start = datetime(2025, 1, 17, 9, tzinfo=UTC)
    touches = [_touch(2, start + timedelta(days=1)), _touch(1, start)]
    assert render_journey(touches, MOSCOW) == (
        "Первичный контакт: 17.01.2025 — Телефон — Исходящий звонок — Звонок 1\n"
        "18.01.2025 — Телефон — Исходящий звонок — Звонок 2"
    )
    assert render_line(touches[0], MOSCOW) == "18.01.2025 — Телефон — Исходящий звонок — Звонок 2"


def test_an_overflowing_journey_folds_its_oldest_middle_lines_never_the_first_contact():
    start = datetime(2025, 1, 1, 9, tzinfo=UTC)
    touches = [_touch(index, start + timedelta(days=index - 1)) for index in range(1, 61)]
    text = render_journey(touches, MOSCOW, max_chars=600)
    lines = text.splitlines()
    assert len(text) <= 600
    assert lines[0] == "Первичный контакт: 01.01.2025 — Телефон — Исходящий звонок — Звонок 1"
    assert lines[1].startswith("… ещё ") and "с 02.01.2025 по " in lines[1]
    assert lines[-1].endswith("Звонок 60")
    folded = int(lines[1].split()[2])
    assert folded + len(lines) - 2 + 1 == 60  # every touch is either shown or counted in the summary
    assert render_journey(touches, MOSCOW, max_chars=100_000).count("\n") == 59
