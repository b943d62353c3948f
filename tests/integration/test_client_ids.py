"""Analytics client ids (Yandex Metrica, Google Analytics) and VK Ads' rb_clickid: from the form to the lead's user
fields that bitrix-setup creates, and to the form touch in the journey store."""

from __future__ import annotations

import requests

from local.bitrix24_sandbox import Sandbox
from throughline.adapters.journey_store import JourneyStore
from throughline.bitrix24 import Bitrix24Client
from throughline.config import get_settings
from throughline.setup import FieldStatus, ensure_client_id_fields

FIELDS = ("UF_CRM_TL_YM_CLIENT_ID", "UF_CRM_TL_GA_CLIENT_ID", "UF_CRM_TL_VK_CLICK_ID")


def test_setup_creates_a_string_field_per_id_on_leads_and_deals_once(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    first = ensure_client_id_fields(client)
    assert first == [FieldStatus(entity, name, True, "string") for name in FIELDS for entity in ("lead", "deal")]
    lead = client.call("crm.lead.userfield.list", {"filter": {"FIELD_NAME": FIELDS[0], "LANG": "ru"}}).result
    assert lead[0]["EDIT_FORM_LABEL"] == "ClientID Яндекс Метрики"
    assert [status.created for status in ensure_client_id_fields(client)] == [False] * 6


def test_client_ids_land_on_the_lead_and_in_the_journey_store(make_stack) -> None:
    stack = make_stack()
    form = {
        "name": "Вера",
        "phone": "+7 916 700-00-01",
        "landing_url": "https://shop.example.ru/?utm_source=vk&utm_medium=cpc&rb_clickid=a1b2c3",
        "ym_client_id": "1701234567890123456",
        "ga_client_id": "GA1.1.987654321.1701234567",
    }
    assert requests.post(f"{stack.url}/v1/forms/contact/submissions", json=form).status_code == 202
    assert stack.wait_until_idle(timeout=60)
    [lead] = stack.sandbox.entities("lead")
    assert lead["UF_CRM_TL_YM_CLIENT_ID"] == "1701234567890123456"
    assert lead["UF_CRM_TL_GA_CLIENT_ID"] == "987654321.1701234567"  # the client id part of the _ga cookie
    assert lead["UF_CRM_TL_VK_CLICK_ID"] == "a1b2c3"
    [touch] = [t for t in JourneyStore(get_settings().journey_table or "").journey(f"LEAD#{lead['ID']}")]
    assert touch.extra["ym_client_id"] == "1701234567890123456"
    assert touch.extra["ga_client_id"] == "987654321.1701234567"
    assert touch.extra["rb_clickid"] == "a1b2c3"


def test_a_vk_ads_click_without_tags_is_paid_social_vk(make_stack) -> None:
    stack = make_stack()
    form = {"phone": "+7 916 700-00-02", "landing_url": "https://shop.example.ru/catalog?rb_clickid=zz9"}
    assert requests.post(f"{stack.url}/v1/forms/contact/submissions", json=form).status_code == 202
    assert stack.wait_until_idle(timeout=60)
    [lead] = stack.sandbox.entities("lead")
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"]) == ("vk", "cpc")
    assert lead["UF_CRM_TL_VK_CLICK_ID"] == "zz9"
