"""The audiences' orchestrator: the platform registry, once a night, retries capped, ids only in the state."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.segments import MemoryObjects
from throughline.bitrix24.client import BatchResult
from throughline.segments.audiences.export import ADAPTERS, ATTEMPTS, STATE_KEY, export_audiences
from throughline.segments.audiences.members import AudienceSync, Member
from throughline.segments.rules import Audience

ROWS = [
    {"kind": "contact", "id": 1, "segment": "VIP"},
    {"kind": "contact", "id": 2, "segment": "SLEEPING"},
    {"kind": "company", "id": 1, "segment": "VIP"},  # a company has no phone of its own: not exported
    {"kind": "contact", "id": 3, "segment": None},
]


class FakePortal:
    """crm.contact.list by @ID in a batch: contacts 1 and 2 (3 was deleted)."""

    def __init__(self) -> None:
        self.batches: list[dict] = []

    def batch_capacity(self, methods: Any) -> int:
        return 50

    def batch(self, commands: dict, halt: bool = False) -> BatchResult:
        self.batches.append(commands)
        people = {1: {"ID": "1", "PHONE": [{"VALUE": "+7 912 345-67-89"}], "EMAIL": [{"VALUE": "A@B.RU"}]},
                  2: {"ID": "2", "PHONE": [], "EMAIL": [{"VALUE": "c@d.ru"}]}}  # fmt: skip
        results = {key: [people[i] for i in params["filter"]["@ID"] if i in people] for key, (_, params) in
                   commands.items()}  # fmt: skip
        return BatchResult(results, {}, {}, {})


class Recorder:
    platform = "google"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, str | None, list[Member]]] = []
        self.fail = fail

    def sync(self, name: str, list_id: str | None, members: list[Member]) -> AudienceSync:
        self.calls.append((name, list_id, members))
        if self.fail:
            raise RuntimeError("platform down")
        return AudienceSync("google", name, "customers/1/userLists/77", len(members), len(members), 1)


def test_a_platform_is_one_registration_and_each_audience_goes_once_a_night() -> None:
    assert set(ADAPTERS) == {"yandex", "vk", "google"}
    audiences = [Audience(name="VIP", platform="yandex", segments=["VIP", "SLEEPING"])]
    portal, objects, google = FakePortal(), MemoryObjects(), Recorder()
    unregistered = export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {})  # type: ignore[arg-type]
    assert "no adapter for the platform 'yandex'" in unregistered["failed"]["VIP"]["error"]
    summary = export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert summary["status"] == "done" and summary["sent"]["VIP"]["list_id"] == "customers/1/userLists/77"
    ((name, list_id, members),) = google.calls
    assert (name, list_id) == ("VIP", None)
    assert members == [Member(1, ("+7 912 345-67-89",), ("A@B.RU",)), Member(2, (), ("c@d.ru",))]
    assert portal.batches[0]["c0"][1]["filter"] == {"@ID": [1, 2]}
    assert portal.batches[0]["c0"][1]["select"] == ["ID", "PHONE", "EMAIL"]
    # Again the same night: nothing; the next night: the remembered list id.
    export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert len(google.calls) == 1
    export_audiences(portal, objects, audiences, ROWS, "2026-12-07", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert google.calls[-1][1] == "customers/1/userLists/77"
    state = objects.data[STATE_KEY]
    assert b"A@B.RU" not in state and b"345" not in state and b"c@d.ru" not in state


def test_a_failing_platform_is_tried_at_most_three_times_a_night() -> None:
    audiences = [Audience(name="VIP", platform="yandex", segments=["VIP"])]
    portal, objects, google = FakePortal(), MemoryObjects(), Recorder(fail=True)
    for _ in range(ATTEMPTS + 2):
        summary = export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert len(google.calls) == ATTEMPTS
    assert summary["status"] == "done" and summary["failed"]["VIP"] == {
        "platform": "yandex", "error": "RuntimeError: platform down", "attempts": ATTEMPTS}  # fmt: skip
    assert json.loads(objects.data[STATE_KEY])["lists"] == {}


def test_an_audience_waits_for_the_next_run_when_the_invocation_is_nearly_over() -> None:
    from throughline.bitrix24.client import Deadline

    audiences = [Audience(name="VIP", platform="yandex", segments=["VIP"])]
    portal, objects, google = FakePortal(), MemoryObjects(), Recorder()
    portal.deadline = Deadline(lambda: 100.0, reserve=5.0)  # type: ignore[attr-defined]
    summary = export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert summary["status"] == "unfinished" and google.calls == [] and portal.batches == []
    portal.deadline = Deadline(lambda: 800.0, reserve=5.0)  # type: ignore[attr-defined]
    summary = export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert summary["status"] == "done" and len(google.calls) == 1


def test_the_invocations_deadline_reaches_an_adapter_that_takes_one() -> None:
    """Found by the hostile review: Google's adapter had no deadline (a run killed mid-upload stored no state)."""
    from throughline.bitrix24.client import Deadline

    audiences = [Audience(name="VIP", platform="yandex", segments=["VIP"])]
    portal, objects, google = FakePortal(), MemoryObjects(), Recorder()
    google.deadline = None  # type: ignore[attr-defined]
    portal.deadline = Deadline(lambda: 800.0, reserve=5.0)  # type: ignore[attr-defined]
    export_audiences(portal, objects, audiences, ROWS, "2026-12-06", {"yandex": lambda: google})  # type: ignore[arg-type]
    assert google.deadline is portal.deadline  # type: ignore[attr-defined]
    assert ADAPTERS["google"](_google_settings(), objects).deadline is None  # set by the export, not by the factory


def _google_settings() -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(google_ads_client_id="id", google_ads_client_secret="secret",
                           google_ads_refresh_token="refresh", google_oauth_token_url="https://oauth/token",
                           google_data_manager_api_url="https://dm/v1/", google_ads_login_customer_id=None,
                           google_ads_customer_ids=["1234567890"], default_phone_region="RU")  # fmt: skip
