"""Google Customer Match: normalization, hashing and the exact Data Manager request bodies, byte for byte."""

from __future__ import annotations

import json

import pytest

from throughline.adapters.google_oauth import GoogleOAuth
from throughline.segments.audiences import google
from throughline.segments.audiences.google import GoogleAudienceError, GoogleAudienceSettings, sync
from throughline.segments.audiences.members import AudienceSync, Member

# Hashes computed outside Python with coreutils: printf '%s' '<normalized value>' | sha256sum
IVAN_EMAIL = "427920025988c8ebe0e27edfb22ca56413a397f1824d8491b55c87b2e9695093"  # ivanpetrov@gmail.com
IVAN_PHONE = "694e8de862e4f3198b67f7a4aa9f4dfb123c5b78b0a72460ce882c405b111e63"  # +79123456789
ANNA_EMAIL = "91187156856ba7016515c815ae598457b7316765e80e317bd4145aa188b9572f"  # anna@example.ru
OFFICE_PHONE = "39cae6bb4e77fcd8ca8d244a9d724a620157b2ff34dadcc6565586f3a6005fbc"  # +74951234567
OLEG_EMAIL = "0a77490351a2ed5804d92151a97e292f25915b2a6cac702fd78b56733cf9fde2"  # oleg@newshop.ru

MEMBERS = [
    # the same mobile written two ways (one identifier), a Gmail address with dots, capitals and spaces
    Member(101, ("8 (912) 345-67-89", "+7 912 345 67 89"), (" Ivan.Petrov@GMail.com ",)),
    # an invalid phone is dropped; the same e-mail twice is sent once
    Member(102, ("12345",), ("Anna@Example.RU", "anna@example.ru")),
    Member(103, ("+7 (495) 123-45-67",), ()),
    # nothing usable: skipped
    Member(104, ("не указан",), ("not-an-email",)),
]

EXPECTED_INGEST = (
    '{"destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1234567890"},'
    '"productDestinationId":"777"}],'
    '"audienceMembers":['
    '{"userData":{"userIdentifiers":[{"emailAddress":"' + IVAN_EMAIL + '"},{"phoneNumber":"' + IVAN_PHONE + '"}]}},'
    '{"userData":{"userIdentifiers":[{"emailAddress":"' + ANNA_EMAIL + '"}]}},'
    '{"userData":{"userIdentifiers":[{"phoneNumber":"' + OFFICE_PHONE + '"}]}}],'
    '"validateOnly":false,"encoding":"HEX",'
    '"termsOfService":{"customerMatchTermsOfServiceStatus":"ACCEPTED"}}'
)


class Answer:
    def __init__(self, status: int, body: dict):
        self.status_code = status
        self._body = body
        self.headers: dict[str, str] = {}

    def json(self):
        return self._body


class Recorder:
    """A session that issues a token and records every Data Manager body as the bytes sent."""

    def __init__(self, answers: list[Answer] | None = None):
        self.sent: list[tuple[str, str]] = []
        self.answers = list(answers or [])

    def post(self, url, data=None, headers=None, timeout=None, json=None):
        if url.endswith("/token"):
            return Answer(200, {"access_token": "tok", "expires_in": 3599})
        assert headers["Authorization"] == "Bearer tok"
        self.sent.append((url.rsplit("/", 1)[1], data))
        return self.answers.pop(0) if self.answers else Answer(200, {"requestId": f"r{len(self.sent)}"})


SETTINGS = GoogleAudienceSettings(client_id="id", client_secret="secret", refresh_token="refresh",
                                  token_url="https://oauth/token", api_url="https://dm/v1/")  # fmt: skip


def run(members, previous=None, settings=SETTINGS, session=None, list_id="customers/123-456-7890/userLists/777"):
    session = session or Recorder()
    result, state = sync("vip", members, list_id=list_id, settings=settings, session=session, previous=previous)
    return result, state, session


