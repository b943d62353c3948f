"""docs/openapi.yaml against the local stack (issue 15, item 16): every route of template.yaml is described, the stack
serves the document, and schemathesis finds no 5xx, no 4xx without a JSON body naming the problem, and no answer
the document does not describe."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from local.stack import LOCAL_APP_TOKEN, OPENAPI_PATH
from local.template import load_template

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / "docs" / "openapi.yaml"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Enough to reach every answer of every operation (each case is one HTTP request through a function), and the whole
# run well under a minute on two loaded cores.
EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 50, schemathesis.GenerationMode.NEGATIVE: 30}


def template_routes() -> set[tuple[str, str]]:
    routes = set()
    for resource in load_template()["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            for event in resource["Properties"].get("Events", {}).values():
                if event["Type"] == "HttpApi":
                    routes.add((event["Properties"]["Method"].lower(), event["Properties"]["Path"]))
    return routes


def test_every_route_of_the_template_is_described_and_nothing_else_outside_the_local_stack():
    paths = yaml.safe_load(DOCUMENT.read_text())["paths"]
    described = {
        (method, path)
        for path, item in paths.items()
        if not path.startswith("/_local/")
        for method in item
        if method in ("get", "post", "put", "patch", "delete", "options")
    }
    assert described == template_routes()


def test_the_document_is_valid_openapi_3_1():
    validator = pytest.importorskip("openapi_spec_validator")  # comes with moto[server]
    validator.validate(yaml.safe_load(DOCUMENT.read_text()))


def json_error(response: requests.Response) -> str | None:
    """The problem a 4xx names: ``error`` (ours) or ``message`` (API Gateway's own answers)."""
    try:
        body = response.json()
    except ValueError:
        return None
    problem = body.get("error") or body.get("message") if isinstance(body, dict) else None
    return problem if isinstance(problem, str) and problem.strip() else None


def fuzz(operation, mode, examples: int, base_url: str, session: requests.Session, seen: dict[str, set[int]]) -> None:
    """Send ``examples`` cases of ``operation`` in ``mode`` and check each answer."""
    negative = mode is schemathesis.GenerationMode.NEGATIVE
    checks = [*CHECKS, negative_data_rejection] if negative else CHECKS

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def exercise(case):
        response = case.call(base_url=base_url, session=session, timeout=30)
        seen.setdefault(operation.label, set()).add(response.status_code)
        if 400 <= response.status_code < 500 and case.method != "OPTIONS":
            assert json_error(response), (case.method, case.path, response.status_code, response.text)
        case.validate_response(response, checks=checks)

    started = time.monotonic()
    try:
        exercise()
    except Exception as error:
        error.add_note(f"{operation.label} in {mode.value} mode")
        raise
    print(f"{operation.label} {mode.value}: {examples} cases in {time.monotonic() - started:.1f} s")


def served_schema(stack) -> schemathesis.BaseSchema:
    """The document as the stack serves it, which is the file in docs/ byte for byte."""
    served = requests.get(stack.url + OPENAPI_PATH, timeout=10)
    assert served.status_code == 200 and served.headers["Content-Type"].startswith("application/yaml")
    assert served.content == DOCUMENT.read_bytes()
    return schemathesis.openapi.from_dict(yaml.safe_load(served.text))


def described_operations() -> list[str]:
    """Every operation of the document, as schemathesis labels them (``POST /v1/bitrix/events``)."""
    paths = yaml.safe_load(DOCUMENT.read_text())["paths"]
    verbs = ("get", "post", "put", "patch", "delete", "options")
    return [f"{method.upper()} {path}" for path, item in paths.items() for method in item if method in verbs]


# One test per operation, each on a stack of its own: the operations are independent, and split this way the few
# hundred cases spread over the parallel workers instead of holding one of them for minutes on a loaded machine.
@pytest.mark.parametrize("label", described_operations())
def test_schemathesis_finds_no_5xx_and_only_described_answers(make_stack, label):
    stack = make_stack(poll_queues=False)
    operations = {result.ok().label: result.ok() for result in served_schema(stack).get_all_operations()}
    assert set(operations) == set(described_operations())
    operation = operations[label]
    session = requests.Session()
    seen: dict[str, set[int]] = {}
    for mode, examples in EXAMPLES.items():
        # Nothing to negate in a request without a body (string headers and path parameters stay strings).
        if mode is schemathesis.GenerationMode.POSITIVE or len(operation.body):
            fuzz(operation, mode, examples, stack.url, session, seen)
    # The operation was exercised (which answers random input reaches varies from run to run: printed, not asserted;
    # the accepting answers are reached by the test below).
    print("answers seen:", {label: sorted(statuses) for label, statuses in seen.items()})
    assert set(seen) == {label}


def test_the_answers_random_input_cannot_reach_are_described(make_stack):
    stack = make_stack(poll_queues=False)
    operations = {result.ok().label: result.ok() for result in served_schema(stack).get_all_operations()}
    session = requests.Session()
    # What schemathesis cannot guess: the portal's application token, and a post a person would make.
    event = {
        "event": "ONCRMLEADADD",
        "data[FIELDS][ID]": "7405",
        "ts": "1766047124",
        "auth[application_token]": LOCAL_APP_TOKEN,
    }
    form = {"name": "Мария", "phone": "+7 926 111-22-33", "utm_source": "yandex"}
    for label, body, media_type, status in [
        ("POST /v1/bitrix/events", event, "application/x-www-form-urlencoded", 200),
        ("POST /v1/forms/{form_id}/submissions", form, "application/json", 202),
        ("POST /v1/forms/{form_id}/submissions", form, "multipart/form-data", 202),
    ]:
        case = operations[label].Case(body=body, media_type=media_type, path_parameters={"form_id": "landing"})
        response = case.call(base_url=stack.url, session=session, timeout=30)
        assert response.status_code == status, response.text
        case.validate_response(response, checks=CHECKS)
    # A preflight from an allowed origin (the stack's own is in ALLOWED_ORIGINS).
    preflight = operations["OPTIONS /v1/forms/{form_id}/submissions"].Case(
        path_parameters={"form_id": "landing"}, headers={"Origin": stack.url, "Access-Control-Request-Method": "POST"}
    )
    response = preflight.call(base_url=stack.url, session=session, timeout=30)
    assert response.status_code == 204 and response.headers["access-control-allow-origin"] == [stack.url]
    preflight.validate_response(response, checks=CHECKS)


@pytest.mark.parametrize(
    ("body", "status", "problem"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b"\xff\xfe", 400, "not JSON"),
    ],
)
def test_invoke_refuses_an_event_that_is_no_json_object_with_a_400(make_stack, body, status, problem):
    """Regression: these were 500s (the handler's json.loads and dict(event) raised into the catch-all)."""
    stack = make_stack(poll_queues=False)
    response = requests.post(f"{stack.url}/_local/invoke/capture_form", data=body, timeout=30)
    assert response.status_code == status
    assert problem in response.json()["error"]


def test_a_function_that_raises_is_lambdas_200_with_a_function_error_not_a_500_nor_a_404(make_stack):
    """Regression: the writer given no ``Records`` raised KeyError, which the stack took for «no such function» (404);
    any other exception was a 500. Lambda's Invoke answers 200 with X-Amz-Function-Error."""
    stack = make_stack(poll_queues=False)
    response = requests.post(f"{stack.url}/_local/invoke/bitrix_writer", json={"not": "records"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["X-Amz-Function-Error"] == "Unhandled"
    assert response.json()["errorType"]
    unknown = requests.post(f"{stack.url}/_local/invoke/no_such_function", json={}, timeout=30)
    assert unknown.status_code == 404 and "no function 'no_such_function'" in unknown.json()["error"]
