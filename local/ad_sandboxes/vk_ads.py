"""VK Ads API v2 sandbox (ads.vk.com/api/v2): OAuth2 tokens with VK's per-client limit, campaigns, daily statistics.

Follows ads.vk.com/en/doc/api/info/Authorization and the myTarget v2 engine it shares (target.my.com/help/advertisers/
api_authorization, api_arrangement; reporting_api_statistics), with the limits community clients observe:
- ``POST /api/v2/oauth2/token.json`` (form): ``client_credentials`` issues an access token (``expires_in`` "86400", a
  string as in the docs) and a refresh token; at most ``token_limit`` (5) active tokens per client — beyond that the
  grant is refused with HTTP 403 ``token_limit_exceeded`` (the error name is ours: the docs say only that the limit
  exists and that clients exceeding it get blocked); ``refresh_token`` renews the access token without a new slot.
- ``Authorization: Bearer`` on every call; an unknown or expired token gets 401.
- ``GET /api/v2/user.json`` → the account; ``GET /api/v2/ad_plans.json`` (``fields``, ``limit`` ≤ 250, ``offset``,
  ``_status__in``; deleted campaigns only when asked for) → ``{"count", "offset", "items"}``.
- ``GET /api/v2/statistics/ad_plans/day.json?id=…&date_from&date_to&metrics=base`` → ``{"items": [{"id", "rows":
  [{"date", "base": {"shows", "clicks", "goals", "spent", …}}], "total"}], "total"}``, a row for every day (zeros
  included), ``spent`` a decimal string; at most 92 days and 50 ids per request (400 beyond).
- ``POST /api/v3/remarketing/users_lists.json`` (``multipart/form-data``: ``name``, ``type`` ``phone`` | ``email``,
  ``file`` one item per line, UTF-8; target.my.com/help/advertisers/sourceuserlists): a list of 2 000 to 5 000 000
  unique items of one type, each the plain value (digits with the country code / a lower-case address) or its MD5
  (32 hex digits); a file over 128 MB, a foreign line, a line twice (``duplicated_user_id``) or too few items get 400
  with the field's error. Answers the list (``id``, ``name``, ``type``, ``base``, ``status`` "receiving"). Lists are
  kept in ``users_lists`` with their lines.
- A differential list (ads.vk.com/en/doc/api/resource/RemarketingUsersLists: "You can add/remove users to/from a list
  that have already been uploaded … upload a new list with … ``base``"): ``base`` = ``<list id>`` adds its lines to
  that list, ``-<list id>`` removes them; 25 to 5 000 000 lines; the base must exist (``not_found``), be no differential
  list itself (``unallowed_value``) and have the same type (``type_mismatch``). The base list keeps its id.
- ``DELETE /api/v3/remarketing/users_lists/<id>.json`` (…/resource/RemarketingUsersList): 204, 404 unknown, 409 when the
  list is used (``in_use``: ids the test marks as targeted).
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import date, timedelta
from decimal import Decimal
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.ad_sandboxes.base import SandboxServer, campaign_ids, daily_stats, json_answer

MAX_DAYS = 92
MAX_IDS = 50
MAX_LIMIT = 250
LIST_MIN_ITEMS = 2000
DIFF_MIN_ITEMS = 25
LIST_MAX_ITEMS = 5_000_000
LIST_MAX_BYTES = 128 * 1024 * 1024
LIST_ITEMS = {
    "phone": re.compile(r"^(?:[1-9][0-9]{10,14}|[0-9a-f]{32})$"),
    "email": re.compile(r"^(?:[^@\sA-Z]+@[^@\sA-Z]+\.[^@\sA-Z]+|[0-9a-f]{32})$"),
}


class VkAdsSandbox(SandboxServer):
    name = "vk-ads-sandbox"

    def __init__(
        self,
        *,
        client_id: str = "vk-sandbox-client",
        client_secret: str = "vk-sandbox-secret",
        account_id: int = 7700123,
        campaigns: int = 6,
        deleted_every: int = 5,
        token_limit: int = 5,
        token_lifetime: int = 86400,
        **server: Any,
    ):
        super().__init__(**server)
        self.client = (client_id, client_secret)
        self.account_id = account_id
        self.campaign_count = campaigns
        self.deleted_every = deleted_every
        self.token_limit = token_limit
        self.token_lifetime = token_lifetime
        self.access_tokens: dict[str, float] = {}  # access token → expiry (time.time)
        self.refresh_tokens: dict[str, str] = {}  # refresh token → its current access token
        self.tokens_issued = 0
        self.tokens_refreshed = 0
        self.refused_grants = 0
        self.faults: list[int] = []  # HTTP statuses answered to the next API calls
        self.token_faults: list[int] = []  # HTTP statuses answered to the next token requests (an outage)
        self.stat_requests: list[dict[str, str]] = []
        self.users_lists: dict[int, dict[str, Any]] = {}  # id → {name, type, items (lines as received)}
        self.list_min_items = LIST_MIN_ITEMS
        self.in_use: set[int] = set()
        self._next_list = 5_100_000  # lists used in an audience (a DELETE answers 409)

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/v2/"

    def campaigns(self) -> list[str]:
        return campaign_ids(str(self.account_id), self.campaign_count, start=3000)

    def is_deleted(self, campaign: str) -> bool:
        return self.campaigns().index(campaign) % self.deleted_every == self.deleted_every - 1

    def expected_cost(self, day_from: date, day_to: date) -> Decimal:
        stats = daily_stats(str(self.account_id), self.campaigns(), day_from, day_to, names=self.campaign_names)
        return sum((s.cost for s in stats), Decimal(0))

    def active_tokens(self) -> int:
        now = time.time()
        return sum(1 for expiry in self.access_tokens.values() if expiry > now)

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens = dict.fromkeys(self.access_tokens, 0.0)

    # -- HTTP -------------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        parts = urlsplit(path)
        query = dict(parse_qsl(parts.query))
        if method == "POST" and parts.path == "/api/v2/oauth2/token.json":
            return self._token(dict(parse_qsl(body.decode())))
        one_list = re.fullmatch(r"/api/v3/remarketing/users_lists/(\d+)\.json", parts.path)
        if (
            method != "GET"
            and parts.path != "/api/v3/remarketing/users_lists.json"
            and not (method == "DELETE" and one_list)
        ):
            return _error(405, "method_not_allowed", "Method not allowed")
        auth = headers.get("authorization", "")
        with self.lock:
            expiry = self.access_tokens.get(auth[7:] if auth.startswith("Bearer ") else "")
            if expiry is None or expiry <= time.time():
                return _error(401, "invalid_token", "Access token is invalid or expired")
            if self.faults:
                status = self.faults.pop(0)
                return _error(status, "too_many_requests" if status == 429 else "internal_error", "Try again later")
        if one_list:
            list_id = int(one_list.group(1))
            with self.lock:
                if list_id not in self.users_lists:
                    return _error(404, "not_found", "The list cannot be found")
                if method == "GET":
                    item = self.users_lists[list_id]
                    return json_answer(200, {"id": list_id, "name": item["name"], "type": item["type"],
                                             "base": item["base"], "status": "ready",
                                             "entries_count": len(item["items"])})  # fmt: skip
                if list_id in self.in_use:
                    return _error(409, "in_use", "The list is used in an audience configuration or Look-alike")
                del self.users_lists[list_id]
                return 204, {}, b""
        if parts.path == "/api/v3/remarketing/users_lists.json":
            if method == "GET":
                with self.lock:
                    items = [{"id": i, "name": v["name"], "type": v["type"], "status": "ready"}
                             for i, v in self.users_lists.items()]  # fmt: skip
                return json_answer(200, {"count": len(items), "offset": 0, "items": items})
            return self._users_list(headers, body)
        if parts.path == "/api/v2/user.json":
            return json_answer(
                200, {"id": self.account_id, "username": f"sandbox{self.account_id}", "status": "active"}
            )
        if parts.path == "/api/v2/ad_plans.json":
            return self._ad_plans(query)
        if parts.path == "/api/v2/statistics/ad_plans/day.json":
            return self._statistics(query)
        return _error(404, "not_found", f"Unknown resource {parts.path}")

    def _token(self, form: dict[str, str]) -> tuple[int, dict, bytes]:
        with self.lock:
            if self.token_faults:
                return _error(self.token_faults.pop(0), "internal_error", "Try again later")
        if (form.get("client_id"), form.get("client_secret")) != self.client:
            return json_answer(401, {"error": "invalid_client", "error_description": "Client authentication failed"})
        with self.lock:
            now = time.time()
            if form.get("grant_type") == "client_credentials":
                if self.active_tokens() >= self.token_limit:
                    self.refused_grants += 1
                    return json_answer(
                        403,
                        {
                            "error": "token_limit_exceeded",
                            "error_description": f"At most {self.token_limit} active tokens",
                        },
                    )
                access, refresh = secrets.token_urlsafe(30), secrets.token_urlsafe(30)
                self.access_tokens[access] = now + self.token_lifetime
                self.refresh_tokens[refresh] = access
                self.tokens_issued += 1
            elif form.get("grant_type") == "refresh_token":
                refresh = form.get("refresh_token", "")
                if refresh not in self.refresh_tokens:
                    return json_answer(400, {"error": "invalid_grant", "error_description": "Unknown refresh token"})
                self.access_tokens.pop(self.refresh_tokens[refresh], None)  # the old access token stops working
                access = secrets.token_urlsafe(30)
                self.access_tokens[access] = now + self.token_lifetime
                self.refresh_tokens[refresh] = access
                self.tokens_refreshed += 1
            else:
                return json_answer(400, {"error": "unsupported_grant_type", "error_description": "Unknown grant"})
        return json_answer(
            200,
            {
                "access_token": access,
                "token_type": "bearer",
                "scope": "read_ads read_stats",
                "expires_in": str(self.token_lifetime),
                "refresh_token": refresh,
            },
        )

    def _users_list(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _field_error("file", "invalid_content_type", "multipart/form-data is required")
        if len(body) > LIST_MAX_BYTES:
            return _field_error("file", "file_too_large", "the file is larger than 128 MB")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        fields: dict[str, list[bytes]] = {}
        for part in message.iter_parts():
            fields.setdefault(str(part.get_param("name", header="content-disposition")), []).append(
                part.get_payload(decode=True) or b""
            )
        for name in ("name", "type", "file"):
            if len(fields.get(name, [])) != 1:
                return _field_error(name, "required", f"exactly one {name} is required")
        base = 0
        if fields.get("base"):
            try:
                base = int(fields["base"][0].decode("ascii").strip())
            except ValueError:
                return _field_error("base", "invalid_int", "base must be a list id or its negative")
        kind = fields["type"][0].decode("utf-8", "replace").strip()
        if kind not in LIST_ITEMS:
            return _field_error("type", "invalid_choice", "the sandbox takes phone or email lists")
        name = fields["name"][0].decode("utf-8", "replace").strip()
        if not 1 <= len(name) <= 255:
            return _field_error("name", "invalid_length", "1 to 255 characters")
        try:
            lines = fields["file"][0].decode("utf-8").split("\n")
        except UnicodeDecodeError:
            return _field_error("file", "invalid_encoding", "the file must be UTF-8")
        items = [line.strip() for line in lines if line.strip()]
        for number, item in enumerate(items, start=1):
            if not LIST_ITEMS[kind].match(item):
                return _field_error("file", "invalid_item", f"line {number} is not a {kind} or its MD5")
        seen: set[str] = set()
        for number, item in enumerate(items, start=1):
            if item in seen:
                return _field_error("file", "duplicated_user_id", f"line {number} is already in the file")
            seen.add(item)
        least = DIFF_MIN_ITEMS if base else self.list_min_items
        if len(items) < least:
            return _field_error("file", "not_enough_ids", f"{len(items)} items; at least {least}")
        if len(items) > LIST_MAX_ITEMS:
            return _field_error("file", "too_many_ids", f"at most {LIST_MAX_ITEMS} items")
        with self.lock:
            if base:
                source = self.users_lists.get(abs(base))
                if source is None:
                    return _field_error("base", "not_found", "Unknown base list")
                if source["base"]:
                    return _field_error("base", "unallowed_value", "a differential list cannot be a base")
                if source["type"] != kind:
                    return _field_error("base", "type_mismatch", "a differential list has the type of its base")
                if base > 0:
                    held = set(source["items"])
                    source["items"] = source["items"] + [item for item in items if item not in held]
                else:
                    source["items"] = [item for item in source["items"] if item not in seen]
            self._next_list += 1
            list_id = self._next_list
            self.users_lists[list_id] = {"name": name, "type": kind, "items": items, "base": base}
        return json_answer(200, {"id": list_id, "name": name, "type": kind, "base": base, "status": "receiving",
                                 "entries_count": len(items)})  # fmt: skip

    def _ad_plans(self, query: dict[str, str]) -> tuple[int, dict, bytes]:
        try:
            limit, offset = int(query.get("limit", 20)), int(query.get("offset", 0))
        except ValueError:
            return _error(400, "invalid_parameter", "limit and offset must be integers")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, "invalid_parameter", f"limit must be between 1 and {MAX_LIMIT}")
        statuses = set(query.get("_status__in", "active,blocked").split(","))
        visible = [c for c in self.campaigns() if ("deleted" if self.is_deleted(c) else "active") in statuses]
        fields = query.get("fields", "id").split(",")
        items = [{k: v for k, v in {"id": int(c), "name": self.campaign_names.get(c) or f"VK кампания {c}",
                                    "status": "deleted" if self.is_deleted(c) else "active"}.items() if k in fields}
                 for c in visible[offset : offset + limit]]  # fmt: skip
        return json_answer(200, {"count": len(visible), "offset": offset, "items": items})

    def _statistics(self, query: dict[str, str]) -> tuple[int, dict, bytes]:
        self.stat_requests.append(query)
        try:
            day_from, day_to = date.fromisoformat(query["date_from"]), date.fromisoformat(query["date_to"])
            ids = [str(int(part)) for part in query["id"].split(",") if part]
        except (KeyError, ValueError):
            return _error(400, "invalid_parameter", "id, date_from and date_to (YYYY-MM-DD) are required")
        if day_to < day_from or (day_to - day_from).days + 1 > MAX_DAYS:
            return _error(400, "invalid_parameter", f"the period must be 1 to {MAX_DAYS} days")
        if not 1 <= len(ids) <= MAX_IDS:
            return _error(400, "invalid_parameter", f"1 to {MAX_IDS} ids per request")
        if query.get("metrics", "base") != "base":
            return _error(400, "invalid_parameter", "the sandbox serves metrics=base")
        known = set(self.campaigns())
        asked = [i for i in ids if i in known]
        stats = daily_stats(str(self.account_id), asked, day_from, day_to, names=self.campaign_names)
        by_key = {(s.campaign_id, s.day): s for s in stats}
        items = []
        for campaign in ids:
            if campaign not in known:
                continue
            rows = []
            day = day_from
            while day <= day_to:
                stat = by_key.get((campaign, day))
                shows, clicks, spent = (stat.impressions, stat.clicks, stat.cost) if stat else (0, 0, Decimal("0"))
                rows.append({"date": day.isoformat(), "base": {"shows": shows, "clicks": clicks, "goals": 0,
                             "spent": f"{spent:.2f}", "cpm": "0", "cpc": "0", "cpa": "0", "ctr": 0}})  # fmt: skip
                day += timedelta(days=1)
            items.append({"id": int(campaign), "rows": rows, "total": {}})
        return json_answer(200, {"items": items, "total": {}})


def _field_error(field: str, code: str, message: str) -> tuple[int, dict, bytes]:
    return json_answer(400, {"error": {"code": "validation_error", "message": message,
                                       "fields": {field: [{"code": code, "message": message}]}}})  # fmt: skip


def _error(status: int, code: str, message: str) -> tuple[int, dict, bytes]:
    return json_answer(status, {"error": {"code": code, "message": message}})
