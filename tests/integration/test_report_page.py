"""index.html in a real, offline Chromium: every chart drawn (Chart.js objects exist, canvases not blank), no script
errors, no network; the screenshot is kept for a human to look at (``REPORT_SCREENSHOT=path`` to keep it there)."""

from __future__ import annotations

import gzip
import json
import os
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from tests.chromium import chromium, open_page, skip_without_chromium
from throughline.report.attribution import read_journeys
from throughline.report.build import ReportOptions, build_report
from throughline.report.channels import origin_from_tags
from throughline.report.funnel import StageBook
from throughline.report.models import Period, RoiReport
from throughline.report.rates import RateBook
from throughline.report.render import render_html

skip_without_chromium()

STATUSES = [
    {"ENTITY_ID": "STATUS", "STATUS_ID": status, "NAME": name, "SORT": str(sort), "SEMANTICS": semantics}
    for sort, (status, name, semantics) in enumerate(
        (
            ("NEW", "Не обработан", None),
            ("IN_PROCESS", "В работе", None),
            ("CONVERTED", "Качественный лид", "S"),
            ("JUNK", "Некачественный лид", "F"),
        )
    )
] + [
    {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": stage, "NAME": name, "SORT": str(sort), "SEMANTICS": semantics}
    for sort, (stage, name, semantics) in enumerate(
        (
            ("NEW", "Новая", None),
            ("PREPARATION", "Подготовка документов", None),
            ("EXECUTING", "В работе", None),
            ("WON", "Сделка успешна", "S"),
            ("LOSE", "Сделка провалена", "F"),
            ("APOLOGY", "Анализ причины провала", "F"),
        )
    )
]
# (utm_source, utm_medium, campaign, SOURCE_ID, leads, deal share, win share, average check)
TRAFFIC = (
    ("yandex", "cpc", "101", "", 320, 0.30, 0.45, 21000),
    ("yandex", "cpc", "102", "", 140, 0.22, 0.40, 18000),
    ("google", "cpc", "Бренд", "", 110, 0.28, 0.50, 24000),
    ("vk", "cpc", "Ретаргетинг", "", 150, 0.12, 0.35, 15000),
    ("telegram", "social", "", "", 40, 0.15, 0.4, 12000),
    ("yandex", "organic", "", "", 120, 0.25, 0.5, 19000),
    ("email", "newsletter", "ноябрь", "", 60, 0.2, 0.5, 9000),
    ("", "", "", "CALL", 50, 0.3, 0.5, 16000),
    ("", "", "", "", 12, 0.1, 0.5, 10000),
)
SPEND = (
    ("yandex_direct", "101", "Поиск — CRM", "210000"),
    ("yandex_direct", "102", "РСЯ — CRM", "95000"),
    ("google_ads", "77", "Бренд", "60000"),
    ("vk_ads", "55", "Ретаргетинг", "70000"),
    ("google_ads", "78", "КМС — тест", "15000"),
)


class Objects(dict):
    def get(self, key: str, default=None):
        return super().get(key, default)


ASSISTS = ("organic_search", "social", "email", "direct", "referral")  # touches before the one that brought the lead


def journey_export(leads: list[dict], deals: list[dict], rng: random.Random) -> Objects:
    """What export_journeys would write for these leads: each lead's own touch, often after an earlier one or two
    (search, social, e-mail, a direct visit), and a manager's call (sales-side, no credit); deals via their lead."""
    touches, entities = [], []
    for lead in leads:
        person = f"p{lead['ID']}"
        at = datetime.fromisoformat(lead["DATE_CREATE"])
        channel = origin_from_tags(lead["UTM_SOURCE"], lead["UTM_MEDIUM"]).channel
        own = [(at, channel, lead["UTM_SOURCE"])]
        for days in range(rng.choice((0, 0, 1, 2))):
            own.append((at.replace(hour=9) - timedelta(days=3 * days + rng.randrange(1, 4)), rng.choice(ASSISTS), ""))
        own.append((at + timedelta(hours=2), "crm", "phone"))
        for moment, touch_channel, source in own:
            touches.append({"person_key": person, "entity_type": "lead", "entity_id": int(lead["ID"]),
                            "at": moment.astimezone(UTC).isoformat(), "kind": "first_visit", "channel": touch_channel,
                            "source": source, "campaign": lead["UTM_CAMPAIGN"]})  # fmt: skip
        entities.append({"entity_type": "lead", "entity_id": int(lead["ID"]), "person_key": person, "lead_id": None})
    for deal in deals:
        entities.append({"entity_type": "deal", "entity_id": int(deal["ID"]), "person_key": f"p{deal['LEAD_ID']}",
                         "lead_id": int(deal["LEAD_ID"])})  # fmt: skip
    objects = Objects()
    folder = "journeys/snapshot=2026-12-01"
    for key, rows in ((f"{folder}/part-00000.json.gz", touches), (f"{folder}/entities.json.gz", entities)):
        objects[key] = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    objects["journeys/latest.json"] = json.dumps({"snapshot": "2026-12-01", "parts": [f"{folder}/part-00000.json.gz"]})
    return objects


def sample_report() -> RoiReport:
    rng = random.Random(7)
    leads, deals, spend = [], [], []
    next_id = iter(range(1, 100_000))
    for month, scale in (("2026-08", 0.5), ("2026-09", 0.7), ("2026-10", 0.8), ("2026-11", 1.0)):
        for source, medium, campaign, source_id, count, deal_share, win_share, check in TRAFFIC:
            for _ in range(int(count * scale)):
                lead_id = next(next_id)
                day = f"{month}-{rng.randrange(1, 29):02d}"
                status = rng.choice(("NEW", "IN_PROCESS", "CONVERTED", "CONVERTED", "JUNK"))
                leads.append(
                    {
                        "ID": str(lead_id),
                        "DATE_CREATE": f"{day}T11:00:00+03:00",
                        "STATUS_ID": status,
                        "UTM_SOURCE": source,
                        "UTM_MEDIUM": medium,
                        "UTM_CAMPAIGN": campaign,
                        "SOURCE_ID": source_id,
                        "PERSON_KEYS": [f"p{rng.randrange(2000)}"],
                    }
                )
                if rng.random() < deal_share:
                    won = rng.random() < win_share
                    stage = "WON" if won else rng.choice(("NEW", "PREPARATION", "EXECUTING", "LOSE", "APOLOGY"))
                    deals.append(
                        {
                            "ID": str(next(next_id)),
                            "LEAD_ID": str(lead_id),
                            "DATE_CREATE": f"{day}T15:00:00+03:00",
                            "STAGE_ID": stage,
                            "STAGE_SEMANTIC_ID": "S" if won else ("F" if stage in ("LOSE", "APOLOGY") else "P"),
                            "CLOSEDATE": f"{month}-{min(28, int(day[-2:]) + rng.randrange(1, 10)):02d}",
                            "OPPORTUNITY": str(check + rng.randrange(-3000, 3000)),
                            "CURRENCY_ID": "RUB",
                            "CONTACT_ID": str(lead_id),
                            "CATEGORY_ID": "0",
                        }
                    )
                    if won and month < "2026-11" and rng.random() < 0.3:  # a customer who came back
                        deals.append({**deals[-1], "ID": str(next(next_id)), "CLOSEDATE": "2026-11-20",
                                      "DATE_CREATE": "2026-11-18T15:00:00+03:00"})  # fmt: skip
        for platform, campaign_id, name, cost in SPEND:
            spend.append(
                {
                    "date": f"{month}-15",
                    "platform": platform,
                    "campaign_id": campaign_id,
                    "campaign_name": name,
                    "impressions": 180000,
                    "clicks": 4200,
                    "cost": Decimal(cost) * Decimal(str(scale)),
                    "currency": "RUB",
                    "include_vat": False,
                }
            )
    return build_report(
        period=Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30)),
        previous=Period(date_from=date(2026, 10, 1), date_to=date(2026, 10, 31)),
        leads=leads,
        deals=deals,
        spend=spend,
        rates=RateBook("RUB"),
        stages=StageBook(STATUSES),
        options=ReportOptions(),
        journeys=read_journeys(journey_export(leads, deals, rng)),
        now=lambda: datetime(2026, 12, 1, 5, 0),
    )


