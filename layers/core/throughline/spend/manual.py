"""Manual spend: CSV files dropped into ``spend/manual/inbox/``, validated row by row, all or nothing.

Header ``date,utm_source,utm_medium,utm_campaign,cost,currency`` (optional ``impressions,clicks,campaign_name``),
as Excel saves it too: ``;`` separators, a UTF-8 BOM or Windows-1251, comma decimals, ``DD.MM.YYYY`` dates.
A file with any bad row is not imported: ``<file>.rejects.txt`` beside it names each row and reason. A good file
becomes ``spend/platform=manual/date=<d>/<account>.json.gz`` (account = the file's stable name) and moves to
``spend/manual/processed/``; dropping a corrected file of the same name replaces its spend, dates it no longer
lists included.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from throughline.adapters.spend_store import MANUAL_INBOX, MANUAL_PROCESSED, SpendStore
from throughline.config import Settings
from throughline.spend.importer import PlatformResult
from throughline.spend.rows import EARLIEST_DATE, MAX_COST, SpendRow

PLATFORM = "manual"
REQUIRED = ("date", "utm_source", "utm_medium", "utm_campaign", "cost", "currency")
OPTIONAL = ("impressions", "clicks", "campaign_name")
REJECTS_SUFFIX = ".rejects.txt"
MAX_FILE_BYTES = 20 * 1024 * 1024
# A file's rows are held until all of them are valid (all or nothing), about 2 KB each: 50,000 rows (136 campaigns
# every day of a year) stay near 100 MB; the 450,000 short rows 20 MB can hold took 1 GB and killed the function
# (512 MB) on every run while the file waited in the inbox.
MAX_ROWS = 50_000
NO_CAMPAIGN = "(none)"


class ManualSpendLine(BaseModel):
    """One CSV line as a marketer types it."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    date: date
    utm_source: str = Field(min_length=1, max_length=200)
    utm_medium: str = Field(min_length=1, max_length=200)
    utm_campaign: str = Field(default="", max_length=500)
    cost: Decimal = Field(ge=0, lt=MAX_COST, allow_inf_nan=False)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    impressions: int = Field(default=0, ge=0)
    clicks: int = Field(default=0, ge=0)
    campaign_name: str = Field(default="", max_length=500)

    @field_validator("date", mode="before")
    @classmethod
    def _date(cls, value: Any) -> Any:
        text = str(value).strip()
        if re.fullmatch(r"\d{2}\.\d{2}\.\d{4}", text):  # Excel in a Russian locale
            return datetime.strptime(text, "%d.%m.%Y").date()
        return text

    @field_validator("cost", mode="before")
    @classmethod
    def _money(cls, value: Any) -> Any:
        text = re.sub(r"[\s\u00a0\u202f]", "", str(value))  # thousands separators Excel puts in
        if text.count(",") == 1 and "." not in text:
            text = text.replace(",", ".")
        if not re.fullmatch(r"-?\d+(\.\d+)?", text):
            raise ValueError("not a number (use 1234.56 or 1234,56)")
        if Decimal(text).as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValueError("more than two decimals (kopecks/cents)")
        return text

    @field_validator("impressions", "clicks", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        text = re.sub(r"[\s\u00a0\u202f]", "", str(value))
        return text or "0"

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> Any:
        text = str(value).strip().upper()
        return "RUB" if text in ("RUR", "РУБ", "₽") else text


def process_inbox(store: SpendStore, settings: Settings, *, now: datetime) -> PlatformResult:
    """Import every waiting file; a rejected file stays in the inbox (with its rejects) and is reported."""
    result = PlatformResult(PLATFORM)
    for key, size in sorted(store.sizes(MANUAL_INBOX)):
        if key.endswith(REJECTS_SUFFIX) or key.endswith("/"):
            continue
        name = key[len(MANUAL_INBOX) :]
        try:
            if size > MAX_FILE_BYTES:  # refused from the listing: reading it could exhaust the function's memory
                raise ValueError(_too_big())
            body = store.get_bytes(key)
            if body is None:
                continue  # listed, then taken by another run (an inbox event beside the nightly run): it is theirs
            rows, rejects = parse_file(body, name, settings, now)
        except ValueError as error:
            rows, rejects = [], [f"file: {error}"]
        except Exception as error:  # reading it failed (S3 refused): the file waits, the others go on
            result.failures.append(f"manual file {name}: {type(error).__name__}: {error}")
            continue
        if rejects:
            store.put_bytes(key + REJECTS_SUFFIX, ("\n".join(rejects) + "\n").encode("utf-8"))
            result.failures.append(
                f"manual file {name} not imported: {len(rejects)} bad row(s), see {key}{REJECTS_SUFFIX}"
            )
            continue
        try:
            _store_file(store, key, name, rows, result)
        except Exception as error:  # one file's trouble (a vanished object, S3 refusing) leaves the others and rates
            result.failures.append(f"manual file {name}: {type(error).__name__}: {error}")
    return result


def _store_file(store: SpendStore, key: str, name: str, rows: list[SpendRow], result: PlatformResult) -> None:
    account = account_id(name)
    by_day: dict[date, list[SpendRow]] = defaultdict(list)
    for row in rows:
        by_day[row.date].append(row)
    # A file replaces its earlier version whole: every day the account holds and the new file does not list is
    # cleared — read from the stored partitions, not from the old file (which may be gone, or read differently now).
    result.rows_fetched += len(rows)
    written = 0
    try:
        for day in store.partition_days(PLATFORM, account) - set(by_day):
            store.delete_partition(PLATFORM, day, account)
        for day, day_rows in sorted(by_day.items()):
            store.write_partition(PLATFORM, day, account, (row.to_json_line() for row in day_rows))
            result.partitions += 1
            written += len(day_rows)
    except Exception as error:  # the file stays in the inbox: the next run writes it again, whole
        result.rows += written
        result.rows_not_written += len(rows) - written
        result.not_written.append(
            f"manual file {name}: storing failed ({len(rows) - written} of {len(rows)} rows not written): "
            f"{type(error).__name__}: {error}"
        )
        raise
    result.rows += len(rows)
    result.chunks_done += 1
    store.move(key, MANUAL_PROCESSED + name)
    if store.get_bytes(key + REJECTS_SUFFIX) is not None:
        store.delete(key + REJECTS_SUFFIX)


def parse_file(body: bytes, name: str, settings: Settings, now: datetime) -> tuple[list[SpendRow], list[str]]:
    """All rows of a file, or the reasons it cannot be imported (``line N: field: reason``)."""
    if len(body) > MAX_FILE_BYTES:
        raise ValueError(_too_big())
    text = _decode(body)
    first_line = text.split("\n", 1)[0]
    # The separator the header uses most: "," or ";" (Excel's CSV by locale), or a tab (Excel's "Unicode text").
    delimiter = max((",", ";", "\t"), key=first_line.count)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [(column or "").strip().lower() for column in (reader.fieldnames or [])]
    missing = [column for column in REQUIRED if column not in header]
    unknown = [column for column in header if column not in REQUIRED + OPTIONAL]
    # A column named twice would be read from its last copy only: which of two costs is the spend cannot be guessed.
    repeated = sorted({column for column in header if header.count(column) > 1})
    if missing or unknown or repeated:
        problems = (
            ([f"missing columns {missing}"] if missing else [])
            + ([f"unknown columns {unknown}"] if unknown else [])
            + ([f"columns named twice {repeated}"] if repeated else [])
        )
        raise ValueError("; ".join(problems) + f" (header: {','.join(REQUIRED + OPTIONAL)})")
    reader.fieldnames = header
    account = account_id(name)
    today = now.astimezone(settings.zone).date()
    rows, rejects = [], []
    seen: dict[tuple[Any, ...], int] = {}
    for number, raw in enumerate(_records(reader), start=2):
        if None in raw:
            rejects.append(f"line {number}: more values than columns")
            continue
        values = {key: value for key, value in raw.items() if value is not None and (key in REQUIRED or value.strip())}
        if not any((value or "").strip() for value in values.values()):
            continue  # Excel leaves empty lines at the end
        if len(rows) + len(rejects) >= MAX_ROWS:
            raise ValueError(f"more than {MAX_ROWS} rows: split it into smaller files")
        try:
            line = ManualSpendLine.model_validate(values)
        except ValidationError as error:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in error.errors())
            rejects.append(f"line {number}: {reasons}")
            continue
        if not EARLIEST_DATE <= line.date <= today:
            rejects.append(f"line {number}: date: {line.date} is not between {EARLIEST_DATE} and today ({today})")
            continue
        # One spend per date and tags (compared as the report matches them): a line pasted twice is a mistake that
        # would double the spend, and two real costs belong in one line with their sum.
        same = (line.date, *(tag.strip().lower() for tag in (line.utm_source, line.utm_medium, line.utm_campaign)),
                line.currency)  # fmt: skip
        if same in seen:
            rejects.append(f"line {number}: the same date and tags as line {seen[same]} (put the total in one line)")
            continue
        seen[same] = number
        rows.append(
            SpendRow(
                date=line.date,
                platform=PLATFORM,
                account_id=account,
                campaign_id=line.utm_campaign or NO_CAMPAIGN,
                campaign_name=line.campaign_name or line.utm_campaign,
                impressions=line.impressions,
                clicks=line.clicks,
                cost=line.cost,
                currency=line.currency,
                include_vat=settings.spend_include_vat,
                account_timezone=settings.timezone,
                ingested_at=now,
                utm_source=line.utm_source,
                utm_medium=line.utm_medium,
                utm_campaign=line.utm_campaign,
            )
        )
    if not rows and not rejects:
        rejects.append("file: no rows")
    return rows, rejects


