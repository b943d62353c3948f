"""Unit tests of the spend row and of parsing what the platforms send: ``--``, empty values, VAT, money."""

from __future__ import annotations

import gc
import gzip
import io
import itertools
import json
import re
import zlib
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from throughline.adapters.spend_store import SpendStore
from throughline.spend.plan import Chunk, nightly_window, plan_chunks, split
from throughline.spend.rows import SpendRow
from throughline.spend.yandex_direct import AD_GROUP_FIELDS, PlatformError, YandexDirectSource

NOW = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def _row(**changes) -> SpendRow:
    values = dict(
        date=date(2026, 3, 1),
        platform="yandex_direct",
        account_id="client-one",
        campaign_id="42",
        campaign_name="Поиск «CRM»",
        impressions=10,
        clicks=2,
        cost=Decimal("1234.50"),
        currency="RUB",
        include_vat=False,
        account_timezone="Europe/Moscow",
        ingested_at=NOW,
    )
    return SpendRow(**{**values, **changes})


def test_cost_is_written_as_the_exact_decimal_never_a_float_repr():
    line = _row(cost=Decimal("0.10")).to_json_line()
    assert '"cost":0.10' in line
    assert '"cost":999999999999.999999' in _row(cost=Decimal("999999999999.999999")).to_json_line()  # 18 digits
    assert SpendRow.from_json_line(line).cost == Decimal("0.10")
    parsed = json.loads(line)
    assert parsed["date"] == "2026-03-01" and parsed["ingested_at"] == "2026-03-02T01:00:00Z"
    assert "ad_group_id" not in parsed and "utm_source" not in parsed  # optional columns only when they exist
    assert parsed["campaign_name"] == "Поиск «CRM»"


def test_row_refuses_bad_values():
    for bad in (
        {"cost": Decimal("-1")},
        {"currency": "rub"},
        {"platform": "facebook"},
        {"impressions": -1},
        {"ingested_at": datetime(2026, 1, 1)},
        {"cost": Decimal("NaN")},
    ):
        with pytest.raises(ValidationError):
            _row(**bad)


def _source(**options) -> YandexDirectSource:
    return YandexDirectSource("token", "http://unused/", ("client-one",), ingested_at=NOW, **options)


def test_yandex_tsv_with_dashes_empty_values_and_vat_flag():
    source = _source(include_vat=True, ad_groups=True)
    lines = iter(
        [
            "\t".join(AD_GROUP_FIELDS),
            "2026-03-01\t42\tПоиск\t4201\tГруппа\t100\t5\t123.45",
            "2026-03-01\t43\tМастер\t--\t--\t--\t\t--",
            "",
            "Total rows: 2",
        ]
    )
    rows = list(source.parse(lines, "client-one", "RUB"))
    assert [(r.campaign_id, r.ad_group_id, r.impressions, r.clicks, r.cost) for r in rows] == [
        ("42", "4201", 100, 5, Decimal("123.45")),
        ("43", None, 0, 0, Decimal("0")),
    ]
    assert all(r.include_vat for r in rows)
    assert rows[0].account_timezone == "Europe/Moscow"


def test_yandex_columns_are_read_by_name_and_garbage_is_refused():
    source = _source()
    reordered = iter(
        ["Cost\tClicks\tImpressions\tCampaignName\tCampaignId\tDate", "1.00\t1\t2\tA\t7\t2026-03-01", "Total rows: 1"]
    )
    [row] = list(source.parse(reordered, "client-one", "USD"))
    assert (row.campaign_id, row.cost, row.impressions, row.currency) == ("7", Decimal("1.00"), 2, "USD")
    with pytest.raises(PlatformError, match="money"):
        list(
            source.parse(
                iter(["Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost", "2026-03-01\t7\tA\t1\t1\t1,5"]),
                "client-one",
                "RUB",
            )
        )
    with pytest.raises(PlatformError, match="lacks columns"):
        list(source.parse(iter(["Date\tCampaignId"]), "client-one", "RUB"))


def test_report_names_are_deterministic_per_request_and_day():
    chunk = Chunk("yandex_direct", "client-one", date(2026, 1, 1), date(2026, 1, 31))
    first = _source(run_date=date(2026, 3, 2)).report_request(chunk)["params"]["ReportName"]
    assert first == _source(run_date=date(2026, 3, 2)).report_request(chunk)["params"]["ReportName"]
    assert first != _source(run_date=date(2026, 3, 3)).report_request(chunk)["params"]["ReportName"]
    assert first != _source(run_date=date(2026, 3, 2), include_vat=True).report_request(chunk)["params"]["ReportName"]


