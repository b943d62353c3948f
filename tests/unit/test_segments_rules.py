"""Segment rules on hand-made deal histories: each default rule at and around its boundaries (182/183 days, 1 and 2
deals, the 80th percentile, 30 days), RFM quintiles, company size, and no flips across two nights."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from throughline.report.build import last_wins
from throughline.segments.engine import Customer, Frozen, assign, collect_customers, features, percentile, rfm_scores
from throughline.segments.rules import DEFAULT_RULES_YAML, RulesError, default_rules, parse_rules

TODAY = date(2026, 12, 6)
MSK = ZoneInfo("Europe/Moscow")
RULES = default_rules()


def ago(days: int) -> date:
    return TODAY - timedelta(days=days)


def customer(id_: int, wins: list[tuple[int, int]] = (), *, created: int = 400, open_deals: int = 0,
             lost: int = 0) -> Customer:  # fmt: skip
    """``wins``: (days ago, amount)."""
    found = Customer("contact", id_, created=ago(created))
    found.wins = [(ago(days), Decimal(amount)) for days, amount in wins]
    found.open_deals = open_deals
    found.deals_total = len(found.wins) + open_deals + lost
    return found


def segments(*customers: Customer, today: date = TODAY, **kwargs) -> dict[int, str | None]:
    result = assign({c.key: c for c in customers}, RULES, today, **kwargs)
    return {row["id"]: row["segment"] for row in result.rows}


# A crowd of buyers that fixes the 80th percentile of average checks at 400: 100, 200, 300, 400, 500 (nearest rank:
# the 4th of 5). Each has two wins 10 and 20 days ago; ids 101..105.
CROWD = [customer(100 + n, [(10, 100 * n), (20, 100 * n)]) for n in range(1, 6)]


def test_the_defaults_are_the_issue_s_rules_in_order() -> None:
    assert [(rule.code, rule.label) for rule in RULES.segments] == [
        ("VIP", "VIP"), ("SLEEPING", "Спящий"), ("ACTIVE", "Активный"), ("ONE_TIME", "Разовый"),
        ("POTENTIAL", "Потенциальный"), ("NEWCOMER", "Новичок"),
    ]  # fmt: skip
    vip = RULES.rule("VIP")
    assert vip and vip.average_check_percentile == 80 and vip.freeze == "month" and vip.days_since_last_win.max == 182
    assert RULES.rule("SLEEPING").days_since_last_win.model_dump() == {"min": 183, "max": 365}
    assert RULES.window_days == 365 and RULES.task_on_moves == ["SLEEPING", "VIP"]
    assert RULES.company_size.revenue_small_max == 10_000_000 and RULES.company_size.revenue_medium_max == 100_000_000


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("segments: [{code: VIP, label: VIP, won_total: {min: 3, max: 2}}]", "segments.0.won_total"),
        ("segments: [{code: VIP, label: VIP, colour: red}]", "segments.0.colour"),
        ("segments: [{code: vip, label: VIP}]", "segments.0.code"),
        ("segments: [{code: A, label: X}, {code: A, label: Y}]", "codes repeat"),
        ("segments: [{code: A, label: X}]\ntask_on_moves: [B]", "unknown segments"),
        ("segments: [{code: A, label: X, freeze: month}]", "freeze applies"),
        ("company_size: {revenue_small_max: 5, revenue_medium_max: 5}\nsegments: [{code: A, label: X}]", "below"),
        ("- just a list", "must be a mapping"),
        ("segments: [", "not YAML"),
    ],
)
def test_bad_rules_are_refused_with_the_field_named(text: str, named: str) -> None:
    with pytest.raises(RulesError, match=named.replace(".", r"\.")):
        parse_rules(text)


def test_vip_at_182_days_sleeping_at_183() -> None:
    found = segments(*CROWD, customer(1, [(182, 500), (190, 500)]), customer(2, [(183, 500), (190, 500)]))
    assert (found[1], found[2]) == ("VIP", "SLEEPING")


def test_sleeping_from_183_to_365_days_then_one_time_or_nothing() -> None:
    found = segments(
        customer(1, [(365, 100)]), customer(2, [(366, 100)]), customer(3, [(366, 100), (400, 100)]),
        customer(4, [(183, 100)]), customer(5, [(182, 100)]),
    )  # fmt: skip
    # 365 days: still Спящий; 366: one win ever → Разовый; two old wins → no segment; 182 with one win → Разовый.
    assert found == {1: "SLEEPING", 2: "ONE_TIME", 3: None, 4: "SLEEPING", 5: "ONE_TIME"}


def test_the_80th_percentile_at_and_just_below_the_threshold() -> None:
    assert percentile([Decimal(v) for v in (500, 100, 300, 200, 400)], 80) == Decimal(400)
    at = customer(1, [(5, 400), (6, 400)])  # average 400: at the threshold
    below = customer(2, [(5, 399), (6, 400)])  # average 399.5
    # Both join the crowd, so the percentile is over 7 averages: 100 200 300 399.5 400 400 500 → rank 6 → 400.
    found = segments(*CROWD, at, below)
    assert (found[1], found[2]) == ("VIP", "ACTIVE")
    assert [found[100 + n] for n in range(1, 6)] == ["ACTIVE", "ACTIVE", "ACTIVE", "VIP", "VIP"]


def test_one_and_two_won_deals() -> None:
    one = customer(1, [(10, 100_000)])  # one win, however large: never VIP nor Активный
    two = customer(2, [(10, 50), (364, 50)])  # two wins in the window, average far below the percentile
    two_spread = customer(3, [(10, 50), (366, 50)])  # the second is outside the 365-day window
    found = segments(*CROWD, one, two, two_spread)
    assert (found[1], found[2], found[3]) == ("ONE_TIME", "ACTIVE", None)


def test_potential_and_newcomer() -> None:
    found = segments(
        customer(1, open_deals=1), customer(2, [(10, 100)], open_deals=1),
        customer(3, created=30), customer(4, created=31), customer(5, created=2, open_deals=1),
        customer(6, created=3, lost=1),
    )  # fmt: skip
    assert found == {1: "POTENTIAL", 2: "ONE_TIME", 3: "NEWCOMER", 4: None, 5: "POTENTIAL", 6: None}


def test_no_flip_across_two_nights_and_the_monthly_review() -> None:
    vip = customer(1, [(181, 400), (190, 400)])
    first = assign({c.key: c for c in [*CROWD, vip]}, RULES, TODAY)
    rows = {row["customer"]: row for row in first.rows}
    assert rows["contact:1"]["segment"] == "VIP" and first.frozen.thresholds == {"VIP": Decimal(400)}

    # Next night: a big buyer raises the 80th percentile, and the customer's last win is now 182 … then 183 days
    # old. Frozen for the month, the threshold and the membership hold: no flip.
    whale = customer(9, [(1, 90_000), (2, 90_000)])
    whales = [customer(200 + n, [(1, 90_000), (2, 90_000)]) for n in range(5)]
    night = TODAY + timedelta(days=2)
    vip.wins = [(day + timedelta(days=0), amount) for day, amount in vip.wins]
    second = assign({c.key: c for c in [*CROWD, vip, whale, *whales]}, RULES, night, previous=rows, frozen=first.frozen)
    rows2 = {row["customer"]: row for row in second.rows}
    assert rows2["contact:1"]["segment"] == "VIP" and rows2["contact:1"]["since"] == TODAY.isoformat()
    assert second.frozen.thresholds == {"VIP": Decimal(400)} and second.transitions[0]["customer"] == "contact:9"
    # Without the freeze the same night would have moved it: the test can fail.
    unfrozen = parse_rules(DEFAULT_RULES_YAML.replace("    freeze: month\n", ""))
    moved = assign({c.key: c for c in [*CROWD, vip, whale, *whales]}, unfrozen, night, previous=rows)
    assert {row["customer"]: row["segment"] for row in moved.rows}["contact:1"] == "SLEEPING"

    # The monthly review (a new month) re-evaluates: 190+ days since the last win → Спящий, a recorded move.
    review = date(2027, 1, 1)
    third = assign({c.key: c for c in [*CROWD, vip]}, RULES, review, previous=rows2, frozen=second.frozen)
    rows3 = {row["customer"]: row for row in third.rows}
    assert rows3["contact:1"]["segment"] == "SLEEPING" and rows3["contact:1"]["since"] == "2027-01-01"
    assert {"customer": "contact:1", "from": "VIP", "to": "SLEEPING"}.items() <= next(
        move for move in third.transitions if move["customer"] == "contact:1"
    ).items()
    assert third.frozen.month == "2027-01"


def test_rfm_quintiles_by_hand() -> None:
    buyers = {f"contact:{n}": customer(n, [(10 * n, 100 * n)] * n) for n in range(1, 11)}
    found = {key: features(c, TODAY, 365) for key, c in buyers.items()}
    scores = rfm_scores(found)
    # Ten buyers: two per quintile. n=1 is the most recent (10 days), fewest wins (1), least money (100).
    assert scores["contact:1"] == (5, 1, 1) and scores["contact:2"] == (5, 1, 1)
    assert scores["contact:5"] == (3, 3, 3) and scores["contact:10"] == (1, 5, 5)
    # Ties share the score of the middle of their ranks: five buyers who all won 100 ₽ 10 days ago are not «111»
    # (the lost-customer score); nor is a lone buyer; four buyers spread symmetrically.
    tied = {f"contact:{n}": features(customer(n, [(10, 100)]), TODAY, 365) for n in range(1, 6)}
    assert set(rfm_scores(tied).values()) == {(3, 3, 3)}
    assert rfm_scores({"contact:1": features(customer(1, [(1, 100)]), TODAY, 365)}) == {"contact:1": (3, 3, 3)}
    four = {f"contact:{n}": features(customer(n, [(10 * n, 100 * n)] * n), TODAY, 365) for n in range(1, 5)}
    assert [rfm_scores(four)[f"contact:{n}"] for n in range(1, 5)] == [(5, 1, 1), (4, 2, 2), (2, 4, 4), (1, 5, 5)]
    # Eight of ten buyers bought once: they share F 3 (the middle of ranks 1-8), the two repeat buyers 5.
    many = {f"contact:{n}": features(customer(n, [(10, 100)] * (1 if n <= 7 else 2)), TODAY, 365) for n in range(10)}
    assert sorted({score[1] for score in rfm_scores(many).values()}) == [3, 5]
    rows = assign(buyers, RULES, TODAY).rows
    assert {row["customer"]: row["rfm"] for row in rows}["contact:10"] == "155"


def test_b2b_deals_belong_to_the_company_and_its_size_comes_from_employees_and_revenue() -> None:
    deals = [
        {"ID": "1", "COMPANY_ID": "7", "CONTACT_ID": "3", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-12-01",
         "OPPORTUNITY": "1000", "CURRENCY_ID": "RUB"},
        {"ID": "2", "COMPANY_ID": "0", "CONTACT_ID": "3", "STAGE_SEMANTIC_ID": "P", "CURRENCY_ID": "RUB"},
        {"ID": "3", "CONTACT_ID": "99", "STAGE_SEMANTIC_ID": "S", "CURRENCY_ID": "RUB"},  # no such contact
    ]  # fmt: skip
    contacts = [{"ID": "3", "DATE_CREATE": "2026-01-01T10:00:00+03:00"}]
    companies = [
        {"ID": "7", "EMPLOYEES": "EMPLOYEES_1", "REVENUE": "10000000", "CURRENCY_ID": "RUB"},
        {"ID": "8", "EMPLOYEES": "EMPLOYEES_1", "REVENUE": "10000001", "CURRENCY_ID": "RUB"},
        {"ID": "9", "REVENUE": "100000000", "CURRENCY_ID": "RUB"},
        {"ID": "10", "REVENUE": "100000000.01", "CURRENCY_ID": "RUB"},
        {"ID": "11", "EMPLOYEES": "EMPLOYEES_3", "REVENUE": "5000000", "CURRENCY_ID": "RUB"},
        {"ID": "12", "EMPLOYEES": "UC_CUSTOM"},
        {"ID": "13", "REVENUE": "1000000", "CURRENCY_ID": "USD"},  # 1 M $ at 90 ₽ = 90 M ₽ → medium
        {"ID": "14", "IS_MY_COMPANY": "Y"},
    ]  # fmt: skip
    rates = {"RUB": Decimal(1), "USD": Decimal(90)}
    found, skipped = collect_customers(
        deals, contacts, companies, convert=lambda amount, currency, day: amount * rates[currency or "RUB"],
        zone=MSK, today=TODAY, wins={},
    )  # fmt: skip
    assert skipped == 1 and "company:14" not in found
    assert found["company:7"].wins == [(date(2026, 12, 1), Decimal(1000))] and found["contact:3"].open_deals == 1
    rows = {row["customer"]: row for row in assign(found, RULES, TODAY).rows}
    assert rows["company:7"]["segment"] == "ONE_TIME" and rows["contact:3"]["segment"] == "POTENTIAL"
    sizes = {key: row.get("size") for key, row in rows.items() if row["kind"] == "company"}
    assert sizes == {"company:7": "small", "company:8": "medium", "company:9": "medium", "company:10": "large",
                     "company:11": "large", "company:12": None, "company:13": "medium"}  # fmt: skip


def test_frozen_state_round_trips() -> None:
    frozen = Frozen("2026-12", {"VIP": Decimal("400.50"), "X": None})
    assert Frozen.from_json(frozen.to_json()) == frozen and Frozen.from_json({}) is None


def test_an_oversized_rules_file_is_refused_before_parsing() -> None:
    names = "abcdefghi"
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{names[n + 1]}: &{names[n + 1]} [{', '.join(['*' + names[n]] * 4)}]\n" for n in range(8)
    )
    with pytest.raises(RulesError, match="larger than"):
        parse_rules(bomb + "#" * 70_000)


def collect(deals, *, zone=MSK, wins=None, contacts=None):
    contacts = contacts or [{"ID": "1", "DATE_CREATE": "2025-01-01T10:00:00+03:00"}]
    found, _ = collect_customers(deals, contacts, [], convert=lambda amount, currency, day: amount, zone=zone,
                                 today=TODAY, wins=wins or {})  # fmt: skip
    return found


def test_a_win_without_closedate_is_dated_by_the_stage_history_never_by_date_modify() -> None:
    """The report's rule (issue 13): a later edit (DATE_MODIFY yesterday) must not move a win 200 days old."""
    deal = {"ID": "5", "CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "700", "CURRENCY_ID": "RUB",
            "DATE_MODIFY": "2026-12-05T12:00:00+03:00"}  # fmt: skip
    history = [
        {"OWNER_ID": "5", "STAGE_SEMANTIC_ID": "S", "CREATED_TIME": "2026-05-01T10:00:00+03:00"},  # an early win …
        {"OWNER_ID": "5", "STAGE_SEMANTIC_ID": "P", "CREATED_TIME": "2026-05-02T10:00:00+03:00"},  # … reopened
        {"OWNER_ID": "5", "STAGE_SEMANTIC_ID": "S", "CREATED_TIME": "2026-05-20T23:30:00+00:00"},  # won: 21 May, MSK
    ]
    wins = last_wins(history)
    found = collect([deal], wins=wins)
    assert found["contact:1"].wins == [(date(2026, 5, 21), Decimal(700))]
    assert segments(*found.values()) == {1: "SLEEPING"}  # 199 days since the win; DATE_MODIFY said 1 → Разовый
    # Neither CLOSEDATE nor a win in the history: a win with no day (counted, in no window, least recent for RFM).
    undated = collect([deal, {**deal, "ID": "6", "CONTACT_ID": "2"}],
                      contacts=[{"ID": "1"}, {"ID": "2"}], wins={5: wins[5]})  # fmt: skip
    assert undated["contact:2"].wins == [(None, Decimal(700))]
    rows = {row["customer"]: row for row in assign(undated, RULES, TODAY).rows}
    assert rows["contact:2"]["segment"] == "ONE_TIME" and rows["contact:2"]["last_win"] is None
    assert (rows["contact:1"]["r"], rows["contact:2"]["r"]) == (4, 2)


