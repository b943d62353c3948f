"""Properties of every parser over arbitrary input (issue 15, item 17).

Each parser raises only its documented validation error (capture's ``FormRejected``, the events receiver's
``EventRejected``, the ad platforms' ``PlatformError``, the manual CSV's and the path table's ``ValueError``) or none
at all, and what can be written can be read back with the same values: costs exact to the kopeck, conversions to
1/10 000. The capture properties over whole posts are in test_capture_properties.py; these add each content type's
round trip and the other parsers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, date, datetime
from decimal import Decimal
from random import Random
from urllib.parse import urlencode, urlsplit

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from local.ad_sandboxes.yandex_direct import TEXT, WRITERS
from throughline.attribution.cli import read_path_table
from throughline.capture.forms import FormRejected, decode_body
from throughline.capture.submissions import public_url, query_values
from throughline.config import Settings
from throughline.journey.events import CrmEvent, EventRejected, parse_form, receive_event
from throughline.sources import CHANNEL_LABELS, canonical_source, classify, referrer_host
from throughline.spend.google_ads import GoogleAdsSource
from throughline.spend.http import PlatformError
from throughline.spend.manual import parse_file
from throughline.spend.rows import EARLIEST_DATE, MAX_COST, SpendRow
from throughline.spend.vk_ads import VkAdsSource
from throughline.spend.yandex_direct import AD_GROUP_FIELDS, CAMPAIGN_FIELDS, YandexDirectSource

EXAMPLES = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LIMIT = 65536

any_text = st.text(st.characters(exclude_categories=()), max_size=30)  # surrogates, controls, unassigned
# Text a client can send in UTF-8 and that capture keeps as sent (lone surrogates and U+FFFE/FFFF become U+FFFD).
sendable = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\ufffe\uffff"), max_size=30)
days = st.dates(min_value=EARLIEST_DATE, max_value=date(2026, 11, 28))
kopecks = st.integers(min_value=0, max_value=10**14 - 1).map(lambda units: Decimal(units) / 100)
counts = st.integers(min_value=0, max_value=10**12)


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[dict, str, str]] = []

    def send(self, message: dict, *, group_id: str, deduplication_id: str) -> str:
        self.sent.append((message, group_id, deduplication_id))
        return str(len(self.sent))


# -- form bodies, per content type ------------------------------------------------------------------------------------

field_names = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\ufffe\uffff"), min_size=1, max_size=20
)
flat_fields = st.dictionaries(field_names, sendable, max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | sendable,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(sendable, children, max_size=3),
    max_leaves=12,
)


@EXAMPLES
@given(
    fields=st.dictionaries(sendable, json_values, max_size=8),
    media_type=st.sampled_from(["application/json", "text/plain"]),
)
def test_a_json_object_reads_back_as_sent(fields, media_type):
    assert decode_body(json.dumps(fields).encode(), media_type, LIMIT) == fields
    assert decode_body(json.dumps(fields, ensure_ascii=False).encode(), f"{media_type}; charset=utf-8", LIMIT) == fields


@EXAMPLES
@given(fields=flat_fields, charset=st.sampled_from(["utf-8", "windows-1251"]))
def test_urlencoded_fields_read_back_as_sent(fields, charset):
    try:
        body = urlencode(fields, encoding=charset).encode("ascii")
    except UnicodeEncodeError:
        assume(False)  # not every text exists in windows-1251
    assert decode_body(body, f"application/x-www-form-urlencoded; charset={charset}", LIMIT) == fields


@EXAMPLES
@given(
    fields=st.dictionaries(st.from_regex(r"[A-Za-z0-9_\-\[\]]{1,20}", fullmatch=True), sendable, max_size=8),
    line_end=st.sampled_from([b"\r\n", b"\n"]),
)
def test_multipart_fields_read_back_as_sent(fields, line_end):
    # With bare line feeds (read as CRLF), a value ending in a carriage return cannot be told from the delimiter's.
    assume(line_end == b"\r\n" or not any(value.endswith("\r") for value in fields.values()))
    boundary = "----throughlineFormBoundary7MA4YWxkTrZu0gW"
    parts = [
        b"--"
        + boundary.encode()
        + line_end
        + f'Content-Disposition: form-data; name="{name}"'.encode()
        + line_end
        + line_end
        + value.encode()
        + line_end
        for name, value in fields.items()
    ]
    body = b"".join(parts) + b"--" + boundary.encode() + b"--" + line_end
    decoded = decode_body(body, f"multipart/form-data; boundary={boundary}", LIMIT)
    assert decoded == fields


@EXAMPLES
@given(
    body=st.binary(max_size=300) | any_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
    content_type=st.sampled_from(
        [
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded; charset=windows-1251",
            "application/x-www-form-urlencoded; charset=base64",
            "application/json; charset=utf-16",
            "multipart/form-data; boundary=b",
            "multipart/form-data",
            "text/html",
            None,
        ]
    )
    | any_text,
)
def test_any_body_in_any_content_type_is_fields_or_a_4xx(body, content_type):
    try:
        fields = decode_body(body, content_type, LIMIT)
    except FormRejected as rejected:
        assert 400 <= rejected.status < 500 and rejected.message and rejected.fields
        json.dumps(rejected.body())  # the answer can be sent
        return
    assert isinstance(fields, dict)
    json.dumps(fields, ensure_ascii=False).encode("utf-8")  # storable: no lone surrogate survives


# -- the Bitrix24 events receiver --------------------------------------------------------------------------------------

TOKEN = "app-token"
event_names = st.sampled_from(
    ["ONCRMLEADADD", "onCrmDealUpdate", "ONCRMCONTACTDELETE", "ONCRMACTIVITYADD", "ONCRMTIMELINECOMMENTADD"]
)


@EXAMPLES
@given(name=event_names, entity_id=st.integers(1, 10**18 - 1), ts=st.integers(0, 10**12), handler=st.integers(0, 999))
def test_an_authentic_event_reads_back_as_sent_and_survives_the_queue(name, entity_id, ts, handler):
    id_field = "data[ID]" if "TIMELINECOMMENT" in name.upper() else "data[FIELDS][ID]"
    body = urlencode(
        {"event": name, "event_handler_id": handler, id_field: entity_id, "ts": ts, "auth[application_token]": TOKEN}
    ).encode()
    queue = RecordingQueue()
    event = receive_event(body, app_tokens=[TOKEN], member_id=None, domain=None, queue=queue)
    assert (event.name, event.entity_id, event.ts, event.handler_id) == (name.upper(), entity_id, str(ts), str(handler))
    [(message, group_id, dedup)] = queue.sent
    assert CrmEvent.from_message(json.loads(json.dumps(message))) == event
    assert len(group_id) <= 128 and len(dedup) <= 128


form_keys = (
    st.sampled_from(
        ["event", "ts", "data[FIELDS][ID]", "data[ID]", "data", "auth[application_token]", "auth", "auth[]", "event[]"]
    )
    | any_text
)


@EXAMPLES
@given(
    pairs=st.lists(
        st.tuples(form_keys, st.sampled_from(["ONCRMLEADADD", TOKEN, "7", "-1", "²", ""]) | any_text), max_size=8
    ),
    raw=st.binary(max_size=200),
)
def test_any_webhook_body_is_queued_ignored_or_refused_with_a_4xx(pairs, raw):
    for body in (urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode(), raw):
        queue = RecordingQueue()
        try:
            event = receive_event(body, app_tokens=[TOKEN], member_id=None, domain=None, queue=queue)
        except EventRejected as rejected:
            assert rejected.status in (400, 401) and rejected.reason
            assert not queue.sent
            continue
        assert len(queue.sent) == (event is not None)
        try:
            assert isinstance(parse_form(body), dict)
        except EventRejected:
            pytest.fail("an accepted body must read as a form")


# -- URLs and referrers -----------------------------------------------------------------------------------------------

urlish = (
    st.builds(
        lambda scheme, host, path, query: f"{scheme}://{host}{path}?{query}",
        st.sampled_from(["http", "https", "android-app", "", "HTTPS"]),
        st.sampled_from(
            ["yandex.ru", "www.google.com", "[::1", "xn--e1afmkfd.xn--p1ai", "пример.рф", "a:b@c.ru:99999", ""]
        )
        | any_text,
        any_text,
        st.sampled_from(["utm_source=yandex&utm_medium=cpc", "yclid=1&token=secret", "gclid=%ZZ", ""]) | any_text,
    )
    | any_text
)


@EXAMPLES
@given(
    referrer=st.none() | urlish,
    utm_source=st.none() | any_text,
    utm_medium=st.none() | any_text,
    click_ids=st.dictionaries(st.sampled_from(["gclid", "yclid", "ysclid", "fbclid", "other"]), any_text, max_size=3),
    own=st.lists(st.sampled_from(["shop.example.ru", "WWW.Shop.example.ru"]) | any_text, max_size=2),
)
def test_any_visit_has_a_channel_with_a_russian_label(referrer, utm_source, utm_medium, click_ids, own):
    source = classify(
        utm_source=utm_source, utm_medium=utm_medium, click_ids=click_ids, referrer=referrer, own_hosts=tuple(own)
    )
    assert source.channel in CHANNEL_LABELS and source.channel_label
    assert isinstance(source.source, str) and isinstance(source.source_label, str)


@EXAMPLES
@given(referrer=st.none() | urlish)
def test_a_referrer_host_is_lower_case_without_a_trailing_dot(referrer):
    host = referrer_host(referrer)
    assert host is None or (host == host.lower() and not host.endswith("."))


@EXAMPLES
@given(utm_source=any_text)
def test_a_canonical_source_is_its_own_canonical_source(utm_source):
    canonical = canonical_source(utm_source)
    assert canonical_source(canonical) == canonical


@EXAMPLES
@given(url=st.none() | urlish)
@example(url="https://user:pass@shop.example.ru/reset?token=1&utm_source=ya#frag")
def test_a_public_url_keeps_no_credentials_no_fragment_no_other_parameters_and_is_stable(url):
    kept = public_url(url)
    if not kept:
        return
    parts = urlsplit(kept)
    assert parts.username is None and parts.password is None and not parts.fragment
    assert set(query_values(parts.query)) <= {
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "gclid",
        "gbraid",
        "wbraid",
        "yclid",
        "ysclid",
        "fbclid",
    }
    assert public_url(kept) == kept


# -- Yandex Direct TSV reports ----------------------------------------------------------------------------------------

cell = (
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\t\n\r"), min_size=1, max_size=20)
    .filter(lambda text: text.strip() not in ("", "--"))
    .map(str.strip)
)
yandex_rows = st.lists(
    st.fixed_dictionaries(
        {
            "Date": days.map(date.isoformat),
            "CampaignId": st.integers(1, 10**11).map(str),
            "CampaignName": cell,
            "AdGroupId": st.integers(1, 10**11).map(str),
            "AdGroupName": cell,
            "Impressions": counts.map(str),
            "Clicks": counts.map(str),
            "Cost": kopecks.map(str),
        }
    ),
    max_size=6,
)


def yandex(ad_groups: bool = False) -> YandexDirectSource:
    return YandexDirectSource("t", "http://direct.invalid/json/v5/", ad_groups=ad_groups, ingested_at=NOW)


BACKSLASHED = {"Date": "2026-01-05", "CampaignId": "7", "CampaignName": "a\\0b\\tc\\", "AdGroupId": "8",
               "AdGroupName": "\\n", "Impressions": "1", "Clicks": "0", "Cost": "1.5"}  # fmt: skip


@EXAMPLES
@example(rows=[BACKSLASHED], ad_groups=True, order=Random(0))  # names holding what reads as escapes when unescaped
@given(rows=yandex_rows, ad_groups=st.booleans(), order=st.randoms(use_true_random=False))
def test_a_yandex_report_reads_back_with_exact_costs_whatever_its_column_order(rows, ad_groups, order):
    columns = list(AD_GROUP_FIELDS if ad_groups else CAMPAIGN_FIELDS)
    order.shuffle(columns)

    # Names written as the sandbox writes them by default (a backslash, tab or line break escaped): read as it stands,
    # a name holding «\\0» or «\\t» would be taken for an escape (the ambiguity the README states for a raw report).
    def cell(row: dict[str, str], column: str) -> str:
        return WRITERS["escaped"](row[column]) if column in TEXT else row[column]

    lines = ["\t".join(columns), *("\t".join(cell(row, column) for column in columns) for row in rows)]
    lines.append(f"Total rows: {len(rows)}")
    parsed = list(yandex(ad_groups).parse(iter(lines), "client-one", "RUB"))
    assert [(str(r.date), r.campaign_id, r.campaign_name, r.impressions, r.clicks, r.cost) for r in parsed] == [
        (
            row["Date"],
            row["CampaignId"],
            row["CampaignName"],
            int(row["Impressions"]),
            int(row["Clicks"]),
            Decimal(row["Cost"]),
        )
        for row in rows
    ]
    assert all(SpendRow.from_json_line(row.to_json_line()) == row for row in parsed)


yandex_values = (
    st.sampled_from(
        [
            "--",
            "",
            "-5",
            "1e3",
            "1.1234567",
            "1e999999",
            "NaN",
            "2019-12-31",
            "2026-02-30",
            "1" * 30,
            "²",
            "Total rows: 1",
        ]
    )
    | any_text
)


@EXAMPLES
@given(
    cells=st.lists(st.lists(yandex_values, min_size=1, max_size=9), max_size=4),
    summary=st.sampled_from(["Total rows: 1", "Total rows: 0", ""]),
)
@example(cells=[["2026-03-01", "1", "x", "1", "1", "-5"]], summary="Total rows: 1")  # negative cost
@example(cells=[["2019-12-31", "1", "x", "1", "1", "5"]], summary="Total rows: 1")  # before the Athena tables
@example(cells=[["2026-03-01", "1", "x", "1", "1", "1.1234567"]], summary="Total rows: 1")  # past micro-units
@example(cells=[["2026-03-01", "1", "x", "1", "1", "1e12"]], summary="Total rows: 1")  # beyond decimal(18,6)
def test_any_yandex_report_is_rows_or_a_platform_error(cells, summary):
    header = "\t".join(["Date", "CampaignId", "CampaignName", "Impressions", "Clicks", "Cost"])
    lines = [header, *("\t".join(row) for row in cells), summary]
    try:
        rows = list(yandex().parse(iter(lines), "client-one", "RUB"))
    except PlatformError as error:
        assert str(error)
        return
    assert all(row.cost >= 0 for row in rows)


# -- Google Ads searchStream -------------------------------------------------------------------------------------------

micros = st.integers(min_value=0, max_value=10**18 - 1)
google_results = st.lists(
    st.fixed_dictionaries(
        {
            "date": days.map(date.isoformat),
            "id": st.integers(1, 10**11),
            "name": sendable,
            "impressions": counts,
            "clicks": counts,
            "costMicros": micros,
        }
    ),
    max_size=6,
)


def google() -> GoogleAdsSource:
    return GoogleAdsSource(
        client_id="a",
        client_secret="b",
        refresh_token="c",
        customer_ids=("1",),
        api_url="http://g.invalid/",
        token_url="http://g.invalid/token",
        ingested_at=NOW,
    )


@EXAMPLES
@given(results=google_results, batch_size=st.integers(1, 4))
def test_a_search_stream_reads_back_with_costs_exact_to_the_micro(results, batch_size):
    items = [
        {
            "segments": {"date": r["date"]},
            "campaign": {"resourceName": f"customers/1/campaigns/{r['id']}", "id": str(r["id"]), "name": r["name"]},
            "metrics": {
                "impressions": str(r["impressions"]),
                "clicks": str(r["clicks"]),
                "costMicros": str(r["costMicros"]),
            },
            "customer": {"currencyCode": "RUB", "timeZone": "Europe/Moscow"},
        }
        for r in results
    ]
    batches = [{"results": items[i : i + batch_size], "fieldMask": "…"} for i in range(0, len(items), batch_size)]
    rows = list(google().parse(json.loads(json.dumps(batches)), "1"))
    assert [
        (str(row.date), row.campaign_id, row.campaign_name, row.impressions, row.clicks, row.cost) for row in rows
    ] == [
        (r["date"], str(r["id"]), r["name"], r["impressions"], r["clicks"], Decimal(r["costMicros"]) / 10**6)
        for r in results
    ]
    assert all(SpendRow.from_json_line(row.to_json_line()) == row for row in rows)


odd_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.sampled_from(["2026-03-01", "RUB", "-1", "1e400", "x"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "results",
                    "segments",
                    "campaign",
                    "metrics",
                    "customer",
                    "date",
                    "id",
                    "name",
                    "costMicros",
                    "impressions",
                    "clicks",
                    "currencyCode",
                    "timeZone",
                    "items",
                    "rows",
                    "base",
                    "shows",
                    "spent",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=20,
)


@EXAMPLES
@given(payload=odd_json)
@example(payload=[{"results": [{"segments": {}}]}])  # a result without its date
@example(
    payload=[
        {
            "results": [
                {
                    "segments": {"date": "2026-03-01"},
                    "campaign": {"id": 1},
                    "metrics": {"costMicros": "-1"},
                    "customer": {"currencyCode": "RUB", "timeZone": "Europe/Moscow"},
                }
            ]
        }
    ]
)
@example(payload=["not a batch"])
def test_any_search_stream_answer_is_rows_or_a_platform_error(payload):
    try:
        rows = list(google().parse(payload, "1"))
    except PlatformError as error:
        assert str(error)
        return
    assert all(row.cost >= 0 for row in rows)


# -- VK Ads statistics -------------------------------------------------------------------------------------------------


def vk() -> VkAdsSource:
    return VkAdsSource(
        client_id="a", client_secret="b", api_url="http://vk.invalid/", token_store=None, ingested_at=NOW
    )


@EXAMPLES
@given(
    stats=st.dictionaries(
        st.integers(1, 10**9).map(str),
        st.dictionaries(days.map(date.isoformat), st.tuples(counts, counts, kopecks), max_size=4),
        max_size=4,
    ),
    as_numbers=st.booleans(),
)
def test_vk_statistics_read_back_with_exact_costs_and_empty_days_left_out(stats, as_numbers):
    def spent(value: Decimal) -> str | float:
        return float(value) if as_numbers and value < 10**9 else str(value)

    payload = {
        "items": [
            {
                "id": int(campaign),
                "rows": [
                    {"date": day, "base": {"shows": s, "clicks": c, "spent": spent(cost)}}
                    for day, (s, c, cost) in days_.items()
                ],
            }
            for campaign, days_ in stats.items()
        ]
    }
    rows = list(vk().parse(json.loads(json.dumps(payload)), {"1": "Кампания"}, "cabinet"))
    expected = [
        (campaign, day, s, c, cost)
        for campaign, days_ in stats.items()
        for day, (s, c, cost) in days_.items()
        if s or c or cost
    ]
    assert [(r.campaign_id, str(r.date), r.impressions, r.clicks, r.cost) for r in rows] == expected


@EXAMPLES
@given(payload=odd_json)
@example(payload={"items": [{"id": 1, "rows": [{"date": "2026-03-01", "base": {"spent": "-3"}}]}]})
@example(payload={"items": [{"rows": []}]})  # a campaign without its id
@example(payload={"items": "none"})
def test_any_vk_statistics_answer_is_rows_or_a_platform_error(payload):
    try:
        rows = list(vk().parse(payload if isinstance(payload, dict) else {"items": payload}, {}, "cabinet"))
    except PlatformError as error:
        assert str(error)
        return
    assert all(row.cost >= 0 for row in rows)


# -- the manual spend CSV ----------------------------------------------------------------------------------------------

tag = (
    st.text(
        st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters='"\ufeff'),
        min_size=1,
        max_size=15,
    )
    .map(str.strip)
    .filter(bool)
)
manual_rows = st.lists(
    st.fixed_dictionaries(
        {
            "date": days,
            "utm_source": tag,
            "utm_medium": tag,
            "utm_campaign": tag,
            "cost": st.integers(0, 10**14 - 1).map(lambda units: Decimal(units) / 100),
            "currency": st.sampled_from(["RUB", "USD", "KZT"]),
            "clicks": counts,
        }
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda row: (
        row["date"],
        *(row[t].lower() for t in ("utm_source", "utm_medium", "utm_campaign")),
        row["currency"],
    ),
)


@EXAMPLES
@given(
    rows=manual_rows,
    excel=st.booleans(),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "cp1251", "utf-16"]),
)
def test_a_manual_csv_reads_back_with_every_cost_exact_to_the_kopeck(rows, excel, encoding):
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";" if excel else ",", lineterminator="\r\n" if excel else "\n")
    writer.writerow(["date", "utm_source", "utm_medium", "utm_campaign", "cost", "currency", "clicks"])
    for row in rows:
        cost = format(row["cost"], "f").replace(".", ",") if excel else str(row["cost"])
        day = row["date"].strftime("%d.%m.%Y") if excel else row["date"].isoformat()
        writer.writerow(
            [day, row["utm_source"], row["utm_medium"], row["utm_campaign"], cost, row["currency"], row["clicks"]]
        )
    try:
        body = out.getvalue().encode(encoding)
    except UnicodeEncodeError:
        assume(False)
    parsed, rejects = parse_file(body, "spend-2026.csv", Settings(), NOW)
    assert rejects == []
    assert [(r.date, r.utm_source, r.utm_medium, r.utm_campaign, r.cost, r.currency, r.clicks) for r in parsed] == [
        (
            row["date"],
            row["utm_source"],
            row["utm_medium"],
            row["utm_campaign"],
            row["cost"],
            row["currency"],
            row["clicks"],
        )
        for row in rows
    ]
    assert all(SpendRow.from_json_line(row.to_json_line()) == row for row in parsed)


@EXAMPLES
@given(
    body=st.binary(max_size=300)
    | st.lists(st.lists(yandex_values | tag, max_size=8), max_size=5).map(
        lambda lines: (
            "date,utm_source,utm_medium,utm_campaign,cost,currency\n" + "\n".join(",".join(cells) for cells in lines)
        ).encode("utf-8", "surrogatepass")
    ),
)
@example(body=b"date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-03-01,ya,cpc,x,1e400,RUB\n")
def test_any_manual_file_is_rows_rejects_or_a_value_error(body):
    try:
        rows, rejects = parse_file(body, "spend.csv", Settings(), NOW)
    except ValueError as error:
        assert str(error)
        return
    assert rows or rejects
    assert all(Decimal(0) <= row.cost < MAX_COST for row in rows)


# -- ChannelAttribution path tables ------------------------------------------------------------------------------------

channels = st.sampled_from(["Яндекс", "google / cpc", "direct", "email", "vk"])
path_rows = st.lists(
    st.tuples(
        st.lists(channels, min_size=1, max_size=5),
        st.integers(0, 10**6),  # conversions
        st.integers(0, 10**11),  # revenue in kopecks
        st.integers(0, 10**6),  # nulls
    ),
    min_size=1,
    max_size=8,
)


@EXAMPLES
@given(rows=path_rows)
def test_a_path_table_reads_back_with_its_totals_exact(rows):
    rows = [(path, conversions, revenue if conversions else 0, nulls) for path, conversions, revenue, nulls in rows]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["path", "total_conversions", "total_conversion_value", "total_null"])
    for path, conversions, revenue, nulls in rows:
        writer.writerow([" > ".join(path), conversions, format(Decimal(revenue) / 100, "f"), nulls])
    table = read_path_table(io.StringIO(out.getvalue()))
    assert table.total_conversions == sum(conversions for _, conversions, _, _ in rows)
    assert table.total_revenue == Decimal(sum(revenue for _, _, revenue, _ in rows)) / 100
    assert set(table.paths) == {tuple(path) for path, *_ in rows}
    assert float(table.nulls.sum()) == sum(nulls for *_, nulls in rows)


@EXAMPLES
@given(
    text=any_text
    | st.lists(
        st.lists(yandex_values | channels | st.sampled_from(["a > b", "a>>b", "1e400", "9e999999"]), max_size=5),
        max_size=4,
    ).map(
        lambda lines: (
            "path,total_conversions,total_conversion_value,total_null,days_to_conversion\n"
            + "\n".join(",".join(cells) for cells in lines)
        )
    ),
)
@example(text="path,total_conversions\na > b,9e999999\n")  # beyond Decimal's range once in 1/10 000
@example(text="path,total_conversions\na > b,1e400\n")  # beyond a float64
@example(text="path,total_conversions,total_null\na,1,1e400\n")
def test_any_path_table_is_a_table_or_a_value_error_naming_the_line(text):
    try:
        table = read_path_table(
            io.StringIO(text.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), newline="")
        )
    except ValueError as error:
        assert str(error)
        return
    assert table.total_conversions >= 0 and table.total_revenue >= 0
    assert all(map(lambda value: value == value and value != float("inf"), table.nulls))


# -- regressions the properties found --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "reason"),
    [("-5", "row 1: cost: Input should be greater than or equal to 0"), ("1.1234567", "row 1: cost"), ("1e12", "cost")],
)
def test_a_yandex_row_the_spend_row_refuses_is_a_platform_error_naming_the_row(cost, reason):
    """Was pydantic's ValidationError, which the importer reported as a multi-line dump."""
    lines = ["Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost", f"2026-03-01\t1\tx\t1\t1\t{cost}", "Total: 1"]
    with pytest.raises(PlatformError, match=re.escape(reason)):
        list(yandex().parse(iter(lines), "client-one", "RUB"))


