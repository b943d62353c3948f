"""The flood controls through capture_form on the local stack: the captcha (sandboxed), what a held post gets and
where it is kept, a form builder's post over the limit, and ``release-held`` turning a held post into a lead."""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from urllib.parse import urlencode

import boto3
import pytest
import requests

from throughline.__main__ import main
from throughline.adapters.submission_claims import SubmissionClaims
from throughline.capture.held import Selection, content_fingerprint, held_posts, release
from throughline.capture.receive import capture_from_settings
from throughline.config import get_settings

ORIGIN = "https://shop.example.ru"


def form_url(stack, form: str = "contact") -> str:
    return f"{stack.url}/v1/forms/{form}/submissions"


def objects(stack, prefix: str) -> dict[str, dict]:
    s3 = boto3.client("s3")
    bucket = stack.resources.physical["DataBucket"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"]: json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()) for item in listing}


def queued(stack) -> list[dict]:
    sqs = boto3.client("sqs")
    messages = sqs.receive_message(
        QueueUrl=stack.resources.physical["WritesQueue"], MaxNumberOfMessages=10, VisibilityTimeout=60
    ).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def post(stack, body: dict, ip: str, form: str = "contact") -> requests.Response:
    headers = {"Origin": ORIGIN, "X-Forwarded-For": ip}
    return requests.post(form_url(stack, form), json=body, headers=headers, timeout=30)


@pytest.mark.parametrize(
    ("provider", "field"), [("smartcaptcha", "smart-token"), ("turnstile", "cf-turnstile-response")]
)
def test_with_a_captcha_a_post_needs_a_fresh_token_and_one_without_is_held_not_lost(make_stack, provider, field):
    stack = make_stack(poll_queues=False, captcha=provider, parameters={"AllowedOrigins": ORIGIN})
    person = {"name": "Мария", "phone": "+7 926 111-22-33"}

    missing = post(stack, person, "198.51.100.1")
    assert missing.status_code == 422
    assert missing.json() == {
        "error": "captcha not passed",
        "fields": {"captcha": "the captcha was not passed; please solve it again"},
    }
    token = stack.captcha_sandbox.issue()
    passed = post(stack, {**person, field: token, "comment": "с капчей"}, "198.51.100.1")
    assert passed.status_code == 202
    reused = post(stack, {**person, field: token, "comment": "второй раз"}, "198.51.100.1")
    assert reused.status_code == 422

    [message] = queued(stack)  # only the post with a valid token is queued, and without its token
    assert message["submission"]["submission_id"] == passed.json()["submission_id"]
    # Not in what the writer writes; the raw copy it carries has the body as received, token included (as in S3).
    assert token not in json.dumps(message["submission"]) and field not in json.dumps(message["submission"])
    assert set(message) == {"type", "version", "submission", "raw_copy"}
    held = objects(stack, "raw/held/")
    assert sorted(record["held"]["reason"] for record in held.values()) == ["captcha", "captcha"]
    assert all(record["message"]["submission"]["phone"] == "+79261112233" for record in held.values())
    assert stack.captcha_sandbox.verifications == 2  # the post without a token never reached the provider


def test_a_post_over_the_ip_limit_is_answered_429_kept_and_released_into_a_lead(make_stack, capsys):
    stack = make_stack(parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"})
    first = post(stack, {"name": "Анна", "phone": "+79261110001"}, "198.51.100.7")
    assert first.status_code == 202
    oleg = {"name": "Олег", "phone": "+79261110002", "email": "Oleg@Example.ru"}
    held = post(stack, oleg, "198.51.100.7")
    assert held.status_code == 429
    assert held.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert 1 <= int(held.headers["Retry-After"]) <= 3600
    submission_id = held.json()["submission_id"]
    again = post(stack, oleg, "198.51.100.7")  # the snippet's retry: the same form, held again
    assert again.status_code == 429 and again.json()["submission_id"] != submission_id
    assert post(stack, {"name": "Ира", "phone": "+79261110003"}, "198.51.100.8").status_code == 202  # another IP
    assert stack.wait_until_idle(timeout=120)
    phones = lambda: [lead["PHONE"][0]["VALUE"] for lead in stack.sandbox.entities("lead")]  # noqa: E731
    assert sorted(phones()) == ["+79261110001", "+79261110003"]
    held_copies = objects(stack, "raw/held/")
    assert len(held_copies) == 2 and {record["held"]["reason"] for record in held_copies.values()} == {"ip"}
    assert any(key.endswith(f"/form=contact/{submission_id}.json") for key in held_copies)

    capsys.readouterr()
    assert main(["release-held"]) == 0  # a listing, nothing released
    listing = capsys.readouterr().out
    assert "held: 1 (ip 1); copies of the same form: 1" in listing
    assert "+7*******02" in listing and "79261110002" not in listing  # masked
    with pytest.raises(SystemExit, match="needs a filter"):  # never everything at once by mistake
        main(["release-held", "--release"])
    assert main(["release-held", "--email", "oleg@example.ru", "--release"]) == 0
    assert "released: 1 (ip 1); copies of the same form: 1" in capsys.readouterr().out

    assert stack.wait_until_idle(timeout=120)
    assert sorted(phones()) == ["+79261110001", "+79261110002", "+79261110003"]  # one lead for the two copies
    assert objects(stack, "raw/held/") == {}
    released = [record for record in objects(stack, "raw/forms/").values() if "released" in record]
    assert len(released) == 1 and released[0]["released"]["reason"] == "ip"
    assert released[0]["message"]["submission"]["phone"] == "+79261110002"
    # Run again (an operator re-runs it after a crash): nothing is held any more, nothing is queued.
    assert main(["release-held", "--submission-id", submission_id, "--release"]) == 0
    assert "released: 0 (none); copies of the same form: 0" in capsys.readouterr().out


def test_a_builders_post_over_the_contact_limit_gets_200_and_is_held(make_stack):
    stack = make_stack(poll_queues=False, parameters={"RateLimitPerContact": "1"})
    url = f"{stack.url}/v1/hooks/tilda/landing"
    answers = [
        requests.post(url, data={"Name": "Мария", "Phone": "+79261112233", "tranid": f"t{n}", "Comments": f"c{n}"})
        for n in range(3)
    ]
    assert [answer.status_code for answer in answers] == [200, 200, 200]  # Tilda would retry anything else
    assert len(queued(stack)) == 1
    assert sorted(record["held"]["reason"] for record in objects(stack, "raw/held/").values()) == ["contact"] * 2


def test_a_retry_of_an_accepted_post_is_answered_with_it_not_held_for_its_spent_token_or_the_limit(make_stack):
    # The answer to a post with a valid token is lost (or a double click): the snippet posts the same form with the
    # same one-time token, which the provider now refuses (timeout-or-duplicate), and which counts against the IP
    # limit again. It is the lead already stored: answered with it, nothing held (release-held would make a second).
    stack = make_stack(
        poll_queues=False, captcha="turnstile", parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"}
    )
    form = {"name": "Мария", "phone": "+7 926 111-22-44", "cf-turnstile-response": stack.captcha_sandbox.issue()}
    first = post(stack, form, "198.51.100.21")
    assert first.status_code == 202
    retry = post(stack, form, "198.51.100.21")
    assert (retry.status_code, retry.json()) == (202, first.json())
    # The retry is over the IP limit, and its content was accepted: answered with it, the provider never asked.
    assert stack.captcha_sandbox.verifications == 1
    assert objects(stack, "raw/held/") == {}
    [message] = queued(stack)
    assert message["submission"]["submission_id"] == first.json()["submission_id"]
    # A new form from that address is still over the limit, and one without a fresh token still fails the captcha.
    other = {"name": "Мария", "phone": "+7 926 111-22-44", "comment": "ещё вопрос"}
    assert (
        post(stack, {**other, "cf-turnstile-response": stack.captcha_sandbox.issue()}, "198.51.100.21").status_code
        == 429
    )
    assert post(stack, other, "198.51.100.22").status_code == 422


def test_a_post_over_a_limit_is_held_without_a_call_to_the_captcha_provider(make_stack):
    # The limits are counted first: a bot's junk tokens cost nothing once its address is over the limit (each call
    # to SmartCaptcha or Turnstile is billed). Its held copy keeps the token, unverified.
    stack = make_stack(
        poll_queues=False, captcha="smartcaptcha", parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"}
    )
    first = post(
        stack,
        {"name": "Ольга", "phone": "+7 926 111-22-55", "smart-token": stack.captcha_sandbox.issue()},
        "198.51.100.31",
    )
    assert first.status_code == 202
    assert stack.captcha_sandbox.verifications == 1
    for index in range(3):
        junk = {"name": "Бот", "phone": f"+7 926 222-33-{index:02d}", "smart-token": f"junk-{index}"}
        answer = post(stack, junk, "198.51.100.31")
        assert answer.status_code == 429
    assert stack.captcha_sandbox.verifications == 1
    held = objects(stack, "raw/held/")
    assert sorted(record["held"]["reason"] for record in held.values()) == ["ip"] * 3
    # Whoever releases them can tell: these tokens were never checked.
    assert {record["held"]["captcha"] for record in held.values()} == {"not checked"}
    assert sorted(json.loads(record["body"])["smart-token"] for record in held.values()) == [
        "junk-0",
        "junk-1",
        "junk-2",
    ]
    # Under the limit from another address, a junk token is still asked about, and held for the captcha.
    other = post(stack, {"name": "Бот", "phone": "+7 926 222-33-99", "smart-token": "junk-x"}, "198.51.100.32")
    assert other.status_code == 422
    assert stack.captcha_sandbox.verifications == 2


def test_junk_tokens_with_a_victims_phone_do_not_use_up_the_victims_contact_limit(make_stack):
    # A bot posting a real customer's phone with junk tokens from many addresses: its posts fail the captcha and are
    # held for it, and must not count against that phone's limit, or the customer's own post (a good token) would be
    # held with 429 and never become a lead.
    stack = make_stack(
        poll_queues=False,
        captcha="smartcaptcha",
        parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "5", "RateLimitPerContact": "2"},
    )
    victim = "+7 926 555-44-33"
    for index in range(4):
        junk = post(stack, {"name": "Бот", "phone": victim, "smart-token": f"junk-{index}"}, f"203.0.113.{index + 1}")
        assert junk.status_code == 422
    real = post(stack, {"name": "Анна", "phone": victim, "smart-token": stack.captcha_sandbox.issue()}, "198.51.100.77")
    assert real.status_code == 202
    [message] = queued(stack)
    assert message["submission"]["submission_id"] == real.json()["submission_id"]
    held = objects(stack, "raw/held/")
    assert sorted(record["held"]["reason"] for record in held.values()) == ["captcha"] * 4
    # The phone's limit still holds real posts past it (two in the window); such a copy passed the captcha.
    second = {"name": "Анна", "phone": victim, "comment": "ещё", "smart-token": stack.captcha_sandbox.issue()}
    assert post(stack, second, "198.51.100.78").status_code == 202
    third = {"name": "Анна", "phone": victim, "comment": "и ещё", "smart-token": stack.captcha_sandbox.issue()}
    assert post(stack, third, "198.51.100.79").status_code == 429
    [over] = [record for record in objects(stack, "raw/held/").values() if record["held"]["reason"] == "contact"]
    assert over["held"]["captcha"] == "passed"


@pytest.mark.parametrize("past_the_window", [False, True])
def test_releasing_a_held_post_whose_content_was_accepted_meanwhile_queues_nothing_new(
    make_stack, capsys, past_the_window
):
    # Held over its address's limit, the customer sends the same form again from another address (the phone's network
    # instead of the office's) and gets through. Before the fix, releasing the held copy queued the content again:
    # the writer filed it on the lead as a repeat request («Повторное обращение» in the journey field and a timeline
    # notice to the manager) for a request the customer made once. Past the double-submit window (the operator
    # releases the next morning) the claim is gone: the person's raw copies still say it was accepted.
    stack = make_stack(parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"})
    assert post(stack, {"name": "Анна", "phone": "+79261110001"}, "198.51.100.41").status_code == 202
    oleg = {"name": "Олег", "phone": "+79261110002", "comment": "перезвоните"}
    held = post(stack, oleg, "198.51.100.41")
    assert held.status_code == 429
    again = post(stack, oleg, "198.51.100.41")  # the snippet's retry, held too: a copy of the same form
    assert again.status_code == 429
    accepted = post(stack, oleg, "198.51.100.42")
    assert accepted.status_code == 202
    assert stack.wait_until_idle(timeout=120)
    leads, comments = stack.sandbox.entities("lead"), stack.sandbox.timeline_comments()
    assert [lead["NAME"] for lead in leads] == ["Анна", "Олег"] and comments == []
    if past_the_window:
        table, dynamodb = stack.resources.physical["IdempotencyTable"], boto3.client("dynamodb")
        for item in dynamodb.scan(TableName=table)["Items"]:
            if item["id"]["S"].startswith("claim#"):
                dynamodb.delete_item(TableName=table, Key={"id": item["id"]})

    capsys.readouterr()
    assert main(["release-held", "--phone", "+7 926 111-00-02", "--release"]) == 0
    out = capsys.readouterr().out
    assert f"dropped (already accepted as {accepted.json()['submission_id']})" in out
    assert "released: 0 (none); copies of the same form: 1; already accepted: 1" in out
    assert stack.wait_until_idle(timeout=120)
    assert stack.sandbox.entities("lead") == leads  # no second lead, no repeat request on Oleg's
    assert stack.sandbox.timeline_comments() == []
    assert objects(stack, "raw/held/") == {}
    assert not [record for record in objects(stack, "raw/forms/").values() if "released" in record]
    if not past_the_window:  # a new post of the content within the window is still answered with the accepted one
        assert post(stack, oleg, "198.51.100.43").json() == accepted.json()


def test_a_held_builders_post_is_matched_by_its_content_not_its_tranid(make_stack, capsys):
    # Tilda gives every send its own tranid: the held copy and the one accepted later carry different ones, and are
    # the same content all the same (capture's double-submit rule).
    stack = make_stack(poll_queues=False, parameters={"RateLimitPerContact": "1"})
    url = f"{stack.url}/v1/hooks/tilda/landing"
    first = {"Name": "Мария", "Phone": "+79261112266", "tranid": "t1", "Comments": "первая"}
    assert requests.post(url, data=first).status_code == 200
    second = {"Name": "Мария", "Phone": "+79261112266", "Comments": "вторая"}
    assert requests.post(url, data={**second, "tranid": "t2"}).status_code == 200  # over the contact's limit: held
    [held_copy] = objects(stack, "raw/held/").values()
    # The window over, she sends it again (a capture without the limit stands for the next window).
    capture = capture_from_settings(get_settings())
    capture.limiter = None
    body = urlencode({**second, "tranid": "t3"}).encode()
    accepted = capture.receive("landing", body, "application/x-www-form-urlencoded", {}, builder="tilda")
    assert not accepted.duplicate and accepted.submission_id != held_copy["submission_id"]

    capsys.readouterr()
    assert main(["release-held", "--form", "landing", "--release"]) == 0
    assert f"dropped (already accepted as {accepted.submission_id})" in capsys.readouterr().out
    ids = sorted(message["submission"]["submission_id"] for message in queued(stack))
    assert len(ids) == 2 and accepted.submission_id in ids and held_copy["submission_id"] not in ids


def test_a_release_racing_a_new_post_of_the_same_content_queues_one_submission(make_stack):
    # The operator releases the held copy while the customer's new post of the same form is being captured: both
    # claim the content, and whichever claims first is the one submission; the other stores that same one (the
    # FIFO queue drops the repeat) or answers with it.
    stack = make_stack(poll_queues=False, parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"})
    settings = get_settings()
    capture = capture_from_settings(settings)
    claims = SubmissionClaims(settings.idempotency_table, settings.person_key_secret, 600)
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket, queue = settings.data_bucket, settings.writes_queue_url
    assert capture.receive("contact", b'{"phone": "+79260000000"}', "application/json", {}, source_ip="1").submission_id
    rounds = 6
    for index in range(rounds):
        body = json.dumps({"name": "Ира", "phone": f"+7926000001{index}"}).encode()
        assert capture.receive("contact", body, "application/json", {}, source_ip="1").held == "ip"
    posts = {post.submission.phone: post for post in held_posts(s3, bucket, Selection())}
    assert len(posts) == rounds
    outcomes = []
    for index in range(rounds):
        body = json.dumps({"name": "Ира", "phone": f"+7926000001{index}"}).encode()
        start = threading.Barrier(2)

        def new_post(body=body, start=start, address=f"198.51.100.{index + 60}"):
            start.wait()
            return capture.receive("contact", body, "application/json", {}, source_ip=address)

        def released(post=posts[f"+7926000001{index}"], start=start):
            start.wait()
            return release(s3, sqs, bucket, queue, settings.person_key_secret, post, claims=claims)

        with ThreadPoolExecutor(2) as pool:
            answer, outcome = pool.submit(new_post), pool.submit(released)
            answer, outcome = answer.result(), outcome.result()
        assert answer.submission_id == outcome.submission_id  # one submission, whichever claimed first
        outcomes.append(outcome.queued)
    messages = []
    while batch := queued(stack):
        messages += batch
    by_phone = Counter(message["submission"]["phone"] for message in messages)
    assert by_phone == {"+79260000000": 1, **{f"+7926000001{index}": 1 for index in range(rounds)}}
    assert objects(stack, "raw/held/") == {}


def test_a_release_finding_the_content_claimed_by_a_post_being_stored_queues_that_one_submission(make_stack):
    # The customer's new post of the held form claimed the content and has not queued it yet (or died before it did,
    # and answered 503): the release stores that submission, under its id and arrival time, as the post's own retry
    # would. The FIFO queue drops the repeat; if the post had died, the content is still queued, once.
    stack = make_stack(poll_queues=False, parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"})
    settings = get_settings()
    capture = capture_from_settings(settings)
    claims = SubmissionClaims(settings.idempotency_table, settings.person_key_secret, 600)
    s3, bucket = boto3.client("s3"), settings.data_bucket
    capture.receive("contact", b'{"phone": "+79260000001"}', "application/json", {}, source_ip="198.51.100.90")
    body = b'{"name": "\\u0418\\u0440\\u0430", "phone": "+79260000002"}'
    assert capture.receive("contact", body, "application/json", {}, source_ip="198.51.100.90").held == "ip"
    [post] = list(held_posts(s3, bucket, Selection(phones=("+79260000002",))))
    fingerprint = content_fingerprint(post)
    # A minute after the held one (the customer's new post; a fixed date would be days from the held one's real time)
    arrived = (post.submission.received_at + timedelta(minutes=1)).isoformat()
    assert claims.claim(fingerprint, "the-new-post", arrived).submission_id == "the-new-post"

    released = release(
        s3, boto3.client("sqs"), bucket, settings.writes_queue_url, settings.person_key_secret, post, claims=claims
    )
    assert (released.submission_id, released.queued) == ("the-new-post", True)
    messages = queued(stack)
    [message] = [message for message in messages if message["submission"]["phone"] == "+79260000002"]
    assert message["submission"]["submission_id"] == "the-new-post"
    assert message["submission"]["received_at"] == arrived
    key = f"raw/forms/date={arrived[:10]}/form=contact/the-new-post.json"
    assert message["submission"]["raw_key"] == key
    copy = objects(stack, key)[key]
    assert copy["released"]["reason"] == "ip" and copy["submission_id"] == "the-new-post"
    assert objects(stack, "raw/held/") == {}
    # The claim is marked: a post of the content within the window is answered with it, nothing queued.
    again = capture.receive("contact", body, "application/json", {}, source_ip="198.51.100.91")
    assert (again.submission_id, again.duplicate) == ("the-new-post", True)
    assert queued(stack) == []


@pytest.mark.parametrize("separately", [False, True])
def test_two_held_posts_of_the_same_form_days_apart_are_two_requests_not_a_post_and_its_copy(
    make_stack, capsys, separately
):
    # The office's address is over its limit on Monday and again on Friday; the same person sends the same short form
    # both days (two orders), and nobody releases anything until Friday evening. Capture would have taken them as two
    # submissions (days past the double-submit window); before the fix release-held dropped Friday's as a copy of
    # Monday's (or, released apart, as «already accepted» under the claim Monday's release had just put), and that
    # request was lost. A copy is a resend within a day (the snippet's retry of a 429).
    stack = make_stack(poll_queues=False, parameters={"AllowedOrigins": ORIGIN, "RateLimitPerIp": "1"})
    assert post(stack, {"name": "Анна", "phone": "+79261110001"}, "198.51.100.51").status_code == 202
    oleg = {"name": "Олег", "phone": "+79261110002", "comment": "перезвоните"}
    assert post(stack, oleg, "198.51.100.51").status_code == 429
    [friday] = objects(stack, "raw/held/").values()
    monday = json.loads(json.dumps(friday))
    at = datetime.fromisoformat(friday["received_at"]) - timedelta(days=4)
    monday_id = "9b4f6c1e-2f55-4d1b-9a43-0d3c2f1e7a10"
    monday.update(submission_id=monday_id, received_at=at.isoformat())
    monday["message"]["submission"].update(submission_id=monday_id, received_at=at.isoformat())
    bucket = stack.resources.physical["DataBucket"]
    monday_key = f"raw/held/date={at:%Y-%m-%d}/form=contact/{monday_id}.json"
    boto3.client("s3").put_object(Bucket=bucket, Key=monday_key, Body=json.dumps(monday).encode())
    queued(stack)  # Анна's message: received (and left invisible) so that only the releases are read below

    capsys.readouterr()
    if separately:
        assert main(["release-held", "--submission-id", monday_id, "--release"]) == 0
        assert "released: 1 (ip 1); copies of the same form: 0" in capsys.readouterr().out
        assert main(["release-held", "--submission-id", friday["submission_id"], "--release"]) == 0
        assert "released: 1 (ip 1); copies of the same form: 0; already accepted: 0" in capsys.readouterr().out
    else:
        assert main(["release-held", "--phone", "+7 926 111-00-02", "--release"]) == 0
        assert "released: 2 (ip 2); copies of the same form: 0" in capsys.readouterr().out
    ids = sorted(message["submission"]["submission_id"] for message in queued(stack))
    assert ids == sorted([monday_id, friday["submission_id"]])
    assert objects(stack, "raw/held/") == {}
