"""Hostile input and concurrent runs: manual files whose names collide, dates Athena cannot see, repeated lines,
files too big to read; a back-fill and the nightly run recording their unfinished work at the same time."""

from __future__ import annotations

import fnmatch
import re
from datetime import date
from decimal import Decimal
from pathlib import Path

from tests.integration.spend_helpers import NOW, Clock, settings, store, stored_rows, total
from throughline.spend.importer import NotReady, import_spend, state_key
from throughline.spend.manual import MAX_FILE_BYTES, account_id, process_inbox
from throughline.spend.rows import EARLIEST_DATE, SpendRow
from throughline.spend.run import RunRequest
from throughline.spend.vk_ads import TOKEN_KEY

__all__ = ["store"]
INBOX = "spend/manual/inbox/"
HEADER = "date,utm_source,utm_medium,utm_campaign,cost,currency\n"


def _drop(store, name: str, text: str) -> None:
    store.put_bytes(INBOX + name, text.encode("utf-8"))


def _rejects(store, name: str) -> str:
    return (store.get_bytes(INBOX + name + ".rejects.txt") or b"").decode()


def test_files_of_the_same_base_name_in_other_folders_or_cases_keep_their_own_spend(store):
    # Before: "a/spend.csv", "b/spend.csv", "spend.CSV" and "spend" all became account "spend" and overwrote each
    # other's partitions for the same date — spend silently lost.
    names = ["a/spend.csv", "b/spend.csv", "spend.CSV", "spend.csv", "spend"]
    for number, name in enumerate(names, start=1):
        _drop(store, name, HEADER + f"2026-11-01,radio,offline,autumn,{number}00,RUB\n")
    result = process_inbox(store, settings(), now=NOW)
    assert result.failures == []
    assert total(stored_rows(store, "manual")) == Decimal(100 + 200 + 300 + 400 + 500)
    assert len({account_id(name) for name in names}) == len(names)


def test_long_names_that_share_a_prefix_do_not_collide():
    stem = "x" * 130
    assert account_id(stem + "1.csv") != account_id(stem + "2.csv")
    assert all(len(account_id(name)) <= 120 for name in (stem + "1.csv", "a/" * 100 + "b.csv"))
    assert account_id("spend-2026.csv") == "spend-2026"  # a plain name stays readable


def test_dates_athena_cannot_see_or_that_have_not_happened_are_rejected(store):
    # The Glue table projects dates from EARLIEST_DATE to NOW: a row outside was stored but never queryable.
    today = NOW.date()
    text = HEADER + (
        f"{today},radio,offline,a,1,RUB\n"
        "2019-12-31,radio,offline,a,1,RUB\n"
        "2062-03-01,radio,offline,a,1,RUB\n"
        "0001-01-01,radio,offline,a,1,RUB\n"
        "2026-02-30,radio,offline,a,1,RUB\n"
    )
    _drop(store, "dates.csv", text)
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 0 and stored_rows(store, "manual") == []
    rejects = _rejects(store, "dates.csv").splitlines()
    assert [line.split(":")[0] for line in rejects] == ["line 3", "line 4", "line 5", "line 6"]


def test_the_earliest_date_is_the_one_the_glue_tables_project():
    template = (Path(__file__).parents[2] / "template.yaml").read_text()
    ranges = set(re.findall(r"projection\.date\.range:\s*(\S+),NOW", template))
    assert ranges == {EARLIEST_DATE.isoformat()}


def test_a_back_fill_before_the_earliest_date_is_refused():
    try:
        RunRequest.parse({"date_from": "2019-12-01", "date_to": "2020-01-31"}, settings(), now=NOW)
    except ValueError as error:
        assert EARLIEST_DATE.isoformat() in str(error)
    else:
        raise AssertionError("a range Athena cannot see was accepted")


