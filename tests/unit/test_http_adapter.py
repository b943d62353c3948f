"""Unit tests of throughline.adapters.http: API Gateway HTTP API (payload v2) requests, responses and CORS."""

from __future__ import annotations

import base64
import json

import pytest

from throughline.adapters.http import HttpRequest, UnreadableRequest, cors_headers, empty_response, json_response

ALLOWED = ("https://example.com", "https://www.example.com")


def v2_event(**overrides) -> dict:
    """An API Gateway HTTP API payload v2 event, as Lambda receives it."""
    event = {
        "version": "2.0",
        "routeKey": "POST /v1/forms/{form_id}/submissions",
        "rawPath": "/v1/forms/contact/submissions",
        "rawQueryString": "debug=1",
        "cookies": ["_ga=GA1.1.1.2"],
        "headers": {
            "Content-Type": "application/json; charset=utf-8",
            "Origin": "https://example.com",
            "user-agent": "Mozilla/5.0",
            "X-Forwarded-For": "203.0.113.7",
        },
        "queryStringParameters": {"debug": "1"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api-id",
            "domainName": "api.example.com",
            "http": {
                "method": "POST",
                "path": "/v1/forms/contact/submissions",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "Mozilla/5.0",
            },
            "requestId": "req-1",
            "routeKey": "POST /v1/forms/{form_id}/submissions",
            "stage": "$default",
            "timeEpoch": 1736935200000,
        },
        "pathParameters": {"form_id": "contact"},
        "body": '{"phone": "+79161234567", "name": "Иван"}',
        "isBase64Encoded": False,
    }
    return {**event, **overrides}


def test_from_event_plain_body():
    request = HttpRequest.from_event(v2_event())
    assert request.method == "POST"
    assert request.path == "/v1/forms/contact/submissions"
    assert request.path_parameters == {"form_id": "contact"}
    assert request.body == '{"phone": "+79161234567", "name": "Иван"}'.encode()
    assert request.source_ip == "203.0.113.7"
    assert request.query == {"debug": "1"}
    assert request.content_type == "application/json; charset=utf-8"


def test_from_event_base64_body():
    raw = b"name=%D0%98%D0%B2%D0%B0%D0%BD&phone=8+916+123-45-67"
    binary = b"\x00\xff\xfe"
    request = HttpRequest.from_event(v2_event(body=base64.b64encode(raw).decode(), isBase64Encoded=True))
    assert request.body == raw
    request = HttpRequest.from_event(v2_event(body=base64.b64encode(binary).decode(), isBase64Encoded=True))
    assert request.body == binary


@pytest.mark.parametrize(
    "overrides",
    [
        {"body": "!!!notbase64", "isBase64Encoded": True},  # binascii.Error escaped: a function error, a 500
        {"body": "YWJj=", "isBase64Encoded": True},  # excess padding was read as "abc"
        {"body": "YW Jj", "isBase64Encoded": True},
        {"body": {"phone": "+79161234567"}},  # a direct invocation with the body as an object
        {"body": 42},
    ],
)
def test_an_unreadable_event_body_is_refused_as_such(overrides):
    with pytest.raises(UnreadableRequest):
        HttpRequest.from_event(v2_event(**overrides))


def test_odd_event_parts_are_read_without_failing():
    request = HttpRequest.from_event(
        v2_event(body='{"name": "\ud83d"}', headers={"Origin": None, "X-Count": 3, "Content-Type": "text/plain"})
    )
    assert request.headers == {"x-count": "3", "content-type": "text/plain"}
    assert request.body == b'{"name": "\xed\xa0\xbd"}'  # no UTF-8: the body's reader refuses it with a 400


def test_header_names_are_lower_cased_and_values_kept():
    request = HttpRequest.from_event(v2_event())
    assert request.headers == {
        "content-type": "application/json; charset=utf-8",
        "origin": "https://example.com",
        "user-agent": "Mozilla/5.0",
        "x-forwarded-for": "203.0.113.7",
    }


@pytest.mark.parametrize("name", ["Content-Type", "CONTENT-TYPE", "content-type"])
def test_content_type_whatever_the_header_case(name):
    request = HttpRequest.from_event(v2_event(headers={name: "application/x-www-form-urlencoded"}))
    assert request.content_type == "application/x-www-form-urlencoded"


def test_minimal_event_defaults():
    request = HttpRequest.from_event({})
    assert request == HttpRequest(method="GET", path="/", path_parameters={}, headers={}, body=b"", source_ip=None)
    assert request.content_type is None


def test_missing_parts_are_tolerated():
    event = v2_event(body=None, headers=None, pathParameters=None, queryStringParameters=None, rawPath=None)
    request = HttpRequest.from_event(event)
    assert (request.body, request.headers, request.path_parameters, request.query) == (b"", {}, {}, {})
    assert request.path == "/v1/forms/contact/submissions"  # from requestContext.http.path


def test_method_is_upper_cased():
    event = v2_event()
    event["requestContext"] = {
        **event["requestContext"],
        "http": {**event["requestContext"]["http"], "method": "options"},
    }
    assert HttpRequest.from_event(event).method == "OPTIONS"


# -- responses ------------------------------------------------------------------------------------------------------


