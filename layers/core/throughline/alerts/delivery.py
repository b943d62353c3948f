"""Delivering alerts, digests and tasks: Bitrix24 first, Telegram and e-mail where configured, each alert once.

- ``bitrix``: ``im.notify.system.add`` to each recipient, all in one ``batch`` (one REST call), with ``TAG``
  ``throughline|<rule>|<object>|<user>`` and ``CLIENT_ID`` (over a webhook a TAG counts only with it), so a repeat
  about the same object replaces the earlier notification instead of piling up;
- ``chat``: ``im.message.add`` to ``settings.chat_dialog_id`` (``chatNNN``);
- ``telegram``: ``sendMessage`` to ``TELEGRAM_CHAT_ID``, cut into 4 096-character parts on line breaks;
- ``email``: SES ``SendEmail`` from ``ALERT_EMAIL_FROM`` to ``ALERT_EMAILS``.

A rule's channels are tried in order; the first that delivers wins (the rest are its fallback). Tasks are
``tasks.task.add`` with ``UF_CRM_TASK`` links (``L_<id>``, ``D_<id>``). Every send is claimed in the ledger first
(``AlertLedger``), marked sent after, released when every channel failed. ``calls`` counts the REST calls spent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from throughline.adapters.alert_ledger import AlertLedger
from throughline.alerts.rules import AlertsConfig, Rule, render
from throughline.bitrix24 import Bitrix24Client, BitrixError

log = logging.getLogger(__name__)

CLIENT_ID = "throughline"
TELEGRAM_LIMIT = 4096
NOTIFY_LIMIT = 20000  # characters of one notification: past that, the text is cut and the report link ends it
ENTITY_LINKS = {"lead": "L", "deal": "D", "contact": "C", "company": "CO"}


def webhook_user_id(webhook_url: str | None) -> int | None:
    """The webhook's own user: ``https://<portal>/rest/<user>/<secret>/`` (no REST call needed)."""
    if not webhook_url:
        return None
    parts = urlsplit(webhook_url).path.strip("/").split("/")
    return int(parts[1]) if len(parts) >= 3 and parts[0] == "rest" and parts[1].isdigit() else None


def record_link(webhook_url: str | None, entity: str, record_id: int | str) -> str:
    """The record's card in the portal: ``https://<portal>/crm/<entity>/details/<id>/``."""
    if not webhook_url:
        return f"{entity} {record_id}"
    parts = urlsplit(webhook_url)
    return f"{parts.scheme}://{parts.netloc}/crm/{entity}/details/{record_id}/"


