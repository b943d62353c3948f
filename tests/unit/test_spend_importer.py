"""Unit tests of the import run with a fake platform and an in-memory bucket: chunks, state, failures, requests."""

from __future__ import annotations

import gzip
import io
import tracemalloc
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from throughline.adapters.spend_store import SpendStore
from throughline.config import load_settings
from throughline.spend.importer import import_spend, state_key
from throughline.spend.plan import Chunk
from throughline.spend.rates import rates_from_portal
from throughline.spend.rows import SpendRow
from throughline.spend.run import RunRequest

NOW = datetime(2026, 11, 20, 0, 30, tzinfo=UTC)


class MemoryS3:
    class exceptions:
        class NoSuchKey(Exception):
            pass

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket, Key, Body, **_):
        self.objects[Key] = Body

    def get_object(self, *, Bucket, Key):
        if Key not in self.objects:
            raise self.exceptions.NoSuchKey(Key)
        return {"Body": io.BytesIO(self.objects[Key])}

    def delete_object(self, *, Bucket, Key):
        self.objects.pop(Key, None)


class FakePlatform:
    platform = "vk_ads"
    chunk_days = 10

    def __init__(self, accounts=("a",), fail_on=None, stop_on=None):
        self._accounts = list(accounts)
        self.fail_on = fail_on
        self.stop_on = stop_on
        self.fetched: list[Chunk] = []

    def accounts(self):
        return self._accounts

    def fetch(self, chunk, deadline):
        self.fetched.append(chunk)
        if chunk.account_id == self.fail_on:
            raise RuntimeError("refused")
        if self.stop_on == chunk.date_from:
            raise KeyboardInterrupt  # Lambda stopped the process: no Exception handler runs
        for day in chunk.days():
            yield SpendRow(date=day, platform="vk_ads", account_id=chunk.account_id, campaign_id="1", campaign_name="c",
                           impressions=1, clicks=1, cost=Decimal("1.50"), currency="RUB", include_vat=False,
                           account_timezone="Europe/Moscow", ingested_at=NOW)  # fmt: skip


class Forever:
    def seconds_left(self):
        return 1e9


@pytest.fixture
def store():
    return SpendStore("bucket", client=MemoryS3())


def test_work_for_an_account_no_longer_configured_is_dropped(store):
    store.put_json(state_key("vk_ads"), {"pending": [
        {"account_id": "gone", "date_from": "2026-01-01", "date_to": "2026-01-31"},
        {"account_id": "a", "date_from": "2026-01-01", "date_to": "2026-01-05"}]})  # fmt: skip
    platform = FakePlatform(accounts=("a",))
    result = import_spend([platform], store, date(2026, 11, 1), date(2026, 11, 2), deadline=Forever())
    assert {c.account_id for c in platform.fetched} == {"a"}
    assert Chunk("vk_ads", "a", date(2026, 1, 1), date(2026, 1, 5)) in platform.fetched
    assert result.pending == [] and store.get_json(state_key("vk_ads"))["pending"] == []


def test_a_run_stopped_mid_way_leaves_the_unfinished_chunks_recorded(store):
    platform = FakePlatform(stop_on=date(2026, 10, 11))
    with pytest.raises(KeyboardInterrupt):
        import_spend([platform], store, date(2026, 10, 1), date(2026, 10, 30), deadline=Forever())
    pending = store.get_json(state_key("vk_ads"))["pending"]
    assert [(p["date_from"], p["date_to"]) for p in pending] == [
        ("2026-10-11", "2026-10-20"),
        ("2026-10-21", "2026-10-30"),
    ]
    assert len([k for k in store.client.objects if k.startswith("spend/platform=")]) == 10  # the first chunk, whole


def test_a_failing_account_skips_its_other_chunks_but_not_other_accounts(store):
    platform = FakePlatform(accounts=("a", "bad"), fail_on="bad")
    result = import_spend([platform], store, date(2026, 10, 1), date(2026, 10, 30), deadline=Forever())
    assert len(result.failures) == 1 and "bad" in result.failures[0] and "refused" in result.failures[0]
    assert sum(1 for c in platform.fetched if c.account_id == "bad") == 1
    assert [c.account_id for c in result.pending] == ["bad"] * 3