def test_a_cost_beyond_the_athena_decimal_is_rejected(store):
    # decimal(18,6) holds at most 12 integer digits; one bigger value fails every Athena query over spend.
    _drop(store, "huge.csv", HEADER + "2026-11-01,radio,offline,a,1000000000000,RUB\n")
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 0 and "cost" in _rejects(store, "huge.csv")


def test_a_line_repeated_in_one_file_is_rejected_not_counted_twice(store):
    text = HEADER + (
        "2026-11-01,radio,offline,autumn,100,RUB\n"
        "2026-11-02,radio,offline,autumn,100,RUB\n"
        "01.11.2026,Radio ,offline,autumn,100,rub\n"  # the same date and tags, as Excel and hands type them
    )
    _drop(store, "twice.csv", text)
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 0 and stored_rows(store, "manual") == []
    [reject] = _rejects(store, "twice.csv").splitlines()
    assert reject.startswith("line 4:") and "line 2" in reject


def test_a_file_too_big_is_rejected_without_being_read(store):
    store.put_bytes(INBOX + "big.csv", HEADER.encode() + b"x" * (MAX_FILE_BYTES + 1))
    _drop(store, "ok.csv", HEADER + "2026-11-01,radio,offline,a,5,RUB\n")
    read: list[str] = []
    get_bytes = store.get_bytes

    def spy(key: str) -> bytes | None:
        read.append(key)
        return get_bytes(key)

    store.get_bytes = spy  # type: ignore[method-assign]
    result = process_inbox(store, settings(), now=NOW)
    assert INBOX + "big.csv" not in read
    assert result.rows == 1 and len(result.failures) == 1 and "big.csv" in result.failures[0]
    store.get_bytes = get_bytes  # type: ignore[method-assign]
    assert "MB" in _rejects(store, "big.csv")


class _Platform:
    """A platform whose reports for days from ``not_ready_from`` on are still being built; ``during`` runs inside
    the first fetch, as another run would progress while this one waits for an answer."""

    platform = "vk_ads"
    chunk_days = 31

    def __init__(self, not_ready_from: date | None = None, during=None):
        self.not_ready_from = not_ready_from
        self.during = during

    def accounts(self):
        return ["a"]

    def fetch(self, chunk, deadline):
        if self.during:
            during, self.during = self.during, None
            during()
        if self.not_ready_from and chunk.date_from >= self.not_ready_from:
            raise NotReady("still building")
        for day in chunk.days():
            yield SpendRow(date=day, platform="vk_ads", account_id="a", campaign_id="1", campaign_name="c",
                           impressions=1, clicks=1, cost=Decimal("1.00"), currency="RUB", include_vat=False,
                           account_timezone="Europe/Moscow", ingested_at=NOW)  # fmt: skip


def _pending(store) -> list[tuple[str, str]]:
    return [(c["date_from"], c["date_to"]) for c in store.get_json(state_key("vk_ads"))["pending"]]


def test_a_back_fill_beside_the_nightly_run_keeps_the_work_both_left(store):
    # Before: each run wrote the state whole, so the nightly run, ending after a CLI back-fill that had started and
    # ended meanwhile, erased the back-fill's unfinished months: they were never imported.
    def back_fill():
        result = import_spend([_Platform(not_ready_from=date(2026, 2, 1))], store, date(2026, 1, 1),
                              date(2026, 3, 31), deadline=Clock(), ingested_at=NOW)  # fmt: skip
        # It also takes on the work the nightly run recorded (and cannot finish it either, here).
        assert [str(c) for c in result.pending] == [
            "vk_ads a 2026-02-01…2026-03-03", "vk_ads a 2026-03-04…2026-03-31", "vk_ads a 2026-11-13…2026-11-19"
        ]  # fmt: skip

    nightly = import_spend([_Platform(during=back_fill)], store, date(2026, 11, 13), date(2026, 11, 19),
                           deadline=Clock(), ingested_at=NOW)  # fmt: skip
    assert nightly.failures == [] and nightly.pending == []
    assert _pending(store) == [("2026-02-01", "2026-03-03"), ("2026-03-04", "2026-03-31")]
    # The next run does that work, and the state empties.
    import_spend([_Platform()], store, date(2026, 11, 14), date(2026, 11, 20), deadline=Clock(), ingested_at=NOW)
    assert _pending(store) == []
    assert total(stored_rows(store, "vk_ads")) == Decimal(31 + 28 + 31 + 8)


