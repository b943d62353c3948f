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


def test_spend_memory_growth_is_measured_above_the_warm_process():
    runs = [
        {"days": 62, "rows": 1000, "baseline_rss_mb": 60.0, "peak_rss_mb": 80.0, "peak_reset": True},
        {"days": 248, "rows": 4000, "baseline_rss_mb": 61.0, "peak_rss_mb": 85.0, "peak_reset": True},
    ]
    rows = {t: (f, m) for t, f, m in table({"spend": {"campaigns": 100, "runs": runs}}, quick=True)}
    # (85 - 61) / (80 - 60) = 24 / 20 = 1.20
    assert rows["spend import memory flat: peak growth ≤ 1.25× for 4.0× rows"] == (
        "1.20× (20 → 24 MB above the warm process; 62 → 248 days × 100 campaigns)",
        "yes",
    )
    runs[1]["peak_rss_mb"] = 87.0  # 26 / 20 = 1.30: growing with the rows
    rows = {t: (f, m) for t, f, m in table({"spend": {"campaigns": 100, "runs": runs}}, quick=True)}
    assert rows["spend import memory flat: peak growth ≤ 1.25× for 4.0× rows"][1] == "NO"


def test_spend_memory_of_a_chunk_lost_in_the_allocators_noise_is_not_held_against_the_target():
    # Both runs within the noise (the larger at most 1.25 × the 5 MB floor): no ratio is a figure.
    runs = [
        {"days": 31, "rows": 1000, "baseline_rss_mb": 50.0, "peak_rss_mb": 54.7, "peak_reset": True},
        {"days": 62, "rows": 2000, "baseline_rss_mb": 50.0, "peak_rss_mb": 55.9, "peak_reset": True},
    ]
    (row,) = [row for row in table({"spend": {"campaigns": 20, "runs": runs}}, quick=True) if "spend" in row[0]]
    assert row == (
        "spend import memory flat: peak growth ≤ 1.25× for 2.0× rows",
        "not measured: 4.7 MB above the warm process is noise (31 → 62 days × 20 campaigns)",
        "—",
    )


def test_a_leak_is_held_against_the_target_even_when_the_small_run_is_below_the_noise_floor():
    # Before: any small run under 5 MB was "not measured" whatever the large run did, so a leak of every row
    # (4 MB → 200 MB above the warm process) passed as "—" instead of "NO".
    runs = [
        {"days": 62, "rows": 1000, "baseline_rss_mb": 50.0, "peak_rss_mb": 54.0, "peak_reset": True},
        {"days": 248, "rows": 4000, "baseline_rss_mb": 50.0, "peak_rss_mb": 250.0, "peak_reset": True},
    ]
    (row,) = [row for row in table({"spend": {"campaigns": 20, "runs": runs}}, quick=True) if "spend" in row[0]]
    # 200 MB against the 5 MB floor (the small run's 4 MB is noise): 200 / 5 = 40.00
    assert row == (
        "spend import memory flat: peak growth ≤ 1.25× for 4.0× rows",
        "≥ 40.00× (4 → 200 MB above the warm process, the smaller run under the 5 MB noise floor; "
        "62 → 248 days × 20 campaigns)",
        "NO",
    )
    runs[1]["peak_rss_mb"] = 56.25  # 6.25 MB = 1.25 × the floor: within the noise, still not measured
    (row,) = [row for row in table({"spend": {"campaigns": 20, "runs": runs}}, quick=True) if "spend" in row[0]]
    assert row[2] == "—" and row[1].startswith("not measured: 4.0 MB")


def test_a_module_that_did_not_run_is_a_row_saying_so_and_the_table_lines_up():
    rows = table({}, quick=True)
    assert ("coldstart: not run", "—", "—") in rows
    lines = render(rows).splitlines()
    assert lines[0].startswith("target") and len({line.index("|") for line in lines if "|" in line}) == 1
