"""Integration tests of the operator side: portal setup (against the Bitrix24 sandbox), the DLQ replay and the
configuration's SECRETS_ARN path (against moto), and the ``python -m throughline`` commands run as processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from moto import mock_aws
from moto.server import ThreadedMotoServer

from local.bitrix24_sandbox import Sandbox
from throughline.bitrix24 import Bitrix24Client
from throughline.config import SECRET_NAMES, ConfigError, Settings, load_settings
from throughline.dlq import ReplayResult, replay_dead_letters
from throughline.setup import FieldStatus, ensure_journey_fields, report
from throughline.writer.leads import LeadRules

REPO_ROOT = Path(__file__).resolve().parents[2]
FIELD = "UF_CRM_CUSTOMER_JOURNEY"
REGION = "eu-central-1"
JOURNEY = (
    "Первичный контакт: 15.01.2025 — Google — CPC — «Купить CRM систему»\n"
    "16.01.2025 — Email — Рассылка — «Преимущества Битрикс24»\n"
    "17.01.2025 — Телефон — Исходящий звонок — Консультация"
)
SETTING_NAMES = [name.upper() for name in Settings.__dataclass_fields__]


# -- helpers ----------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m throughline` process: ours without any configuration, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SETTING_NAMES and key != "SECRETS_ARN" and not key.startswith("AWS_")
    }
    env["PYTHONPATH"] = "layers/core"
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "throughline", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def userfields(client: Bitrix24Client, entity: str, field_name: str = FIELD, lang: str = "ru") -> list[dict]:
    return client.call(f"crm.{entity}.userfield.list", {"filter": {"FIELD_NAME": field_name, "LANG": lang}}).result


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials, our region, and no configuration or endpoint leaking in from the outer environment."""
    for name in [*SETTING_NAMES, "SECRETS_ARN", "AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)


@pytest.fixture
def secretsmanager(aws_env: None) -> Iterator[Any]:
    parameters.clear_caches()  # Powertools keeps providers (and their cached values) process-wide
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)
    parameters.clear_caches()


@pytest.fixture
def sqs(aws_env: None) -> Iterator[Any]:
    with mock_aws():
        yield boto3.client("sqs", region_name=REGION)


