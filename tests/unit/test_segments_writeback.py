"""The write-back plan (only differences, the portal's date forms) and its execution's stops: the deadline, a
transient error inside a batch (OPERATION_TIME_LIMIT) and a batch that failed as a whole."""

from __future__ import annotations

import pytest

from throughline.bitrix24 import BatchResult, BitrixNotFound, Deadline
from throughline.bitrix24.errors import OperationTimeLimit, QueryLimitExceeded
from throughline.segments.fields import Enumerations
from throughline.segments.writeback import Progress, decode_plan, encode_plan, execute, plan_updates

IDS = Enumerations(segments={"VIP": "11", "ACTIVE": "12"}, sizes={"large": "33"})


def test_only_differences_are_planned_whatever_form_the_portal_renders_dates_in() -> None:
    rows = [
        {"customer": "contact:1", "kind": "contact", "id": 1, "segment": "VIP", "rfm": "555", "since": "2026-12-01"},
        {"customer": "contact:2", "kind": "contact", "id": 2, "segment": "VIP", "rfm": "555", "since": "2026-12-01"},
        {"customer": "contact:3", "kind": "contact", "id": 3, "segment": None, "rfm": None, "since": None},
        {"customer": "contact:4", "kind": "contact", "id": 4, "segment": "ACTIVE", "rfm": "321", "since": "2026-12-06"},
        {"customer": "contact:5", "kind": "contact", "id": 5, "segment": "GONE", "rfm": None, "since": None},
        {"customer": "company:7", "kind": "company", "id": 7, "segment": "VIP", "size": "large"},
        {"customer": "contact:9", "kind": "contact", "id": 9, "segment": "VIP", "rfm": "555", "since": "2026-12-01"},
    ]
    current = {
        "contact:1": {"UF_CRM_TL_SEGMENT": "11", "UF_CRM_TL_RFM": "555",
                      "UF_CRM_TL_SEGMENT_SINCE": "2026-12-01T00:00:00+03:00"},
        "contact:2": {"UF_CRM_TL_SEGMENT": "11", "UF_CRM_TL_RFM": "555", "UF_CRM_TL_SEGMENT_SINCE": "01.12.2026"},
        "contact:3": {"UF_CRM_TL_SEGMENT": "12", "UF_CRM_TL_RFM": "111"},
        "contact:4": {"UF_CRM_TL_SEGMENT": "12", "UF_CRM_TL_RFM": "321"},
        "contact:5": {},
        "company:7": {},
    }  # fmt: skip
    plan = plan_updates(rows, current, IDS)
    assert plan == [
        ["contact", 3, {"UF_CRM_TL_SEGMENT": "", "UF_CRM_TL_RFM": ""}],
        ["contact", 4, {"UF_CRM_TL_SEGMENT_SINCE": "2026-12-06"}],
        ["company", 7, {"UF_CRM_TL_COMPANY_SIZE": "33"}],
    ]  # contact 5's code has no value in the portal's list; contact 9 was deleted since the snapshot
    assert decode_plan(encode_plan(plan)) == plan


def test_companies_get_their_segment_rfm_and_since_once_the_portal_has_the_fields() -> None:
    rows = [
        {"customer": "company:7", "kind": "company", "id": 7, "segment": "VIP", "rfm": "545", "since": "2026-12-01",
         "size": "large"},
        {"customer": "company:8", "kind": "company", "id": 8, "segment": "GONE", "rfm": "111", "since": "2026-12-01",
         "size": "large"},
    ]  # fmt: skip
    current = {"company:7": {"UF_CRM_TL_COMPANY_SIZE": "33", "UF_CRM_TL_SEGMENT_SINCE": "01.12.2026"}, "company:8": {}}
    with_fields = Enumerations(segments=IDS.segments, sizes=IDS.sizes, company_segments={"VIP": "71"})
    assert plan_updates(rows, current, with_fields) == [
        ["company", 7, {"UF_CRM_TL_SEGMENT": "71", "UF_CRM_TL_RFM": "545"}],
        ["company", 8, {"UF_CRM_TL_COMPANY_SIZE": "33"}],  # a code the company list lacks: the size still goes
    ]
    # A portal whose companies lack the segment fields (bitrix-setup not run again): the size only, as before.
    assert plan_updates(rows, current, IDS) == [["company", 8, {"UF_CRM_TL_COMPANY_SIZE": "33"}]]


