"""Unit tests of throughline.bitrix24: PHP query strings, the leaky bucket, and the error mapping."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest

from throughline.bitrix24.errors import (
    BitrixAuthError,
    BitrixBadRequest,
    BitrixError,
    BitrixMethodNotFound,
    BitrixNotFound,
    BitrixTransientError,
    BitrixUnavailable,
    NotEnoughTime,
    OperationTimeLimit,
    QueryLimitExceeded,
    error_from_response,
)
from throughline.bitrix24.pacing import LeakyBucket, MethodTimes
from throughline.bitrix24.query import build_query

# -- build_query ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"id": 5}, "id=5"),
        ({"a": "x y", "b": "+7"}, "a=x+y&b=%2B7"),
        ({"flag": True, "other": False}, "flag=1&other=0"),
        ({"skip": None, "keep": ""}, "keep="),
        ({"fields": {"TITLE": "Заявка"}}, "fields%5BTITLE%5D=%D0%97%D0%B0%D1%8F%D0%B2%D0%BA%D0%B0"),
        ({"ids": [3, 4]}, "ids%5B0%5D=3&ids%5B1%5D=4"),
        ({"ids": (3,)}, "ids%5B0%5D=3"),
        ({"empty": [], "none": {}}, ""),
        ({"x": 1.5}, "x=1.5"),
        ({}, ""),
    ],
)
def test_build_query(params, expected):
    assert build_query(params) == expected


def test_build_query_round_trips_php_key_names():
    params = {
        "fields": {
            "TITLE": "Заявка с формы «contact»",
            "PHONE": [{"VALUE": "+79161234567", "VALUE_TYPE": "WORK"}],
            "EMAIL": [{"VALUE": "a@b.ru", "VALUE_TYPE": "WORK"}, {"VALUE": "c&d=e@f.ru", "VALUE_TYPE": "HOME"}],
            "UF_CRM_CUSTOMER_JOURNEY": "Первичный контакт: 15.01.2025 — Google — CPC\n16.01.2025 — Email",
            "OPENED": "Y",
            "ASSIGNED_BY_ID": None,
        },
        "params": {"REGISTER_SONET_EVENT": True},
    }
    assert parse_qsl(build_query(params), keep_blank_values=True) == [
        ("fields[TITLE]", "Заявка с формы «contact»"),
        ("fields[PHONE][0][VALUE]", "+79161234567"),
        ("fields[PHONE][0][VALUE_TYPE]", "WORK"),
        ("fields[EMAIL][0][VALUE]", "a@b.ru"),
        ("fields[EMAIL][0][VALUE_TYPE]", "WORK"),
        ("fields[EMAIL][1][VALUE]", "c&d=e@f.ru"),
        ("fields[EMAIL][1][VALUE_TYPE]", "HOME"),
        ("fields[UF_CRM_CUSTOMER_JOURNEY]", "Первичный контакт: 15.01.2025 — Google — CPC\n16.01.2025 — Email"),
        ("fields[OPENED]", "Y"),
        ("params[REGISTER_SONET_EVENT]", "1"),
    ]


def test_build_query_nested_lists():
    assert parse_qsl(build_query({"filter": {"@ID": [[1, 2], [3]]}})) == [
        ("filter[@ID][0][0]", "1"),
        ("filter[@ID][0][1]", "2"),
        ("filter[@ID][1][0]", "3"),
    ]


def test_build_query_batch_command():
    command = "crm.lead.get?" + build_query({"id": 7})
    assert build_query({"halt": 0, "cmd": {"lead": command}}) == "halt=0&cmd%5Blead%5D=crm.lead.get%3Fid%3D7"


@pytest.mark.parametrize("params", ["id=5", 5, b"x"])
def test_build_query_top_level_must_be_a_mapping(params):
    with pytest.raises(TypeError, match="the top level of a query must be a mapping"):
        build_query(params)  # type: ignore[arg-type]


def test_build_query_top_level_list_is_rejected():
    with pytest.raises(TypeError):
        build_query(["a"])  # type: ignore[arg-type]


# -- LeakyBucket ----------------------------------------------------------------------------------------------------


class FakeTime:
    """A monotonic clock and a sleep that only moves it."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def bucket(self, rate: float = 2.0, burst: float = 50) -> LeakyBucket:
        return LeakyBucket(rate, burst, clock=self.clock, sleep=self.sleep)


def test_burst_passes_without_waiting():
    fake = FakeTime()
    bucket = fake.bucket()
    assert [bucket.acquire() for _ in range(50)] == [0.0] * 50
    assert fake.sleeps == []
    assert bucket.level == 50


@pytest.mark.parametrize(("rate", "burst"), [(2.0, 50), (0.5, 3), (10.0, 1), (1.0, 5)])
def test_the_next_request_waits_one_slot(rate, burst):
    fake = FakeTime()
    bucket = fake.bucket(rate, burst)
    for _ in range(burst):
        bucket.acquire()
    assert bucket.acquire() == pytest.approx(1 / rate)
    assert fake.sleeps == [pytest.approx(1 / rate)]
    assert bucket.level == pytest.approx(burst)