def fifo_pair(sqs: Any, name: str = "writes") -> tuple[str, str]:
    """A FIFO queue whose redrive policy points at a FIFO dead-letter queue, as template.yaml builds them."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue_url = sqs.create_queue(
        QueueName=f"{name}.fifo",
        Attributes={
            "FifoQueue": "true",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        },
    )["QueueUrl"]
    return queue_url, dlq_url


def put_dead_letters(sqs: Any, dlq_url: str, count: int = 15, groups: tuple[str, ...] = ("a", "b", "c")) -> None:
    """``count`` messages, interleaved over ``groups``; message k of a group carries seq k."""
    for index in range(count):
        group = groups[index % len(groups)]
        sqs.send_message(
            QueueUrl=dlq_url,
            MessageBody=json.dumps({"person": group, "seq": index // len(groups)}),
            MessageGroupId=f"person-{group}",
            MessageDeduplicationId=f"submission-{index}",
            MessageAttributes={"kind": {"DataType": "String", "StringValue": "lead"}},
        )


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Receive and delete everything in a queue, in the order SQS hands it out."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return messages
        for message in batch:
            messages.append(message)
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def by_group(messages: list[dict[str, Any]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for message in messages:
        body = json.loads(message["Body"])
        assert message["Attributes"]["MessageGroupId"] == f"person-{body['person']}"
        groups.setdefault(message["Attributes"]["MessageGroupId"], []).append(body["seq"])
    return groups


def queue_counts(sqs: Any, queue_url: str) -> tuple[int, int]:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


# -- ensure_journey_fields / report -----------------------------------------------------------------------------------


def test_journey_field_is_created_once_on_leads_and_deals(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    # Before setup the portal silently drops the unknown user field, as a real portal does.
    before = client.call("crm.lead.add", {"fields": {"TITLE": "До настройки", FIELD: JOURNEY}}).result
    assert FIELD not in client.call("crm.lead.get", {"id": before}).result

    first = ensure_journey_fields(client, FIELD)

    assert first == [FieldStatus("lead", FIELD, True, "string"), FieldStatus("deal", FIELD, True, "string")]
    for entity in ("lead", "deal"):
        (field,) = userfields(client, entity)
        assert field["FIELD_NAME"] == FIELD
        assert field["USER_TYPE_ID"] == "string"
        assert field["MULTIPLE"] == "N"
        assert field["MANDATORY"] == "N"
        assert field["XML_ID"] == "THROUGHLINE_JOURNEY"
        assert field["EDIT_FORM_LABEL"] == "Путь клиента"
        assert field["LIST_COLUMN_LABEL"] == "Путь клиента"
        assert field["LIST_FILTER_LABEL"] == "Путь клиента"
        assert field["SETTINGS"] == {"ROWS": 8}  # a multi-line text box
        assert userfields(client, entity, lang="en")[0]["EDIT_FORM_LABEL"] == "Customer journey"
    assert sandbox.stats()["by_method"]["crm.lead.userfield.add"] == 1
    assert sandbox.stats()["by_method"]["crm.deal.userfield.add"] == 1

    sandbox.reset_stats()
    second = ensure_journey_fields(client, FIELD)

    assert second == [FieldStatus("lead", FIELD, False, "string"), FieldStatus("deal", FIELD, False, "string")]
    assert sandbox.stats()["by_method"] == {"crm.lead.userfield.list": 1, "crm.deal.userfield.list": 1}
    assert len(userfields(client, "lead")) == len(userfields(client, "deal")) == 1

    # Now the field keeps the multi-line journey, by a plain call and through a (form-encoded) batch.
    lead_id = client.call("crm.lead.add", {"fields": {"TITLE": "После настройки", FIELD: JOURNEY}}).result
    assert client.call("crm.lead.get", {"id": lead_id}).result[FIELD] == JOURNEY
    written = client.batch(
        {
            "deal": ("crm.deal.add", {"fields": {"TITLE": "Сделка", FIELD: JOURNEY}}),
            "lead": ("crm.lead.update", {"id": before, "fields": {FIELD: JOURNEY + "\n18.01.2025 — Сайт — Повтор"}}),
        }
    )
    assert written.errors == {}
    assert client.call("crm.deal.get", {"id": written.results["deal"]}).result[FIELD] == JOURNEY
    assert client.call("crm.lead.get", {"id": before}).result[FIELD].splitlines()[-1] == "18.01.2025 — Сайт — Повтор"


def test_journey_field_with_another_name_gets_the_prefix_once(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)

    statuses = ensure_journey_fields(client, "UF_CRM_TL_PATH")

    assert [status.created for status in statuses] == [True, True]
    assert [field["FIELD_NAME"] for field in userfields(client, "lead", "UF_CRM_TL_PATH")] == ["UF_CRM_TL_PATH"]
    assert userfields(client, "lead", FIELD) == []


def test_report_lists_sources_and_users_and_flags_unknown_source_ids(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    rules = LeadRules(source_map={"social": "UC_SOCIAL", "paid": "UC_PAID"})

    lines = report(client, rules).splitlines()

    assert lines[:2] == [
        f"journey field {FIELD} on leads: created",
        f"journey field {FIELD} on deals: created",
    ]
    start = lines.index("Lead sources in this portal (SOURCE_ID — name):") + 1
    assert [line.split()[0] for line in lines[start : start + 13] if line] == [
        "CALL", "EMAIL", "WEB", "ADVERTISING", "PARTNER", "RECOMMENDATION",
        "TRADE_SHOW", "WEBFORM", "CALLBACK", "RC_GENERATOR", "STORE", "OTHER",
    ]  # fmt: skip
    assert any(line.split() == ["WEB", "Веб-сайт"] for line in lines)
    assert any(line.split() == ["ADVERTISING", "Реклама"] for line in lines)

    mapping = {line.split()[0]: line for line in lines if line.startswith("  ") and len(line.split()) >= 3}
    assert mapping["social"].endswith("UC_SOCIAL   ← not in this portal's dictionary!")
    assert "Социальные сети" in mapping["social"]
    assert mapping["organic_search"].rstrip().endswith(" WEB")
    assert mapping["email"].rstrip().endswith(" EMAIL")
    assert mapping["offline"].rstrip().endswith(" OTHER")
    assert mapping["paid"].endswith("UC_PAID   ← missing!")
    flagged = [line.split()[0] for line in lines if "←" in line]
    assert flagged == ["social", "paid"]

    first_user = lines.index("Active users (ids for BITRIX24_RESPONSIBLE_MAP / BITRIX24_DEFAULT_RESPONSIBLE_ID):") + 1
    users = lines[first_user : lines.index("", first_user)]
    assert [line.split() for line in users] == [
        ["1", "Анна", "Смирнова"],
        ["2", "Иван", "Петров"],
        ["3", "Ольга", "Кузнецова"],
    ]

    # Once the portal has the source, the warning goes; the field is reported as already there.
    client.call("crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "UC_SOCIAL", "NAME": "Соцсети"}})
    again = report(client, rules).splitlines()
    assert again[:2] == [
        f"journey field {FIELD} on leads: already there (string)",
        f"journey field {FIELD} on deals: already there (string)",
    ]
    assert [line.split()[0] for line in again if "←" in line] == ["paid"]
    assert any(line.split() == ["UC_SOCIAL", "Соцсети"] for line in again)


def test_report_prints_the_crm_mode(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    assert report(client, LeadRules()).splitlines()[-1].startswith("CRM mode: classic (crm.settings.mode.get = 1)")
    sandbox.crm_mode = "simple"
    last = report(client, LeadRules()).splitlines()[-1]
    assert last.startswith("CRM mode: simple (crm.settings.mode.get = 2)") and "contact and a deal" in last


def test_report_says_whether_the_webhooks_user_is_an_administrator_and_what_is_lost_if_not(sandbox: Sandbox) -> None:
    client = Bitrix24Client(sandbox.webhook_url)
    lines = report(client, LeadRules()).splitlines()
    assert "Webhook user: administrator (user.admin = true): every CRM record is readable" in lines
    assert not any(line.startswith("WARNING") for line in lines)
    sandbox.set_access(admin=False)
    [warning] = [line for line in report(client, LeadRules()).splitlines() if line.startswith("WARNING")]
    assert "not an administrator (user.admin = false)" in warning and "«Access denied»" in warning
    assert "never reach the journey" in warning and "ROI report" in warning
    assert sandbox.stats()["by_method"]["user.admin"] == 2


# -- the bitrix-setup command -----------------------------------------------------------------------------------------


def test_bitrix_setup_command_creates_the_field(sandbox: Sandbox) -> None:
    done = run_cli("bitrix-setup", env=cli_env(BITRIX24_WEBHOOK_URL=sandbox.webhook_url))

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert f"journey field {FIELD} on leads: created" in done.stdout.splitlines()
    assert f"journey field {FIELD} on deals: created" in done.stdout.splitlines()
    assert "Анна Смирнова" in done.stdout
    client = Bitrix24Client(sandbox.webhook_url)
    assert userfields(client, "lead")[0]["EDIT_FORM_LABEL"] == "Путь клиента"

    assert "Webhook scopes: im and task granted" in done.stdout

    sandbox.set_access(scopes=["crm", "user", "im"])  # a webhook made without «task»
    again = run_cli("bitrix-setup", env=cli_env(BITRIX24_WEBHOOK_URL=sandbox.webhook_url))
    assert again.returncode == 0, again.stderr
    assert f"journey field {FIELD} on leads: already there (string)" in again.stdout.splitlines()
    assert "WARNING: the webhook lacks scope(s) task — tasks" in again.stdout


@pytest.mark.parametrize(
    "url_template",
    [
        pytest.param("{base}/rest/1/{secret}/", id="wrong-secret"),
        pytest.param("ftp://portal.example/{secret}", id="malformed"),
    ],
)
def test_bitrix_setup_command_fails_in_one_line_without_the_secret(sandbox: Sandbox, url_template: str) -> None:
    secret = "wr0ngs3cr3tv4lue"
    url = url_template.format(base=sandbox.base_url, secret=secret)

    done = run_cli("bitrix-setup", env=cli_env(BITRIX24_WEBHOOK_URL=url))

    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    assert secret not in done.stderr
    assert userfields(Bitrix24Client(sandbox.webhook_url), "lead") == []


def test_bitrix_setup_command_reports_a_wrong_secret_as_such(sandbox: Sandbox) -> None:
    done = run_cli("bitrix-setup", env=cli_env(BITRIX24_WEBHOOK_URL=f"{sandbox.base_url}/rest/1/nope-n0pe/"))

    assert (
        done.stderr.strip() == "error: crm.lead.userfield.list: INVALID_CREDENTIALS (401) Invalid request credentials"
    )


# -- replay_dead_letters ----------------------------------------------------------------------------------------------


def test_replay_moves_every_message_back_in_group_order(sqs: Any) -> None:
    queue_url, dlq_url = fifo_pair(sqs)
    put_dead_letters(sqs, dlq_url)
    progress: list[str] = []

    result = replay_dead_letters(sqs, dead_letter_queue_url=dlq_url, queue_url=queue_url, progress=progress.append)

    assert result == ReplayResult(moved=15, failed=0)
    assert progress[-1] == "moved 15 message(s) so far"
    assert queue_counts(sqs, dlq_url) == (0, 0)
    moved = drain(sqs, queue_url)
    assert len(moved) == 15
    assert by_group(moved) == {"person-a": [0, 1, 2, 3, 4], "person-b": [0, 1, 2, 3, 4], "person-c": [0, 1, 2, 3, 4]}
    assert {message["Attributes"]["MessageDeduplicationId"].split("-replay-")[0] for message in moved} == {
        f"submission-{index}" for index in range(15)
    }
    kinds = [message["MessageAttributes"] for message in moved]
    assert kinds == [{"kind": {"DataType": "String", "StringValue": "lead"}}] * 15


def test_replay_respects_the_limit_and_the_rest_follows_in_order(sqs: Any) -> None:
    queue_url, dlq_url = fifo_pair(sqs)
    put_dead_letters(sqs, dlq_url)

    first = replay_dead_letters(sqs, dead_letter_queue_url=dlq_url, queue_url=queue_url, limit=4)

    assert first == ReplayResult(moved=4, failed=0)
    assert queue_counts(sqs, dlq_url) == (11, 0)
    early = drain(sqs, queue_url)
    assert len(early) == 4

    rest = replay_dead_letters(sqs, dead_letter_queue_url=dlq_url, queue_url=queue_url, limit=50)

    assert rest == ReplayResult(moved=11, failed=0)
    assert queue_counts(sqs, dlq_url) == (0, 0)
    # Within each group the first run moved a prefix and the second run the remainder: order is kept throughout.
    assert by_group(early + drain(sqs, queue_url)) == {
        "person-a": [0, 1, 2, 3, 4],
        "person-b": [0, 1, 2, 3, 4],
        "person-c": [0, 1, 2, 3, 4],
    }


def test_replay_gets_through_the_queues_deduplication_window(sqs: Any) -> None:
    queue_url, dlq_url = fifo_pair(sqs)
    body = json.dumps({"person": "a", "seq": 0})
    # The writer's original message, sent a moment ago and dead-lettered with the same deduplication id. SQS remembers
    # the id for 5 minutes even after the message is deleted; moto only while the message exists, so the original
    # stays in flight here to keep its id inside the window.
    sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageGroupId="person-a", MessageDeduplicationId="sub-42")
    (in_flight,) = sqs.receive_message(QueueUrl=queue_url, VisibilityTimeout=300)["Messages"]
    sqs.send_message(QueueUrl=dlq_url, MessageBody=body, MessageGroupId="person-a", MessageDeduplicationId="sub-42")
    # Sending it again as it was is silently dropped by the queue.
    sqs.send_message(QueueUrl=queue_url, MessageBody=body, MessageGroupId="person-a", MessageDeduplicationId="sub-42")
    assert queue_counts(sqs, queue_url) == (0, 1)

    result = replay_dead_letters(sqs, dead_letter_queue_url=dlq_url, queue_url=queue_url)

    assert result == ReplayResult(moved=1, failed=0)
    assert queue_counts(sqs, queue_url) == (1, 1)
    assert queue_counts(sqs, dlq_url) == (0, 0)
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=in_flight["ReceiptHandle"])
    (replayed,) = drain(sqs, queue_url)
    assert replayed["Body"] == body
    assert replayed["Attributes"]["MessageGroupId"] == "person-a"
    assert replayed["Attributes"]["MessageDeduplicationId"] != "sub-42"
    assert replayed["Attributes"]["MessageDeduplicationId"].startswith("sub-42-replay-")


def test_replay_dlq_command_against_a_moto_server(aws_env: None) -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        queue_url, dlq_url = fifo_pair(sqs)
        put_dead_letters(sqs, dlq_url, count=6)
        env = cli_env(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION=REGION,
        )

        done = run_cli("replay-dlq", "--queue-url", queue_url, "--dlq-url", dlq_url, env=env)

        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[-1] == "done: 6 moved, 0 failed"
        assert queue_counts(sqs, dlq_url) == (0, 0)
        assert by_group(drain(sqs, queue_url)) == {"person-a": [0, 1], "person-b": [0, 1], "person-c": [0, 1]}
    finally:
        server.stop()


# -- load_settings with SECRETS_ARN -----------------------------------------------------------------------------------


def create_secret(secretsmanager: Any, value: Any, name: str = "throughline/test") -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return secretsmanager.create_secret(Name=name, SecretString=text)["ARN"]


def test_secrets_come_from_the_json_secret(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = create_secret(
        secretsmanager,
        {
            "BITRIX24_WEBHOOK_URL": "https://portal.bitrix24.ru/rest/7/fr0msecr3t",
            "BITRIX24_APP_TOKENS": ["tok-one", "tok-two"],
            "YANDEX_DIRECT_TOKEN": "yd-fr0m-secret",
            "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-fr0m-secret",
            "REPORT_CURRENCY": "USD",  # not a secret: the secret does not carry ordinary settings
        },
    )
    monkeypatch.setenv("SECRETS_ARN", arn)
    monkeypatch.setenv("TIMEZONE", "Asia/Yekaterinburg")

    settings = load_settings()

    assert settings.bitrix24_webhook_url == "https://portal.bitrix24.ru/rest/7/fr0msecr3t/"
    assert settings.bitrix24_app_tokens == ("tok-one", "tok-two")
    assert settings.yandex_direct_token == "yd-fr0m-secret"
    assert settings.google_ads_developer_token == "dev-fr0m-secret"
    assert settings.google_ads_client_id is None
    assert settings.report_currency == "RUB"
    assert settings.timezone == "Asia/Yekaterinburg"
    assert "fr0msecr3t" not in repr(settings)


def test_an_environment_variable_wins_over_the_secret(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    arn = create_secret(
        secretsmanager,
        {
            "BITRIX24_WEBHOOK_URL": "https://secret.bitrix24.ru/rest/1/fr0msecr3t/",
            "BITRIX24_APP_TOKENS": "secret-token",
            "YANDEX_DIRECT_TOKEN": "yd-fr0m-secret",
        },
    )
    monkeypatch.setenv("SECRETS_ARN", arn)
    monkeypatch.setenv("BITRIX24_WEBHOOK_URL", "https://env.bitrix24.ru/rest/2/fr0menv/")
    monkeypatch.setenv("BITRIX24_APP_TOKENS", "env-token-a, env-token-b")
    monkeypatch.setenv("YANDEX_DIRECT_TOKEN", "")  # empty counts as absent: the secret fills it

    settings = load_settings()

    assert settings.bitrix24_webhook_url == "https://env.bitrix24.ru/rest/2/fr0menv/"
    assert settings.bitrix24_app_tokens == ("env-token-a", "env-token-b")
    assert settings.yandex_direct_token == "yd-fr0m-secret"


def test_the_secret_is_not_read_when_the_environment_has_every_secret(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SECRETS_ARN names a secret that does not exist: reading it would fail.
    monkeypatch.setenv("SECRETS_ARN", f"arn:aws:secretsmanager:{REGION}:123456789012:secret:absent-AbCdEf")
    for name in SECRET_NAMES:
        value = {"BITRIX24_WEBHOOK_URL": "https://env.bitrix24.ru/rest/1/x/", "PERSON_KEY_SECRET": "k" * 64}
        monkeypatch.setenv(name, value.get(name, "v"))

    settings = load_settings()

    assert settings.bitrix24_webhook_url == "https://env.bitrix24.ru/rest/1/x/"
    assert settings.google_ads_refresh_token == "v"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(["s3cr3t-in-a-list"], id="json-array"),
        pytest.param("s3cr3t-json-string", id="json-string"),
    ],
)
def test_a_secret_that_is_not_a_json_object_is_a_config_error(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    monkeypatch.setenv("SECRETS_ARN", create_secret(secretsmanager, json.dumps(value)))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value) == "the secret named by SECRETS_ARN must be a JSON object"


def test_a_plain_text_secret_is_a_config_error(secretsmanager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRETS_ARN", create_secret(secretsmanager, "plain-s3cr3t-text"))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "plain-s3cr3t-text" not in str(caught.value)


def test_a_bad_value_inside_the_secret_is_named_but_not_shown(
    secretsmanager: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRETS_ARN", create_secret(secretsmanager, {"BITRIX24_WEBHOOK_URL": "ftp://x/s3cr3tv4lue"}))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value) == (
        "invalid configuration: BITRIX24_WEBHOOK_URL: must look like https://<portal>/rest/<user>/<secret>/"
    )