def test_the_state_update_is_atomic_against_a_writer_in_between(store):
    key = state_key("vk_ads")
    store.put_json(key, {"pending": []})
    calls = []

    def change(state):
        calls.append(state)
        if len(calls) == 1:  # another run writes between this read and this write
            store.put_json(key, {"pending": [{"account_id": "b", "date_from": "2026-01-01", "date_to": "2026-01-01"}]})
        return {"pending": [*state["pending"], {"account_id": "a", "date_from": "2026-02-01", "date_to": "2026-02-01"}]}

    store.update_json(key, change)
    assert len(calls) == 2
    assert [c["account_id"] for c in store.get_json(key)["pending"]] == ["b", "a"]


def test_no_function_but_the_import_and_the_audiences_and_no_athena_table_can_read_the_vk_token():
    # Before: the token (and its refresh token, which manages the ad account) lay in spend/_state/, readable by the
    # report function's spend/* grant and by every analyst granted the spend table's location.
    from local.template import load_template

    resources = load_template()["Resources"]

    def patterns(value) -> list[str]:
        if isinstance(value, list):
            return [p for item in value for p in patterns(item)]
        if isinstance(value, dict) and "Fn::Sub" in value:
            return [str(value["Fn::Sub"]).replace("${DataBucket.Arn}/", "").replace("${DataBucket}/", "")]
        return []

    def role_of(properties) -> str | None:
        role = properties.get("Role")
        return role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None

    # Who holds each statement: a function's own SAM policies, its role's inline policies, or a policy on its role.
    functions_of = {}
    for name, resource in resources.items():
        if resource.get("Type") == "AWS::Serverless::Function":
            functions_of.setdefault(role_of(resource.get("Properties", {})) or name, set()).add(name)
    holders = []  # (statement, names of the functions that hold it)
    for name, resource in resources.items():
        properties = resource.get("Properties", {})
        kind = resource.get("Type")
        policies = properties.get("Policies") if isinstance(properties.get("Policies"), list) else []
        if kind == "AWS::Serverless::Function":
            holders += [(st, {name}) for p in policies if isinstance(p, dict) for st in p.get("Statement", [])]
        elif kind == "AWS::IAM::Role":
            for policy in policies:
                for statement in policy.get("PolicyDocument", {}).get("Statement", []):
                    holders.append((statement, functions_of.get(name, {name})))
        elif kind == "AWS::IAM::Policy":
            roles = [r["Ref"] for r in properties.get("Roles", []) if isinstance(r, dict) and "Ref" in r]
            for statement in properties.get("PolicyDocument", {}).get("Statement", []):
                holders.append((statement, set().union(*(functions_of.get(r, {r}) for r in roles))))
    readers = set()
    for statement, names in holders:
        actions = statement.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        if any(a in ("s3:GetObject", "s3:*") for a in actions) and any(
            fnmatch.fnmatchcase(TOKEN_KEY, p) for p in patterns(statement.get("Resource"))
        ):
            readers |= names
    for name, resource in resources.items():
        properties = resource.get("Properties", {})
        location = (properties.get("TableInput") or {}).get("StorageDescriptor", {}).get("Location")
        for prefix in patterns(location):
            prefix = prefix.removeprefix("s3://")
            assert not TOKEN_KEY.startswith(prefix), f"the Athena table {name} reads {prefix}"
    # The ad audiences' VK remarketing lists use the same token (VK issues few per client): build_segments reads it.
    assert readers == {"ImportAdSpendFunction", "BuildSegmentsFunction"}


