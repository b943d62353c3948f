"""Same-second order (issue 14): ties break by kind, then id. A form's time comes from our clock with microseconds,
a CRM activity's from the portal in whole seconds: within one second the form still comes first."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from throughline.journey.lines import Touch
from throughline.journey.projection import render_journey

ZONE = ZoneInfo("Europe/Moscow")


def test_a_form_and_a_call_in_one_second_keep_the_form_first_whatever_its_microseconds() -> None:
    form = Touch("sub1:form", datetime(2026, 11, 3, 9, 0, 0, 400000, tzinfo=UTC), "form", "direct", "(direct)",
                 "(none)", detail="Заявка: форма «callback»")  # fmt: skip
    call = Touch("activity:7", datetime(2026, 11, 3, 9, 0, 0, tzinfo=UTC), "incoming_call", "offline", "phone",
                 "incoming_call", detail="Звонок",
                 extra={"label_source": "Телефон", "label_medium": "Входящий звонок", "seq": "7"})  # fmt: skip
    lines = render_journey([call, form], ZONE).splitlines()
    assert lines[0].startswith("Первичный контакт: ") and "форма «callback»" in lines[0]
    assert lines[1] == "03.11.2026 — Телефон — Входящий звонок — Звонок"
    # A second apart, time decides.
    later = Touch("sub2:form", datetime(2026, 11, 3, 9, 0, 1, tzinfo=UTC), "form", "direct", "(direct)", "(none)",
                  detail="Заявка: форма «callback»")  # fmt: skip
    assert render_journey([later, call], ZONE).splitlines()[0].endswith("Входящий звонок — Звонок")
