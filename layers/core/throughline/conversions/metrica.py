"""Yandex Metrica offline conversions (management API v1).

Protocol (yandex.com/dev/metrika/en/management/offline-conv, openapi/offline_conversions/upload_1, findById_1):
- ``Authorization: OAuth <token>``; the API base is ``METRICA_API_URL`` (``https://api-metrika.yandex.net/management/v1/``).
- ``POST counter/{counterId}/offline_conversions/upload`` with a multipart ``file``: a UTF-8 CSV whose first line names
  the columns — an identifier (``ClientId``, ``Yclid``, ``UserId`` or ``PurchaseId``), ``Target`` (the goal's id),
  ``DateTime`` (Unix time, only in the past), optionally ``Price`` and ``Currency`` (ISO 4217). One file per
  identifier column here (``client_id_type`` names it, as community clients send it). The answer's ``uploading``
  carries ``id`` and ``status``; processing takes up to two hours.
- ``GET counter/{counterId}/offline_conversions/uploadings`` (findAll_1) lists the counter's uploads with their
  ``comment``: each file is sent with a comment unique to it, so a file whose answer was lost (or whose run died
  before recording it) is found there instead of being uploaded twice.
- ``GET counter/{counterId}/offline_conversions/uploading/{id}`` → ``{"uploading": {"status", …}}``: ``UPLOADED``
  until processed, then ``PROCESSED`` or ``LINKAGE_FAILURE`` (nothing could be joined to visits).
- ``GET counter/{counterId}/offline_conversions/visit_join_threshold``: how far back conversions join visits (21 days
  by default; ``POST …/extended_threshold`` extends it). Conversions older than that are refused before sending.
- ``GET counter/{counterId}/goals``: the goal must exist and be a JavaScript-event goal (``type: action``) whose
  condition *matches* (``exact``) the identifier sent as ``Target``.
- Errors: ``{"errors": [{"error_type", "message"}], "code", "message"}``; 429 and 5xx are worth retrying.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterable
from typing import Any

import requests

from throughline.bitrix24 import Deadline
from throughline.conversions import platforms
from throughline.conversions.platforms import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    Item,
    PlatformError,
    Rejected,
    RetryableError,
    money,
    with_retries,
)
from throughline.spend.http import new_session

PLATFORM = "yandex_metrica"
DEFAULT_JOIN_DAYS = 21
LIST_PAGE = 10_000  # uploads per page of offline_conversions/uploadings (its documented default limit)
# Our identifier names → the CSV column and the client_id_type that names it.
COLUMNS = {"ym_client_id": ("ClientId", "CLIENT_ID"), "yclid": ("Yclid", "YCLID")}
PENDING_STATUSES = frozenset({"UPLOADED"})
FAILED_STATUSES = frozenset({"LINKAGE_FAILURE"})
# Only these end an upload; any other status (UPLOADED, an empty one, one added later) keeps it followed.
FINAL_STATUSES = frozenset({"PROCESSED"}) | FAILED_STATUSES


def identifier(identifiers: dict[str, str]) -> tuple[str, str] | None:
    """The id Metrica joins on: the ClientID of the visit, else the ad click's yclid."""
    for key, (column, _) in COLUMNS.items():
        value = identifiers.get(key, "").strip()
        if value and not re.fullmatch(r"\d{1,30}", value):
            continue  # a ClientID (the counter's getClientID) and a yclid are numbers
        if value:
            return column, value
    return None


def conversions_csv(items: Iterable[Item]) -> bytes:
    """One file: the identifier column (all items share it), Target, DateTime, Price, Currency."""
    items = list(items)
    columns = {item.identifier[0] for item in items}
    if len(columns) != 1:
        raise ValueError("one identifier column per file")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([columns.pop(), "Target", "DateTime", "Price", "Currency"])
    for item in items:
        conversion = item.conversion
        # Always a price and its currency (0.00 for a deal without an amount): the docs do not say an empty cell is
        # allowed in a column the file names.
        writer.writerow([item.identifier[1], item.goal, int(conversion.at.timestamp()), money(conversion.amount),
                         conversion.currency])  # fmt: skip
    return out.getvalue().encode("utf-8")


