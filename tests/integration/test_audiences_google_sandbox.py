"""Google Customer Match against the Data Manager sandbox: two nights of a segment, hostile requests, an outage."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from local.ad_sandboxes.data_manager import DataManagerSandbox
from local.ad_sandboxes.google_ads import GoogleAdsSandbox
from throughline.adapters.google_oauth import GoogleOAuth
from throughline.segments.audiences.google import GoogleAudienceError, GoogleAudienceSettings, sha256_hex, sync
from throughline.segments.audiences.members import Member

LIST = "customers/1234567890/userLists/777"
IVAN = Member(101, ("8 (912) 345-67-89", "+7 912 345 67 89"), (" Ivan.Petrov@GMail.com ",))
ANNA = Member(102, ("12345",), ("Anna@Example.RU",))
OFFICE = Member(103, ("+7 (495) 123-45-67",), ())
OLEG = Member(105, (), ("Oleg@NewShop.ru",))


@pytest.fixture
def world():
    google = GoogleAdsSandbox().start()
    manager = DataManagerSandbox(google, user_lists={"1234567890": {"777"}}).start()
    try:
        yield google, manager
    finally:
        manager.stop()
        google.stop()


def settings(google: GoogleAdsSandbox, manager: DataManagerSandbox, **more) -> GoogleAudienceSettings:
    return GoogleAudienceSettings(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                                  refresh_token="sandbox-refresh-token", token_url=google.token_url,
                                  api_url=manager.api_url, **more)  # fmt: skip


def every_log(caplog, capsys) -> str:
    """Every record with its extra fields (Powertools' JSON goes to the stdout it was built with), and stdout."""
    return "\n".join(str(record.__dict__) for record in caplog.records) + capsys.readouterr().out


def held(manager: DataManagerSandbox) -> set[tuple[str, str]]:
    return manager.list_members.get(("1234567890", "777"), set())


def test_two_nights_add_then_replace(world, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    google, manager = world
    first, state = sync("vip", [IVAN, ANNA, OFFICE], list_id=LIST, settings=settings(google, manager))
    assert held(manager) == {("emailAddress", sha256_hex("ivanpetrov@gmail.com")),
                             ("phoneNumber", sha256_hex("+79123456789")),
                             ("emailAddress", sha256_hex("anna@example.ru")),
                             ("phoneNumber", sha256_hex("+74951234567"))}  # fmt: skip
    assert (first.members, first.identifiers, first.removed, first.calls) == (3, 4, 0, 1)

    second, state = sync(
        "vip",
        [IVAN, OFFICE, OLEG],
        list_id=LIST,
        settings=settings(google, manager),
        previous=json.loads(json.dumps(state)),
    )  # fmt: skip  (as stored and read back)
    assert ("emailAddress", sha256_hex("anna@example.ru")) not in held(manager)
    assert ("emailAddress", sha256_hex("oleg@newshop.ru")) in held(manager)
    assert len(held(manager)) == 4 and (second.removed, second.members, second.calls) == (1, 3, 2)
    assert [verb for verb, _ in manager.audience_requests] == ["ingest", "remove", "ingest"]
    logs = every_log(caplog, capsys)
    assert "'msg': 'google audience sent'" in logs and "'removed': 1" in logs
    for raw in (
        "Ivan",
        "ivanpetrov",
        "9123456789",
        "345-67-89",
        "Anna",
        "Oleg",
        "sandbox-client-secret",
        "sandbox-refresh-token",
    ):
        assert raw not in logs


def test_outage_is_a_clear_failure_and_keeps_nothing(world, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    google, manager = world
    manager.faults = [503] * 10
    sleeps: list[float] = []

    session = requests.Session()
    oauth = GoogleOAuth(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                        refresh_token="sandbox-refresh-token", token_url=google.token_url, session=session,
                        sleep=sleeps.append)  # fmt: skip
    with pytest.raises(GoogleAudienceError, match=r"Google Customer Match 'vip'.*UNAVAILABLE") as raised:
        sync("vip", [IVAN], list_id=LIST, settings=settings(google, manager), session=session, oauth=oauth)
    assert len(sleeps) == 4 and held(manager) == set()  # five attempts, then the failure
    logs = every_log(caplog, capsys)
    assert "'msg': 'google audience failed'" in logs and "UNAVAILABLE" in logs
    assert "9123456789" not in str(raised.value) and "ivan" not in logs.lower() and "9123456789" not in logs


def test_refused_oauth_is_a_clear_failure(world):
    google, manager = world
    bad = GoogleAudienceSettings(
        client_id="sandbox-client-id",
        client_secret="sandbox-client-secret",
        refresh_token="1//bad-refresh-xyz",
        token_url=google.token_url,
        api_url=manager.api_url,
    )
    with pytest.raises(GoogleAudienceError, match="invalid_grant") as raised:
        sync("vip", [IVAN], list_id=LIST, settings=bad)
    assert "bad-refresh-xyz" not in str(raised.value) and "sandbox-client-secret" not in str(raised.value)


def test_unknown_list_is_refused(world):
    google, manager = world
    with pytest.raises(GoogleAudienceError, match="productDestinationId INVALID_USER_LIST_ID"):
        sync("vip", [IVAN], list_id="customers/1234567890/userLists/778", settings=settings(google, manager))


def test_validate_only_stores_nothing(world):
    google, manager = world
    _, state = sync("vip", [IVAN], list_id=LIST, settings=settings(google, manager, validate_only=True))
    assert held(manager) == set() and state["emailAddress"] == [] and len(manager.audience_requests) == 1


# -- the sandbox is as strict as the documentation ------------------------------------------------------------------


def post(google, manager, verb: str, body: dict, token: str | None = None) -> requests.Response:
    if token is None:
        token = requests.post(google.token_url, data={"grant_type": "refresh_token", "client_id": "sandbox-client-id",
                              "client_secret": "sandbox-client-secret",
                              "refresh_token": "sandbox-refresh-token"}).json()["access_token"]  # fmt: skip
    return requests.post(f"{manager.api_url}audienceMembers:{verb}", json=body,
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)  # fmt: skip


def good(members: list | None = None) -> dict:
    return {
        "destinations": [
            {
                "operatingAccount": {"accountType": "GOOGLE_ADS", "accountId": "1234567890"},
                "productDestinationId": "777",
            }
        ],
        "audienceMembers": members or [{"userData": {"userIdentifiers": [{"emailAddress": sha256_hex("a@b.ru")}]}}],
        "encoding": "HEX",
        "termsOfService": {"customerMatchTermsOfServiceStatus": "ACCEPTED"},
    }


def test_sandbox_requires_a_bearer(world):
    google, manager = world
    assert post(google, manager, "ingest", good(), token="").status_code == 401
    assert post(google, manager, "ingest", good(), token="forged").json()["error"]["status"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("change", "violation"),
    [
        (lambda b: b.pop("encoding"), "encoding"),
        (lambda b: b.update(encoding="BASE64"), "audienceMembers[0].userData.userIdentifiers[0]"),
        (lambda b: b.pop("termsOfService"), "termsOfService.customerMatchTermsOfServiceStatus"),
        (lambda b: b["termsOfService"].update(customerMatchTermsOfServiceStatus="REJECTED"), "termsOfService"),
        (lambda b: b.update(consent={"adUserData": "YES"}), "consent.adUserData"),
        (lambda b: b["audienceMembers"][0]["userData"]["userIdentifiers"].append({"emailAddress": "a@b.ru"}),
         "audienceMembers[0].userData.userIdentifiers[1]"),
        (lambda b: b["audienceMembers"][0]["userData"]["userIdentifiers"].extend(
            [{"phoneNumber": sha256_hex(f"+7912000000{n}")} for n in range(10)]),
         "audienceMembers[0].userData.userIdentifiers"),
        (lambda b: b.update(audienceMembers=[]), "audienceMembers"),
    ],
)  # fmt: skip
def test_sandbox_refuses_what_the_docs_refuse(world, change, violation):
    google, manager = world
    body = good()
    change(body)
    answer = post(google, manager, "ingest", body)
    assert answer.status_code == 400, answer.text
    fields = [v["field"] for d in answer.json()["error"]["details"] for v in d["fieldViolations"]]
    assert any(field.startswith(violation) for field in fields), fields
    assert held(manager) == set()


def test_sandbox_limits_and_remove_shape(world):
    google, manager = world
    member = {"userData": {"userIdentifiers": [{"emailAddress": sha256_hex("a@b.ru")}]}}
    too_many = post(google, manager, "ingest", good([member] * 10_001))
    assert too_many.status_code == 400 and "TOO_MANY_AUDIENCE_MEMBERS" in too_many.text
    removal = good()
    assert post(google, manager, "remove", removal).status_code == 400  # termsOfService is no field of remove
    removal.pop("termsOfService")
    assert post(google, manager, "remove", removal).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"destinations": ["x"], "audienceMembers": [1], "encoding": "HEX"},
        {**good(), "termsOfService": "ACCEPTED"},
        {**good(), "audienceMembers": [{"userData": ["a"]}]},
        {**good(), "destinations": [{"operatingAccount": "1234567890", "productDestinationId": "777"}]},
        {**good(), "consent": "granted"},
    ],
)
def test_sandbox_answers_hostile_bodies_with_400(world, body):
    google, manager = world
    assert post(google, manager, "ingest", body).status_code == 400


