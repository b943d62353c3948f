"""Every metric by hand, with the seed example and the zero cases (empty cells, never inf or an error)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from throughline.report.metrics import Totals, change, compute


def test_seed_example_yandex_direct_romi_525() -> None:
    result = compute(
        Totals(
            spend=Decimal(80000),
            leads=100,
            deals=25,
            won_deals=25,
            revenue=Decimal(500000),
            priced_deals=25,
            converted_leads=25,
        )
    )
    assert result.romi == Decimal("525.00")
    assert result.cpl == Decimal("800.00")  # 80 000 / 100
    assert result.cr == Decimal("25.00")  # 25 / 100
    assert result.average_check == Decimal("20000.00")  # 500 000 / 25
    assert result.cpo == Decimal("3200.00")  # 80 000 / 25
    assert result.roas == Decimal("625.00")  # 500 000 / 80 000
    assert result.drr == Decimal("16.00")  # 80 000 / 500 000
    assert result.roi == result.romi  # no margin: ROI equals ROMI (DESIGN.md)


def test_seed_example_social_romi_150() -> None:
    result = compute(
        Totals(
            spend=Decimal(30000),
            leads=50,
            deals=5,
            won_deals=5,
            revenue=Decimal(75000),
            priced_deals=5,
            converted_leads=5,
        )
    )
    assert result.romi == Decimal("150.00")
    assert (result.cpl, result.cr, result.average_check) == (Decimal("600.00"), Decimal("10.00"), Decimal("15000.00"))
    assert (result.roas, result.drr) == (Decimal("250.00"), Decimal("40.00"))


def test_traffic_metrics() -> None:
    result = compute(Totals(impressions=12345, clicks=321, spend=Decimal("9876.54")))
    assert result.ctr == Decimal("2.60")  # 321 / 12345 = 2.6002 %
    assert result.cpc == Decimal("30.77")  # 9876.54 / 321 = 30.7680
    assert result.cpm == Decimal("800.04")  # 9876.54 × 1000 / 12345 = 800.0437


def test_roi_with_margin_and_cac_and_cycle() -> None:
    totals = Totals(spend=Decimal(10000), won_deals=4, revenue=Decimal(50000), new_customers=3)
    totals.cycle_days_sum, totals.cycle_deals = Decimal(25), 4
    result = compute(totals, margin=Decimal("0.3"))
    assert result.roi == Decimal("50.00")  # (50 000 × 0.3 − 10 000) / 10 000
    assert result.romi == Decimal("400.00")
    assert result.cac == Decimal("3333.33")  # 10 000 / 3
    assert result.sales_cycle_days == Decimal("6.3")  # 25 / 4 = 6.25 → 6.3 (half up)


def test_profit_field_wins_over_margin() -> None:
    totals = Totals(spend=Decimal(100), revenue=Decimal(1000), gross_profit=Decimal(300), won_deals=1)
    assert compute(totals, margin=Decimal("0.9"), profit_field=True).roi == Decimal("200.00")


def test_zero_spend_gives_empty_cells() -> None:
    result = compute(Totals(leads=10, deals=2, won_deals=1, revenue=Decimal(5000), priced_deals=1, converted_leads=2))
    for name in ("cpc", "cpm", "ctr", "cpl", "cpo", "cac", "romi", "roi", "roas", "drr"):
        assert getattr(result, name) is None, name
    assert (result.cr, result.average_check) == (Decimal("20.00"), Decimal("5000.00"))
    assert result.spend == Decimal("0.00")


def test_zero_leads_and_zero_revenue() -> None:
    result = compute(Totals(spend=Decimal(1000)))
    assert (result.cpl, result.cr, result.average_check, result.cpo, result.drr) == (None, None, None, None, None)
    assert result.romi == Decimal("-100.00")  # all money lost
    assert result.roas == Decimal("0.00")
    assert result.sales_cycle_days is None


def test_everything_zero() -> None:
    result = compute(Totals())
    assert all(value in (None, 0) for value in result.__dict__.values()), "an empty row has empty cells and zero counts"


def test_rounding_to_kopecks_half_up_at_the_end() -> None:
    assert compute(Totals(spend=Decimal("100.005"), leads=1)).cpl == Decimal("100.01")
    assert compute(Totals(spend=Decimal("10"), leads=3)).cpl == Decimal("3.33")


@pytest.mark.parametrize(
    ("current", "previous", "expected"),
    [(150, 100, Decimal("50.00")), (50, 100, Decimal("-50.00")), (10, 0, None), (None, 5, None), (5, None, None)],
)
def test_change(current, previous, expected) -> None:
    assert change(current, previous) == expected
