"""The optional channels: Telegram's sendMessage (a 429's retry_after honoured once, the token never in an error) and
SES (moto), and which of them the settings switch on."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from throughline.alerts.delivery import TelegramError, email_sender, optional_channels, telegram_sender
from throughline.config import load_settings


class Answer:
    def __init__(self, status, body):
        self.status_code, self._body = status, body

    def json(self):
        return self._body


class Session:
    def __init__(self, answers):
        self.answers, self.posts = list(answers), []

    def post(self, url, json, timeout):
        self.posts.append((url, json))
        return self.answers.pop(0)


def test_telegram_retries_once_after_429_and_keeps_the_token_out_of_errors(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    session = Session([Answer(429, {"ok": False, "parameters": {"retry_after": 3}}), Answer(200, {"ok": True})])
    telegram_sender("https://api.telegram.org/", "123:SECRET", "-100", session)("Тест")
    assert [post[1] for post in session.posts] == [{"chat_id": "-100", "text": "Тест"}] * 2
    assert session.posts[0][0] == "https://api.telegram.org/bot123:SECRET/sendMessage"
    failing = Session([Answer(400, {"ok": False, "description": "Bad Request: chat not found"})])
    with pytest.raises(TelegramError) as caught:
        telegram_sender("https://api.telegram.org/", "123:SECRET", "-100", failing)("Тест")
    assert "SECRET" not in str(caught.value) and "chat not found" in str(caught.value)


def test_email_goes_through_ses(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        ses = boto3.client("sesv2")
        ses.create_email_identity(EmailIdentity="alerts@example.ru")
        email_sender("alerts@example.ru", ["team@example.ru"], ses)("Тема", "Текст")
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ses.models import ses_backends

        [sent] = ses_backends[DEFAULT_ACCOUNT_ID]["eu-central-1"].sent_messages
        assert sent.destinations["ToAddresses"] == ["team@example.ru"] and sent.subject == "Тема"


def test_channels_come_on_with_their_settings():
    assert optional_channels(load_settings({})) == {}
    settings = load_settings({"TELEGRAM_BOT_TOKEN": "1:x", "TELEGRAM_CHAT_ID": "-1", "ALERT_EMAIL_FROM": "a@b.ru",
                              "ALERT_EMAILS": "c@d.ru, e@f.ru"})  # fmt: skip
    assert set(optional_channels(settings)) == {"telegram", "email"}
    assert settings.alert_emails == ("c@d.ru", "e@f.ru")
    assert "1:x" not in repr(settings) and "c@d.ru" not in repr(settings)  # secrets and addresses stay out of logs