def test_nightly_window_ends_yesterday_in_the_bundle_time_zone():
    from zoneinfo import ZoneInfo

    # 22:30 UTC on March 1 is already March 2 in Moscow: yesterday is March 1.
    assert nightly_window(datetime(2026, 3, 1, 22, 30, tzinfo=UTC), ZoneInfo("Europe/Moscow"), 7) == (
        date(2026, 2, 23),
        date(2026, 3, 1),
    )


def test_split_and_plan_merge_overlapping_work():
    assert split(date(2026, 1, 1), date(2026, 3, 1), 31) == [
        (date(2026, 1, 1), date(2026, 1, 31)),
        (date(2026, 2, 1), date(2026, 3, 1)),
    ]
    left = Chunk("vk_ads", "a", date(2026, 1, 10), date(2026, 1, 20))
    tonight = Chunk("vk_ads", "a", date(2026, 1, 15), date(2026, 1, 25))
    other = Chunk("vk_ads", "b", date(2026, 1, 1), date(2026, 1, 1))
    assert plan_chunks([left, tonight, other], 10) == [
        Chunk("vk_ads", "a", date(2026, 1, 10), date(2026, 1, 19)),
        Chunk("vk_ads", "a", date(2026, 1, 20), date(2026, 1, 25)),
        other,
    ]


def test_every_free_text_field_of_a_row_has_a_utf8_line_even_with_a_lone_surrogate():
    # A platform's JSON may carry half a surrogate pair in any string it sends (Google's customer time zone too):
    # before, a time zone holding one had no UTF-8 line, and its account's chunks failed every night.
    fields = ("campaign_id", "campaign_name", "ad_group_id", "ad_group_name", "utm_source", "utm_medium",
              "utm_campaign", "account_timezone")  # fmt: skip
    row = _row(**{name: f"x\ud83d{name}" for name in fields})
    line = row.to_json_line().encode("utf-8").decode("utf-8")
    assert all(getattr(SpendRow.from_json_line(line), name) == f"x\ufffd{name}" for name in fields)
    assert _row(campaign_name="ok 😀").campaign_name == "ok 😀"  # a whole pair is one character, kept


def test_partition_object_is_byte_identical_for_identical_rows():
    from throughline.adapters.spend_store import SpendStore

    class FakeS3:
        def __init__(self):
            self.bodies = []

        def put_object(self, **kwargs):
            self.bodies.append(kwargs["Body"])

    s3 = FakeS3()
    store = SpendStore("bucket", client=s3)
    for _ in range(2):
        key = store.write_partition("yandex_direct", date(2026, 3, 1), "client-one", [_row().to_json_line()])
    assert key == "spend/platform=yandex_direct/date=2026-03-01/client-one.json.gz"
    assert s3.bodies[0] == s3.bodies[1]
    assert gzip.decompress(s3.bodies[0]).decode().count("\n") == 1
    with pytest.raises(ValueError):
        store.write_partition("manual", date(2026, 3, 1), "../escape", [])


def test_writing_a_partition_leaves_no_garbage_for_the_collector_and_takes_lines_as_bytes_or_text():
    # Before: the partition went through a GzipFile, which in Python 3.12 and 3.13.0 is a reference cycle (CPython
    # gh-129640): each written partition left its 32 kB write buffer until a full collection of the cyclic garbage
    # collector, so a long import grew with the partitions it wrote.
    class FakeS3:
        def __init__(self):
            self.bodies = []

        def put_object(self, **kwargs):
            self.bodies.append(kwargs["Body"])

    s3 = FakeS3()
    store = SpendStore("bucket", client=s3)
    line = _row(campaign_name="Кампания «Поиск»").to_json_line()
    gc.collect()
    gc.disable()
    try:
        for _ in range(3):
            store.write_partition("yandex_direct", date(2026, 3, 1), "client-one", [line, line.encode("utf-8")])
        assert gc.collect() == 0
    finally:
        gc.enable()
    assert s3.bodies[0] == s3.bodies[2]
    assert gzip.decompress(s3.bodies[0]).decode("utf-8") == f"{line}\n{line}\n"


