"""The report page's gate: hostile placements are refused before any portal call; a verified token is remembered
for five minutes only; the portal is asked at the configured address, never the one the request names."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from throughline.alerts.app_page import Placement, Refused, TokenCheck, check_portal, page_headers, parse_placement

TOKEN = "a" * 32


class Answer:
    def __init__(self, status: int, body):
        self.status_code, self._body = status, body

    def json(self):
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


def test_hostile_placements_are_refused_before_the_portal_is_asked():
    with pytest.raises(Refused):
        parse_placement(b"member_id=x", {})  # no token
    with pytest.raises(Refused):
        parse_placement(urlencode({"AUTH_ID": "short", "member_id": "m"}).encode(), {})
    with pytest.raises(Refused):
        parse_placement(urlencode({"AUTH_ID": "<script>" * 5, "member_id": "m"}).encode(), {})
    with pytest.raises(Refused):
        parse_placement("&".join(f"f{n}=1" for n in range(60)).encode(), {})  # more fields than any placement
    placement = parse_placement(urlencode({"AUTH_ID": TOKEN, "member_id": "m", "date": "../../secret"}).encode(),
                                {"DOMAIN": "Portal.Bitrix24.ru"})  # fmt: skip
    assert placement == Placement(TOKEN, "m", "portal.bitrix24.ru", None)  # a date that is no date is dropped


def test_the_portal_must_be_ours():
    placement = Placement(TOKEN, "m1", "portal.bitrix24.ru", None)
    check_portal(placement, "m1", "portal.bitrix24.ru")
    for member, domain in (("m2", None), ("m1", "other.bitrix24.ru"), (None, None)):
        with pytest.raises(Refused):
            check_portal(placement, member, domain)


def test_the_token_is_checked_at_our_portal_and_remembered_five_minutes():
    calls = []
    now = [1000.0]

    def post(url, **options):
        calls.append((url, options["json"]))
        return Answer(200, {"result": {"ID": "7", "STATUS": "L"}}) if options["json"]["auth"] == TOKEN else Answer(
            401, {"error": "invalid_token"})  # fmt: skip

    check = TokenCheck("https://portal.bitrix24.ru/rest/1/secret/", post=post, clock=lambda: now[0])
    check.verify(TOKEN)
    check.verify(TOKEN)
    assert calls == [("https://portal.bitrix24.ru/rest/app.info.json", {"auth": TOKEN})]  # no webhook secret sent
    now[0] += 301
    check.verify(TOKEN)
    assert len(calls) == 2
    with pytest.raises(Refused):
        check.verify("b" * 32)
    broken = TokenCheck("https://portal.bitrix24.ru/rest/1/secret/", post=lambda url, **o: Answer(200, ValueError()))
    with pytest.raises(Refused):
        broken.verify(TOKEN)
    empty = TokenCheck("https://portal.bitrix24.ru/rest/1/secret/", post=lambda url, **o: Answer(200, {"result": []}))
    with pytest.raises(Refused):
        empty.verify(TOKEN)


def _handler(monkeypatch, **environment):
    """functions/app_report/app.py with ``environment`` only (no secret: the function reads none)."""
    import importlib.util
    from pathlib import Path

    from throughline import config

    for name in ("SECRETS_ARN", "BITRIX24_WEBHOOK_URL", "BITRIX24_PORTAL_URL", "BITRIX24_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"POWERTOOLS_METRICS_NAMESPACE": "Throughline", "DATA_BUCKET": "bucket", **environment}.items():
        monkeypatch.setenv(name, value)
    config.reset_settings_cache()
    path = Path(__file__).resolve().parents[2] / "functions/app_report/app.py"
    spec = importlib.util.spec_from_file_location("app_report_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _open(module, member_id: str = "m1", domain: str = "portal.bitrix24.ru") -> dict:
    from types import SimpleNamespace

    body = urlencode({"AUTH_ID": TOKEN, "member_id": member_id})
    event = {"version": "2.0", "rawPath": "/v1/app/report", "rawQueryString": urlencode({"DOMAIN": domain}),
             "queryStringParameters": {"DOMAIN": domain},
             "headers": {"content-type": "application/x-www-form-urlencoded"},
             "requestContext": {"http": {"method": "POST", "path": "/v1/app/report"}, "requestId": "r1"},
             "body": body, "isBase64Encoded": False}  # fmt: skip
    arn = "arn:aws:lambda:eu-central-1:123456789012:function:app_report"
    context = SimpleNamespace(function_name="app_report", memory_limit_in_mb=256, aws_request_id="r1",
                              invoked_function_arn=arn)  # fmt: skip
    return module.lambda_handler(event, context)


def test_the_handler_asks_our_domain_never_the_webhook_and_refuses_without_a_domain(monkeypatch):
    import requests

    asked = []

    def post(url, **options):
        asked.append(url)
        return Answer(401, {"error": "invalid_token"})

    monkeypatch.setattr(requests, "post", post)
    # The webhook in the environment is ignored: the token is never checked with it (nor at its host).
    module = _handler(monkeypatch, BITRIX24_MEMBER_ID="m1", BITRIX24_WEBHOOK_URL="https://webhook.host/rest/1/s3cret/")
    assert _open(module)["statusCode"] == 401 and asked == []  # no BITRIX24_DOMAIN: nobody is served, nobody asked
    module = _handler(monkeypatch, BITRIX24_MEMBER_ID="m1", BITRIX24_DOMAIN="portal.bitrix24.ru")
    assert _open(module)["statusCode"] == 401
    assert asked == ["https://portal.bitrix24.ru/rest/app.info.json"]
    module = _handler(monkeypatch, BITRIX24_MEMBER_ID="m1", BITRIX24_DOMAIN="portal.bitrix24.ru",
                      BITRIX24_PORTAL_URL="http://127.0.0.1:8123/")  # fmt: skip
    assert _open(module)["statusCode"] == 401 and asked[-1] == "http://127.0.0.1:8123/rest/app.info.json"


def test_a_date_must_be_a_real_calendar_day_in_ascii_digits():
    body = urlencode({"AUTH_ID": TOKEN, "member_id": "m"})
    for day in ("٢٠٢٦-١٢-٠١", "2026-13-45", "2026-02-30", "2026-12-01\n"):  # Arabic-Indic digits match \d
        assert parse_placement(f"{body}&{urlencode({'date': day})}".encode(), {}).date is None, day
    assert parse_placement(f"{body}&date=2026-12-01".encode(), {}).date == "2026-12-01"


def test_only_our_portal_may_frame_the_page_even_without_bitrix24_domain():
    webhook = "https://company.bitrix24.kz/rest/1/secret/"
    policy = page_headers(None, webhook)["Content-Security-Policy"]
    assert policy == "frame-ancestors https://company.bitrix24.kz"  # not every *.bitrix24.ru portal, and .kz works
    both = page_headers("crm.example.com", webhook)["Content-Security-Policy"]
    assert both == "frame-ancestors https://crm.example.com https://company.bitrix24.kz"
    assert page_headers(None, None)["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_a_token_of_a_marketplace_application_on_our_portal_is_not_ours():
    """app.info answers for whichever application the token belongs to; ours is a local application (STATUS L,
    common/system/app-info.md), so a marketplace application's token (F, D, T, P) opens nothing."""
    for status in ("F", "D", "T", "P", None):
        answer = {"result": {"ID": 5, "CODE": "vendor.app", "STATUS": status, "INSTALLED": True}}
        check = TokenCheck("https://portal.bitrix24.ru/rest/1/secret/", post=lambda url, a=answer, **o: Answer(200, a))
        with pytest.raises(Refused):
            check.verify(TOKEN)
    local = {"result": {"ID": 7, "CODE": "local.abc.123", "STATUS": "L", "INSTALLED": True}}
    TokenCheck("https://portal.bitrix24.ru/rest/1/secret/", post=lambda url, **o: Answer(200, local)).verify(TOKEN)


