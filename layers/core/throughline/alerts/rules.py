"""The alert rules file, ``config/alerts.yaml`` in the data bucket: validated, with a documented default.

Every rule has the same shape — trigger, metric, window, threshold, minimum volume, cooldown, recipients, channels
(tried in order: the first that delivers wins, the next ones are the fallback) and a Russian message template whose
``{placeholders}`` are checked against what the rule fills in. An invalid file fails with one ``AlertsConfigError``
that names every bad key (``rules.cpl_spike.threshold: …; rules.cpl_spyke: unknown rule``).

pydantic and PyYAML live in the analytics layer: nothing on the HTTP path imports this module.
"""

from __future__ import annotations

import json
import string
from decimal import Decimal
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_KEY = "config/alerts.yaml"

Channel = Literal["bitrix", "chat", "telegram", "email"]
Trigger = Literal["schedule", "realtime", "digest"]

# rule id → (trigger, metric, the placeholders its message may use)
RULES: dict[str, tuple[str, str, frozenset[str]]] = {
    "cpl_spike": (
        "schedule",
        "cpl",
        frozenset({"campaign", "source", "day", "cpl", "median", "rise", "spend", "leads"}),
    ),
    "spend_without_leads": ("schedule", "spend", frozenset({"campaign", "source", "day", "spend"})),
    "conversion_drop": (
        "schedule",
        "cr",
        frozenset({"source", "cr", "baseline_cr", "drop", "leads", "baseline_leads", "date_from", "date_to"}),
    ),
    "big_deal": ("realtime", "opportunity", frozenset({"deal_id", "title", "amount", "currency", "link"})),
    "hot_lead": ("realtime", "first_response_minutes", frozenset({"lead_id", "title", "deadline", "link"})),
    "hot_lead_missed": ("schedule", "first_response_minutes", frozenset({"lead_id", "title", "minutes", "link"})),
    "repeat_request": ("realtime", "requests", frozenset({"lead_id", "title", "link"})),
    "stalled_deal": ("schedule", "days_in_stage", frozenset({"deal_id", "title", "stage", "days", "p90", "link"})),
    "lost_deals": ("schedule", "loss_reasons", frozenset({"week", "lines", "total"})),
    "data_quality": (
        "schedule",
        "known_source_share",
        frozenset({"date_from", "date_to", "known_share", "target", "unmatched_share", "unmatched_limit"}),
    ),
    "digest_daily": ("digest", "digest", frozenset({"text"})),
    "digest_weekly": ("digest", "digest", frozenset({"text"})),
    "digest_monthly": ("digest", "digest", frozenset({"text"})),
}


