"""The capture snippet (`web/throughline.js`) in a real browser, on the demo shop, against the local stack.

The "customer site" is `web/` served from its own origin; the stack allows that origin (CORS and `_next`), as a
deployment's `ALLOWED_ORIGINS` would. Chromium is the system one (`/usr/bin/chromium`); nothing is downloaded.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.stack import LocalStack
from tests.chromium import WebFolderHandler, chromium, skip_without_chromium
from tests.e2e.serving import free_port

skip_without_chromium()
from playwright.sync_api import Browser, Page, expect  # noqa: E402 -- after the skip

expect.set_options(timeout=15_000)  # the first post wakes the local functions; a shared 2-core machine is slow
# The demo's plain-HTML addresses (what the page posts to without JavaScript). Like a customer writing their own
# endpoint into their page, the site fixture points them at this test's stack and origin.
DEMO_API = "http://127.0.0.1:3000"
DEMO_SITE = "http://127.0.0.1:8000"
PAID = "utm_source=yandex&utm_medium=cpc&utm_campaign=zima&yclid=123"
DATE = r"\d\d\.\d\d\.\d{4}"
# Records the snippet's events in the page, from before its scripts run.
RECORD_EVENTS = """
window.__events = [];
for (const name of ['sent', 'invalid', 'queued', 'failed']) {
  document.addEventListener('throughline:' + name, (event) => window.__events.push({type: name, detail: event.detail}));
}
"""
# Private mode with storage blocked: every access to localStorage throws.
BLOCK_STORAGE = """
Object.defineProperty(window, 'localStorage', {get() { throw new DOMException('blocked', 'SecurityError'); }});
"""
# Cookies blocked too: writes are dropped, reads find nothing.
BLOCK_COOKIES = """
Object.defineProperty(Document.prototype, 'cookie', {get() { return ''; }, set(value) {}});
"""


class Site(ThreadingHTTPServer):
    """`web/` served as the customer's site."""

    daemon_threads = True
    api_url = DEMO_API

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class SiteHandler(WebFolderHandler):
    server: Site

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        target = Path(self.translate_path(path + ("index.html" if path.endswith("/") else "")))
        if target.suffix != ".html" or not target.is_file():
            super().do_GET()
            return
        html = target.read_text(encoding="utf-8")
        self.send_html(html.replace(DEMO_API, self.server.api_url).replace(DEMO_SITE, self.server.origin))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture
