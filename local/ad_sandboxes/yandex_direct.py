"""Yandex Direct API v5 sandbox: the Reports service (online/offline TSV) and Clients.get.

Follows yandex.com/dev/direct/doc/en/reports (spec, headers, mode, codes, report-format, money, restrictions):
- ``POST /json/v5/reports`` with ``{"params": …}``; required params checked; ``Format`` TSV; ``IncludeVAT`` YES|NO.
- ``Authorization: Bearer``; an agency token must name its client in ``Client-Login``; other logins get error 54.
- ``processingMode`` auto/offline: a report too big for online mode is queued (201), then built (202) and finally
  returned (200) to the identical request; ``retryIn`` and ``reportsInQueue`` headers; at most 5 reports queued per
  advertiser (error 9000 beyond); the same ``ReportName`` with other parameters is refused (error 4000).
- ``returnMoneyInMicros``: absent → integers × 1,000,000; ``false`` → currency with two decimals.
- ``skipReportHeader`` / ``skipColumnHeader`` / ``skipReportSummary`` drop the title line, the column names and the
  ``Total rows: N`` line. Values that do not exist are ``--``; campaign-day rows without impressions are absent.
- At most 20 report requests per 10 seconds per advertiser (error 56 beyond).
- A report holds at most ``Page.Limit`` rows (1,000,000 when not given); the summary counts the rows sent.
- ``cut_reports``: the next reports end early, cleanly, after that many rows and without the summary line — what a
  client sees when the service stops streaming a report half way; only the summary tells.
- A tab, a line break, a backslash or a quote in a campaign or ad-group name: the docs say only "TSV" (the IANA
  registration they link allows no tab or line break in a value) and do not say how Direct writes one, so the sandbox
  writes it in the form ``special_characters`` names — ``escaped`` (default: ``\\t``, ``\\n``, ``\\r``, ``\\\\`` as
  ClickHouse's TabSeparated writes them), ``quoted`` (CSV-style: such a value in ``"…"``, its quotes doubled) or
  ``raw`` (as typed: the row breaks, which the client must refuse, never read shifted).
Simplification: an offline report becomes ready after a number of polls (``offline_polls``), not after time.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from local.ad_sandboxes.base import SandboxServer, campaign_ids, daily_stats, json_answer

REQUIRED = ("SelectionCriteria", "FieldNames", "ReportName", "ReportType", "DateRangeType", "Format", "IncludeVAT")
FIELDS = {"Date", "CampaignId", "CampaignName", "AdGroupId", "AdGroupName", "Impressions", "Clicks", "Cost"}
VAT = Decimal("1.22")  # Russian VAT from 2026-01-01


@dataclass
class Advertiser:
    login: str
    currency: str = "RUB"
    campaigns: int = 5
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"key", "polls_left"}
    recent: deque = field(default_factory=deque)


class YandexDirectSandbox(SandboxServer):
    name = "yandex-direct-sandbox"

    def __init__(
        self,
        advertisers: dict[str, tuple[str, int]] | None = None,
        *,
        agency_token: str = "agency-token",
        advertiser_tokens: dict[str, str] | None = None,
        online_max_rows: int = 200,
        offline_polls: int = 2,
        retry_in: int = 1,
        queue_limit: int = 5,
        rate_limit: tuple[int, float] = (20, 10.0),
        special_characters: str = "escaped",
        **server: Any,
    ):
        if special_characters not in WRITERS:
            raise ValueError(f"special_characters must be one of {sorted(WRITERS)}")
        self.special_characters = special_characters
        super().__init__(**server)
        advertisers = advertisers or {"client-one": ("RUB", 5)}
        self.advertisers = {login: Advertiser(login, cur, n) for login, (cur, n) in advertisers.items()}
        self.agency_token = agency_token
        self.advertiser_tokens = dict(advertiser_tokens or {})
        self.online_max_rows = online_max_rows
        self.offline_polls = offline_polls
        self.retry_in = retry_in
        self.queue_limit = queue_limit
        self.rate_limit = rate_limit
        self.faults: list[tuple[int, int]] = []  # (HTTP status, error_code) answered to the next report requests
        self.cut_reports: list[int] = []  # the next reports stop after this many rows, without their summary
        self.row_limit = 1_000_000
        self.report_requests = 0
        self.max_in_queue = 0

    @property
    def api_url(self) -> str:
        return f"{self.url}/json/v5/"

    def campaigns(self, login: str) -> list[str]:
        return campaign_ids(login, self.advertisers[login].campaigns)

    def expected_cost(self, login: str, day_from: date, day_to: date, include_vat: bool = False) -> Decimal:
        return sum(
            (
                _vat(s.cost, include_vat)
                for s in daily_stats(login, self.campaigns(login), day_from, day_to, names=self.campaign_names)
            ),
            Decimal(0),
        )

    # -- HTTP -------------------------------------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        if method != "POST":
            return json_answer(405, _error(8000, "Invalid request", "Only POST is supported"))
        if path == "/json/v5/clients":
            return self._clients(headers, body)
        if path == "/json/v5/reports":
            return self._reports(headers, body)
        return json_answer(404, _error(8000, "Invalid request", f"Unknown service {path}"))

    def _authorize(self, headers: dict[str, str]) -> Advertiser | dict:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        login = headers.get("client-login")
        if token == self.agency_token:
            if not login:
                return _error(8000, "Invalid request", "Client-Login header is required for agency requests")
            if login not in self.advertisers:
                return _error(54, "No rights", f"Login {login} is not a client of the agency")
            return self.advertisers[login]
        if token in self.advertiser_tokens:
            own = self.advertiser_tokens[token]
            if login and login != own:
                return _error(54, "No rights", f"No access to login {login}")
            return self.advertisers[own]
        return _error(53, "Authorization error", "Invalid OAuth token")

    def _clients(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        who = self._authorize(headers)
        if isinstance(who, dict):
            return json_answer(200, who)  # the JSON services answer errors with HTTP 200
        try:
            request = json.loads(body)
            names = request["params"]["FieldNames"]
        except (ValueError, KeyError, TypeError):
            return json_answer(200, _error(8000, "Invalid request", "params.FieldNames is required"))
        client = {"Login": who.login, "Currency": who.currency}
        return json_answer(200, {"result": {"Clients": [{k: v for k, v in client.items() if k in names}]}})

    def _reports(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        who = self._authorize(headers)
        if isinstance(who, dict):
            return json_answer(400, who)
        with self.lock:
            self.report_requests += 1
            now = time.monotonic()
            while who.recent and now - who.recent[0] > self.rate_limit[1]:
                who.recent.popleft()
            if len(who.recent) >= self.rate_limit[0]:
                return json_answer(400, _error(56, "Request limit exceeded", "Too many report requests"))
            who.recent.append(now)
            if self.faults:
                status, code = self.faults.pop(0)
                return json_answer(status, _error(code, "Server error" if status >= 500 else "Limit", "Try later"))
        try:
            params = json.loads(body)["params"]
        except (ValueError, KeyError, TypeError):
            return json_answer(400, _error(8000, "Invalid request", 'The body must be {"params": {...}}'))
        problem = _validate(params)
        if problem:
            return json_answer(400, _error(8000, "Invalid request", problem))
        name = params["ReportName"]
        key = json.dumps({k: v for k, v in params.items() if k != "ReportName"}, sort_keys=True)
        day_from = date.fromisoformat(params["SelectionCriteria"]["DateFrom"])
        day_to = date.fromisoformat(params["SelectionCriteria"]["DateTo"])
        mode = headers.get("processingmode", "auto")
        size = ((day_to - day_from).days + 1) * who.campaigns
        with self.lock:
            known = who.reports.get(name)
            if known and known["key"] != key:
                return json_answer(
                    400,
                    _error(
                        4000,
                        "Invalid request parameters",
                        f"A report named {name} with other parameters already exists",
                    ),
                )
            offline = mode == "offline" or (mode == "auto" and size > self.online_max_rows) or known is not None
            if offline:
                queued = sum(1 for r in who.reports.values() if r["polls_left"] > 0)
                if known is None:
                    if queued >= self.queue_limit:
                        return json_answer(
                            400,
                            _error(
                                9000, "Report queue limit exceeded", "At most 5 reports may wait in the offline queue"
                            ),
                        )
                    who.reports[name] = {"key": key, "polls_left": self.offline_polls}
                    self.max_in_queue = max(self.max_in_queue, queued + 1)
                    return self._pending(201, who)
                if known["polls_left"] > 0:
                    known["polls_left"] -= 1
                    if known["polls_left"] > 0:
                        return self._pending(202, who)
            elif mode == "online" and size > self.online_max_rows:
                return json_answer(400, _error(8000, "Invalid request", "The report is too big for online mode"))
        # No charset parameter: the client must know reports are UTF-8 rather than trust a default.
        return 200, {"Content-Type": "text/tab-separated-values"}, self._tsv(who, params, headers)

    def _pending(self, status: int, who: Advertiser) -> tuple[int, dict, bytes]:
        queued = sum(1 for r in who.reports.values() if r["polls_left"] > 0)
        return status, {"retryIn": str(self.retry_in), "reportsInQueue": str(queued)}, b""

    def _tsv(self, who: Advertiser, params: dict, headers: dict[str, str]) -> Iterator[bytes]:
        fields = params["FieldNames"]
        micros = headers.get("returnmoneyinmicros", "true").lower() != "false"
        vat = params["IncludeVAT"] == "YES"
        day_from = date.fromisoformat(params["SelectionCriteria"]["DateFrom"])
        day_to = date.fromisoformat(params["SelectionCriteria"]["DateTo"])
        if headers.get("skipreportheader", "false").lower() != "true":
            yield f'"{params["ReportName"]} ({day_from} - {day_to})"\n'.encode()
        if headers.get("skipcolumnheader", "false").lower() != "true":
            yield ("\t".join(fields) + "\n").encode()
        count = 0
        batch: list[str] = []
        grouped = "AdGroupId" in fields
        limit = int((params.get("Page") or {}).get("Limit") or self.row_limit)
        with self.lock:
            cut = self.cut_reports.pop(0) if self.cut_reports else None
        for stat in daily_stats(who.login, self.campaigns(who.login), day_from, day_to, names=self.campaign_names):
            for row in _split_ad_groups(stat) if grouped else [_campaign_row(stat)]:
                if count == cut:
                    yield ("\n".join(batch) + "\n").encode() if batch else b""
                    return
                if count == limit:
                    break
                cost = _vat(row["Cost"], vat)
                row = {
                    **row,
                    "Cost": str(int(cost * 1_000_000)) if micros else f"{cost:.2f}",
                    "Date": stat.day.isoformat(),
                }
                write = WRITERS[self.special_characters]
                batch.append("\t".join(write(str(row[name])) if name in TEXT else str(row[name]) for name in fields))
                count += 1
            if len(batch) >= 500:
                yield ("\n".join(batch) + "\n").encode()
                batch = []
        if batch:
            yield ("\n".join(batch) + "\n").encode()
        if headers.get("skipreportsummary", "false").lower() != "true":
            yield f"Total rows: {count}\n".encode()


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _quoted(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if any(c in value for c in '\t\n\r"') else value


TEXT = {"CampaignName", "AdGroupName"}
WRITERS = {"escaped": _escaped, "quoted": _quoted, "raw": str}


def _campaign_row(stat: Any) -> dict[str, Any]:
    return {
        "CampaignId": stat.campaign_id,
        "CampaignName": stat.campaign_name,
        "Impressions": stat.impressions,
        "Clicks": stat.clicks,
        "Cost": stat.cost,
    }


def _split_ad_groups(stat: Any) -> list[dict[str, Any]]:
    base = _campaign_row(stat)
    if int(stat.campaign_id) % 3 == 0:  # a Campaign Wizard campaign: no ad groups in reports
        return [{**base, "AdGroupId": "--", "AdGroupName": "--"}]
    first_cost = (stat.cost / 2).quantize(Decimal("0.01"))
    first_impressions, first_clicks = stat.impressions // 2, stat.clicks // 2
    return [
        {
            **base,
            "AdGroupId": stat.campaign_id + "01",
            "AdGroupName": "Группа 1",
            "Impressions": first_impressions,
            "Clicks": first_clicks,
            "Cost": first_cost,
        },
        {
            **base,
            "AdGroupId": stat.campaign_id + "02",
            "AdGroupName": "Группа 2",
            "Impressions": stat.impressions - first_impressions,
            "Clicks": stat.clicks - first_clicks,
            "Cost": stat.cost - first_cost,
        },
    ]


def _vat(cost: Decimal, include_vat: bool) -> Decimal:
    return (cost * VAT).quantize(Decimal("0.01"), ROUND_HALF_UP) if include_vat else cost


def _validate(params: Any) -> str | None:
    if not isinstance(params, dict):
        return "params must be an object"
    for name in REQUIRED:
        if name not in params:
            return f"Required parameter {name} is not specified"
    if params["Format"] != "TSV":
        return "Format must be TSV"
    if params["IncludeVAT"] not in ("YES", "NO"):
        return "IncludeVAT must be YES or NO"
    if params.get("IncludeDiscount", "NO") not in ("YES", "NO"):
        return "IncludeDiscount must be YES or NO"
    if params["DateRangeType"] != "CUSTOM_DATE":
        return "The sandbox serves DateRangeType CUSTOM_DATE only"
    criteria = params["SelectionCriteria"]
    try:
        day_from, day_to = date.fromisoformat(criteria["DateFrom"]), date.fromisoformat(criteria["DateTo"])
    except (KeyError, TypeError, ValueError):
        return "SelectionCriteria.DateFrom and DateTo (YYYY-MM-DD) are required for CUSTOM_DATE"
    if day_to < day_from:
        return "DateTo is earlier than DateFrom"
    fields = params["FieldNames"]
    unknown = [name for name in fields if name not in FIELDS]
    if unknown or not fields:
        return f"Unknown field names {unknown}"
    if len(set(fields)) != len(fields):
        return "FieldNames repeat a field"
    if not 1 <= len(str(params["ReportName"])) <= 255:
        return "ReportName must be 1 to 255 characters"
    return None


def _error(code: int, string: str, detail: str) -> dict:
    return {
        "error": {
            "request_id": f"sandbox-{time.monotonic_ns()}",
            "error_code": code,
            "error_string": string,
            "error_detail": detail,
        }
    }
