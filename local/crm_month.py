"""A realistic month in the CRM after the form burst, played on the Bitrix24 sandbox: managers call and e-mail people,
meet some, convert leads to deals, move deals through the pipeline, win some and lose others with a reason; a few
people call in and a manager types their lead by hand. Every change goes out as a real outbound webhook to the local
``/v1/bitrix/events``, so the journeys fill themselves exactly as they would on a portal.

The sandbox clock moves forward day by day (stage moves and new records carry that day), so the journeys span a month.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.links import telephony_call

LOSS_STAGES = (("PRICE", "Дорого"), ("COMPETITOR", "Выбрали конкурента"), ("NO_ANSWER", "Не выходит на связь"))
CALL_TOPICS = ("Консультация", "Уточнение задачи", "Обсуждение КП", "Повторный звонок", "Согласование договора")
EMAIL_TOPICS = ("Коммерческое предложение", "Презентация продукта", "Договор на согласование", "Счёт на оплату")
MEETINGS = ("Встреча в офисе", "Демонстрация продукта", "Подписание договора")
PIPELINE = ("PREPARATION", "PREPAYMENT_INVOICE", "EXECUTING", "FINAL_INVOICE")


@dataclass
class MonthSummary:
    activities: int = 0
    conversions: int = 0
    won: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    typed_leads: int = 0
    stage_moves: int = 0


def play_month(
    sandbox: Sandbox,
    *,
    seed: int = 7,
    days: int = 30,
    settle: Callable[[], None] = lambda: None,
    progress: Callable[[str], None] = lambda _: None,
) -> MonthSummary:
    """Play ``days`` days of CRM work on the leads in the sandbox; ``settle`` waits for the events of each day."""
    rng = random.Random(seed)
    summary = MonthSummary()
    for status_id, name in LOSS_STAGES:
        stage = {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": status_id, "NAME": name, "SORT": 200, "SEMANTICS": "F"}
        with contextlib.suppress(Exception):  # already there from an earlier run on the same sandbox
            sandbox.call("crm.status.add", {"fields": stage})
    leads = [int(lead["ID"]) for lead in sandbox.entities("lead") if lead.get("STATUS_SEMANTIC_ID") == "P"]
    rng.shuffle(leads)
    worked = leads[: max(1, min(40, len(leads) * 2 // 3))]
    plans = {lead: _plan(rng, days) for lead in worked}
    deals: dict[int, int] = {}  # lead → deal
    start = datetime.now().astimezone()
    for day in range(1, days + 1):
        sandbox.set_clock_offset(day * 86400)
        today = start + timedelta(days=day)
        if rng.random() < 0.3:  # someone calls in; the manager types the lead by hand
            lead = sandbox.call("crm.lead.add", {"fields": _typed_lead(rng)})
            summary.typed_leads += 1
            plans[lead] = _plan(rng, days, first_day=day)
        for lead, plan in plans.items():
            for action in plan.get(day, []):
                owner = (2, deals[lead]) if lead in deals else (1, lead)
                if action == "call":
                    _activity(sandbox, owner, 2, rng.choice((1, 2, 2, 2)), rng.choice(CALL_TOPICS), today, rng)
                elif action == "email":
                    _activity(sandbox, owner, 4, rng.choice((1, 2)), rng.choice(EMAIL_TOPICS), today, rng)
                elif action == "meeting":
                    _activity(sandbox, owner, 1, 0, rng.choice(MEETINGS), today, rng)
                elif action == "junk":
                    if lead not in deals:
                        reason = rng.choice(("Нецелевой запрос", "Дубль", "Не было бюджета"))
                        junk = {"STATUS_ID": "JUNK", "STATUS_DESCRIPTION": reason}
                        sandbox.call("crm.lead.update", {"id": lead, "fields": junk})
                        summary.stage_moves += 1
                elif action == "convert" and lead not in deals:
                    sandbox.call("crm.lead.update", {"id": lead, "fields": {"STATUS_ID": "IN_PROCESS"}})
                    deals[lead] = sandbox.convert_lead(lead, {"OPPORTUNITY": rng.choice((45000, 90000, 150000))})
                    summary.conversions += 1
                elif action.startswith("stage:") and lead in deals:
                    sandbox.call("crm.deal.update", {"id": deals[lead], "fields": {"STAGE_ID": action[6:]}})
                    summary.stage_moves += 1
                    if action[6:] == "WON":
                        summary.won.append(deals[lead])
                    elif action[6:] in dict(LOSS_STAGES):
                        summary.lost.append(deals[lead])
                if action in ("call", "email", "meeting"):
                    summary.activities += 1
        settle()
        if day % 5 == 0:
            progress(f"  day {day}: {summary.activities} activities, {summary.conversions} deals, "
                     f"{len(summary.won)} won, {len(summary.lost)} lost")  # fmt: skip
    sandbox.set_clock_offset(0)
    return summary


def _plan(rng: random.Random, days: int, first_day: int = 0) -> dict[int, list[str]]:
    """One person's month: a first call within two days, then e-mails, maybe a meeting, then an outcome."""
    plan: dict[int, list[str]] = {}
    day = first_day + rng.randint(1, 2)

    def at(offset: int, action: str) -> int:
        when = min(days, offset)
        plan.setdefault(when, []).append(action)
        return when

    day = at(day, "call")
    if rng.random() < 0.15:
        at(day + 1, "junk")
        return plan
    day = at(day + rng.randint(1, 3), "email")
    if rng.random() < 0.5:
        day = at(day + rng.randint(1, 3), "call")
    if rng.random() < 0.6:
        day = at(day + rng.randint(1, 2), "convert")
        for stage in PIPELINE[: rng.randint(1, len(PIPELINE))]:
            day = at(day + rng.randint(1, 3), rng.choice(("call", "email", "meeting")))
            day = at(day, f"stage:{stage}")
        outcome = "WON" if rng.random() < 0.55 else rng.choice(LOSS_STAGES)[0]
        at(day + rng.randint(1, 3), f"stage:{outcome}")
    return plan


