"""Integration tests of throughline.bitrix24 (client, pacing, errors, query) against the Bitrix24 sandbox over HTTP.

The sandbox is the protocol peer: every request below really crosses a socket. Nothing of HTTP is mocked; where a
test needs to see what went over the wire it hangs a response hook on a real ``requests.Session``, and where it needs
to change the portal between two attempts it does so from the client's injectable back-off ``sleep``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
import requests

from local.bitrix24_sandbox import Sandbox
from throughline.bitrix24 import (
    BatchIncomplete,
    BatchResult,
    Bitrix24Client,
    BitrixAccessDenied,
    BitrixAuthError,
    BitrixBadRequest,
    BitrixMethodNotFound,
    BitrixNotFound,
    BitrixUnavailable,
    Deadline,
    LeakyBucket,
    MethodTimes,
    NotEnoughTime,
    OperationTimeLimit,
)
from throughline.bitrix24.client import new_session

JOURNEY = (
    "Первичный контакт: 15.01.2025 — Google — CPC — «Купить CRM систему»\n"
    "16.01.2025 — Email — Рассылка — «Преимущества Битрикс24»\n"
    "17.01.2025 — Телефон — Исходящий звонок — Консультация & 100% «скидка»"
)
TIME_KEYS = {
    "start",
    "finish",
    "duration",
    "processing",
    "date_start",
    "date_finish",
    "operating_reset_at",
    "operating",
}


# -- helpers ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    """A local port nobody listens on (bound once by us, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Wire:
    """A real requests.Session that remembers every JSON request body and response body it carried."""

    def __init__(self) -> None:
        self.session = new_session()
        self.requests: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.requests.append(json.loads(response.request.body or b"{}"))
        self.responses.append(response.json())


class Recorder:
    """Records calls to a callable and can run an action on each (used as the client's back-off ``sleep``)."""

    def __init__(self, action: Callable[[float], None] | None = None) -> None:
        self.calls: list[float] = []
        self._action = action

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        if self._action:
            self._action(seconds)
        time.sleep(seconds)


def add_leads(client: Bitrix24Client, fields: list[dict[str, Any]]) -> list[int]:
    """Create leads through batches of 50 ``crm.lead.add`` commands; returns the new ids in order."""
    ids: list[int] = []
    for start in range(0, len(fields), 50):
        chunk = fields[start : start + 50]
        result = client.batch({f"add_{i}": ("crm.lead.add", {"fields": item}) for i, item in enumerate(chunk)})
        assert result.errors == {}
        ids += [result.results[f"add_{i}"] for i in range(len(chunk))]
    return ids


def full_traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


@pytest.fixture
def client(sandbox: Sandbox) -> Bitrix24Client:
    return Bitrix24Client(sandbox.webhook_url)


# -- call(): the envelope ---------------------------------------------------------------------------------------------


def test_call_parses_the_envelope_of_add_get_and_list_pages(sandbox: Sandbox, client: Bitrix24Client) -> None:
    added = client.call("crm.lead.add", {"fields": {"TITLE": "Первая заявка", "COMMENTS": JOURNEY}})
    assert added.result == 1 and isinstance(added.result, int)
    assert added.total is None and added.next is None
    assert set(added.time) == TIME_KEYS
    assert added.time["operating"] == pytest.approx(0.1)  # DEFAULT_METHOD_SECONDS["crm.lead.add"]

    got = client.call("crm.lead.get", {"id": 1})
    assert got.result["ID"] == "1"
    assert got.result["TITLE"] == "Первая заявка"
    assert got.result["COMMENTS"] == JOURNEY
    assert got.total is None and got.next is None

    add_leads(client, [{"TITLE": f"Lead {n}"} for n in range(2, 61)])  # 60 leads in all

    first = client.call("crm.lead.list", {"order": {"ID": "ASC"}, "select": ["ID", "TITLE"]})
    assert len(first.result) == 50
    assert first.total == 60
    assert first.next == 50
    assert first.result[0] == {"ID": "1", "TITLE": "Первая заявка"}
    assert first.result[49] == {"ID": "50", "TITLE": "Lead 50"}
    assert set(first.time) == TIME_KEYS

    second = client.call("crm.lead.list", {"order": {"ID": "ASC"}, "select": ["ID"], "start": first.next})
    assert [row["ID"] for row in second.result] == [str(n) for n in range(51, 61)]
    assert second.total == 60
    assert second.next is None
    assert client.calls == sandbox.stats()["requests"] == 6


def test_a_webhook_url_without_the_trailing_slash_works(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url.rstrip("/"))

    assert client.call("crm.lead.add", {"fields": {"TITLE": "slash"}}).result == 1
    assert sandbox.stats()["status_codes"] == {"200": 1}


def test_wrong_secret_is_an_auth_error_that_never_shows_the_secret(sandbox: Sandbox) -> None:
    bad_secret = "wr0ngs3cr3tvalue"
    bad = Bitrix24Client(f"{sandbox.base_url}/rest/{sandbox.user_id}/{bad_secret}/")

    with pytest.raises(BitrixAuthError) as caught:
        bad.call("crm.lead.list")

    error = caught.value
    assert error.status == 401
    assert error.code == "INVALID_CREDENTIALS"
    assert error.method == "crm.lead.list"
    assert bad.calls == 1  # an auth error is final: not retried
    for text in (str(error), repr(error), full_traceback(error), repr(bad)):
        assert bad_secret not in text
        assert sandbox.base_url not in text
    assert sandbox.stats()["status_codes"] == {"401": 1}


def test_unknown_method_missing_lead_and_bad_id_are_typed_errors(sandbox: Sandbox, client: Bitrix24Client) -> None:
    with pytest.raises(BitrixMethodNotFound) as unknown:
        client.call("crm.lead.frobnicate", {"id": 1})
    assert (unknown.value.status, unknown.value.code) == (404, "ERROR_METHOD_NOT_FOUND")

    with pytest.raises(BitrixNotFound) as missing:
        client.call("crm.lead.get", {"id": 424242})
    assert missing.value.status == 400
    assert missing.value.code == ""  # the old crm.* API: empty code, "Not found" only in the description
    assert missing.value.description == "Not found"
    assert missing.value.method == "crm.lead.get"

    with pytest.raises(BitrixBadRequest) as bad_id:
        client.call("crm.lead.get", {"id": 0})
    assert bad_id.value.description == "ID is not defined or invalid."

    # None of these is retryable: one request each.
    assert client.calls == 3
    assert sandbox.stats()["requests"] == 3
    for error in (unknown.value, missing.value, bad_id.value):
        for text in (str(error), repr(error), full_traceback(error)):
            assert sandbox.secret not in text
    assert sandbox.secret not in repr(client)
    assert sandbox.webhook_url not in repr(client)


# -- batch() ----------------------------------------------------------------------------------------------------------


def test_batch_gives_results_and_per_command_errors(sandbox: Sandbox, client: Bitrix24Client) -> None:
    result = client.batch(
        {
            "add": ("crm.lead.add", {"fields": {"TITLE": "Из батча", "SOURCE_ID": "WEB", "COMMENTS": JOURNEY}}),
            "read_back": ("crm.lead.get", {"id": "$result[add]"}),
            "missing": ("crm.lead.get", {"id": 99999}),
            "bad_id": ("crm.lead.get", {"id": 0}),
            "count": ("crm.lead.list", {"filter": {"SOURCE_ID": "WEB"}, "select": ["ID"]}),
        }
    )

    assert isinstance(result, BatchResult)
    assert set(result.results) == {"add", "read_back", "count"}
    assert result.results["add"] == 1
    assert result.results["read_back"]["TITLE"] == "Из батча"
    assert result.results["read_back"]["COMMENTS"] == JOURNEY  # PHP-style query encoding survives the round trip
    assert result.results["count"] == [{"ID": "1"}]
    assert result.totals == {"count": 1}
    assert result.nexts == {}

    assert set(result.errors) == {"missing", "bad_id"}
    assert isinstance(result.errors["missing"], BitrixNotFound)
    assert result.errors["missing"].method == "crm.lead.get"
    assert isinstance(result.errors["bad_id"], BitrixBadRequest)
    assert result.errors["bad_id"].description == "ID is not defined or invalid."

    assert result.get("add") == 1
    with pytest.raises(BitrixNotFound):
        result.get("missing")
    with pytest.raises(BitrixBadRequest):
        result.get("bad_id")

    stats = sandbox.stats()
    assert stats["requests"] == 1 and client.calls == 1
    assert stats["batch_commands"] == {"crm.lead.add": 1, "crm.lead.get": 3, "crm.lead.list": 1}
    assert [lead["TITLE"] for lead in sandbox.entities("lead")] == ["Из батча"]


def test_batch_with_halt_stops_at_the_first_failure(sandbox: Sandbox, client: Bitrix24Client) -> None:
    result = client.batch(
        {"bad": ("crm.lead.get", {"id": 0}), "add": ("crm.lead.add", {"fields": {"TITLE": "never"}})}, halt=True
    )

    assert set(result.errors) == {"bad"}
    assert result.results == {}
    assert sandbox.entities("lead") == []


@pytest.mark.parametrize(
    "commands",
    [
        pytest.param({"0": ("crm.lead.list", {})}, id="numeric-zero"),
        pytest.param({"c0": ("crm.lead.list", {}), "17": ("crm.lead.list", {})}, id="numeric-among-words"),
        pytest.param({"": ("crm.lead.list", {})}, id="empty"),
        pytest.param({"two words": ("crm.lead.list", {})}, id="space"),
        pytest.param({f"c{i}": ("crm.lead.list", {}) for i in range(51)}, id="51-commands"),
    ],
)
def test_batch_rejects_bad_keys_and_oversize_before_any_request(
    sandbox: Sandbox, client: Bitrix24Client, commands: dict[str, tuple[str, dict[str, Any]]]
) -> None:
    with pytest.raises(ValueError):
        client.batch(commands)

    assert client.calls == 0
    assert sandbox.stats()["requests"] == 0


def test_batch_of_exactly_50_and_of_none(sandbox: Sandbox, client: Bitrix24Client) -> None:
    assert client.batch({}) == BatchResult({}, {}, {}, {})
    assert sandbox.stats()["requests"] == 0

    ids = add_leads(client, [{"TITLE": f"n{i}"} for i in range(50)])

    assert ids == list(range(1, 51))
    assert sandbox.stats()["requests"] == 1
    assert sandbox.stats()["batch_commands"] == {"crm.lead.add": 50}


def test_read_only_batch_is_retried_after_a_500(sandbox: Sandbox) -> None:
    seed = Bitrix24Client(sandbox.webhook_url)
    add_leads(seed, [{"TITLE": "Один"}, {"TITLE": "Два"}])
    sandbox.set_faults(error_rate=1.0)
    sandbox.reset_stats()
    # The portal heals while the client backs off after the first 500.
    backoff = Recorder(lambda seconds: sandbox.set_faults(error_rate=0.0))
    client = Bitrix24Client(sandbox.webhook_url, sleep=backoff, backoff_base=0.05)

    result = client.batch({"one": ("crm.lead.get", {"id": 1}), "all": ("crm.lead.list", {"select": ["ID", "TITLE"]})})

    assert result.errors == {}
    assert result.results["one"]["TITLE"] == "Один"
    assert result.results["all"] == [{"ID": "1", "TITLE": "Один"}, {"ID": "2", "TITLE": "Два"}]
    assert len(backoff.calls) == 1
    stats = sandbox.stats()
    assert stats["requests"] == 2 and client.calls == 2
    assert stats["faults"]["error"] == 1
    assert stats["status_codes"] == {"500": 1, "200": 1}


def test_batch_with_a_write_is_not_repeated_after_a_lost_response() -> None:
    with Sandbox(app_token="test-token", seed=1, lost_response_rate=1.0) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01)

        with pytest.raises(BitrixUnavailable) as caught:
            client.batch(
                {
                    "add": ("crm.lead.add", {"fields": {"TITLE": "Только одна"}}),
                    "check": ("crm.lead.list", {"select": ["ID"]}),
                }
            )

        assert caught.value.maybe_executed is True
        assert caught.value.status == 500
        assert [lead["TITLE"] for lead in portal.entities("lead")] == ["Только одна"]
        assert portal.stats()["requests"] == 1
        assert portal.stats()["faults"]["lost_response"] == 1
        assert client.calls == 1
        assert portal.secret not in full_traceback(caught.value)

        # The same loss on a batch of reads is simply repeated, up to max_attempts.
        portal.reset_stats()
        reader = Bitrix24Client(portal.webhook_url, backoff_base=0.01, max_attempts=3)
        with pytest.raises(BitrixUnavailable):
            reader.batch({"one": ("crm.lead.get", {"id": 1}), "all": ("crm.lead.list", {})})
        assert portal.stats()["requests"] == 3
        assert reader.calls == 3
        assert len(portal.entities("lead")) == 1