def test_steady_state_is_the_rate():
    fake = FakeTime()
    bucket = fake.bucket(2.0, 10)
    for _ in range(10):
        bucket.acquire()
    waits = [bucket.acquire() for _ in range(4)]
    assert waits == [pytest.approx(0.5)] * 4
    assert fake.now == pytest.approx(1002.0)


def test_bucket_drains_over_time():
    fake = FakeTime()
    bucket = fake.bucket(2.0, 50)
    for _ in range(50):
        bucket.acquire()
    fake.now += 10  # 20 slots drain
    assert bucket.level == pytest.approx(30)
    assert [bucket.acquire() for _ in range(20)] == [0.0] * 20
    assert bucket.acquire() == pytest.approx(0.5)
    fake.now += 1000
    assert bucket.level == 0.0


def test_partial_drain_shortens_the_wait():
    fake = FakeTime()
    bucket = fake.bucket(2.0, 4)
    for _ in range(4):
        bucket.acquire()
    fake.now += 0.2  # 0.4 of a slot drained
    assert bucket.acquire() == pytest.approx(0.3)


def test_saturated_fills_the_bucket():
    fake = FakeTime()
    bucket = fake.bucket(2.0, 50)
    bucket.acquire()
    bucket.saturated()
    assert bucket.level == 50
    assert bucket.acquire() == pytest.approx(0.5)
    assert fake.sleeps == [pytest.approx(0.5)]


def test_saturated_never_lowers_the_level():
    fake = FakeTime()
    bucket = fake.bucket(1.0, 2)
    bucket.acquire()
    bucket.acquire()
    bucket.acquire()  # waits 1 s; the level is back at the burst
    bucket.saturated()
    assert bucket.level == pytest.approx(2)


def test_not_enough_time_instead_of_a_long_wait():
    fake = FakeTime()
    bucket = fake.bucket(0.5, 2)
    bucket.acquire()
    bucket.acquire()
    with pytest.raises(NotEnoughTime) as error:
        bucket.acquire(max_wait=1.5)
    assert error.value.wait_seconds == pytest.approx(2.0)
    assert error.value.retryable is True
    assert error.value.maybe_executed is False
    assert error.value.code == "NOT_ENOUGH_TIME"
    assert "would need to wait 2.0 s" in str(error.value)
    assert fake.sleeps == []
    assert bucket.level == 2  # the refused request took no slot


def test_wait_equal_to_max_wait_is_allowed():
    fake = FakeTime()
    bucket = fake.bucket(0.5, 1)
    bucket.acquire()
    assert bucket.acquire(max_wait=2.0) == pytest.approx(2.0)


def test_no_wait_needed_passes_even_with_zero_max_wait():
    bucket = FakeTime().bucket(2.0, 3)
    assert bucket.acquire(max_wait=0) == 0.0


@pytest.mark.parametrize(("rate", "burst"), [(0, 5), (-1, 5), (1, 0), (1, 0.5)])
def test_bad_bucket_parameters(rate, burst):
    with pytest.raises(ValueError, match="rate must be > 0 and burst >= 1"):
        LeakyBucket(rate, burst, clock=lambda: 0.0, sleep=lambda _: None)