def test_run_request_nightly_window_and_validation():
    settings = load_settings({"SPEND_LOOKBACK_DAYS": "3"})
    nightly = RunRequest.parse({}, settings, now=NOW)
    assert (nightly.date_from, nightly.date_to, nightly.explicit_platforms) == (date(2026, 11, 17), date(2026, 11, 19),
                                                                                False)  # fmt: skip
    assert "manual" in nightly.platforms
    backfill = RunRequest.parse({"date_from": "2026-01-01", "date_to": "2026-03-31", "platforms": ["vk_ads"]},
                                settings, now=NOW)  # fmt: skip
    assert backfill.platforms == ("vk_ads",) and backfill.explicit_platforms
    for bad in ({"date_from": "2026-01-01"}, {"date_from": "2026-02-01", "date_to": "2026-01-01"},
                {"date_from": "2026-11-01", "date_to": "2026-11-21"}, {"platforms": ["facebook"]},
                {"date_from": "01.01.2026", "date_to": "02.01.2026"}):  # fmt: skip
        with pytest.raises(ValueError):
            RunRequest.parse(bad, settings, now=NOW)


def test_portal_rates_are_restated_against_the_report_currency():
    portal = [{"CURRENCY": "RUB", "AMOUNT": "1", "AMOUNT_CNT": "1"},
              {"CURRENCY": "USD", "AMOUNT": "92.5", "AMOUNT_CNT": "1"},
              {"CURRENCY": "KZT", "AMOUNT": "18.40", "AMOUNT_CNT": "100"}]  # fmt: skip
    assert rates_from_portal(portal, "RUB") == {"KZT": "0.184", "RUB": "1", "USD": "92.5"}
    in_usd = rates_from_portal(portal, "USD")
    assert in_usd["USD"] == "1" and in_usd["RUB"] == "0.01081081"
    with pytest.raises(ValueError, match="EUR"):
        rates_from_portal(portal, "EUR")


def test_google_errors_inside_the_stream_array_are_found():
    from throughline.spend.google_ads import GoogleAdsError, _failure

    failure = {"@type": "type.googleapis.com/google.ads.googleads.v26.errors.GoogleAdsFailure", "requestId": "r1",
               "errors": [{"errorCode": {"queryError": "UNRECOGNIZED_FIELD"}, "message": "bad field"}]}  # fmt: skip
    stream = [{"results": []}, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [failure]}}]
    error = _failure(200, stream)
    assert isinstance(error, GoogleAdsError) and not error.retryable
    assert "queryError.UNRECOGNIZED_FIELD: bad field" in str(error) and "request r1" in str(error)
    assert _failure(200, [{"results": []}]) is None
    assert _failure(503, {"error": {"code": 503, "status": "UNAVAILABLE", "message": "x"}}).retryable


def test_a_lone_surrogate_in_a_name_costs_the_name_not_the_spend(store):
    # A campaign name with a lone surrogate (JSON may carry "\ud83d": a name cut in the middle of an emoji) has no
    # UTF-8 line. Before: the chunk failed (the account's spend was never imported while the name stayed, night after
    # night); earlier still, the chunk was half written. Now the name keeps U+FFFD where the surrogate was, as the
    # capture path does, and every rouble is stored.
    class Surrogate(FakePlatform):
        def fetch(self, chunk, deadline):
            for row in super().fetch(chunk, deadline):
                if row.date == date(2026, 10, 15):
                    row = SpendRow.model_validate(
                        {**row.model_dump(), "campaign_name": "Осень \ud83d", "ad_group_name": "\udc00"}
                    )
                yield row

    result = import_spend([Surrogate()], store, date(2026, 10, 1), date(2026, 10, 30), deadline=Forever())
    assert result.failures == [] and result.pending == []
    days = sorted(k.split("date=")[1][:10] for k in store.client.objects if k.startswith("spend/platform="))
    assert days == [f"2026-10-{day:02d}" for day in range(1, 31)]
    (line,) = store.read_partition("vk_ads", date(2026, 10, 15), "a")
    row = SpendRow.from_json_line(line)
    assert (row.campaign_name, row.ad_group_name, row.cost) == ("Осень \ufffd", "\ufffd", Decimal("1.50"))
    total = sum(SpendRow.from_json_line(line).cost for day in range(1, 31)
                for line in store.read_partition("vk_ads", date(2026, 10, day), "a"))  # fmt: skip
    assert total == Decimal("45.00")  # 30 days × 1.50


class PartitionsCountedS3(MemoryS3):
    """Keeps the state and counts the partitions' rows, not their bytes (so memory held is the importer's)."""

    def __init__(self):
        super().__init__()
        self.rows = 0

    def put_object(self, *, Bucket, Key, Body, **_):
        if Key.startswith("spend/platform="):
            self.rows += gzip.decompress(Body).count(b"\n")
        else:
            self.objects[Key] = Body


