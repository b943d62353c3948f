"""The one headless Chromium the browser tests use (the system's, driven by Playwright), and the rule for when they
skip: without Playwright or Chromium a developer's machine skips them, CI fails instead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

IN_CI = os.environ.get("CI") == "true"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WEB = Path(__file__).resolve().parents[1] / "web"


def skip_without_chromium() -> None:
    """Call at a test module's top: skips the module on a machine without Playwright or Chromium (never in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("the playwright package is missing: make venv", allow_module_level=True)
    if not CHROMIUM.exists() and not IN_CI:
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); CI installs it", allow_module_level=True)


@contextmanager
def chromium(*extra_args: str) -> Iterator[Browser]:
    """A headless Chromium, closed afterwards; ``extra_args`` follow the common ones."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"CI=true but there is no Chromium at {CHROMIUM}: the CI job must install it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*CHROMIUM_ARGS, *extra_args]
        )
        try:
            yield browser
        finally:
            browser.close()


class WebFolderHandler(SimpleHTTPRequestHandler):
    """`web/` as a site serves it: no caching, no request log; ``send_html`` answers with a page made on the fly."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, directory=str(WEB), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def send_html(self, html: str) -> None:
        data = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def open_page(browser: Browser, page_file: Path) -> tuple[Any, list[str], list[str]]:
    """``page_file`` in a 1440×1000 page: the page, its script errors and every address it requested, as they come."""
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    # A huge report page takes 20–30 s to load on a busy two-core CI machine: what is tested is its layout, not
    # Chromium's speed, so the load may take up to two minutes (Playwright's default of 30 s failed one CI run).
    page.goto(page_file.as_uri(), timeout=120_000)
    return page, errors, requests
