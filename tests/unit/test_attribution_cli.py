"""Unit tests of ``python -m throughline attribute``: the path file, both output formats, clear errors."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest

from throughline.__main__ import main
from throughline.attribution import ALL_MODELS

PATHS = """path,total_conversions,total_conversion_value,total_null
a > b > direct,3,90,0
direct > direct,1,50,0
b,2,60,0
a > c,0,0,3
"""


def run(tmp_path, capsys, text, *options):
    file = tmp_path / "paths.csv"
    file.write_text(text, encoding="utf-8")
    code = main(["attribute", str(file), *options])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_every_model_per_channel_as_csv(tmp_path, capsys):
    code, out, err = run(tmp_path, capsys, PATHS)
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["model", "channel", "conversions", "revenue"]
    assert [model for model in ALL_MODELS if model != "time_decay"] == list(dict.fromkeys(r["model"] for r in rows))
    assert "time_decay skipped" in err
    first = {r["channel"]: (r["conversions"], r["revenue"]) for r in rows if r["model"] == "first_click"}
    assert first == {
        "a": ("3.0000", "90.00"),
        "b": ("2.0000", "60.00"),
        "c": ("0.0000", "0.00"),
        "direct": ("1.0000", "50.00"),
    }
    for model in {r["model"] for r in rows}:
        assert sum(Decimal(r["revenue"]) for r in rows if r["model"] == model) == 200


def test_json_with_chosen_models_times_and_half_life(tmp_path, capsys):
    text = (
        "total_conversions,path,days_to_conversion,total_conversion_value\n"  # any column order; no total_null
        "3,a > b > direct,14 > 7 > 0,90\n"
        "2,b,0,60\n"
    )
    code, out, _ = run(tmp_path, capsys, text, "--model", "time_decay", "--model", "markov", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert list(document) == ["time_decay", "markov"]
    assert document["time_decay"] == [
        {"channel": "a", "conversions": 0.4286, "revenue": 12.86},
        {"channel": "b", "conversions": 2.8571, "revenue": 85.71},
        {"channel": "direct", "conversions": 1.7143, "revenue": 51.43},
    ]
    _, out, _ = run(tmp_path, capsys, text, "--model", "time_decay", "--half-life-days", "1e9", "--format", "json")
    assert [row["conversions"] for row in json.loads(out)["time_decay"]] == [1.0, 3.0, 1.0]


def test_markov_order_and_direct_name_options(tmp_path, capsys):
    text = "path,total_conversions,total_conversion_value,total_null\nx > c,1,10,0\ny > c,0,0,1\n"
    _, out, _ = run(tmp_path, capsys, text, "--model", "markov", "--order", "2", "--format", "json")
    assert {row["channel"]: row["conversions"] for row in json.loads(out)["markov"]} == {"c": 0.5, "x": 0.5, "y": 0.0}
    _, out, _ = run(tmp_path, capsys, "path,total_conversions\nseo | (none),1\n", "--sep", "|", "--direct", "(none)")
    lnd = [row for row in csv.DictReader(io.StringIO(out)) if row["model"] == "last_non_direct"]
    assert [(row["channel"], row["conversions"]) for row in lnd] == [("(none)", "0.0000"), ("seo", "1.0000")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("route,conversions\na,1\n", "the header lacks path, total_conversions"),
        ("path,total_conversions\na,1\nb,many\n", "line 3: total_conversions is not a number: 'many'"),
        ("path,total_conversions\na,1\na >  > b,1\n", "line 3: empty channel in path"),
        ("path,total_conversions,total_null\na,1,-2\n", "line 2: total_null must be a non-negative number"),
        ("path,total_conversions,total_conversion_value\na,0,5\n", "line 2: total_conversion_value without"),
        ("path,total_conversions,days_to_conversion\na > b,1,3\n", "line 2: 1 days_to_conversion for a path of 2"),
        ("path,total_conversions\na,1\n", None),
    ],
)
def test_bad_files_get_one_clear_line(tmp_path, capsys, text, message):
    code, out, err = run(tmp_path, capsys, text, "--model", "linear")
    if message is None:
        assert code == 0
        return
    assert code == 1
    assert out == ""
    assert message in err
    assert err.startswith("error: ") and "Traceback" not in err


def test_time_decay_asked_for_without_times_is_an_error(tmp_path, capsys):
    code, _, err = run(tmp_path, capsys, PATHS, "--model", "time_decay")
    assert code == 1
    assert "time_decay needs touch times" in err


def test_a_missing_file_is_an_error(tmp_path, capsys):
    assert main(["attribute", str(tmp_path / "none.csv")]) == 1
    assert "none.csv" in capsys.readouterr().err
