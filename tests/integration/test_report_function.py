"""build_roi_report in the local stack: spend and rates in S3 as the import writes them, the CRM in the sandbox,
the report in reports/roi/<date>/ and latest/; a failed run leaves latest/ as it was; the template's promises."""

from __future__ import annotations

import gzip
import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest

from local.bitrix24_sandbox.server import seed_history
from local.template import load_template
from throughline.adapters.report_store import ReportBusy, S3Objects, run_lock
from throughline.report import job

RESOURCES = load_template()["Resources"]


def put_spend(s3, bucket: str, platform: str, day: str, account: str, rows: list[dict]) -> None:
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    key = f"spend/platform={platform}/date={day}/{account}.json.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body))


def spend_row(platform: str, day: str, campaign_id: str, name: str, cost: str, **extra) -> dict:
    return {"date": day, "platform": platform, "account_id": "acc1", "campaign_id": campaign_id,
            "campaign_name": name, "impressions": 10000, "clicks": 250, "cost": json.loads(cost), "currency": "RUB",
            "include_vat": False, "account_timezone": "Europe/Moscow", "ingested_at": "2026-11-02T02:00:00Z",
            **extra}  # fmt: skip


@pytest.fixture
def report_stack(make_stack):
    stack = make_stack(poll_queues=False)
    bucket = stack.resources.physical["DataBucket"]
    s3 = boto3.session.Session().client("s3")
    for platform, day, campaign_id, name, cost, extra in (
        ("yandex_direct", "2026-11-02", "777", "Поиск", "80000.00", {}),
        ("vk_ads", "2026-11-02", "55", "Зима", "29999.99", {}),
        ("google_ads", "2026-12-02", "9", "Outside the period", "5", {}),
        ("manual", "2026-11-03", "", "", "0.01", {"utm_source": "flyer", "utm_medium": "offline", "utm_campaign": "x"}),
    ):
        row = spend_row(platform, day, campaign_id, name, cost, **extra)
        put_spend(s3, bucket, platform, day, f"acc-{platform}", [row])
    s3.put_object(Bucket=bucket, Key="rates/date=2026-11-01/rates.json",
                  Body=json.dumps({"date": "2026-11-01", "base": "RUB", "rates": {"USD": "92.12"}, "source": "cbr",
                                   "fetched_at": "2026-11-01T00:00:00Z"}))  # fmt: skip
    leads = seed_history(
        stack.sandbox,
        "lead",
        [{"DATE_CREATE": "2026-11-05T10:00:00+03:00", "UTM_SOURCE": "yandex", "UTM_MEDIUM": "cpc",
          "UTM_CAMPAIGN": "777"} for _ in range(100)]
        + [{"DATE_CREATE": "2026-11-06T10:00:00+03:00", "UTM_SOURCE": "vk", "UTM_MEDIUM": "cpc",
            "UTM_CAMPAIGN": "Зима"} for _ in range(50)],
    )  # fmt: skip
    seed_history(
        stack.sandbox,
        "deal",
        [{"DATE_CREATE": "2026-11-10T10:00:00+03:00", "LEAD_ID": leads[n], "STAGE_ID": "WON", "OPPORTUNITY": 20000,
          "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-11-20"} for n in range(25)]
        + [{"DATE_CREATE": "2026-11-10T10:00:00+03:00", "LEAD_ID": leads[100 + n], "STAGE_ID": "WON",
            "OPPORTUNITY": 15000, "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-11-21"} for n in range(5)],
    )  # fmt: skip
    return stack, s3, bucket


def test_invoke_writes_dated_and_latest_with_the_seed_figures(report_stack) -> None:
    stack, s3, bucket = report_stack
    result = stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    assert result["period"] == {"date_from": "2026-11-01", "date_to": "2026-11-30"}
    assert result["crm"]["mode"] == "full" and result["crm"]["rest_calls"] == 1
    latest = json.loads(s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read())
    channels = {row["channel"]: row["metrics"] for row in latest["rows"] if row["level"] == "channel"}
    assert channels["paid_search"]["romi"] == "525.00"  # money and percentages: exact decimal strings
    assert channels["social"]["spend"] == "29999.99" and channels["social"]["romi"] == "150.00"  # 45000.01 / 29999.99
    assert latest["data_quality"]["unmatched_spend"] == "0.01"  # the flyer: spend with no lead, still in the total
    assert latest["headline"]["spend"] == "110000.00"
    [deal_funnel] = [funnel for funnel in latest["funnels"] if funnel["entity"] == "deal"]
    assert deal_funnel["source"] == "stage_history" and deal_funnel["won"] == 30  # crm.stagehistory.list was read
    dated = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="reports/roi/")["Contents"]]
    assert {key.rsplit("/", 1)[1] for key in dated} == {"roi.json", "roi.csv", "index.html"}
    assert len(dated) == 6
    snapshot = s3.list_objects_v2(Bucket=bucket, Prefix="crm/snapshot/")["Contents"]
    assert {item["Key"] for item in snapshot} >= {"crm/snapshot/state.json",
                                                  "crm/snapshot/entity=lead/bucket=00000/part.json.gz"}  # fmt: skip

    # The next run reads only what changed: one REST call.
    again = stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    assert again["crm"]["mode"] == "incremental" and again["crm"]["rest_calls"] == 1