def test_partition_bytes_are_those_of_the_gzipfile_whatever_pythons_gzip_compress_writes(monkeypatch):
    # Before: the object came from gzip.compress(mtime=0), which in Python 3.11 and 3.12 lets zlib write the header
    # (OS byte 3, Unix) where GzipFile wrote 255 (unknown), as 3.13 does: "the same bytes" held on 3.13 only, and
    # the same rows gave another object under another Python (pyproject allows 3.11). 3.11's gzip.compress:
    monkeypatch.setattr(gzip, "compress", lambda data, compresslevel=9, *, mtime=None: zlib.compress(data, 9, 31))

    class FakeS3:
        def put_object(self, **kwargs):
            self.body = kwargs["Body"]

    lines = [_row(campaign_name=f"Кампания {n} «Поиск» 😀").to_json_line() for n in range(2000)]
    for written in ([], lines[:1], lines):
        reference = io.BytesIO()
        with gzip.GzipFile(fileobj=reference, mode="wb", mtime=0) as gz:  # what the store wrote before
            for line in written:
                gz.write(line.encode("utf-8") + b"\n")
        s3 = FakeS3()
        SpendStore("bucket", client=s3).write_partition("vk_ads", date(2026, 3, 1), "a", written)
        assert s3.body[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # no name, mtime 0, level 9, OS unknown
        assert s3.body == reference.getvalue()


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([], "empty report"),
        (["2026-03-01\t7\tA\t1\t1\t1.00", "Total rows: 1"], "summary says 1 rows, 2 arrived"),  # two rows arrived
        ([], "without its summary"),  # rows, then nothing: the body was cut at a line's end
        (["Total rows: 1", "2026-03-02\t7\tA\t1\t1\t1.00"], "after its summary"),
        (["Total rows: 3"], "summary says 3 rows, 1 arrived"),
        (["--", "Total rows: 1"], "neither a row nor a summary"),
    ],
)
def test_yandex_reports_that_do_not_add_up_are_refused(lines, reason):
    header = "Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost"
    body = [] if reason == "empty report" else [header, "2026-03-01\t7\tA\t1\t1\t1.00", *lines]
    with pytest.raises(PlatformError, match=reason):
        list(_source().parse(iter(body), "client-one", "RUB"))


@pytest.mark.parametrize("value", ["2026-02-30", "20260301", "2026-W09-7", "0000-01-01"])
def test_yandex_dates_must_be_real_calendar_days_in_the_documented_form(value):
    body = ["Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost", f"{value}\t7\tA\t1\t1\t1.00", "Total rows: 1"]
    with pytest.raises(PlatformError, match="date"):
        list(_source().parse(iter(body), "client-one", "RUB"))


def test_yandex_counts_are_ascii_digits():
    body = [
        "Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost",
        "2026-03-01\t7\tA\t²\t1\t1.00",
        "Total rows: 1",
    ]
    with pytest.raises(PlatformError, match="count"):
        list(_source().parse(iter(body), "client-one", "RUB"))


def test_a_json_line_stays_one_line_for_every_line_reader():
    # Before: U+2028, U+2029 and U+0085 went out raw (valid JSON), and readers that split with str.splitlines cut the
    # row in two.
    name = "Весна\u2028Лето\u2029Осень\x85Зима\x1c"
    line = _row(campaign_name=name).to_json_line()
    assert len(line.splitlines()) == 1
    assert SpendRow.from_json_line(line).campaign_name == name


def test_yandex_names_may_hold_quotes_and_carriage_returns():
    # Before: the csv module refused a carriage return inside an unquoted value ("new-line character seen").
    header = "Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost"
    body = [header + "\r", '2026-03-01\t7\t"Акция" 50%\rитоги\t1\t1\t1.00', "Total rows: 1"]
    [row] = list(_source().parse(iter(body), "client-one", "RUB"))
    assert row.campaign_name == '"Акция" 50%\rитоги' and row.cost == Decimal("1.00")


HEADER = "Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost"


def _names(*rows: str, summary: int | None = None) -> list[str]:
    lines = [HEADER, *"\n".join(rows).split("\n"), f"Total rows: {len(rows) if summary is None else summary}"]
    return [row.campaign_name for row in _source().parse(iter(lines), "client-one", "RUB")]