def test_the_page_draws_every_chart_offline(tmp_path: Path) -> None:
    page_file = tmp_path / "index.html"
    page_file.write_bytes(render_html(sample_report()))
    screenshot = Path(os.environ.get("REPORT_SCREENSHOT") or tmp_path / "report.png")
    with chromium() as browser:
        page, errors, requests = open_page(browser, page_file)
        page.wait_for_function("window.throughlineCharts && window.throughlineCharts.length === 5")
        drawn = page.evaluate(
            """() => [...document.querySelectorAll('canvas')].map(canvas => {
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
                return {id: canvas.id, width: canvas.width, painted};
            })"""
        )
        kinds = page.evaluate("window.throughlineCharts.map(chart => chart.config.type)")
        models = page.evaluate(
            "window.throughlineCharts.find(c => c.canvas.id === 'chart-attribution').data.datasets.length"
        )
        cohort_cells = page.evaluate(
            """() => [...document.querySelectorAll('table.cohorts tbody td[style]')].map(
                cell => getComputedStyle(cell).backgroundColor)"""
        )
        differences = page.locator("table.diff tbody tr").count()
        page.screenshot(path=str(screenshot), full_page=True)
    assert errors == []
    assert requests == [page_file.as_uri()]  # nothing fetched: Chart.js and the data are in the page
    assert kinds == ["bar", "bar", "bar", "bar", "doughnut"]
    assert {item["id"] for item in drawn} == {"chart-romi", "chart-money", "chart-funnel", "chart-attribution",
                                              "chart-quality", "chart-dynamics", "chart-romi-weeks"}  # fmt: skip
    assert models == 8 and differences >= 6  # every model side by side; a row per channel against last click
    assert len(cohort_cells) >= 4 * 6 and len(set(cohort_cells)) > 5  # a heat map: shades differ with the value
    for item in drawn:
        assert item["width"] > 100 and item["painted"] > 2000, item  # bars, axes and labels, not a blank canvas
    assert screenshot.stat().st_size > 50_000


