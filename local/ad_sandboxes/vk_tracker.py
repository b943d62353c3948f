"""VK Ads offline-event tracker sandbox (``top-fwz1.mail.ru/tracker``, ads.vk.ru/help/general/sites/offline_events).

``GET /tracker?id=<pixel id>;e=RG%3A<value>/<goal>;rb_clickid=<click id>`` — parameters separated by ``;`` as the
documented URL writes them. The pixel must exist, ``e`` must be ``RG:<value>/<goal>`` with a goal of the pixel and a
value that is empty or a non-negative number, and ``rb_clickid`` must be given. The real tracker answers any request
with a pixel; this one answers 400 with a text reason to what the docs do not allow (never more forgiving), and a
200 ``image/gif`` otherwise. ``faults``: HTTP statuses answered to the next requests (an outage).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from local.ad_sandboxes.base import SandboxServer

GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"  # noqa: E501


class VkTrackerSandbox(SandboxServer):
    name = "vk-tracker-sandbox"

    def __init__(self, pixel_id: str = "3512345", goals: set[str] | None = None, **server: Any):
        super().__init__(**server)
        self.pixel_id = pixel_id
        self.goals = set(goals or {"deal_won"})
        self.faults: list[int] = []
        self.events: list[dict[str, str]] = []

    @property
    def tracker_url(self) -> str:
        return f"{self.url}/tracker"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        with self.lock:
            if self.faults:
                return self.faults.pop(0), {"Content-Type": "text/plain"}, b"unavailable"
        parts = urlsplit(path)
        if method != "GET" or parts.path != "/tracker":
            return 404, {"Content-Type": "text/plain"}, b"not found"
        params: dict[str, str] = {}
        for piece in re.split(r"[;&]", parts.query):
            if "=" in piece:
                key, value = piece.split("=", 1)
                params[unquote(key)] = unquote(value)
        problem = self._problem(params)
        if problem:
            return 400, {"Content-Type": "text/plain; charset=utf-8"}, problem.encode()
        value, goal = params["e"][3:].split("/", 1)
        with self.lock:
            self.events.append({"goal": goal, "value": value, "rb_clickid": params["rb_clickid"]})
        return 200, {"Content-Type": "image/gif"}, GIF

    def _problem(self, params: dict[str, str]) -> str | None:
        if params.get("id") != self.pixel_id:
            return "unknown pixel id"
        found = re.fullmatch(r"RG:([^/]*)/(.+)", params.get("e", ""))
        if not found:
            return "e must be RG:<value>/<goal>"
        if found.group(1) and not re.fullmatch(r"\d+(\.\d{1,2})?", found.group(1)):
            return "the value must be a non-negative number"
        if found.group(2) not in self.goals:
            return f"unknown goal {found.group(2)}"
        if not params.get("rb_clickid"):
            return "rb_clickid is required"
        return None