def site() -> Iterator[Site]:
    server = Site(("127.0.0.1", 0), SiteHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(make_stack: Callable[..., LocalStack], site: Site) -> LocalStack:
    stack = make_stack(parameters={"AllowedOrigins": site.origin})
    site.api_url = stack.url
    return stack


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """A fresh browser profile (its own localStorage) per call, closed after the test."""
    contexts = []

    def open_page(*, javascript: bool = True, init_scripts: tuple[str, ...] = ()) -> Page:
        context = browser.new_context(java_script_enabled=javascript, locale="ru-RU")
        contexts.append(context)
        for script in (RECORD_EVENTS, *init_scripts):
            context.add_init_script(script)
        page = context.new_page()
        page.set_default_timeout(15_000)
        return page

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


def fill_order(page: Page, *, phone: str = "8 916 123-45-67") -> None:
    page.fill("#f-name", "Анна")
    page.fill("#f-phone", phone)
    page.fill("#f-comment", "Тёплый пол в ванную, 6 м²")


def submit(page: Page) -> None:
    page.click("#order button[type=submit]")


def events(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.__events")


def current_touch(page: Page) -> dict[str, Any]:
    return page.evaluate("Throughline.touch()")["current"]


def end_session(page: Page) -> None:
    """What 30 minutes without a page view do (to the cookie and to localStorage)."""
    page.evaluate(
        """() => {
        document.cookie = '_tl_session=; path=/; max-age=0';
        localStorage.setItem('throughline:session', JSON.stringify({expires: Date.now() - 1}));
    }"""
    )


def queued(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("JSON.parse(localStorage.getItem('throughline:queue')) || []")


def the_lead(stack: LocalStack) -> dict[str, Any]:
    assert stack.wait_until_idle(timeout=30)
    [lead] = stack.sandbox.entities("lead")
    return lead


def test_organic_first_visit_then_a_paid_visit_make_a_lead_with_the_paid_tags_and_both_touches(
    site: Site, api: LocalStack, page: Page
):
    endpoint = f"{api.url}/v1/forms"
    page.goto(f"{site.origin}/demo/?endpoint={endpoint}", referer="https://yandex.ru/")
    # Later the visitor comes back through an ad, looks at the catalogue, then fills the form on the main page.
    page.goto(f"{site.origin}/demo/?{PAID}")
    page.click("nav >> text=Каталог")
    page.click("text=Оставить заявку")
    expect(page).to_have_url(f"{site.origin}/demo/index.html#order")

    honeypot = page.locator("#order input[name=_gotcha]")
    for attribute, value in {"tabindex": "-1", "autocomplete": "off", "aria-hidden": "true"}.items():
        expect(honeypot).to_have_attribute(attribute, value)
    expect(honeypot).not_to_be_in_viewport()

    fill_order(page)
    with page.expect_request(lambda request: request.method == "POST") as posted:
        page.dblclick("#order button[type=submit]")  # an impatient double click still makes one post
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    expect(page.locator("#order")).to_have_class(re.compile(r"\bthroughline-sent\b"))
    expect(page.locator("#f-name")).to_have_value("")

    request = posted.value
    assert request.url == f"{endpoint}/demo-lead/submissions"
    assert request.headers["content-type"] == "text/plain;charset=UTF-8"  # a simple request: no preflight
    sent = json.loads(request.post_data or "{}")
    assert {key: sent.get(key) for key in ("utm_source", "utm_medium", "utm_campaign", "yclid")} == {
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "utm_campaign": "zima",
        "yclid": "123",
    }
    assert sent["landing_url"] == f"{site.origin}/demo/?{PAID}"
    assert "referrer" not in sent  # the paid link was opened directly; the site's own pages are not referrers
    assert sent["first_referrer"] == "https://yandex.ru/"
    assert sent["first_landing_url"] == f"{site.origin}/demo/"  # origin, path and tags only: no other parameters
    assert "first_utm_source" not in sent and "_next" not in sent
    assert sent["_gotcha"] == ""
    [event] = events(page)
    assert event["type"] == "sent" and re.fullmatch(r"[0-9a-f-]{36}", event["detail"]["submission_id"])

    lead = the_lead(api)
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == ("yandex", "cpc", "zima")
    assert lead["PHONE"][0]["VALUE"] == "+79161234567"
    first, last = lead["UF_CRM_CUSTOMER_JOURNEY"].splitlines()
    assert re.fullmatch(rf"Первичный контакт: {DATE} — Яндекс — Органический поиск — .+", first)
    assert re.fullmatch(rf"{DATE} — Яндекс — CPC — «zima»", last)
    assert api.invocations.get("capture_form") == 1  # one post, no preflight, no retry


def test_a_direct_visit_or_an_internal_referrer_never_replaces_the_current_touch(site: Site, page: Page):
    page.goto(f"{site.origin}/demo/catalog.html?utm_source=vk&utm_medium=cpc&utm_campaign=spring")
    paid = page.evaluate("Throughline.touch()")
    assert paid["current"]["utm_source"] == "vk" and paid["first"] == paid["current"]
    stored = page.evaluate("({...localStorage})")
    assert page.evaluate("document.cookie.split('; ').map((c) => c.split('=')[0]).sort()") == [
        "_tl_current",
        "_tl_first",
        "_tl_session",
    ]
    session_left = json.loads(stored["throughline:session"])["expires"] - page.evaluate("Date.now()")
    first_left = json.loads(stored["throughline:first"])["expires"] - page.evaluate("Date.now()")
    assert 29 * 60_000 < session_left <= 30 * 60_000
    assert 179 * 86_400_000 < first_left <= 180 * 86_400_000

    page.goto(f"{site.origin}/demo/")  # typed in or from a bookmark
    assert current_touch(page) == paid["current"]
    end_session(page)
    page.goto(f"{site.origin}/demo/thanks.html", referer=f"{site.origin}/demo/catalog.html")
    assert current_touch(page) == paid["current"]  # the site's own page is no referrer, even after a session
    page.goto(f"{site.origin}/demo/", referer="https://dzen.ru/")
    assert current_touch(page) == paid["current"]  # a referrer inside the session does not win

    end_session(page)
    page.goto(f"{site.origin}/demo/catalog.html", referer="https://www.google.com/")
    touch = page.evaluate("Throughline.touch()")
    assert touch["current"]["referrer"] == "https://www.google.com/"
    assert "utm_source" not in touch["current"]
    assert touch["first"] == paid["first"]  # the first touch is never overwritten
    fields = page.evaluate("Throughline.fields()")
    assert fields["first_utm_source"] == "vk" and fields["first_utm_campaign"] == "spring"
    assert fields["referrer"] == "https://www.google.com/" and "utm_source" not in fields


def test_a_refused_phone_is_marked_on_its_input_and_nothing_reaches_bitrix24(site: Site, api: LocalStack, page: Page):
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms&{PAID}")
    fill_order(page, phone="+7 900 12")
    submit(page)

    phone = page.locator("#f-phone")
    expect(phone).to_have_attribute("aria-invalid", "true")
    message = phone.get_attribute("data-throughline-error")
    assert message and "phone" in message
    expect(page.locator("[data-throughline-errors]")).to_have_text(f"Телефон: {message}")
    assert page.locator("#f-name").get_attribute("aria-invalid") is None
    expect(page.locator("[data-throughline-success]")).to_be_hidden()
    assert events(page) == [
        {
            "type": "invalid",
            "detail": {
                "form_id": "demo-lead",
                "status": 422,
                "error": "some fields are invalid",
                "fields": {"phone": message},
            },
        }
    ]
    assert api.wait_until_idle(timeout=30)
    assert api.sandbox.entities("lead") == []

    # Typing clears the mark; the corrected form goes through.
    page.fill("#f-phone", "+7 916 765-43-21")
    expect(phone).not_to_have_attribute("aria-invalid", "true")
    submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    expect(page.locator("[data-throughline-errors]")).to_be_hidden()
    assert the_lead(api)["PHONE"][0]["VALUE"] == "+79167654321"


def test_a_form_sent_while_the_api_is_down_is_kept_and_resent_on_the_next_page_load(
    site: Site, make_stack: Callable[..., LocalStack], page: Page
):
    port = free_port()  # nothing listens here yet: connections are refused, as when the API is unreachable
    page.goto(f"{site.origin}/demo/?endpoint=http://127.0.0.1:{port}/v1/forms&{PAID}")
    fill_order(page)
    submit(page)

    form = page.locator("#order")
    expect(form).to_have_class(re.compile(r"\bthroughline-queued\b"), timeout=20_000)  # after 3 attempts
    expect(page.locator("[data-throughline-queued]")).to_be_visible()
    expect(page.locator("[data-throughline-success]")).to_be_hidden()
    expect(page.locator("#order button[type=submit]")).to_be_enabled()
    assert [event["type"] for event in events(page)] == ["queued"]
    [kept] = queued(page)
    assert kept["url"] == f"http://127.0.0.1:{port}/v1/forms/demo-lead/submissions"
    assert kept["fields"]["phone"] == "8 916 123-45-67" and kept["fields"]["utm_campaign"] == "zima"

    stack = make_stack(port=port, parameters={"AllowedOrigins": site.origin})  # the API is back
    page.reload()
    page.wait_for_function("window.__events.some((event) => event.type === 'sent')")
    assert queued(page) == []
    [resent] = events(page)
    assert resent["detail"]["resent"] is True and resent["detail"]["form_id"] == "demo-lead"
    lead = the_lead(stack)
    assert lead["PHONE"][0]["VALUE"] == "+79161234567"
    assert (lead["UTM_SOURCE"], lead["UTM_CAMPAIGN"]) == ("yandex", "zima")

    page.reload()  # nothing left to send
    page.wait_for_load_state("networkidle")
    assert stack.wait_until_idle(timeout=30)
    assert len(stack.sandbox.entities("lead")) == 1
    assert stack.invocations.get("capture_form") == 1


def test_without_javascript_the_plain_form_posts_and_redirects_to_next(
    site: Site, api: LocalStack, new_page: Callable[..., Page]
):
    page = new_page(javascript=False)
    page.goto(f"{site.origin}/demo/")
    fill_order(page)
    with page.expect_navigation():
        submit(page)
    expect(page).to_have_url(f"{site.origin}/demo/thanks.html")
    expect(page.locator("h1")).to_have_text("Спасибо! Заявка принята")
    assert the_lead(api)["PHONE"][0]["VALUE"] == "+79161234567"


def test_with_local_storage_blocked_the_touches_live_in_cookies(
    site: Site, api: LocalStack, new_page: Callable[..., Page]
):
    page = new_page(init_scripts=(BLOCK_STORAGE,))
    page.goto(f"{site.origin}/demo/", referer="https://yandex.ru/")
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms&{PAID}")
    fill_order(page)
    with page.expect_request(lambda request: request.method == "POST") as posted:
        submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    sent = json.loads(posted.value.post_data or "{}")
    assert sent["utm_campaign"] == "zima"
    assert sent["first_referrer"] == "https://yandex.ru/"  # the first touch survived in a cookie
    lead = the_lead(api)
    assert lead["UTM_CAMPAIGN"] == "zima"
    first, last = lead["UF_CRM_CUSTOMER_JOURNEY"].splitlines()
    assert re.fullmatch(rf"Первичный контакт: {DATE} — Яндекс — Органический поиск — .+", first)
    assert re.fullmatch(rf"{DATE} — Яндекс — CPC — «zima»", last)


def test_with_cookies_and_storage_blocked_the_form_still_sends_what_the_page_knows(
    site: Site, new_page: Callable[..., Page]
):
    page = new_page(init_scripts=(BLOCK_STORAGE, BLOCK_COOKIES))
    page.goto(f"{site.origin}/demo/", referer="https://yandex.ru/")
    page.goto(f"{site.origin}/demo/?{PAID}")
    fields = page.evaluate("Throughline.fields()")
    assert fields["utm_campaign"] == "zima"
    assert not [key for key in fields if key.startswith("first_")]  # nothing remembered, so no first touch is claimed


def test_an_odd_tracking_field_does_not_cost_the_lead(site: Site, api: LocalStack, page: Page):
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms&{PAID}")
    # A remembered referrer that is no web address (a page saved to disk, kept by an older snippet version).
    page.evaluate(
        """() => {
        const stored = JSON.parse(localStorage.getItem('throughline:current'));
        stored.touch.referrer = 'file:///home/anna/saved-page.html';
        localStorage.setItem('throughline:current', JSON.stringify(stored));
        document.cookie = '_tl_current=' + encodeURIComponent(JSON.stringify(stored)) + '; path=/';
    }"""
    )
    fill_order(page)
    submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    assert page.locator("#order [aria-invalid]").count() == 0
    lead = the_lead(api)
    assert lead["UTM_CAMPAIGN"] == "zima"
    assert api.invocations.get("capture_form") == 1  # accepted at once: the odd referrer is not a reason to refuse
    assert "referrer: file:///home/anna/saved-page.html" in lead["COMMENTS"]  # kept, out of attribution


def test_a_first_visit_through_an_auto_tagged_ad_is_a_paid_first_touch(site: Site, api: LocalStack, page: Page):
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms&yclid=777", referer="https://yandex.ru/")
    end_session(page)
    page.goto(f"{site.origin}/demo/", referer="https://vk.com/")
    fill_order(page)
    submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    first = the_lead(api)["UF_CRM_CUSTOMER_JOURNEY"].splitlines()[0]
    assert re.fullmatch(rf"Первичный контакт: {DATE} — Яндекс — CPC — .+", first)


def test_the_captcha_widgets_token_inside_the_form_is_posted_and_verified(
    site: Site, make_stack: Callable[..., LocalStack], page: Page
):
    stack = make_stack(parameters={"AllowedOrigins": site.origin}, captcha="smartcaptcha")
    page.goto(f"{site.origin}/demo/?endpoint={stack.url}/v1/forms&{PAID}")
    token = stack.captcha_sandbox.issue(urlsplit(site.origin).hostname)
    # What SmartCaptcha's widget leaves in the form once the visitor passed: a hidden smart-token field.
    page.evaluate(
        """(token) => document.querySelector('#order').insertAdjacentHTML('beforeend',
        `<div class="smart-captcha"><input type="hidden" name="smart-token" value="${token}"></div>`)""",
        token,
    )
    fill_order(page)
    submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    lead = the_lead(stack)
    assert lead["PHONE"][0]["VALUE"] == "+79161234567" and token not in json.dumps(lead, ensure_ascii=False)
    assert stack.captcha_sandbox.verifications == 1


def test_a_post_held_by_a_flood_limit_is_kept_for_a_later_page_not_retried_now(
    site: Site, make_stack: Callable[..., LocalStack], page: Page
):
    stack = make_stack(parameters={"AllowedOrigins": site.origin, "RateLimitPerContact": "1"})
    page.goto(f"{site.origin}/demo/?endpoint={stack.url}/v1/forms&{PAID}")
    fill_order(page)
    submit(page)
    expect(page.locator("[data-throughline-success]")).to_be_visible()
    page.reload()  # the same visitor sends another form
    fill_order(page)
    page.fill("#f-comment", "И ещё вопрос")
    submit(page)
    # 429 with Retry-After of the window's rest (up to an hour): kept in the browser at once, one post only.
    expect(page.locator("#order")).to_have_class(re.compile(r"\bthroughline-queued\b"), timeout=5_000)
    assert [event["type"] for event in events(page)] == ["queued"]
    assert len(queued(page)) == 1
    assert stack.invocations.get("capture_form") == 2
