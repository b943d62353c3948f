"""Yandex Direct Reports API v5 over ``requests``: daily spend per campaign (or ad group) as TSV.

Protocol (yandex.com/dev/direct/doc/en/reports): POST ``<api>/reports`` with ``{"params": …}``; 200 is the report,
201/202 mean it was queued or is being built offline — send the identical request again after ``retryIn`` seconds.
The report name is derived from the request and the run's date, so a run that stops waiting leaves a report the
next run's identical request collects, while tomorrow's restatement asks for fresh figures. Money comes as
currency with ``returnMoneyInMicros: false``; statistics are in Moscow time; the currency comes from Clients.get.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from pydantic import ValidationError

from throughline.spend.http import CONNECT_TIMEOUT, MAX_ATTEMPTS, READ_TIMEOUT, PlatformError, RetryableError, backoff
from throughline.spend.importer import Deadline, NotReady
from throughline.spend.plan import Chunk
from throughline.spend.rows import SpendRow, invalid_reason

PLATFORM = "yandex_direct"
TIMEZONE = "Europe/Moscow"  # Direct reports statistics in Moscow time whatever the campaign's zone
CAMPAIGN_FIELDS = ["Date", "CampaignId", "CampaignName", "Impressions", "Clicks", "Cost"]
AD_GROUP_FIELDS = ["Date", "CampaignId", "CampaignName", "AdGroupId", "AdGroupName", "Impressions", "Clicks", "Cost"]
# A report holds at most this many rows unless Page.Limit says otherwise (the spec): one that reaches it may be cut.
ROW_LIMIT = 1_000_000
TEXT_FIELDS = {"CampaignName", "AdGroupName"}  # the values a user types: the only ones a tab or a quote can be in
MAX_LINES_PER_ROW = 20  # a quoted value spanning more lines than this is no name: the report is refused
MAX_LINE_CHARS = 1_000_000  # a report line longer than this is no row (names are short): refused, not held
# Backslash escapes as ClickHouse's TabSeparated writes them; an unknown one (``\x``) stays as it is.
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\", "0": "\0", "b": "\b", "f": "\f", "'": "'"}
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
RETRY_CODES = {52, 56, 506, 1000, 1001, 1002, 9000}  # auth server busy, limits, queue full, server errors
ERROR_HINTS = {
    53: "the OAuth token is invalid or expired — issue a new YANDEX_DIRECT_TOKEN",
    54: "no rights — is the login a client of this agency, and does the token belong to it?",
    58: "the application's API access is not approved yet",
    152: "not enough API points (units) left today",
    513: "this login is not connected to Yandex Direct",
    8000: "the request is invalid",
    9000: "too many offline reports in the queue",
}


class YandexDirectError(PlatformError):
    def __init__(self, code: int, message: str, detail: str, request_id: str | None):
        hint = ERROR_HINTS.get(code)
        text = f"Yandex Direct error {code}: {message}" + (f" — {detail}" if detail else "")
        text += f" ({hint})" if hint else ""
        text += f" [request {request_id}]" if request_id else ""
        super().__init__(text)
        self.code = code


class YandexDirectSource:
    platform = PLATFORM

    def __init__(
        self,
        token: str,
        api_url: str,
        client_logins: tuple[str, ...] = (),
        *,
        include_vat: bool = False,
        ad_groups: bool = False,
        run_date: date | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        chunk_days: int = 31,
        ingested_at: datetime | None = None,
    ):
        self._token = token
        self._api = api_url if api_url.endswith("/") else api_url + "/"
        self.client_logins = tuple(client_logins)
        self.include_vat = include_vat
        self.fields = AD_GROUP_FIELDS if ad_groups else CAMPAIGN_FIELDS
        self.run_date = run_date or date.today()
        self.session = session or requests.Session()
        self.sleep = sleep
        self.chunk_days = chunk_days
        self.ingested_at = ingested_at
        self._currencies: dict[str, str] = {}
        self.requests_sent = 0

    def __repr__(self) -> str:  # never the token
        return f"YandexDirectSource(logins={self.client_logins!r})"

    # -- accounts ---------------------------------------------------------------------------------------------------

    def accounts(self) -> list[str]:
        """Agency: the configured client logins. Direct advertiser: the token's own login (from Clients.get)."""
        if self.client_logins:
            return list(self.client_logins)
        login, currency = self._client_info(None)
        self._currencies[login] = currency
        return [login]

    def _client_info(self, client_login: str | None) -> tuple[str, str]:
        body = {"method": "get", "params": {"FieldNames": ["Login", "Currency"]}}
        response = self._post("clients", body, client_login, {})
        payload = response.json()
        if "error" in payload:
            raise _error(payload["error"])
        clients = payload.get("result", {}).get("Clients", [])
        if not clients:
            raise PlatformError("Yandex Direct Clients.get returned no client")
        return clients[0]["Login"], clients[0]["Currency"]

    def currency(self, login: str) -> str:
        if login not in self._currencies:
            self._currencies[login] = self._client_info(login if self.client_logins else None)[1]
        return self._currencies[login]

    # -- reports ----------------------------------------------------------------------------------------------------

    def report_request(self, chunk: Chunk) -> dict[str, Any]:
        params: dict[str, Any] = {
            "SelectionCriteria": {"DateFrom": chunk.date_from.isoformat(), "DateTo": chunk.date_to.isoformat()},
            "FieldNames": list(self.fields),
            "ReportType": "CUSTOM_REPORT",
            "DateRangeType": "CUSTOM_DATE",
            "Format": "TSV",
            "IncludeVAT": "YES" if self.include_vat else "NO",
            "IncludeDiscount": "NO",
        }
        # Same request on the same day → same name (the next run collects an unfinished report); a new day or other
        # parameters → a new name (Direct refuses one name for different parameters).
        digest = hashlib.sha256(
            json.dumps([chunk.account_id, self.run_date.isoformat(), params], sort_keys=True).encode()
        ).hexdigest()[:24]
        params["ReportName"] = f"throughline-{digest}"
        return {"params": params}

    def fetch(self, chunk: Chunk, deadline: Deadline) -> Iterator[SpendRow]:
        currency = self.currency(chunk.account_id)
        body = self.report_request(chunk)
        headers = {
            "processingMode": "auto",
            "returnMoneyInMicros": "false",
            "skipReportHeader": "true",
            # The summary line (the number of rows) is kept: it is the only proof that the whole report arrived.
        }
        login = chunk.account_id if self.client_logins else None
        attempt = 0
        while True:
            response = self._post("reports", body, login, headers, stream=True)
            if response.status_code == 200:
                response.encoding = "utf-8"  # reports are UTF-8; requests would guess Latin-1 for a bare text/* type
                chunks = response.iter_content(chunk_size=64 * 1024, decode_unicode=True)
                yield from self.parse(_lines(chunks), chunk.account_id, currency)
                return
            if response.status_code in (201, 202):
                wait = _seconds(response.headers.get("retryIn"), default=5.0)
                response.close()
                if deadline.seconds_left() < wait + 5:
                    raise NotReady(f"report {body['params']['ReportName']} still being built")
                self.sleep(wait)
                continue
            error = _error_from(response)
            attempt += 1
            if not error.retryable or attempt >= MAX_ATTEMPTS:
                raise error
            wait = error.retry_after or backoff(attempt, base=5.0)
            if deadline.seconds_left() < wait + 5:
                raise error
            self.sleep(wait)

    def parse(self, lines: Iterator[str], account_id: str, currency: str) -> Iterator[SpendRow]:
        """Rows of a TSV report: the column header first (columns are read by name, not position), the statistics,
        and the summary line with their number last. A report without its summary, or whose summary disagrees with
        the rows read, was cut short and is refused whole (nothing of the chunk is stored).

        How Direct writes a tab, a line break or a quote inside a name is not documented (the docs say TSV, whose
        IANA registration allows neither a tab nor a line break in a value). Both plausible forms are read: backslash
        escapes (``\\t``, ``\\n``, ``\\\\`` as ClickHouse's TabSeparated writes them) and CSV-style quoting (a value in
        ``"…"`` with its quotes doubled, which may span lines). A row whose columns still do not add up is refused
        with its line number, never read shifted."""
        # Split by hand: the csv module refuses a carriage return inside a value, which a name may hold.
        lines = iter(lines)
        first = next(lines, None)
        if first is None:
            raise PlatformError("Yandex Direct sent an empty report (not even the column names)")
        header = first.removeprefix("\ufeff").removesuffix("\r").split("\t")  # a BOM is no part of a name
        missing = [name for name in self.fields if name not in header]
        if missing:
            raise PlatformError(f"Yandex Direct report lacks columns {missing}")
        position = {name: header.index(name) for name in self.fields}
        count, summary, number = 0, None, 1
        for line in lines:
            number += 1
            start = number
            values = line.removesuffix("\r").split("\t")
            if not values or values == [""]:
                continue
            if summary is not None:
                raise PlatformError("Yandex Direct report has rows after its summary line")
            if len(values) == 1:
                # ASCII digits, few enough for int(): "Total rows: ٣" or 5,000 digits are no summary Direct writes.
                found = re.search(r"(?<![0-9])([0-9]{1,12})\s*$", values[0])
                if not found:
                    raise PlatformError(
                        f"Yandex Direct report line {number} {values[0][:80]!r} is neither a row nor a summary"
                    )
                summary = int(found.group(1))
                continue
            quoted = False
            if len(values) != len(header):
                # A tab or a line break inside a quoted value: read the record as CSV-style quoted fields.
                record, (fields, state) = line, _quoted_fields(line)
                while state == "open" and number - start < MAX_LINES_PER_ROW:
                    following = next(lines, None)
                    if following is None:
                        break
                    number += 1
                    record += "\n" + following
                    fields, state = _quoted_fields(record)
                if state != "ok" or len(fields) != len(header):
                    raise PlatformError(
                        f"Yandex Direct report line {start} has {len(values)} columns, expected {len(header)} (a tab"
                        f" or line break in a name, not escaped?): {line[:120]!r}"
                    )
                values, quoted = fields, True
            field = {name: values[index] for name, index in position.items()}
            for name in TEXT_FIELDS & field.keys():
                field[name] = _unescape(field[name] if quoted else _unquote(field[name]))
            if not re.fullmatch(r"[0-9]{1,20}", field["CampaignId"]):  # Direct's ids are numbers: a shifted row is not
                raise PlatformError(
                    f"Yandex Direct report line {start}: {field['CampaignId'][:40]!r} is no campaign id"
                )
            count += 1
            yield _row(
                count,
                date=_date(field["Date"]),
                platform=PLATFORM,
                account_id=account_id,
                campaign_id=field["CampaignId"],
                campaign_name=_text(field["CampaignName"]) or "",
                impressions=_count(field["Impressions"]),
                clicks=_count(field["Clicks"]),
                cost=_money(field["Cost"]),
                currency=currency,
                include_vat=self.include_vat,
                account_timezone=TIMEZONE,
                ingested_at=self.ingested_at or datetime.now().astimezone(),
                ad_group_id=_text(field.get("AdGroupId", "--")),
                ad_group_name=_text(field.get("AdGroupName", "--")),
            )
        if summary is None:
            raise PlatformError(f"Yandex Direct report ended after {count} rows without its summary line (cut short)")
        if summary != count:
            raise PlatformError(f"Yandex Direct report summary says {summary} rows, {count} arrived")
        if count >= ROW_LIMIT:
            raise PlatformError(
                f"Yandex Direct report reached its {ROW_LIMIT} row limit and may be cut: import fewer days at a time"
            )

    # -- transport --------------------------------------------------------------------------------------------------

    def _post(
        self, service: str, body: dict, client_login: str | None, extra: dict[str, str], stream: bool = False
    ) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept-Language": "en",
            "Content-Type": "application/json; charset=utf-8",
            **extra,
        }
        if client_login:
            headers["Client-Login"] = client_login
        self.requests_sent += 1
        try:
            return self.session.post(
                self._api + service,
                data=json.dumps(body),
                headers=headers,
                stream=stream,
                timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            )
        except requests.RequestException as error:
            raise RetryableError(f"Yandex Direct unreachable: {type(error).__name__}") from None


