"""Yandex Audience API sandbox (api-audience.yandex.ru/v1/management/): CRM segments uploaded from a file.

Follows yandex.ru/dev/audience (ref/openapi/segments/uploadCsvFile, confirm, modifyData) and the file requirements
(yandex.com/support/audience/file, /dev/audience/doc/intro/data-requirements):
- ``Authorization: OAuth <token>`` on every call; a missing or unknown token gets 401 (``invalid_token``).
- ``POST segments/upload_csv_file``: ``multipart/form-data`` with one part ``file``; a UTF-8 CSV whose first line
  names the fields, with ``phone`` or ``email`` among them; at least 100 records ("There must be at least 100 entries
  in the file"), at most 1 GB. Answers ``{"segment": {"id", "status": "uploaded", …}}``; the segment is unusable
  until confirmed.
- ``POST segment/{id}/confirm`` (JSON ``{"segment": {"id", "name", "hashed", "hashing_alg", "content_type"}}``):
  ``content_type`` ``crm`` for a CRM file; ``hashed: true`` makes every value a hash of ``hashing_alg``
  (``SHA256``; MD5 uploads are refused since January 2025) — a value that is not such a hash is refused.
- ``POST segment/{id}/modify_data?modification_type=replace|addition|subtraction`` with a multipart ``file``: new
  data for a confirmed segment of the same content type, hashed as it was confirmed. A ``replace`` file is the
  segment's whole data, so the file requirements' minimum (100 records) holds for it too (not verified against the
  live API: the modifyUploadingData page states no minimum of its own).
- ``GET segments`` lists the segments.
Errors: ``{"errors": [{"error_type", "message"}], "code", "message"}``. Simplification: processing is instant
(status ``is_processed`` right after a confirm or a modification).
"""

from __future__ import annotations

import csv
import io
import json
import re
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from local.ad_sandboxes.base import SandboxServer, json_answer

MIN_RECORDS = 100
MAX_BYTES = 1 << 30
HASH_PATTERNS = {"SHA256": re.compile(r"^[0-9a-f]{64}$")}
PREFIX = "/v1/management/"