def test_a_token_is_remembered_no_longer_than_its_auth_expires():
    """A placement whose token has 40 s left (AUTH_EXPIRES=40) is asked again after 40 s, not after five minutes; a
    claim of an hour never stretches the five minutes; an expired one (0) is served once and not remembered."""
    calls, now = [], [1000.0]

    def post(url, **options):
        calls.append(options["json"]["auth"])
        return Answer(200, {"result": {"ID": "7", "STATUS": "L"}})

    check = TokenCheck("https://portal.bitrix24.ru/", post=post, clock=lambda: now[0])
    body = urlencode({"AUTH_ID": TOKEN, "member_id": "m", "AUTH_EXPIRES": "40"}).encode()
    placement = parse_placement(body, {})
    assert placement.expires_in == 40
    check.verify(placement.auth_id, placement.expires_in)
    now[0] += 39
    check.verify(TOKEN, 1)
    assert len(calls) == 1
    now[0] += 2  # 41 s after the check: the token may be dead, ask again
    check.verify(TOKEN, 3600)
    assert len(calls) == 2
    now[0] += 299
    check.verify(TOKEN, 3600)
    assert len(calls) == 2
    now[0] += 2  # past five minutes whatever AUTH_EXPIRES claimed
    check.verify(TOKEN, 3600)
    assert len(calls) == 3
    other = "c" * 32
    check.verify(other, 0)
    check.verify(other, 0)
    assert calls[3:] == [other, other]
    for junk in ("", "soon", "1e9", "3600.5"):
        assert parse_placement(urlencode({"AUTH_ID": TOKEN, "member_id": "m", "AUTH_EXPIRES": junk}).encode(),
                               {}).expires_in is None, junk  # fmt: skip