def test_json_response():
    response = json_response(202, {"submission_id": "abc", "note": "Иван"}, {"Vary": "Origin"})
    assert response == {
        "statusCode": 202,
        "headers": {"Content-Type": "application/json; charset=utf-8", "Vary": "Origin"},
        "body": '{"submission_id": "abc", "note": "Иван"}',
        "isBase64Encoded": False,
    }
    assert json.loads(response["body"]) == {"submission_id": "abc", "note": "Иван"}


def test_empty_response():
    assert empty_response(204, {"Access-Control-Allow-Origin": "https://example.com"}) == {
        "statusCode": 204,
        "headers": {"Access-Control-Allow-Origin": "https://example.com"},
        "body": "",
        "isBase64Encoded": False,
    }
    assert empty_response(403)["headers"] == {}


# -- CORS -----------------------------------------------------------------------------------------------------------


def request_from(origin: str | None, method: str = "POST") -> HttpRequest:
    headers = {"origin": origin} if origin is not None else {}
    return HttpRequest(method=method, path="/v1/forms/contact/submissions", path_parameters={}, headers=headers,
                       body=b"")  # fmt: skip


@pytest.mark.parametrize("origin", ALLOWED)
def test_cors_for_an_allowed_origin(origin):
    assert cors_headers(request_from(origin), ALLOWED) == {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Expose-Headers": "Retry-After",
    }


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "",
        "https://evil.example",
        "http://example.com",  # another scheme is another origin
        "https://example.com:8443",
        "https://example.com.evil.ru",
        "https://sub.example.com",
        "null",
    ],
)
def test_no_cors_for_other_origins(origin):
    assert cors_headers(request_from(origin), ALLOWED) == {}
    assert cors_headers(request_from(origin, "OPTIONS"), ALLOWED) == {}


def test_no_cors_when_nothing_is_allowed():
    assert cors_headers(request_from("https://example.com"), ()) == {}


def test_preflight_headers():
    assert cors_headers(request_from("https://example.com", "OPTIONS"), ALLOWED) == {
        "Access-Control-Allow-Origin": "https://example.com",
        "Vary": "Origin, Access-Control-Request-Headers",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
    }


def test_preflight_methods_are_configurable():
    headers = cors_headers(request_from("https://example.com", "OPTIONS"), ALLOWED, methods="GET, OPTIONS")
    assert headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"


def test_cors_from_a_real_event():
    request = HttpRequest.from_event(v2_event())
    assert cors_headers(request, ALLOWED) == {
        "Access-Control-Allow-Origin": "https://example.com",
        "Vary": "Origin",
        "Access-Control-Expose-Headers": "Retry-After",
    }


@pytest.mark.parametrize(
    ("configured", "origin"),
    [
        ("https://Shop.Example.ru/", "https://shop.example.ru"),  # copied from the address bar
        ("https://shop.example.ru:443", "https://shop.example.ru"),  # the default port spelled out
        ("https://shop.example.ru/landing?utm_source=x", "https://shop.example.ru"),  # a page, not an origin
        (" HTTPS://shop.example.ru ", "https://shop.example.ru"),
        ("https://пример.рф", "https://xn--e1afmkfd.xn--p1ai"),  # what a browser sends for an IDN host
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    ],
)
def test_an_allowed_origin_is_matched_in_the_spelling_browsers_send(configured, origin):
    # Compared as typed, a listed site got no CORS headers: its JSON posts failed their preflight and never arrived.
    allowed = ("https://[", configured)  # an unreadable entry spoils no other
    assert cors_headers(request_from(origin), allowed)["Access-Control-Allow-Origin"] == origin
    assert cors_headers(request_from(origin, "OPTIONS"), allowed)["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(
    "origin",
    [
        "https://Example.com",  # not how a browser spells it: never echoed
        "https://example.com/",
        "https://example.com:443",
        "https://example.com\r\nSet-Cookie: x=1",
        "https://user@example.com",
    ],
)
def test_an_origin_in_another_spelling_is_not_echoed(origin):
    assert cors_headers(request_from(origin), ALLOWED) == {}


@pytest.mark.parametrize(
    ("requested", "allowed"),
    [
        ("content-type,x-requested-with", "content-type,x-requested-with"),  # Laravel's axios on every request
        ("Content-Type, X-CSRF-Token", "Content-Type, X-CSRF-Token"),
        (None, "Content-Type"),
        ("", "Content-Type"),
        ("x-a\r\nSet-Cookie: x=1", "Content-Type"),  # never echoed unless a clean list of names
        ("x-a, ,x-b", "Content-Type"),
        ("x" * 1001, "Content-Type"),
    ],
)
def test_a_preflight_allows_the_headers_an_allowed_sites_script_asks_for(requested, allowed):
    # Only Content-Type was allowed: a site whose script adds X-Requested-With failed its preflight, so the browser
    # never sent the post.
    request = request_from("https://example.com", "OPTIONS")
    if requested is not None:
        request.headers["access-control-request-headers"] = requested
    headers = cors_headers(request, ALLOWED)
    assert headers["Access-Control-Allow-Headers"] == allowed
    assert headers["Vary"] == "Origin, Access-Control-Request-Headers"
