"""Google Ads import against the sandbox: OAuth refresh, several customers, manager accounts, quota retries."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from local.ad_sandboxes import GoogleAdsSandbox
from tests.integration.spend_helpers import NOW, Clock, days, store, stored_objects, stored_rows, total
from throughline.spend.google_ads import GoogleAdsError, GoogleAdsSource
from throughline.spend.http import PlatformError
from throughline.spend.importer import import_spend
from throughline.spend.plan import Chunk

__all__ = ["store"]
MANAGER = "9998887776"


@pytest.fixture
def google():
    customers = {"1112223334": ("RUB", "Europe/Moscow", 4), "5556667778": ("USD", "America/New_York", 3)}
    with GoogleAdsSandbox(customers, managed_by={"5556667778": MANAGER}) as sandbox:
        yield sandbox


def _source(sandbox, customers=("111-222-3334", "555-666-7778"), login=MANAGER, **options):
    sleeps: list[float] = []
    source = GoogleAdsSource(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                             refresh_token=options.pop("refresh_token", "sandbox-refresh-token"),
                             customer_ids=customers, login_customer_id=login, api_url=sandbox.api_url(),
                             token_url=sandbox.token_url, sleep=sleeps.append, ingested_at=NOW, **options)  # fmt: skip
    source.sleeps = sleeps
    return source


def test_several_customers_through_a_manager_account(google, store):
    source = _source(google)
    first, last = days("2026-10-01", "2026-11-15")
    result = import_spend([source], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == []
    rows = stored_rows(store, "google_ads")
    for customer in ("1112223334", "5556667778"):
        expected = Decimal(google.expected_micros(customer, first, last)) / 1_000_000
        assert total(rows, customer) == expected
    usd = [r for r in rows if r["account_id"] == "5556667778"]
    assert {(r["currency"], r["account_timezone"]) for r in usd} == {("USD", "America/New_York")}
    assert source.tokens_issued == 1  # one access token for every chunk and customer
    assert len(stored_objects(store)) == 2 * 46


def test_without_login_customer_id_the_managed_customer_fails_alone_with_a_hint(google, store):
    result = import_spend([_source(google, login=None)], store, *days("2026-11-01", "2026-11-02"), deadline=Clock(),
                          ingested_at=NOW)  # fmt: skip
    [failure] = result.failures
    assert "5556667778" in failure and "USER_PERMISSION_DENIED" in failure and "GOOGLE_ADS_LOGIN_CUSTOMER_ID" in failure
    assert {r["account_id"] for r in stored_rows(store, "google_ads")} == {"1112223334"}


def test_expired_access_token_is_refreshed_once(google):
    source = _source(google)
    chunk = Chunk("google_ads", "1112223334", date(2026, 11, 1), date(2026, 11, 1))
    list(source.fetch(chunk, Clock()))
    google.expire_access_tokens()
    assert list(source.fetch(chunk, Clock()))
    assert source.tokens_issued == 2 == google.tokens_issued


def test_quota_and_transient_errors_are_retried_with_the_advised_delay(google, store):
    google.faults = ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    source = _source(google, customers=("1112223334",))
    result = import_spend([source], store, *days("2026-11-01", "2026-11-03"), deadline=Clock(), ingested_at=NOW)
    assert result.failures == [] and google.faults == []
    assert source.sleeps[0] == 1.0  # QuotaErrorDetails.retryDelay "1s"
    assert len(source.sleeps) == 2


def test_revoked_refresh_token_and_disabled_customers_are_clear_errors(google):
    chunk = Chunk("google_ads", "1112223334", date(2026, 11, 1), date(2026, 11, 1))
    with pytest.raises(GoogleAdsError, match=r"invalid_grant.*GOOGLE_ADS_REFRESH_TOKEN"):
        list(_source(google, refresh_token="revoked").fetch(chunk, Clock()))
    google.disabled.add("1112223334")
    with pytest.raises(GoogleAdsError, match="CUSTOMER_NOT_ENABLED"):
        list(_source(google).fetch(chunk, Clock()))


def test_stream_batches_int64_strings_and_omitted_zeros_parse():
    source = GoogleAdsSource(client_id="a", client_secret="b", refresh_token="c", customer_ids=("1",),
                             api_url="http://unused/", token_url="http://unused/", ingested_at=NOW)  # fmt: skip
    batches = [
        {"results": [{"segments": {"date": "2026-11-01"}, "campaign": {"id": "9007199254740993", "name": "Бренд"},
                      "metrics": {"costMicros": "1234567", "clicks": "3", "impressions": "40"},
                      "customer": {"currencyCode": "RUB", "timeZone": "Europe/Moscow"}}], "fieldMask": "…"},
        {"results": [{"segments": {"date": "2026-11-02"}, "campaign": {"id": "5", "name": "Медиа"},
                      "metrics": {"impressions": "7"},
                      "customer": {"currencyCode": "RUB", "timeZone": "Europe/Moscow"}}]},
        {"fieldMask": "…", "requestId": "x"},
    ]  # fmt: skip
    rows = list(source.parse(batches, "1"))
    assert [(r.campaign_id, r.cost, r.clicks, r.impressions) for r in rows] == [
        ("9007199254740993", Decimal("1.234567"), 3, 40),  # an id past 2**53 stays exact
        ("5", Decimal("0"), 0, 7),
    ]


def test_a_sunset_api_version_fails_at_once_with_a_hint(google):
    source = _source(google)
    source._api = google.url + "/v21/"  # not served: sunset on 2026-08-05
    with pytest.raises(GoogleAdsError, match="NOT_FOUND"):
        list(source.fetch(Chunk("google_ads", "1112223334", date(2026, 11, 1), date(2026, 11, 1)), Clock()))
    assert source.sleeps == []


def test_an_html_error_page_is_not_retried_unless_it_is_a_server_error():
    from throughline.spend.google_ads import _failure

    not_found = _failure(404, {})
    assert not not_found.retryable and "GOOGLE_ADS_API_URL" in str(not_found)
    assert _failure(502, {}).retryable


def test_a_brief_outage_of_the_oauth_endpoint_is_retried(google, store):
    # Before: a 503 from the token endpoint was a refusal: the customer failed for the night with no retry.
    google.token_faults = [503, 500]
    source = _source(google, customers=("111-222-3334",), login=None)
    first, last = days("2026-11-01", "2026-11-03")
    result = import_spend([source], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == [] and google.token_faults == [] and len(source.sleeps) == 2
    expected = Decimal(google.expected_micros("1112223334", first, last)) / 1_000_000
    assert total(stored_rows(store, "google_ads")) == expected


def test_the_stream_is_read_batch_by_batch_and_only_one_batch_is_held(monkeypatch):
    # Before: the whole answer was read (response.json()) and then parsed: text and objects of every batch at once,
    # about 2.4 kB a row — an account of 4,000 campaigns neared Lambda's 512 MB in one 31-day chunk.
    import tracemalloc

    from local.ad_sandboxes import google_ads as sandbox

    monkeypatch.setattr(sandbox, "BATCH_ROWS", 100)
    with GoogleAdsSandbox({"1112223334": ("RUB", "Europe/Moscow", 200)}) as google:
        source = _source(google, customers=("1112223334",), login=None)
        chunk = Chunk("google_ads", "1112223334", date(2026, 10, 1), date(2026, 10, 31))
        list(source.fetch(Chunk("google_ads", "1112223334", date(2026, 9, 1), date(2026, 9, 1)), Clock()))  # warm
        rows, cost = 0, Decimal(0)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            for row in source.fetch(chunk, Clock()):
                rows, cost = rows + 1, cost + row.cost
            peak = tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()
        assert cost == Decimal(google.expected_micros("1112223334", chunk.date_from, chunk.date_to)) / 1_000_000
    assert rows > 5000  # 53 batches of 100 rows
    assert peak < 2_000_000, peak  # the whole answer, as text and parsed, is about 13 MB


def test_a_stream_that_fails_after_its_first_batch_fails_the_chunk_and_keeps_it_for_the_next_run(store, monkeypatch):
    from local.ad_sandboxes import google_ads as sandbox

    monkeypatch.setattr(sandbox, "BATCH_ROWS", 10)
    original = sandbox.GoogleAdsSandbox._batches
    error = b'{"error": {"code": 503, "status": "UNAVAILABLE", "message": "The service is unavailable."}}'

    def failing(self, *args):
        answer = original(self, *args)
        yield next(answer)  # "["
        yield next(answer)  # the first batch
        yield b"," + error + b"]"

    def cut(self, *args):
        answer = original(self, *args)
        yield next(answer)
        yield next(answer)
        yield b',{"results": [{"segme'

    with GoogleAdsSandbox({"1112223334": ("RUB", "Europe/Moscow", 4)}) as google:
        source = _source(google, customers=("1112223334",), login=None)
        chunk = Chunk("google_ads", "1112223334", date(2026, 11, 1), date(2026, 11, 5))
        for broken, reason in ((failing, "UNAVAILABLE"), (cut, "cut short")):
            monkeypatch.setattr(sandbox.GoogleAdsSandbox, "_batches", broken)
            with pytest.raises(PlatformError, match=reason):
                list(source.fetch(chunk, Clock()))
            result = import_spend([source], store, chunk.date_from, chunk.date_to, deadline=Clock(), ingested_at=NOW)
            assert reason in result.failures[0] and [str(c) for c in result.pending] == [str(chunk)]
            assert stored_objects(store) == {}  # nothing of the chunk: it is stored whole or not at all
        monkeypatch.setattr(sandbox.GoogleAdsSandbox, "_batches", original)
        result = import_spend([source], store, chunk.date_from, chunk.date_to, deadline=Clock(), ingested_at=NOW)
        assert result.failures == [] and len(stored_objects(store)) == 5
        assert total(stored_rows(store, "google_ads")) == Decimal(google.expected_micros("1112223334", *days(
            "2026-11-01", "2026-11-05"))) / 1_000_000  # fmt: skip
