"""VK Ads: an audience is a remarketing user list per identifier type (phones, e-mails), MD5-hashed (``files.py``).

``POST /api/v3/remarketing/users_lists.json`` (ads.vk.com/doc/api/resource/RemarketingUsersLists; the v2 engine it
shares with myTarget: target.my.com/help/advertisers/sourceuserlists): ``multipart/form-data`` with ``name``, ``type``
(``phone`` or ``email``) and ``file`` (one item per line), ``Authorization: Bearer`` with the spend import's token
(client credentials, cached in the bucket: ``throughline.spend.vk_ads``). A list takes 2 000 to 5 000 000 unique
items. The API documents no way to replace a list's items, so each night uploads new lists and remembers their ids
(VK deletes lists unused for 60 days); the ids go into the audience's ``list_id`` as ``phone:<id>,email:<id>``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import requests

from throughline.segments.audiences.files import prepare, vk_list
from throughline.segments.audiences.http import CONNECT_TIMEOUT, READ_TIMEOUT, AudienceError, multipart
from throughline.segments.audiences.members import AudienceSync, Member

PLATFORM = "vk"
MIN_ITEMS = 2000
MAX_ITEMS = 5_000_000


def audience_url(api_url: str) -> str:
    """The v3 base beside the spend import's ``VK_ADS_API_URL`` (``…/api/v2/`` → ``…/api/v3/``)."""
    root = api_url.split("/api/", 1)[0] if "/api/" in api_url else api_url.rstrip("/")
    return root + "/api/v3/"


class VkAudiences:
    platform = PLATFORM

    def __init__(self, *, token: Callable[[], str], api_url: str, session: requests.Session | None = None):
        self._token = token
        self._api = audience_url(api_url)
        self.session = session or requests.Session()

    def __repr__(self) -> str:
        return "VkAudiences()"

    def sync(self, name: str, list_id: str | None, members: Iterable[Member]) -> AudienceSync:
        token = self._token()  # first: a refused client is reported as such, whatever the list's size
        prepared = prepare(members)
        ids, sent, calls, small = [], 0, 0, []
        for kind, values in (("phone", prepared.phones), ("email", prepared.emails)):
            if len(values) < MIN_ITEMS:
                if values:
                    small.append(f"{len(values)} {kind}s")
                continue
            if len(values) > MAX_ITEMS:
                raise AudienceError(f"VK Ads: a list takes at most {MAX_ITEMS} items; «{name}» has {len(values)}")
            answer = self._upload(token, f"{name} ({kind})", kind, vk_list(values))
            calls += 1
            ids.append(f"{kind}:{answer.get('id')}")
            sent += len(values)
        if not ids:
            raise AudienceError(f"VK Ads: a user list takes at least {MIN_ITEMS} unique items; «{name}» has "
                                f"{', '.join(small) or 'none'}")  # fmt: skip
        return AudienceSync(PLATFORM, name, ",".join(ids), prepared.members, sent, calls, skipped=prepared.skipped)

    def _upload(self, token: str, name: str, kind: str, body: bytes) -> dict[str, Any]:
        data, content_type = multipart({"name": name, "type": kind}, f"{kind}s.txt", body)
        try:
            response = self.session.post(self._api + "remarketing/users_lists.json", data=data,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": content_type},
                                         timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip
        except requests.RequestException as error:
            raise AudienceError(f"VK Ads unreachable (upload a {kind} list): {type(error).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200 or not isinstance(payload, dict) or "id" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else None
            detail = str((error or {}).get("message") or (error or {}).get("code") or "")[:200]
            raise AudienceError(f"VK Ads could not upload a {kind} list: HTTP {response.status_code} {detail}".rstrip())
        return payload