def test_the_stage_history_is_read_once_a_run(report_stack, monkeypatch) -> None:
    # The wins without CLOSEDATE, the funnel and the segments section all come from one read of the snapshot's
    # stage history (it was read three times a night: a million entries decoded each time at portal scale).
    stack, s3, bucket = report_stack
    # Read from its columnar copy (report.columns), as leads and deals are.
    reads: list[str] = []

    def counted(real):
        def read(objects, entity, *args, **kwargs):
            reads.append(f"{real.__name__} {entity}")
            return real(objects, entity, *args, **kwargs)

        return read

    monkeypatch.setattr(job, "read_snapshot", counted(job.read_snapshot))
    monkeypatch.setattr(job, "read_rows", counted(job.read_rows))
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    assert [read for read in reads if read.endswith(job.HISTORY)] == [f"read_rows {job.HISTORY}"]
    latest = json.loads(s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read())
    [deal_funnel] = [funnel for funnel in latest["funnels"] if funnel["entity"] == "deal"]
    assert deal_funnel["source"] == "stage_history" and deal_funnel["won"] == 30


def emitted_metrics(out: str) -> dict[str, list]:
    """Metric name -> values, from the CloudWatch embedded-metric-format lines Powertools printed."""
    metrics: dict[str, list] = {}
    for line in out.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            record = json.loads(line)
            for directive in record["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = record[metric["Name"]]
                    metrics.setdefault(metric["Name"], []).extend(value if isinstance(value, list) else [value])
    return metrics


def test_a_failed_run_leaves_latest_intact(report_stack, monkeypatch, capsys) -> None:
    stack, s3, bucket = report_stack
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    # The ReportNotBuilt alarm counts these: one per finished report, none for a failed one.
    assert emitted_metrics(capsys.readouterr().out)["ReportsBuilt"] == [1]
    before = s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read()

    def broken(report):
        raise RuntimeError("chart failed")

    monkeypatch.setattr(job, "render_html", broken)
    with pytest.raises(RuntimeError, match="chart failed"):
        stack.invoke("build_roi_report", {"date_from": "2026-11-10", "date_to": "2026-11-12"})
    assert s3.get_object(Bucket=bucket, Key="reports/roi/latest/roi.json")["Body"].read() == before
    assert "ReportsBuilt" not in emitted_metrics(capsys.readouterr().out)


def test_bad_dates_are_refused(report_stack) -> None:
    stack, _, _ = report_stack
    with pytest.raises(ValueError, match="not a date"):
        stack.invoke("build_roi_report", {"date_from": "01.11.2026"})
    with pytest.raises(ValueError, match="after"):
        stack.invoke("build_roi_report", {"date_from": "2026-11-30", "date_to": "2026-11-01"})


def test_periods_default_to_month_to_date_and_custom_ones_compare_with_as_many_days_before() -> None:
    current, previous = job.periods_for(None, None, date(2026, 11, 15))
    assert (current.date_from, current.date_to, previous.date_from, previous.date_to) == (
        date(2026, 11, 1), date(2026, 11, 14), date(2026, 10, 1), date(2026, 10, 14))  # fmt: skip
    current, previous = job.periods_for(date(2026, 11, 10), date(2026, 11, 12), date(2026, 11, 15))
    assert (previous.date_from, previous.date_to) == (date(2026, 11, 7), date(2026, 11, 9))


# ---- the template --------------------------------------------------------------------------------------------------

REPORT = RESOURCES["BuildRoiReportFunction"]["Properties"]


def test_report_function_schedule_retries_and_dead_letters() -> None:
    assert REPORT["CodeUri"] == "functions/build_roi_report/" and REPORT["Timeout"] == 900
    [event] = REPORT["Events"].values()
    assert event["Type"] == "ScheduleV2"
    props = event["Properties"]
    assert props["ScheduleExpressionTimezone"] == {"Ref": "TimeZone"}
    assert props["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    assert props["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["ReportDeadLetterQueue", "Arn"]}}
    assert REPORT["DeadLetterQueue"]["TargetArn"] == {"Fn::GetAtt": ["ReportDeadLetterQueue", "Arn"]}


