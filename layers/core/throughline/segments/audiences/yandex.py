"""Yandex Audiences: an audience is a CRM segment of SHA-256-hashed phones and e-mails (see ``files.py``).

API (yandex.ru/dev/audience/en/ref/openapi/segments/…; base ``https://api-audience.yandex.ru/v1/management/``,
``Authorization: OAuth <token>``):
- new segment: ``POST segments/upload_csv_file`` (multipart ``file``; at least 100 records — a replacement too: below
  that nothing is sent and the failure says so) → ``segment.id``, then
  ``POST segment/{id}/confirm`` with ``{"segment": {"id", "name", "hashed": true, "hashing_alg": "SHA256",
  "content_type": "crm"}}``;
- an existing segment (remembered, or ``list_id`` in the configuration): ``POST segment/{id}/modify_data
  ?modification_type=replace`` with the night's file, which replaces its data; a segment that is gone (404: deleted
  in the cabinet) is created anew and the new id remembered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import requests

from throughline.segments.audiences.files import prepare, yandex_csv
from throughline.segments.audiences.http import CONNECT_TIMEOUT, READ_TIMEOUT, AudienceError, multipart
from throughline.segments.audiences.members import AudienceSync, Member

PLATFORM = "yandex"
MIN_RECORDS = 100  # "There must be at least 100 entries in the file" (uploadCsvFile)


class SegmentGone(AudienceError):
    """The segment to replace does not exist (HTTP 404)."""


class YandexAudiences:
    platform = PLATFORM

    def __init__(self, *, token: str, api_url: str, session: requests.Session | None = None, phone_region: str = "RU"):
        self._token = token
        self._api = api_url if api_url.endswith("/") else api_url + "/"
        self.session = session or requests.Session()
        self.phone_region = phone_region  # where a national number (without its country code) is read

    def __repr__(self) -> str:
        return "YandexAudiences()"

    def sync(
        self,
        name: str,
        list_id: str | None,
        members: Iterable[Member],
        created: str | None = None,
        remember: Callable[[str], None] = lambda segment_id: None,
    ) -> AudienceSync:
        """``created``: the last segment made for this audience (``remember(id)`` is called right after an upload).
        When a new segment is needed — no ``list_id`` (a run cut short between the upload, the confirm and the write
        of its id) or one that is gone — that segment, if it still exists, is finished (confirmed when it was not)
        and filled instead of uploading another: no orphan in the cabinet, no new segment every night."""
        prepared = prepare(members, self.phone_region)
        body, records = yandex_csv(prepared)
        identifiers = len(prepared.phones) + len(prepared.emails)
        calls = 0
        if records < MIN_RECORDS:  # neither a new segment nor a replacement takes a smaller file
            kept = " (the segment keeps its previous data)" if list_id else ""
            raise AudienceError(f"Yandex Audiences: a segment's file takes at least {MIN_RECORDS} records; "
                                f"«{name}» has {records}{kept}")  # fmt: skip
        if list_id:
            calls += 1
            try:
                self._post(f"segment/{list_id}/modify_data?modification_type=replace", "replace the segment's data",
                           file=body)  # fmt: skip
            except SegmentGone:
                pass  # deleted in the cabinet (or a wrong list_id): a new segment is created and its id remembered
            else:
                return AudienceSync(PLATFORM, name, str(list_id), prepared.members, identifiers, 1,
                                    skipped=prepared.skipped)  # fmt: skip
        if created:
            calls += 1
            listed = self._get("segments", "list the segments").get("segments") or []
            status = next((str(item.get("status")) for item in listed if isinstance(item, dict)
                           and str(item.get("id")) == str(created)), None)  # fmt: skip
            if status is not None:
                if status == "uploaded":  # never confirmed: confirmed now, then filled with tonight's data
                    calls += 1
                    self._confirm(created, name)
                calls += 1
                self._post(f"segment/{created}/modify_data?modification_type=replace", "replace the segment's data",
                           file=body)  # fmt: skip
                return AudienceSync(PLATFORM, name, str(created), prepared.members, identifiers, calls,
                                    skipped=prepared.skipped)  # fmt: skip
        uploaded = self._post("segments/upload_csv_file", "upload the file", file=body)
        segment_id = (uploaded.get("segment") or {}).get("id")
        if segment_id is None:
            raise AudienceError("Yandex Audiences: the upload answered no segment id")
        remember(str(segment_id))
        self._confirm(segment_id, name)
        return AudienceSync(PLATFORM, name, str(segment_id), prepared.members, identifiers, calls + 2,
                            skipped=prepared.skipped)  # fmt: skip

    def _confirm(self, segment_id: Any, name: str) -> None:
        self._post(f"segment/{segment_id}/confirm", "confirm the segment",
                   json={"segment": {"id": int(segment_id), "name": name, "hashed": True, "hashing_alg": "SHA256",
                                     "content_type": "crm"}})  # fmt: skip

    def _get(self, path: str, step: str) -> dict[str, Any]:
        return self._post(path, step, method="GET")

    def _post(
        self, path: str, step: str, *, file: bytes | None = None, json: Any = None, method: str = "POST"
    ) -> dict[str, Any]:
        """One call of the API; an answer other than 200 raises ``AudienceError`` (``SegmentGone`` for 404) naming the
        step and Yandex's message (never a value: the file's rows are hashes, and the message is cut)."""
        headers = {"Authorization": f"OAuth {self._token}"}
        if file is not None:
            data, headers["Content-Type"] = multipart({}, "audience.csv", file)
        else:
            data = None
        try:
            response = self.session.request(method, self._api + path, data=data, json=json, headers=headers,
                                            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))  # fmt: skip
        except requests.RequestException as error:
            raise AudienceError(f"Yandex Audiences unreachable ({step}): {type(error).__name__}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        if response.status_code != 200:
            if response.status_code in (401, 403):
                reason = "the token was refused (YANDEX_AUDIENCE_TOKEN in the ads secret)"
            else:
                reason = str(payload.get("message") or "")[:200] if isinstance(payload, dict) else ""
            error = SegmentGone if response.status_code == 404 else AudienceError
            raise error(f"Yandex Audiences could not {step}: HTTP {response.status_code} {reason}".rstrip())
        return payload if isinstance(payload, dict) else {}