def test_first_night_ingest_body_is_byte_exact():
    result, state, session = run(MEMBERS)
    assert session.sent == [("audienceMembers:ingest", EXPECTED_INGEST)]
    assert result == AudienceSync(platform="google", audience="vip", list_id="customers/1234567890/userLists/777",
                                  members=3, identifiers=4, calls=1, removed=0, skipped=1)  # fmt: skip
    assert state == {"version": 1, "list_id": "customers/1234567890/userLists/777",
                     "emailAddress": sorted([IVAN_EMAIL, ANNA_EMAIL]),
                     "phoneNumber": sorted([IVAN_PHONE, OFFICE_PHONE])}  # fmt: skip
    assert "Ivan" not in json.dumps(state) and "9123456789" not in json.dumps(state)


def test_next_night_removes_who_left_and_ingests_the_rest_byte_exact():
    _, state, _ = run(MEMBERS)
    tonight = [MEMBERS[0], MEMBERS[2], Member(105, (), ("Oleg@NewShop.ru",))]  # Anna left, Oleg came
    result, new_state, session = run(tonight, previous=state)
    remove = (
        '{"destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1234567890"},'
        '"productDestinationId":"777"}],'
        '"audienceMembers":[{"userData":{"userIdentifiers":[{"emailAddress":"' + ANNA_EMAIL + '"}]}}],'
        '"validateOnly":false,"encoding":"HEX"}'
    )
    assert session.sent[0] == ("audienceMembers:remove", remove)
    ingest = json.loads(session.sent[1][1])
    assert session.sent[1][0] == "audienceMembers:ingest"
    assert ingest["audienceMembers"][2] == {"userData": {"userIdentifiers": [{"emailAddress": OLEG_EMAIL}]}}
    assert (result.removed, result.members, result.calls) == (1, 3, 2)
    assert new_state["emailAddress"] == sorted([IVAN_EMAIL, OLEG_EMAIL])


def test_consent_and_manager_login_account():
    settings = GoogleAudienceSettings(client_id="id", client_secret="s", refresh_token="r", token_url="https://o/token",
                                      api_url="https://dm/v1", login_customer_id="999-000-1111",
                                      consent="granted")  # fmt: skip
    _, _, session = run(MEMBERS[2:3], settings=settings)
    body = session.sent[0][1]
    assert body == (
        '{"destinations":[{"operatingAccount":{"accountType":"GOOGLE_ADS","accountId":"1234567890"},'
        '"loginAccount":{"accountType":"GOOGLE_ADS","accountId":"9990001111"},"productDestinationId":"777"}],'
        '"audienceMembers":[{"userData":{"userIdentifiers":[{"phoneNumber":"' + OFFICE_PHONE + '"}]}}],'
        '"consent":{"adUserData":"CONSENT_GRANTED","adPersonalization":"CONSENT_GRANTED"},'
        '"validateOnly":false,"encoding":"HEX","termsOfService":{"customerMatchTermsOfServiceStatus":"ACCEPTED"}}'
    )


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (" Ivan.Petrov@GMail.com ", "ivanpetrov@gmail.com"),
        ("j.doe@GoogleMail.com", "jdoe@googlemail.com"),
        ("j.doe+shop@gmail.com", "jdoe+shop@gmail.com"),  # Data Manager's guide removes dots only, not +tags
        ("ivan.petrov@yandex.ru", "ivan.petrov@yandex.ru"),  # dots kept outside Gmail
        ("iv an@mail.ru", "ivan@mail.ru"),  # intermediate whitespace removed
        ("a@@b.ru", None),
        ("nobody", None),
        ("x@localhost", None),
    ],
)
def test_email_normalization(raw, normalized):
    assert google.normalize_email(raw) == normalized


def test_at_most_ten_identifiers_per_member():
    member = Member(1, tuple(f"+7912000000{n}" for n in range(8)), tuple(f"u{n}@x.ru" for n in range(5)))
    found = google.identifiers(member)
    assert len(found) == 10 and all("emailAddress" in entry for entry in found[:5])


def test_many_members_are_split_into_requests_of_ten_thousand():
    members = [Member(n, (f"+7912{n:07d}",), ()) for n in range(10_001)]
    result, _, session = run(members)
    sizes = [len(json.loads(body)["audienceMembers"]) for _, body in session.sent]
    assert sizes == [10_000, 1] and result.calls == 2


@pytest.mark.parametrize("list_id", [None, "", "777", "customers/abc/userLists/1", "userLists/777"])
def test_list_id_is_required_in_its_documented_form(list_id):
    with pytest.raises(ValueError, match="list_id"):
        run(MEMBERS, list_id=list_id)


