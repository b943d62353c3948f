"""Yandex Metrica management API sandbox: offline conversions (upload, uploading status, join threshold) and goals.

Follows yandex.com/dev/metrika/en/management/offline-conv and openapi/offline_conversions (upload_1, findById_1):
- ``Authorization: OAuth <token>`` (403 ``access_denied`` otherwise); an unknown counter is 404.
- ``POST /management/v1/counter/{id}/offline_conversions/upload`` takes a ``multipart/form-data`` body with a
  ``file`` part: UTF-8 CSV, column names on the first line; exactly one identifier column among ``ClientId``,
  ``UserId``, ``Yclid``, ``PurchaseId`` (matching ``client_id_type`` when given); ``Target`` and ``DateTime`` required;
  ``DateTime`` a Unix time in the past; ``Price`` a decimal with a dot; ``Currency`` three capital letters (with a
  Price); every row needs its identifier; ``Target`` must be a JavaScript-event goal of the counter. A bad file is
  400 ``{"errors": [{"error_type": "invalid_parameter", "message"}], "code": 400, "message"}``. The answer:
  ``{"uploading": {"id", "source_quantity", "line_quantity", "client_id_type", "status": "UPLOADED", "comment"}}``.
- ``GET …/offline_conversions/uploading/{id}``: ``UPLOADED`` for ``processing_polls`` polls, then ``PROCESSED`` —
  or ``LINKAGE_FAILURE`` when no row's conversion joins a visit: a row joins when its identifier is among
  ``known_visitors`` (id → the visitor's last visit) and that visit is within the join window before processing (the
  docs: the time from the user's last session to processing); with no ``known_visitors`` the row's own DateTime
  stands for the visit.
- ``GET …/offline_conversions/uploadings`` → ``{"uploadings": [<the same objects>]}`` (findAll_1), paged by ``limit``
  (10 000 by default) and ``offset``.
- ``GET …/offline_conversions/visit_join_threshold`` → ``{"visit_join_threshold": <days>}`` (21 by default). The stored
  docs name the method but not its body; this shape is our reading, and the client also reads a text naming days.
- ``GET …/goals`` → ``{"goals": [{"id", "name", "type": "action", "conditions": [{"type": "exact", "url"}]}]}``.
- ``faults``: HTTP statuses answered to the next requests (an outage); ``status_faults``: to the next status requests.
Simplification: processing ends after a number of polls, not after time.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.ad_sandboxes.base import SandboxServer, json_answer

IDENTIFIER_COLUMNS = {"ClientId": "CLIENT_ID", "UserId": "USER_ID", "Yclid": "YCLID", "PurchaseId": "PURCHASE_ID"}
KNOWN_COLUMNS = {*IDENTIFIER_COLUMNS, "Target", "DateTime", "Price", "Currency"}


class MetricaSandbox(SandboxServer):
    name = "metrica-sandbox"

    def __init__(
        self,
        counter_id: str = "44147844",
        goals: dict[str, str] | None = None,
        *,
        token: str = "metrica-token",
        join_threshold_days: int = 21,
        processing_polls: int = 1,
        **server: Any,
    ):
        super().__init__(**server)
        self.counter_id = counter_id
        self.goals = dict(goals or {"deal_won": "action"})  # identifier → goal type
        self.token = token
        self.join_threshold_days = join_threshold_days
        self.processing_polls = processing_polls
        self.faults: list[int] = []
        self.status_faults: list[int] = []  # answered to the next upload-status requests only
        self.uploads: dict[int, dict[str, Any]] = {}
        # ClientIds / yclids Metrica saw → their last visit (when empty, every id is known, visited at its DateTime)
        self.known_visitors: dict[str, datetime] = {}
        self.clock = lambda: datetime.now(UTC)

    @property
    def api_url(self) -> str:
        return f"{self.url}/management/v1/"

    def rows(self) -> list[dict[str, str]]:
        """Every row of every upload, as parsed."""
        return [row for upload in self.uploads.values() for row in upload["rows"]]

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        with self.lock:
            if self.faults:
                status = self.faults.pop(0)
                return json_answer(status, _error(status, "backend_error", "Service temporarily unavailable"))
        if headers.get("authorization") != f"OAuth {self.token}":
            return json_answer(403, _error(403, "access_denied", "Access is denied"))
        parts = urlsplit(path)
        found = re.fullmatch(r"/management/v1/counter/(\d+)/(.+)", parts.path)
        if not found:
            return json_answer(404, _error(404, "not_found", "Unknown method"))
        if found.group(1) != self.counter_id:
            return json_answer(404, _error(404, "not_found", f"Counter {found.group(1)} not found"))
        query = dict(parse_qsl(parts.query))
        rest = found.group(2)
        if method == "GET" and rest == "goals":
            goals = [{"id": 1000 + n, "name": name, "type": kind, "conditions": [{"type": "exact", "url": name}]}
                     for n, (name, kind) in enumerate(sorted(self.goals.items()))]  # fmt: skip
            return json_answer(200, {"goals": goals})
        if method == "GET" and rest == "offline_conversions/visit_join_threshold":
            return json_answer(200, {"visit_join_threshold": self.join_threshold_days})
        if method == "GET" and rest == "offline_conversions/uploadings":
            try:
                limit, offset = int(query.get("limit", 10000)), int(query.get("offset", 0))
            except ValueError:
                return _invalid("limit and offset must be integers")
            with self.lock:
                page = list(self.uploads.values())[offset : offset + limit]
                return json_answer(200, {"uploadings": [_public(upload) for upload in page]})
        if method == "GET" and (uploading := re.fullmatch(r"offline_conversions/uploading/(\d+)", rest)):
            return self._status(int(uploading.group(1)))
        if method == "POST" and rest == "offline_conversions/upload":
            return self._upload(headers, body, query)
        return json_answer(404, _error(404, "not_found", "Unknown method"))

    def _status(self, upload_id: int) -> tuple[int, dict, bytes]:
        with self.lock:
            if self.status_faults:
                status = self.status_faults.pop(0)
                return json_answer(status, _error(status, "backend_error", "Service temporarily unavailable"))
            upload = self.uploads.get(upload_id)
            if upload is None:
                return json_answer(404, _error(404, "not_found", f"Uploading {upload_id} not found"))
            if upload["status"] == "UPLOADED":
                upload["polls"] += 1
                if upload["polls"] > self.processing_polls:
                    upload["status"] = "PROCESSED" if upload["joined"] else "LINKAGE_FAILURE"
            return json_answer(200, {"uploading": _public(upload)})

    def _upload(self, headers: dict[str, str], body: bytes, query: dict[str, str]) -> tuple[int, dict, bytes]:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _invalid("the file must be sent as multipart/form-data")
        message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        parts = list(message.iter_parts())
        files = [part for part in parts if part.get_param("name", header="content-disposition") == "file"]
        if len(files) != 1:
            return _invalid("exactly one multipart part named file is required")
        try:
            text = files[0].get_payload(decode=True).decode("utf-8")
        except UnicodeDecodeError:
            return _invalid("the file must be UTF-8")
        reader = csv.reader(io.StringIO(text))
        lines = [line for line in reader if line]
        if not lines:
            return _invalid("the file is empty")
        header = [name.strip() for name in lines[0]]
        unknown = [name for name in header if name not in KNOWN_COLUMNS]
        if unknown:
            return _invalid(f"unknown columns: {', '.join(unknown)}")
        ids = [name for name in header if name in IDENTIFIER_COLUMNS]
        if len(ids) != 1:
            return _invalid("the file needs exactly one identifier column: ClientId, UserId, Yclid or PurchaseId")
        if query.get("client_id_type") and IDENTIFIER_COLUMNS[ids[0]] != query["client_id_type"]:
            return _invalid(f"client_id_type {query['client_id_type']} does not match the column {ids[0]}")
        for required in ("Target", "DateTime"):
            if required not in header:
                return _invalid(f"the column {required} is required")
        now = self.clock().timestamp()
        rows: list[dict[str, str]] = []
        for number, line in enumerate(lines[1:], start=2):
            if len(line) != len(header):
                return _invalid(f"line {number}: {len(line)} values for {len(header)} columns")
            row = dict(zip(header, (value.strip() for value in line), strict=True))
            if not row[ids[0]]:
                return _invalid(f"line {number}: the {ids[0]} is empty")
            if row["Target"] not in self.goals or self.goals[row["Target"]] != "action":
                return _invalid(f"line {number}: {row['Target']} is not a JavaScript event goal of the counter")
            if not re.fullmatch(r"\d{9,11}", row["DateTime"]):
                return _invalid(f"line {number}: DateTime must be a Unix time stamp")
            if int(row["DateTime"]) > now:
                return _invalid(f"line {number}: DateTime is in the future")
            if row.get("Price"):
                try:
                    price = Decimal(row["Price"])
                except InvalidOperation:
                    return _invalid(f"line {number}: Price must be a number with a dot")
                if not price.is_finite() or price < 0 or "," in row["Price"]:
                    return _invalid(f"line {number}: Price must be a number with a dot")
                if not re.fullmatch(r"[A-Z]{3}", row.get("Currency") or ""):
                    return _invalid(f"line {number}: Currency must be an ISO 4217 code")
            rows.append(row)
        if not rows:
            return _invalid("the file has no conversions")
        window = self.join_threshold_days * 86400

        def visited(row: dict[str, str]) -> float | None:
            if not self.known_visitors:
                return float(row["DateTime"])
            last = self.known_visitors.get(row[ids[0]])
            return last.timestamp() if last else None

        joined = [row for row in rows if (at := visited(row)) is not None and now - at <= window]
        with self.lock:
            upload_id = len(self.uploads) + 1
            self.uploads[upload_id] = {
                "id": upload_id, "rows": rows, "joined": len(joined), "status": "UPLOADED", "polls": 0,
                "client_id_type": IDENTIFIER_COLUMNS[ids[0]], "comment": query.get("comment"),
            }  # fmt: skip
            return json_answer(200, {"uploading": _public(self.uploads[upload_id])})


def _public(upload: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": upload["id"],
        "source_quantity": len(upload["rows"]),
        "line_quantity": len(upload["rows"]),
        "client_id_type": upload["client_id_type"],
        "status": upload["status"],
        "comment": upload["comment"],
    }


def _error(code: int, kind: str, message: str) -> dict[str, Any]:
    return {"errors": [{"error_type": kind, "message": message}], "code": code, "message": message}


def _invalid(message: str) -> tuple[int, dict, bytes]:
    return json_answer(400, _error(400, "invalid_parameter", message))