def test_yandex_names_escaped_or_quoted_are_read_whole():
    assert _names(
        "2026-03-01\t7\tВесна\\tЛето\t1\t1\t1.00",  # backslash escapes
        "2026-03-01\t8\tОсень\\nЗима \\\\ C:\\\\new\t1\t1\t1.00",
        '2026-03-01\t9\t"Мир\tТруд"\t1\t1\t1.00',  # CSV-style quoting, a tab inside
        '2026-03-01\t10\t"Две\n\nстроки ""в кавычках"""\t1\t1\t1.00',  # …and line breaks: one row over three lines
        '2026-03-01\t11\t"5"" монитор"\t1\t1\t1.00',  # quoted for its quote alone: splits cleanly
        '2026-03-01\t12\t"Акция"\t1\t1\t1.00',  # a name typed in quotes: quoting would have doubled them
        '2026-03-01\t13\tЦена 5"\t1\t1\t1.00',
    ) == ["Весна\tЛето", "Осень\nЗима \\ C:\\new", "Мир\tТруд", 'Две\n\nстроки "в кавычках"', '5" монитор', '"Акция"',
          'Цена 5"']  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "summary", "message"),
    [
        # Before: "report row has 7 columns, expected 6" — which of a million rows, and why, was not said.
        (["2026-03-01\t7\tВесна\tЛето\t1\t1\t1.00"], None, "line 2 has 7 columns, expected 6 (a tab or line break"),
        (["2026-03-01\t7\tA\t1\t1\t1.00", "2026-03-01\t8\tОсень\nЗима\t1\t1\t1.00"], None, "line 3 has 3 columns"),
        # A raw tab and line break that make the first part a row of six: its second part is no row, and the report
        # is refused (its first part was never stored: a chunk is stored whole or not at all).
        (["2026-03-01\t7\tx\t\t\t\ny\t\t\t1\t1\t1.00"], None, "line 3: '' is no campaign id"),
        (["2026-03-01\t7\tx\t\t\t\n2026-03-01\t7\tz\t1\t1\t1.00"], 1, "summary says 1 rows, 2 arrived"),
        (['2026-03-01\t7\t"Не\tзакрыта\t1\t1\t1.00'] + ["ещё"] * 25, None, "line 2 has 7 columns"),  # 20 lines at most
        (['2026-03-01\t7\t"Закрыта" и нет\t1\t1\t1.00\tлишнее'], None, "line 2 has 7 columns"),
    ],
)
def test_yandex_rows_whose_columns_do_not_add_up_are_refused_naming_their_line(rows, summary, message):
    with pytest.raises(PlatformError, match=re.escape(message)):
        _names(*rows, summary=summary)


def test_yandex_report_lines_are_cut_at_newlines_only_and_chunk_ends_add_no_empty_lines():
    from throughline.spend.yandex_direct import _lines

    chunks = ["Date\tName\n", "2026-03-01\tВесна\u2028Лето\n", "\n", "Total", " rows: 1\n"]
    assert list(_lines(chunks)) == ["Date\tName", "2026-03-01\tВесна\u2028Лето", "", "Total rows: 1"]


def test_yandex_report_lines_are_the_same_whatever_the_chunks():
    import random

    from throughline.spend.yandex_direct import _lines

    text = 'Date\tName\n\n2026-03-01\t"Две\n\nстроки"\t1\n\nTotal rows: 1\n\n'
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(len(text) + 1), rng.randint(0, 8)))
        bounds = [0, *cuts, len(text)]
        chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
        assert list(_lines(chunks)) == text.split("\n")[:-1], chunks


def test_yandex_report_line_without_an_end_is_refused_not_held_whole():
    # Before: an answer with no line break (a broken proxy, a wrong endpoint) was held whole and copied again with
    # every 64 kB chunk — 32 MB took 9 s, 128 MB minutes, and all of it in memory; a Direct row is a few hundred chars.
    from throughline.spend.yandex_direct import MAX_LINE_CHARS, _lines

    chunks = ("x" * 65536 for _ in range(MAX_LINE_CHARS // 65536 + 2))
    with pytest.raises(PlatformError, match="report line longer than"):
        list(_lines(chunks))


def test_yandex_a_name_quoted_for_its_carriage_return_alone_loses_its_quotes():
    # Before: CSV-style quoting wraps a value holding a carriage return (and nothing else that needs it) in quotes; it
    # splits cleanly, and the quotes stayed in the name ('"Акция\rитоги"') because only doubled quotes were looked for.
    assert _names('2026-03-01\t7\t"Акция\rитоги"\t1\t1\t1.00', '2026-03-01\t8\t"Акция ""А""\rитоги"\t1\t1\t1.00') == [
        "Акция\rитоги",
        'Акция "А"\rитоги',
    ]


def test_yandex_report_starting_with_a_byte_order_mark_is_read():
    # Before: "\ufeffDate" was no "Date" and the report was refused as lacking its Date column — every night, since
    # the next run asks for the same report. The docs promise UTF-8; a BOM is no column name.
    lines = ["\ufeff" + HEADER + "\r", "2026-03-01\t7\tВесна\t10\t2\t3.50\r", "Total rows: 1\r"]
    [row] = list(_source().parse(iter(lines), "client-one", "RUB"))
    assert (row.date, row.campaign_name, row.cost) == (date(2026, 3, 1), "Весна", Decimal("3.50"))