class AlertsConfigError(ValueError):
    """The rules file is invalid; the message names every bad key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    days: int = Field(default=1, ge=1, le=366, description="the days looked at (1: yesterday)")
    baseline_days: int | None = Field(default=None, ge=1, le=366, description="the days before, compared against")


class MinVolume(_Model):
    leads: int = Field(default=0, ge=0)
    spend: Decimal = Field(default=Decimal(0), ge=0, description="in the report currency")


class Rule(_Model):
    enabled: bool = True
    trigger: Trigger
    metric: str
    window: Window = Window()
    threshold: Decimal | None = Field(default=None, description="the rule's limit (percent or amount, see its doc)")
    min_volume: MinVolume = MinVolume()
    cooldown_hours: int = Field(default=24, ge=0, le=24 * 366)
    recipients: list[int] = Field(default_factory=list, description="Bitrix24 user ids; empty: the webhook's user")
    also_notify: list[int] = Field(default_factory=list, description="supervisors, the head of sales (user ids)")
    channels: list[Channel] = Field(default_factory=lambda: ["bitrix"], min_length=1)
    message: str = Field(min_length=1, max_length=2000)

    @field_validator("recipients", "also_notify")
    @classmethod
    def _user_ids(cls, value: list[int]) -> list[int]:
        bad = [item for item in value if item <= 0]
        if bad:
            raise ValueError(f"Bitrix24 user ids are positive integers, got {bad}")
        return value

    @field_validator("channels")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each channel once")
        return value


class Settings(_Model):
    chat_dialog_id: str | None = Field(
        default=None, pattern=r"^(chat\d+|\d+)$", description="im.message.add DIALOG_ID for the «chat» channel"
    )
    report_url: str | None = Field(default=None, description="where digests link to (the Bitrix24 application page)")
    quiet: bool = Field(default=False, description="compute and record, deliver nothing (a dry run)")


class AlertsConfig(_Model):
    version: Literal[1] = 1
    settings: Settings = Settings()
    rules: dict[str, Rule]

    def rule(self, rule_id: str) -> Rule | None:
        """The rule if it is configured and enabled."""
        rule = self.rules.get(rule_id)
        return rule if rule is not None and rule.enabled else None


DEFAULT_YAML = """\
# Throughline alert rules (config/alerts.yaml in the data bucket; `python -m throughline alerts --check FILE` checks a
# copy before upload). Thresholds are yours to change. Every rule:
#   enabled        false turns it off
#   trigger        schedule (check_alerts, hourly and after the nightly report), realtime (the writer), digest
#   metric         what it measures (fixed per rule; written out so the file reads on its own)
#   window         days looked at, and baseline_days compared against
#   threshold      the limit (percent for rises and drops, an amount in REPORT_CURRENCY for big_deal)
#   min_volume     leads and spend below which the rule stays silent (small numbers are noise)
#   cooldown_hours after an alert on an object, no other alert of this rule on it for this long
#   recipients     Bitrix24 user ids (user.get); empty: the webhook's own user (or the record's responsible)
#   also_notify    user ids told as well (a supervisor, the head of sales)
#   channels       tried in order, the first that delivers wins: bitrix (notification), chat (settings.chat_dialog_id),
#                  telegram (TELEGRAM_BOT_TOKEN, TELEGRAM_CHAT_ID), email (ALERT_EMAIL_FROM, ALERT_EMAILS via SES)
#   message        the Russian text; {names} are filled in (an unknown name fails the check)
version: 1
settings:
  chat_dialog_id: null   # e.g. chat42: a group chat for the «chat» channel and the digests
  report_url: null       # the Bitrix24 application's page (README: «Отчёт в Битрикс24»); digests link to it
  quiet: false