class FakeClient:
    def __init__(self, answers: list, seconds: float = 900.0) -> None:
        self.answers, self.sent = answers, []
        self.deadline = Deadline(lambda: seconds, reserve=0.0)

    def batch_capacity(self, methods: list[str]) -> int:
        return 50

    def batch(self, commands: dict) -> BatchResult:
        self.sent.append(commands)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return BatchResult({}, {f"u{n}": error for n, error in answer.items()}, {}, {})


PLAN = [["contact", n, {"UF_CRM_TL_RFM": "1"}] for n in range(1, 121)]


def test_an_operation_time_limit_inside_a_batch_stops_there_and_the_next_run_resumes_from_it() -> None:
    limit = OperationTimeLimit("OPERATION_TIME_LIMIT", "blocked", 429, "crm.contact.update", retry_at=1.0)
    client = FakeClient([{3: BitrixNotFound("NOT_FOUND", "Not found")}, {10: limit, 11: limit}])
    saved: list[int] = []
    progress = Progress(0)
    assert not execute(client, PLAN, progress, save=lambda p: saved.append(p.position))
    assert (progress.position, progress.written, progress.missing, saved) == (60, 59, 1, [50, 60])
    assert [len(batch) for batch in client.sent] == [50, 50]
    assert client.sent[0]["u0"] == (
        "crm.contact.update",
        {
            "id": 1,
            "fields": {"UF_CRM_TL_RFM": "1"},
            "params": {"REGISTER_SONET_EVENT": "N", "REGISTER_HISTORY_EVENT": "N"},
        },
    )
    rest = FakeClient([{}, {}])
    assert execute(rest, PLAN, progress, save=lambda p: None) and progress.position == 120
    assert rest.sent[0]["u0"][1]["id"] == 61 and progress.written == 119


def test_a_failed_batch_or_a_near_deadline_sends_nothing_more_and_loses_nothing() -> None:
    progress = Progress(0)
    assert not execute(FakeClient([QueryLimitExceeded("QUERY_LIMIT_EXCEEDED", "busy", 503, "batch")]), PLAN, progress,
                       save=lambda p: None)  # fmt: skip
    assert progress.position == 0 and progress.calls == 1
    near = FakeClient([], seconds=19.0)
    assert not execute(near, PLAN, progress, save=lambda p: None) and near.sent == []


def test_a_crash_between_a_batch_and_its_cursor_write_resends_that_batch_only() -> None:
    """The invocation dies after the portal took batch 2 but before the cursor was saved: the next run starts from
    the saved cursor (after batch 1), sends batch 2 again (an update is idempotent) and skips no record."""
    import dataclasses

    stored: list[Progress] = []

    def save(current: Progress) -> None:
        if current.position == 100:
            raise RuntimeError("killed before the cursor write")
        stored.append(dataclasses.replace(current))

    first = FakeClient([{}, {}, {}])
    with pytest.raises(RuntimeError):
        execute(first, PLAN, Progress(0), save=save)
    assert [p.position for p in stored] == [50] and len(first.sent) == 2
    second = FakeClient([{}, {}])
    assert execute(second, PLAN, dataclasses.replace(stored[-1]), save=lambda p: None)
    ids = [command[1]["id"] for batch in (*first.sent, *second.sent) for command in batch.values()]
    assert sorted(set(ids)) == list(range(1, 121))  # none skipped
    assert sorted(n for n in set(ids) if ids.count(n) > 1) == list(range(51, 101))  # only the lost batch, once more
