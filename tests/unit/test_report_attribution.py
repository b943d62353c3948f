"""The report's attribution section from journey export lines and the CRM's won deals, hand-computed; cohorts."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, date, datetime
from decimal import Decimal

from tests.unit.test_report_build import PERIOD, PREVIOUS, STATUSES, deal, lead
from throughline.report.attribution import AttributionOptions, read_journeys
from throughline.report.build import NO_JOURNEYS, build_report
from throughline.report.funnel import StageBook
from throughline.report.rates import RateBook
from throughline.report.render import render_csv, render_html

SNAPSHOT = "2026-11-30"


class Objects(dict):
    def get(self, key: str, default=None):  # the report's object store: bytes, or None when absent
        return super().get(key, default)


def gz(lines: list[dict]) -> bytes:
    return gzip.compress("".join(json.dumps(line) + "\n" for line in lines).encode())


def touch(person: str | None, at: str, channel: str, *, kind: str = "first_visit", entity=("lead", 1), **tags) -> dict:
    line = {"person_key": person, "entity_type": entity[0], "entity_id": entity[1], "touch_id": f"t{at}{channel}",
            "at": at, "kind": kind, "channel": channel, "medium": None, "content": None, "term": None, "detail": None,
            "source": tags.get("source", ""), "campaign": tags.get("campaign", "")}  # fmt: skip
    return line


def export(touches: list[dict], entities: list[dict]) -> Objects:
    folder = f"journeys/snapshot={SNAPSHOT}"
    objects = Objects()
    objects[f"{folder}/part-00000.json.gz"] = gz(touches[: len(touches) // 2])
    objects[f"{folder}/part-10000.json.gz"] = gz(touches[len(touches) // 2 :])
    objects[f"{folder}/entities.json.gz"] = gz(entities)
    parts = [f"{folder}/part-00000.json.gz", f"{folder}/part-10000.json.gz"]
    objects["journeys/latest.json"] = json.dumps({"snapshot": SNAPSHOT, "parts": parts}).encode()
    return objects


def entity(kind: str, id_: int | str, person: str | None, lead_id: int | str | None = None) -> dict:
    return {"entity_type": kind, "entity_id": int(id_), "person_key": person, "deleted": False,
            "lead_id": int(lead_id) if lead_id else None}  # fmt: skip


SPEND = {"date": "2026-11-03", "platform": "yandex_direct", "account_id": "a", "campaign_id": "1",
         "campaign_name": "c", "impressions": 10, "clicks": 1, "cost": Decimal("1000"), "currency": "RUB"}  # fmt: skip


def build(leads, deals, objects: Objects | None, **options):
    return build_report(
        period=PERIOD,
        previous=PREVIOUS,
        leads=leads,
        deals=deals,
        spend=[SPEND],
        rates=RateBook("RUB", [{"date": "2026-11-01", "base": "RUB", "rates": {"USD": "90.5"}, "source": "cbr"}]),
        stages=StageBook(STATUSES),
        journeys=read_journeys(objects) if objects is not None else None,
        attribution=AttributionOptions(**options),
        now=lambda: datetime(2026, 12, 1, 5, 0),
    )


def credit(report, model: str) -> dict[str, tuple[Decimal, Decimal]]:
    return {row.channel: (row.conversions, row.revenue) for row in report.attribution.models[model]}


def scenario():
    """P1: paid search, then social, then a manager's call (crm), wins deal A (10 000 RUB).
    P2: one e-mail touch, never buys. P3: organic, then deal B of their lead won in USD (100 × 90.5), the deal's
    export line has no person: reached through its lead_id. Deal C: won, unknown to the export."""
    lead_a, lead_b, lead_c = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc"), lead(), lead()
    deal_a = deal(lead_a, won=True, amount="10000", day="2026-11-10")
    deal_b = deal(None, won=True, amount="100", day="2026-11-12", CURRENCY_ID="USD")
    deal_c = deal(lead_c, won=True, amount="500.55", day="2026-11-20")
    lost = deal(lead_c, won=False, amount="99999")
    a, b = int(deal_a["ID"]), int(deal_b["ID"])
    touches = [
        touch("P1", "2026-11-01T09:00:00Z", "paid_search", source="yandex", campaign="777"),
        touch("P1", "2026-11-05T09:00:00Z", "social", source="vk"),
        touch("P1", "2026-11-06T09:00:00Z", "crm", kind="outgoing_call"),
        touch("P1", "2026-11-10T08:00:00Z", "crm", kind="won", entity=("deal", a)),
        touch("P1", "2026-11-11T09:00:00Z", "direct"),  # after the win: a non-converting tail
        touch("P2", "2026-11-02T09:00:00Z", "email"),
        touch("P3", "2026-11-03T09:00:00Z", "organic", source="yandex"),
        touch(None, "2026-11-03T09:00:00Z", "referral"),  # no person: cannot be anyone's journey
    ]
    entities = [
        entity("lead", lead_a["ID"], "P1"),
        entity("lead", 9001, "P2"),
        entity("lead", 9002, "P3"),
        entity("deal", a, "P1", lead_a["ID"]),
        entity("deal", b, None, 9002),
    ]
    return [lead_a, lead_b, lead_c], [deal_a, deal_b, deal_c, lost], export(touches, entities)


def test_the_persons_replies_in_the_sales_process_take_no_credit() -> None:
    """An incoming call or e-mail on a record already being sold (channel offline / email in the export) is the
    sales process: last click stays with the ad that brought the person, not with whoever phoned last."""
    won_lead = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    won = deal(won_lead, won=True, amount="1000", day="2026-11-10")
    touches = [
        touch("P1", "2026-11-01T09:00:00Z", "paid_search", kind="form", source="yandex"),
        touch("P1", "2026-11-04T09:00:00Z", "offline", kind="incoming_call", source="phone"),
        touch("P1", "2026-11-05T09:00:00Z", "email", kind="incoming_email", source="email"),
        touch("P1", "2026-11-06T09:00:00Z", "messenger", kind="chat", source="telegram"),
    ]
    entities = [entity("lead", won_lead["ID"], "P1"), entity("deal", won["ID"], "P1", won_lead["ID"])]
    report = build([won_lead], [won], export(touches, entities))
    assert credit(report, "last_click") == {"paid_search": (1, Decimal("1000"))}
    assert report.attribution.touches == 1


def test_paths_from_export_lines_and_won_deals() -> None:
    leads, deals, objects = scenario()
    report = build(leads, deals, objects)
    section = report.attribution
    revenue = Decimal("10000") + Decimal("9050.00") + Decimal("500.55")
    assert report.headline.revenue == revenue == section.revenue
    assert section.conversions == 3
    assert section.deals_without_person == 1  # deal C
    assert section.touches == 5  # crm touches and the person-less one left out
    assert section.non_converting_journeys == 2  # P2; P1's direct visit after the win
    # P1's path is paid_search > social (the calls are sales-side); P3's organic; deal C has no touches.
    assert credit(report, "last_click") == {
        "(no touches)": (1, Decimal("500.55")),
        "direct": (0, 0),
        "email": (0, 0),
        "organic": (1, Decimal("9050.00")),
        "paid_search": (0, 0),
        "social": (1, Decimal("10000")),
    }
    assert credit(report, "first_click")["paid_search"] == (1, Decimal("10000"))
    assert credit(report, "linear")["paid_search"] == (Decimal("0.5"), Decimal("5000"))
    assert credit(report, "linear")["social"] == (Decimal("0.5"), Decimal("5000"))
    # Time decay, half-life 7 days: at the win (10.11 08:00 UTC) the touches are 8 d 23 h and 4 d 23 h old, 4 days
    # apart: weights 1 : 2^(4/7).
    decay = credit(report, "time_decay")
    share = 1 / (1 + 2 ** (4 / 7))
    assert decay["paid_search"][1] == (Decimal(10000 * share)).quantize(Decimal("0.01"))
    for model, rows in section.models.items():
        assert sum(row.revenue for row in rows) == revenue, model
        assert sum(row.conversions for row in rows) == 3, model
    romi = {row.channel: row.romi for row in section.models["first_click"]}
    assert romi["paid_search"] == Decimal("900.00")  # (10 000 − 1 000) / 1 000
    assert romi["social"] is None  # no spend: an empty cell
    assert report.data_quality.journeys is None


def test_half_life_and_default_model_reach_the_section_and_csv() -> None:
    leads, deals, objects = scenario()
    report = build(leads, deals, objects, default_model="first_click", half_life_days=1.0)
    assert report.attribution.default_model == "first_click"
    share = 1 / (1 + 2**4)
    assert credit(report, "time_decay")["paid_search"][1] == (Decimal(10000 * share)).quantize(Decimal("0.01"))
    lines = render_csv(report).decode("utf-8-sig").splitlines()
    header = lines[0].split(";")
    model_column = header.index("Модель атрибуции")
    paid = next(line.split(";") for line in lines if line.split(";")[1] == "Контекстная реклама")
    assert paid[model_column : model_column + 3] == ["Первый клик", "1,0000", "10000,00"]


def test_no_export_yet_leaves_a_note_not_an_error() -> None:
    leads, deals, _ = scenario()
    report = build(leads, deals, None)
    assert report.attribution is None
    assert report.data_quality.journeys == NO_JOURNEYS
    assert read_journeys(Objects()) is None
    page = render_html(report).decode()
    assert NO_JOURNEYS in page and 'id="chart-attribution"' not in page


def test_cohorts_by_first_won_deal_with_repeat_purchases() -> None:
    yandex = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc")
    first = deal(yandex, won=True, amount="1000", day="2026-10-05", CONTACT_ID="7")
    again = deal(yandex, won=True, amount="500", day="2026-11-02", CONTACT_ID="7")
    other = deal(yandex, won=True, amount="3000", day="2026-10-20", CONTACT_ID="8")
    later = deal(yandex, won=True, amount="9999", day="2026-12-02", CONTACT_ID="8")  # after the period: not yet
    report = build([yandex], [first, again, other, later], None)
    (cohort,) = report.cohorts
    assert (cohort.month, cohort.source, cohort.customers, cohort.repeat_customers) == ("2026-10", "yandex", 2, 1)
    assert cohort.repeat_rate == Decimal("50.00")
    assert cohort.revenue == [Decimal("4000"), Decimal("4500")]
    assert cohort.ltv == [Decimal("2000.00"), Decimal("2250.00")]
    page = render_html(report).decode()
    assert "2026-10 · Яндекс" in page and ">2\u202f250<" in page


def test_export_parts_are_read_one_at_a_time() -> None:
    _, _, objects = scenario()
    journeys = read_journeys(objects)
    read = []
    get = objects.get

    def spy(key, default=None):
        read.append(key)
        return get(key, default)

    objects.get = spy
    stream = journeys.touches()
    next(stream)
    assert read == [journeys.parts[0]]
    assert journeys.snapshot == SNAPSHOT and date.fromisoformat(journeys.snapshot)


def test_crm_snapshot_keys_people_as_the_journey_export_does() -> None:
    from throughline.contacts import normalize_email, normalize_phone
    from throughline.person_keys import person_key
    from throughline.report.crm import SnapshotOptions, _compact

    row = {"ID": "1", "PHONE": [{"VALUE": "bad"}, {"VALUE": "8 (916) 123-45-67"}], "EMAIL": [{"VALUE": "Ivan@Mail.RU"}]}
    compact = _compact(row, SnapshotOptions(person_key_secret="s3cret"))
    phone, email = normalize_phone("8 (916) 123-45-67"), normalize_email("Ivan@Mail.RU")
    assert compact["PERSON_KEY"] == person_key(phone, "s3cret")  # the first valid contact, phones first
    assert compact["PERSON_KEYS"] == sorted([person_key(phone, "s3cret"), person_key(email, "s3cret")])
    assert "PHONE" not in compact and "EMAIL" not in compact
    assert "PERSON_KEY" not in _compact(row, SnapshotOptions())  # no secret, no keys


def test_attribution_settings_are_parsed_and_the_template_offers_every_model() -> None:
    import pytest

    from local.template import load_template
    from throughline.attribution import ALL_MODELS
    from throughline.config import ATTRIBUTION_MODELS, ConfigError, load_settings

    assert ATTRIBUTION_MODELS == ALL_MODELS
    settings = load_settings(
        {"ATTRIBUTION_DEFAULT_MODEL": "markov", "ATTRIBUTION_HALF_LIFE_DAYS": "3.5", "ATTRIBUTION_MARKOV_ORDER": "2"}
    )
    assert (settings.attribution_default_model, settings.attribution_half_life_days) == ("markov", 3.5)
    assert settings.attribution_markov_order == 2
    assert load_settings({}).attribution_default_model == "last_click"
    with pytest.raises(ConfigError, match="ATTRIBUTION_DEFAULT_MODEL"):
        load_settings({"ATTRIBUTION_DEFAULT_MODEL": "last_touch"})
    template = load_template()
    assert tuple(template["Parameters"]["AttributionDefaultModel"]["AllowedValues"]) == ALL_MODELS
    variables = template["Resources"]["BuildRoiReportFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["ATTRIBUTION_MARKOV_ORDER"] == {"Ref": "AttributionMarkovOrder"}


def test_access_denied_answers_from_the_export_reach_the_data_quality_and_the_page() -> None:
    objects = export([], [])
    assert build([lead()], [], objects).data_quality.records_access_denied == 0  # an older export: no such key
    latest = json.loads(objects["journeys/latest.json"])
    objects["journeys/latest.json"] = json.dumps({**latest, "access_denied": 7}).encode()
    report = build([lead()], [], objects)
    assert report.data_quality.records_access_denied == 7
    page = render_html(report).decode("utf-8")
    assert (
        "Ответов «Access denied» (записи CRM, скрытые от пользователя вебхука; их касаний нет в путях): <b>7</b>"
        in page
    )
    objects["journeys/latest.json"] = json.dumps({**latest, "access_denied": "7; drop"}).encode()
    assert build([lead()], [], objects).data_quality.records_access_denied == 0  # only a count is believed


def test_a_models_romi_counts_only_the_revenue_of_paid_touches() -> None:
    """The paid rule in the attribution columns. Spend: 1 000 on Yandex Direct (paid_search / yandex). P1 clicked the
    Yandex ad and won 500; P2 came by a Google cpc link nobody paid for here (paid_search / google, no spend) and won
    5 000. Last click credits paid_search with 5 500, of which 500 through a paid source: ROMI (500 − 1 000) / 1 000
    = −50 %, not (5 500 − 1 000) / 1 000 = 450 %. Google's unpaid credit stays in the revenue."""
    ad_lead = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")  # the campaign id of SPEND
    free_lead = lead(UTM_SOURCE="google", UTM_MEDIUM="cpc")
    ad_deal = deal(ad_lead, won=True, amount="500", day="2026-11-10")
    free_deal = deal(free_lead, won=True, amount="5000", day="2026-11-11")
    touches = [
        touch("P1", "2026-11-02T09:00:00Z", "paid_search", kind="form", source="yandex", campaign="c"),
        touch("P2", "2026-11-03T09:00:00Z", "paid_search", kind="form", source="google"),
    ]
    entities = [
        entity("lead", ad_lead["ID"], "P1"),
        entity("lead", free_lead["ID"], "P2"),
        entity("deal", ad_deal["ID"], "P1", ad_lead["ID"]),
        entity("deal", free_deal["ID"], "P2", free_lead["ID"]),
    ]
    report = build([ad_lead, free_lead], [ad_deal, free_deal], export(touches, entities))
    for model in ("last_click", "first_click", "linear", "markov", "shapley"):
        (row,) = [row for row in report.attribution.models[model] if row.channel == "paid_search"]
        assert (row.revenue, row.paid_revenue, row.spend) == (Decimal("5500"), Decimal("500"), Decimal("1000")), model
        assert row.romi == Decimal("-50"), model
    table = {row.source: row for row in report.rows if row.level == "source" and row.channel == "paid_search"}
    assert table["yandex"].metrics.romi == Decimal("-50")  # the table agrees
    channel_line = next(line for line in render_csv(report).decode("utf-8-sig").splitlines() if "Контекстная" in line)
    assert ";Последний клик;2,0000;5500,00;-50,00;" in channel_line, channel_line  # roi.csv: ROMI (модель)