def _records(reader: csv.DictReader) -> Iterator[dict[str, Any]]:
    """The reader's records; what the csv module cannot read (an unclosed quote running into a huge field) is the
    file's reject, not an exception that would stop the run and every later one while the file waits."""
    try:
        yield from reader
    except csv.Error as error:
        raise ValueError(f"unreadable after line {reader.line_num}: {error} (an unclosed quote?)") from None


def account_id(name: str) -> str:
    """A stable, object-name-safe id, one per file name (its folders and the case of its extension included).

    A plain ``spend-2026.csv`` keeps its stem (``spend-2026``); any other name (``Офлайн 2026.csv``, ``a/x.csv``,
    ``x.CSV``, a very long name) gets a readable part, ``@`` and a hash of the whole name. A plain stem never holds
    ``@``, so two files never share an id — and so never overwrite each other's partitions.
    """
    stem = name[: -len(".csv")] if name.endswith(".csv") else ""
    if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}", stem) and not stem.endswith("."):
        return stem
    last = name.rsplit("/", 1)[-1]
    last = last[: -len(".csv")] if last.lower().endswith(".csv") else last
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", last).strip("-.")[:80] or "file"
    return f"{readable}@{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def _too_big() -> str:
    return f"larger than {MAX_FILE_BYTES // 1024 // 1024} MB: split it into smaller files"


def _decode(body: bytes) -> str:
    if body[:2] in (b"\xff\xfe", b"\xfe\xff"):  # Excel's "Unicode text": UTF-16 with its byte-order mark
        try:
            return body.decode("utf-16").replace("\r\n", "\n").replace("\r", "\n")
        except UnicodeDecodeError:
            raise ValueError("not readable as UTF-16, though it starts like it") from None
    if b"\x00" in body:
        raise ValueError("holds NUL bytes: save it as CSV (UTF-8, or Windows-1251)")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = body.decode("cp1251")  # what Excel saves as "CSV" in a Russian Windows
    return text.replace("\r\n", "\n").replace("\r", "\n")