class MetricaClient:
    def __init__(self, token: str, counter_id: str, api_url: str, session: requests.Session | None = None):
        self._token = token
        self.counter_id = counter_id
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.session = session or new_session()

    def __repr__(self) -> str:
        return f"MetricaClient(counter={self.counter_id})"

    def _url(self, path: str) -> str:
        return f"{self.api_url}counter/{self.counter_id}/{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"OAuth {self._token}"}

    def _get(self, path: str, deadline: Deadline) -> dict[str, Any]:
        response = with_retries(
            lambda: self.session.get(self._url(path), headers=self._headers(), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)),
            _classify,
            deadline,
        )
        return response.json()

    def join_threshold_days(self, deadline: Deadline) -> int:
        """The counter's join window in days. The stored docs show the method but not its body's shape: a number
        of days, or a text naming one (``…21…``), is read; anything else means the documented default, 21."""
        value = self._get("offline_conversions/visit_join_threshold", deadline).get("visit_join_threshold")
        found = re.search(r"\d+", str(value if value is not None else ""))
        return int(found.group()) if found and 0 < int(found.group()) <= 366 else DEFAULT_JOIN_DAYS

    def check_goal(self, goal: str, deadline: Deadline) -> str | None:
        """Why ``goal`` cannot receive offline conversions (None: it can)."""
        goals = self._get("goals", deadline).get("goals") or []
        for candidate in goals:
            conditions = candidate.get("conditions") or []
            if any(str(c.get("url")) == goal for c in conditions):
                if candidate.get("type") != "action":
                    return f"goal {goal} is a {candidate.get('type')} goal; offline conversions need a JavaScript event"
                if not any(c.get("type") == "exact" and str(c.get("url")) == goal for c in conditions):
                    return f"goal {goal}: its JavaScript event condition must be «matches» (exact) {goal}"
                return None
            if str(candidate.get("id")) == goal:
                return f"METRICA_GOAL {goal} is a goal's number; give its JavaScript event identifier instead"
        return f"goal {goal} does not exist on counter {self.counter_id}"

    def upload(self, items: list[Item], deadline: Deadline, comment: str = "throughline") -> dict[str, Any]:
        """Upload one file; the ``uploading`` object (``id``, ``status``). An upload is not idempotent: when an attempt
        fails in a way worth retrying (a 5xx, a lost answer), the file may have arrived all the same, so the counter's
        uploads are searched for ``comment`` (unique per file) before it is sent again."""
        body = conversions_csv(items)
        id_type = next(t for column, t in COLUMNS.values() if column == items[0].identifier[0])

        def send() -> requests.Response:
            return self.session.post(
                self._url("offline_conversions/upload"),
                params={"client_id_type": id_type, "comment": comment},
                files={"file": ("conversions.csv", body, "text/csv")},
                headers=self._headers(),
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )

        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                response = with_retries(send, _classify, deadline, attempts=1)
                break
            except RetryableError:
                found = self.find_upload(comment, deadline)
                if found:
                    return found
                pause = platforms.backoff(attempt)
                if attempt == attempts or deadline.seconds_left() < pause + CONNECT_TIMEOUT + 5:
                    raise
                time.sleep(pause)
        uploading = response.json().get("uploading") or {}
        if "id" not in uploading:
            raise PlatformError("Metrica answered the upload without an uploading id")
        return uploading

    def find_upload(self, comment: str, deadline: Deadline) -> dict[str, Any] | None:
        """The counter's upload whose comment is ``comment`` (``GET …/offline_conversions/uploadings``, paged by
        ``limit`` / ``offset``: an hourly run makes thousands of uploads a year), if any."""
        offset = 0
        while True:
            page = self._get(f"offline_conversions/uploadings?limit={LIST_PAGE}&offset={offset}", deadline)
            uploadings = page.get("uploadings") or []
            for uploading in uploadings:
                if isinstance(uploading, dict) and uploading.get("comment") == comment and "id" in uploading:
                    return uploading
            if len(uploadings) < LIST_PAGE:
                return None
            offset += LIST_PAGE

    def uploading(self, upload_id: str, deadline: Deadline) -> dict[str, Any]:
        return self._get(f"offline_conversions/uploading/{upload_id}", deadline).get("uploading") or {}


def _classify(response: requests.Response) -> None:
    if response.status_code == 200:
        return
    reason = _reason(response)
    if response.status_code == 429 or response.status_code >= 500:
        raise RetryableError(f"Metrica answered {response.status_code}: {reason}")
    if response.status_code == 400:
        raise Rejected(f"Metrica answered 400: {reason}")
    raise PlatformError(f"Metrica answered {response.status_code}: {reason}")


def _reason(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.reason or "no details"
    errors = payload.get("errors") or []
    if errors:
        return "; ".join(f"{e.get('error_type')}: {e.get('message')}" for e in errors if isinstance(e, dict))
    return str(payload.get("message") or response.reason)