class YandexAudienceSandbox(SandboxServer):
    name = "yandex-audience-sandbox"

    def __init__(self, *, token: str = "audience-sandbox-token", **server: Any):
        super().__init__(**server)
        self.token = token
        self.segments: dict[int, dict[str, Any]] = {}  # id → {name, status, content_type, hashed, rows, header}
        self.uploads: list[bytes] = []  # every file received, as received
        self.faults: list[int] = []  # HTTP statuses answered to the next calls (an outage; 0 lets a call pass)
        self._next_id = 9_000_001

    @property
    def api_url(self) -> str:
        return f"{self.url}{PREFIX}"

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict, Any]:
        parts = urlsplit(path)
        query = dict(parse_qsl(parts.query))
        if headers.get("authorization", "") != f"OAuth {self.token}":
            return _error(401, "invalid_token", "Invalid oauth_token")
        with self.lock:
            status = self.faults.pop(0) if self.faults else 0
            if status:  # 0: this call passes (a fault for a later call of a sequence)
                return _error(status, "backend_error" if status >= 500 else "quota", "Try again later")
        route = parts.path.removeprefix(PREFIX)
        if method == "GET" and route == "segments":
            with self.lock:
                return json_answer(200, {"segments": [_public(i, s) for i, s in self.segments.items()]})
        if method != "POST":
            return _error(405, "invalid_parameter", "Method not allowed")
        if route == "segments/upload_csv_file":
            return self._upload(headers, body)
        match = re.fullmatch(r"segment/(\d+)/(confirm|modify_data)", route)
        if not match:
            return _error(404, "not_found", f"Unknown resource {parts.path}")
        segment_id = int(match.group(1))
        with self.lock:
            segment = self.segments.get(segment_id)
        if segment is None:
            return _error(404, "not_found", f"Segment {segment_id} not found")
        if match.group(2) == "confirm":
            return self._confirm(segment_id, segment, headers, body)
        return self._modify(segment_id, segment, headers, body, query)

    # -- methods ----------------------------------------------------------------------------------------------------

    def _upload(self, headers: dict[str, str], body: bytes) -> tuple[int, dict, bytes]:
        error, header, rows = _file(headers, body)
        if error:
            return error
        if len(rows) < MIN_RECORDS:
            return _error(400, "invalid_parameter", f"There must be at least {MIN_RECORDS} entries in the file")
        with self.lock:
            self.uploads.append(body)
            segment_id = self._next_id
            self._next_id += 1
            self.segments[segment_id] = {"name": None, "status": "uploaded", "header": header, "rows": rows,
                                         "content_type": None, "hashed": None}  # fmt: skip
            return json_answer(200, {"segment": _public(segment_id, self.segments[segment_id])})

    def _confirm(self, segment_id: int, segment: dict, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        if not headers.get("content-type", "").startswith("application/json"):
            return _error(400, "invalid_parameter", "The body must be application/json")
        try:
            request = json.loads(body)["segment"]
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid_json", 'The body must be {"segment": {…}}')
        if segment["status"] != "uploaded":
            return _error(400, "invalid_parameter", "The segment is already confirmed")
        if request.get("content_type") != "crm":
            return _error(400, "invalid_parameter", "content_type must be one of idfa_gaid, mac, crm (crm here)")
        name = str(request.get("name") or "").strip()
        if not name:
            return _error(400, "invalid_parameter", "name is required")
        hashed = request.get("hashed")
        if not isinstance(hashed, bool):
            return _error(400, "invalid_parameter", "hashed must be true or false")
        if hashed:
            problem = _hash_problem(request.get("hashing_alg"), segment["header"], segment["rows"])
            if problem:
                return _error(400, "invalid_parameter", problem)
        with self.lock:
            segment.update(name=name, status="is_processed", content_type="crm", hashed=hashed,
                           hashing_alg=request.get("hashing_alg") if hashed else None)  # fmt: skip
            return json_answer(200, {"segment": _public(segment_id, segment)})

    def _modify(self, segment_id: int, segment: dict, headers: dict, body: bytes, query: dict) -> tuple[int, dict, Any]:
        kind = query.get("modification_type")
        if kind not in ("replace", "addition", "subtraction"):
            return _error(400, "invalid_parameter", "modification_type must be addition, subtraction or replace")
        if segment["status"] == "uploaded":
            return _error(400, "invalid_parameter", "The segment is not confirmed")
        error, header, rows = _file(headers, body)
        if error:
            return error
        if kind == "replace" and len(rows) < MIN_RECORDS:  # the whole data: the file requirements' minimum holds
            return _error(400, "invalid_parameter", f"There must be at least {MIN_RECORDS} entries in the file")
        if segment["hashed"]:
            problem = _hash_problem(segment.get("hashing_alg"), header, rows)
            if problem:
                return _error(400, "invalid_parameter", problem)
        with self.lock:
            self.uploads.append(body)
            if kind == "replace":
                segment.update(header=header, rows=rows)
            elif kind == "addition":
                segment["rows"] = segment["rows"] + rows
            else:
                segment["rows"] = [row for row in segment["rows"] if row not in rows]
            segment["status"] = "is_processed"
            return json_answer(200, {"segment": _public(segment_id, segment)})


def _file(headers: dict[str, str], body: bytes) -> tuple[Any, list[str], list[dict[str, str]]]:
    """(an error answer or None, the header, the records)."""
    content_type = headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return _error(400, "invalid_parameter", "The file must be sent as multipart/form-data"), [], []
    if len(body) > MAX_BYTES:
        return _error(400, "invalid_parameter", "The file is larger than 1 GB"), [], []
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    files = [part for part in message.iter_parts() if part.get_param("name", header="content-disposition") == "file"]
    if len(files) != 1:
        return _error(400, "invalid_parameter", "Exactly one multipart part named file is required"), [], []
    try:
        text = files[0].get_payload(decode=True).decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "invalid_parameter", "The file must be UTF-8"), [], []
    lines = [line for line in csv.reader(io.StringIO(text)) if line]
    if not lines:
        return _error(400, "invalid_parameter", "The file is empty"), [], []
    header = [name.strip() for name in lines[0]]
    if "phone" not in header and "email" not in header:
        problem = "The first line must name the fields, phone or email among them"
        return _error(400, "invalid_parameter", problem), [], []
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if len(line) != len(header):
            problem = f"Line {number} has {len(line)} fields, the header {len(header)}"
            return _error(400, "invalid_parameter", problem), [], []
        row = dict(zip(header, line, strict=True))
        if not row.get("phone") and not row.get("email"):
            return _error(400, "invalid_parameter", f"Line {number} has neither phone nor email"), [], []
        rows.append(row)
    return None, header, rows


def _hash_problem(algorithm: Any, header: list[str], rows: list[dict[str, str]]) -> str | None:
    if algorithm == "MD5":
        return "MD5 hashes are no longer accepted; use SHA256"
    pattern = HASH_PATTERNS.get(str(algorithm))
    if pattern is None:
        return "hashing_alg must be SHA256 for hashed data"
    for number, row in enumerate(rows, start=2):
        for field in ("phone", "email"):
            if row.get(field) and not pattern.match(row[field]):
                return f"Line {number}: {field} is not a {algorithm} hash"
    return None


def _public(segment_id: int, segment: dict[str, Any]) -> dict[str, Any]:
    return {"id": segment_id, "name": segment["name"], "type": "uploading", "status": segment["status"],
            "content_type": segment["content_type"], "hashed": segment["hashed"],
            "item_quantity": len(segment["rows"])}  # fmt: skip


def _error(status: int, kind: str, message: str) -> tuple[int, dict, bytes]:
    return json_answer(status, {"errors": [{"error_type": kind, "message": message}], "code": status,
                                "message": message})  # fmt: skip
