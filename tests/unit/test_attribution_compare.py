"""Our models against the reference tools on the same paths (optional: requirements-compare.txt).

- ChannelAttribution (GPL, C++): ``heuristic_models`` must equal our first/last/linear; ``markov_model`` (orders 1
  and 2, non-converting paths via ``var_null``) is a Monte-Carlo estimate of what we solve exactly, so a precise run
  (``nsim_start=1e6, conv_par=0.01``) must be within 2 % per channel. Its ``max_step`` defaults to the longest
  observed path and counts longer simulated walks as null, which biases removal effects when paths can loop
  (a > b > a): we pass a large ``max_step`` so it estimates the same quantity.
- marketing-attribution-models 2.x (DP6): its first/last/linear/position-based must equal ours, and its Markov
  removal effects (closed form, like ours) must equal ours. Its Markov credits and its Shapley are not compared:
  they are other variants (it splits each journey by the removal effects of the journey's own channels; its
  Shapley plays a game per channel combination with the last ``max_size`` channels) — see docs/attribution.md.

Each tool is skipped, with the reason printed, when it cannot be imported.
"""

from __future__ import annotations

import contextlib
import io
import random
from decimal import Decimal

import pytest

from throughline.attribution import attribute, path_table
from throughline.attribution.markov import removal_effects

CHANNELS = {
    "paid_search": 30,
    "organic_search": 20,
    "social": 15,
    "email": 10,
    "direct": 15,
    "referral": 6,
    "display": 4,
}


def journeys(seed: int, people: int) -> list[tuple[str, int, float, int]]:
    """ChannelAttribution path rows (path, total_conversions, total_conversion_value, total_null), aggregated."""
    rng = random.Random(seed)
    names, weights = list(CHANNELS), list(CHANNELS.values())
    lift = {"email": 0.04, "paid_search": 0.03, "referral": 0.02, "direct": 0.015}
    rows: dict[str, list[float]] = {}
    for _ in range(people):
        path = rng.choices(names, weights, k=min(1 + int(rng.expovariate(0.6)), 8))
        chance = 0.01 + sum(lift.get(channel, 0.0) for channel in set(path))
        row = rows.setdefault(" > ".join(path), [0, 0.0, 0])
        if rng.random() < chance:
            row[0] += 1
            row[1] += round(rng.lognormvariate(9, 0.7), 2)
        else:
            row[2] += 1
    return [(path, int(c), round(v, 2), int(n)) for path, (c, v, n) in rows.items()]


def ours(rows):
    return path_table(
        (tuple(path.split(" > ")), Decimal(c), Decimal(str(v)), Decimal(n), None) for path, c, v, n in rows
    )


def by_channel(result, model):
    return {row.channel: (float(row.conversions), float(row.revenue)) for row in result[model]}


def _import(name: str):
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # ChannelAttribution prints a banner on import
            return __import__(name)
    except Exception as error:  # ImportError, or a missing undeclared dependency of the tool
        reason = f"{name} cannot be imported ({error!r}); pip install -r requirements-compare.txt"
        print(reason)
        pytest.skip(reason)


ROWS = journeys(seed=9, people=40_000)


@pytest.fixture(scope="module")
def channel_attribution():
    return _import("ChannelAttribution")


@pytest.fixture(scope="module")
def mam():
    return _import("mam")


def frame(rows):
    import pandas

    return pandas.DataFrame(rows, columns=["path", "total_conversions", "total_conversion_value", "total_null"])


def test_first_last_and_linear_equal_channel_attribution_heuristics(channel_attribution):
    theirs = channel_attribution.heuristic_models(
        frame(ROWS), "path", "total_conversions", var_value="total_conversion_value", flg_pro=False
    ).set_index("channel_name")
    result = attribute(ours(ROWS), ["first_click", "last_click", "linear"])
    for model, prefix in (("first_click", "first_touch"), ("last_click", "last_touch"), ("linear", "linear_touch")):
        for channel, (conversions, revenue) in by_channel(result, model).items():
            assert conversions == pytest.approx(theirs.loc[channel, f"{prefix}_conversions"], abs=1e-4), model
            assert revenue == pytest.approx(theirs.loc[channel, f"{prefix}_value"], abs=0.01), model


@pytest.mark.parametrize("order", [1, 2])
def test_markov_agrees_with_a_precise_channel_attribution_run_within_two_percent(channel_attribution, order):
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = channel_attribution.markov_model(
            frame(ROWS),
            "path",
            "total_conversions",
            var_value="total_conversion_value",
            var_null="total_null",
            order=order,
            nsim_start=1e6 * order**2,  # an order-2 chain has more states to visit: more walks for the same precision
            conv_par=0.01,
            max_step=100,
            seed=7,
            verbose=False,
            flg_pro=False,
        ).set_index("channel_name")
    result = by_channel(attribute(ours(ROWS), ["markov"], markov_order=order), "markov")
    report = [f"order {order}"]
    for channel, (conversions, revenue) in sorted(result.items()):
        their_conversions = theirs.loc[channel, "total_conversions"]
        their_revenue = theirs.loc[channel, "total_conversion_value"]
        report.append(
            f"{channel}: conversions {conversions:.2f} vs {their_conversions:.2f} "
            f"({(conversions / their_conversions - 1) * 100:+.2f} %), revenue {revenue:.2f} vs {their_revenue:.2f} "
            f"({(revenue / their_revenue - 1) * 100:+.2f} %)"
        )
    print("\n".join(report))
    for channel, (conversions, revenue) in result.items():
        assert conversions == pytest.approx(theirs.loc[channel, "total_conversions"], rel=0.02), report
        assert revenue == pytest.approx(theirs.loc[channel, "total_conversion_value"], rel=0.02), report


def mam_model(mam, rows, value: bool):
    import polars

    records = []
    for path, conversions, revenue, nulls in rows:
        if conversions:
            records.append({"journey": path, "converted": True, "count": conversions, "value": revenue})
        if nulls:
            records.append({"journey": path, "converted": False, "count": nulls, "value": 0.0})
    return mam.MAM(
        polars.DataFrame(records),
        format_type="grouped_journey",
        channels_colname="journey",
        journey_with_conv_colname="converted",
        occurrences_colname="count",
        conversion_value_colname="value" if value else None,
    )


def test_heuristics_equal_marketing_attribution_models(mam):
    models = {
        "first_click": "run_first_click",
        "last_click": "run_last_click",
        "linear": "run_linear",
        "position_based": "run_position_based",
    }
    result = attribute(ours(ROWS), list(models))
    for value, column in ((False, 0), (True, 1)):
        theirs_model = mam_model(mam, ROWS, value)
        for model, method in models.items():
            theirs = getattr(theirs_model, method)().to_dict()
            theirs = dict(zip(theirs["channels"], theirs["attribution"], strict=True))
            for channel, credit in by_channel(result, model).items():
                assert credit[column] == pytest.approx(theirs.get(channel, 0.0), abs=0.01 if value else 1e-4), model


def test_markov_removal_effects_equal_marketing_attribution_models(mam):
    theirs = mam_model(mam, ROWS, value=False).run_markov().metadata["removal_effect"]
    mine, _ = removal_effects(ours(ROWS))
    theirs = dict(zip(theirs.index, theirs.iloc[:, 0], strict=True)) if hasattr(theirs, "index") else dict(theirs)
    assert mine.keys() == theirs.keys()
    for channel, effect in mine.items():
        assert effect == pytest.approx(theirs[channel], rel=1e-9)
