"""Real-time rules in the writer path: a hot lead's task, a repeat request's task, a big deal's notification.

The writer's handler calls ``after_writes`` once per invocation with what it wrote; nothing in the writer itself
changes. Kept light (the writer mounts no analytics layer): the rules come pre-validated from
``config/alerts.realtime.json``, which ``check_alerts`` and ``bitrix-setup`` write from the validated
``config/alerts.yaml`` (until one of them has run, real-time rules are off). Calls go through the writer's own client,
so they share its pace and its share of the portal's 2 requests a second:

- hot lead (a form's new lead): ``tasks.task.add`` «Обработать в течение 5 минут» for the lead's responsible
  (``$result[…][ASSIGNED_BY_ID]`` of a ``crm.lead.get`` in the same batch), due in ``threshold`` minutes, linked
  ``L_<id>``; ``check_alerts`` looks for a call or e-mail once it is due and tells the supervisors if none;
- repeat request (a form post appended to an existing lead): a task for that lead's responsible, once per request,
  at most one per lead per ``cooldown_hours``;
- big deal (a deal event): ``crm.deal.get``; an amount at or above ``threshold`` (in ``REPORT_CURRENCY``; deals in
  another currency are left to the daily checks) notifies its responsible and ``also_notify``, once per deal.

All of an invocation's tasks and reads share one ``batch``; big deals' notifications a second. Each is claimed in the
ledger first, so a redelivered message never makes a second task.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from throughline.adapters.alert_ledger import AlertLedger

log = logging.getLogger(__name__)

REALTIME_KEY = "config/alerts.realtime.json"
REALTIME_RULES = ("hot_lead", "repeat_request", "big_deal")
CACHE_SECONDS = 300.0
HOOK_RESERVE_SECONDS = 35.0  # the writer's time left under which no real-time alert is started
LINKS = {"LEAD": ("L", "lead"), "DEAL": ("D", "deal")}
_lock = threading.Lock()
_cache: dict[str, tuple[float, dict[str, Any]]] = {}
# REST calls the real-time rules made in this process (the demo prints them; the writer's metric AlertsBitrixCalls)
CALLS = {"batches": 0}


def load_realtime_rules(bucket: str, get: Callable[[str], bytes | None] | None = None,
                        clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:  # fmt: skip
    """The enabled real-time rules (``{}`` when none or no file yet), re-read every five minutes."""
    with _lock:
        cached = _cache.get(bucket)
        if cached is not None and clock() - cached[0] < CACHE_SECONDS:
            return cached[1]
    if get is None:
        from throughline.adapters import aws

        def get(key: str) -> bytes | None:
            from botocore.exceptions import ClientError

            try:
                return aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
            except ClientError as error:
                # Not written yet (check_alerts writes it within minutes of a deploy); the writer may not list the
                # bucket, so S3 says AccessDenied rather than NoSuchKey for a missing key.
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "AccessDenied", "404", "403"):
                    return None
                raise

    raw = get(REALTIME_KEY)
    rules = json.loads(raw).get("rules", {}) if raw else {}
    with _lock:
        _cache[bucket] = (clock(), rules)
    return rules


def reset_cache() -> None:
    with _lock:
        _cache.clear()


def _link(webhook_url: str | None, entity: str, record_id: int) -> str:
    from urllib.parse import urlsplit

    if not webhook_url:
        return f"{entity} {record_id}"
    parts = urlsplit(webhook_url)
    return f"{parts.scheme}://{parts.netloc}/crm/{entity}/details/{record_id}/"


def _user(webhook_url: str | None) -> int | None:
    from urllib.parse import urlsplit

    parts = urlsplit(webhook_url or "").path.strip("/").split("/")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "rest" and parts[1].isdigit() else None


def after_writes(
    settings: Any,
    bitrix: Any,
    bodies: Mapping[str, Mapping[str, Any]],
    outcomes: Mapping[str, Any],
    *,
    ledger: AlertLedger | None = None,
    rules: Mapping[str, Any] | None = None,
    now: Callable[[], float] = time.time,
) -> dict[str, int]:
    """Apply the real-time rules to one writer invocation's results (message id → decoded body, → outcome)."""
    if not settings.alerts_table or (rules is None and not settings.data_bucket):
        return {}
    if _out_of_time(bitrix):
        log.warning("real-time alerts skipped: too little of the writer's time left")
        return {"skipped": len(outcomes)}
    rules = load_realtime_rules(settings.data_bucket) if rules is None else rules
    if not rules:
        return {}
    ledger = ledger or AlertLedger(settings.alerts_table)
    moment = now()
    zone = settings.zone
    counts = {"tasks": 0, "notifications": 0}
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    claims: dict[str, Any] = {}
    pending: dict[str, tuple[str, int]] = {}
    deals: list[int] = []
    for message_id, outcome in outcomes.items():
        body = bodies.get(message_id) or {}
        if not getattr(outcome, "ok", False):
            continue
        if body.get("type") == "form_submission" and outcome.lead_id:
            kind, record_id = (str(outcome.entity or "LEAD#").split("#")[0] or "LEAD"), int(outcome.lead_id)
            short, entity = LINKS.get(kind, LINKS["LEAD"])
            rule_id = {"created": "hot_lead", "appended": "repeat_request"}.get(outcome.action)
            rule = rules.get(rule_id or "")
            if rule is None or len(commands) >= 48:
                continue
            period = "once" if rule_id == "hot_lead" else str(outcome.submission_id)[:200]
            index = len(claims)
            title = rule["message"].format_map(
                {
                    "lead_id": record_id,
                    "title": f"{'лид' if entity == 'lead' else 'сделка'} №{record_id}",
                    "deadline": "",
                    "link": _link(settings.bitrix24_webhook_url, entity, record_id),
                }
            )
            fields: dict[str, Any] = {
                "TITLE": title[:250],
                "RESPONSIBLE_ID": f"$result[r{index}][ASSIGNED_BY_ID]",
                "DESCRIPTION": _link(settings.bitrix24_webhook_url, entity, record_id),
                "UF_CRM_TASK": [f"{short}_{record_id}"],
            }
            if rule_id == "hot_lead":
                minutes = int(Decimal(str(rule.get("threshold") or 5)))
                due = datetime.fromtimestamp(moment, zone) + timedelta(minutes=minutes)
                fields["DEADLINE"] = due.isoformat(timespec="seconds")
                pending[f"t{index}"] = (f"{entity}:{record_id}", int(due.timestamp()))
            if rule.get("also_notify"):
                fields["AUDITORS"] = list(rule["also_notify"])
            if _out_of_time(bitrix):
                break
            claim = _claim(ledger, rule_id, f"{entity}:{record_id}", period, rule)
            if claim is None:
                continue
            commands[f"r{index}"] = (f"crm.{entity}.get", {"id": record_id})
            commands[f"t{index}"] = ("tasks.task.add", {"fields": fields})
            claims[f"t{index}"] = claim
        elif (body.get("type") == "bitrix_event" and body.get("entity") == "deal" and "big_deal" in rules
              and str(body.get("event") or "").upper() in ("ONCRMDEALADD", "ONCRMDEALUPDATE")):  # fmt: skip
            deal_id = int(body.get("id") or 0)
            if deal_id and deal_id not in deals and len(deals) < 25:
                deals.append(deal_id)
                commands[f"d{deal_id}"] = ("crm.deal.get", {"id": deal_id})
    if not commands:
        return counts
    try:
        CALLS["batches"] += 1
        counts["calls"] = counts.get("calls", 0) + 1
        answers = bitrix.batch(commands)
    except Exception as error:
        for claim in claims.values():
            if not getattr(error, "maybe_executed", False):
                ledger.release(claim)
        raise
    for key, claim in claims.items():
        if key in answers.errors or answers.results.get(key) in (None, False):
            ledger.release(claim)
            continue
        task = (answers.results.get(key) or {}).get("task") or {}
        ledger.mark_sent(claim, f"task {task.get('id', '')}")
        counts["tasks"] += 1
        if key in pending:
            obj, due = pending[key]
            ledger.add_pending("hot_lead", obj, due, {"title": f"№{obj.split(':')[1]}", "created": str(int(moment))})
    read = {deal_id: answers.results.get(f"d{deal_id}") for deal_id in deals}
    sent = _big_deals(settings, bitrix, ledger, rules["big_deal"] if deals else None, read)
    counts["notifications"] += sent
    counts["calls"] += 1 if sent else 0
    return counts


