"""The segments benchmark, small: a night's write-back spread over invocations whose deadline comes early resumes
each time where the last stopped, writes every changed contact once, and the next night writes only what changed."""

from __future__ import annotations

import math

import pytest

from benchmarks.segments import run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")]


def test_a_night_resumes_across_invocations_and_the_next_writes_only_changes() -> None:
    contacts = 3_000
    # 45 s of an invocation at 2 requests a second: 50 calls (20 s are kept for the last batch), so several runs.
    figures = run(contacts, seconds=45.0)
    first = figures["first_night"]
    assert len(first) >= 2 and [item["status"] for item in first][-1] == "done"
    assert all(item["status"] == "unfinished" for item in first[:-1])
    assert first[-1]["written"] == first[-1]["total"] == contacts  # every contact has a segment or a score
    commands = figures["first_night_batch_commands"]
    # Each update sent once, bar those a deadline or an operating-time block cut in a batch (sent again).
    assert contacts <= commands["crm.contact.update"] <= contacts + 50 * len(first)
    # The snapshot is read once: the later invocations only continue the write-back.
    assert commands["crm.contact.list"] == math.ceil((contacts + 1) / 50)
    second = figures["second_night"]
    assert len(second) == 1 and second[0]["total"] < contacts / 10
