"""Erasure marks (privacy.erasure): forget's FORGOTTEN#<hmac> items, and the writer's check against them (moto)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import boto3
import pytest
from moto import mock_aws

from throughline.adapters.journey_store import ERASED, FORGET_MARK_DAYS, FORGOTTEN_PREFIX, JourneyStore
from throughline.capture.forms import parse_submission
from throughline.config import reset_settings_cache
from throughline.person_keys import person_key
from throughline.privacy.erasure import erased
from throughline.writer.leads import Outcome
from throughline.writer.queued import drop_erased

SECRET = "k" * 32
REGION = "eu-central-1"
ERASURE = datetime(2026, 12, 1, 12, 0, 0, 500000, tzinfo=UTC)
IVAN_PHONE, IVAN_MAIL, OLGA_MAIL = "+79161234567", "ivan@example.ru", "olga@example.ru"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.client("dynamodb")
        dynamodb.create_table(
            TableName="journeys",
            BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("entity", "touch")],
            KeySchema=[{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "touch", "KeyType": "RANGE"}],
        )
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="data", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_versioning(Bucket="data", VersioningConfiguration={"Status": "Enabled"})
        yield dynamodb, s3


def store(dynamodb, now: datetime = ERASURE + timedelta(hours=1)) -> JourneyStore:
    return JourneyStore("journeys", client=dynamodb, clock=lambda: now)


def submission(submission_id: str, at: datetime, phone: str | None = IVAN_PHONE, email: str | None = None):
    fields = {"name": "Иван", **({"phone": phone} if phone else {}), **({"email": email} if email else {})}
    return parse_submission(
        "contact",
        fields,
        submission_id=submission_id,
        received_at=at,
        origin=None,
        default_region="RU",
        zone=ZoneInfo("Europe/Moscow"),
    )


def test_a_mark_holds_only_the_key_the_time_whether_emails_were_named_and_an_expiry_56_days_on(aws):
    dynamodb, _ = aws
    store(dynamodb).mark_forgotten([person_key(IVAN_PHONE, SECRET)], ERASURE)
    [item] = dynamodb.scan(TableName="journeys")["Items"]
    assert item == {
        "entity": {"S": FORGOTTEN_PREFIX + person_key(IVAN_PHONE, SECRET)},
        "touch": {"S": ERASED},
        "erased_at": {"S": "2026-12-01T12:00:00.500000+00:00"},
        "expires_at": {"N": str(int(datetime(2027, 1, 26, 12, 0, 0, tzinfo=UTC).timestamp()))},  # + 56 days
        "emails_named": {"BOOL": False},  # the erasure named no e-mail: any post of the phone is theirs
    }


def test_posts_received_before_or_at_the_erasure_are_erased_after_it_are_not(aws):
    dynamodb, _ = aws
    journeys = store(dynamodb)
    journeys.mark_forgotten([person_key(IVAN_PHONE, SECRET)], ERASURE)
    posts = [
        submission("before", ERASURE - timedelta(microseconds=1)),
        submission("equal", ERASURE),
        submission("after", ERASURE + timedelta(microseconds=1)),
        submission("other", ERASURE - timedelta(days=1), phone="+79035550101"),
    ]
    assert erased(journeys, SECRET, posts) == {"before": ERASURE, "equal": ERASURE}


def test_one_of_two_contacts_erased_is_enough_and_the_latest_mark_counts(aws):
    dynamodb, _ = aws
    journeys = store(dynamodb)
    journeys.mark_forgotten([person_key(IVAN_MAIL, SECRET)], ERASURE)
    later = ERASURE + timedelta(days=2)
    journeys.mark_forgotten([person_key(OLGA_MAIL, SECRET)], ERASURE - timedelta(days=3))
    posts = [
        submission("phone-and-erased-mail", ERASURE - timedelta(hours=1), email=IVAN_MAIL),
        submission("mail-only-kept", ERASURE - timedelta(hours=1), phone="+79035550101", email="anna@example.ru"),
        submission("olga-came-back", ERASURE - timedelta(days=1), phone=None, email=OLGA_MAIL),
    ]
    assert erased(journeys, SECRET, posts) == {"phone-and-erased-mail": ERASURE}
    journeys.mark_forgotten([person_key(OLGA_MAIL, SECRET)], later)  # forgotten again: the later time replaces
    assert erased(store(dynamodb, later), SECRET, posts[2:]) == {"olga-came-back": later}


def test_an_expired_mark_no_longer_counts(aws):
    dynamodb, _ = aws
    post = [submission("old", ERASURE - timedelta(hours=1))]
    store(dynamodb).mark_forgotten([person_key(IVAN_PHONE, SECRET)], ERASURE)
    last_day = ERASURE + timedelta(days=FORGET_MARK_DAYS) - timedelta(seconds=1)
    assert erased(store(dynamodb, last_day), SECRET, post) == {"old": ERASURE}
    # DynamoDB's TTL deletes within days of expires_at: the check does not wait for it
    assert erased(store(dynamodb, ERASURE + timedelta(days=FORGET_MARK_DAYS)), SECRET, post) == {}


def test_the_mark_outlives_two_rounds_of_the_writes_queue_and_its_dlq():
    template = (Path(__file__).parents[2] / "template.yaml").read_text()
    retention = {}
    for name in ("WritesQueue", "WritesDeadLetterQueue"):
        block = re.search(rf"\n  {name}:\n(.*?)\n  \w", template, re.S)
        assert block, name
        retention[name] = int(re.search(r"MessageRetentionPeriod: (\d+)", block.group(1)).group(1))
    assert 2 * (retention["WritesQueue"] + retention["WritesDeadLetterQueue"]) <= FORGET_MARK_DAYS * 86400


def test_the_writer_drops_erased_posts_and_their_raw_copies_with_one_read_for_the_batch(aws, monkeypatch):
    dynamodb, s3 = aws
    monkeypatch.setenv("DATA_BUCKET", "data")
    reset_settings_cache()
    journeys = store(dynamodb)
    journeys.mark_forgotten([person_key(IVAN_PHONE, SECRET)], ERASURE)
    posts = {f"m{index}": submission(f"s{index}", ERASURE - timedelta(minutes=index)) for index in range(5)}
    posts |= {f"n{index}": submission(f"t{index}", ERASURE + timedelta(minutes=1 + index)) for index in range(5)}
    posts = {key: replace(value, raw_key=f"raw/forms/{key}.json") for key, value in posts.items()}
    for key in ("m0", "n0"):
        s3.put_object(Bucket="data", Key=f"raw/forms/{key}.json", Body=b"{}")
        s3.put_object(Bucket="data", Key=f"raw/forms/{key}.json", Body=b"{ }")  # two versions
    calls = []
    dynamodb.meta.events.register("before-call.dynamodb.BatchGetItem", lambda **kwargs: calls.append(1))
    outcomes: dict[str, Outcome] = {}
    try:
        drop_erased(journeys, SECRET, posts, outcomes)
    finally:
        reset_settings_cache()
    assert len(calls) == 1
    assert sorted(posts) == [f"n{index}" for index in range(5)]  # written normally: a new consent
    assert {key: (o.ok, o.action) for key, o in outcomes.items()} == {f"m{i}": (True, "erased") for i in range(5)}
    assert "Versions" not in s3.list_object_versions(Bucket="data", Prefix="raw/forms/m0.json")
    assert len(s3.list_object_versions(Bucket="data", Prefix="raw/forms/n0.json")["Versions"]) == 2


def test_if_the_marks_cannot_be_read_the_batch_waits(aws):
    dynamodb, _ = aws
    posts = {"m0": submission("s0", ERASURE)}
    outcomes: dict[str, Outcome] = {}
    drop_erased(JourneyStore("no-such-table", client=dynamodb), SECRET, posts, outcomes)
    assert posts == {} and outcomes["m0"].action == "failed" and not outcomes["m0"].ok


def test_forget_dates_the_erasure_by_dynamodbs_clock_when_this_machines_lags(aws, monkeypatch):
    # The operator's laptop runs five minutes behind AWS: a post the capture function received a minute ago would
    # seem to follow the erasure and be written. The mark takes DynamoDB's time (its Date header).
    from throughline.privacy import forget

    dynamodb, s3 = aws
    aws_now = datetime(2026, 12, 1, 12, 0, 7, tzinfo=UTC)

    def dated(response_dict, **kwargs):
        response_dict["headers"]["date"] = "Tue, 01 Dec 2026 12:00:07 GMT"

    dynamodb.meta.events.register("before-parse.dynamodb.Query", dated)
    lagging = aws_now - timedelta(minutes=5)
    monkeypatch.setattr(forget, "datetime", type("Lagging", (datetime,), {"now": staticmethod(lambda tz: lagging)}))
    result = forget.forget_person(store(dynamodb), s3, "data", SECRET, phones=[IVAN_PHONE])
    assert result.erased_at == "2026-12-01T12:00:08.000000+00:00"  # the header's second, rounded up
    post = [submission("a-minute-ago", aws_now - timedelta(minutes=1))]
    assert erased(store(dynamodb, aws_now), SECRET, post) == {"a-minute-ago": aws_now + timedelta(seconds=1)}


def test_a_colleague_sharing_the_erased_persons_office_phone_keeps_their_lead(aws):
    # Ivan is erased by his phone and e-mail; the phone is the office's switchboard. Olga's post from the same office
    # (the switchboard and her own e-mail), received before the erasure and still queued, is her lead, not Ivan's:
    # forget named Ivan's e-mail, and hers is another. A post with the phone alone cannot be told apart: dropped.
    from throughline.privacy import forget

    dynamodb, s3 = aws
    moment = ERASURE
    forget.forget_person(store(dynamodb), s3, "data", SECRET, phones=[IVAN_PHONE], emails=[IVAN_MAIL], now=moment)
    before = ERASURE - timedelta(minutes=1)
    posts = [
        submission("olga", before, email=OLGA_MAIL),
        submission("phone-only", before),
        submission("ivan", before, email=IVAN_MAIL),
        submission("ivan-mail-only", before, phone=None, email=IVAN_MAIL),
        submission("ivan-new-phone", before, phone="+79035550101", email=IVAN_MAIL),
    ]
    assert erased(store(dynamodb), SECRET, posts) == {
        "phone-only": ERASURE,
        "ivan": ERASURE,
        "ivan-mail-only": ERASURE,
        "ivan-new-phone": ERASURE,
    }


def test_erased_by_the_phone_alone_every_post_of_that_phone_before_it_goes(aws):
    # No e-mail named: forget erased whoever gave the phone (its records are gone from the journey store), and the
    # writer cannot tell a colleague's post from the person's: it is dropped with the rest.
    from throughline.privacy import forget

    dynamodb, s3 = aws
    forget.forget_person(store(dynamodb), s3, "data", SECRET, phones=[IVAN_PHONE], now=ERASURE)
    posts = [submission("olga", ERASURE - timedelta(minutes=1), email=OLGA_MAIL)]
    assert erased(store(dynamodb), SECRET, posts) == {"olga": ERASURE}


def _forget_at_aws_time(aws, monkeypatch, laptop: datetime, header: str):
    from throughline.privacy import forget

    dynamodb, s3 = aws

    def dated(response_dict, **kwargs):
        response_dict["headers"]["date"] = header

    dynamodb.meta.events.register("before-parse.dynamodb.Query", dated)
    monkeypatch.setattr(forget, "datetime", type("Skewed", (datetime,), {"now": staticmethod(lambda tz: laptop)}))
    return forget.forget_person(store(dynamodb), s3, "data", SECRET, phones=[IVAN_PHONE])


def test_an_operators_clock_running_ahead_does_not_drop_the_persons_new_posts(aws, monkeypatch):
    # The laptop runs two hours ahead of AWS. Ivan, erased at 12:00:07 (AWS), posts again at 12:10 (capture's clock):
    # a new consent, his lead. Dated by the laptop, the mark would drop every post of his for two hours.
    aws_now = datetime(2026, 12, 1, 12, 0, 7, 900000, tzinfo=UTC)
    _forget_at_aws_time(aws, monkeypatch, aws_now + timedelta(hours=2), "Tue, 01 Dec 2026 12:00:07 GMT")
    post = [submission("came-back", aws_now + timedelta(minutes=10))]
    assert erased(store(aws[0], aws_now + timedelta(hours=1)), SECRET, post) == {}


def test_a_post_received_within_the_date_headers_second_before_the_erasure_is_dropped(aws, monkeypatch):
    # The Date header gives whole seconds (12:00:07 for 12:00:07.900): a post capture received at 12:00:07.400,
    # before the erasure, must not seem to follow it.
    aws_now = datetime(2026, 12, 1, 12, 0, 7, 900000, tzinfo=UTC)
    result = _forget_at_aws_time(aws, monkeypatch, aws_now - timedelta(minutes=5), "Tue, 01 Dec 2026 12:00:07 GMT")
    post = [submission("just-before", aws_now - timedelta(milliseconds=500))]
    assert erased(store(aws[0], aws_now), SECRET, post) == {"just-before": datetime.fromisoformat(result.erased_at)}


def test_a_clock_in_step_with_aws_dates_the_erasure_to_the_microsecond(aws, monkeypatch):
    # In step with the header's second: this machine's finer time, so a post a moment after the erasure is a lead.
    laptop = datetime(2026, 12, 1, 12, 0, 7, 250000, tzinfo=UTC)
    result = _forget_at_aws_time(aws, monkeypatch, laptop, "Tue, 01 Dec 2026 12:00:07 GMT")
    assert result.erased_at == "2026-12-01T12:00:07.250000+00:00"
    posts = [
        submission("before", laptop - timedelta(milliseconds=1)),
        submission("after", laptop + timedelta(milliseconds=1)),
    ]
    assert erased(store(aws[0], laptop), SECRET, posts) == {"before": laptop}