def test_single_write_is_not_repeated_after_a_lost_response() -> None:
    with Sandbox(app_token="test-token", seed=1, lost_response_rate=1.0) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01)

        with pytest.raises(BitrixUnavailable) as caught:
            client.call("crm.lead.add", {"fields": {"TITLE": "Одна"}})

        assert caught.value.maybe_executed is True
        assert len(portal.entities("lead")) == 1
        assert portal.stats()["requests"] == 1


# -- list_all(): the fast scan ----------------------------------------------------------------------------------------


@pytest.fixture
def hundred_twenty_leads(sandbox: Sandbox, client: Bitrix24Client) -> list[int]:
    """125 leads created, 5 deleted (gaps in the ids, one on a page edge); returns the 120 remaining ids."""
    ids = add_leads(
        client, [{"TITLE": f"Лид {n}", "SOURCE_ID": "WEB" if n % 2 else "ADVERTISING"} for n in range(1, 126)]
    )
    assert ids == list(range(1, 126))
    deleted = [10, 50, 51, 99, 125]
    done = client.batch({f"del_{n}": ("crm.lead.delete", {"id": n}) for n in deleted})
    assert done.errors == {}
    sandbox.reset_stats()
    return [n for n in ids if n not in deleted]


def test_list_all_returns_every_row_in_id_order_with_start_minus_one(
    sandbox: Sandbox, hundred_twenty_leads: list[int]
) -> None:
    wire = Wire()
    client = Bitrix24Client(sandbox.webhook_url, session=wire.session)

    rows = list(client.list_all("crm.lead.list", {"select": ["ID", "TITLE"]}))

    assert len(rows) == 120
    assert [int(row["ID"]) for row in rows] == hundred_twenty_leads
    assert all(row["TITLE"] == f"Лид {row['ID']}" for row in rows)
    assert sandbox.stats()["requests"] == 3
    assert [len(body["result"]) for body in wire.responses] == [50, 50, 20]
    # No count was asked for or needed: every page was start=-1, every answer said total 0 and offered no "next".
    assert [body["start"] for body in wire.requests] == [-1, -1, -1]
    assert [body["order"] for body in wire.requests] == [{"ID": "ASC"}] * 3
    assert [body["filter"] for body in wire.requests] == [
        {">ID": 0},
        {">ID": hundred_twenty_leads[49]},
        {">ID": hundred_twenty_leads[99]},
    ]
    assert [body["total"] for body in wire.responses] == [0, 0, 0]
    assert all("next" not in body for body in wire.responses)


