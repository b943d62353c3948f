"""Analytics client ids in a real browser: the demo shop runs a Metrica-like counter stub (``ym(ID, 'getClientID',
cb)`` answering later, as the real counter does once it is up), Google Analytics' ``_ga`` cookie and a VK Ads click
(``rb_clickid``); the lead in the Bitrix24 sandbox carries all three."""

from __future__ import annotations

from local.stack import LocalStack
from tests.e2e.test_browser import (  # noqa: F401 -- fixtures
    Site,
    api,
    browser,
    fill_order,
    new_page,
    site,
    submit,
    the_lead,
)

# The counter answers asynchronously; `_ym_uid` holds another value, so the lead shows which one was sent.
METRICA_STUB = """
window.__ym = [];
window.ym = function (counter, method, callback) {
  window.__ym.push([counter, method]);
  if (method === 'getClientID') setTimeout(function () { callback('1733000000123456789'); }, 20);
};
document.cookie = '_ym_uid=1600000000000000000; path=/';
document.cookie = '_ga=GA1.1.555000111.1733000000; path=/';
"""


def test_the_metrica_client_id_from_the_counter_the_ga_client_id_and_rb_clickid_land_on_the_lead(
    site: Site,  # noqa: F811
    api: LocalStack,  # noqa: F811
    new_page,  # noqa: F811
):
    page = new_page(init_scripts=(METRICA_STUB,))
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms&utm_source=vk&utm_medium=cpc&rb_clickid=vk-777")
    page.wait_for_function("window.__ym.length > 0")  # asked as the page became ready, answered a moment later
    fill_order(page)
    submit(page)
    page.wait_for_selector("[data-throughline-success]:not([hidden])")
    assert ["96000001", "getClientID"] in page.evaluate("window.__ym")  # the demo shop's data-metrica-counter

    lead = the_lead(api)
    assert lead["UF_CRM_TL_YM_CLIENT_ID"] == "1733000000123456789"  # the counter's answer, not the cookie
    assert lead["UF_CRM_TL_GA_CLIENT_ID"] == "555000111.1733000000"
    assert lead["UF_CRM_TL_VK_CLICK_ID"] == "vk-777"
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"]) == ("vk", "cpc")


def test_without_a_counter_the_metrica_cookie_is_sent(site: Site, api: LocalStack, new_page):  # noqa: F811
    page = new_page(init_scripts=("document.cookie = '_ym_uid=1600000000000000000; path=/';",))
    page.goto(f"{site.origin}/demo/?endpoint={api.url}/v1/forms")
    fill_order(page)
    submit(page)
    page.wait_for_selector("[data-throughline-success]:not([hidden])")
    assert the_lead(api)["UF_CRM_TL_YM_CLIENT_ID"] == "1600000000000000000"