def test_forged_tokens_cost_the_portal_a_bounded_number_of_calls():
    """A refused token is not asked again for a minute; unknown tokens past 30 a minute are refused without a call;
    a network failure is not remembered as a refusal."""
    calls, now = [], [1000.0]

    def post(url, **options):
        calls.append(options["json"]["auth"])
        if options["json"]["auth"] == "n" * 32:
            raise ConnectionError("portal down")
        return Answer(401, {"error": "invalid_token"})

    check = TokenCheck("https://portal.bitrix24.ru/", post=post, clock=lambda: now[0])
    for _ in range(5):
        with pytest.raises(Refused):
            check.verify("f" * 32)
    assert len(calls) == 1  # the same forged token: one call a minute
    for number in range(100):
        with pytest.raises(Refused):
            check.verify(f"forged{number:026d}")
    assert len(calls) == 30  # 1 + 29 new tokens, then nothing reaches the portal this minute
    now[0] += 61
    with pytest.raises(Refused):
        check.verify("f" * 32)
    assert len(calls) == 31  # a minute later: asked again
    for _ in range(2):
        with pytest.raises(Refused):
            check.verify("n" * 32)
    assert calls.count("n" * 32) == 2


@pytest.mark.parametrize(
    ("status", "body"),
    [(503, {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}), (500, {"error": "INTERNAL"})],
)
def test_a_busy_or_broken_portal_is_not_remembered_as_a_refusal_of_a_real_token(status, body):
    """The portal over its request limit (503 QUERY_LIMIT_EXCEEDED) or failing (5xx) did not judge the token: the
    user's next open within the minute is asked again and served, not refused from the negative cache."""
    answers = [Answer(status, body), Answer(200, {"result": {"ID": "7", "STATUS": "L"}})]
    calls, now = [], [1000.0]

    def post(url, **options):
        calls.append(options["json"]["auth"])
        return answers.pop(0)

    check = TokenCheck("https://portal.bitrix24.ru/", post=post, clock=lambda: now[0])
    with pytest.raises(Refused):
        check.verify(TOKEN, 3600)
    now[0] += 5
    check.verify(TOKEN, 3600)
    assert calls == [TOKEN, TOKEN]
