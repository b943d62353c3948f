"""The dynamics charts in a real, offline Chromium: both drawn beside the page's own five, no script errors."""

from __future__ import annotations

from pathlib import Path

from test_report_page import sample_report

from tests.chromium import chromium, open_page
from throughline.report.render import render_html


def test_the_dynamics_charts_draw_offline(tmp_path: Path) -> None:
    report = sample_report()
    page_file = tmp_path / "index.html"
    page_file.write_bytes(render_html(report))
    with chromium() as browser:
        page, errors, requests = open_page(browser, page_file)
        page.wait_for_function("window.throughlineDynamicsCharts && window.throughlineCharts")
        charts = page.evaluate(
            """() => window.throughlineDynamicsCharts.map(chart => {
                const canvas = chart.canvas;
                const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
                let painted = 0;
                for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
                return {id: canvas.id, type: chart.config.type, points: chart.data.labels.length,
                        datasets: chart.data.datasets.length, painted};
            })"""
        )
        others = page.evaluate("window.throughlineCharts.length")
    assert errors == [] and requests == [page_file.as_uri()]
    assert others == 5  # the page's own charts are untouched
    assert [(c["id"], c["type"]) for c in charts] == [("chart-dynamics", "bar"), ("chart-romi-weeks", "line")]
    dynamics, romi = charts
    assert dynamics["points"] == 30 and dynamics["datasets"] == 4  # November by day: spend, revenue, leads, won
    assert romi["points"] == 6 and romi["datasets"] == len(report.dynamics.romi_by_channel) >= 2
    for chart in charts:
        assert chart["painted"] > 2000, chart