def _row(number: int, **values: Any) -> SpendRow:
    """A report row as a spend row; one the row cannot be (a negative cost, a date before the Athena tables, a cost
    past decimal(18,6)) refuses the report with its line, as any other bad value does."""
    try:
        return SpendRow(**values)
    except ValueError as error:  # pydantic's ValidationError
        raise PlatformError(f"Yandex Direct report row {number}: {_reason(error)}") from None


def _reason(error: ValueError) -> str:
    return invalid_reason(error) if isinstance(error, ValidationError) else str(error)


def _error_from(response: requests.Response) -> PlatformError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    response.close()
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        error = _error(payload["error"])
        if response.status_code in (500, 502) and not error.retryable:
            return RetryableError(str(error))
        return error
    message = f"Yandex Direct answered HTTP {response.status_code}"
    return RetryableError(message) if response.status_code >= 500 else PlatformError(message)


def _error(error: dict) -> PlatformError:
    code = int(error.get("error_code", 0))
    failure = YandexDirectError(
        code, str(error.get("error_string", "")), str(error.get("error_detail", "")), error.get("request_id")
    )
    if code in RETRY_CODES:
        return RetryableError(str(failure), retry_after=10.0)
    return failure


def _lines(chunks: Iterable[str]) -> Iterator[str]:
    """The report's lines, cut at "\\n" only. Not ``iter_lines()``: without a delimiter it uses str.splitlines(), which
    also breaks inside a name at U+2028, U+0085, U+001C and the like; with one it yields an empty line wherever a chunk
    ends at a line's end — which shifts the line numbers an error names and adds line breaks to a quoted name."""
    pending: list[str] = []  # the current line's pieces: joined once, not copied again with every chunk
    held = 0
    for chunk in chunks:
        if "\n" not in chunk:
            pending.append(chunk)
            held += len(chunk)
            if held > MAX_LINE_CHARS:
                raise PlatformError(f"Yandex Direct sent a report line longer than {MAX_LINE_CHARS} characters")
            continue
        first, *complete, last = chunk.split("\n")
        pending.append(first)
        yield "".join(pending)
        yield from complete
        pending, held = [last], len(last)
    if "".join(pending):
        yield "".join(pending)