def test_the_import_holds_one_chunk_as_lines_and_lets_it_go_before_reading_the_next():
    # Before: a chunk's rows were kept as SpendRow objects (about 1.6 kB each) and still referenced while the next
    # chunk was read, so the import held two chunks per platform at its peak. Now a chunk is held as its stored
    # lines (about 0.4 kB a row here) and each day's lines go once stored.
    per_chunk = 10 * 300
    at_start: list[int] = []

    class Big(FakePlatform):
        def fetch(self, chunk, deadline):
            at_start.append(tracemalloc.get_traced_memory()[0])
            for day in chunk.days():
                for campaign in range(300):
                    yield SpendRow(date=day, platform="vk_ads", account_id=chunk.account_id,
                                   campaign_id=str(1_000_000 + campaign), campaign_name=f"Кампания {campaign} «Поиск»",
                                   impressions=1000 + campaign, clicks=12, cost=Decimal("1234.56"), currency="RUB",
                                   include_vat=False, account_timezone="Europe/Moscow", ingested_at=NOW)  # fmt: skip

    s3 = PartitionsCountedS3()
    store = SpendStore("bucket", client=s3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = import_spend([Big()], store, date(2026, 1, 1), date(2026, 1, 30), deadline=Forever())
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert result.platforms["vk_ads"].chunks_done == 3 and s3.rows == result.platforms["vk_ads"].rows == 3 * per_chunk
    held = [now - at_start[0] for now in at_start[1:]]  # what is still held from the chunks read before
    assert all(bytes_ < 100_000 for bytes_ in held), held  # a chunk's rows are megabytes; its state is a few kB
    assert peak < per_chunk * 800, peak  # one chunk, as lines; as rows (or two chunks as lines) it would be more


class RefusingS3(MemoryS3):
    """Accepts the first ``allowed`` partition writes, then refuses every partition PUT (the state's go through)."""

    def __init__(self, allowed: int):
        super().__init__()
        self.allowed = allowed

    def put_object(self, *, Bucket, Key, Body, **_):
        if Key.startswith("spend/platform="):
            if self.allowed <= 0:
                raise RuntimeError("InternalError: we encountered an internal error")
            self.allowed -= 1
        super().put_object(Bucket=Bucket, Key=Key, Body=Body)


def test_a_refused_write_is_reported_with_the_rows_fetched_and_not_written_and_the_state_kept():
    # Before: the platform's result was replaced by an empty one — 0 rows, while 13 days had been stored.
    store = SpendStore("bucket", client=RefusingS3(allowed=13))
    platform = FakePlatform()  # one row a day, chunks of 10 days
    result = import_spend([platform], store, date(2026, 10, 1), date(2026, 10, 30), deadline=Forever())
    vk = result.platforms["vk_ads"]
    # Chunk 1 (10 days) whole; chunk 2: days 11-13 stored, day 14 refused; chunk 3 never fetched.
    assert (vk.rows_fetched, vk.rows, vk.rows_not_written, vk.partitions, vk.chunks_done) == (20, 13, 7, 13, 1)
    assert vk.status == "failed" and len(vk.failures) == 1
    [reason] = vk.not_written
    assert "2026-10-11…2026-10-20" in reason and "7 of 10 rows not written" in reason and "InternalError" in reason
    summary = result.summary()
    assert summary["ok"] is False
    shown = summary["platforms"]["vk_ads"]
    assert (shown["status"], shown["rows"], shown["rows_fetched"], shown["rows_not_written"]) == ("failed", 13, 20, 7)
    assert shown["pending"] == [str(c) for c in vk.pending] and len(vk.pending) == 2
    # The state still names the refused chunk and the one not reached; the stored chunk left it.
    pending = store.get_json(state_key("vk_ads"))["pending"]
    assert [(p["date_from"], p["date_to"]) for p in pending] == [
        ("2026-10-11", "2026-10-20"),
        ("2026-10-21", "2026-10-30"),
    ]
    assert platform.fetched == [Chunk("vk_ads", "a", date(2026, 10, 1), date(2026, 10, 10)),
                                Chunk("vk_ads", "a", date(2026, 10, 11), date(2026, 10, 20))]  # fmt: skip


def test_a_run_whose_plan_cannot_be_recorded_fetches_nothing_and_says_so():
    class NoPuts(MemoryS3):
        def put_object(self, **_):
            raise RuntimeError("AccessDenied")

    store = SpendStore("bucket", client=NoPuts())
    platform = FakePlatform()
    result = import_spend([platform], store, date(2026, 10, 1), date(2026, 10, 5), deadline=Forever())
    vk = result.platforms["vk_ads"]
    assert platform.fetched == [] and vk.rows_fetched == 0 and vk.status == "failed"
    assert "recording the plan" in vk.failures[0] and "AccessDenied" in vk.failures[0]
    assert [str(c) for c in vk.pending] == [str(Chunk("vk_ads", "a", date(2026, 10, 1), date(2026, 10, 5)))]


def test_a_large_chunk_is_held_compressed_and_stored_byte_for_byte_as_its_lines():
    # Before: a chunk was held as plain lines, ~0.4 kB a row: a Direct chunk near its 1,000,000-row limit (an agency in
    # ad-group mode) held ~420 MB in a 512 MB function and was killed every night, the chunk owed for ever. Now a
    # large day is compressed as its rows come; the objects stored are the same bytes as before.
    days, per_day = 2, 3000  # each day far over the 256 kB a day is held as lines below

    class Large(FakePlatform):
        chunk_days = days

        def fetch(self, chunk, deadline):
            for day in chunk.days():
                for campaign in range(per_day):
                    yield SpendRow(date=day, platform="vk_ads", account_id=chunk.account_id,
                                   campaign_id=str(7_000_000 + campaign * 7919), impressions=1000 + campaign % 997,
                                   campaign_name=f"Кампания {campaign} «Поиск» {day.day}", clicks=campaign % 31,
                                   cost=Decimal(campaign % 100_000) / 100, currency="RUB", include_vat=False,
                                   account_timezone="Europe/Moscow", ingested_at=NOW)  # fmt: skip

    s3 = MemoryS3()
    store = SpendStore("bucket", client=s3)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = import_spend([Large()], store, date(2026, 1, 1), date(2026, 1, days), deadline=Forever())
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    rows = days * per_day
    stored = sum(len(body) for key, body in s3.objects.items() if key.startswith("spend/platform="))
    assert result.platforms["vk_ads"].rows == rows and stored < rows * 100
    # As plain lines: ≥ rows × 400 (2.4 MB here). Compressed: the rows as they pass, what is stored, and a day's first
    # 256 kB held as lines until it is known to be large (twice: the list and its growth).
    assert peak < rows * 150 + stored + 2 * 256 * 1024, (peak, rows)
    # The same bytes as the lines gzip'd whole (what a small day, held as lines, is stored as).
    from throughline.adapters.spend_store import _gzip

    for day in range(1, days + 1):
        lines = [row.to_json_line() for row in Large().fetch(Chunk("vk_ads", "a", date(2026, 1, day),
                                                                   date(2026, 1, day)), None)]  # fmt: skip
        key = f"spend/platform=vk_ads/date=2026-01-0{day}/a.json.gz"
        assert s3.objects[key] == _gzip("".join(line + "\n" for line in lines).encode()), day


def test_a_refused_state_write_after_a_stored_chunk_keeps_it_owed_and_the_rerun_replaces_not_adds():
    # The chunk's 10 days are stored, then recording it as done is refused: the run fails naming it, its rows count
    # as stored (none as not written), the state still names it and everything after it, and the rerun rewrites the
    # same partitions — the stored spend is the same, not doubled.
    class StateRefusedOnce(MemoryS3):
        state_puts = 0

        def put_object(self, *, Bucket, Key, Body, **_):
            if Key.startswith("spend/_state/"):
                self.state_puts += 1
                if self.state_puts == 2:  # the first records the plan; the second would record chunk 1 as done
                    raise RuntimeError("SlowDown")
            super().put_object(Bucket=Bucket, Key=Key, Body=Body)

    s3 = StateRefusedOnce()
    store = SpendStore("bucket", client=s3)
    result = import_spend([FakePlatform()], store, date(2026, 10, 1), date(2026, 10, 20), deadline=Forever())
    vk = result.platforms["vk_ads"]
    assert (vk.status, vk.rows_fetched, vk.rows, vk.rows_not_written, vk.chunks_done) == ("failed", 10, 10, 0, 1)
    assert "as done failed" in vk.failures[0] and "SlowDown" in vk.failures[0] and not vk.not_written
    pending = [(p["date_from"], p["date_to"]) for p in store.get_json(state_key("vk_ads"))["pending"]]
    assert pending == [("2026-10-01", "2026-10-10"), ("2026-10-11", "2026-10-20")]

    def spend() -> Decimal:
        return sum((SpendRow.from_json_line(line).cost for day in range(1, 21)
                    for line in store.read_partition("vk_ads", date(2026, 10, day), "a")), Decimal(0))  # fmt: skip

    assert spend() == Decimal("15.00")  # 10 days × 1.50
    again = import_spend([FakePlatform()], store, date(2026, 10, 1), date(2026, 10, 20), deadline=Forever())
    assert again.failures == [] and store.get_json(state_key("vk_ads"))["pending"] == []
    assert spend() == Decimal("30.00")  # 20 days × 1.50, the first ten written twice, counted once