def _open(page_file: Path, screenshot: Path) -> tuple[list[str], int, dict]:
    """Open the page offline: script errors, how many charts were made, and the page's size and overflow."""
    with chromium() as browser:
        page, errors, _ = open_page(browser, page_file)
        page.wait_for_load_state("load")
        charts = page.evaluate("(window.throughlineCharts || []).length")
        layout = page.evaluate(
            """() => ({width: document.documentElement.scrollWidth,
                      text: document.body.innerText,
                      names: Math.max(0, ...[...document.querySelectorAll('td.name')].map(
                          cell => cell.getBoundingClientRect().width)),
                      empty: [...document.querySelectorAll('.chart .empty')].map(node => node.innerText)})"""
        )
        page.screenshot(path=str(screenshot), full_page=True)
    return errors, charts, layout


def test_names_from_the_portal_cannot_stop_the_charts(tmp_path: Path) -> None:
    statuses = [{**item, "NAME": "<!--<script>"} if item["STATUS_ID"] == "PREPARATION" else item for item in STATUSES]
    report = sample_report()
    hostile = build_report(
        period=report.period,
        previous=report.previous_period,
        leads=[
            dict(
                ID="1",
                DATE_CREATE="2026-11-02T10:00:00+03:00",
                UTM_SOURCE="yandex",
                UTM_MEDIUM="cpc",
                UTM_CAMPAIGN="</script><script>window.pwned=1</script>",
            )
        ],
        deals=[
            dict(
                ID="2",
                LEAD_ID="1",
                DATE_CREATE="2026-11-03T10:00:00+03:00",
                STAGE_ID="PREPARATION",
                STAGE_SEMANTIC_ID="P",
                CATEGORY_ID="0",
            )
        ],
        spend=[],
        rates=RateBook("RUB"),
        stages=StageBook(statuses),
        now=lambda: datetime(2026, 12, 1, 6, 0),
    )
    page_file = tmp_path / "index.html"
    page_file.write_bytes(render_html(hostile))
    errors, charts, layout = _open(page_file, tmp_path / "hostile.png")
    assert errors == [] and charts == 2  # the funnel and data quality (no money: those two panels say so)
    assert layout["empty"] == ["Нет данных за период"] * 3  # and weekly ROMI (the dynamics draw the one lead)
    assert "</script><script>window.pwned=1</script>" in layout["text"]  # shown as text, not run


def test_an_empty_report_says_so_and_a_huge_one_stays_in_the_window(tmp_path: Path) -> None:
    empty = build_report(
        period=Period(date_from=date(2026, 11, 1), date_to=date(2026, 11, 30)),
        previous=Period(date_from=date(2026, 10, 2), date_to=date(2026, 10, 31)),
        leads=[],
        deals=[],
        spend=[],
        rates=RateBook("RUB"),
        stages=StageBook([]),
        now=lambda: datetime(2026, 12, 1, 6, 0),
    )
    page_file = tmp_path / "empty.html"
    page_file.write_bytes(render_html(empty))
    errors, _, layout = _open(page_file, tmp_path / "empty.png")
    assert errors == []
    assert len(layout["empty"]) == 6, layout["empty"]  # each chart panel says there is nothing to draw

    long_name = "Кампания_" + "x" * 3000  # no spaces to break at
    leads = [{"ID": str(index), "DATE_CREATE": "2026-11-02T10:00:00+03:00", "UTM_SOURCE": "yandex",
              "UTM_MEDIUM": "cpc", "UTM_CAMPAIGN": f"{long_name}{index}"} for index in range(1, 3000)]  # fmt: skip
    huge = build_report(
        period=empty.period,
        previous=empty.previous_period,
        leads=leads,
        deals=[],
        spend=[],
        rates=RateBook("RUB"),
        stages=StageBook(STATUSES),
        now=lambda: datetime(2026, 12, 1, 6, 0),
    )
    page_file = tmp_path / "huge.html"
    page_file.write_bytes(render_html(huge))
    errors, charts, layout = _open(page_file, tmp_path / "huge.png")
    assert errors == [] and charts == 2 and len(layout["empty"]) == 3  # leads by day drawn, weekly ROMI empty
    assert layout["width"] <= 1440 and layout["names"] <= 500  # a long name wraps in its cell; numbers stay in view