def test_touch_lines_without_some_fields_are_read_as_with_them_empty() -> None:
    """The export writes every field, and the touch loop picks them in one call; a line without source, campaign or
    kind (an older export, a hand-made one) is read field by field: the same touches, the same won moments."""
    full = [touch("p1", "2026-11-02T09:00:00Z", "paid_search", kind="form", source="yandex", campaign="c1"),
            touch("p1", "2026-11-03T09:00:00Z", "email"),
            touch("p1", "2026-11-04T10:00:00+03:00", "crm", kind="won", entity=("deal", 7))]  # fmt: skip
    partial = [dict(line) for line in full]
    del partial[1]["source"], partial[1]["campaign"]
    del partial[0]["campaign"]
    partial[0]["source"], partial[0]["campaign"] = "yandex", "c1"  # the same values, in another key order
    del partial[2]["channel"]
    for lines in (full, partial):
        journeys = read_journeys(export(lines, []))
        got = list(journeys.touches())
        assert [(t.person_key, t.at, t.channel, t.source, t.campaign) for t in got] == [
            ("p1", datetime(2026, 11, 2, 9, tzinfo=UTC), "paid_search", "yandex", "c1"),
            ("p1", datetime(2026, 11, 3, 9, tzinfo=UTC), "email", "", ""),
        ]
        assert journeys.won_at == {7: datetime(2026, 11, 4, 7, tzinfo=UTC)} and journeys.streamed
        assert all(type(t).__name__ == "TouchPoint" and t.at.tzinfo is not None for t in got)