def test_list_all_with_an_extra_filter(sandbox: Sandbox, hundred_twenty_leads: list[int]) -> None:
    wire = Wire()
    client = Bitrix24Client(sandbox.webhook_url, session=wire.session)
    web_ids = [n for n in hundred_twenty_leads if n % 2]

    rows = list(client.list_all("crm.lead.list", {"filter": {"SOURCE_ID": "WEB"}, "select": ["ID", "SOURCE_ID"]}))

    assert [int(row["ID"]) for row in rows] == web_ids
    assert len(web_ids) == 60
    assert {row["SOURCE_ID"] for row in rows} == {"WEB"}
    assert sandbox.stats()["requests"] == 2
    assert [body["filter"] for body in wire.requests] == [
        {"SOURCE_ID": "WEB", ">ID": 0},
        {"SOURCE_ID": "WEB", ">ID": web_ids[49]},
    ]

    # A last page of exactly 50 rows needs one more (empty) page to be sure it was the last.
    sandbox.reset_stats()
    fifty = hundred_twenty_leads[:50]
    rows = list(client.list_all("crm.lead.list", {"filter": {"@ID": fifty, ">=ID": 1}}))
    assert [int(row["ID"]) for row in rows] == fifty
    assert sandbox.stats()["requests"] == 2


