"""VK Ads: an audience is a remarketing user list per identifier type (phones, e-mails), MD5-hashed (``files.py``).

``POST /api/v3/remarketing/users_lists.json`` (ads.vk.com/en/doc/api/resource/RemarketingUsersLists; the v2 engine it
shares with myTarget: target.my.com/help/advertisers/sourceuserlists): ``multipart/form-data`` with ``name``, ``type``
(``phone`` or ``email``) and ``file`` (one item per line), ``Authorization: Bearer`` with the spend import's token
(client credentials, cached in the bucket: ``throughline.spend.vk_ads``). A list takes 2 000 to 5 000 000 items.

The list stays the same object from night to night, so the advertiser's audience (a segment made of it) never has to
be re-pointed: the first night uploads the **base** list; every later night uploads *differential* lists against it
— ``base=<list id>`` with the identifiers that joined, ``base=-<list id>`` with those that left ("You can add/remove
users to/from a list that have already been uploaded … A differential list must contain no less than 25 … lines";
a differential list cannot be the base of another, so every diff names the base list). A change of fewer than 25
identifiers waits for the next night (the state keeps what the list holds, so it is sent once 25 have gathered).

State between nights (``previous`` → returned ``state``; the orchestrator stores it under
``segments/audiences/vk/``, expired after 35 days unused): per type the base list id and the MD5 hashes it holds — no
contact id, no raw value. The adapter calls ``save(state)`` after every accepted upload, so a run cut short (a
timeout, a crash) resumes from what VK really holds; re-sending a diff is harmless (an addition adds the missing, a
removal removes the present). A base list that is gone (deleted in the cabinet) is uploaded anew and its new id
reported: that one time the audience in the cabinet must be pointed at it. ``list_id`` in the configuration
(``phone:<id>,email:<id>``) adopts existing lists: their content is unknown, so the first night adds everyone and
removes nobody.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import requests

from throughline.segments.audiences.files import md5, prepare, vk_list
from throughline.segments.audiences.http import CONNECT_TIMEOUT, READ_TIMEOUT, AudienceError, multipart
from throughline.segments.audiences.members import AudienceSync, Member

PLATFORM = "vk"
MIN_ITEMS = 2000
MIN_DIFF_ITEMS = 25
MAX_ITEMS = 5_000_000
STATE_VERSION = 1
KINDS = ("phone", "email")


def audience_url(api_url: str) -> str:
    """The v3 base beside the spend import's ``VK_ADS_API_URL`` (``…/api/v2/`` → ``…/api/v3/``)."""
    root = api_url.split("/api/", 1)[0] if "/api/" in api_url else api_url.rstrip("/")
    return root + "/api/v3/"


def parse_list_id(list_id: str | None) -> dict[str, int]:
    """``phone:<id>,email:<id>`` (either part may be absent) → {type: id}; anything else is refused."""
    found: dict[str, int] = {}
    for part in str(list_id or "").split(","):
        if not part.strip():
            continue
        kind, _, number = part.strip().partition(":")
        if kind not in KINDS or not number.strip().isdigit() or kind in found:
            raise AudienceError("VK Ads: list_id must look like phone:<list id>,email:<list id>")
        found[kind] = int(number)
    return found


class BaseListGone(AudienceError):
    """The base list of a differential upload does not exist any more."""