def test_the_paid_split_leaves_each_channels_markov_and_shapley_credit_as_the_unsplit_model_gives_it() -> None:
    """P1: organic (11-02), the paid Yandex ad (11-03), an unpaid Google cpc link (11-04), won 100. P2: organic, won
    100. P3: the Yandex ad, no deal. By channel (O, S): Markov — P(conv) = 2/3·(1/2 + 1/2·1/2) + 1/3·1/2 = 2/3;
    removing O leaves 1/6 (effect 3/4), removing S leaves 1/3 (effect 1/2): O 3/5 = 120, S 2/5 = 80. Shapley —
    v(O) = 1, v(S) = 0, v(OS) = 2: O 1.5 = 150, S 0.5 = 50. Run on three labels (O, S paid, S unpaid) the models gave
    S 114.28 and 66.66: a channel's credit depended on which of its sources carry spend. The channel keeps the
    unsplit credit; its paid part is the split's share: Markov effects P 1/2, U 1/2 (half: 40), Shapley P 1/3,
    U 1/3 (half: 25)."""
    paid_lead = lead(UTM_SOURCE="yandex", UTM_MEDIUM="cpc", UTM_CAMPAIGN="1")
    free_lead = lead(UTM_SOURCE="google", UTM_MEDIUM="organic")
    paid_deal = deal(paid_lead, won=True, amount="100", day="2026-11-10")
    free_deal = deal(free_lead, won=True, amount="100", day="2026-11-11")
    touches = [
        touch("P1", "2026-11-02T09:00:00Z", "organic_search", source="google"),
        touch("P1", "2026-11-03T09:00:00Z", "paid_search", kind="form", source="yandex", campaign="c"),
        touch("P1", "2026-11-04T09:00:00Z", "paid_search", kind="form", source="google"),
        touch("P2", "2026-11-02T10:00:00Z", "organic_search", source="google", entity=("lead", 2)),
        touch("P3", "2026-11-05T09:00:00Z", "paid_search", kind="form", source="yandex", entity=("lead", 3)),
    ]
    entities = [
        entity("lead", paid_lead["ID"], "P1"),
        entity("lead", free_lead["ID"], "P2"),
        entity("deal", paid_deal["ID"], "P1", paid_lead["ID"]),
        entity("deal", free_deal["ID"], "P2", free_lead["ID"]),
    ]
    report = build([paid_lead, free_lead], [paid_deal, free_deal], export(touches, entities))
    got = {model: {row.channel: (row.revenue, row.paid_revenue) for row in rows}
           for model, rows in report.attribution.models.items()}  # fmt: skip
    assert got["markov"] == {"organic_search": (Decimal("120.00"), Decimal(0)),
                             "paid_search": (Decimal("80.00"), Decimal("40.00"))}  # fmt: skip
    assert got["shapley"] == {"organic_search": (Decimal("150.00"), Decimal(0)),
                              "paid_search": (Decimal("50.00"), Decimal("25.00"))}  # fmt: skip
    assert got["last_click"]["paid_search"] == (Decimal("100.00"), Decimal(0))  # P1's last touch: unpaid Google
    for model, rows in got.items():
        assert sum(revenue for revenue, _ in rows.values()) == Decimal(200), model
