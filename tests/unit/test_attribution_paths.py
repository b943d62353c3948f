"""Unit tests of throughline.attribution.paths: cutting journeys at conversions and aggregating paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throughline.attribution import UNTRACKED, Conversion, TouchPoint, build_paths, path_table

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def rows(table):
    return {
        path: (float(table.conversions[i]), float(table.revenue[i]), float(table.nulls[i]))
        for i, path in enumerate(table.paths)
    }


def test_touches_up_to_each_conversion_form_its_path_and_the_rest_is_a_null_path():
    touches = [
        TouchPoint("ann", at(3), "social"),  # given out of order on purpose
        TouchPoint("ann", at(0), "paid_search"),
        TouchPoint("ann", at(5), "email"),  # the same instant as the first deal: counts before it
        TouchPoint("ann", at(9), "direct"),
        TouchPoint("ann", at(20), "paid_search"),  # after the last deal
        TouchPoint("bob", at(1), "email"),
        TouchPoint("bob", at(2), "email"),
    ]
    deals = [Conversion("ann", at(5), Decimal("100.50")), Conversion("ann", at(10), Decimal("20"))]
    table = build_paths(touches, deals)
    assert rows(table) == {
        ("paid_search", "social", "email"): (1, 100.5, 0),
        ("direct",): (1, 20, 0),
        ("paid_search",): (0, 0, 1),
        ("email", "email"): (0, 0, 1),
    }
    assert table.total_conversions == Decimal(2)
    assert table.total_revenue == Decimal("120.50")
    assert table.labels == ["direct", "email", "paid_search", "social"]
    ages = {table.paths[timed.path_index]: timed.ages_days for timed in table.timed}
    assert ages == {("paid_search", "social", "email"): (5.0, 2.0, 0.0), ("direct",): (1.0,)}


def test_identical_paths_are_aggregated_with_their_weights():
    touches = [TouchPoint(person, at(0), "social") for person in "abcd"]
    touches += [TouchPoint(person, at(1), "paid_search") for person in "abcd"]
    deals = [Conversion("a", at(2), Decimal(10)), Conversion("b", at(2), Decimal(30))]
    table = build_paths(touches, deals)
    assert rows(table) == {("social", "paid_search"): (2, 40, 2)}


def test_conversions_at_one_instant_share_a_path_and_conversions_without_touches_are_untracked():
    touches = [TouchPoint("ann", at(0), "social")]
    deals = [
        Conversion("ann", at(1), Decimal(5)),
        Conversion("ann", at(1), Decimal(7)),
        Conversion("ann", at(2), Decimal(1)),  # no new touch since the previous deal
        Conversion("zoe", at(1), Decimal(3)),  # never touched
    ]
    table = build_paths(touches, deals)
    assert rows(table) == {("social",): (2, 12, 0), (UNTRACKED,): (2, 4, 0)}
    assert build_paths(touches, deals, untracked_label="без касаний").labels == ["social", "без касаний"]


def test_labels_by_source_or_campaign_keep_direct_as_direct():
    touches = [
        TouchPoint("ann", at(0), "paid_search", "yandex", "brand"),
        TouchPoint("ann", at(1), "organic_search", "google", ""),
        TouchPoint("ann", at(2), "direct", "(direct)", ""),
    ]
    deals = [Conversion("ann", at(3), Decimal(1))]
    assert build_paths(touches, deals, by="source").paths == [("yandex", "google", "direct")]
    assert build_paths(touches, deals, by="campaign").paths == [("yandex / brand", "google", "direct")]
    assert build_paths(touches, deals, by=lambda touch: touch.channel.upper()).paths == [
        ("PAID_SEARCH", "ORGANIC_SEARCH", "direct")
    ]


def test_revenue_is_kept_to_the_kopeck_and_negative_revenue_is_refused():
    touches = [TouchPoint("ann", at(0), "social")]
    table = build_paths(touches, [Conversion("ann", at(1), Decimal("0.105"))])
    assert table.total_revenue == Decimal("0.10")  # half-even
    with pytest.raises(ValueError, match="negative revenue"):
        build_paths(touches, [Conversion("ann", at(1), Decimal("-1"))])


def test_path_table_merges_rows_and_has_times_only_when_every_converting_row_has_them():
    table = path_table(
        [
            (("a", "b"), Decimal(2), Decimal(10), Decimal(1), (3.0, 0.0)),
            (("a", "b"), Decimal(1), Decimal(5), Decimal(0), (1.0, 0.0)),
            (("b",), Decimal(0), Decimal(0), Decimal(4), None),
        ]
    )
    assert rows(table) == {("a", "b"): (3, 15, 1), ("b",): (0, 0, 4)}
    assert table.has_times
    assert not path_table([(("a",), Decimal(1), Decimal(0), Decimal(0), None)]).has_times
    with pytest.raises(ValueError, match="2 touch ages for a path of 1"):
        path_table([(("a",), Decimal(1), Decimal(0), Decimal(0), (1.0, 0.0))])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 30), st.sampled_from(["seo", "cpc", "direct"]))),
    st.lists(st.tuples(st.sampled_from("abcde"), st.integers(0, 30), st.integers(0, 10**7))),
)
def test_every_touch_lands_in_exactly_one_path_and_every_conversion_is_counted(touch_specs, conversion_specs):
    touches = [TouchPoint(person, at(day), channel) for person, day, channel in touch_specs]
    conversions = [Conversion(person, at(day), Decimal(kopecks) / 100) for person, day, kopecks in conversion_specs]
    table = build_paths(touches, conversions)
    assert table.total_conversions == len(conversions)
    assert table.total_revenue == sum((conversion.revenue for conversion in conversions), Decimal(0))
    in_null_paths = sum(len(path) * int(nulls) for path, nulls in zip(table.paths, table.nulls, strict=True))
    in_converting_paths = sum(
        len(timed.ages_days) for timed in table.timed if table.paths[timed.path_index] != (UNTRACKED,)
    )
    assert in_null_paths + in_converting_paths == len(touches)
    assert all(age >= 0 for timed in table.timed for age in timed.ages_days)