# -- error_from_response --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "retryable", "maybe_executed"),
    [
        (503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
         QueryLimitExceeded, "QUERY_LIMIT_EXCEEDED", True, False),
        (429, {"error": "OPERATION_TIME_LIMIT", "error_description": "Method is blocked"},
         OperationTimeLimit, "OPERATION_TIME_LIMIT", True, False),
        (401, {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"},
         BitrixAuthError, "INVALID_CREDENTIALS", False, False),
        (401, {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"},
         BitrixAuthError, "NO_AUTH_FOUND", False, False),
        (401, {"error": "expired_token", "error_description": "The access token provided has expired."},
         BitrixAuthError, "expired_token", False, False),
        (403, {"error": "ACCESS_DENIED", "error_description": "REST API is available only on commercial plans"},
         BitrixAuthError, "ACCESS_DENIED", False, False),
        (403, {"error": "insufficient_scope", "error_description": ""}, BitrixAuthError, "insufficient_scope", False,
         False),
        (401, "Unauthorized", BitrixAuthError, "", False, False),
        (404, {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
         BitrixMethodNotFound, "ERROR_METHOD_NOT_FOUND", False, False),
        (400, {"error": "", "error_description": "Not found"}, BitrixNotFound, "", False, False),
        (400, {"error": "", "error_description": " Element not found "}, BitrixNotFound, "", False, False),
        (404, {"error": "NOT_FOUND", "error_description": "Smart process not found"}, BitrixNotFound, "NOT_FOUND",
         False, False),
        (400, {"error": "", "error_description": "ID is not defined or invalid."}, BitrixBadRequest, "", False, False),
        (400, {"error": "INVALID_ARG_VALUE", "error_description": "Invalid value"},
         BitrixBadRequest, "INVALID_ARG_VALUE", False, False),
        (500, {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"},
         BitrixUnavailable, "INTERNAL_SERVER_ERROR", True, True),
        (200, {"error": "ERROR_UNEXPECTED_ANSWER", "error_description": ""},
         BitrixUnavailable, "ERROR_UNEXPECTED_ANSWER", True, True),
        (503, {"error": "OVERLOAD_LIMIT", "error_description": "REST API is blocked due to overload."},
         BitrixUnavailable, "OVERLOAD_LIMIT", True, True),
        (502, "<html><body>502 Bad Gateway</body></html>", BitrixUnavailable, "HTTP_502", True, True),
        (504, None, BitrixUnavailable, "HTTP_504", True, True),
        (400, {"error": "PORTAL_DELETED", "error_description": "Portal was deleted"},
         BitrixAuthError, "PORTAL_DELETED", False, False),
    ],
)  # fmt: skip
def test_error_mapping(status, body, kind, code, retryable, maybe_executed):
    error = error_from_response(status, body, method="crm.lead.add")
    assert type(error) is kind
    assert isinstance(error, BitrixError)
    assert error.code == code
    assert error.status == status
    assert error.method == "crm.lead.add"
    assert error.retryable is retryable
    assert error.maybe_executed is maybe_executed
    assert isinstance(error, BitrixTransientError) is retryable


def test_query_limit_message():
    error = error_from_response(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"},
                                method="batch")  # fmt: skip
    assert str(error) == "batch: QUERY_LIMIT_EXCEEDED (503) Too many requests"
    assert error.description == "Too many requests"


def test_operation_time_limit_retry_at():
    body = {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
        "time": {"start": 1736935200.1, "operating": 481.2, "operating_reset_at": 1736935800},
    }
    error = error_from_response(429, body, method="crm.lead.list")
    assert isinstance(error, OperationTimeLimit)
    assert error.retry_at == 1736935800


@pytest.mark.parametrize("time_block", [None, {}, "soon", {"operating": 1}])
def test_operation_time_limit_without_reset_time(time_block):
    body = {"error": "OPERATION_TIME_LIMIT", "time": time_block}
    assert error_from_response(429, body).retry_at is None


def test_error_without_method_or_code():
    error = error_from_response(502, "Bad Gateway")
    assert str(error) == "bitrix24: HTTP_502 (502)"
    assert error.method is None


def test_unavailable_maybe_executed_can_be_cleared():
    error = BitrixUnavailable("CONNECT_ERROR", "refused", None, "crm.lead.add", maybe_executed=False)
    assert (error.retryable, error.maybe_executed) == (True, False)


# -- MethodTimes ----------------------------------------------------------------------------------------------------


def test_method_times_keep_the_longest_recent_duration_per_method():
    times = MethodTimes(window=3)
    assert times.seconds("crm.lead.add") == 2.0 and not times.known("crm.lead.add")
    for duration in (0.5, 4.0, 1.0):
        times.observe("CRM.LEAD.ADD", {"duration": duration})
    assert times.seconds("crm.lead.add") == 4.0 and times.known("crm.lead.add")
    times.observe("crm.lead.add", {"duration": 1.5})
    times.observe("crm.lead.add", {"duration": 0.7})
    assert times.seconds("crm.lead.add") == 1.5  # 4.0 fell out of the last three
    times.observe("crm.lead.add", {"duration": "nan"})
    times.observe("crm.lead.add", None)
    times.observe("crm.lead.add", {"duration": True})
    assert times.seconds("crm.lead.add") == 1.5
    assert times.seconds("crm.deal.add", default=7.0) == 7.0


def test_method_times_retry_at_follows_the_last_operating_reset_at():
    now = [1_000_000.0]
    times = MethodTimes(clock=lambda: now[0])
    assert times.retry_at("crm.lead.add") == now[0] + 60  # nothing known: wait one basket
    times.observe("crm.lead.add", {"duration": 0.1, "operating_reset_at": 1_000_300})
    assert times.retry_at("crm.lead.add") == 1_000_300
    assert times.retry_at("crm.deal.add") == now[0] + 60  # per method
    now[0] = 1_000_300.0  # the basket has dropped out and we are still blocked: the next one goes a minute later
    assert times.retry_at("crm.lead.add") == 1_000_360
    now[0] = 1_000_425.0
    assert times.retry_at("crm.lead.add") == 1_000_480


@pytest.mark.parametrize("body", [None, [], "<html>ok</html>", 1])
def test_a_2xx_without_a_json_object_is_unavailable_and_maybe_executed(body):
    error = error_from_response(200, body, "crm.lead.add")
    assert isinstance(error, BitrixUnavailable)
    assert error.code == "BROKEN_RESPONSE" and error.maybe_executed is True and error.retryable is True


def test_method_times_penalty_doubles_until_an_answer_says():
    times = MethodTimes()
    times.penalize(["crm.lead.add", "crm.lead.add"])
    assert times.seconds("crm.lead.add") == 4.0
    times.penalize(["crm.lead.add"])
    assert times.seconds("crm.lead.add") == 8.0
    for _ in range(5):
        times.penalize(["crm.lead.add"])
    assert times.seconds("crm.lead.add") == 60.0  # never more than a whole request
    times.observe("crm.lead.add", {"duration": 0.3})
    assert times.seconds("crm.lead.add") == 0.3