def test_report_function_least_privilege() -> None:
    assert REPORT["Role"] == {"Fn::GetAtt": ["BuildRoiReportRole", "Arn"]}
    role = RESOURCES["BuildRoiReportRole"]["Properties"]
    statements = [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]
    statements = [s for s in statements if s["Sid"] not in ("OwnLogs", "Traces")]
    by_sid = {statement["Sid"]: statement for statement in statements}
    assert {s["Action"] if isinstance(s["Action"], str) else tuple(s["Action"]) for s in statements} == {
        "secretsmanager:GetSecretValue", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "sqs:SendMessage",
        ("dynamodb:Scan", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable")}  # fmt: skip
    assert by_sid["ReadSecrets"]["Resource"] == [{"Ref": "CrmSecret"}, {"Ref": "Secrets"}]
    assert by_sid["FailedRuns"]["Resource"] == {"Fn::GetAtt": ["ReportDeadLetterQueue", "Arn"]}
    writes = {item["Fn::Sub"] for item in by_sid["WriteReportsSnapshotAndJourneys"]["Resource"]}
    # Tonight's segments, computed before the section reads them (segments.job.compute_for_report): the night's
    # files and state, never segments/audiences/ (build_segments' list ids and hashes).
    assert writes == {"${DataBucket.Arn}/reports/*", "${DataBucket.Arn}/crm/snapshot/*", "${DataBucket.Arn}/journeys/*",
                      "${DataBucket.Arn}/journeys-packed/snapshot=*", "${DataBucket.Arn}/segments/snapshot=*",
                      "${DataBucket.Arn}/segments/transitions/*", "${DataBucket.Arn}/segments/state.json",
                      "${DataBucket.Arn}/segments/writeback/*"}  # fmt: skip
    # The nightly journey export reads the journey table, and nothing else of DynamoDB.
    assert by_sid["ExportJourneys"]["Resource"] == {"Fn::GetAtt": ["JourneyTable", "Arn"]}
    reads = {item["Fn::Sub"].split("/", 1)[1] for item in by_sid["ReadInputs"]["Resource"]}
    # The segments' snapshots and moves and config/segments.yaml: the segments section (report/segments.py) and the
    # rules' labels; never segments/audiences/ (the hashes sent to ad platforms).
    assert reads == {"spend/*", "rates/*", "journeys/*", "journeys-packed/snapshot=*", "crm/*", "reports/roi/*",
                     "segments/snapshot=*", "segments/transitions/*", "segments/state.json", "config/segments.yaml",
                     "conversions/*"}  # fmt: skip
    assert "raw/*" not in str(statements)


def test_glue_tables_project_the_snapshot_partitions() -> None:
    for name, entity in (
        ("CrmLeadsTable", "lead"),
        ("CrmDealsTable", "deal"),
        ("CrmDealStageHistoryTable", "deal_history"),
    ):
        table = RESOURCES[name]["Properties"]["TableInput"]
        assert table["Parameters"]["projection.enabled"] == "true"
        template = table["Parameters"]["storage.location.template"]["Fn::Sub"]
        assert template == f"s3://${{DataBucket}}/crm/snapshot/entity={entity}/bucket=${{!bucket}}/"
    alarms = [r["Properties"] for r in RESOURCES.values() if r["Type"] == "AWS::CloudWatch::Alarm"]
    assert any(a["Dimensions"][0]["Value"] == {"Ref": "BuildRoiReportFunction"} for a in alarms)


def test_cli_builds_the_report_with_progress_and_writes_out(report_stack, tmp_path, capsys) -> None:
    from throughline.__main__ import main

    assert main(["report", "--from", "2026-11-01", "--to", "2026-11-30", "--out", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "CRM: full scan" in err and "building the report" in err
    assert "Контекстная реклама" in out and "525,00 %" in out and out.strip().endswith("latest/index.html")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index.html", "roi.csv", "roi.json"]
    assert json.loads((tmp_path / "roi.json").read_text())["headline"]["romi"] == "422.73"


def test_a_run_while_another_holds_the_lock_touches_nothing(report_stack) -> None:
    stack, s3, bucket = report_stack
    objects = S3Objects(bucket, s3)
    with run_lock(objects, "the nightly run", datetime.now(ZoneInfo("Europe/Moscow")), timedelta(minutes=20)):
        with pytest.raises(ReportBusy, match="the nightly run"):
            stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
        assert not list(objects.keys("reports/")) and not list(objects.keys("crm/snapshot/entity="))
    stack.invoke("build_roi_report", {"date_from": "2026-11-01", "date_to": "2026-11-30"})
    assert s3.get_object(Bucket=bucket, Key="reports/roi/latest/index.html")["Body"].read()
