"""Yandex Direct import against the sandbox: offline polling, agency logins, limits, errors, idempotent reruns."""

from __future__ import annotations

from datetime import date

import pytest

from local.ad_sandboxes import YandexDirectSandbox
from tests.integration.spend_helpers import NOW, Clock, days, store, stored_objects, stored_rows, total
from throughline.spend import yandex_direct
from throughline.spend.importer import import_spend, state_key
from throughline.spend.plan import Chunk
from throughline.spend.yandex_direct import YandexDirectError, YandexDirectSource

__all__ = ["store"]


@pytest.fixture
def direct():
    with YandexDirectSandbox(
        {"client-one": ("RUB", 4), "client-two": ("KZT", 3)},
        online_max_rows=30,
        advertiser_tokens={"own-token": "client-one"},
    ) as sandbox:
        yield sandbox


def _source(sandbox, token="agency-token", logins=("client-one", "client-two"), **options):
    sleeps: list[float] = []
    source = YandexDirectSource(
        token, sandbox.api_url, logins, run_date=NOW.date(), ingested_at=NOW, sleep=sleeps.append, **options
    )
    source.sleeps = sleeps
    return source


def test_offline_reports_are_polled_until_ready_per_agency_client_login(direct, store):
    source = _source(direct)
    first, last = days("2026-10-01", "2026-10-31")
    result = import_spend([source], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == []
    assert source.sleeps and all(wait == 1.0 for wait in source.sleeps)  # retryIn honoured between 201/202 polls
    rows = stored_rows(store, "yandex_direct")
    assert total(rows, "client-one") == direct.expected_cost("client-one", first, last)
    assert total(rows, "client-two") == direct.expected_cost("client-two", first, last)
    assert {r["currency"] for r in rows if r["account_id"] == "client-two"} == {"KZT"}
    assert all(r["campaign_name"].startswith("Кампания ") for r in rows)  # UTF-8 whatever the Content-Type says
    assert all(r["include_vat"] is False and r["account_timezone"] == "Europe/Moscow" for r in rows)
    assert len(stored_objects(store)) == 2 * 31  # one object per login per day, days without spend included
    assert direct.max_in_queue <= direct.queue_limit


def test_rerun_gives_the_same_objects_and_totals(direct, store):
    first, last = days("2026-11-01", "2026-11-10")
    import_spend([_source(direct)], store, first, last, deadline=Clock(), ingested_at=NOW)
    before = stored_objects(store)
    import_spend([_source(direct)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert stored_objects(store) == before


def test_a_report_unfinished_at_the_deadline_is_collected_by_the_next_run(direct, store):
    direct.offline_polls = 3
    first, last = days("2026-09-01", "2026-09-30")
    source = _source(direct, logins=("client-one",))
    # The deadline is too close to wait for retryIn: the run stores nothing for the chunk and records it.
    result = import_spend([source], store, first, last, deadline=Clock(seconds=5.5), ingested_at=NOW)
    assert result.failures == [] and [str(c) for c in result.pending] == [
        "yandex_direct client-one 2026-09-01…2026-09-30"
    ]
    assert stored_objects(store) == {}
    assert store.get_json(state_key("yandex_direct"))["pending"] == [
        {"account_id": "client-one", "date_from": "2026-09-01", "date_to": "2026-09-30"}
    ]
    # The nightly run picks it up first: the identical request (same ReportName) finds the queued report.
    requests_before = direct.report_requests
    result = import_spend([source], store, *days("2026-11-13", "2026-11-19"), deadline=Clock(), ingested_at=NOW)
    assert result.pending == [] and result.failures == []
    assert total(stored_rows(store, "yandex_direct")) == (
        direct.expected_cost("client-one", first, last)
        + direct.expected_cost("client-one", *days("2026-11-13", "2026-11-19"))
    )
    assert direct.report_requests - requests_before <= 2 + 3  # polls of the old report + the new one
    assert store.get_json(state_key("yandex_direct"))["pending"] == []


def test_deadline_between_chunks_stores_whole_partitions_and_the_rest_is_pending(direct, store):
    direct.online_max_rows = 1000  # online reports: the only deadline checks are the importer's, between chunks
    source = _source(direct, logins=("client-one",), chunk_days=10)
    result = import_spend(
        [source], store, *days("2026-10-01", "2026-10-30"), deadline=Clock(checks_allowed=1), ingested_at=NOW
    )
    assert len(stored_objects(store)) == 10
    assert [str(c) for c in result.pending] == [
        "yandex_direct client-one 2026-10-11…2026-10-20",
        "yandex_direct client-one 2026-10-21…2026-10-30",
    ]


def test_vat_and_ad_group_grain(direct, store):
    source = _source(direct, logins=("client-one",), include_vat=True, ad_groups=True)
    first, last = days("2026-11-01", "2026-11-03")
    import_spend([source], store, first, last, deadline=Clock(), ingested_at=NOW)
    rows = stored_rows(store, "yandex_direct")
    assert all(r["include_vat"] is True for r in rows)
    assert {r.get("ad_group_id") is None for r in rows} == {True, False}  # Wizard campaigns have no ad groups
    expected = direct.expected_cost("client-one", first, last, include_vat=True)
    assert abs(total(rows) - expected) <= len(rows) * 0.01  # VAT is rounded per ad-group row


def test_agency_login_that_is_not_a_client_fails_alone(direct, store):
    source = _source(direct, logins=("client-one", "stranger"))
    result = import_spend([source], store, *days("2026-11-01", "2026-11-02"), deadline=Clock(), ingested_at=NOW)
    [failure] = result.failures
    assert "stranger" in failure and "error 54" in failure and "agency" in failure
    assert {r["account_id"] for r in stored_rows(store, "yandex_direct")} == {"client-one"}
    assert "agency-token" not in failure


def test_advertiser_token_without_client_login_uses_its_own_login(direct, store):
    source = _source(direct, token="own-token", logins=())
    assert source.accounts() == ["client-one"]
    result = import_spend([source], store, *days("2026-11-01", "2026-11-02"), deadline=Clock(), ingested_at=NOW)
    assert result.failures == [] and stored_rows(store, "yandex_direct")


def test_bad_token_is_a_clear_error(direct):
    source = _source(direct, token="wrong")
    with pytest.raises(YandexDirectError, match=r"error 53.*YANDEX_DIRECT_TOKEN"):
        list(source.fetch(Chunk("yandex_direct", "client-one", date(2026, 11, 1), date(2026, 11, 1)), Clock()))


def test_server_errors_and_limits_are_retried(direct, store):
    direct.faults = [(500, 1000), (400, 56), (400, 9000)]
    source = _source(direct, logins=("client-one",))
    result = import_spend([source], store, *days("2026-11-01", "2026-11-02"), deadline=Clock(), ingested_at=NOW)
    assert result.failures == [] and direct.faults == []
    assert source.sleeps[:3] == [10.0, 10.0, 10.0]


def test_same_report_name_with_other_parameters_is_refused_by_the_sandbox(direct):
    import json

    import requests

    body = _source(direct).report_request(Chunk("yandex_direct", "client-one", date(2026, 1, 1), date(2026, 1, 30)))
    headers = {"Authorization": "Bearer agency-token", "Client-Login": "client-one"}
    assert requests.post(direct.api_url + "reports", data=json.dumps(body), headers=headers).status_code == 201
    body["params"]["IncludeVAT"] = "YES"
    answer = requests.post(direct.api_url + "reports", data=json.dumps(body), headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["error_code"] == 4000


def test_a_report_cut_short_is_refused_whole_and_its_days_keep_their_earlier_figures(direct, store):
    # Before: skipReportSummary hid the one line that says how many rows a report has, so a report that stopped
    # half way (cleanly, at a line's end) was stored as if complete — its missing days emptied, their spend gone.
    first, last = days("2026-11-01", "2026-11-10")
    source = _source(direct, logins=("client-one",))
    import_spend([source], store, first, last, deadline=Clock(), ingested_at=NOW)
    before = stored_objects(store)
    direct.cut_reports.append(7)
    result = import_spend([_source(direct, logins=("client-one",))], store, first, last, deadline=Clock())
    assert len(result.failures) == 1 and "summary" in result.failures[0]
    assert stored_objects(store) == before
    assert store.get_json(state_key("yandex_direct"))["pending"] == [
        {"account_id": "client-one", "date_from": "2026-11-01", "date_to": "2026-11-10"}
    ]


def test_a_report_at_the_row_limit_is_refused_rather_than_stored_cut(direct, store, monkeypatch):
    direct.row_limit = 20  # stands for the 1,000,000 rows a report holds when Page.Limit is not given
    monkeypatch.setattr(yandex_direct, "ROW_LIMIT", 20)
    result = import_spend([_source(direct, logins=("client-one",))], store, *days("2026-11-01", "2026-11-10"),
                          deadline=Clock(), ingested_at=NOW)  # fmt: skip
    assert len(result.failures) == 1 and "row limit" in result.failures[0]
    assert stored_objects(store) == {}


def test_campaign_names_with_unicode_line_separators_stay_in_their_row(direct, store, monkeypatch):
    # Before: iter_lines() split the TSV with str.splitlines(), which also breaks at U+2028, U+0085 and U+001C — a name
    # pasted from a web page cut its row in two and the login's import failed every night.
    from local.ad_sandboxes import yandex_direct as sandbox

    original = sandbox._campaign_row
    odd = "Весна\u2028Лето\x85Осень\x1cЗима"
    monkeypatch.setattr(sandbox, "_campaign_row", lambda stat: {**original(stat), "CampaignName": odd})
    first, last = days("2026-11-01", "2026-11-05")
    result = import_spend([_source(direct, logins=("client-one",))], store, first, last, deadline=Clock())
    assert result.failures == []
    rows = stored_rows(store, "yandex_direct")
    assert total(rows) == direct.expected_cost("client-one", first, last)
    assert {r["campaign_name"] for r in rows} == {odd}


NAMES = ["Весна\tЛето", "Осень\nЗима", "Мир\r\nТруд", '5" монитор', '"Акция"', '"', "Конец\t", "Строка\n\nдве"]
# A backslash: in the escaped form it is written doubled; in the quoted form it is written as it is, and a backslash
# before t, n, r, 0, b, f, ' or another backslash is then read as an escape (the one ambiguity of reading both forms).
BACKSLASHES = ["C:\\new\\tab", "\\", "a\\b"]


@pytest.mark.parametrize("form", ["escaped", "quoted"])
def test_names_with_tabs_line_breaks_quotes_and_backslashes_come_back_whole_in_either_form(store, monkeypatch, form):
    # Before: the sandbox wrote such a name raw and the parser split it (a tab made a row of seven columns, a line break
    # two rows): the login's import failed every night. Direct's docs do not say which form it writes; both are read.
    from local.ad_sandboxes import yandex_direct as sandbox

    original = sandbox._campaign_row
    names = NAMES + (BACKSLASHES if form == "escaped" else ["Путь\\Папка"])  # a backslash before no escape letter

    def named(stat):
        row = original(stat)
        return {**row, "CampaignName": names[int(row["CampaignId"]) % len(names)]}

    monkeypatch.setattr(sandbox, "_campaign_row", named)
    with YandexDirectSandbox({"client-one": ("RUB", 12)}, online_max_rows=1000, special_characters=form) as direct:
        first, last = days("2026-11-01", "2026-11-05")
        result = import_spend([_source(direct, logins=("client-one",))], store, first, last, deadline=Clock())
        assert result.failures == []
        rows = stored_rows(store, "yandex_direct")
        assert total(rows) == direct.expected_cost("client-one", first, last)
        expected = {c: names[int(c) % len(names)] for c in direct.campaigns("client-one")}
    assert {row["campaign_id"]: row["campaign_name"] for row in rows} == {
        c: name.strip() for c, name in expected.items() if c in {row["campaign_id"] for row in rows}
    }
    assert len({row["campaign_name"] for row in rows}) >= 8  # most of the names were in the report


def test_a_name_the_report_does_not_escape_refuses_the_report_naming_its_line(store, monkeypatch):
    from local.ad_sandboxes import yandex_direct as sandbox

    original = sandbox._campaign_row
    monkeypatch.setattr(sandbox, "_campaign_row", lambda stat: {**original(stat), "CampaignName": "Весна\tЛето"})
    with YandexDirectSandbox({"client-one": ("RUB", 2)}, special_characters="raw") as direct:
        first, last = days("2026-11-01", "2026-11-02")
        result = import_spend([_source(direct, logins=("client-one",))], store, first, last, deadline=Clock())
    [failure] = result.failures
    assert "line 2 has 7 columns, expected 6" in failure and "Весна" in failure
    assert stored_rows(store, "yandex_direct") == []  # nothing of the chunk is stored
