"""Manual spend CSV files: Excel's habits accepted, bad files rejected whole with reasons, corrected files replace."""

from __future__ import annotations

from decimal import Decimal

from tests.integration.spend_helpers import NOW, settings, store, stored_rows
from throughline.spend.manual import account_id, process_inbox

__all__ = ["store"]
INBOX = "spend/manual/inbox/"


def _drop(store, name: str, text: str, encoding: str = "utf-8") -> None:
    store.put_bytes(INBOX + name, text.encode(encoding))


def test_excel_file_with_bom_semicolons_and_comma_decimals_is_imported_and_moved(store):
    text = (
        "\ufeffdate;utm_source;utm_medium;utm_campaign;cost;currency;impressions;clicks;campaign_name\r\n"
        "01.11.2026;radio;offline;autumn;15 000,50;RUB;;;Радио «Осень»\r\n"
        "2026-11-02;flyers;offline;autumn;1234,5;rub;1000;12;\r\n"
        ";;;;;;;;\r\n"
    )
    _drop(store, "offline-2026.csv", text)
    result = process_inbox(store, settings(), now=NOW)
    assert result.failures == [] and result.rows == 2
    rows = stored_rows(store, "manual")
    assert [(r["date"], r["cost"], r["currency"], r["utm_source"], r["utm_campaign"]) for r in rows] == [
        ("2026-11-01", Decimal("15000.50"), "RUB", "radio", "autumn"),
        ("2026-11-02", Decimal("1234.5"), "RUB", "flyers", "autumn"),
    ]
    assert rows[0]["campaign_name"] == "Радио «Осень»" and rows[1]["campaign_name"] == "autumn"
    assert rows[1]["impressions"] == 1000 and rows[0]["clicks"] == 0
    assert {r["account_id"] for r in rows} == {"offline-2026"}
    assert list(store.keys(INBOX)) == []
    assert list(store.keys("spend/manual/processed/")) == ["spend/manual/processed/offline-2026.csv"]


def test_a_file_with_any_bad_row_is_not_imported_and_its_rejects_name_each_row(store):
    text = (
        "date,utm_source,utm_medium,utm_campaign,cost,currency\n"
        "2026-11-01,radio,offline,autumn,100.00,RUB\n"
        "2026-13-01,radio,offline,autumn,100.00,RUB\n"
        "2026-11-03,,offline,autumn,abc,RUB\n"
        "2026-11-04,radio,offline,autumn,1.001,EURO\n"
    )
    _drop(store, "bad.csv", text)
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 0 and stored_rows(store, "manual") == []
    assert "bad.csv" in result.failures[0]
    rejects = (store.get_bytes(INBOX + "bad.csv.rejects.txt") or b"").decode().splitlines()
    assert [line.split(":")[0] for line in rejects] == ["line 3", "line 4", "line 5"]
    assert "date" in rejects[0]
    assert "utm_source" in rejects[1] and "cost" in rejects[1]
    assert "cost" in rejects[2] and "currency" in rejects[2]
    assert INBOX + "bad.csv" in set(store.keys(INBOX))  # stays for the user to fix
    # The corrected file is imported and the stale rejects are removed.
    _drop(store, "bad.csv", "date,utm_source,utm_medium,utm_campaign,cost,currency\n2026-11-01,radio,offline,a,1,RUB\n")
    assert process_inbox(store, settings(), now=NOW).failures == []
    assert list(store.keys(INBOX)) == []


def test_missing_columns_and_windows_1251_files(store):
    _drop(store, "cols.csv", "date;utm_source;cost\n2026-11-01;x;1\n")
    _drop(store, "ansi.csv", "date;utm_source;utm_medium;utm_campaign;cost;currency;campaign_name\n"
          "2026-11-01;tv;offline;;10;RUB;Телевидение\n", encoding="cp1251")  # fmt: skip
    result = process_inbox(store, settings(), now=NOW)
    assert len(result.failures) == 1 and "cols.csv" in result.failures[0]
    assert "missing columns" in (store.get_bytes(INBOX + "cols.csv.rejects.txt") or b"").decode()
    [row] = stored_rows(store, "manual")
    assert row["campaign_name"] == "Телевидение" and row["campaign_id"] == "(none)"


