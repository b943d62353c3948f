"""Ad audiences against the sandboxes: the Bitrix24 portal (contacts' phones and e-mails), Yandex Audiences and VK
Ads remarketing lists. A new segment is created, the next night replaced; nothing is sent when none is configured;
a platform down does not stop the other; no raw phone or e-mail reaches the logs or the bucket."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from local.ad_sandboxes import VkAdsSandbox, YandexAudienceSandbox
from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.server import seed_history
from tests.integration.test_segments import MemoryObjects
from throughline.bitrix24.client import Bitrix24Client
from throughline.report.crm import SnapshotOptions
from throughline.segments.audiences.export import STATE_KEY, VK_STATE_PREFIX, bound_adapters
from throughline.segments.audiences.files import sha256
from throughline.segments.job import SegmentOptions, build_segments
from throughline.segments.rules import CONFIG_KEY, DEFAULT_RULES_YAML

pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")
MSK = ZoneInfo("Europe/Moscow")
NIGHT = datetime(2026, 12, 6, 5, 30, tzinfo=MSK)
OPTIONS = SegmentOptions(snapshot=SnapshotOptions(stage_history=False, person_key_secret="test-secret"),
                         write_back=False)  # fmt: skip
CONTACTS = 2_050  # VK takes lists of at least 2 000 unique items
AUDIENCES = """audiences:
  - {name: "Новички Я", platform: yandex, segments: [NEWCOMER]}
  - {name: "Новички VK", platform: vk, segments: [NEWCOMER]}
"""


def phone(n: int) -> str:
    return f"8 (916) {n // 10000:03d}-{n // 100 % 100:02d}-{n % 100:02d}"


def seed(sandbox: Sandbox) -> None:
    """Newcomers (created 10 days before the night, no deal): messy phones, upper-case e-mails with spaces; every
    100th contact's phone is invalid."""
    seed_history(sandbox, "contact", [
        {"NAME": f"Контакт {n}", "DATE_CREATE": "2026-11-26T10:00:00+03:00",
         "PHONE": [{"VALUE": "12345" if n % 100 == 0 else phone(n), "VALUE_TYPE": "WORK"}],
         "EMAIL": [{"VALUE": f"  Client.{n}@Example.RU ", "VALUE_TYPE": "WORK"}]} for n in range(1, CONTACTS + 1)
    ])  # fmt: skip


@pytest.fixture()
def world():
    with Sandbox(app_token="tok", seed=22, rate=50, burst=200) as bitrix, YandexAudienceSandbox() as yandex, \
            VkAdsSandbox() as vk:  # fmt: skip
        seed(bitrix)
        objects = MemoryObjects()
        settings = SimpleNamespace(yandex_audience_token=yandex.token, yandex_audience_api_url=yandex.api_url,
                                   vk_ads_client_id=vk.client[0], vk_ads_client_secret=vk.client[1],
                                   vk_ads_api_url=vk.api_url)  # fmt: skip
        client = Bitrix24Client(bitrix.webhook_url)
        yield SimpleNamespace(bitrix=bitrix, yandex=yandex, vk=vk, objects=objects, settings=settings, client=client)


def night(world, when: datetime, log: list[str]) -> dict:
    return build_segments(world.client, world.objects, options=OPTIONS, now=lambda: when, progress=log.append,
                          adapters=bound_adapters(world.settings, world.objects))  # fmt: skip


def raw_values() -> list[bytes]:
    """Every raw identifier as typed and as normalized (none may leave the process unhashed)."""
    values = []
    for n in (1, 7, 1234, CONTACTS):
        digits = f"7916{n // 10000:03d}{n // 100 % 100:02d}{n % 100:02d}"
        values += [phone(n).encode(), digits.encode(), f"client.{n}@example.ru".encode(),
                   f"Client.{n}@Example.RU".encode()]  # fmt: skip
    return values


def test_nothing_is_sent_when_no_audience_is_configured(world) -> None:
    log: list[str] = []
    summary = night(world, NIGHT, log)
    assert summary["status"] == "done" and "audiences" not in summary
    assert world.yandex.requests == [] and world.vk.requests == []
    assert world.objects.get(STATE_KEY) is None


