"""Hostile stories against the capture snippet (a review of issue 10): odd hosts, clocks, consent, odd cookies.

The set-up of test_browser_stories (its fixtures are imported): fake hostnames mapped to loopback, real link clicks,
a fixed fake clock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from tests.e2e import test_browser_stories as stories
from tests.e2e.test_browser_stories import Visitor, Web, shop
from throughline.sources import DIRECT, SOCIAL

if TYPE_CHECKING:
    from playwright.sync_api import Browser

browser, web, visitor = stories.browser, stories.web, stories.visitor  # the stories' fixtures

VK_ADS = "utm_source=vk&utm_medium=cpc&utm_campaign=spring"


def test_two_shops_on_a_site_builders_shared_domain_share_nothing(visitor: Visitor, web: Web):
    # nethouse.ru (like tilda.ws) hosts many owners' shops and is missing from the public suffix list, so browsers
    # take a cookie on it: shop A's paid click must not become shop B's source.
    visitor.arrive(shop(web, "shop-a.nethouse.ru", query=VK_ADS), via="vk.com")
    assert {cookie["domain"] for cookie in visitor.context.cookies()} == {".shop-a.nethouse.ru"}
    visitor.later(days=1)
    visitor.type_in(shop(web, "shop-b.nethouse.ru"))
    assert visitor.sources(visitor.send_form()) == ((DIRECT, "(direct)"), (DIRECT, "(direct)"))


def test_consent_withdrawn_on_a_later_page_forgets_everything(visitor: Visitor, web: Web):
    web.script_attributes = "data-require-consent"
    visitor.arrive(shop(web, "www.shop.ru", query=VK_ADS), via="vk.com")
    visitor.page.evaluate("Throughline.consent(true)")
    assert {"_tl_first", "_tl_current"} <= {cookie["name"] for cookie in visitor.context.cookies()}
    visitor.later(days=2)
    visitor.type_in(shop(web, "www.shop.ru", "/demo/catalog.html"))
    visitor.page.evaluate("Throughline.consent(false)")  # the banner's settings, before any consent(true) here
    assert [cookie["name"] for cookie in visitor.context.cookies() if cookie["name"].startswith("_tl_")] == []
    assert visitor.page.evaluate("Object.keys(localStorage).filter((key) => key.startsWith('throughline:'))") == []


def test_a_clock_put_back_does_not_stretch_the_session(visitor: Visitor, web: Web):
    visitor.later(days=1)  # the computer's clock is a day fast
    visitor.arrive(shop(web, query="utm_source=yandex&utm_medium=cpc&yclid=1"), via="yandex.ru")
    visitor.later(days=-1, minutes=45)  # it is put right; 45 minutes later the visitor comes from a VK post
    visitor.arrive(shop(web), via="vk.com")
    assert visitor.page.evaluate("Throughline.touch().current.referrer") == web.url("vk.com", "/")
    assert visitor.sources(visitor.send_form())[0] == (SOCIAL, "vk")


def test_a_malformed_analytics_cookie_does_not_break_the_form(visitor: Visitor, web: Web):
    visitor.context.add_cookies([{"name": "_ga", "value": "GA1.1.%E0%A4%A", "url": web.url("shop.ru", "/")}])
    visitor.arrive(shop(web, query=VK_ADS), via="vk.com")
    fields = visitor.page.evaluate("Throughline.fields()")
    assert fields.get("utm_source") == "vk" and "ga_client_id" not in fields
    assert visitor.sources(visitor.send_form())[0] == (SOCIAL, "vk")


def test_the_sites_ignore_list_is_read_as_host_names(visitor: Visitor, web: Web):
    # Written by hand into the tag: upper case, a leading dot, a trailing comma.
    web.script_attributes = 'data-ignore-referrers="Pay.Partner-Bank.example, .crm.example,"'
    visitor.arrive(shop(web, query=VK_ADS), via="vk.com")
    visitor.later(minutes=45)
    visitor.arrive(shop(web), via="pay.partner-bank.example")
    visitor.later(minutes=45)
    visitor.arrive(shop(web), via="my.crm.example")
    assert visitor.sources(visitor.send_form())[0] == (SOCIAL, "vk")


def test_a_reloaded_tab_does_not_bring_its_old_ad_back(browser: Browser, web: Web):
    # No fake clock here: Playwright's clock replaces `performance`, and with it the navigation type. None is needed:
    # an organic search click takes over at any time.
    context = browser.new_context()
    try:
        old_tab, new_tab = context.new_page(), context.new_page()
        old_tab.goto(shop(web, query="utm_source=yandex&utm_medium=cpc&utm_campaign=zima&yclid=123"))
        # The ad visit is recorded before the organic one starts (on a loaded machine the snippet stamped it after the
        # other tab's, and the ad was then rightly the latest touch).
        old_tab.wait_for_function("() => (Throughline.touch().current || {}).utm_source === 'yandex'")
        new_tab.goto(web.url("www.google.com", "/link?to=" + quote(shop(web), safe="")))
        with new_tab.expect_navigation(url=lambda address: "/link?" not in address):
            new_tab.click("#go")  # found the shop again through organic search
        current = "Throughline.touch().current"
        assert new_tab.evaluate(current + ".referrer") == web.url("www.google.com", "/")
        # The organic visit has reached the old tab's view of the cookie and storage before it is restored (under five
        # test workers a reload 0.3 s after the other tab's write once found neither and took its own page again).
        google = web.url("www.google.com", "/")
        old_tab.wait_for_function(f"() => (Throughline.touch().current || {{}}).referrer === {google!r}")
        old_tab.reload()  # the phone's browser restores the tab it had put away, or the visitor presses F5
        assert old_tab.evaluate("performance.navigation.type") == 1
        assert old_tab.evaluate(current) == new_tab.evaluate(current)  # still the organic visit
        old_tab.go_back()  # back and forward: no new arrival either
        old_tab.go_forward()
        assert old_tab.evaluate(current + ".referrer") == web.url("www.google.com", "/")
    finally:
        context.close()


def test_the_form_posts_text_plain_so_there_is_no_preflight(visitor: Visitor, web: Web):
    visitor.type_in(shop(web, query=VK_ADS))
    with visitor.page.expect_request(lambda request: request.method == "POST") as posted:
        visitor.page.fill("#f-name", "Анна")
        visitor.page.fill("#f-phone", "8 916 123-45-67")
        visitor.page.click("#order button[type=submit]")
    assert posted.value.headers["content-type"] == "text/plain;charset=UTF-8"


def test_the_cookie_domain_is_read_case_blind(visitor: Visitor, web: Web):
    web.script_attributes = 'data-cookie-domain="Shop.RU"'  # typed by hand into the tag
    visitor.arrive(shop(web, query=VK_ADS), via="vk.com")
    visitor.later(minutes=1)
    visitor.follow(shop(web, "blog.shop.ru", "/demo/catalog.html"))
    visitor.later(minutes=50)  # reading the blog
    visitor.follow(shop(web))  # back to the shop: navigation inside the site, not a referral from the blog
    assert visitor.sources(visitor.send_form()) == ((SOCIAL, "vk"), (SOCIAL, "vk"))