def test_a_platform_named_twice_is_imported_once():
    # Before: ["vk_ads", "vk_ads"] started two VK importers in parallel, racing for the state and the token.
    request = RunRequest.parse({"platforms": ["vk_ads", "manual", "vk_ads"]}, settings(), now=NOW)
    assert request.platforms == ("vk_ads", "manual")
    for bad in ({"platforms": [["vk_ads"]]}, {"platforms": {"vk_ads": 1}}, {"platforms": 7}):
        try:
            RunRequest.parse(bad, settings(), now=NOW)
        except ValueError as error:
            assert "platforms" in str(error)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_a_file_taken_by_another_run_between_listing_and_reading_is_left_to_it(store):
    # Before: the vanished file read as empty, was "rejected" (a stray rejects file, a failure, the alarm).
    _drop(store, "mine.csv", HEADER + "2026-11-01,radio,offline,a,5,RUB\n")
    listed = store.sizes

    def sizes(prefix):
        yield from listed(prefix)
        yield INBOX + "theirs.csv", 100

    store.sizes = sizes  # type: ignore[method-assign]
    result = process_inbox(store, settings(), now=NOW)
    assert result.failures == [] and result.rows == 1
    assert store.get_bytes(INBOX + "theirs.csv.rejects.txt") is None


def test_a_file_with_more_rows_than_the_function_can_hold_is_rejected_whole(store, monkeypatch):
    # Before: a valid 20 MB file (450,000 short rows) peaked at 1 GB while parsed, past the function's 512 MB: the
    # run died, the file stayed in the inbox, and every later run died on it too.
    from throughline.spend import manual

    monkeypatch.setattr(manual, "MAX_ROWS", 30)
    lines = "".join(f"2026-11-{day:02d},radio,offline,c{n},1,RUB\n" for day in range(1, 11) for n in range(3))
    _drop(store, "fits.csv", HEADER + lines)
    _drop(store, "too-long.csv", HEADER + lines + "2026-11-11,radio,offline,c0,1,RUB\n")
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 30 and len(result.failures) == 1 and "too-long.csv" in result.failures[0]
    assert "more than 30 rows" in _rejects(store, "too-long.csv")


def test_a_column_named_twice_is_refused_rather_than_read_from_one_copy(store):
    # Before: "cost" twice was read from its last copy; the first (here the real spend) silently ignored.
    _drop(store, "two-costs.csv", "date,utm_source,utm_medium,utm_campaign,cost,currency,Cost\n"
          "2026-11-01,radio,offline,a,1000,RUB,0\n")  # fmt: skip
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 0 and "columns named twice ['cost']" in _rejects(store, "two-costs.csv")


def test_a_corrected_file_clears_the_days_it_dropped_even_when_the_old_file_is_gone(store):
    # Before: the days to clear came from re-reading the old file in processed/: once a user tidied processed/ (or the
    # old file read differently under today's rules), a dropped day kept its old spend for ever.
    _drop(store, "radio.csv", HEADER + "2026-11-01,radio,offline,a,100,RUB\n2026-11-02,radio,offline,a,200,RUB\n")
    process_inbox(store, settings(), now=NOW)
    store.delete("spend/manual/processed/radio.csv")
    _drop(store, "radio.csv", HEADER + "2026-11-02,radio,offline,a,250,RUB\n")
    assert process_inbox(store, settings(), now=NOW).failures == []
    assert [(r["date"], r["cost"]) for r in stored_rows(store, "manual")] == [("2026-11-02", Decimal("250"))]