def test_a_new_segment_then_the_next_night_replaced(world) -> None:
    world.objects.put(CONFIG_KEY, DEFAULT_RULES_YAML.replace("audiences: []", AUDIENCES).encode())
    log: list[str] = []
    summary = night(world, NIGHT, log)
    audiences = summary["audiences"]
    assert audiences["status"] == "done" and audiences["failed"] == {}
    yandex = audiences["sent"]["Новички Я"]
    # 2 050 newcomers; the 20 with an invalid phone keep their e-mail: nobody is skipped.
    assert (yandex["members"], yandex["identifiers"], yandex["calls"], yandex["skipped"]) == (2050, 2030 + 2050, 2, 0)
    ((segment_id, segment),) = world.yandex.segments.items()
    assert str(segment_id) == yandex["list_id"]
    assert segment["name"] == "Новички Я" and segment["hashed"] is True and segment["status"] == "is_processed"
    assert len(segment["rows"]) == 2050
    # Contact 1: 8 (916) 000-00-01 → 79160000001; "  Client.1@Example.RU " → client.1@example.ru.
    assert {"phone": sha256("79160000001"), "email": sha256("client.1@example.ru")} in segment["rows"]
    assert {"phone": "", "email": sha256("client.100@example.ru")} in segment["rows"]
    vk = audiences["sent"]["Новички VK"]
    assert vk["calls"] == 2 and vk["identifiers"] == 2030 + 2050
    lists = world.vk.users_lists
    assert sorted((item["type"], len(item["items"])) for item in lists.values()) == [("email", 2050), ("phone", 2030)]
    assert vk["list_id"] == ",".join(f"{item['type']}:{list_id}" for list_id, item in lists.items())

    # The same night again: nothing sent, no REST call.
    requests_before = (len(world.yandex.requests), len(world.vk.requests))
    again = night(world, NIGHT + timedelta(minutes=15), log)
    assert again["rest_calls"] == 0 and (len(world.yandex.requests), len(world.vk.requests)) == requests_before

    # The next night: the Yandex segment's data replaced in place (one modify_data call); the VK lists keep their ids
    # (nothing changed among the newcomers: no upload at all).
    segment["rows"] = segment["rows"][:5]  # what replace must undo
    nxt = night(world, NIGHT + timedelta(days=1), log)["audiences"]
    assert nxt["status"] == "done"
    assert nxt["sent"]["Новички Я"]["list_id"] == str(segment_id) and nxt["sent"]["Новички Я"]["calls"] == 1
    assert list(world.yandex.segments) == [segment_id]
    assert len(world.yandex.uploads) == 2 and len(segment["rows"]) == 2050
    assert world.yandex.requests[-1] == ("POST", f"/v1/management/segment/{segment_id}/modify_data"
                                                 "?modification_type=replace")  # fmt: skip
    assert len(world.vk.users_lists) == 2 and nxt["sent"]["Новички VK"]["list_id"] == vk["list_id"]
    assert nxt["sent"]["Новички VK"]["calls"] == 0
    assert [key for key in world.objects.data if key.startswith(VK_STATE_PREFIX)] == [
        VK_STATE_PREFIX + "%D0%9D%D0%BE%D0%B2%D0%B8%D1%87%D0%BA%D0%B8%20VK.json"]  # fmt: skip
    state = json.loads(world.objects.get(STATE_KEY))
    assert state["lists"]["Новички Я"] == {"platform": "yandex", "list_id": str(segment_id)}

    # No raw phone or e-mail in the progress lines, the bucket or what the platforms received.
    stored = b"".join(world.objects.data.values()) + "\n".join(log).encode()
    received = b"".join(world.yandex.uploads) + json.dumps(world.vk.users_lists).encode()
    for value in raw_values():
        assert value not in stored and value not in received


