"""Form builders' webhooks on the local stack: recorded posts of Tilda, Elementor Pro, Marquiz and Contact Form 7 (the
samples in events/) replayed over HTTP, and the lead each one becomes in the Bitrix24 sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import boto3
import pytest
import requests

from tests.integration.test_report_function import emitted_metrics

EVENTS = Path(__file__).resolve().parents[2] / "events"
FIELD_MAPS = {
    "okna-quiz": {
        "name": "contacts.name",
        "phone": "contacts.phone",
        "email": "contacts.email",
        "utm_source": "extra.utm.source",
        "utm_medium": "extra.utm.medium",
        "utm_campaign": "extra.utm.campaign",
        "utm_term": "extra.utm.term",
        "landing_url": "extra.href",
        "referrer": "extra.referrer",
        "ym_client_id": "extra.cookies._ym_uid",
        "quiz": "quiz.name",
    }
}


def recorded(name: str) -> tuple[str, bytes, str]:
    """The path, body and content type of a recorded builder post (an API Gateway event in events/)."""
    event = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event["rawPath"], event["body"].encode(), event["headers"]["content-type"]


@pytest.fixture
def api(make_stack):
    return make_stack(parameters={"FormFieldMaps": json.dumps(FIELD_MAPS)})


@pytest.fixture
def held(make_stack):
    """A stack whose queue is not consumed: what was enqueued can be looked at."""
    return make_stack(poll_queues=False)


def replay(stack, name: str, **overrides) -> requests.Response:
    path, body, content_type = recorded(name)
    return requests.post(stack.url + overrides.get("path", path), data=body, headers={"Content-Type": content_type})


def leads(stack) -> list[dict]:
    assert stack.wait_until_idle(timeout=60)
    return stack.sandbox.entities("lead")


def objects(stack, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    bucket = stack.resources.physical["DataBucket"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read() for item in listing}


def keys(stack, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=stack.resources.physical["DataBucket"], Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def queued(stack) -> list[dict]:
    sqs = boto3.client("sqs")
    messages: list[dict] = []
    while batch := sqs.receive_message(
        QueueUrl=stack.resources.physical["WritesQueue"], MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages", []):
        messages += [json.loads(message["Body"]) for message in batch]
    return messages


# -- Tilda ----------------------------------------------------------------------------------------------------------


def test_tilda_connection_check_gets_200_and_stores_nothing(held):
    response = replay(held, "capture_hook_tilda_check.json")
    assert response.status_code == 200  # before: 422, so Tilda would not even save the webhook
    assert queued(held) == []
    assert keys(held, "raw/") == []


def test_tilda_post_becomes_a_lead_with_the_tags_of_its_cookie_and_the_metrica_client_id(api):
    response = replay(api, "capture_hook_tilda.json")
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers  # Tilda's server posts, not a browser
    [lead] = leads(api)
    assert lead["NAME"] == "Ирина"
    assert lead["PHONE"][0]["VALUE"] == "+79162223344"
    assert lead["EMAIL"][0]["VALUE"] == "irina@example.ru"
    # TILDAUTM, URL-encoded inside the URL-encoded COOKIES field, parts split by |||
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == ("yandex", "cpc", "okna_msk")
    assert (lead["UTM_CONTENT"], lead["UTM_TERM"]) == ("12345", "пластиковые окна")
    assert lead["UF_CRM_CUSTOMER_JOURNEY"].startswith("Первичный контакт: ")
    assert "Яндекс" in lead["UF_CRM_CUSTOMER_JOURNEY"] and "okna_msk" in lead["UF_CRM_CUSTOMER_JOURNEY"]
    assert "Нужна консультация по замеру" in lead["COMMENTS"]
    assert "Checkbox: yes" in lead["COMMENTS"]  # another field of the form, kept for the manager
    assert "form512345678" in lead["COMMENTS"]  # formid recorded
    assert "tildasid" not in lead["COMMENTS"]  # the rest of the cookie string stays in the raw copy only
    [(key, raw)] = objects(api, "raw/forms/").items()
    record = json.loads(raw)
    assert record["builder"] == "tilda" and "/form=okna/" in key
    assert record["message"]["submission"]["client_ids"]["ym_client_id"] == "1701234567890123456"


def test_a_tilda_retry_is_the_same_lead(held):
    first = replay(held, "capture_hook_tilda.json")
    second = replay(held, "capture_hook_tilda.json")  # Tilda got no 200 within 5 s and sends it again
    assert first.status_code == second.status_code == 200
    assert first.json()["submission_id"] == second.json()["submission_id"]
    assert len(queued(held)) == 1


def test_a_tilda_redelivery_is_counted_as_redelivered_not_as_a_second_accepted_submission(held, capsys):
    # Tilda sends the same tranid again (it got no 200 in time); the claim answers it. Accepted counts distinct
    # submissions: a redelivery has its own metric, and a second send of the form (another tranid) stays a double.
    path, body, content_type = recorded("capture_hook_tilda.json")
    capsys.readouterr()
    first = replay(held, "capture_hook_tilda.json")
    assert emitted_metrics(capsys.readouterr().out).get("SubmissionsAccepted") == [1.0]
    for _ in range(2):
        again = replay(held, "capture_hook_tilda.json")
        assert again.json() == first.json()
        metrics = emitted_metrics(capsys.readouterr().out)
        assert (metrics.get("SubmissionsRedelivered"), metrics.get("SubmissionsAccepted")) == ([1.0], None)
        assert metrics.get("DoubleSubmissions") is None
    sent_twice = body.replace(b"tranid=4235609%3A5361738361", b"tranid=4235609%3A5361738999")
    second = requests.post(held.url + path, data=sent_twice, headers={"Content-Type": content_type})
    assert second.json() == first.json()
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics.get("DoubleSubmissions"), metrics.get("SubmissionsAccepted")) == ([1.0], None)
    assert len(queued(held)) == 1


def test_a_tilda_retry_after_the_double_submit_window_is_still_one_submission_id(held):
    first = replay(held, "capture_hook_tilda.json").json()["submission_id"]
    # The guard's entry is gone (expired, or the table was cleaned):
    table = held.resources.physical["IdempotencyTable"]
    dynamodb = boto3.client("dynamodb")
    for item in dynamodb.scan(TableName=table)["Items"]:
        dynamodb.delete_item(TableName=table, Key={"id": item["id"]})
    second = replay(held, "capture_hook_tilda.json").json()["submission_id"]
    # The same id, so the FIFO queue's deduplication and the writer's ORIGIN_ID look-up make it one lead.
    assert first == second


def test_another_tilda_submission_with_a_replayed_tranid_is_not_swallowed(held):
    path, body, content_type = recorded("capture_hook_tilda.json")
    other = body.replace(b"Irina%40Example.ru", b"olga%40example.ru").replace(b"222-33-44", b"999-88-77")
    first = replay(held, "capture_hook_tilda.json").json()["submission_id"]
    response = requests.post(held.url + path, data=other, headers={"Content-Type": content_type})
    assert response.status_code == 200 and response.json()["submission_id"] != first
    assert len(queued(held)) == 2


def test_tilda_bad_phone_is_a_4xx_naming_the_field_and_kept_for_recovery(held):
    body = urlencode({"Name": "Ира", "Phone": "12", "tranid": "1:2", "formid": "form1"})
    response = requests.post(
        f"{held.url}/v1/hooks/tilda/okna", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 422
    assert set(response.json()["fields"]) == {"Phone"}  # as the form posted it
    assert list(objects(held, "raw/rejected/").values()) == [body.encode()]  # the bytes as posted, not an empty copy


# -- Elementor Pro --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["capture_hook_elementor_simple.json", "capture_hook_elementor_advanced.json"])
def test_elementor_posts_get_200_and_labels_become_contact_fields(api, sample):
    response = replay(api, sample)
    assert response.status_code == 200  # Elementor shows «Webhook error» on anything else
    [lead] = leads(api)
    assert lead["NAME"] == "Пётр"
    assert lead["PHONE"][0]["VALUE"] == "+79031112233"
    assert lead["EMAIL"][0]["VALUE"] == "petr@example.ru"
    assert "Сколько стоит доставка?" in lead["COMMENTS"]
    assert "Заявка на расчёт" in lead["COMMENTS"]  # the form's name
    if sample.endswith("advanced.json"):
        # Tags read from meta[page_url]; the visitor's IP is not put on the lead.
        assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == ("vk", "cpc", "retarget")
        assert "Город доставки: Казань" in lead["COMMENTS"]
        assert "203.0.113.7" not in json.dumps(lead, ensure_ascii=False)
    else:
        assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == ("google", "cpc", "brand")


def test_elementor_labels_follow_configured_aliases(make_stack):
    stack = make_stack(poll_queues=False, parameters={"FormLabelAliases": json.dumps({"Ваш номер": "phone"})})
    body = urlencode({"Ваш номер": "+7 903 000-11-22", "Имя": "Анна", "form_id": "x1", "form_name": "Звонок"})
    response = requests.post(
        f"{stack.url}/v1/hooks/elementor/zvonok",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    [message] = queued(stack)
    assert message["submission"]["phone"] == "+79030001122"
    assert message["submission"]["name"] == "Анна"


def test_elementor_honeypot_is_answered_200_and_dropped(held):
    body = urlencode({"Имя": "Бот", "Телефон": "+79030001122", "_gotcha": "http://spam", "form_id": "x1"})
    response = requests.post(
        f"{held.url}/v1/hooks/elementor/zvonok",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert queued(held) == []
    assert list(objects(held, "raw/spam/").values()) == [body.encode()]


# -- generic JSON ---------------------------------------------------------------------------------------------------


def test_marquiz_post_is_mapped_by_form_field_maps(api):
    response = replay(api, "capture_hook_json_marquiz.json")
    assert response.status_code == 200
    [lead] = leads(api)
    assert lead["NAME"] == "Ольга"
    assert lead["PHONE"][0]["VALUE"] == "+79254445566"
    assert (lead["UTM_SOURCE"], lead["UTM_CAMPAIGN"], lead["UTM_TERM"]) == ("yandex", "kviz_okna", "окна")
    # Unmapped values go to the comments under their paths; list items by index.
    assert "answers.0.q: Какие окна вас интересуют?" in lead["COMMENTS"]
    assert "answers.0.a: Пластиковые" in lead["COMMENTS"]
    assert "quiz: Расчёт стоимости окон" in lead["COMMENTS"]
    assert "contacts.phone" not in lead["COMMENTS"]  # mapped, so not repeated


def test_contact_form_7_post_needs_no_map(api):
    response = replay(api, "capture_hook_json_cf7.json")
    assert response.status_code == 200
    [lead] = leads(api)
    assert lead["NAME"] == "Сергей"
    assert lead["EMAIL"][0]["VALUE"] == "sergey@example.ru"
    assert lead["PHONE"][0]["VALUE"] == "+79123332211"
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"]) == ("vk", "social")
    assert "Есть ли доставка в Тверь?" in lead["COMMENTS"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        (b"[1, 2]", "application/json", 400, "body"),
        (b"{not json", "application/json", 400, "body"),
        (b'{"name": "X"}', "application/json", 422, "phone"),
        (b'{"phone": {"a": 1}}', "application/json", 422, "phone"),
        (b"<xml/>", "application/xml", 415, "content-type"),
        (b"\xff\xfe", "application/x-www-form-urlencoded", 400, "body"),
    ],
)
@pytest.mark.parametrize("builder", ["tilda", "elementor", "json"])
def test_bad_input_is_a_4xx_naming_the_field_never_a_5xx(held, builder, body, content_type, status, field):
    response = requests.post(f"{held.url}/v1/hooks/{builder}/f1", data=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert field in response.json()["fields"]


def test_hooks_answer_no_preflight(held):
    response = requests.options(
        f"{held.url}/v1/hooks/tilda/okna",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


def test_tilda_retries_arriving_at_once_are_one_submission(held):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: replay(held, "capture_hook_tilda.json"), range(4)))
    assert {answer.status_code for answer in answers} == {200}
    assert len({answer.json()["submission_id"] for answer in answers}) == 1
    assert len(queued(held)) == 1


def test_a_tilda_form_sent_twice_is_one_submission_like_the_form_route(held):
    # The visitor sends the same form twice (a second click after the first «спасибо»): Tilda gives each post its own
    # tranid. Same content from the same form within the window is one submission, whatever the tranids say.
    path, body, content_type = recorded("capture_hook_tilda.json")
    again = body.replace(b"tranid=4235609%3A5361738361", b"tranid=4235609%3A5361738999")
    assert again != body
    first = replay(held, "capture_hook_tilda.json")
    second = requests.post(held.url + path, data=again, headers={"Content-Type": content_type})
    assert first.status_code == second.status_code == 200
    assert first.json()["submission_id"] == second.json()["submission_id"]
    assert len(queued(held)) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        # A post in windows-1251 that does not say so: refused, but the lead is in its bytes and can be recovered.
        (b"Name=%C8%F0%E8%ED%E0&Phone=%2B79161112233&tranid=1%3A2", "application/x-www-form-urlencoded", 400),
        (b"Name=Ira&Phone=%2B79161112233", "text/html", 415),
        (b'{"phone": "+79161112233", "name": "\xff"}', "application/json", 400),
    ],
)
def test_an_unreadable_builder_post_is_kept_for_recovery(held, body, content_type, status):
    response = requests.post(f"{held.url}/v1/hooks/tilda/okna", data=body, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert list(objects(held, "raw/rejected/").values()) == [body]
    assert queued(held) == []


def test_an_elementor_post_with_a_long_russian_message_is_not_too_large(held):
    # Advanced Data sends each value twice (value, raw_value), percent-encoded: a Cyrillic letter is 6 bytes, twice.
    # An 8 400-character message (the form route takes 10 000) is 74 KB on the wire.
    message = "Окна в дом, " * 700
    body = urlencode(
        {
            "form[id]": "a1b2c3d",
            "fields[phone][title]": "Телефон",
            "fields[phone][value]": "+7 903 111-22-33",
            "fields[message][title]": "Сообщение",
            "fields[message][value]": message,
            "fields[message][raw_value]": message,
        }
    )
    assert len(body) > 65536
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    response = requests.post(f"{held.url}/v1/hooks/elementor/raschet", data=body, headers=form)
    assert response.status_code == 200, response.text
    [queued_message] = queued(held)
    assert queued_message["submission"]["comment"] == message.strip()
