"""The report's offline-conversions section, against figures computed by hand (issue 19)."""

from __future__ import annotations

import gzip
import json
from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from throughline.report.conversions import conversions_section, read_ledger, render_section
from throughline.report.models import Period
from throughline.report.rates import RateBook

NOVEMBER = Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))
MOSCOW = ZoneInfo("Europe/Moscow")
RATES = RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "92.5"}, "source": "cbr"}])


def row(platform: str, entity: str, at: str, amount: str, state: str, currency: str = "RUB", **extra: str) -> dict:
    return {"id": f"{platform}#g#won#{entity}", "platform": platform, "goal": "g", "kind": "won", "entity": entity,
            "at": at, "amount": amount, "currency": currency, "state": state, **extra}  # fmt: skip


LEDGER = [
    row("yandex_metrica", "DEAL#1", "2026-11-18T12:00:00+00:00", "150000.50", "accepted"),
    row("yandex_metrica", "DEAL#2", "2026-11-10T09:00:00+00:00", "80000", "sent", upload_id="7"),
    row("yandex_metrica", "DEAL#3", "2026-10-20T09:00:00+00:00", "30000", "accepted"),  # October: not in the period
    row("yandex_metrica", "DEAL#4", "2026-11-15T09:00:00+00:00", "5000", "no_identifier"),
    row("yandex_metrica", "DEAL#6", "2026-11-30T22:30:00+00:00", "999", "accepted"),  # 1 December in Moscow
    row("yandex_metrica", "DEAL#7", "2026-11-03T09:00:00+00:00", "1000", "rejected", "USD", reason="bad file"),
    row("yandex_metrica", "DEAL#8", "2026-11-04T09:00:00+00:00", "20000", "refused", reason="older than 21 days"),
    {**row("yandex_metrica", "LEAD#9", "2026-11-04T09:00:00+00:00", "0", "accepted"), "kind": "qualified"},
    row("google_ads", "DEAL#1", "2026-11-18T12:00:00+00:00", "150000.50", "failed", reason="503"),
    row("google_ads", "DEAL#2", "2026-11-10T09:00:00+00:00", "80000", "accepted"),
]


def test_figures_per_platform_match_the_hand_computed_ones():
    metrica, google = conversions_section(LEDGER, NOVEMBER, MOSCOW, RATES)
    # Metrica: deals 1, 2, 4, 7, 8; revenue 150 000.50 + 80 000 + 5 000 + 1 000 × 92.5 + 20 000 = 347 500.50
    assert (metrica.won_deals, metrica.revenue, metrica.with_identifier) == (5, Decimal("347500.50"), 4)
    assert (metrica.sent, metrica.accepted, metrica.rejected, metrica.refused, metrica.pending, metrica.failed) == (
        3, 1, 1, 1, 1, 0)  # fmt: skip
    assert metrica.revenue_accepted == Decimal("150000.50")
    assert metrica.visible_share == Decimal("43.2")  # 150 000.50 / 347 500.50 = 43.17 %
    assert {(r.reason, r.count) for r in metrica.reasons} == {("bad file", 1), ("older than 21 days", 1)}
    # Google: deals 1 and 2 (230 000.50), one accepted (80 000), one waiting for a retry
    assert (google.won_deals, google.revenue, google.sent, google.accepted, google.failed) == (
        2, Decimal("230000.50"), 1, 1, 1)  # fmt: skip
    assert google.visible_share == Decimal("34.8")  # 80 000 / 230 000.50 = 34.78 %


def test_the_section_is_empty_without_a_ledger_and_read_from_its_export():
    assert conversions_section([], NOVEMBER, MOSCOW, RATES) == []

    class Objects:
        def get(self, key: str) -> bytes | None:
            lines = "\n".join(json.dumps(r) for r in LEDGER)
            return gzip.compress(lines.encode()) if key == "conversions/ledger.json.gz" else None

    assert read_ledger(Objects()) == LEDGER


def test_the_panel_shows_each_platform_and_escapes_reasons():
    from types import SimpleNamespace

    hostile = [row("vk_ads", "DEAL#1", "2026-11-18T12:00:00+00:00", "100", "rejected", reason="<script>x</script>")]
    section = conversions_section(hostile, NOVEMBER, MOSCOW, RATES)
    page = render_section(SimpleNamespace(conversions=section))
    assert "VK Реклама" in page and "<script>" not in page and "&lt;script&gt;" in page
