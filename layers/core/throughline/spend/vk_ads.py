"""VK Ads (ads.vk.com, API v2): daily spend per campaign (``ad_plans``) from ``statistics/ad_plans/day.json``.

Auth (ads.vk.com/en/doc/api/info/Authorization): ``POST oauth2/token.json`` with the client-credentials grant gives
an access token (about a day) and a refresh token. VK allows only a few active tokens per client and blocks clients
that keep issuing new ones, so the token is cached in the bucket (``private/vk_ads/token.json``, outside
the ``spend/`` that the report and Athena users read) and renewed
with the refresh-token grant; a new token is issued only when there is none or the refresh token is refused.
Statistics requests stay within the documented limits: at most 92 days and 50 campaign ids per request.
Figures are in the account's currency (roubles for accounts in Russia) and Moscow time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from pydantic import ValidationError

from throughline.adapters.spend_store import PRIVATE_PREFIX, SpendStore
from throughline.spend.http import CONNECT_TIMEOUT, MAX_ATTEMPTS, READ_TIMEOUT, PlatformError, RetryableError, backoff
from throughline.spend.importer import Deadline
from throughline.spend.plan import Chunk, split
from throughline.spend.rows import SpendRow, invalid_reason

PLATFORM = "vk_ads"
TIMEZONE = "Europe/Moscow"
CURRENCY = "RUB"
TOKEN_KEY = f"{PRIVATE_PREFIX}vk_ads/token.json"
MAX_DAYS_PER_REQUEST = 92
MAX_IDS_PER_REQUEST = 50
PAGE_LIMIT = 250
RENEW_BEFORE_SECONDS = 600


class VkAdsError(PlatformError):
    pass


class VkAdsSource:
    platform = PLATFORM

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        api_url: str,
        token_store: SpendStore,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        chunk_days: int = 31,
        ingested_at: datetime | None = None,
    ):
        self._client = (client_id, client_secret)
        self._api = api_url if api_url.endswith("/") else api_url + "/"
        self.token_store = token_store
        self.session = session or requests.Session()
        self.sleep = sleep
        self.clock = clock
        self.chunk_days = min(chunk_days, MAX_DAYS_PER_REQUEST)
        self.ingested_at = ingested_at
        self._token: dict[str, Any] | None = None
        self._campaigns: dict[str, str] | None = None
        self.tokens_issued = 0
        self.tokens_refreshed = 0

    def __repr__(self) -> str:
        return "VkAdsSource()"

    # -- token ------------------------------------------------------------------------------------------------------

    def access_token(self) -> str:
        token = self._token or self.token_store.get_json(TOKEN_KEY)
        if token and float(token.get("expires_at", 0)) > self.clock() + RENEW_BEFORE_SECONDS:
            self._token = token
            return token["access_token"]
        if token and token.get("refresh_token"):
            try:
                token = self._grant({"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
                self.tokens_refreshed += 1
            except VkAdsError:
                token = None  # refused (revoked or expired): a new token is the only way on
        else:
            token = None
        if token is None:
            token = self._grant({"grant_type": "client_credentials"})
            self.tokens_issued += 1
        self.token_store.put_json(TOKEN_KEY, token)
        self._token = token
        return token["access_token"]

    def _grant(self, form: dict[str, str]) -> dict[str, Any]:
        client_id, client_secret = self._client
        try:
            response = self.session.post(self._api + "oauth2/token.json",
                                         data={**form, "client_id": client_id, "client_secret": client_secret},
                                         timeout=(CONNECT_TIMEOUT, 30))  # fmt: skip
        except requests.RequestException as error:
            raise RetryableError(f"VK Ads unreachable: {type(error).__name__}") from None
        payload = _json(response)
        if response.status_code == 429 or response.status_code >= 500:
            # Not a refusal: a new token now would take one of the few slots VK allows, for nothing. Retried later.
            raise RetryableError(f"VK Ads could not answer the {form['grant_type']} grant: HTTP {response.status_code}",
                                 retry_after=_seconds(response.headers.get("Retry-After")))  # fmt: skip
        if response.status_code != 200 or "access_token" not in payload:
            code = payload.get("error", f"HTTP {response.status_code}")
            description = payload.get("error_description", "")
            hint = " (VK allows only a few active tokens per client: delete old ones in the VK Ads cabinet, API " \
                   "access, or with oauth2/token/delete.json)" if "limit" in str(code) else ""  # fmt: skip
            raise VkAdsError(f"VK Ads refused the {form['grant_type']} grant: {code} {description}".strip() + hint)
        refresh = payload.get("refresh_token") or form.get("refresh_token")
        lifetime = float(payload.get("expires_in") or 86400)
        return {"access_token": payload["access_token"], "refresh_token": refresh,
                "expires_at": self.clock() + lifetime}  # fmt: skip

    # -- accounts and campaigns -------------------------------------------------------------------------------------

    def accounts(self) -> list[str]:
        user = self._get("user.json", {}, _Unbounded())
        return [str(user["id"])]

    def campaigns(self, deadline: Deadline) -> dict[str, str]:
        """Every campaign (deleted ones too: their past spend counts), id → name."""
        if self._campaigns is None:
            campaigns: dict[str, str] = {}
            offset = 0
            while True:
                page = self._get("ad_plans.json", {"fields": "id,name", "limit": PAGE_LIMIT, "offset": offset,
                                                   "_status__in": "active,blocked,deleted"}, deadline)  # fmt: skip
                for item in page.get("items", []):
                    campaigns[str(item["id"])] = str(item.get("name", ""))
                offset += PAGE_LIMIT
                if offset >= int(page.get("count", 0)):
                    break
            self._campaigns = campaigns
        return self._campaigns

    # -- statistics -------------------------------------------------------------------------------------------------

    def fetch(self, chunk: Chunk, deadline: Deadline) -> Iterator[SpendRow]:
        campaigns = self.campaigns(deadline)
        ids = sorted(campaigns, key=int)
        for start, end in split(chunk.date_from, chunk.date_to, MAX_DAYS_PER_REQUEST):
            for offset in range(0, len(ids), MAX_IDS_PER_REQUEST):
                batch = ids[offset : offset + MAX_IDS_PER_REQUEST]
                params = {"id": ",".join(batch), "date_from": start.isoformat(), "date_to": end.isoformat(),
                          "metrics": "base"}  # fmt: skip
                payload = self._get("statistics/ad_plans/day.json", params, deadline)
                yield from self.parse(payload, campaigns, chunk.account_id)

    def parse(self, payload: Any, campaigns: dict[str, str], account_id: str) -> Iterator[SpendRow]:
        """Rows of one ``statistics/ad_plans/day.json`` answer (``items`` of campaigns, each with daily ``rows``)."""
        items = payload.get("items", []) if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise VkAdsError("VK Ads statistics: no list of items")
        for item in items:
            try:
                campaign_id = str(item["id"])
                rows = item.get("rows", [])
                if not isinstance(rows, list):
                    raise TypeError("rows is no list")
            except (KeyError, TypeError, AttributeError) as error:
                raise VkAdsError(
                    f"VK Ads statistics: a campaign item without its id or rows ({_reason(error)})"
                ) from None
            for row in rows:
                try:
                    spend = self._row(row, campaign_id, campaigns, account_id)
                except (KeyError, TypeError, AttributeError, ValueError, ArithmeticError) as error:
                    # The answer is not what the API documents: the chunk is refused whole, with the reason.
                    raise VkAdsError(f"VK Ads statistics of campaign {campaign_id[:40]}: {_reason(error)}") from None
                if spend is not None:
                    yield spend

    def _row(
        self, row: dict[str, Any], campaign_id: str, campaigns: dict[str, str], account_id: str
    ) -> SpendRow | None:
        base = row.get("base") or {}
        shows, clicks, spent = _count(base.get("shows")), _count(base.get("clicks")), _money(base.get("spent"))
        if not (shows or clicks or spent):
            return None  # VK lists every day of the range; the other platforms omit empty days
        return SpendRow(
            date=date.fromisoformat(row["date"]), platform=PLATFORM, account_id=account_id,
            campaign_id=campaign_id, campaign_name=campaigns.get(campaign_id, ""), impressions=shows,
            clicks=clicks, cost=spent, currency=CURRENCY, include_vat=False,
            account_timezone=TIMEZONE, ingested_at=self.ingested_at or datetime.now().astimezone(),
        )  # fmt: skip

    def _get(self, path: str, params: dict[str, Any], deadline: Deadline) -> Any:
        attempt = 0
        renewed = False
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.access_token()}"}
                response = self.session.get(self._api + path, params=params, headers=headers,
                                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip
            except RetryableError as error:  # the token endpoint could not answer: back off like any call
                failure: PlatformError = error
            except requests.RequestException as error:
                failure = RetryableError(f"VK Ads unreachable: {type(error).__name__}")
            else:
                if response.status_code == 200:  # a number VK sends for money is read as its digits, not a float
                    return response.json(parse_float=Decimal)
                payload = _json(response)
                error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
                message = (
                    f"VK Ads {path}: HTTP {response.status_code} {error.get('code', '')} {error.get('message', '')}"
                )
                if response.status_code == 401 and not renewed:
                    self._token = {**(self._token or {}), "expires_at": 0}  # revoked early: renew once
                    renewed = True
                    continue
                if response.status_code == 429 or response.status_code >= 500:
                    failure = RetryableError(message.strip(), retry_after=_seconds(response.headers.get("Retry-After")))
                else:
                    raise VkAdsError(message.strip())
            attempt += 1
            if attempt >= MAX_ATTEMPTS:
                raise failure
            wait = getattr(failure, "retry_after", None) or backoff(attempt, base=1.0)
            if deadline.seconds_left() < wait + 5:
                raise failure
            self.sleep(wait)


class _Unbounded:
    """Listing the account happens before any chunk; the importer bounds the run."""

    def seconds_left(self) -> float:
        return float("inf")


def _count(value: Any) -> int:
    """``shows`` and ``clicks``: whole numbers, sent as JSON integers (or their decimal text)."""
    if value in (None, ""):
        return 0
    if isinstance(value, bool) or not re.fullmatch(r"[0-9]{1,18}", str(value)):
        raise VkAdsError(f"VK Ads sent {str(value)[:40]!r} where a count belongs")
    return int(value)


def _reason(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return invalid_reason(error)
    if isinstance(error, KeyError):
        return f"no {error.args[0]!r}"
    return f"{type(error).__name__}: {error}"[:300]


def _money(value: Any) -> Decimal:
    if value in (None, ""):
        return Decimal("0")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise VkAdsError(f"VK Ads sent {value!r} where money belongs") from None
    if not amount.is_finite():
        raise VkAdsError(f"VK Ads sent {value!r} where money belongs")
    return amount


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _json(response: requests.Response) -> dict:
    try:
        payload = response.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