def _activity(sandbox: Sandbox, owner: tuple[int, int], type_id: int, direction: int, subject: str, day: datetime,
              rng: random.Random) -> int:  # fmt: skip
    start = day.replace(hour=rng.randint(9, 18), minute=rng.choice((0, 15, 30, 45)), second=0, microsecond=0)
    fields: dict[str, Any] = {
        "OWNER_TYPE_ID": owner[0], "OWNER_ID": owner[1], "TYPE_ID": type_id, "SUBJECT": subject,
        "RESPONSIBLE_ID": rng.choice((1, 2)), "START_TIME": start.isoformat(),
        "END_TIME": (start + timedelta(minutes=rng.choice((5, 15, 30, 60)))).isoformat(), "COMPLETED": "Y",
        "COMMUNICATIONS": [{"VALUE": "—", "ENTITY_TYPE_ID": owner[0], "ENTITY_ID": owner[1]}],
    }  # fmt: skip
    if direction:
        fields["DIRECTION"] = direction
    if type_id == 2:
        # Calls go through the portal's telephony: added when they start, updated when they end, with statistics;
        # a fifth of the incoming ones are missed (and stay open: a call-back to do).
        missed = direction == 1 and rng.random() < 0.2
        duration = 0 if missed else rng.choice((40, 95, 300, 900))
        activity = telephony_call(sandbox, owner, incoming=direction == 1, start=start.isoformat(), duration=duration,
                                  failed_code="304" if missed else "200", subject=subject)  # fmt: skip
        if rng.random() < 0.3:  # an automation rule plans the next step: a to-do, not a touch
            deadline = (start + timedelta(days=2)).isoformat()
            sandbox.call("crm.activity.todo.add", {"ownerTypeId": owner[0], "ownerId": owner[1], "deadline": deadline,
                                                   "title": "Перезвонить клиенту"})  # fmt: skip
        return activity
    return sandbox.call("crm.activity.add", {"fields": fields})


def _typed_lead(rng: random.Random) -> dict[str, Any]:
    number = f"8 (9{rng.randint(10, 99)}) {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(10, 99)}"
    source_id, description = rng.choice(
        (("CALL", "Звонок на номер с сайта"), ("CALL", "Звонок с визитки"), ("EMAIL", "Письмо на info@"),
         ("RECOMMENDATION", "По рекомендации клиента"), ("TRADE_SHOW", "Выставка «CRM Expo»"))
    )  # fmt: skip
    return {
        "TITLE": f"{description} — {rng.choice(('Анна', 'Олег', 'Мария', 'Денис'))}",
        "SOURCE_ID": source_id,
        "SOURCE_DESCRIPTION": description,
        "PHONE": [{"VALUE": number, "VALUE_TYPE": "WORK"}],
    }
