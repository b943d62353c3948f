"""The `make bench` table: each target beside its figure, met or not, from the modules' --json figures."""

from __future__ import annotations

from benchmarks.summary import render, table


def test_cold_start_is_held_against_1_6_times_import_boto3_and_the_old_layer_is_only_shown():
    figures = {
        "import boto3": {"import_ms": 100.0, "call_ms": 0.0, "total_ms": 100.0, "ratio": 1.0, "rss_mib": 30.0},
        "capture_form (as shipped)": {"import_ms": 110.0, "call_ms": 50.0, "total_ms": 160.0, "ratio": 1.6,
                                      "rss_mib": 50.0},
        "bitrix_events (as shipped)": {"import_ms": 120.0, "call_ms": 45.0, "total_ms": 165.0, "ratio": 1.65,
                                       "rss_mib": 50.0},
        "capture_form (before 520f269)": {"import_ms": 400.0, "call_ms": 90.0, "total_ms": 490.0, "ratio": 4.9,
                                          "rss_mib": 70.0},
    }  # fmt: skip
    rows = {target: (figure, met) for target, figure, met in table({"coldstart": figures}, quick=True)}
    assert rows["cold start capture_form (as shipped) ≤ 1.6× import boto3"] == (
        "1.60× (110 ms import + 50 ms first call)",
        "yes",
    )
    assert rows["cold start bitrix_events (as shipped) ≤ 1.6× import boto3"][1] == "NO"
    assert rows["cold start capture_form (before 520f269) ≤ 1.6× import boto3"][1] == "— (before)"


def test_rest_calls_and_the_scan_against_fast_bitrix24():
    figures = {"lead_calls": 60, "calls_per_lead": 0.3, "events": 100, "event_calls": 100, "calls_per_event": 1.0,
               "deals": 20000, "scan_calls": 9, "get_all_calls": 9}  # fmt: skip
    rows = {target: (figure, met) for target, figure, met in table({"portal_calls": figures}, quick=True)}
    assert rows["REST calls per new lead ≤ 0.3"] == ("0.30 (60 calls)", "yes")
    assert rows["REST calls per webhook event < 1"][1] == "NO"  # one per event is not under one
    assert rows["scan calls for 20000 deals < fast_bitrix24 get_all"] == ("9 vs 9", "NO")


def test_spend_memory_growth_is_measured_above_the_interpreters_own():
    runs = [
        {"rows": 1000, "baseline_rss_mb": 40.0, "peak_rss_mb": 50.0},
        {"rows": 4000, "baseline_rss_mb": 40.0, "peak_rss_mb": 52.0},
    ]
    rows = {t: (f, m) for t, f, m in table({"spend": {"campaigns": 500, "runs": runs}}, quick=True)}
    assert rows["spend import memory flat: peak growth ≤ 1.25× for 4.0× rows"] == (
        "1.20× (peak 52 MB, 500 campaigns)",
        "yes",
    )


def test_a_module_that_did_not_run_is_a_row_saying_so_and_the_table_lines_up():
    rows = table({}, quick=True)
    assert ("coldstart: not run", "—", "—") in rows
    lines = render(rows).splitlines()
    assert lines[0].startswith("target") and len({line.index("|") for line in lines if "|" in line}) == 1