rules:
  cpl_spike:             # per campaign: yesterday's CPL against the median of the 14 days before
    trigger: schedule
    metric: cpl
    window: {days: 1, baseline_days: 14}
    threshold: 40        # % rise
    min_volume: {spend: 1000, leads: 3}
    cooldown_hours: 24
    channels: [bitrix, telegram, email]
    message: "Стоимость лида выросла на {rise} %: «{campaign}» ({source}) {day}:
      CPL {cpl} при медиане {median} (расход {spend}, лидов {leads})"
  spend_without_leads:   # per campaign: spend yesterday and not one lead
    trigger: schedule
    metric: spend
    window: {days: 1}
    min_volume: {spend: 1000}
    cooldown_hours: 24
    channels: [bitrix, telegram, email]
    message: "Расход без лидов: «{campaign}» ({source}) {day}: потрачено {spend}, лидов нет"
  conversion_drop:       # per source: lead → deal over 7 days against the 28 before
    trigger: schedule
    metric: cr
    window: {days: 7, baseline_days: 28}
    threshold: 30        # % relative drop
    min_volume: {leads: 20}
    cooldown_hours: 168
    channels: [bitrix, telegram, email]
    message: "Конверсия лид → сделка по источнику «{source}» упала на {drop} %:
      {cr} % за {date_from} – {date_to} против {baseline_cr} % за 28 дней до этого (лидов {leads} и {baseline_leads})"
  big_deal:              # once per deal, to its responsible and also_notify (the head of sales); off until set
    enabled: false
    trigger: realtime
    metric: opportunity
    threshold: null      # e.g. 500000
    cooldown_hours: 0
    also_notify: []
    channels: [bitrix]
    message: "Крупная сделка: {title} на {amount} {currency} — {link}"
  hot_lead:              # a task for the new lead's responsible, due in threshold minutes
    trigger: realtime
    metric: first_response_minutes
    threshold: 5
    cooldown_hours: 0
    channels: [bitrix]
    message: "Обработать в течение 5 минут: {title}"
  hot_lead_missed:       # no call or e-mail on the lead by the task's deadline: the supervisor is told
    trigger: schedule
    metric: first_response_minutes
    threshold: 5
    cooldown_hours: 0
    also_notify: []      # the supervisors; empty: the webhook's user
    channels: [bitrix, telegram, email]
    message: "лид {title}: {minutes} мин после поступления — {link}"
  repeat_request:        # a task for the responsible manager of the lead a repeat request landed on
    trigger: realtime
    metric: requests
    cooldown_hours: 1
    channels: [bitrix]
    message: "Повторное обращение: {title}"
  stalled_deal:          # time in its stage above that stage's 90th percentile of the last 90 days
    trigger: schedule
    metric: days_in_stage
    window: {days: 90}
    threshold: 90        # percentile
    min_volume: {leads: 10}   # stage moves needed to trust the percentile
    cooldown_hours: 168
    channels: [bitrix]
    message: "Сделка {title} стоит на стадии «{stage}» {days} дн. (обычно не дольше {p90} дн.) — {link}"
  lost_deals:            # weekly, on Monday: loss reasons per source for the week before
    trigger: schedule
    metric: loss_reasons
    window: {days: 7}
    cooldown_hours: 0
    channels: [bitrix, chat, telegram, email]
    message: "Проигранные сделки за неделю {week}: {total}\\n{lines}"
  data_quality:          # leads with a known source under threshold %, or unmatched spend over 10 %
    trigger: schedule
    metric: known_source_share
    window: {days: 7}
    threshold: 95
    min_volume: {leads: 20}
    cooldown_hours: 168
    channels: [bitrix, email]
    message: "Качество данных {date_from} – {date_to}: источник известен у {known_share} % лидов (цель {target} %),
      расход без лидов {unmatched_share} % (допустимо {unmatched_limit} %)"
  digest_daily:          # 09:00: yesterday's leads, deals won and lost, spend, CPL, by source
    trigger: digest
    metric: digest
    cooldown_hours: 0
    channels: [bitrix, chat, telegram, email]
    message: "{text}"
  digest_weekly:         # Monday: campaigns, funnel, managers
    trigger: digest
    metric: digest
    cooldown_hours: 0
    channels: [bitrix, chat, telegram, email]
    message: "{text}"
  digest_monthly:        # the 1st: spend, revenue, ROMI, ROI by channel against the month before
    trigger: digest
    metric: digest
    cooldown_hours: 0
    channels: [bitrix, chat, telegram, email]
    message: "{text}"
"""

UNMATCHED_SPEND_LIMIT = Decimal(10)  # data_quality: % of spend whose campaign matched no lead


def parse_rules(text: str | bytes, *, name: str = "alerts.yaml") -> AlertsConfig:
    """The rules in ``text``, or ``AlertsConfigError`` naming every bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise AlertsConfigError(f"{name}: not valid YAML{line}") from None
    if not isinstance(data, dict):
        raise AlertsConfigError(f"{name}: the file must be a mapping with version, settings and rules")
    problems: list[str] = []
    rules = data.get("rules")
    if isinstance(rules, dict):
        for rule_id in rules:
            if rule_id not in RULES:
                problems.append(f"rules.{rule_id}: unknown rule (known: {', '.join(RULES)})")
        for rule_id, body in rules.items():
            if rule_id in RULES and isinstance(body, dict):
                problems += _rule_problems(rule_id, body)
    if isinstance(rules, dict):
        data = {**data, "rules": {key: value for key, value in rules.items() if key in RULES}}
    try:
        config = AlertsConfig.model_validate(data)
    except ValidationError as error:
        problems += [_problem(item) for item in error.errors()]
        config = None
    if problems:
        raise AlertsConfigError(f"{name}: " + "; ".join(dict.fromkeys(problems)))
    assert config is not None
    return config