def _unescape(value: str) -> str:
    """``\\t``, ``\\n``, ``\\\\`` … as the characters they stand for (a backslash alone, or before another letter,
    stays)."""
    if "\\" not in value:
        return value
    return _ESCAPE.sub(lambda found: _ESCAPES.get(found.group(1), found.group(0)), value)


def _unquote(value: str) -> str:
    """A value that split cleanly but is CSV-quoted because it holds a quote (``"5"" монитор"``) or a carriage return
    (a tab or a line break would not have split cleanly; escaped, a carriage return is ``\\r``). One merely wrapped in
    quotes (``"Весна"``, a name as typed) is no quoted value: quoting it would have doubled those quotes."""
    if len(value) >= 2 and value[0] == '"' == value[-1]:
        inner = value[1:-1]
        if ('""' in inner or "\r" in inner) and '"' not in inner.replace('""', ""):
            return inner.replace('""', '"')
    return value


def _quoted_fields(record: str) -> tuple[list[str], str]:
    """A record's tab-separated fields where a field starting with ``"`` runs to its closing quote (``""`` is a quote
    inside it) and may hold tabs and line breaks. State: ``ok``; ``open`` (a quote not closed yet: the record goes on
    on the next line); ``bad`` (text after a closing quote)."""
    fields: list[str] = []
    at, end = 0, len(record)
    while True:
        if at < end and record[at] == '"':
            parts: list[str] = []
            at += 1
            while True:
                close = record.find('"', at)
                if close < 0:
                    return fields, "open"
                parts.append(record[at:close])
                if record.startswith('"', close + 1):
                    parts.append('"')
                    at = close + 2
                    continue
                at = close + 1
                break
            fields.append("".join(parts))
            if at == end:
                return fields, "ok"
            if record[at] != "\t":
                return fields, "bad"
            at += 1
        else:
            tab = record.find("\t", at)
            if tab < 0:
                fields.append(record[at:].removesuffix("\r"))
                return fields, "ok"
            fields.append(record[at:tab])
            at = tab + 1


def _date(value: str) -> date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):  # fromisoformat also takes 20260301 and 2026-W09-7
        raise PlatformError(f"Yandex Direct sent {value!r} where a date belongs")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PlatformError(f"Yandex Direct sent {value!r} where a date belongs") from None


def _text(value: str) -> str | None:
    """Direct writes ``--`` where a value does not exist (e.g. ad groups of Campaign Wizard campaigns)."""
    value = value.strip()
    return None if value in ("", "--") else value


def _count(value: str) -> int:
    text = _text(value)
    if text is None:
        return 0
    if not re.fullmatch(r"[0-9]+", text):  # str.isdigit() also takes "²" and other digits int() refuses
        raise PlatformError(f"Yandex Direct sent {value!r} where a count belongs")
    return int(text)


def _money(value: str) -> Decimal:
    text = _text(value)
    if text is None:
        return Decimal("0")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise PlatformError(f"Yandex Direct sent {value!r} where money belongs") from None
    if not amount.is_finite():
        raise PlatformError(f"Yandex Direct sent {value!r} where money belongs")
    return amount


def _seconds(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default