def test_a_failure_after_a_landed_batch_remembers_tonight_too(world):
    google, manager = world
    first = [Member(n, (f"+7912{n:07d}",), ()) for n in range(10_001)]  # two ingest requests
    with pytest.raises(GoogleAudienceError) as raised:

        class Fail:
            def __init__(self):
                self.real = requests.Session()
                self.posts = 0

            def post(self, url, **kw):
                if url.endswith("audienceMembers:ingest"):
                    self.posts += 1
                    if self.posts >= 2:  # every attempt after the first batch
                        raise requests.ConnectionError("down")
                return self.real.post(url, **kw)

        session = Fail()
        oauth = GoogleOAuth(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                            refresh_token="sandbox-refresh-token", token_url=google.token_url, session=session,
                            sleep=lambda s: None)  # fmt: skip
        sync("vip", first, list_id=LIST, settings=settings(google, manager), session=session, oauth=oauth)
    assert len(held(manager)) == 10_000  # the first batch landed
    state = raised.value.state
    assert state is not None and len(state["phoneNumber"]) == 10_001
    # the next night everyone has left: all that may be in the list is removed
    result, _ = sync("vip", [IVAN], list_id=LIST, settings=settings(google, manager), previous=state)
    assert result.removed == 10_001 and {kind for kind, _ in held(manager)} == {"emailAddress", "phoneNumber"}
    assert len(held(manager)) == 2


def test_nothing_sent_keeps_the_previous_state(world):
    google, manager = world
    bad = GoogleAudienceSettings(client_id="x", client_secret="y", refresh_token="z", token_url=google.token_url,
                                 api_url=manager.api_url)  # fmt: skip
    with pytest.raises(GoogleAudienceError) as raised:
        sync("vip", [IVAN], list_id=LIST, settings=bad)
    assert raised.value.state is None


def test_manager_account_is_sent_as_login_account():
    google = GoogleAdsSandbox().start()
    manager = DataManagerSandbox(google, user_lists={"1234567890": {"777"}}, managed_by={"1234567890": "9990001111"})
    manager.start()
    try:
        with pytest.raises(GoogleAudienceError, match=r"PERMISSION_DENIED.*GOOGLE_ADS_LOGIN_CUSTOMER_ID"):
            sync("vip", [IVAN], list_id=LIST, settings=settings(google, manager))
        result, _ = sync("vip", [IVAN], list_id=LIST,
                         settings=settings(google, manager, login_customer_id="999-000-1111"))  # fmt: skip
        assert result.members == 1 and len(held(manager)) == 2
    finally:
        manager.stop()
        google.stop()
