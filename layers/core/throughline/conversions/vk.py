"""VK Ads offline events through the Top@Mail.Ru tracker its pixel runs on.

Source: ads.vk.ru/help/general/sites/offline_events.

A server-to-server ``GET {VK_ADS_TRACKER_URL}?id=<pixel id>;e=RG%3A<value>/<goal>;rb_clickid=<click id>`` (default
``https://top-fwz1.mail.ru/tracker``): ``rb_clickid`` is the parameter VK Ads adds to every ad link, which the site
snippet captures. The tracker answers with a pixel and never says whether the event joined a click, so a 200 counts
as accepted (delivered); 4xx is a rejection, 429/5xx and network errors are retried.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import requests

from throughline.bitrix24 import Deadline
from throughline.conversions.platforms import (
    CONNECT_TIMEOUT,
    Item,
    PlatformError,
    Rejected,
    RetryableError,
    money,
    with_retries,
)
from throughline.spend.http import new_session

PLATFORM = "vk_ads"
GOAL = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def identifier(identifiers: dict[str, str]) -> tuple[str, str] | None:
    value = identifiers.get("rb_clickid", "").strip()
    return ("rb_clickid", value) if value else None


def tracker_url(base: str, pixel_id: str, item: Item) -> str:
    value = money(item.conversion.amount) if item.conversion.amount > 0 else ""
    value = value[:-3] if value.endswith(".00") else value
    return f"{base}?id={quote(pixel_id, safe='')};e=RG%3A{value}/{quote(item.goal, safe='')};rb_clickid=" + quote(
        item.identifier[1], safe=""
    )


class VkTrackerClient:
    def __init__(self, pixel_id: str, tracker_url: str, session: requests.Session | None = None):
        self.pixel_id = pixel_id
        self.tracker_url = tracker_url
        self.session = session or new_session()

    def send(self, item: Item, deadline: Deadline) -> None:
        url = tracker_url(self.tracker_url, self.pixel_id, item)
        with_retries(lambda: self.session.get(url, timeout=(CONNECT_TIMEOUT, 30)), _classify, deadline)


def _classify(response: requests.Response) -> None:
    if response.status_code == 200:
        return
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"the VK tracker answered {response.status_code}")
    detail = response.text.strip()[:200] if "text" in response.headers.get("Content-Type", "") else ""
    if response.status_code == 400:
        raise Rejected("the VK tracker answered 400" + (f": {detail}" if detail else ""))
    raise PlatformError(f"the VK tracker answered {response.status_code}" + (f": {detail}" if detail else ""))