def test_one_file_that_cannot_be_stored_does_not_stop_the_others(store):
    # Before: an S3 error on one file (here its move out of the inbox) ended the whole run: later files, the
    # currency rates and the run's summary were lost.
    _drop(store, "a.csv", HEADER + "2026-11-01,radio,offline,a,1,RUB\n")
    _drop(store, "b.csv", HEADER + "2026-11-01,tv,offline,b,2,RUB\n")
    move = store.move

    def flaky(source: str, target: str) -> None:
        if source.endswith("/a.csv"):
            raise RuntimeError("S3 said no")
        move(source, target)

    store.move = flaky  # type: ignore[method-assign]
    result = process_inbox(store, settings(), now=NOW)
    assert result.failures == ["manual file a.csv: RuntimeError: S3 said no"]
    assert INBOX + "b.csv" not in set(store.keys(INBOX)) and INBOX + "a.csv" in set(store.keys(INBOX))
    assert total(stored_rows(store, "manual")) == Decimal(3)  # a.csv's rows are stored; it is done again next run


def test_a_storage_error_in_one_platform_is_named_and_the_others_are_kept(store):
    # Before: an S3 error while storing one platform's partitions escaped the run: the other platforms' results, the
    # manual files and the rates that come after were lost, and the error named no platform.
    class Other(_Platform):
        platform = "google_ads"

        def fetch(self, chunk, deadline):
            for row in super().fetch(chunk, deadline):
                yield row.model_copy(update={"platform": "google_ads"})

    write = store.write_partition

    def refusing(platform, day, account_id, lines):
        if platform == "vk_ads":
            raise RuntimeError("SlowDown")
        return write(platform, day, account_id, lines)

    store.write_partition = refusing  # type: ignore[method-assign]
    result = import_spend([_Platform(), Other()], store, date(2026, 11, 1), date(2026, 11, 3), deadline=Clock())
    assert result.failures == [
        "vk_ads account a (2026-11-01…2026-11-03): storing failed (3 of 3 rows not written): SlowDown"
    ]
    vk = result.platforms["vk_ads"]
    assert (vk.status, vk.rows_fetched, vk.rows, vk.rows_not_written) == ("failed", 3, 0, 3)
    assert result.platforms["google_ads"].rows == 3 and total(stored_rows(store, "google_ads")) == Decimal(3)
    assert _pending(store) == [("2026-11-01", "2026-11-03")]  # recorded for the next run


def test_an_unclosed_quote_is_the_files_reject_not_the_end_of_the_run(store):
    # Before: the csv module's error ("field larger than field limit") escaped the inbox: the run died, and so did
    # every later run while the file waited.
    _drop(store, "quote.csv", HEADER + '2026-11-01,radio,offline,"Акция,1,RUB\n' + "x" * 200_000 + "\n")
    _drop(store, "fine.csv", HEADER + "2026-11-01,tv,offline,b,2,RUB\n")
    result = process_inbox(store, settings(), now=NOW)
    assert result.rows == 1 and len(result.failures) == 1 and "quote.csv" in result.failures[0]
    assert "unclosed quote" in _rejects(store, "quote.csv")


def test_a_file_that_cannot_be_read_waits_and_the_others_go_on(store):
    _drop(store, "a.csv", HEADER + "2026-11-01,radio,offline,a,1,RUB\n")
    _drop(store, "b.csv", HEADER + "2026-11-01,tv,offline,b,2,RUB\n")
    get_bytes = store.get_bytes

    def refusing(key: str) -> bytes | None:
        if key.endswith("inbox/a.csv"):
            raise RuntimeError("InternalError")
        return get_bytes(key)

    store.get_bytes = refusing  # type: ignore[method-assign]
    result = process_inbox(store, settings(), now=NOW)
    assert result.failures == ["manual file a.csv: RuntimeError: InternalError"] and result.rows == 1


