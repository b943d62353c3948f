"""The report's segments section on hand-made snapshots: customers per segment and their change, conversion, average
check, frequency and revenue of the period per segment, the matrix of moves, and the panel on the page."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from zoneinfo import ZoneInfo

from throughline.report import jsonlines
from throughline.report.models import Period
from throughline.report.render import format_number
from throughline.report.segments import render_segments, segments_section

LABELS = {"VIP": "VIP", "ACTIVE": "Активный", "SLEEPING": "Спящий"}
PERIOD = Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30))


class Objects(dict):
    def keys(self, prefix: str = ""):  # type: ignore[override]
        return iter(sorted(key for key in dict.keys(self) if key.startswith(prefix)))


def snapshot(rows: dict[str, str | None]) -> bytes:
    return jsonlines.encode([{"customer": key, "segment": value} for key, value in rows.items()])


def objects() -> Objects:
    store = Objects()
    # Start of the period (night of 1 November): 1 and 2 Активный, 3 VIP. An older night is not the start.
    store["segments/snapshot=2026-10-20/customers.json.gz"] = snapshot({"contact:1": "VIP"})
    store["segments/snapshot=2026-11-01/customers.json.gz"] = snapshot(
        {"contact:1": "ACTIVE", "contact:2": "ACTIVE", "contact:3": "VIP"})  # fmt: skip
    # End (night of 1 December; a later night is not read): 1 VIP, 2 Спящий, 3 VIP, 4 none, company 5 Активный.
    store["segments/snapshot=2026-12-01/customers.json.gz"] = snapshot(
        {"contact:1": "VIP", "contact:2": "SLEEPING", "contact:3": "VIP", "contact:4": None, "company:5": "ACTIVE"}
    )
    store["segments/snapshot=2026-12-02/customers.json.gz"] = snapshot({"contact:1": "SLEEPING"})
    moves = {"2026-11-01": [("contact:9", "VIP", "ACTIVE")],  # the start night: before the period's moves
             "2026-11-15": [("contact:1", "ACTIVE", "VIP"), ("contact:2", "ACTIVE", "SLEEPING")],
             "2026-12-01": [("contact:4", "NEWCOMER", None), ("contact:6", "ACTIVE", "VIP")],
             "2026-12-02": [("contact:1", "VIP", "SLEEPING")]}  # fmt: skip
    for day, rows in moves.items():
        store[f"segments/transitions/date={day}/transitions.json.gz"] = jsonlines.encode(
            [{"customer": c, "from": a, "to": b} for c, a, b in rows])  # fmt: skip
    return store


def won(contact: str, day: str, amount: str, stage: str = "S") -> dict[str, str]:
    return {"CONTACT_ID": contact, "STAGE_SEMANTIC_ID": stage, "CLOSEDATE": day, "OPPORTUNITY": amount,
            "CURRENCY_ID": "RUB"}  # fmt: skip


DEALS = [
    # contact 1: two wins in November (1 000 and 2 000 ₽), one in October (not counted), one lost.
    won("1", "2026-11-03", "1000"),
    won("1", "2026-11-30", "2000"),
    won("1", "2026-10-31", "9999"),
    won("1", "2026-11-04", "500", stage="F"),
    # … and a win whose amount is not a number: a won deal without revenue, out of the average check (no crash).
    won("1", "2026-11-20", "abc"),
    # contact 3: no CLOSEDATE, so the day of the last move into a success stage (WINS), never DATE_MODIFY: deal 31
    # won at 23:30 on 30 November in Moscow (edited on 3 December): in, 100 $ at 90 ₽ = 9 000 ₽; deal 32 won at 01:30
    # on 1 December in Moscow (22:30 UTC on the 30th), edited on 15 November: out.
    {"ID": "31", "CONTACT_ID": "3", "STAGE_SEMANTIC_ID": "S", "DATE_MODIFY": "2026-12-03T10:00:00+03:00",
     "OPPORTUNITY": "100", "CURRENCY_ID": "USD"},
    {"ID": "32", "CONTACT_ID": "3", "STAGE_SEMANTIC_ID": "S", "DATE_MODIFY": "2026-11-15T10:00:00+03:00",
     "OPPORTUNITY": "200", "CURRENCY_ID": "USD"},
    # company 5 (its contact 2 does not get it): 4 000 ₽.
    {"COMPANY_ID": "5", "CONTACT_ID": "2", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-10", "OPPORTUNITY": "4000",
     "CURRENCY_ID": "RUB"},
]  # fmt: skip
RATES = {"RUB": Decimal(1), "USD": Decimal(90)}
WINS = {31: "2026-11-30T20:30:00+00:00", 32: "2026-11-30T22:30:00+00:00"}  # report.build.last_wins of the history


def section():
    return segments_section(objects(), PERIOD, DEALS, convert=lambda amount, currency, day: amount * RATES[currency],
                            zone=ZoneInfo("Europe/Moscow"), labels=LABELS, wins=WINS)  # fmt: skip


def test_segment_rows_by_hand() -> None:
    found = section()
    assert (found.snapshot, found.start_snapshot) == ("2026-12-01", "2026-11-01")
    rows = {row.label: row for row in found.rows}
    assert list(rows) == ["VIP", "Активный", "Спящий", "Без сегмента"]
    # contacts 1 and 3: 4 wins, 3 with revenue: 1 000 + 2 000 + 9 000 = 12 000; average check 12 000 / 3 = 4 000;
    # frequency 4 wins / 2 buyers = 2.
    vip = rows["VIP"]
    assert (vip.customers, vip.customers_start, vip.change, vip.buyers, vip.won_deals) == (2, 1, 1, 2, 4)
    assert (vip.revenue, vip.conversion, vip.average_check, vip.frequency) == (
        Decimal("12000.00"), Decimal("100.00"), Decimal("4000.00"), Decimal("2.00"))  # fmt: skip
    active = rows["Активный"]  # company 5 now; contacts 1 and 2 at the start
    assert (active.customers, active.customers_start, active.change, active.revenue) == (1, 2, -1, Decimal("4000.00"))
    sleeping = rows["Спящий"]  # contact 2 bought nothing as a contact
    assert (sleeping.customers, sleeping.buyers, sleeping.conversion, sleeping.average_check) == (1, 0, Decimal(0),
                                                                                                   None)  # fmt: skip
    assert (rows["Без сегмента"].customers, rows["Без сегмента"].customers_start) == (1, 0)
    moves = [(move.from_label, move.to_label, move.customers) for move in found.moves]
    # Moves of the nights after the start night up to the end night; largest first, then by name.
    assert moves == [("Активный", "VIP", 2), ("NEWCOMER", "Без сегмента", 1), ("Активный", "Спящий", 1)]


def test_no_section_before_the_first_night_and_the_panel_on_the_page() -> None:
    assert segments_section(Objects(), PERIOD, [], convert=lambda a, c, d: a, zone=ZoneInfo("UTC"), labels={},
                            wins={}) is None  # fmt: skip
    page = render_segments(section(), format_number)
    assert "<h2>Сегменты клиентов</h2>" in page and 'class="segbar"' in page
    assert "<td>12\u202f000</td>" in page and "<td>+1</td>" in page and "<td>-1</td>" in page
    assert "<td>Активный</td><td>VIP</td><td>2</td>" in page
    assert render_segments(None, format_number) == ""


def test_acquisition_cost_per_segment_by_hand() -> None:
    """Yandex (campaign 555: 3 000 ₽) acquires contacts 1 and 2 → the source's CAC 1 500 ₽ each; VK («Зима»:
    2 000 ₽) acquires contact 3 and company 9 (through its contact 6) → 1 000 ₽ each; contact 4 comes by phone (no
    spend: a new customer, not paid for); contact 5 bought in October too (not new). At the period's end 1 and 4 are
    VIP, 2 and company 9 Активный, 3 Спящий, 5 Активный. VIP: 2 new, 1 paid, 1 500 ₽, CAC 1 500; Активный: 2 new,
    2 paid, 1 500 + 1 000 = 2 500 ₽, CAC 1 250; Спящий: 1, 1, 1 000 ₽, CAC 1 000; none: «—»."""
    from tests.unit.test_report_build import build, deal, lead, spend

    by_yandex = [lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="555") for _ in range(2)]
    by_vk = [lead(UTM_SOURCE="vk", UTM_MEDIUM="cpc", UTM_CAMPAIGN="Зима") for _ in range(2)]
    deals = [
        deal(by_yandex[0], won=True, amount="10000", CONTACT_ID="1"),
        deal(by_yandex[1], won=True, amount="10000", CONTACT_ID="2"),
        deal(by_vk[0], won=True, amount="10000", CONTACT_ID="3"),
        deal(by_vk[1], won=True, amount="10000", CONTACT_ID="6", COMPANY_ID="9"),
        deal(None, won=True, amount="10000", CONTACT_ID="4", SOURCE_ID="CALL"),
        deal(None, won=True, amount="10000", CONTACT_ID="5", SOURCE_ID="CALL", day="2026-10-10"),
        deal(None, won=True, amount="10000", CONTACT_ID="5", SOURCE_ID="CALL"),
    ]
    spend_rows = [spend("yandex_direct", "3000", campaign_id="555", name="Поиск"),
                  spend("vk_ads", "2000", campaign_id="55", name="Зима")]  # fmt: skip
    acquisitions: dict = {}
    report = build([*by_yandex, *by_vk], deals, spend_rows, acquisitions=acquisitions)
    ids = {int(item["CONTACT_ID"]): int(item["ID"]) for item in deals if item["CLOSEDATE"].startswith("2026-11")}
    assert acquisitions == {ids[1]: Decimal(1500), ids[2]: Decimal(1500), ids[3]: Decimal(1000),
                            ids[6]: Decimal(1000), ids[4]: None}  # fmt: skip
    # The report's own CAC per source says the same.
    sources = {r.source: r.metrics.cac for r in report.rows if r.level == "source"}
    assert sources["yandex"] == Decimal("1500.00") and sources["vk"] == Decimal("1000.00")

    store = Objects()
    store["segments/snapshot=2026-12-01/customers.json.gz"] = snapshot({
        "contact:1": "VIP", "contact:4": "VIP", "contact:2": "ACTIVE", "company:9": "ACTIVE", "contact:3": "SLEEPING",
        "contact:5": "ACTIVE", "contact:6": None,
    })  # fmt: skip
    found = segments_section(store, PERIOD, deals, convert=lambda amount, currency, day: amount, wins={},
                             zone=ZoneInfo("Europe/Moscow"), labels=LABELS, acquisitions=acquisitions)  # fmt: skip
    rows = {row.label: row for row in found.rows}
    got = {label: (row.new_customers, row.paid_new_customers, row.acquisition_spend, row.cac)
           for label, row in rows.items()}  # fmt: skip
    assert got == {
        "VIP": (2, 1, Decimal("1500.00"), Decimal("1500.00")),
        "Активный": (2, 2, Decimal("2500.00"), Decimal("1250.00")),
        "Спящий": (1, 1, Decimal("1000.00"), Decimal("1000.00")),
        "Без сегмента": (0, 0, None, None),
    }
    dumped = {row["label"]: row for row in found.model_dump(mode="json")["rows"]}
    assert dumped["Активный"]["cac"] == "1250.00" and dumped["Без сегмента"]["cac"] is None  # decimal strings
    page = render_segments(found, format_number)
    assert "<th>CAC</th>" in page and "<td>1 из 2</td>" in page
    assert page.count("<td>—</td>") >= 1


def test_a_company_whose_two_contacts_each_buy_first_is_one_new_customer_of_its_segment() -> None:
    """The report counts a new customer by contact (contacts 6 and 7 of company 9 each buy for the first time: two
    acquisitions, 1 000 ₽ and 600 ₽ of CAC); the segment's customer is the company: one new customer, paid, carrying
    both costs (1 600 ₽, CAC 1 600 — the spend is not lost). Company 8: contact 10 paid (500 ₽), contact 11 not
    (no paid source): one new customer, paid, 500 ₽. Contact 1 (VIP, 700 ₽): one more. Активный: 2 new, 2 paid,
    2 100 ₽, CAC 1 050; VIP: 1, 1, 700 ₽."""
    deals = [
        {"ID": "61", "CONTACT_ID": "6", "COMPANY_ID": "9", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-05"},
        {"ID": "71", "CONTACT_ID": "7", "COMPANY_ID": "9", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-06"},
        {"ID": "101", "CONTACT_ID": "10", "COMPANY_ID": "8", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-07"},
        {"ID": "111", "CONTACT_ID": "11", "COMPANY_ID": "8", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-08"},
        {"ID": "12", "CONTACT_ID": "1", "STAGE_SEMANTIC_ID": "S", "CLOSEDATE": "2026-11-09"},
    ]
    for item in deals:
        item["OPPORTUNITY"] = "1000"
    acquisitions = {61: Decimal(1000), 71: Decimal(600), 101: Decimal(500), 111: None, 12: Decimal(700)}
    store = Objects()
    store["segments/snapshot=2026-12-01/customers.json.gz"] = snapshot(
        {"company:9": "ACTIVE", "company:8": "ACTIVE", "contact:1": "VIP"})  # fmt: skip
    found = segments_section(store, PERIOD, deals, convert=lambda amount, currency, day: amount, wins={},
                             zone=ZoneInfo("Europe/Moscow"), labels=LABELS, acquisitions=acquisitions)  # fmt: skip
    got = {row.label: (row.new_customers, row.paid_new_customers, row.acquisition_spend, row.cac)
           for row in found.rows}  # fmt: skip
    assert got["Активный"] == (2, 2, Decimal("2100.00"), Decimal("1050.00"))
    assert got["VIP"] == (1, 1, Decimal("700.00"), Decimal("700.00"))
    # Every acquisition's cost lands in one segment: the spend adds up to the report's.
    spent = sum((row.acquisition_spend or Decimal(0) for row in found.rows), Decimal(0))
    assert spent == sum(cost for cost in acquisitions.values() if cost is not None)