def test_a_platform_down_does_not_stop_the_other(world) -> None:
    world.objects.put(CONFIG_KEY, DEFAULT_RULES_YAML.replace("audiences: []", AUDIENCES).encode())
    world.yandex.faults = [503]
    log: list[str] = []
    summary = night(world, NIGHT, log)["audiences"]
    assert summary["status"] == "unfinished"
    assert summary["failed"]["Новички Я"]["attempts"] == 1 and "HTTP 503" in summary["failed"]["Новички Я"]["error"]
    assert "Новички VK" in summary["sent"] and len(world.vk.users_lists) == 2
    assert any("«Новички Я» → yandex failed" in line for line in log)
    # The next run of the night retries only the failed one.
    retried = night(world, NIGHT + timedelta(minutes=15), log)["audiences"]
    assert retried["status"] == "done" and retried["failed"] == {}
    assert len(world.yandex.segments) == 1 and len(world.vk.users_lists) == 2


def test_a_refused_token_and_a_too_small_list_are_reported(world) -> None:
    world.objects.put(CONFIG_KEY, DEFAULT_RULES_YAML.replace("audiences: []", AUDIENCES.replace(
        "[NEWCOMER]}\n  - {name: \"Новички VK\"", "[VIP]}\n  - {name: \"Новички VK\"")).encode())  # fmt: skip
    world.settings.vk_ads_client_secret = "wrong"
    summary = night(world, NIGHT, []).get("audiences")
    assert "at least 100 records" in summary["failed"]["Новички Я"]["error"]  # no VIP customer: an empty file
    assert "invalid_client" in summary["failed"]["Новички VK"]["error"] or "401" in summary["failed"]["Новички VK"][
        "error"]  # fmt: skip
    assert world.yandex.segments == {} and world.vk.users_lists == {}


def test_google_customer_match_through_the_nightly_export(world) -> None:
    """The ``google`` platform registered in the export: two nights fill the Customer Match list as a full replace
    (the customer who left is removed), the hashes between nights are kept under segments/audiences/google/."""
    from local.ad_sandboxes import DataManagerSandbox, GoogleAdsSandbox
    from throughline.segments.audiences.export import GOOGLE_STATE_PREFIX

    google = GoogleAdsSandbox().start()
    manager = DataManagerSandbox(google, user_lists={"1234567890": {"777"}}).start()
    try:
        world.settings.__dict__.update(
            google_ads_client_id="sandbox-client-id", google_ads_client_secret="sandbox-client-secret",
            google_ads_refresh_token="sandbox-refresh-token", google_oauth_token_url=google.token_url,
            google_data_manager_api_url=manager.api_url, google_ads_login_customer_id=None,
            google_ads_customer_ids=["1234567890"], google_customer_match_consent=None,
            default_phone_region="RU")  # fmt: skip
        config = 'audiences:\n  - {name: "Новички G", platform: google, segments: [NEWCOMER], list_id: "777"}\n'
        world.objects.put(CONFIG_KEY, DEFAULT_RULES_YAML.replace("audiences: []", config).encode())
        log: list[str] = []
        first = night(world, NIGHT, log)["audiences"]
        assert first["status"] == "done" and first["failed"] == {}, first
        sent = first["sent"]["Новички G"]
        assert (sent["members"], sent["identifiers"], sent["skipped"]) == (2050, 2030 + 2050, 0)
        held = manager.list_members[("1234567890", "777")]
        assert ("phoneNumber", sha256("+79160000001")) in held
        assert ("emailAddress", sha256("client.1@example.ru")) in held
        (state_key,) = [key for key in world.objects.data if key.startswith(GOOGLE_STATE_PREFIX)]
        stored = world.objects.data[state_key]
        assert b"79160000001" not in stored and b"example.ru" not in stored

        # Contact 1 leaves the newcomers (a deal opened: Потенциальный): the next night removes its identifiers.
        world.client.call("crm.deal.add", {"fields": {"TITLE": "Сделка", "CONTACT_ID": 1}})
        nxt = night(world, NIGHT + timedelta(days=1), log)["audiences"]
        assert nxt["status"] == "done" and nxt["sent"]["Новички G"]["removed"] == 2, nxt
        held = manager.list_members[("1234567890", "777")]
        assert ("phoneNumber", sha256("+79160000001")) not in held
        assert ("emailAddress", sha256("client.1@example.ru")) not in held
        assert ("emailAddress", sha256("client.2@example.ru")) in held
    finally:
        manager.stop()
        google.stop()