def test_list_all_keeps_a_callers_own_id_lower_bound(sandbox: Sandbox, hundred_twenty_leads: list[int]) -> None:
    client = Bitrix24Client(sandbox.webhook_url)

    rows = list(client.list_all("crm.lead.list", {"filter": {">ID": 100}, "select": ["ID"]}))

    assert [int(row["ID"]) for row in rows] == [n for n in hundred_twenty_leads if n > 100]


# -- pacing -----------------------------------------------------------------------------------------------------------


def test_a_pacer_matching_the_portal_never_sees_a_503() -> None:
    with Sandbox(app_token="test-token", seed=1, rate=5, burst=5) as portal:
        waits = Recorder()
        pacer = LeakyBucket(rate=5, burst=5, sleep=waits)
        client = Bitrix24Client(portal.webhook_url, pacer=pacer)

        results = [client.call("crm.lead.list", {"select": ["ID"]}).result for _ in range(15)]

        assert results == [[]] * 15
        stats = portal.stats()
        assert stats["rate_limited"] == 0
        assert stats["requests"] == 15
        assert stats["status_codes"] == {"200": 15}
        assert len(waits.calls) == 10  # the burst of 5 went at once, each later call waited for a slot


def test_an_oversized_pacer_gets_a_503_then_follows_the_portal() -> None:
    # The portal drains 5/s with a burst of 1; the client believes in a burst of 50 (at a rate a bit under the
    # portal's). It runs into one 503, retries, and from then on its pacer — told by saturated() that the portal's
    # bucket is full — spaces the calls so that no second 503 comes.
    with Sandbox(app_token="test-token", seed=1, rate=5, burst=1) as portal:
        seed = Bitrix24Client(portal.webhook_url)
        seed.call("crm.lead.add", {"fields": {"TITLE": "Читаемый"}})
        time.sleep(0.5)  # let the portal's bucket drain
        portal.reset_stats()

        pacer_waits = Recorder()
        pacer = LeakyBucket(rate=4, burst=50, sleep=pacer_waits)
        levels_at_backoff: list[float] = []
        backoff = Recorder(lambda seconds: levels_at_backoff.append(pacer.level))
        outcomes: list[int] = []
        session = new_session()
        session.hooks["response"].append(lambda response, *args, **kwargs: outcomes.append(response.status_code))
        client = Bitrix24Client(portal.webhook_url, pacer=pacer, sleep=backoff, session=session)

        titles = [client.call("crm.lead.get", {"id": 1}).result["TITLE"] for _ in range(15)]

        assert titles == ["Читаемый"] * 15
        assert outcomes.count(503) == 1
        assert outcomes.count(200) == 15
        stats = portal.stats()
        assert stats["rate_limited"] == 1
        assert stats["requests"] == 16 and client.calls == 16
        assert backoff.calls == [pytest.approx(0.25)]  # one slot of the client's own rate
        # saturated() filled the client's bucket: it went from a handful of calls to (almost) its burst of 50.
        assert len(levels_at_backoff) == 1 and levels_at_backoff[0] > 49
        # Before the 503 the big burst let calls through unpaced; after it, the pacer made later calls wait.
        assert len(pacer_waits.calls) >= 10


def test_a_write_refused_with_503_is_sent_again_and_runs_once() -> None:
    with Sandbox(app_token="test-token", seed=1, rate=5, burst=1, time_scale=0) as portal:
        client = Bitrix24Client(portal.webhook_url, pacer=LeakyBucket(rate=4, burst=50))

        ids = [client.call("crm.lead.add", {"fields": {"TITLE": f"w{n}"}}).result for n in range(3)]

        assert ids == [1, 2, 3]
        assert [lead["TITLE"] for lead in portal.entities("lead")] == ["w0", "w1", "w2"]
        assert portal.stats()["rate_limited"] == 1
        assert portal.stats()["requests"] == 4


# -- the deadline -----------------------------------------------------------------------------------------------------


def test_deadline_refuses_a_wait_it_cannot_afford(sandbox: Sandbox) -> None:
    deadline = Deadline(lambda: 1.0, reserve=0)
    pacer = LeakyBucket(rate=0.5, burst=2)  # a slot every 2 s
    client = Bitrix24Client(sandbox.webhook_url, pacer=pacer, deadline=deadline, connect_timeout=0.2)
    assert client.call("crm.lead.list").result == []
    assert client.call("crm.lead.list").result == []  # the burst is spent

    started = time.monotonic()
    with pytest.raises(NotEnoughTime) as caught:
        client.call("crm.lead.list")
    elapsed = time.monotonic() - started

    assert elapsed < 1.0  # it refused the ~2 s wait instead of sleeping through the deadline
    assert 1.5 < caught.value.wait_seconds <= 2.0
    assert caught.value.retryable is True and caught.value.maybe_executed is False
    assert sandbox.stats()["requests"] == 2 and client.calls == 2