def split_text(text: str, limit: int) -> list[str]:
    """Parts of at most ``limit`` characters, cut at line breaks where possible."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut > 0 else limit
        parts.append(text[:cut])
        text = text[cut:].lstrip("\n")
    if text:
        parts.append(text)
    return parts


def fit_notification(text: str, limit: int = NOTIFY_LIMIT) -> str:
    """One notification of at most ``limit`` characters: a longer text is cut at a line break and still ends with its
    last line when that is a link (a digest's «Отчёт: …»), after «…»."""
    if len(text) <= limit:
        return text
    last = text.rstrip().rsplit("\n", 1)[-1]
    tail = f"\n…\n{last}" if "://" in last and len(last) < limit // 4 else "\n…"
    return split_text(text, limit - len(tail))[0] + tail


@dataclass
class Outcome:
    sent: bool
    channel: str | None = None
    skipped: str | None = None  # already sent, cooling down, quiet


@dataclass
class Delivered:
    """What was sent (the demo prints it; tests read it)."""

    rule: str
    obj: str
    period: str
    channel: str
    text: str
    recipients: list[int] = field(default_factory=list)


class Notifier:
    def __init__(
        self,
        config: AlertsConfig,
        ledger: AlertLedger,
        bitrix: Bitrix24Client | None,
        *,
        webhook_url: str | None = None,
        telegram: Callable[[str], None] | None = None,
        email: Callable[[str, str], None] | None = None,
    ):
        self.config = config
        self.ledger = ledger
        self.bitrix = bitrix
        self.webhook_url = webhook_url
        self.default_user = webhook_user_id(webhook_url)
        self.telegram = telegram
        self.email = email
        self.delivered: list[Delivered] = []

    @property
    def calls(self) -> int:
        return self.bitrix.calls if self.bitrix is not None else 0

    def recipients(self, rule: Rule, extra: Sequence[int] = ()) -> list[int]:
        users = list(dict.fromkeys([*(rule.recipients or extra), *rule.also_notify]))
        if not users and self.default_user:
            users = [self.default_user]
        return users

    def send(
        self,
        rule_id: str,
        obj: str,
        period: str,
        values: Mapping[str, Any],
        *,
        recipients: Sequence[int] = (),
        subject: str | None = None,
    ) -> Outcome:
        """Send the rule's message about ``obj`` for ``period`` once (ledger), through the first channel that works."""
        rule = self.config.rule(rule_id)
        if rule is None:
            return Outcome(False, skipped="rule off")
        text = render(rule, dict(values))  # before the claim: a claim is never left behind by a rendering error
        users = self.recipients(rule, recipients)
        claim = self.ledger.claim(rule_id, obj, period, rule.cooldown_hours * 3600)
        if claim is None:
            return Outcome(False, skipped="already sent or cooling down")
        if self.config.settings.quiet:
            self.ledger.mark_sent(claim, "quiet")
            return Outcome(False, skipped="quiet")
        errors = []
        for channel in rule.channels:
            try:
                if not self._deliver(channel, rule_id, obj, text, users, subject or _subject(text)):
                    continue
            except Exception as error:  # a channel that fails hands over to the next one
                errors.append(f"{channel}: {type(error).__name__} {getattr(error, 'code', '')}".strip())
                log.warning("alert channel failed", extra={"rule": rule_id, "channel": channel, "error": errors[-1]})
                continue
            self.ledger.mark_sent(claim, channel)
            self.delivered.append(Delivered(rule_id, obj, period, channel, text, users if channel == "bitrix" else []))
            return Outcome(True, channel)
        self.ledger.release(claim)
        raise DeliveryFailed(f"{rule_id} {obj} {period}: no channel delivered ({'; '.join(errors) or 'none set up'})")

    def withdraw(self, rule_id: str, obj: str, period: str, text: str, recipients: Sequence[int] = ()) -> Outcome:
        """Take back a sent alert whose figures were restated: once, through the channel that delivered it — in
        Bitrix24 through the alert's own TAG, so the correction replaces the notification; elsewhere as a message of
        its own. Nothing for an alert that was never delivered (recorded in ``quiet`` mode), nor in ``quiet`` mode."""
        rule = self.config.rule(rule_id)
        if rule is None:
            return Outcome(False, skipped="rule off")
        state, channel = self.ledger.record(rule_id, obj, period)
        if state != "sent" or channel not in ("bitrix", "chat", "telegram", "email"):
            return Outcome(False, skipped="not delivered")
        if self.config.settings.quiet:
            return Outcome(False, skipped="quiet")
        claim = self.ledger.claim(rule_id, obj, f"{period}~withdrawn")
        if claim is None:
            return Outcome(False, skipped="already withdrawn")
        users = self.recipients(rule, recipients)
        try:
            if not self._deliver(channel, rule_id, obj, text, users, _subject(text)):
                self.ledger.release(claim)
                return Outcome(False, skipped="no recipient")
        except Exception:
            self.ledger.release(claim)
            raise
        self.ledger.mark_sent(claim, channel)
        self.delivered.append(Delivered(rule_id, obj, period, "withdrawn", text, users if channel == "bitrix" else []))
        return Outcome(True, channel)

    def send_grouped(self, rule_id: str, items: Sequence[tuple[str, str, Mapping[str, Any]]], *, header: str,
                     recipients: Sequence[int] = ()) -> Outcome:  # fmt: skip
        """Many alerts of one rule in one message (one REST call): each (object, period, values) is claimed in the
        ledger on its own, so each is still sent once; the message lists the claimed ones under ``header``."""
        rule = self.config.rule(rule_id)
        if rule is None:
            return Outcome(False, skipped="rule off")
        claimed = []
        for obj, period, values in items:
            claim = self.ledger.claim(rule_id, obj, period, rule.cooldown_hours * 3600)
            if claim is not None:
                claimed.append((claim, obj, period, render(rule, dict(values))))
        if not claimed:
            return Outcome(False, skipped="already sent or cooling down")
        text = "\n".join([f"{header} ({len(claimed)}):", *(f"• {line}" for *_, line in claimed)])
        users = self.recipients(rule, recipients)
        errors = []
        for channel in rule.channels if not self.config.settings.quiet else ():
            try:
                if not self._deliver(channel, rule_id, "group", text, users, header):
                    continue
            except Exception as error:
                errors.append(f"{channel}: {type(error).__name__} {getattr(error, 'code', '')}".strip())
                continue
            for claim, *_ in claimed:
                self.ledger.mark_sent(claim, channel)
            self.delivered.append(Delivered(rule_id, "group", claimed[0][2], channel, text, users))
            return Outcome(True, channel)
        if self.config.settings.quiet:
            for claim, *_ in claimed:
                self.ledger.mark_sent(claim, "quiet")
            return Outcome(False, skipped="quiet")
        for claim, *_ in claimed:
            self.ledger.release(claim)
        raise DeliveryFailed(f"{rule_id}: no channel delivered ({'; '.join(errors) or 'none set up'})")

    def _deliver(self, channel: str, rule_id: str, obj: str, text: str, users: list[int], subject: str) -> bool:
        if channel == "bitrix":
            if self.bitrix is None or not users:
                return False
            # The docs make a TAG unique within the application, whoever received it: one per recipient, so the
            # notification of one user never removes another's.
            tag = f"throughline|{rule_id}|{obj}"[:240]
            body = fit_notification(text)
            commands = {
                f"n{index}": (
                    "im.notify.system.add",
                    {
                        "USER_ID": user,
                        "MESSAGE": body,
                        "TAG": f"{tag}|{user}",
                        "SUB_TAG": f"throughline|{rule_id}",
                        "CLIENT_ID": CLIENT_ID,
                    },
                )
                for index, user in enumerate(users[:50])
            }
            result = self.bitrix.batch(commands)
            for key in commands:
                result.get(key)  # raises the command's error: the next channel takes over
            return True
        if channel == "chat":
            dialog = self.config.settings.chat_dialog_id
            if self.bitrix is None or not dialog:
                return False
            for part in split_text(text, NOTIFY_LIMIT):
                self.bitrix.call("im.message.add", {"DIALOG_ID": dialog, "MESSAGE": part})
            return True
        if channel == "telegram":
            if self.telegram is None:
                return False
            for part in split_text(text, TELEGRAM_LIMIT):
                self.telegram(part)
            return True
        if channel == "email":
            if self.email is None:
                return False
            self.email(subject, text)
            return True
        return False

    def task(
        self,
        rule_id: str,
        obj: str,
        *,
        title: str,
        responsible: int | None,
        deadline: datetime | None,
        links: Sequence[tuple[str, int | str]],
        description: str = "",
        period: str = "once",
    ) -> Outcome:
        """A Bitrix24 task for ``responsible`` (default: the webhook's user), linked to CRM records, once."""
        rule = self.config.rule(rule_id)
        if rule is None:
            return Outcome(False, skipped="rule off")
        if self.bitrix is None:
            return Outcome(False, skipped="no portal")
        claim = self.ledger.claim(rule_id, obj, period, rule.cooldown_hours * 3600)
        if claim is None:
            return Outcome(False, skipped="already sent or cooling down")
        fields: dict[str, Any] = {
            "TITLE": title[:250],
            "RESPONSIBLE_ID": responsible or self.default_user,
            "DESCRIPTION": description,
            "UF_CRM_TASK": [f"{ENTITY_LINKS[entity]}_{record_id}" for entity, record_id in links],
        }
        if deadline is not None:
            fields["DEADLINE"] = deadline.isoformat(timespec="seconds")
        if rule.also_notify:
            fields["AUDITORS"] = list(rule.also_notify)
        if self.config.settings.quiet:
            self.ledger.mark_sent(claim, "quiet")
            return Outcome(False, skipped="quiet")
        try:
            answer = self.bitrix.call("tasks.task.add", {"fields": fields}).result
        except BitrixError as error:
            if error.retryable and getattr(error, "maybe_executed", False):
                # The portal may have created it: keep the claim (its lease lets a later run decide), never a twin.
                raise
            self.ledger.release(claim)
            raise
        task_id = str(((answer or {}).get("task") or {}).get("id") or "")
        self.ledger.mark_sent(claim, f"task {task_id}")
        self.delivered.append(Delivered(rule_id, obj, period, "task", title, [int(fields["RESPONSIBLE_ID"] or 0)]))
        return Outcome(True, "task")


class DeliveryFailed(RuntimeError):
    """Every channel of a rule failed; the ledger was released so the next run tries again."""


def _subject(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else "Throughline"
    return re.sub(r"\s+", " ", first)[:120]


# ---- optional channels -------------------------------------------------------------------------------------------


def telegram_sender(api_url: str, token: str, chat_id: str, session: Any = None) -> Callable[[str], None]:
    """``sendMessage`` (core.telegram.org/bots/api#sendmessage): ≤ 4 096 characters; one retry after a 429's
    ``retry_after`` (≤ 30 s). The token is in the URL: never logged."""
    import time

    import requests

    http = session or requests.Session()
    url = api_url.rstrip("/") + f"/bot{token}/sendMessage"

    def send(text: str) -> None:
        for attempt in (1, 2):
            try:
                answer = http.post(url, json={"chat_id": chat_id, "text": text}, timeout=(3.05, 15))
            except requests.RequestException as error:
                raise TelegramError(type(error).__name__) from None  # the URL (and token) stays out of the message
            body = _json(answer)
            if answer.status_code == 429 and attempt == 1:
                time.sleep(min(30, int((body.get("parameters") or {}).get("retry_after") or 1)))
                continue
            if answer.status_code != 200 or not body.get("ok"):
                raise TelegramError(f"{answer.status_code} {str(body.get('description') or '')[:200]}")
            return

    return send


class TelegramError(RuntimeError):
    code = "TELEGRAM"


def _json(answer: Any) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def email_sender(sender: str, recipients: Sequence[str], client: Any = None) -> Callable[[str, str], None]:
    """SES v2 ``SendEmail``, plain text (a sandboxed SES account delivers to verified addresses only)."""

    def send(subject: str, text: str) -> None:
        from throughline.adapters import aws

        ses = client or aws.client("sesv2")
        ses.send_email(
            FromEmailAddress=sender,
            Destination={"ToAddresses": list(recipients)},
            Content={
                "Simple": {
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": text, "Charset": "UTF-8"}},
                }
            },
        )

    return send


def optional_channels(settings: Any) -> dict[str, Any]:
    """The Telegram and e-mail senders the settings allow (``TELEGRAM_BOT_TOKEN`` + ``TELEGRAM_CHAT_ID``,
    ``ALERT_EMAIL_FROM`` + ``ALERT_EMAILS``)."""
    channels: dict[str, Any] = {}
    if settings.telegram_bot_token and settings.telegram_chat_id:
        channels["telegram"] = telegram_sender(
            settings.telegram_api_url, settings.telegram_bot_token, settings.telegram_chat_id
        )
    if settings.alert_email_from and settings.alert_emails:
        channels["email"] = email_sender(settings.alert_email_from, settings.alert_emails)
    return channels
