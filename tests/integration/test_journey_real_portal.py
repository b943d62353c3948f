"""The journey on a portal that behaves as the REST docs say (issue 14): activities linked to several records,
companies, merged duplicates, planned to-dos, deals without a lead, returning customers, same-second order, missed
calls from telephony statistics, a deal's several contacts. Every test runs the whole local stack over HTTP: the
sandbox sends its outbound webhooks to /v1/bitrix/events, the writer reads the portal back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from local.bitrix24_sandbox.links import telephony_call
from tests.integration.test_journey_events import (  # noqa: F401
    MANAGER_PHONE,
    call,
    lines,
    live,
    manager_lead,
    settle,
    store,
)

FIRST = "Первичный контакт: "


def deal_add(stack, **fields) -> int:
    return stack.sandbox.call("crm.deal.add", {"fields": {"TITLE": "Поставка", **fields}})


def record(stack, kind: str, record_id: int) -> dict:
    return next(row for row in stack.sandbox.entities(kind) if int(row["ID"]) == record_id)


def test_a_call_linked_to_a_lead_and_a_deal_is_a_line_on_both(live):  # noqa: F811
    lead = manager_lead(live)
    deal = deal_add(live, SOURCE_ID="CALL")
    settle(live)
    telephony_call(live.sandbox, (1, lead), incoming=True, start="2026-11-18T09:00:00+03:00", duration=95,
                   also=((2, deal),))  # fmt: skip
    settle(live)
    expected = "18.11.2026 — Телефон — Входящий звонок — Входящий звонок от +7*******67"  # phone masked
    assert lines(live, "lead", lead)[-1] == expected
    assert lines(live, "deal", deal)[-1] == expected
    assert sorted(store().metas(["ACTIVITY#1"])["ACTIVITY#1"]["filed"]) == [f"DEAL#{deal}", f"LEAD#{lead}"]


def test_a_companys_activity_reaches_its_open_deals_only(live):  # noqa: F811
    company = live.sandbox.call("crm.company.add", {"fields": {"TITLE": "ООО Ромашка"}})
    open_deal = deal_add(live, COMPANY_ID=company)
    won_deal = deal_add(live, COMPANY_ID=company, TITLE="Прошлая поставка")
    live.sandbox.call("crm.deal.update", {"id": won_deal, "fields": {"STAGE_ID": "WON"}})
    settle(live)
    won_before = lines(live, "deal", won_deal)
    call(live, (4, company), "Звонок в офис компании", start="2026-11-21T10:00:00+03:00")
    settle(live)
    assert lines(live, "deal", open_deal)[-1] == "21.11.2026 — Телефон — Исходящий звонок — Звонок в офис компании"
    assert lines(live, "deal", won_deal) == won_before


def test_planned_activities_are_not_touches_until_completed(live):  # noqa: F811
    lead = manager_lead(live)
    settle(live)
    before = lines(live, "lead", lead)
    todo = live.sandbox.call("crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": lead, "title": "Перезвонить",
                                                        "deadline": "2026-12-20T15:00:00+03:00"})  # fmt: skip
    planned = call(live, (1, lead), "Звонок по договорённости", start="2026-11-25T11:00:00+03:00", completed="N")
    settle(live)
    assert lines(live, "lead", lead) == before  # automation's to-do and a planned call: nothing happened yet
    live.sandbox.call("crm.activity.update", {"id": todo["id"], "fields": {"COMPLETED": "Y"}})  # a reminder, done
    done = {"COMPLETED": "Y", "END_TIME": "2026-11-25T11:20:00+03:00"}
    live.sandbox.call("crm.activity.update", {"id": planned, "fields": done})
    settle(live)
    assert lines(live, "lead", lead) == [*before, "25.11.2026 — Телефон — Исходящий звонок — Звонок по договорённости"]
    [touch] = [t for t in store().journey(f"LEAD#{lead}") if t.touch_id == f"activity:{planned}"]
    assert touch.at == datetime(2026, 11, 25, 8, 20, tzinfo=UTC)  # when it ended
    # A meeting marked held before its planned end is dated now, never in the future.
    meeting = call(live, (1, lead), "Встреча", type_id=1, start="2099-01-01T10:00:00+03:00")
    settle(live)
    [held] = [t for t in store().journey(f"LEAD#{lead}") if t.touch_id == f"activity:{meeting}"]
    assert datetime.now(UTC) - timedelta(minutes=10) < held.at <= datetime.now(UTC)


def test_a_deal_without_lead_or_tags_starts_with_its_source(live):  # noqa: F811
    deal = deal_add(live, SOURCE_ID="TRADE_SHOW", SOURCE_DESCRIPTION="Стенд на выставке CRM Expo")
    settle(live)
    text = lines(live, "deal", deal)
    assert len(text) == 2, text
    assert text[0].startswith(FIRST) and text[0].endswith(" — Выставка — Offline-каналы — Стенд на выставке CRM Expo")
    assert text[1].endswith(" — CRM — Сделка — «Поставка»")


def test_a_returning_customers_lead_shows_the_earlier_history_then_a_repeat_request(live):  # noqa: F811
    first = manager_lead(live)
    call(live, (1, first), "Консультация", start="2026-10-01T10:00:00+03:00")  # before the new lead
    settle(live)
    deal = live.sandbox.convert_lead(first)
    settle(live)
    contact = int(record(live, "deal", deal)["CONTACT_ID"])
    fields = {"TITLE": "Снова звонит", "CONTACT_ID": contact, "SOURCE_ID": "CALL"}
    fields["SOURCE_DESCRIPTION"] = "Повторный звонок"
    again = live.sandbox.call("crm.lead.add", {"fields": fields})
    assert record(live, "lead", again)["IS_RETURN_CUSTOMER"] == "Y"
    settle(live)
    text = lines(live, "lead", again)
    assert text[0] == lines(live, "lead", first)[0] and text[0].startswith(FIRST)
    assert text[0] == FIRST + "01.10.2026 — Телефон — Исходящий звонок — Консультация"
    assert text[-1].endswith(" — Звонок — Offline-каналы — Повторное обращение: Повторный звонок")
    assert sum(line.startswith(FIRST) for line in text) == 1
    # Someone the person index knows (the same phone), with no contact named: a repeat request too.
    known = manager_lead(live, TITLE="Ещё звонок", SOURCE_DESCRIPTION="С сайта")
    settle(live)
    text = lines(live, "lead", known)
    assert text[-1].endswith(" — Повторное обращение: С сайта") and sum(line.startswith(FIRST) for line in text) == 1


def test_same_second_touches_keep_creation_first_and_kinds_apart(live):  # noqa: F811
    other = deal_add(live, TITLE="Разогрев")
    for stage in ("PREPARATION", "EXECUTING", "FINAL_INVOICE"):  # stage-history ids run ahead of activity ids
        live.sandbox.call("crm.deal.update", {"id": other, "fields": {"STAGE_ID": stage}})
    deal = deal_add(live, SOURCE_ID="CALL")
    created = record(live, "deal", deal)["DATE_CREATE"]
    call(live, (2, deal), "Звонок в ту же секунду", start=created)
    settle(live)
    text = lines(live, "deal", deal)
    assert text[0].startswith(FIRST) and " — Звонок — Offline-каналы" in text[0]
    assert text[1].endswith(" — CRM — Сделка — «Поставка»")
    assert text[2].endswith(" — Телефон — Исходящий звонок — Звонок в ту же секунду")


def test_missed_calls_come_from_telephony_statistics_not_the_subject(live):  # noqa: F811
    lead = manager_lead(live)
    settle(live)
    telephony_call(live.sandbox, (1, lead), incoming=True, start="2026-11-18T09:00:00+03:00", duration=0,
                   failed_code="304", subject="Incoming call")  # fmt: skip
    telephony_call(live.sandbox, (1, lead), incoming=True, start="2026-11-18T10:00:00+03:00", duration=120,
                   subject="Пропущенный звонок")  # fmt: skip
    telephony_call(live.sandbox, (1, lead), incoming=False, start="2026-11-18T11:00:00+03:00", duration=0,
                   failed_code="486", subject="Звонок клиенту")  # fmt: skip
    settle(live)
    assert lines(live, "lead", lead)[-3:] == [
        "18.11.2026 — Телефон — Пропущенный звонок — Incoming call",
        "18.11.2026 — Телефон — Входящий звонок — Пропущенный звонок",
        "18.11.2026 — Телефон — Исходящий звонок без ответа — Звонок клиенту",
    ]
    kinds = sorted(touch.kind for touch in store().journey(f"LEAD#{lead}") if touch.touch_id.startswith("activity"))
    assert kinds == ["incoming_call", "missed_call", "outgoing_call"]


def test_a_deals_lead_is_found_through_any_of_its_contacts(live):  # noqa: F811
    lead = manager_lead(live)
    settle(live)
    first_deal = live.sandbox.convert_lead(lead)
    settle(live)
    known = int(record(live, "deal", first_deal)["CONTACT_ID"])
    newcomer = live.sandbox.call("crm.contact.add", {"fields": {"NAME": "Коллега"}})
    deal = deal_add(live, CONTACT_IDS=[newcomer, known], TITLE="Вторая поставка")
    settle(live)
    assert store().metas([f"DEAL#{deal}"])[f"DEAL#{deal}"]["lead_id"] == lead
    assert lines(live, "deal", deal)[0] == lines(live, "lead", lead)[0]


def test_merged_duplicates_keep_the_deleted_ones_touches(live):  # noqa: F811
    main = manager_lead(live)
    settle(live)
    duplicate = manager_lead(live, TITLE="Дубль")
    call(live, (1, duplicate), "Звонок по дублю", start="2026-11-19T10:00:00+03:00")
    settle(live)
    result = live.sandbox.call("crm.entity.mergeBatch", {"params": {"entityTypeId": 1, "entityIds": [main, duplicate]}})
    assert result["STATUS"] == "SUCCESS"
    settle(live)
    assert "19.11.2026 — Телефон — Исходящий звонок — Звонок по дублю" in lines(live, "lead", main)
    assert store().metas([f"LEAD#{duplicate}"])[f"LEAD#{duplicate}"]["merged_into"] == f"LEAD#{main}"


def test_end_to_end_a_merge_a_two_record_call_and_an_automation_todo(live):  # noqa: F811
    """The whole path over HTTP, with the REST calls the journey spends per outbound event."""
    live.sandbox.reset_stats()
    main = manager_lead(live)
    deal = deal_add(live, SOURCE_ID="WEB", TITLE="Заказ с сайта")
    settle(live)
    duplicate = manager_lead(live, TITLE="Дубль", SOURCE_DESCRIPTION="Второй звонок")
    call(live, (1, duplicate), "Уточнение по дублю", start="2026-11-19T10:00:00+03:00")
    telephony_call(live.sandbox, (1, main), incoming=True, start="2026-11-20T12:00:00+03:00", duration=300,
                   also=((2, deal),))  # fmt: skip
    live.sandbox.call("crm.activity.todo.add", {"ownerTypeId": 2, "ownerId": deal, "title": "Выставить счёт",
                                                "deadline": "2026-12-24T12:00:00+03:00"})  # fmt: skip
    settle(live)
    live.sandbox.call("crm.entity.mergeBatch", {"params": {"entityTypeId": 1, "entityIds": [main, duplicate]}})
    settle(live)
    lead_text = lines(live, "lead", main)
    assert lead_text[0].startswith(FIRST) and sum(line.startswith(FIRST) for line in lead_text) == 1
    assert "19.11.2026 — Телефон — Исходящий звонок — Уточнение по дублю" in lead_text  # moved by the merge
    assert lead_text[-1] == "20.11.2026 — Телефон — Входящий звонок — Входящий звонок от +7*******67"
    deal_text = lines(live, "deal", deal)
    assert deal_text[0].startswith(FIRST) and " — Веб-сайт — " in deal_text[0]
    assert deal_text[1].endswith(" — CRM — Сделка — «Заказ с сайта»")
    assert deal_text[2:] == ["20.11.2026 — Телефон — Входящий звонок — Входящий звонок от +7*******67"]
    assert not any("Выставить счёт" in line for line in lead_text + deal_text)  # the to-do is planned, not a touch
    stats = live.sandbox.stats()
    events, calls = stats["outbound"]["sent"], stats["requests"]
    print(f"REST calls {calls} for {events} outbound events ({calls / events:.2f} per event); {stats['by_method']}")
    # Batching depends on how the scenario's events happen to group in time; in the worst case (each event alone)
    # an event costs one read batch and one write batch. The batched figure is held on the demo month (0.32 per
    # event) and by test_twenty_activities_of_one_deal_give_twenty_lines_in_order_and_duplicates_add_nothing.
    assert calls / events < 2.0


def test_a_call_linked_to_sixty_unseen_leads_is_filed_on_each(live):  # noqa: F811
    url, live.sandbox.outbound_url = live.sandbox.outbound_url, None  # leads that existed before the webhook
    leads = [manager_lead(live, PHONE=[{"VALUE": f"+7999100{index:04d}"}]) for index in range(60)]
    live.sandbox.outbound_url = url
    also = tuple((1, lead) for lead in leads[1:])
    telephony_call(live.sandbox, (1, leads[0]), incoming=False, start="2026-11-18T09:00:00+03:00", duration=60,
                   also=also)  # fmt: skip
    settle(live)
    for lead in (leads[0], leads[30], leads[59]):
        text = lines(live, "lead", lead)
        assert text[0].startswith(FIRST) and text[-1].endswith(
            " — Телефон — Исходящий звонок — Исходящий звонок +7*******67"
        )
    assert len(store().metas(["ACTIVITY#1"])["ACTIVITY#1"]["filed"]) == 60


def test_a_portal_clock_ahead_of_ours_keeps_its_activity_dates(live):  # noqa: F811
    # The demo plays a month forward on the portal's clock: "never in the future" is judged by the portal's last
    # change of the activity too, not by our clock alone.
    live.sandbox.set_clock_offset((datetime(2099, 1, 10, tzinfo=UTC) - datetime.now(UTC)).total_seconds())
    lead = manager_lead(live)
    call(live, (1, lead), "Звонок из будущего месяца", start="2099-01-05T10:00:00+03:00")
    settle(live)
    assert FIRST + "05.01.2099 — Телефон — Исходящий звонок — Звонок из будущего месяца" in lines(live, "lead", lead)