class VkAudiences:
    platform = PLATFORM

    def __init__(
        self,
        *,
        token: Callable[[], str],
        api_url: str,
        session: requests.Session | None = None,
        phone_region: str = "RU",
    ):
        self._token = token
        self._api = audience_url(api_url)
        self.session = session or requests.Session()
        self.phone_region = phone_region  # where a national number (without its country code) is read

    def __repr__(self) -> str:
        return "VkAudiences()"

    def sync(
        self,
        name: str,
        list_id: str | None,
        members: Iterable[Member],
        previous: Mapping[str, Any] | None = None,
        save: Callable[[dict[str, Any]], None] = lambda state: None,
        deadline: Any = None,
    ) -> tuple[AudienceSync, dict[str, Any]]:
        self._deadline = deadline  # no upload starts that might not finish before the invocation ends
        token = self._token()  # first: a refused client is reported as such, whatever the list's size
        prepared = prepare(members, self.phone_region)
        state = _state(previous, parse_list_id(list_id))
        sent = calls = removed = pending = 0
        small: list[str] = []
        for kind, values in (("phone", prepared.phones), ("email", prepared.emails)):
            now = {md5(value) for value in values}
            if len(now) > MAX_ITEMS:
                raise AudienceError(f"VK Ads: a list takes at most {MAX_ITEMS} items; «{name}» has {len(now)}")
            held = state["lists"].get(kind)
            if held is not None:
                try:
                    _, gone, made = self._differences(token, name, kind, held, now, lambda: save(state))
                except BaseListGone:
                    state["gone"] = sorted({*state["gone"], state["lists"].pop(kind)["id"]})[-20:]
                    save(state)
                    held = None
                else:
                    removed, calls = removed + gone, calls + made
                    pending += len(now.symmetric_difference(state["lists"][kind]["hashes"]))
                    sent += len(now)
            if held is None:
                if len(now) < MIN_ITEMS:
                    if now:
                        small.append(f"{len(now)} {kind}s")
                    continue
                answer = self._upload(token, f"{name} ({kind})", kind, vk_list(values), base=None)
                calls += 1
                state["lists"][kind] = {"id": int(answer["id"]), "hashes": sorted(now)}
                save(state)
                sent += len(now)
        if not state["lists"]:
            raise AudienceError(f"VK Ads: a user list takes at least {MIN_ITEMS} unique items; «{name}» has "
                                f"{', '.join(small) or 'none'}")  # fmt: skip
        ids = ",".join(f"{kind}:{state['lists'][kind]['id']}" for kind in KINDS if kind in state["lists"])
        result = AudienceSync(PLATFORM, name, ids, prepared.members, sent, calls, removed=removed,
                              skipped=prepared.skipped, pending=pending)  # fmt: skip
        return result, state

    def _differences(
        self, token: str, name: str, kind: str, held: dict[str, Any], now: set[str], save: Callable[[], None]
    ) -> tuple[int, int, int]:
        """Send what joined and what left as differential lists of the base; (added, removed, calls)."""
        holds = set(held["hashes"])
        known = held.get("known", True)  # an adopted list (list_id in the configuration): its content is unknown
        joined = sorted(now - holds) if known else sorted(now)
        left = sorted(holds - now) if known else []
        added = removed = calls = 0
        if len(joined) >= MIN_DIFF_ITEMS:
            self._upload(token, f"{name} ({kind}, +)", kind, _lines(joined), base=held["id"])
            calls += 1
            holds |= set(joined)
            held.update(hashes=sorted(holds), known=True)
            if not known:  # from now on the list holds what was sent, no less, no more (as far as we know)
                held["hashes"] = sorted(now)
            save()
            added = len(joined)
        if len(left) >= MIN_DIFF_ITEMS:
            self._upload(token, f"{name} ({kind}, −)", kind, _lines(left), base=-held["id"])
            calls += 1
            held["hashes"] = sorted(set(held["hashes"]) - set(left))
            save()
            removed = len(left)
        return added, removed, calls

    _deadline: Any = None

    def _upload(self, token: str, name: str, kind: str, body: bytes, *, base: int | None) -> dict[str, Any]:
        if self._deadline is not None and self._deadline.seconds_left() < CONNECT_TIMEOUT + READ_TIMEOUT + 5:
            # What was sent is saved already; the next run of the night continues from it.
            raise AudienceError("VK Ads: too little time left in this run for another upload; the next run continues")
        fields = {"name": name[:255], "type": kind}
        if base is not None:
            fields["base"] = str(base)
        data, content_type = multipart(fields, f"{kind}s.txt", body)
        step = f"upload a {kind} list" if base is None else f"send the {kind} list's changes"
        try:
            response = self.session.post(self._api + "remarketing/users_lists.json", data=data,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": content_type},
                                         timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip
        except requests.RequestException as error:
            raise AudienceError(f"VK Ads unreachable ({step}): {type(error).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200 or not isinstance(payload, dict) or "id" not in payload:
            error = payload.get("error") if isinstance(payload, dict) else None
            error = error if isinstance(error, dict) else {}
            codes = _field_codes(error)
            if base is not None and (response.status_code == 404 or "base:not_found" in codes):
                raise BaseListGone(f"VK Ads: the list {abs(base)} is gone")
            # Only codes: VK's field errors echo the offending line ("line"), which is never put in a message.
            detail = ", ".join(codes) or str(error.get("code") or "")
            raise AudienceError(f"VK Ads could not {step}: HTTP {response.status_code} {detail[:200]}".rstrip())
        return payload


def _lines(hashes: list[str]) -> bytes:
    return "".join(value + "\n" for value in hashes).encode("ascii")


def _field_codes(error: Mapping[str, Any]) -> list[str]:
    codes = []
    fields = error.get("fields")
    for field, problems in fields.items() if isinstance(fields, dict) else []:
        for problem in problems if isinstance(problems, list) else [problems]:
            if isinstance(problem, dict) and problem.get("code"):
                codes.append(f"{field}:{problem['code']}")
    return codes


def _state(previous: Mapping[str, Any] | None, configured: dict[str, int]) -> dict[str, Any]:
    """The lists VK holds for this audience: the previous state's, or the configured ids (content unknown)."""
    lists: dict[str, Any] = {}
    gone: list[int] = []
    if previous and previous.get("version") == STATE_VERSION:
        gone = [number for number in previous.get("gone") or [] if isinstance(number, int)]
        # A configured list found gone is not adopted again: its replacement (in the previous state) is kept.
        configured = {kind: number for kind, number in configured.items() if number not in gone}
        for kind, held in (previous.get("lists") or {}).items():
            usable = kind in KINDS and isinstance(held, dict) and isinstance(held.get("id"), int)
            if usable and configured.get(kind, held["id"]) == held["id"]:
                hashes = [h for h in held.get("hashes") or [] if isinstance(h, str)]
                lists[kind] = {"id": held["id"], "hashes": hashes, "known": bool(held.get("known", True))}
    for kind, number in configured.items():
        lists.setdefault(kind, {"id": number, "hashes": [], "known": False})
    return {"version": STATE_VERSION, "lists": lists, "gone": gone}