def test_excel_unicode_text_is_read_and_nul_bytes_are_refused_plainly(store):
    # Before: a UTF-16 file (Excel's "Unicode text", tab-separated) was read as Windows-1251 — a rejects file full of
    # NUL bytes and mojibake column names; NUL bytes in a UTF-8 file went into the tags.
    text = "date\tutm_source\tutm_medium\tutm_campaign\tcost\tcurrency\r\n"
    text += "01.11.2026\tрадио\toffline\tосень\t1 500,50\tRUB\r\n"
    store.put_bytes(INBOX + "unicode.txt", text.encode("utf-16"))
    store.put_bytes(INBOX + "nul.csv", (HEADER + "2026-11-01,radio,offline,a\x00b,1,RUB\n").encode())
    result = process_inbox(store, settings(), now=NOW)
    [row] = stored_rows(store, "manual")
    assert (row["utm_source"], row["utm_campaign"], row["cost"]) == ("радио", "осень", Decimal("1500.50"))
    assert len(result.failures) == 1 and "nul.csv" in result.failures[0]
    assert "NUL" in _rejects(store, "nul.csv") and "\x00" not in _rejects(store, "nul.csv")


class _Restating:
    """VK figures that change between runs: ``cost[day]`` per day; a day not listed has no rows at all."""

    platform = "vk_ads"
    chunk_days = 10

    def __init__(self, cost: dict[date, str]):
        self.cost = cost

    def accounts(self):
        return ["a"]

    def fetch(self, chunk, deadline):
        for day in chunk.days():
            if day in self.cost:
                yield SpendRow(date=day, platform="vk_ads", account_id="a", campaign_id="1", campaign_name="c",
                               impressions=1, clicks=1, cost=Decimal(self.cost[day]), currency="RUB",
                               include_vat=False, account_timezone="Europe/Moscow", ingested_at=NOW)  # fmt: skip


def test_an_s3_error_mid_chunk_leaves_the_chunk_recorded_and_the_rerun_stores_what_a_clean_run_does(store):
    # Fault injection below the store (botocore's own event, after its retries): the 5th day's PUT of the
    # second chunk is refused. S3 has no transaction over ten objects: what holds is that each day is one whole
    # object, the chunk stays recorded, and the next run writes every day of it again.
    first, last = date(2026, 10, 1), date(2026, 10, 20)
    old = {first.replace(day=d): "1.00" for d in range(1, 21)}
    import_spend([_Restating(old)], store, first, last, deadline=Clock(), ingested_at=NOW)
    new = {first.replace(day=d): "2.50" for d in range(1, 21) if d not in (3, 14, 17)}  # 3 days restated to none
    refused = "spend/platform=vk_ads/date=2026-10-15/a.json.gz"

    def refuse(params, **_):
        if params["Key"] == refused:
            raise RuntimeError("InternalError")

    store.client.meta.events.register("before-parameter-build.s3.PutObject", refuse)
    result = import_spend([_Restating(new)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == [
        "vk_ads account a (2026-10-11…2026-10-20): storing failed (5 of 8 rows not written): InternalError"
    ]
    vk = result.platforms["vk_ads"]  # 9 rows of the first chunk stored, 3 of the second (11–13; 14 is empty)
    assert (vk.rows_fetched, vk.rows, vk.rows_not_written, vk.partitions, vk.chunks_done) == (17, 12, 5, 14, 1)
    assert _pending(store) == [("2026-10-11", "2026-10-20")]  # the half-stored chunk is still owed
    # Days 11–14 were replaced (14 now empty), 15 and later keep the earlier figures until the rerun.
    assert total(stored_rows(store, "vk_ads")) == Decimal("2.50") * 9 + Decimal("2.50") * 3 + Decimal("1.00") * 6
    store.client.meta.events.unregister("before-parameter-build.s3.PutObject", refuse)
    again = import_spend([_Restating(new)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert again.failures == [] and _pending(store) == []
    assert total(stored_rows(store, "vk_ads")) == Decimal("2.50") * 17  # 20 days, 3 of them restated to nothing
    for day in (3, 14, 17):  # an emptied day is an object with no lines, not the old figures
        assert store.get_bytes(f"spend/platform=vk_ads/date=2026-10-{day:02d}/a.json.gz") is not None
        assert store.read_partition("vk_ads", date(2026, 10, day), "a") == []
