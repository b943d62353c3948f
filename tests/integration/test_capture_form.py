"""capture_form over HTTP on the local stack: the contract of POST /v1/forms/{form_id}/submissions."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import random
from datetime import UTC, datetime, timedelta

import boto3
import pytest
import requests

ORIGIN = "https://shop.example.ru"
URLENCODED = "application/x-www-form-urlencoded"
PERSON = {"name": "Иван Петров", "phone": "8 916 123-45-67", "email": "Ivan@Example.RU"}


@pytest.fixture
def site(make_stack):
    stack = make_stack(poll_queues=False, parameters={"AllowedOrigins": f"{ORIGIN},https://other.example.ru"})
    stack.form_url = f"{stack.url}/v1/forms/contact/submissions"
    return stack


def queued(stack) -> list[dict]:
    sqs = boto3.client("sqs")
    messages = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=stack.resources.physical["WritesQueue"],
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
            VisibilityTimeout=60,
        ).get("Messages", [])
        if not batch:
            return messages
        messages += batch


def person_key_secret(stack) -> str:
    # capture_form's own secret (the person key's), not the list the local stack's one process reads.
    arn = stack.resources.functions["capture_form"].environment["SECRETS_ARN"]
    secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
    return json.loads(secret["SecretString"])["PERSON_KEY_SECRET"]


def objects(stack, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack.resources.physical["DataBucket"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def test_json_submission_is_stored_enqueued_and_answered_202(site):
    body = {
        **PERSON,
        "comment": "Перезвоните",
        "landing_url": "https://shop.example.ru/l?utm_source=yandex&utm_medium=cpc&utm_campaign=zima&yclid=42",
        "first_utm_source": "google",
        "first_utm_medium": "organic",
        "first_seen_at": (datetime.now(UTC) - timedelta(days=35)).isoformat(timespec="seconds"),  # kept: < 2 years
        "company": "ООО Ромашка",
    }
    response = requests.post(site.form_url, json=body, headers={"Origin": ORIGIN})
    assert response.status_code == 202
    submission_id = response.json()["submission_id"]
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN

    [message] = queued(site)
    payload = json.loads(message["Body"])["submission"]
    assert payload["submission_id"] == submission_id
    assert payload["phone"] == "+79161234567"
    assert payload["email"] == "ivan@example.ru"
    assert payload["last_visit"]["utm_source"] == "yandex"  # read from landing_url
    assert payload["last_visit"]["utm_campaign"] == "zima"
    assert payload["click_ids"] == {"yclid": "42"}
    assert payload["first_visit"]["utm_source"] == "google"
    assert payload["extra"] == {"company": "ООО Ромашка"}
    # The message group is the person, keyed with the stack's secret (group ids show in consoles and logs): an
    # unkeyed hash of a phone reverses in minutes.
    group = message["Attributes"]["MessageGroupId"]
    key = person_key_secret(site)
    assert group == hmac.new(key.encode(), b"+79161234567", hashlib.sha256).hexdigest()
    assert group != hashlib.sha256(b"+79161234567").hexdigest()[: len(group)]
    assert message["Attributes"]["MessageDeduplicationId"] == submission_id

    # The raw copy travels in the message (the writer puts it under its raw_key before the lead): no S3 call here.
    assert objects(site, "raw/forms/") == {}
    key = json.loads(message["Body"])["submission"]["raw_key"]
    assert key.endswith(f"/form=contact/{submission_id}.json") and "/date=" in key
    record = json.loads(json.loads(message["Body"])["raw_copy"])
    assert json.loads(record["body"]) == body  # exactly what arrived
    assert record["headers"]["origin"] == ORIGIN


def test_plain_html_form_post_is_accepted_and_may_redirect_to_a_thank_you_page(site):
    form = {**PERSON, "utm_source": "vk", "utm_medium": "cpc", "_next": f"{ORIGIN}/thanks"}
    response = requests.post(site.form_url, data=form, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{ORIGIN}/thanks"
    [message] = queued(site)
    assert json.loads(message["Body"])["submission"]["last_visit"]["utm_source"] == "vk"

    # A redirect to a foreign site is not followed: an open redirect would serve phishing.
    other = {**PERSON, "phone": "+79160000001", "_next": "https://evil.example.com/"}
    response = requests.post(site.form_url, data=other, allow_redirects=False)
    assert response.status_code == 202


def test_multipart_form_is_accepted(site):
    response = requests.post(site.form_url, files={"name": (None, "Анна"), "phone": (None, "+7 916 555 44 33")})
    assert response.status_code == 202
    [message] = queued(site)
    assert json.loads(message["Body"])["submission"]["phone"] == "+79165554433"


def test_double_submission_is_one_submission(site):
    first = requests.post(site.form_url, json=PERSON)
    second = requests.post(site.form_url, json=PERSON)
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert len(queued(site)) == 1
    different = requests.post(site.form_url, json={**PERSON, "comment": "и ещё"})
    assert different.json() != first.json()
    # The first is in flight (received above) and holds back its FIFO group, so count rather than receive.
    assert site.queue_depth(boto3.client("sqs"), site.resources.physical["WritesQueue"]) == 2


def test_honeypot_is_answered_like_a_success_and_dropped(site):
    response = requests.post(site.form_url, json={**PERSON, "_gotcha": "http://spam.example"})
    assert response.status_code == 202
    assert "submission_id" in response.json()
    assert queued(site) == []
    assert objects(site, "raw/forms/") == {}
    assert len(objects(site, "raw/spam/")) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fields"),
    [
        (b"{not json", "application/json", 400, {"body"}),
        (b"[1, 2]", "application/json", 400, {"body"}),
        (b"name=x", "application/xml", 415, {"content-type"}),
        (b"name=x", None, 415, {"content-type"}),
        (b"x" * 70000, "application/json", 413, {"body"}),
        (json.dumps({"name": "x"}).encode(), "application/json", 422, {"phone", "email"}),
        (
            # Odd tracking values (referrer, first_seen_at) never reject a lead; only what the visitor typed can.
            json.dumps({"tel": "12", "email": "not-mail", "referrer": "yandex", "first_seen_at": "вчера"}).encode(),
            "application/json",
            422,
            {"tel", "email"},
        ),
        (json.dumps({"phone": ["+79161234567", "+79160000000"]}).encode(), "application/json", 422, {"phone"}),
    ],
)
def test_bad_input_gets_a_4xx_naming_each_bad_field(site, body, content_type, status, fields):
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(site.form_url, data=body, headers=headers)
    assert response.status_code == status
    assert set(response.json()["fields"]) == fields
    assert queued(site) == []


def test_bad_form_id_is_named(site):
    response = requests.post(f"{site.url}/v1/forms/{'x' * 80}/submissions", json=PERSON)
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"form_id"}


def test_rejected_submissions_are_kept_for_recovery(site):
    requests.post(site.form_url, json={"name": "Опечатка", "phone": "12-34"})
    [body] = objects(site, "raw/rejected/").values()
    assert json.loads(body)["phone"] == "12-34"


def test_no_input_produces_a_5xx(site):
    rng = random.Random(3)
    content_types = [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "text/plain",
        "application/json; charset=koi8-r",
        "application/json; charset=nope",
        None,
    ]
    for _ in range(60):
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
        if rng.random() < 0.3:
            field = rng.choice(["phone", "email", "name", "x"])
            body = json.dumps({field: rng.choice([1, None, [], {}, "Ω"])}).encode()
        content_type = rng.choice(content_types)
        headers = {"Content-Type": content_type} if content_type else {}
        response = requests.post(site.form_url, data=body, headers=headers)
        assert response.status_code < 500, (body, content_type, response.text)
        assert response.headers["Content-Type"].startswith("application/json")


def test_cors_preflight_only_for_allowed_origins(site):
    allowed = requests.options(site.form_url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in allowed.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in allowed.headers["Access-Control-Allow-Headers"]
    refused = requests.options(site.form_url, headers={"Origin": "https://evil.example.com"})
    assert refused.status_code == 403
    assert "Access-Control-Allow-Origin" not in refused.headers
    posted = requests.post(site.form_url, json=PERSON, headers={"Origin": "https://evil.example.com"})
    assert posted.status_code == 202  # stored (a server-side post has no CORS), but the page cannot read it
    assert "Access-Control-Allow-Origin" not in posted.headers


def test_queue_outage_answers_503_and_keeps_the_raw_copy(site, monkeypatch):
    sqs = boto3.client("sqs")
    sqs.delete_queue(QueueUrl=site.resources.physical["WritesQueue"])
    response = requests.post(site.form_url, json=PERSON)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert len(objects(site, "raw/forms/")) == 1  # nothing lost: the raw copy was written first


def test_logs_never_show_the_phone_or_email(site):
    # Powertools' logger writes to the stdout it found at import; listen to it directly, formatted as in Lambda.
    from throughline.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        requests.post(site.form_url, json={**PERSON, "phone": "+7 916 765-43-21", "email": "secret.person@example.ru"})
        requests.post(site.form_url, json={"phone": "+7 916 765-43-21", "email": "broken"})
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    assert "submission accepted" in output
    assert "79167654321" not in output and "765-43-21" not in output
    assert "secret.person" not in output


def test_logs_never_show_the_phone_even_with_event_logging_switched_on(site, monkeypatch):
    # POWERTOOLS_LOGGER_LOG_EVENT=true, the usual debugging switch, logged every event: phones and e-mails in clear.
    import importlib

    from throughline.observability import logger

    app = importlib.import_module("functions.capture_form.app")
    monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", "true")
    importlib.reload(app)  # Powertools reads the switch when the handler is decorated
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        response = requests.post(site.form_url, json={"phone": "+7 916 765-43-21", "email": "secret.person@example.ru"})
    finally:
        logger.removeHandler(handler)
        monkeypatch.delenv("POWERTOOLS_LOGGER_LOG_EVENT")
        importlib.reload(app)
    assert response.status_code == 202
    output = stream.getvalue()
    assert "submission accepted" in output
    assert "765-43-21" not in output and "secret.person" not in output


def test_a_relative_next_goes_back_to_the_posting_site(site):
    form = {**PERSON, "_next": "/thanks.html"}
    response = requests.post(site.form_url, data=form, headers={"Origin": ORIGIN}, allow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{ORIGIN}/thanks.html"


def test_a_post_from_an_unlisted_origin_is_kept_and_reported(site):
    from throughline.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        response = requests.post(site.form_url, json=PERSON, headers={"Origin": "https://forgotten.example.ru"})
    finally:
        logger.removeHandler(handler)
    assert response.status_code == 202
    assert len(queued(site)) == 1  # nothing lost
    assert "form posted from an origin not in ALLOWED_ORIGINS" in stream.getvalue()
    assert "https://forgotten.example.ru" in stream.getvalue()


@pytest.mark.parametrize(
    "overrides",
    [
        {"body": "!!!notbase64", "isBase64Encoded": True},
        {"body": {"phone": "+79161234567"}},
        {"body": '{"phone": "+79161234567", "name": "\ud83d"}'},  # a lone surrogate in a direct invocation's text
    ],
)
def test_an_unreadable_event_is_a_400_not_a_function_error(site, overrides):
    # A function error is API Gateway's 500; invalid base64 raised binascii.Error out of the handler.
    event = {
        "version": "2.0",
        "requestContext": {"http": {"method": "POST", "path": "/v1/forms/contact/submissions"}},
        "pathParameters": {"form_id": "contact"},
        "headers": {"content-type": "application/json"},
        **overrides,
    }
    response = site.invoke("capture_form", event)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["fields"]["body"]
    assert queued(site) == []


def test_a_charset_outside_the_short_list_is_415_naming_it(site):
    response = requests.post(
        site.form_url, data=b"phone=%2B79161234567", headers={"Content-Type": f"{URLENCODED}; charset=utf-7"}
    )
    assert response.status_code == 415
    answer = response.json()
    assert answer["error"] == "unsupported charset" and "'utf-7'" in answer["fields"]["charset"]
    assert queued(site) == []
    legacy = requests.post(
        site.form_url,
        data="name=Иван&phone=89161234567".encode("koi8-r"),
        headers={"Content-Type": f"{URLENCODED}; charset=KOI8-R"},
    )
    assert legacy.status_code == 202
    [message] = queued(site)
    assert json.loads(message["Body"])["submission"]["name"] == "Иван"
