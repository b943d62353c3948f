"""Unit tests of the attribution models: hand-computed cases and properties (hypothesis)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throughline.attribution import ALL_MODELS, attribute, path_table
from throughline.attribution.rounding import apportion
from throughline.attribution.shapley import shapley_values

D = Decimal


def table_of(*rows, direct="direct"):
    """Rows (path, conversions, revenue, nulls[, ages]) with paths written as in ChannelAttribution."""
    return path_table(
        (
            (tuple(path.split(" > ")), D(conversions), D(revenue), D(nulls), ages[0] if ages else None)
            for path, conversions, revenue, nulls, *ages in rows
        ),
        direct_label=direct,
    )


def credited(result):
    return {
        model: {row.channel: (row.conversions, row.revenue) for row in rows if row.conversions or row.revenue}
        for model, rows in result.items()
    }


HAND = table_of(
    ("a > b > direct", 3, 90, 0, (14.0, 7.0, 0.0)),
    ("direct > direct", 1, 50, 0, (1.0, 0.0)),
    ("b", 2, 60, 0, (0.0,)),
    ("a > c", 0, 0, 3, None),
)


def test_heuristic_models_match_hand_computed_credits():
    result = credited(attribute(HAND, [model for model in ALL_MODELS if model not in ("markov", "shapley")]))
    assert result == {
        "first_click": {"a": (3, 90), "b": (2, 60), "direct": (1, 50)},
        "last_click": {"b": (2, 60), "direct": (4, 140)},
        "last_non_direct": {"b": (5, 150), "direct": (1, 50)},
        "linear": {"a": (1, 30), "b": (3, 90), "direct": (2, 80)},
        # P1 40/20/40 of 3 conversions and 90; P2 two touches 50/50 (both direct); P3 one touch.
        "position_based": {"a": (D("1.2"), 36), "b": (D("2.6"), 78), "direct": (D("2.2"), 86)},
        # P1 weights 2^(-14/7), 2^(-7/7), 1 = 1/7, 2/7, 4/7 of 3 conversions and 90; largest remainders round.
        "time_decay": {
            "a": (D("0.4286"), D("12.86")),
            "b": (D("2.8571"), D("85.71")),
            "direct": (D("2.7143"), D("101.43")),
        },
    }


def test_every_model_lists_every_label_sorted_with_exact_decimals():
    result = attribute(HAND)
    for rows in result.values():
        assert [row.channel for row in rows] == ["a", "b", "c", "direct"]
        assert sum(row.conversions for row in rows) == D(6)
        assert sum(row.revenue for row in rows) == D(200)
        assert all(row.revenue == row.revenue.quantize(D("0.01")) for row in rows)


def test_last_non_direct_falls_back_to_direct_only_for_all_direct_paths():
    table = table_of(("прямой > прямой", 1, 10, 0), ("seo > прямой", 1, 20, 0), direct="прямой")
    assert credited(attribute(table, ["last_non_direct"])) == {"last_non_direct": {"прямой": (1, 10), "seo": (1, 20)}}


def test_markov_is_exact_on_a_hand_solved_chain():
    # start→a ½, start→b ½; a→b ½, a→null ½; b→conversion ⅔, b→null ⅓.
    # P = ½·⅓ + ½·⅔ = ½. Without a: ⅓ → RE_a = ⅓. Without b: 0 → RE_b = 1. Credits ∝ ⅓ : 1 = ¼ : ¾.
    # Revenue: b earns 400/3 per visit; P(reach b) = ¾ → V = 100; without a, ½ → RE = ⅓ again.
    table = table_of(("a > b", 1, 100, 0), ("a", 0, 0, 1), ("b", 1, 300, 1))
    assert credited(attribute(table, ["markov"])) == {"markov": {"a": (D("0.5"), 100), "b": (D("1.5"), 300)}}


def test_markov_of_order_two_sees_what_order_one_cannot():
    # a > c always converts, b > c never does. Order 1 cannot tell (c forgets where it came from): a and b share.
    table = table_of(("a > c", 1, 10, 0), ("b > c", 0, 0, 1))
    assert credited(attribute(table, ["markov"], markov_order=1))["markov"] == {
        "a": (D("0.25"), D("2.50")),
        "b": (D("0.25"), D("2.50")),
        "c": (D("0.5"), 5),
    }
    assert credited(attribute(table, ["markov"], markov_order=2))["markov"] == {"a": (D("0.5"), 5), "c": (D("0.5"), 5)}


def test_markov_ignores_repeats_and_refuses_a_bad_order():
    repeated = table_of(("a > a > b", 1, 10, 0), ("b > b", 0, 0, 1))
    plain = table_of(("a > b", 1, 10, 0), ("b", 0, 0, 1))
    assert attribute(repeated, ["markov"]) == attribute(plain, ["markov"])
    with pytest.raises(ValueError, match="at least 1"):
        attribute(plain, ["markov"], markov_order=0)


def test_shapley_matches_a_hand_computed_three_channel_game():
    # v(a)=1, v(ab)=3, v(ac)=1, v(bc)=3, v(abc)=6, else 0:
    # φ_a = ⅓·1 + ⅙·3 + ⅙·1 + ⅓·(6−3) = 2; φ_b = 2.5; φ_c = 1.5.
    table = table_of(("a", 1, 10, 0), ("a > b", 2, 20, 5), ("b > c > b", 3, 30, 0))
    assert credited(attribute(table, ["shapley"])) == {
        "shapley": {"a": (2, 20), "b": (D("2.5"), 25), "c": (D("1.5"), 15)}
    }


def test_model_errors_are_clear():
    untimed = table_of(("a", 1, 1, 0))
    with pytest.raises(ValueError, match="time_decay needs touch times"):
        attribute(untimed, ["time_decay"])
    with pytest.raises(ValueError, match="unknown model u_shaped"):
        attribute(untimed, ["u_shaped"])
    with pytest.raises(ValueError, match="half-life"):
        attribute(HAND, ["time_decay"], half_life_days=0)


def test_apportion_gives_leftover_units_to_the_largest_remainders():
    assert apportion({"a": 1.0, "b": 1.0, "c": 1.0}, 100) == {"a": 34, "b": 33, "c": 33}
    assert apportion({"a": 0.2, "b": 0.7, "c": 0.1}, 7) == {"a": 1, "b": 5, "c": 1}  # 1.4, 4.9, 0.7
    assert apportion({"a": 0.0, "b": 0.0}, 0) == {"a": 0, "b": 0}
    with pytest.raises(ValueError, match="no positive weight"):
        apportion({"a": 0.0}, 5)


# -- properties --------------------------------------------------------------------------------------------------

CHANNELS = ["direct", "paid_search", "social", "email", "seo", "referral", "display"]
paths = st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=6)


@st.composite
def path_tables(draw, path_strategy=paths):
    rows = []
    for path in draw(st.lists(path_strategy, min_size=1, max_size=25)):
        conversions = draw(st.integers(0, 6))
        kopecks = draw(st.integers(0, 10**9)) if conversions else 0
        ages = tuple(sorted(draw(st.lists(st.floats(0, 400), min_size=len(path), max_size=len(path))), reverse=True))
        rows.append((tuple(path), D(conversions), D(kopecks) / 100, D(draw(st.integers(0, 6))), ages))
    return path_table(rows)


@settings(max_examples=150, deadline=None)
@given(path_tables(), st.integers(1, 3))
def test_every_model_conserves_conversions_and_revenue(table, order):
    result = attribute(table, markov_order=order, half_life_days=3.5)
    assert set(result) == set(ALL_MODELS)
    for rows in result.values():
        assert sum(row.conversions for row in rows) == table.total_conversions
        assert sum(row.revenue for row in rows) == table.total_revenue
        assert all(row.conversions >= 0 and row.revenue >= 0 for row in rows)


@settings(max_examples=150, deadline=None)
@given(path_tables(st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=1)))
def test_single_touch_paths_give_the_same_answer_under_every_model(table):
    result = attribute(table)
    for model in ALL_MODELS:
        assert result[model] == result["last_click"], model


@settings(max_examples=100, deadline=None)
@given(path_tables())
def test_shapley_formula_equals_the_sum_over_all_coalitions(table):
    by_coalitions = shapley_values(table)
    by_formula = shapley_values(table, exact_limit=0)
    for exact, formula in zip(by_coalitions, by_formula, strict=True):
        assert exact.keys() == formula.keys()
        for label in exact:
            assert exact[label] == pytest.approx(formula[label], rel=1e-9, abs=1e-6)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=15), st.integers(0, 10**12))
def test_apportion_is_exact_and_within_one_unit_of_each_quota(weights, total):
    named = {f"c{i}": weight for i, weight in enumerate(weights)}
    if sum(weights) == 0:
        return
    parts = apportion(named, total)
    assert sum(parts.values()) == total
    whole = sum(weights)
    for label, weight in named.items():
        assert abs(parts[label] - total * weight / whole) < 1 + 1e-6 * total


def test_shapley_above_twelve_channels_is_still_exact_and_ungrouped():
    channels = [f"c{n:02d}" for n in range(14)]
    rows = [(" > ".join(channels[i : i + 3]), 2, 100, 1) for i in range(12)] + [("c13", 1, 7, 0)]
    result = {row.channel: row for row in attribute(table_of(*rows), ["shapley"])["shapley"]}
    assert sorted(result) == channels  # every channel keeps its own row: nothing grouped into «Прочие»
    # c00 is only on the first path (3 channels, 2 conversions, 100): 1/3 of it.
    assert (result["c00"].conversions, result["c00"].revenue) == (D("0.6667"), D("33.33"))
    # c13: 1/3 of the last three-channel path (c11 > c12 > c13) and all of its own one-touch path.
    assert (result["c13"].conversions, result["c13"].revenue) == (D("1.6667"), D("40.33"))
    assert sum(row.conversions for row in result.values()) == 25


def test_markov_refuses_a_chain_too_large_to_solve_densely(monkeypatch):
    from throughline.attribution import markov

    monkeypatch.setattr(markov, "MAX_STATES", 3)
    with pytest.raises(ValueError, match="use a lower order"):
        attribute(table_of(("a > b > c", 1, 1, 0)), ["markov"], markov_order=1)


def _removal_effects_by_iteration(table):
    """An independent order-1 computation: transition counts in dicts, absorption by value iteration."""
    counts = {}
    for path, conversions, nulls in zip(table.paths, table.conversions, table.nulls, strict=True):
        states = ["(start)", *(label for i, label in enumerate(path) if i == 0 or path[i - 1] != label)]
        for here, there in zip(states, [*states[1:], "(end)"], strict=True):
            row = counts.setdefault(here, {})
            if there == "(end)":
                row["(conversion)"] = row.get("(conversion)", 0.0) + conversions
                row["(null)"] = row.get("(null)", 0.0) + nulls
            else:
                row[there] = row.get(there, 0.0) + conversions + nulls

    def probability(removed):
        reach = dict.fromkeys(counts, 0.0)
        for _ in range(3000):
            for state, row in counts.items():
                whole = sum(row.values())
                if state == removed or not whole:
                    reach[state] = 0.0
                    continue
                reach[state] = (
                    sum(weight * (1.0 if to == "(conversion)" else reach.get(to, 0.0)) for to, weight in row.items())
                    / whole
                )
        return reach["(start)"]

    whole = probability(None)
    return {label: max(0.0, 1 - probability(label) / whole) if whole else 0.0 for label in table.labels}


@settings(max_examples=40, deadline=None)
@given(path_tables(st.lists(st.sampled_from(CHANNELS[:4]), min_size=1, max_size=4)))
def test_markov_removal_effects_equal_an_independent_value_iteration(table):
    from throughline.attribution.markov import removal_effects

    exact, _ = removal_effects(table)
    iterated = _removal_effects_by_iteration(table)
    for label in table.labels:
        assert exact[label] == pytest.approx(iterated[label], abs=1e-6)