def test_deadline_refuses_to_wait_out_a_bucket_the_portal_said_is_full(sandbox: Sandbox) -> None:
    pacer = LeakyBucket(rate=0.5, burst=5)
    pacer.saturated()  # as after a 503: the portal's bucket is full, the next slot is 2 s away
    client = Bitrix24Client(
        sandbox.webhook_url, pacer=pacer, deadline=Deadline(lambda: 1.0, reserve=0), connect_timeout=0.2
    )

    started = time.monotonic()
    with pytest.raises(NotEnoughTime) as caught:
        client.call("crm.lead.add", {"fields": {"TITLE": "не успеть"}})

    assert time.monotonic() - started < 1.0
    assert caught.value.wait_seconds > 1.0
    assert sandbox.stats()["requests"] == 0
    assert sandbox.entities("lead") == []


# -- retry rules ------------------------------------------------------------------------------------------------------


def test_a_read_is_retried_through_a_short_outage(sandbox: Sandbox, client: Bitrix24Client) -> None:
    client.call("crm.lead.add", {"fields": {"TITLE": "До сбоя"}})
    sandbox.reset_stats()
    reader = Bitrix24Client(sandbox.webhook_url, backoff_base=0.2, max_attempts=6)
    sandbox.start_outage(0.5)

    lead = reader.call("crm.lead.get", {"id": 1}).result

    assert lead["TITLE"] == "До сбоя"
    stats = sandbox.stats()
    assert stats["faults"]["outage"] >= 1
    assert stats["faults"]["outage"] == stats["requests"] - 1 == reader.calls - 1
    assert stats["status_codes"] == {"200": 1}


def test_a_write_during_an_outage_is_not_repeated(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url, backoff_base=0.01)
    sandbox.start_outage(30)

    with pytest.raises(BitrixUnavailable) as caught:
        client.call("crm.lead.add", {"fields": {"TITLE": "в сбой"}})

    assert caught.value.maybe_executed is True  # the request may have reached the portal
    assert caught.value.code == "CONNECTION_ERROR"
    assert sandbox.stats()["requests"] == 1 and client.calls == 1
    for text in (str(caught.value), full_traceback(caught.value)):
        assert sandbox.secret not in text

    sandbox.end_outage()
    assert client.call("crm.lead.add", {"fields": {"TITLE": "после"}}).result == 1
    assert [lead["TITLE"] for lead in sandbox.entities("lead")] == ["после"]


def test_connection_refused_is_unavailable_and_surely_not_executed() -> None:
    secret = "n0b0dyl1st3ns"
    client = Bitrix24Client(f"http://127.0.0.1:{free_port()}/rest/1/{secret}/", backoff_base=0.01, max_attempts=3)

    with pytest.raises(BitrixUnavailable) as caught:
        client.call("crm.lead.add", {"fields": {"TITLE": "x"}})

    error = caught.value
    assert error.maybe_executed is False
    assert error.code == "CONNECTION_ERROR"
    assert error.method == "crm.lead.add"
    assert client.calls == 3  # nothing reached a portal, so even a write may be sent again
    for text in (str(error), repr(error), full_traceback(error), repr(client)):
        assert secret not in text


def test_a_write_whose_answer_times_out_is_not_repeated() -> None:
    with Sandbox(app_token="test-token", seed=1, latency_ms=1300) as portal:
        client = Bitrix24Client(portal.webhook_url, read_timeout=0.5, backoff_base=0.01)

        with pytest.raises(BitrixUnavailable) as caught:
            client.call("crm.lead.add", {"fields": {"TITLE": "медленно"}})

        assert caught.value.code == "TIMEOUT"
        assert caught.value.maybe_executed is True
        assert client.calls == 1
        assert [lead["TITLE"] for lead in portal.entities("lead")] == ["медленно"]  # it did run


def test_operation_time_limit_is_not_retried_and_other_methods_still_work() -> None:
    # 0.01 s of simulated operating time per call: the third crm.lead.list in the window is over the limit.
    with Sandbox(app_token="test-token", seed=1, operating_limit_seconds=0.015) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01)
        assert client.call("crm.lead.list").result == []
        assert client.call("crm.lead.list").result == []

        with pytest.raises(OperationTimeLimit) as caught:
            client.call("crm.lead.list")

        assert caught.value.status == 429
        assert caught.value.code == "OPERATION_TIME_LIMIT"
        assert caught.value.retryable is True and caught.value.maybe_executed is False
        assert client.calls == 3
        assert portal.stats()["by_method"]["crm.lead.list"] == 3
        assert portal.stats()["operation_time_limited"] == 1

        assert client.call("crm.lead.add", {"fields": {"TITLE": "ещё можно"}}).result == 1
        assert client.call("crm.deal.list").result == []
        mixed = client.batch({"leads": ("crm.lead.list", {}), "deals": ("crm.deal.list", {})})
        assert isinstance(mixed.errors["leads"], OperationTimeLimit)
        assert set(mixed.errors) == {"leads"}
        assert mixed.results == {"deals": []}
        assert portal.stats()["operation_time_limited"] == 2


def test_debug_logging_never_shows_the_webhook_secret(sandbox: Sandbox, client: Bitrix24Client) -> None:
    import io
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # what an operator turns on to debug
    try:
        client.call("profile")
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    assert sandbox.secret not in stream.getvalue()


# -- transport failures that are not HTTP errors (issue 5, item 7) ----------------------------------------------------