def test_a_corrected_file_of_the_same_name_replaces_its_spend_whole(store):
    header = "date,utm_source,utm_medium,utm_campaign,cost,currency\n"
    _drop(store, "radio.csv", header + "2026-11-01,radio,offline,a,100,RUB\n2026-11-02,radio,offline,a,200,RUB\n")
    process_inbox(store, settings(), now=NOW)
    _drop(store, "radio.csv", header + "2026-11-02,radio,offline,a,250,RUB\n")
    process_inbox(store, settings(), now=NOW)
    assert [(r["date"], r["cost"]) for r in stored_rows(store, "manual")] == [("2026-11-02", Decimal("250"))]


def test_account_ids_are_stable_and_safe():
    assert account_id("spend-2026.csv") == "spend-2026"
    cyrillic = account_id("Офлайн реклама.csv")
    assert cyrillic == account_id("Офлайн реклама.csv") and cyrillic != account_id("Офлайн реклама 2.csv")
    assert all(ch.isascii() for ch in cyrillic)


def test_a_file_whose_partition_write_is_refused_says_how_many_rows_were_not_written(store, monkeypatch):
    # Before: 0 rows and a bare failure, though one of the file's three days was stored.
    text = "date,utm_source,utm_medium,utm_campaign,cost,currency\n" + "".join(
        f"2026-11-0{day},radio,offline,{campaign},{day},RUB\n"
        for day, campaign in ((1, "a"), (2, "a"), (2, "b"), (3, "a"))
    )
    _drop(store, "radio.csv", text)
    put = store.client.put_object
    allowed = [1]

    def refusing(**kwargs):
        if kwargs["Key"].startswith("spend/platform=manual/"):
            if allowed[0] <= 0:
                raise RuntimeError("InternalError")
            allowed[0] -= 1
        return put(**kwargs)

    monkeypatch.setattr(store.client, "put_object", refusing)
    result = process_inbox(store, settings(), now=NOW)
    assert (result.rows_fetched, result.rows, result.rows_not_written, result.status) == (4, 1, 3, "failed"), result
    assert "3 of 4 rows not written" in result.not_written[0] and "InternalError" in result.not_written[0]
    assert INBOX + "radio.csv" in set(store.keys(INBOX))  # stays for the next run


def test_a_corrected_file_whose_stale_day_cannot_be_cleared_counts_all_its_rows_as_not_written(store, monkeypatch):
    # Before: the refused delete (of a day the corrected file no longer lists) failed the file with 0 rows fetched
    # and 0 not written, though none of its rows were stored — the summary hid them as the old one did.
    header = "date,utm_source,utm_medium,utm_campaign,cost,currency\n"
    _drop(store, "radio.csv", header + "2026-11-01,radio,offline,a,100,RUB\n2026-11-02,radio,offline,a,200,RUB\n")
    process_inbox(store, settings(), now=NOW)
    _drop(store, "radio.csv", header + "2026-11-02,radio,offline,a,250,RUB\n2026-11-03,radio,offline,a,50,RUB\n")

    def refusing(**kwargs):
        raise RuntimeError("AccessDenied")

    monkeypatch.setattr(store.client, "delete_object", refusing)
    result = process_inbox(store, settings(), now=NOW)
    assert (result.rows_fetched, result.rows, result.rows_not_written, result.status) == (2, 0, 2, "failed"), result
    assert "2 of 2 rows not written" in result.not_written[0] and "AccessDenied" in result.not_written[0]
    assert INBOX + "radio.csv" in set(store.keys(INBOX))  # stays for the next run