def test_bare_list_id_with_one_configured_customer():
    settings = GoogleAudienceSettings(client_id="i", client_secret="s", refresh_token="r", token_url="https://o/token",
                                      customer_ids=("123-456-7890",))  # fmt: skip
    result, _, _ = run(MEMBERS, settings=settings, list_id="777")
    assert result.list_id == "customers/1234567890/userLists/777"


def test_state_of_another_list_removes_nothing():
    _, state, _ = run(MEMBERS)
    result, _, session = run(MEMBERS[:1], previous=state, list_id="customers/1234567890/userLists/778")
    assert result.removed == 0 and [verb for verb, _ in session.sent] == ["audienceMembers:ingest"]


def test_a_refused_request_raises_without_values():
    refused = Answer(400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "bad", "details": [
        {"@type": "type.googleapis.com/google.rpc.BadRequest",
         "fieldViolations": [{"field": "audienceMembers[0].userData", "reason": "INVALID_HASH"}]}]}})  # fmt: skip
    with pytest.raises(GoogleAudienceError) as raised:
        run(MEMBERS, session=Recorder([refused]))
    text = str(raised.value)
    assert "INVALID_ARGUMENT" in text and "audienceMembers[0].userData INVALID_HASH" in text
    assert IVAN_EMAIL not in text and "secret" not in text


def test_validate_only_keeps_the_previous_state():
    _, state, _ = run(MEMBERS)
    settings = GoogleAudienceSettings(client_id="i", client_secret="s", refresh_token="r", token_url="https://o/token",
                                      validate_only=True)  # fmt: skip
    _, kept, session = run(MEMBERS[:1], previous=state, settings=settings)
    assert kept == state and all(json.loads(body)["validateOnly"] is True for _, body in session.sent)


def test_repr_hides_credentials():
    assert "secret" not in repr(SETTINGS) and "refresh" not in repr(SETTINGS)
    assert "secret" not in repr(GoogleOAuth(client_id="i", client_secret="secret", refresh_token="refresh",
                                            token_url="https://o/token"))  # fmt: skip


def test_settings_from_the_stack_configuration():
    from throughline.config import ConfigError, load_settings

    loaded = load_settings({"GOOGLE_ADS_CLIENT_ID": "i", "GOOGLE_ADS_CLIENT_SECRET": "s",
                            "GOOGLE_ADS_REFRESH_TOKEN": "r", "GOOGLE_ADS_CUSTOMER_IDS": "123-456-7890",
                            "GOOGLE_CUSTOMER_MATCH_CONSENT": " Granted "})  # fmt: skip
    found = GoogleAudienceSettings.from_settings(loaded)
    assert (found.consent, found.customer_ids, found.api_url) == (
        "granted",
        ("123-456-7890",),
        "https://datamanager.googleapis.com/v1/",
    )
    assert GoogleAudienceSettings.from_settings(load_settings({})).consent is None
    with pytest.raises(ConfigError, match="GOOGLE_CUSTOMER_MATCH_CONSENT"):
        load_settings({"GOOGLE_CUSTOMER_MATCH_CONSENT": "yes"})


def test_no_request_starts_that_cannot_finish_before_the_invocation_ends():
    """Found by the hostile review: the export gave Google no deadline, so a run could be killed mid-upload with no
    state stored — members ingested that night could never be removed. Now the request that might not finish is not
    started, and the error's state keeps tonight's hashes removable."""

    class Deadline:
        def __init__(self, session: Recorder):
            self.session = session

        def seconds_left(self) -> float:
            return 600.0 if not self.session.sent else 100.0  # one request made: too little time for another

    members = [Member(n, (f"+7912{n:07d}",), ()) for n in range(10_001)]
    session = Recorder()
    with pytest.raises(GoogleAudienceError, match="too little time left") as raised:
        sync("vip", members, list_id="customers/1234567890/userLists/777", settings=SETTINGS, session=session,
             deadline=Deadline(session))  # fmt: skip
    assert [method for method, _ in session.sent] == ["audienceMembers:ingest"]
    assert raised.value.state is not None and len(raised.value.state["phoneNumber"]) == 10_001