class BrokenPortal:
    """A real socket server that answers every request in one broken way.

    ``cut_body``: a 200 whose body stops half-way and the connection closes (the portal ran the call);
    ``bad_gzip``: a 200 that claims gzip but is not; ``redirect_loop``: a 307 to itself, for ever.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/rest/1/s3cr3tbr0k3n/"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                self._answer(connection)

    def _answer(self, connection: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = connection.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1)) if b"ength" in head else 0
        while len(body) < length:
            body += connection.recv(65536)
        self.requests += 1
        path = head.split(b" ")[1].decode()
        if self.mode == "cut_body":
            payload = b'{"result": 1, "time": {"duration": 0.1}}'
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload[:10]
            )
        elif self.mode == "bad_gzip":
            payload = b"this is not gzip at all"
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                + f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                + payload
            )
        else:
            connection.sendall(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {path}\r\nContent-Length: 0\r\n\r\n".encode()
            )

    def close(self) -> None:
        self._listener.close()


@pytest.mark.parametrize("mode", ["cut_body", "bad_gzip", "redirect_loop"])
def test_a_broken_answer_is_unavailable_maybe_executed_and_a_write_is_not_repeated(mode: str) -> None:
    portal = BrokenPortal(mode)
    try:
        client = Bitrix24Client(portal.url, backoff_base=0.01, max_attempts=3)
        with pytest.raises(BitrixUnavailable) as caught:
            client.call("crm.lead.add", {"fields": {"TITLE": "x"}})
        error = caught.value
        assert error.maybe_executed is True  # the portal got the request and may have run it
        assert error.retryable is True and error.method == "crm.lead.add"
        assert client.calls == 1
        for text in (str(error), repr(error), full_traceback(error)):
            assert "s3cr3tbr0k3n" not in text
    finally:
        portal.close()


@pytest.mark.parametrize("mode", ["cut_body", "bad_gzip", "redirect_loop"])
def test_a_read_with_a_broken_answer_is_retried(mode: str) -> None:
    portal = BrokenPortal(mode)
    try:
        client = Bitrix24Client(portal.url, backoff_base=0.01, max_attempts=3)
        with pytest.raises(BitrixUnavailable):
            client.call("crm.lead.list")
        assert client.calls == 3
    finally:
        portal.close()


def test_a_body_that_cannot_be_json_is_unavailable_and_surely_not_sent(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url, backoff_base=0.01, max_attempts=2)
    with pytest.raises(BitrixUnavailable) as caught:
        client.call("crm.lead.add", {"fields": {"OPPORTUNITY": float("nan")}})  # requests refuses NaN in JSON
    assert caught.value.maybe_executed is False
    assert sandbox.stats()["requests"] == 0


def test_an_untrusted_certificate_is_unavailable_and_surely_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    with Sandbox(tls=True) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01, max_attempts=2)
        with pytest.raises(BitrixUnavailable) as caught:
            client.call("crm.lead.add", {"fields": {"TITLE": "x"}})
        assert caught.value.code == "TLS_ERROR" and caught.value.maybe_executed is False
        assert portal.entities("lead") == []
        assert portal.secret not in full_traceback(caught.value)


# -- slow portals: the 60 s cut-off and per-method cost (issue 5, item 17) -------------------------------------------


def test_the_read_timeout_outlasts_the_portals_own_cut_off(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    assert client.read_timeout > 60  # the portal ends any request at 60 s: its answer must reach us first


def test_a_batch_cut_off_part_way_is_unavailable_maybe_executed_and_not_repeated() -> None:
    with Sandbox(method_seconds={"crm.lead.add": 25.0}, time_scale=0.01) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01)
        commands = {f"add_{n}": ("crm.lead.add", {"fields": {"TITLE": f"L{n}"}}) for n in range(4)}
        with pytest.raises(BitrixUnavailable) as caught:
            client.batch(commands)
        assert caught.value.status == 500 and caught.value.maybe_executed is True
        assert client.calls == 1
        assert [lead["TITLE"] for lead in portal.entities("lead")] == ["L0", "L1"]


def test_method_seconds_are_learned_from_answers_and_size_batches_within_the_limit() -> None:
    costs = {"crm.lead.add": 3.0, "crm.timeline.comment.add": 0.5}
    with Sandbox(method_seconds=costs, time_scale=0.01) as portal:
        client = Bitrix24Client(portal.webhook_url)
        assert client.method_seconds("crm.lead.add") == 2.0  # nothing learned yet: UNKNOWN_METHOD_SECONDS
        assert client.batch_capacity(["crm.lead.add"]) == 15

        lead_id = client.call("crm.lead.add", {"fields": {"TITLE": "first"}}).result
        assert 3.0 <= client.method_seconds("crm.lead.add") < 3.5
        comment = {"fields": {"ENTITY_TYPE": "lead", "ENTITY_ID": lead_id, "COMMENT": "c"}}
        client.batch({"c1": ("crm.timeline.comment.add", comment), "c2": ("crm.timeline.comment.add", comment)})
        assert 0.5 <= client.method_seconds("crm.timeline.comment.add") < 1.0  # from batch result_time

        capacity = client.batch_capacity(["crm.lead.add", "crm.timeline.comment.add"])
        assert capacity == int(
            30 // (client.method_seconds("crm.lead.add") + client.method_seconds("crm.timeline.comment.add"))
        )
        assert 7 <= capacity <= 8
        assert client.batch_capacity(["crm.lead.list"], budget=30) == 15  # unknown: 2 s assumed
        assert client.batch_capacity(["profile", "profile"], budget=1e6) == 25  # 50 commands at most

        # A batch of that size finishes inside the portal's 60 s.
        many = {
            f"a{n}": ("crm.lead.add", {"fields": {"TITLE": f"n{n}"}})
            for n in range(client.batch_capacity(["crm.lead.add"]))
        }
        assert client.batch(many).errors == {}
        assert portal.stats()["cut_off"] == 0


def test_a_shared_method_times_carries_what_one_client_learned_to_the_next() -> None:
    with Sandbox(method_seconds={"crm.lead.add": 4.0}, time_scale=0.01) as portal:
        times = MethodTimes()
        Bitrix24Client(portal.webhook_url, times=times).call("crm.lead.add", {"fields": {"TITLE": "x"}})
        assert Bitrix24Client(portal.webhook_url, times=times).method_seconds("crm.lead.add") >= 4.0


# -- OPERATION_TIME_LIMIT: when to come back (issue 5, item 18) ------------------------------------------------------


def test_operation_time_limit_retry_at_comes_from_the_last_successful_answer() -> None:
    with Sandbox(app_token="test-token", seed=1, operating_limit_seconds=0.015) as portal:
        client = Bitrix24Client(portal.webhook_url, backoff_base=0.01)
        client.call("crm.lead.list")
        last = client.call("crm.lead.list")
        reset_at = last.time["operating_reset_at"]
        assert reset_at > time.time()

        blocked = requests.post(portal.webhook_url + "crm.lead.list", json={}, timeout=5)
        assert blocked.status_code == 429 and "time" not in blocked.json()  # the body has no time block

        with pytest.raises(OperationTimeLimit) as caught:
            client.call("crm.lead.list")
        assert caught.value.retry_at == reset_at

        in_batch = client.batch({"leads": ("crm.lead.list", {}), "me": ("profile", {})})
        assert in_batch.errors["leads"].retry_at == reset_at

        # A fresh client that saw no successful answer for the method waits a basket (60 s).
        fresh = Bitrix24Client(portal.webhook_url)
        with pytest.raises(OperationTimeLimit) as unknown:
            fresh.call("crm.lead.list")
        assert 59 <= unknown.value.retry_at - time.time() <= 61


def test_a_batch_cut_off_makes_the_next_one_smaller_until_answers_give_the_real_cost() -> None:
    with Sandbox(method_seconds={"crm.lead.add": 5.0}, time_scale=0.01) as portal:
        client = Bitrix24Client(portal.webhook_url)

        def adds(count: int, tag: str) -> dict[str, tuple[str, dict[str, Any]]]:
            return {f"{tag}{n}": ("crm.lead.add", {"fields": {"TITLE": f"{tag}{n}"}}) for n in range(count)}

        assert client.batch_capacity(["crm.lead.add"]) == 15  # 2 s assumed: 75 s on this portal
        with pytest.raises(BitrixUnavailable):
            client.batch(adds(15, "a"))
        assert client.method_seconds("crm.lead.add") == 4.0
        assert client.batch_capacity(["crm.lead.add"]) == 7  # 35 s: inside the limit
        assert client.batch(adds(7, "b")).errors == {}
        assert 5.0 <= client.method_seconds("crm.lead.add") < 5.5  # learned, the guess is gone
        assert client.batch_capacity(["crm.lead.add"]) == 5
        assert portal.stats()["cut_off"] == 1


# -- a renamed portal, incomplete batches, per-record access (issue 14) ----------------------------------------------


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict]]:
    """The warnings the client logs (Powertools' logger writes to the stdout it saw at import, out of capsys' reach)."""
    from throughline.observability import logger, metrics

    seen: list[tuple[str, dict]] = []
    monkeypatch.setattr(logger, "warning", lambda message, *args, **kwargs: seen.append((message, kwargs["extra"])))
    metrics.clear_metrics()
    return seen


def test_after_a_rename_a_batch_is_posted_again_to_the_new_address_and_the_move_is_logged_and_counted(
    sandbox: Sandbox, moves: list[tuple[str, dict]]
) -> None:
    from throughline.observability import metrics

    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Переезд"}})
    old = sandbox.webhook_url
    new = sandbox.rename("moved.bitrix24.ru")
    client = Bitrix24Client(old)
    found = client.batch({"lead": ("crm.lead.get", {"id": lead})})
    assert found.results["lead"]["TITLE"] == "Переезд"  # followed as a GET, the batch ran nothing and said nothing
    assert client.moved_to == new.split("/rest/")[0] and client.calls == 2
    # Later calls go to the new address at once: no second redirect.
    assert client.call("crm.lead.get", {"id": lead}).result["ID"] == str(lead)
    assert client.calls == 3 and sandbox.stats()["redirected"] == 1
    [(message, extra)] = moves
    assert message == "the portal moved: update BITRIX24_WEBHOOK_URL"
    assert extra["new_address"] == client.moved_to and sandbox.secret not in json.dumps(extra)
    assert metrics.metric_set["PortalMoved"]["Value"] == [1.0]
    metrics.clear_metrics()


def test_a_write_after_a_rename_runs_once_at_the_new_address(sandbox: Sandbox, moves: list) -> None:
    old = sandbox.webhook_url
    sandbox.rename("moved.bitrix24.ru")
    lead = Bitrix24Client(old).call("crm.lead.add", {"fields": {"TITLE": "Один"}}).result
    assert [row["TITLE"] for row in sandbox.entities("lead")] == ["Один"] and int(lead) == 1


class Redirecting:
    """A session whose first answer redirects to ``location``; records the URLs it was asked for."""

    def __init__(self, location: str, then: dict | None = None) -> None:
        self.location, self.then, self.urls = location, then, []
        self.headers: dict[str, str] = {}

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        assert kwargs.get("allow_redirects") is False
        self.urls.append(url)
        response = requests.Response()
        if len(self.urls) == 1 or self.then is None:
            response.status_code, response.headers["Location"] = 302, self.location
            response._content = b""
        else:
            response.status_code, response._content = 200, json.dumps(self.then).encode()
        return response


@pytest.mark.parametrize(
    "location",
    [
        "http://evil.example.com/rest/1/s3cr3tw3bh00k/profile.json",  # plain http to a public host
        "https://moved.bitrix24.ru/login/?back=/rest/",  # another path
        "https://moved.bitrix24.ru/rest/1/other/profile.json",  # another webhook's path
        "https://user:pw@moved.bitrix24.ru/rest/1/s3cr3tw3bh00k/profile.json",  # credentials in the address
    ],
)
def test_a_redirect_to_another_path_or_an_insecure_address_is_not_followed(location: str, moves: list) -> None:
    session = Redirecting(location, then={"result": True})
    client = Bitrix24Client("https://old.bitrix24.ru/rest/1/s3cr3tw3bh00k/", session=session)  # type: ignore[arg-type]
    with pytest.raises(BitrixBadRequest) as caught:
        client.call("profile")
    assert session.urls == ["https://old.bitrix24.ru/rest/1/s3cr3tw3bh00k/profile.json"]  # the secret stayed home
    assert "update BITRIX24_WEBHOOK_URL" in str(caught.value) and "s3cr3tw3bh00k" not in str(caught.value)
    assert moves == []


def test_a_new_address_that_redirects_again_is_unavailable(moves: list) -> None:
    session = Redirecting("https://moved.bitrix24.ru/rest/1/s3cr3tw3bh00k/profile.json")
    client = Bitrix24Client("https://old.bitrix24.ru/rest/1/s3cr3tw3bh00k/", session=session, max_attempts=1)  # type: ignore[arg-type]
    with pytest.raises(BitrixUnavailable) as caught:
        client.call("profile")
    assert caught.value.code == "TOO_MANY_REDIRECTS" and len(session.urls) == 2


class Answering:
    """A session answering every POST with one JSON body."""

    def __init__(self, body: dict) -> None:
        self.body, self.headers = body, {}

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = 200, json.dumps(self.body).encode()
        return response


def test_a_batch_answer_lacking_a_commands_key_is_an_error_not_not_found() -> None:
    empty = {"result": {"result": [], "result_error": [], "result_total": [], "result_next": [], "result_time": []}}
    client = Bitrix24Client("https://p.bitrix24.ru/rest/1/x/", session=Answering(empty), max_attempts=1)  # type: ignore[arg-type]
    with pytest.raises(BatchIncomplete) as caught:
        client.batch({"lead": ("crm.lead.get", {"id": 1})})
    assert caught.value.retryable and caught.value.code == "BATCH_INCOMPLETE"
    partial = {"result": {"result": {"a": {"ID": "1"}}, "result_error": []}}
    client = Bitrix24Client("https://p.bitrix24.ru/rest/1/x/", session=Answering(partial), max_attempts=1)  # type: ignore[arg-type]
    with pytest.raises(BatchIncomplete):
        client.batch({"a": ("crm.lead.get", {"id": 1}), "b": ("crm.lead.get", {"id": 2})})
    # With halt, commands after the first failed one have no answer, as asked.
    halted = {"result": {"result": [], "result_error": {"a": {"error": "", "error_description": "Not found"}}}}
    client = Bitrix24Client("https://p.bitrix24.ru/rest/1/x/", session=Answering(halted), max_attempts=1)  # type: ignore[arg-type]
    found = client.batch({"a": ("crm.lead.get", {"id": 1}), "b": ("crm.lead.get", {"id": 2})}, halt=True)
    assert isinstance(found.errors["a"], BitrixNotFound) and "b" not in found.results


def test_access_denied_for_one_command_is_its_own_error_and_the_others_answer(sandbox: Sandbox) -> None:
    seen = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Видно"}})
    hidden = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Скрыто"}})
    sandbox.set_access(hidden={"lead": [hidden]})
    client = Bitrix24Client(sandbox.webhook_url)
    found = client.batch({"a": ("crm.lead.get", {"id": seen}), "b": ("crm.lead.get", {"id": hidden})})
    assert found.results["a"]["TITLE"] == "Видно"
    assert isinstance(found.errors["b"], BitrixAccessDenied) and isinstance(found.errors["b"], BitrixAuthError)
    with pytest.raises(BitrixAccessDenied):
        client.call("crm.lead.get", {"id": hidden})
    # A write's refusal reads «Access denied.» (crm-lead-add.md): the same per-record denial, never a failed webhook.
    written = client.batch({"a": ("crm.lead.update", {"id": seen, "fields": {"TITLE": "x"}}),
                            "b": ("crm.lead.update", {"id": hidden, "fields": {"TITLE": "x"}})})  # fmt: skip
    assert written.results["a"] is True and isinstance(written.errors["b"], BitrixAccessDenied)