def test_closedate_is_the_calendar_day_as_written_whatever_the_report_zone() -> None:
    """CLOSEDATE is a calendar day: midnight at the portal's +03:00 is that day, not the day before in UTC."""
    deal = {"ID": "5", "CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "700", "CURRENCY_ID": "RUB",
            "CLOSEDATE": "2026-06-07T00:00:00+03:00"}  # fmt: skip
    found = collect([deal], zone=ZoneInfo("UTC"))
    assert found["contact:1"].wins == [(date(2026, 6, 7), Decimal(700))]
    assert segments(*found.values()) == {1: "ONE_TIME"}  # 182 days; read in UTC it was 183 → Спящий


def test_a_win_without_revenue_is_a_win_left_out_of_the_average_check() -> None:
    base = {"CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "S", "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-12-01"}
    deals = [{**base, "ID": str(n), "OPPORTUNITY": amount} for n, amount in
             enumerate(["1000", "", "-50", "abc", "NaN"], start=1)]  # fmt: skip
    found = collect(deals)
    item = features(found["contact:1"], TODAY, 365)
    assert (item.won_in_window, item.average_check, item.revenue_total) == (5, Decimal(1000), Decimal(1000))


def test_a_month_whose_first_night_had_no_buyer_does_not_freeze_vip_out() -> None:
    first = assign({c.key: c for c in [customer(1, open_deals=1)]}, RULES, TODAY)
    assert first.frozen.thresholds == {"VIP": None}
    vip = customer(2, [(1, 400), (2, 400)])
    night = TODAY + timedelta(days=1)
    rows = {row["customer"]: row for row in first.rows}
    second = assign({c.key: c for c in [*CROWD, vip]}, RULES, night, previous=rows, frozen=first.frozen)
    assert {row["id"]: row["segment"] for row in second.rows}[2] == "VIP"
    assert second.frozen.thresholds == {"VIP": Decimal(400)}  # found, then kept for the rest of the month


def test_a_contact_speaking_for_a_company_customer_is_not_a_newcomer() -> None:
    """The rule (engine's docstring): a contact with no deal of its own whose company is the customer — named on a
    company deal, or belonging to a company with deals — takes no segment; one with its own deals is segmented on
    them; a contact of a company without deals is judged alone. All created 10 days ago (Новичок by age alone)."""
    created = "2026-11-26T10:00:00+03:00"
    contacts = [
        {"ID": "1", "DATE_CREATE": created},  # named on company 7's won deal
        {"ID": "2", "DATE_CREATE": created, "COMPANY_ID": "7"},  # company 7's employee, on no deal
        {"ID": "3", "DATE_CREATE": created, "COMPANY_ID": "8"},  # company 8 has no deal
        {"ID": "4", "DATE_CREATE": created, "COMPANY_ID": "7"},  # its own open deal beside its company's
        {"ID": "5", "DATE_CREATE": created},  # nobody's
        {"ID": "6", "DATE_CREATE": "2026-11-05T10:00:00+03:00"},  # 31 days: too old for Новичок, named on a deal
    ]
    companies = [{"ID": "7", "DATE_CREATE": "2025-01-01T10:00:00+03:00"}, {"ID": "8", "DATE_CREATE": created}]
    deals = [
        {"ID": "1", "COMPANY_ID": "7", "CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "900",
         "CLOSEDATE": "2026-12-01"},
        {"ID": "2", "CONTACT_ID": "4", "STAGE_SEMANTIC_ID": "P"},
        {"ID": "3", "COMPANY_ID": "7", "CONTACT_ID": "6", "STAGE_SEMANTIC_ID": "P"},
    ]  # fmt: skip
    found, _ = collect_customers(deals, contacts, companies, convert=lambda amount, currency, day: amount, zone=MSK,
                                 today=TODAY, wins={})  # fmt: skip
    rows = {row["customer"]: row["segment"] for row in assign(found, RULES, TODAY).rows}
    assert rows == {
        "contact:1": None, "contact:2": None, "contact:3": "NEWCOMER", "contact:4": "POTENTIAL",
        "contact:5": "NEWCOMER", "contact:6": None, "company:7": "ONE_TIME", "company:8": "NEWCOMER",
    }  # fmt: skip
    # At the boundary: the same contact 1 without the company deal is a Новичок (its age alone decides).
    alone, _ = collect_customers(deals[1:2], contacts[:1], companies, convert=lambda amount, currency, day: amount,
                                 zone=MSK, today=TODAY, wins={})  # fmt: skip
    assert {row["customer"]: row["segment"] for row in assign(alone, RULES, TODAY).rows}["contact:1"] == "NEWCOMER"


def test_speaking_for_a_company_at_the_boundaries_lost_deals_and_two_companies() -> None:
    """Contact 1: only a lost deal of its own, in company 7 that has deals — its own deal makes it a customer of its
    own (segmented on it, as the rule says: no win, no open deal, too old for Новичок: no segment, but not for its
    company's sake). Contact 2: COMPANY_ID 8 (no deals) yet named on company 7's deal — it speaks for company 7 and
    takes no segment. Contact 3: in company 8 only, created 10 days ago — judged alone (Новичок)."""
    contacts = [
        {"ID": "1", "DATE_CREATE": "2025-01-01T10:00:00+03:00", "COMPANY_ID": "7"},
        {"ID": "2", "DATE_CREATE": "2026-11-26T10:00:00+03:00", "COMPANY_ID": "8"},
        {"ID": "3", "DATE_CREATE": "2026-11-26T10:00:00+03:00", "COMPANY_ID": "8"},
    ]
    companies = [{"ID": "7", "DATE_CREATE": "2025-01-01T10:00:00+03:00"},
                 {"ID": "8", "DATE_CREATE": "2025-01-01T10:00:00+03:00"}]  # fmt: skip
    deals = [
        {"ID": "1", "CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "F"},
        {"ID": "2", "COMPANY_ID": "7", "CONTACT_ID": "2", "STAGE_SEMANTIC_ID": "S", "OPPORTUNITY": "900",
         "CLOSEDATE": "2026-12-01"},
    ]  # fmt: skip
    found, skipped = collect_customers(deals, contacts, companies, convert=lambda amount, currency, day: amount,
                                       zone=MSK, today=TODAY, wins={})  # fmt: skip
    assert skipped == 0
    assert not found["contact:1"].speaks_for_company(found) and found["contact:1"].deals_total == 1
    assert found["contact:2"].speaks_for_company(found)
    rows = {row["customer"]: row["segment"] for row in assign(found, RULES, TODAY).rows}
    assert (rows["contact:2"], rows["contact:3"], rows["company:7"]) == (None, "NEWCOMER", "ONE_TIME")
