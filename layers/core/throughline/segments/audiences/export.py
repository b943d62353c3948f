"""Exporting the configured audiences once a night, after the segments' write-back.

For each audience of ``config/segments.yaml``: the contacts of its segments in the night's snapshot
(``segments/snapshot=<day>/customers.json.gz``; a company customer has no phone of its own and is not exported),
their phones and e-mails read from Bitrix24 (``contacts.py``), handed to the platform's adapter from
:data:`ADAPTERS`. A platform is one line there: ``ADAPTERS["google"] = google.adapter`` — a factory
``(settings, objects) -> adapter`` whose ``sync(name, list_id, members) -> AudienceSync`` does the rest.

``segments/audiences/state.json`` keeps ids only — never a phone or an e-mail: each audience's platform list id (the
next night replaces that list's data) and the night's outcome per audience. An audience sent tonight is not sent
again tonight; one that failed is tried again by the next run of the night, at most :data:`ATTEMPTS` times. One
platform failing (down, a refused token, too small a list) stops neither the other audiences nor the segments run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, Protocol
from urllib.parse import quote

from throughline.bitrix24.client import Bitrix24Client
from throughline.report import jsonlines
from throughline.segments.audiences.contacts import read_members
from throughline.segments.audiences.http import AudienceError
from throughline.segments.audiences.members import AudienceSync, Member
from throughline.segments.rules import Audience

STATE_KEY = "segments/audiences/state.json"
ATTEMPTS = 3
SECONDS_PER_AUDIENCE = 180  # reading 100 000 contacts (40 batches at 2/s) and an upload of ~15 MB, with room to spare


class Adapter(Protocol):
    platform: str

    def sync(self, name: str, list_id: str | None, members: list[Member]) -> AudienceSync: ...


AdapterFactory = Callable[[Any, Any], Adapter]


YANDEX_STATE_PREFIX = "segments/audiences/yandex/"  # the last segment made per audience (its id only)


class _YandexAdapter:
    """Yandex Audiences (``yandex.YandexAudiences``) remembering a segment uploaded by a run cut short, so the next
    run finishes that one instead of leaving it orphaned in the cabinet and uploading another."""

    platform = "yandex"

    def __init__(self, settings: Any, objects: Any):
        from throughline.segments.audiences.yandex import YandexAudiences

        if not settings.yandex_audience_token:
            raise AudienceError("Yandex Audiences is not configured: put YANDEX_AUDIENCE_TOKEN in the ads secret")
        self.yandex = YandexAudiences(token=settings.yandex_audience_token, api_url=settings.yandex_audience_api_url,
                                      phone_region=getattr(settings, "default_phone_region", "RU"))  # fmt: skip
        self.objects = objects

    def sync(self, name: str, list_id: str | None, members: list[Member]) -> AudienceSync:
        key = YANDEX_STATE_PREFIX + quote(name, safe="") + ".json"
        body = self.objects.get(key)
        created = (json.loads(body) if body else {}).get("created")

        def remember(segment_id: str) -> None:  # before the confirm: a run cut short leaves no unknown segment
            self.objects.put(key, json.dumps({"created": segment_id}).encode())

        return self.yandex.sync(name, list_id, members, created=created, remember=remember)


def _yandex(settings: Any, objects: Any) -> Adapter:
    return _YandexAdapter(settings, objects)


class _BucketJson:
    """The spend import's token store interface (``get_json``/``put_json``) over the segments' objects."""

    def __init__(self, objects: Any):
        self.objects = objects

    def get_json(self, key: str) -> Any:
        body = self.objects.get(key)
        return json.loads(body) if body else None

    def put_json(self, key: str, value: Any) -> None:
        self.objects.put(key, json.dumps(value).encode())


VK_STATE_PREFIX = "segments/audiences/vk/"  # the base lists' ids and MD5 hashes (expired after 35 days unused)


class _VkAdapter:
    """VK Ads user lists (``vk.VkAudiences``) with their state between nights: the base lists and what they hold."""

    platform = "vk"
    deadline: Any = None  # the invocation's (set by the export)

    def __init__(self, settings: Any, objects: Any):
        from throughline.segments.audiences.vk import VkAudiences
        from throughline.spend.vk_ads import VkAdsSource

        if not (settings.vk_ads_client_id and settings.vk_ads_client_secret):
            raise AudienceError("VK Ads is not configured: put VK_ADS_CLIENT_ID and VK_ADS_CLIENT_SECRET in the ads "
                                "secret")  # fmt: skip
        # The spend import's token (cached at private/vk_ads/token.json in the data bucket): VK allows few per client.
        source = VkAdsSource(client_id=settings.vk_ads_client_id, client_secret=settings.vk_ads_client_secret,
                             api_url=settings.vk_ads_api_url, token_store=_BucketJson(objects))  # type: ignore[arg-type]  # fmt: skip
        self.vk = VkAudiences(
            token=source.access_token,
            api_url=settings.vk_ads_api_url,
            phone_region=getattr(settings, "default_phone_region", "RU"),
        )
        self.objects = objects

    def sync(self, name: str, list_id: str | None, members: list[Member]) -> AudienceSync:
        key = VK_STATE_PREFIX + quote(name, safe="") + ".json"
        body = self.objects.get(key)
        previous = json.loads(body) if body else None

        def save(state: dict[str, Any]) -> None:  # after every accepted upload: a run cut short resumes from it
            self.objects.put(key, json.dumps(state).encode())

        result, state = self.vk.sync(name, list_id, members, previous=previous, save=save, deadline=self.deadline)
        save(state)
        return result


def _vk(settings: Any, objects: Any) -> Adapter:
    return _VkAdapter(settings, objects)


GOOGLE_STATE_PREFIX = "segments/audiences/google/"  # the SHA-256 hashes Google was sent (expired after 35 days unused)


class _GoogleAdapter:
    """Google Customer Match (``google.sync``) with its state between nights: the hashes Google was last sent."""

    platform = "google"
    deadline: Any = None  # the invocation's (set by the export): no request is started that cannot finish in time

    def __init__(self, settings: Any, objects: Any):
        from throughline.segments.audiences import google

        self.google = google
        self.settings = google.GoogleAudienceSettings.from_settings(settings)
        if not (self.settings.client_id and self.settings.client_secret and self.settings.refresh_token):
            raise AudienceError("Google Customer Match is not configured: put GOOGLE_ADS_CLIENT_ID, "
                                "GOOGLE_ADS_CLIENT_SECRET and GOOGLE_ADS_REFRESH_TOKEN in the ads secret")  # fmt: skip
        self.objects = objects

    def sync(self, name: str, list_id: str | None, members: list[Member]) -> AudienceSync:
        key = GOOGLE_STATE_PREFIX + quote(name, safe="") + ".json"
        body = self.objects.get(key)
        previous = json.loads(body) if body else None
        try:
            result, state = self.google.sync(name, members, list_id=list_id, settings=self.settings,
                                             previous=previous, deadline=self.deadline)  # fmt: skip
        except self.google.GoogleAudienceError as error:
            if error.state is not None:  # some of tonight's may be in the list: keep them removable
                self.objects.put(key, json.dumps(error.state).encode())
            raise AudienceError(str(error)) from error
        except ValueError as error:  # no or a malformed list id
            raise AudienceError(str(error)) from error
        self.objects.put(key, json.dumps(state).encode())
        return result


def _google(settings: Any, objects: Any) -> Adapter:
    return _GoogleAdapter(settings, objects)


ADAPTERS: dict[str, AdapterFactory] = {"yandex": _yandex, "vk": _vk, "google": _google}


def _members_of(rows: list[dict[str, Any]], audience: Audience) -> list[int]:
    wanted = set(audience.segments)
    return [int(row["id"]) for row in rows if row.get("kind") == "contact" and row.get("segment") in wanted]


def export_audiences(
    client: Bitrix24Client,
    objects: Any,
    audiences: list[Audience],
    rows: list[dict[str, Any]],
    day: str,
    adapters: Mapping[str, Callable[[], Adapter]],
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Send tonight's audiences not sent yet; ``adapters``: platform → a ready adapter's factory (settings bound)."""
    if not audiences:
        return {"status": "off"}
    state = json.loads(objects.get(STATE_KEY) or b"{}")
    if state.get("day") != day:
        state = {"lists": state.get("lists") or {}, "day": day, "sent": {}, "failed": {}}
    people: dict[int, Member] = {}
    deadline = getattr(client, "deadline", None)
    for audience in audiences:
        if audience.name in state["sent"]:
            continue
        if deadline is not None and deadline.seconds_left() < SECONDS_PER_AUDIENCE:
            progress("audiences: too little time left in this run; the next run of the night continues")
            break
        failed = state["failed"].get(audience.name) or {}
        if failed.get("attempts", 0) >= ATTEMPTS:
            continue
        remembered = state["lists"].get(audience.name) or {}
        list_id = audience.list_id or (remembered.get("list_id") if remembered.get("platform") == audience.platform
                                       else None)  # fmt: skip
        try:
            factory = adapters.get(audience.platform)
            if factory is None:
                raise AudienceError(f"no adapter for the platform {audience.platform!r} in this version")
            adapter = factory()
            if deadline is not None and hasattr(adapter, "deadline"):
                adapter.deadline = deadline  # type: ignore[attr-defined]
            ids = _members_of(rows, audience)
            missing = [contact_id for contact_id in ids if contact_id not in people]
            for member in read_members(client, missing, progress):
                people[member.contact_id] = member
            members = [people[contact_id] for contact_id in ids if contact_id in people]
            progress(f"audiences: «{audience.name}» → {audience.platform}: {len(members)} customers")
            sync = adapter.sync(audience.name, list_id, members)
        except Exception as error:  # one platform's failure must not stop the others
            message = str(error) if isinstance(error, AudienceError) else f"{type(error).__name__}: {error}"
            state["failed"][audience.name] = {"platform": audience.platform, "error": message[:300],
                                              "attempts": failed.get("attempts", 0) + 1}  # fmt: skip
            progress(f"audiences: «{audience.name}» → {audience.platform} failed: {message[:300]}")
        else:
            state["lists"][audience.name] = {"platform": audience.platform, "list_id": sync.list_id}
            state["sent"][audience.name] = asdict(sync)
            state["failed"].pop(audience.name, None)
            changes = "".join(
                [
                    f", {sync.removed} removed" if sync.removed else "",
                    f", {sync.pending} changes wait for a later night" if sync.pending else "",
                ]
            )
            progress(f"audiences: «{audience.name}» → {audience.platform} list {sync.list_id}: {sync.members} "
                     f"customers, {sync.identifiers} identifiers, {sync.skipped} without a usable one"
                     f"{changes}")  # fmt: skip
        objects.put(STATE_KEY, json.dumps(state, ensure_ascii=False).encode())
    pending = [a.name for a in audiences if a.name not in state["sent"]
               and (state["failed"].get(a.name) or {}).get("attempts", 0) < ATTEMPTS]  # fmt: skip
    return {"status": "unfinished" if pending else "done", "sent": state["sent"], "failed": state["failed"]}


def read_rows(objects: Any, key: str) -> list[dict[str, Any]]:
    body = objects.get(key)
    return jsonlines.decode(body) if body else []


def bound_adapters(settings: Any, objects: Any) -> dict[str, Callable[[], Adapter]]:
    """The registry with the settings bound: platform → a factory that builds the adapter (or says what is missing)."""
    return {platform: (lambda factory=factory: factory(settings, objects)) for platform, factory in ADAPTERS.items()}