def test_a_yandex_summary_of_thousands_of_digits_is_a_platform_error():
    """Was int()'s ValueError (more than 4300 digits)."""
    lines = ["Date\tCampaignId\tCampaignName\tImpressions\tClicks\tCost", "Total rows: " + "1" * 5000]
    with pytest.raises(PlatformError, match="neither a row nor a summary"):
        list(yandex().parse(iter(lines), "client-one", "RUB"))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ([{"results": [{"segments": {}}]}], "result 1: no 'date'"),
        (["not a batch"], "no object with a list of results"),
        ([{"results": [{"segments": {"date": "2026-03-01"}, "metrics": {"costMicros": "-1"}}]}], "costMicros '-1'"),
        ([{"results": [{"segments": {"date": "2026-03-01"}, "metrics": {"costMicros": "1.5"}}]}], "costMicros '1.5'"),
    ],
)
def test_a_search_stream_result_not_as_documented_is_a_google_ads_error(payload, reason):
    """Were KeyError, AttributeError and pydantic's ValidationError (reported as ``'date'`` and the like)."""
    with pytest.raises(PlatformError, match=re.escape(reason)):
        list(google().parse(payload, "1"))


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"items": [{"rows": []}]}, "without its id"),
        ({"items": "none"}, "no list of items"),
        ({"items": [{"id": 1, "rows": [{"date": "2026-03-01", "base": {"spent": "-3"}}]}]}, "cost"),
        ({"items": [{"id": 1, "rows": [{"date": "2026-03-01", "base": {"shows": "1.5"}}]}]}, "count belongs"),
        ({"items": [{"id": 1, "rows": [{"base": {"shows": 1}}]}]}, "no 'date'"),
    ],
)
def test_vk_statistics_not_as_documented_are_a_vk_ads_error(payload, reason):
    with pytest.raises(PlatformError, match=re.escape(reason)):
        list(vk().parse(payload, {}, "cabinet"))


@pytest.mark.parametrize(
    "text",
    ["path,total_conversions\na > b,1e400\n", "path,total_conversions,total_null\na,1,1e400\n"],
)
def test_a_path_table_number_too_large_for_a_float_is_a_value_error_naming_the_line(text):
    """Was OverflowError (conversions) or an infinite number of nulls."""
    with pytest.raises(ValueError, match=r"paths line 2: total_\w+ is too large"):
        read_path_table(io.StringIO(text))


def test_a_path_table_the_csv_module_cannot_read_is_a_value_error_naming_the_line():
    """Was csv.Error, which is no ValueError: the CLI printed a traceback instead of its one clear line."""
    text = "path,total_conversions\na,1\n" + "b" * 200_000 + ",1\n"
    with pytest.raises(ValueError, match=r"paths: unreadable CSV after line 2 \(field larger than field limit"):
        read_path_table(io.StringIO(text, newline=""))
