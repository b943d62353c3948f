"""VK Ads money read from the answer's digits: a JSON number never passes through a float."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import requests

from throughline.spend.vk_ads import VkAdsSource


class _Answer(requests.Session):
    def __init__(self, body: bytes):
        super().__init__()
        self.body = body

    def get(self, url, **kwargs):
        response = requests.Response()
        response.status_code, response._content = 200, self.body
        response.headers["Content-Type"] = "application/json"
        return response


class _Forever:
    def seconds_left(self) -> float:
        return 900.0


class _Store:
    def get_json(self, key):
        return {"access_token": "token", "expires_at": 4_102_444_800}  # 2100: valid

    def put_json(self, key, value):
        raise AssertionError("a valid token is not stored again")


def test_a_spend_sent_as_a_json_number_keeps_every_digit():
    # 100000000000.000001 has 18 significant digits: a float keeps 17, so it would be stored as 100000000000.0.
    body = (b'{"items": [{"id": 7, "rows": [{"date": "2026-11-02", "base": {"shows": 10, "clicks": 2,'
            b' "spent": 100000000000.000001}}]}], "total": {}}')  # fmt: skip
    source = VkAdsSource(client_id="c", client_secret="s", api_url="https://vk.example/api/v2/",
                         token_store=_Store(), session=_Answer(body), clock=lambda: 0.0)  # fmt: skip
    payload = source._get("statistics/ad_plans/day.json", {}, _Forever())
    [row] = list(source.parse(payload, {"7": "Кампания"}, "acc"))
    assert row.cost == Decimal("100000000000.000001")
    assert row.date == date(2026, 11, 2)
