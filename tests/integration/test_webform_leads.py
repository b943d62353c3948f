"""Bitrix24's own CRM forms and sites: no webhook of ours, their leads arrive as ONCRMLEADADD with SOURCE_ID WEBFORM
and the form's UTM_* fields; the journey's first line and its touch come from those tags."""

from __future__ import annotations

from tests.integration.test_journey_events import lines, live, manager_lead, settle, store  # noqa: F401


def test_a_crm_form_lead_starts_its_journey_with_the_forms_tags(live):  # noqa: F811
    lead = manager_lead(
        live,
        TITLE="CRM-форма «Обратный звонок»",
        SOURCE_ID="WEBFORM",
        SOURCE_DESCRIPTION="CRM-форма «Обратный звонок»",
        UTM_SOURCE="vk",
        UTM_MEDIUM="cpc",
        UTM_CAMPAIGN="okna_retarget",
        UTM_CONTENT="banner_2",
    )
    settle(live)
    [line] = lines(live, "lead", lead)
    assert line.startswith("Первичный контакт: ") and line.endswith(" — ВКонтакте — CPC — «okna_retarget»")
    [touch] = store().journey(f"LEAD#{lead}")
    assert (touch.channel, touch.source, touch.medium) == ("social", "vk", "cpc")
    assert (touch.campaign, touch.content) == ("okna_retarget", "banner_2")


def test_a_crm_form_lead_without_tags_is_named_by_its_source(live):  # noqa: F811
    lead = manager_lead(live, TITLE="CRM-форма «Заявка»", SOURCE_ID="WEBFORM", SOURCE_DESCRIPTION="CRM-форма «Заявка»")
    settle(live)
    [line] = lines(live, "lead", lead)
    assert line.startswith("Первичный контакт: ")
    assert line.endswith(" — CRM-форма — Прямые переходы — CRM-форма «Заявка»")
    [touch] = store().journey(f"LEAD#{lead}")
    assert touch.channel == "direct" and touch.extra["source_id"] == "WEBFORM"