def _out_of_time(bitrix: Any) -> bool:
    """The writer's invocation is near its end: a ledger call (DynamoDB, up to three attempts of 10 s) or a batch
    could push it past its timeout, and a timeout sends the whole batch of writes back to the queue."""
    deadline = getattr(bitrix, "deadline", None)
    return deadline is not None and deadline.seconds_left() < HOOK_RESERVE_SECONDS


def _claim(ledger: AlertLedger, rule_id: str, obj: str, period: str, rule: Mapping[str, Any]) -> Any:
    """The ledger's claim, or ``None`` — also when the ledger cannot answer (DynamoDB throttled or down): that one
    alert is skipped, while the alerts claimed before it in this invocation still go out (an exception here would
    leave their claims taken and never sent, as nothing retries a write that succeeded)."""
    try:
        return ledger.claim(rule_id, obj, period, int(rule.get("cooldown_hours") or 0) * 3600)
    except Exception:
        log.warning("real-time alert not claimed: the ledger did not answer", extra={"rule": rule_id}, exc_info=True)
        return None


def _big_deals(settings: Any, bitrix: Any, ledger: AlertLedger, rule: Mapping[str, Any] | None,
               deals: Mapping[int, Any]) -> int:  # fmt: skip
    if rule is None:
        return 0
    try:
        threshold = Decimal(str(rule.get("threshold")))
    except (InvalidOperation, ValueError):
        return 0
    commands: dict[str, tuple[str, dict[str, Any]]] = {}
    claims = []
    for deal_id, deal in deals.items():
        if not isinstance(deal, Mapping) or str(deal.get("CURRENCY_ID") or "") != settings.report_currency:
            continue
        try:
            amount = Decimal(str(deal.get("OPPORTUNITY") or "0"))
        except InvalidOperation:
            continue
        if amount < threshold:
            continue
        text = rule["message"].format_map({
            "deal_id": deal_id, "title": deal.get("TITLE") or f"№{deal_id}", "currency": deal.get("CURRENCY_ID"),
            "amount": f"{amount:,.0f}".replace(",", "\u00a0"),
            "link": _link(settings.bitrix24_webhook_url, "deal", deal_id)})  # fmt: skip
        users = list(rule.get("recipients") or []) or [int(deal.get("ASSIGNED_BY_ID") or 0) or _user(
            settings.bitrix24_webhook_url)]  # fmt: skip
        users = [user for user in dict.fromkeys([*users, *(rule.get("also_notify") or [])]) if user]
        if _out_of_time(bitrix):
            break
        claim = _claim(ledger, "big_deal", f"deal:{deal_id}", "once", rule)
        if claim is None:
            continue
        keys = []
        for user in users:
            key = f"n{deal_id}x{user}"
            tag = f"throughline|big_deal|deal:{deal_id}|{user}"
            params = {"USER_ID": user, "MESSAGE": text, "CLIENT_ID": "throughline", "TAG": tag}
            commands[key] = ("im.notify.system.add", params)
            keys.append(key)
        claims.append((claim, keys))
    if not commands:
        return 0
    CALLS["batches"] += 1
    try:
        answers = bitrix.batch(commands)
    except Exception as error:
        if not getattr(error, "maybe_executed", False):  # not sent: the deal's next event sends it
            for claim, _ in claims:
                ledger.release(claim)
        raise
    sent = 0
    for claim, keys in claims:
        if any(key in answers.errors for key in keys):
            ledger.release(claim)
            continue
        ledger.mark_sent(claim, "bitrix")
        sent += len(keys)
    return sent