# Rules that mean nothing without a threshold (big_deal's has no default: it stays off until one is set).
NEEDS_THRESHOLD = frozenset({"cpl_spike", "conversion_drop", "big_deal", "hot_lead", "hot_lead_missed", "stalled_deal",
                             "data_quality"})  # fmt: skip


def _rule_problems(rule_id: str, body: dict[str, Any]) -> list[str]:
    trigger, metric, fields = RULES[rule_id]
    problems = []
    if rule_id in NEEDS_THRESHOLD and body.get("enabled", True) is not False and body.get("threshold") is None:
        problems.append(f"rules.{rule_id}.threshold: required while the rule is enabled")
    if body.get("trigger") not in (None, trigger):
        problems.append(f"rules.{rule_id}.trigger: must be {trigger}")
    if body.get("metric") not in (None, metric):
        problems.append(f"rules.{rule_id}.metric: must be {metric}")
    message = body.get("message")
    if isinstance(message, str):
        try:
            parts = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(message)
                     if name is not None]  # fmt: skip
            names = {name for name, _, _ in parts}
            if any(spec or conversion for _, spec, conversion in parts):
                problems.append(f"rules.{rule_id}.message: write {{name}} only, without a format (':…') or '!…'")
        except ValueError as error:
            problems.append(f"rules.{rule_id}.message: {error} (write {{{{ and }}}} for literal braces)")
        else:
            unknown = sorted(name for name in names if name not in fields)
            if unknown:
                problems.append(
                    f"rules.{rule_id}.message: unknown placeholder(s) {', '.join(unknown)} "
                    f"(this rule fills in {', '.join(sorted(fields))})"
                )
    return problems


def _problem(item: Any) -> str:
    where = ".".join(str(part) for part in item.get("loc", ())) or "(file)"
    return f"{where}: {item.get('msg')}"


def default_rules() -> AlertsConfig:
    return parse_rules(DEFAULT_YAML, name="the default alerts.yaml")


def render(rule: Rule, values: dict[str, Any]) -> str:
    """The rule's message with its placeholders filled in (validated names only, so no KeyError)."""
    return rule.message.format_map({key: _show(value) for key, value in values.items()})


def _show(value: Any) -> str:
    if isinstance(value, Decimal):
        return format_number(value)
    return str(value)


def format_number(value: Decimal | int | float | None, places: int = 2) -> str:
    """Russian notation: 12 345,67 (thin grouping by a no-break space, decimal comma, no trailing zeros)."""
    if value is None:
        return "—"
    number = Decimal(str(value)).quantize(Decimal(1).scaleb(-places))
    text = f"{number:,.{places}f}".replace(",", "\u00a0").replace(".", ",")
    if "," in text:
        text = text.rstrip("0").rstrip(",")
    return text


def realtime_json(config: AlertsConfig) -> bytes:
    """The enabled real-time rules as plain JSON (``config/alerts.realtime.json``): the writer reads this, not the
    YAML, so it needs neither PyYAML nor pydantic. In ``quiet`` mode (a dry run: nothing delivered) it holds no rule,
    so the writer makes no task and sends no notification either."""
    rules = {}
    for rule_id in () if config.settings.quiet else ("hot_lead", "repeat_request", "big_deal"):
        rule = config.rule(rule_id)
        if rule is not None:
            rules[rule_id] = {
                "threshold": None if rule.threshold is None else str(rule.threshold),
                "cooldown_hours": rule.cooldown_hours,
                "recipients": rule.recipients,
                "also_notify": rule.also_notify,
                "message": rule.message,
            }
    return json.dumps({"version": 1, "rules": rules}, ensure_ascii=False, sort_keys=True).encode("utf-8")
