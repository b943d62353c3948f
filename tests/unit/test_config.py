"""Unit tests of throughline.config: parsers, defaults, secrets and SECRETS_ARN."""

from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo

import pytest

from throughline import config
from throughline.config import SECRET_NAMES, ConfigError, Settings, load_settings

WEBHOOK = "https://portal.bitrix24.ru/rest/1/w3bh00ks3cr3t/"
ALL_SECRETS_ENV = {
    "BITRIX24_WEBHOOK_URL": WEBHOOK,
    "BITRIX24_APP_TOKENS": "apptok3n-one,apptok3n-two",
    "YANDEX_DIRECT_TOKEN": "yd-t0ken-s3cret",
    "GOOGLE_ADS_CLIENT_ID": "gads-cl1ent-id",
    "GOOGLE_ADS_CLIENT_SECRET": "gads-cl1ent-s3cret",
    "GOOGLE_ADS_REFRESH_TOKEN": "gads-r3fresh-t0ken",
    "GOOGLE_ADS_DEVELOPER_TOKEN": "gads-d3v-t0ken",
    "VK_ADS_CLIENT_ID": "vk-cl1ent-id",
    "VK_ADS_CLIENT_SECRET": "vk-cl1ent-s3cret",
    "PERSON_KEY_SECRET": "p3rson-k3y-" + "x" * 32,
    "SMARTCAPTCHA_SERVER_KEY": "ysc2_sm4rtc4ptch4-s3rver",
    "TURNSTILE_SECRET_KEY": "0x4-turnst1le-s3cret",
    "METRICA_TOKEN": "ym-t0ken-s3cret",
    "YANDEX_AUDIENCE_TOKEN": "ya-aud1ence-s3cret",
    "TELEGRAM_BOT_TOKEN": "123:tg-b0t-t0ken",
    "TELEGRAM_CHAT_ID": "-1001234567",
    "ALERT_EMAIL_FROM": "alerts@example.ru",
    "ALERT_EMAILS": "team@example.ru",
}
SECRET_VALUES = ("w3bh00ks3cr3t", "apptok3n-one", "apptok3n-two", "yd-t0ken-s3cret", "gads-cl1ent-id",
                 "gads-cl1ent-s3cret", "gads-r3fresh-t0ken", "gads-d3v-t0ken",
                 "vk-cl1ent-id", "vk-cl1ent-s3cret", "p3rson-k3y-", "sm4rtc4ptch4-s3rver",
                 "turnst1le-s3cret", "ym-t0ken-s3cret", "ya-aud1ence-s3cret", "tg-b0t-t0ken")  # fmt: skip


class FetchSpy:
    """A stand-in for Secrets Manager that records every call."""

    def __init__(self, secret: dict):
        self.secret = secret
        self.calls: list[str] = []

    def __call__(self, arn: str) -> dict:
        self.calls.append(arn)
        return self.secret


def _must_not_fetch(arn: str) -> dict:
    raise AssertionError(f"fetch_secret must not be called (arn={arn!r})")


# -- defaults -------------------------------------------------------------------------------------------------------


def test_defaults_from_an_empty_environment():
    settings = load_settings({}, fetch_secret=_must_not_fetch)

    assert settings.bitrix24_webhook_url is None
    assert settings.bitrix24_app_tokens == ()
    assert settings.bitrix24_journey_field == "UF_CRM_CUSTOMER_JOURNEY"
    assert settings.bitrix24_source_map == {}
    assert settings.bitrix24_responsible_map == {}
    assert settings.bitrix24_default_responsible_id is None
    assert settings.bitrix24_rate_per_second == 2.0
    assert settings.bitrix24_burst == 50
    assert settings.bitrix24_writer_concurrency == 2
    assert settings.lead_title_template == "Заявка с формы «{form}»"
    assert settings.yandex_direct_token is None
    assert settings.yandex_direct_client_logins == ()
    assert settings.yandex_direct_api_url == "https://api.direct.yandex.com/json/v5/"
    assert settings.google_ads_customer_ids == ()
    assert settings.google_ads_login_customer_id is None
    assert settings.google_ads_api_url == "https://googleads.googleapis.com/v26/"  # v21 was sunset on 2026-08-05
    assert settings.google_oauth_token_url == "https://oauth2.googleapis.com/token"
    assert settings.allowed_origins == ()
    assert settings.honeypot_field == "_gotcha"
    assert settings.max_body_bytes == 65536
    assert settings.default_phone_region == "RU"
    assert settings.double_submit_window_seconds == 600
    assert settings.report_currency == "RUB"
    assert settings.timezone == "Europe/Moscow"
    assert settings.zone == ZoneInfo("Europe/Moscow")
    assert settings.data_bucket is None
    assert settings.writes_queue_url is None
    assert settings.idempotency_table is None
    assert settings.journey_table is None
    assert settings.writer_retry_base_seconds == 30
    assert settings.writer_retry_max_seconds == 900


def test_settings_are_immutable_and_default_maps_are_not_shared():
    first, second = Settings(), Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.timezone = "UTC"  # type: ignore[misc]
    assert first.bitrix24_source_map is not second.bitrix24_source_map


def test_empty_environment_values_mean_default():
    settings = load_settings({"TIMEZONE": "", "BITRIX24_BURST": "", "REPORT_CURRENCY": ""})
    assert (settings.timezone, settings.bitrix24_burst, settings.report_currency) == ("Europe/Moscow", 50, "RUB")


def test_environment_names_are_upper_case_only():
    assert load_settings({"timezone": "UTC"}).timezone == "Europe/Moscow"


def test_text_values_are_stripped():
    settings = load_settings({"REPORT_CURRENCY": "  USD ", "DATA_BUCKET": "  bucket-1  ", "JOURNEY_TABLE": "   "})
    assert settings.report_currency == "USD"
    assert settings.data_bucket == "bucket-1"
    assert settings.journey_table is None


# -- comma lists ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://a.ru", ("https://a.ru",)),
        ("https://a.ru,https://b.ru", ("https://a.ru", "https://b.ru")),
        (" https://a.ru , https://b.ru ,", ("https://a.ru", "https://b.ru")),
        (",,, ,", ()),
        ("x,,y", ("x", "y")),
    ],
)
def test_comma_lists(raw, expected):
    assert load_settings({"ALLOWED_ORIGINS": raw}).allowed_origins == expected


def test_comma_lists_for_every_list_setting():
    settings = load_settings(
        {
            "BITRIX24_APP_TOKENS": "t1, t2",
            "YANDEX_DIRECT_CLIENT_LOGINS": "login-a,login-b",
            "GOOGLE_ADS_CUSTOMER_IDS": "1234567890 , 9876543210",
        }
    )
    assert settings.bitrix24_app_tokens == ("t1", "t2")
    assert settings.yandex_direct_client_logins == ("login-a", "login-b")
    assert settings.google_ads_customer_ids == ("1234567890", "9876543210")


# -- JSON maps ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"google": "ADVERTISING", "yandex": "WEB"}', {"google": "ADVERTISING", "yandex": "WEB"}),
        ('{"contact": 7, "order": "12"}', {"contact": "7", "order": "12"}),
        ("{}", {}),
        ("   ", {}),
    ],
)
def test_json_maps(raw, expected):
    settings = load_settings({"BITRIX24_SOURCE_MAP": raw, "BITRIX24_RESPONSIBLE_MAP": raw})
    assert settings.bitrix24_source_map == expected
    assert settings.bitrix24_responsible_map == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"google": ', "BITRIX24_SOURCE_MAP: not valid JSON"),
        ("google=ADVERTISING", "BITRIX24_SOURCE_MAP: not valid JSON"),
        ('["google", "yandex"]', "BITRIX24_SOURCE_MAP: must be a JSON object"),
        ('"google"', "BITRIX24_SOURCE_MAP: must be a JSON object"),
        ("42", "BITRIX24_SOURCE_MAP: must be a JSON object"),
        ('{"google": {"id": "ADS"}}', "BITRIX24_SOURCE_MAP: value for 'google' must be a string or a whole number"),
        ('{"google": ["ADS"]}', "BITRIX24_SOURCE_MAP: value for 'google' must be a string or a whole number"),
        ('{"google": true}', "BITRIX24_SOURCE_MAP: value for 'google' must be a string or a whole number"),
        ('{"google": null}', "BITRIX24_SOURCE_MAP: value for 'google' must be a string or a whole number"),
    ],
)
def test_json_maps_rejected(raw, reason):
    with pytest.raises(ConfigError) as error:
        load_settings({"BITRIX24_SOURCE_MAP": raw})
    assert reason in str(error.value)


# -- integers and numbers -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("BITRIX24_BURST", "1", 1),
        ("BITRIX24_BURST", " 25 ", 25),
        ("BITRIX24_WRITER_CONCURRENCY", "10", 10),
        ("MAX_BODY_BYTES", "1024", 1024),
        ("MAX_BODY_BYTES", "1000000", 1_000_000),
        ("DOUBLE_SUBMIT_WINDOW_SECONDS", "60", 60),
        ("DOUBLE_SUBMIT_WINDOW_SECONDS", "86400", 86400),
        ("WRITER_RETRY_BASE_SECONDS", "0", 0),
        ("WRITER_RETRY_MAX_SECONDS", "43200", 43200),
        ("BITRIX24_DEFAULT_RESPONSIBLE_ID", "17", 17),
    ],
)
def test_integers_within_bounds(name, raw, expected):
    assert getattr(load_settings({name: raw}), name.lower()) == expected


@pytest.mark.parametrize(
    ("name", "raw", "reason"),
    [
        ("BITRIX24_BURST", "0", "must be at least 1"),
        ("BITRIX24_BURST", "-5", "must be at least 1"),
        ("BITRIX24_BURST", "7.5", "must be an integer"),
        ("BITRIX24_BURST", "fifty", "must be an integer"),
        ("BITRIX24_WRITER_CONCURRENCY", "0", "must be at least 1"),
        ("MAX_BODY_BYTES", "1023", "must be between 1024 and 1000000"),
        ("MAX_BODY_BYTES", "1000001", "must be between 1024 and 1000000"),
        ("DOUBLE_SUBMIT_WINDOW_SECONDS", "59", "must be between 60 and 86400"),
        ("DOUBLE_SUBMIT_WINDOW_SECONDS", "86401", "must be between 60 and 86400"),
        ("WRITER_RETRY_BASE_SECONDS", "-1", "must be between 0 and 43200"),
        ("WRITER_RETRY_MAX_SECONDS", "43201", "must be between 0 and 43200"),
        ("BITRIX24_DEFAULT_RESPONSIBLE_ID", "0", "must be at least 1"),
        ("BITRIX24_DEFAULT_RESPONSIBLE_ID", "admin", "must be an integer"),
    ],
)
def test_integers_rejected(name, raw, reason):
    with pytest.raises(ConfigError) as error:
        load_settings({name: raw})
    assert str(error.value) == f"invalid configuration: {name}: {reason}"


def test_optional_integer_blank_is_none():
    assert load_settings({"BITRIX24_DEFAULT_RESPONSIBLE_ID": "  "}).bitrix24_default_responsible_id is None


@pytest.mark.parametrize(("raw", "expected"), [("0.5", 0.5), ("2", 2.0), (" 1.25 ", 1.25), ("1e1", 10.0)])
def test_positive_numbers(raw, expected):
    assert load_settings({"BITRIX24_RATE_PER_SECOND": raw}).bitrix24_rate_per_second == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("0", "must be a finite number greater than 0"),
        ("-1.5", "must be a finite number greater than 0"),
        ("fast", "must be a number"),
    ],
)
def test_positive_numbers_rejected(raw, reason):
    with pytest.raises(ConfigError) as error:
        load_settings({"BITRIX24_RATE_PER_SECOND": raw})
    assert str(error.value) == f"invalid configuration: BITRIX24_RATE_PER_SECOND: {reason}"


def test_positive_number_rejects_nan():
    with pytest.raises(ConfigError):
        load_settings({"BITRIX24_RATE_PER_SECOND": "nan"})


# -- time zone ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Asia/Yekaterinburg", " Europe/Kaliningrad "])
def test_time_zone(zone):
    settings = load_settings({"TIMEZONE": zone})
    assert settings.timezone == zone.strip()
    assert settings.zone == ZoneInfo(zone.strip())


@pytest.mark.parametrize("zone", ["Mars/Olympus", "Europe/Moskva", "../../etc/passwd", "   "])
def test_time_zone_rejected(zone):
    with pytest.raises(ConfigError) as error:
        load_settings({"TIMEZONE": zone})
    assert str(error.value) == f"invalid configuration: TIMEZONE: unknown time zone {zone.strip()!r}"


# -- webhook URL ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://portal.bitrix24.ru/rest/1/abc/", "https://portal.bitrix24.ru/rest/1/abc/"),
        ("https://portal.bitrix24.ru/rest/1/abc", "https://portal.bitrix24.ru/rest/1/abc/"),
        ("  http://127.0.0.1:8080/rest/1/abc  ", "http://127.0.0.1:8080/rest/1/abc/"),
        # Plain HTTP only on loopback, where the local stack runs its sandbox portal.
        ("http://127.5.6.7:8090/rest/1/abc/", "http://127.5.6.7:8090/rest/1/abc/"),
        ("http://localhost:8090/rest/1/abc/", "http://localhost:8090/rest/1/abc/"),
        ("http://[::1]:8090/rest/1/abc/", "http://[::1]:8090/rest/1/abc/"),
        ("HTTPS://Portal.Bitrix24.ru/rest/1/abc/", "HTTPS://Portal.Bitrix24.ru/rest/1/abc/"),
        ("", None),
        ("   ", None),
    ],
)
def test_webhook_url(raw, expected):
    assert load_settings({"BITRIX24_WEBHOOK_URL": raw}).bitrix24_webhook_url == expected


@pytest.mark.parametrize(
    "raw",
    [
        "portal.bitrix24.ru/rest/1/w3bh00ks3cr3t/",
        "ftp://portal.bitrix24.ru/rest/1/w3bh00ks3cr3t/",
        "https://portal.bitrix24.ru/api/1/w3bh00ks3cr3t/",
        "https://portal.bitrix24.ru/api/?next=/rest/1/w3bh00ks3cr3t/",
        "https:///rest/1/w3bh00ks3cr3t/",
        "https://[/rest/1/w3bh00ks3cr3t/",
        "w3bh00ks3cr3t",
    ],
)
def test_webhook_url_rejected_without_echoing_the_secret(raw):
    with pytest.raises(ConfigError) as error:
        load_settings({"BITRIX24_WEBHOOK_URL": raw})
    message = str(error.value)
    assert message == (
        "invalid configuration: BITRIX24_WEBHOOK_URL: must look like https://<portal>/rest/<user>/<secret>/"
    )
    assert "w3bh00ks3cr3t" not in message
    assert "w3bh00ks3cr3t" not in repr(error.value)


@pytest.mark.parametrize(
    "raw",
    [
        "http://portal.bitrix24.ru/rest/1/w3bh00ks3cr3t/",
        "http://10.0.0.5/rest/1/w3bh00ks3cr3t/",
        "http://127.0.0.1.evil.example/rest/1/w3bh00ks3cr3t/",
        "http://localhost.evil.example/rest/1/w3bh00ks3cr3t/",
        "http://[::2]/rest/1/w3bh00ks3cr3t/",
    ],
)
def test_plain_http_webhook_refused_outside_loopback(raw):
    # A real portal answers http:// with 400 INVALID_REQUEST "Https required": every write would end in the DLQ.
    with pytest.raises(ConfigError) as error:
        load_settings({"BITRIX24_WEBHOOK_URL": raw})
    assert "https://" in str(error.value) and "loopback" in str(error.value)
    assert "w3bh00ks3cr3t" not in str(error.value)


# -- user field name ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UF_CRM_JOURNEY", "UF_CRM_1700000000", " UF_CRM_PATH_2 ", "UF_CRM_" + "X" * 43])
def test_user_field_name(name):
    assert load_settings({"BITRIX24_JOURNEY_FIELD": name}).bitrix24_journey_field == name.strip()


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("uf_crm_journey", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("UF_CRM_Journey", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("JOURNEY", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("UF_JOURNEY", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("UF_CRM_JOURNEY-1", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("UF_CRM_JOUR NEY", "must be an upper-case Bitrix24 user field name starting with UF_CRM_"),
        ("UF_CRM_" + "X" * 44, "must be at most 50 characters (a Bitrix24 limit)"),
    ],
)
def test_user_field_name_rejected(name, reason):
    with pytest.raises(ConfigError) as error:
        load_settings({"BITRIX24_JOURNEY_FIELD": name})
    assert str(error.value) == f"invalid configuration: BITRIX24_JOURNEY_FIELD: {reason}"


def test_user_field_name_rejects_non_latin_letters():
    with pytest.raises(ConfigError):
        load_settings({"BITRIX24_JOURNEY_FIELD": "UF_CRM_ПУТЬ"})


# -- every problem at once, never a secret --------------------------------------------------------------------------


def test_all_bad_settings_reported_together():
    environ = {
        "BITRIX24_WEBHOOK_URL": "https://portal.bitrix24.ru/nope/w3bh00ks3cr3t",
        "BITRIX24_BURST": "0",
        "TIMEZONE": "Nowhere/City",
        "BITRIX24_SOURCE_MAP": "[1]",
        "MAX_BODY_BYTES": "10",
        "BITRIX24_JOURNEY_FIELD": "journey",
        "BITRIX24_RATE_PER_SECOND": "-2",
        "REPORT_CURRENCY": "USD",  # a good one among the bad
    }
    with pytest.raises(ConfigError) as error:
        load_settings(environ)
    message = str(error.value)
    assert message.startswith("invalid configuration: ")
    problems = message.removeprefix("invalid configuration: ").split("; ")
    assert {problem.split(":")[0] for problem in problems} == {
        "BITRIX24_WEBHOOK_URL",
        "BITRIX24_JOURNEY_FIELD",
        "BITRIX24_SOURCE_MAP",
        "BITRIX24_RATE_PER_SECOND",
        "BITRIX24_BURST",
        "MAX_BODY_BYTES",
        "TIMEZONE",
    }
    assert len(problems) == 7
    assert "w3bh00ks3cr3t" not in message
    assert "REPORT_CURRENCY" not in message


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_repr_never_shows_secret_values():
    settings = load_settings(ALL_SECRETS_ENV)
    assert settings.bitrix24_webhook_url == WEBHOOK
    assert settings.google_ads_developer_token == "gads-d3v-t0ken"
    for text in (repr(settings), str(settings)):
        for secret in SECRET_VALUES:
            assert secret not in text
        assert "bitrix24_webhook_url" not in text
    assert "timezone='Europe/Moscow'" in repr(settings)


def test_every_secret_field_is_hidden_from_repr():
    hidden = {spec.name for spec in dataclasses.fields(Settings) if not spec.repr}
    assert hidden == {name.lower() for name in SECRET_NAMES}


# -- SECRETS_ARN ----------------------------------------------------------------------------------------------------


def test_secrets_filled_from_the_secret_when_missing():
    fetch = FetchSpy({"BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/rest/9/fromsecret", "YANDEX_DIRECT_TOKEN": "yd"})
    settings = load_settings({"SECRETS_ARN": "arn:aws:secretsmanager:eu-central-1:1:secret:tl"}, fetch_secret=fetch)
    assert fetch.calls == ["arn:aws:secretsmanager:eu-central-1:1:secret:tl"]
    assert settings.bitrix24_webhook_url == "https://p.bitrix24.ru/rest/9/fromsecret/"
    assert settings.yandex_direct_token == "yd"
    assert settings.google_ads_client_id is None


def test_environment_wins_over_the_secret():
    fetch = FetchSpy(
        {
            "BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/rest/9/fromsecret/",
            "BITRIX24_APP_TOKENS": "secret-token",
            "GOOGLE_ADS_CLIENT_ID": "from-secret",
        }
    )
    environ = {"SECRETS_ARN": "arn:x", "BITRIX24_WEBHOOK_URL": WEBHOOK, "BITRIX24_APP_TOKENS": "env-token"}
    settings = load_settings(environ, fetch_secret=fetch)
    assert fetch.calls == ["arn:x"]  # GOOGLE_ADS_CLIENT_ID and others were missing
    assert settings.bitrix24_webhook_url == WEBHOOK
    assert settings.bitrix24_app_tokens == ("env-token",)
    assert settings.google_ads_client_id == "from-secret"


def test_empty_environment_value_is_filled_from_the_secret():
    fetch = FetchSpy({"YANDEX_DIRECT_TOKEN": "from-secret"})
    settings = load_settings({"SECRETS_ARN": "arn:x", "YANDEX_DIRECT_TOKEN": ""}, fetch_secret=fetch)
    assert settings.yandex_direct_token == "from-secret"


def test_secret_not_fetched_when_nothing_is_missing():
    settings = load_settings({**ALL_SECRETS_ENV, "SECRETS_ARN": "arn:x"}, fetch_secret=_must_not_fetch)
    assert settings.bitrix24_app_tokens == ("apptok3n-one", "apptok3n-two")


def test_secret_not_fetched_without_secrets_arn():
    settings = load_settings({"TIMEZONE": "UTC"}, fetch_secret=_must_not_fetch)
    assert settings.bitrix24_webhook_url is None


def test_secret_not_fetched_when_secrets_arn_is_empty():
    assert load_settings({"SECRETS_ARN": ""}, fetch_secret=_must_not_fetch).yandex_direct_token is None


def test_several_secrets_are_read_in_order_and_each_fills_what_it_holds():
    # The stack gives the writer the CRM secret and the person-key secret: one ARN list, each secret read once.
    secrets = {
        "arn:crm": {"BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/rest/9/crm/"},
        "arn:person": {"PERSON_KEY_SECRET": "k" * 64, "BITRIX24_WEBHOOK_URL": "https://old.bitrix24.ru/rest/1/x/"},
    }
    calls: list[str] = []

    def fetch(arn: str) -> dict:
        calls.append(arn)
        return secrets[arn]

    settings = load_settings({"SECRETS_ARN": " arn:crm , arn:person,arn:crm"}, fetch_secret=fetch)
    assert calls == ["arn:crm", "arn:person"]  # in order, once each
    assert settings.bitrix24_webhook_url == "https://p.bitrix24.ru/rest/9/crm/"  # the first listed wins
    assert settings.person_key_secret == "k" * 64
    assert settings.yandex_direct_token is None  # no listed secret holds it: never another secret's


def test_a_function_given_only_the_person_key_secret_never_sees_the_webhook():
    fetch = FetchSpy({"PERSON_KEY_SECRET": "p" * 64})
    settings = load_settings({"SECRETS_ARN": "arn:person"}, fetch_secret=fetch)
    assert fetch.calls == ["arn:person"]
    assert settings.person_key_secret == "p" * 64
    assert settings.bitrix24_webhook_url is None and settings.bitrix24_app_tokens == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["tok-a", "tok-b"], ("tok-a", "tok-b")),
        (["only"], ("only",)),
        ("tok-a, tok-b", ("tok-a", "tok-b")),
        ([], ()),
    ],
)
def test_list_values_in_the_secret(value, expected):
    fetch = FetchSpy({"BITRIX24_APP_TOKENS": value})
    assert load_settings({"SECRETS_ARN": "arn:x"}, fetch_secret=fetch).bitrix24_app_tokens == expected


def test_numbers_in_the_secret_become_text():
    fetch = FetchSpy({"GOOGLE_ADS_CLIENT_ID": 123456})
    assert load_settings({"SECRETS_ARN": "arn:x"}, fetch_secret=fetch).google_ads_client_id == "123456"


@pytest.mark.parametrize("value", [None, ""])
def test_blank_secret_values_are_ignored(value):
    fetch = FetchSpy({"YANDEX_DIRECT_TOKEN": value})
    assert load_settings({"SECRETS_ARN": "arn:x"}, fetch_secret=fetch).yandex_direct_token is None


def test_only_secret_names_are_read_from_the_secret():
    fetch = FetchSpy({"TIMEZONE": "UTC", "DATA_BUCKET": "sneaky", "YANDEX_DIRECT_TOKEN": "yd"})
    settings = load_settings({"SECRETS_ARN": "arn:x"}, fetch_secret=fetch)
    assert settings.timezone == "Europe/Moscow"
    assert settings.data_bucket is None
    assert settings.yandex_direct_token == "yd"


def test_invalid_secret_value_reported_without_the_value():
    fetch = FetchSpy({"BITRIX24_WEBHOOK_URL": "https://p.bitrix24.ru/w3bh00ks3cr3t"})
    with pytest.raises(ConfigError) as error:
        load_settings({"SECRETS_ARN": "arn:x"}, fetch_secret=fetch)
    assert "BITRIX24_WEBHOOK_URL" in str(error.value)
    assert "w3bh00ks3cr3t" not in str(error.value)


# -- require() ------------------------------------------------------------------------------------------------------


def test_require_passes_when_present():
    settings = load_settings({"DATA_BUCKET": "b", "WRITES_QUEUE_URL": "https://sqs/q.fifo"})
    assert settings.require("data_bucket", "writes_queue_url") is None


def test_require_names_every_missing_setting():
    settings = load_settings({"DATA_BUCKET": "b"})
    with pytest.raises(ConfigError) as error:
        settings.require("data_bucket", "writes_queue_url", "idempotency_table", "bitrix24_app_tokens")
    assert str(error.value) == "missing configuration: WRITES_QUEUE_URL, IDEMPOTENCY_TABLE, BITRIX24_APP_TOKENS"


def test_require_with_a_secret_does_not_show_it():
    settings = load_settings({"BITRIX24_WEBHOOK_URL": WEBHOOK})
    settings.require("bitrix24_webhook_url")
    with pytest.raises(ConfigError) as error:
        settings.require("bitrix24_webhook_url", "yandex_direct_token")
    assert str(error.value) == "missing configuration: YANDEX_DIRECT_TOKEN"


# -- the cached getter ----------------------------------------------------------------------------------------------


def test_get_settings_is_cached_until_reset(monkeypatch):
    monkeypatch.delenv("SECRETS_ARN", raising=False)
    monkeypatch.setenv("REPORT_CURRENCY", "EUR")
    config.reset_settings_cache()
    try:
        first = config.get_settings()
        monkeypatch.setenv("REPORT_CURRENCY", "USD")
        assert config.get_settings() is first
        assert first.report_currency == "EUR"
        config.reset_settings_cache()
        assert config.get_settings().report_currency == "USD"
    finally:
        config.reset_settings_cache()


def test_spend_settings_parse_and_refuse_bad_values():
    settings = load_settings(
        {"SPEND_LOOKBACK_DAYS": "14", "SPEND_INCLUDE_VAT": "yes", "CURRENCY_RATES": '{"USD": "92.1234", "EUR": 100}'}
    )
    assert (settings.spend_lookback_days, settings.spend_include_vat) == (14, True)
    assert settings.currency_rates == {"USD": "92.1234", "EUR": "100"}
    assert load_settings({}).spend_lookback_days == 7 and load_settings({}).spend_include_vat is False
    bad = [("SPEND_LOOKBACK_DAYS", "0"), ("SPEND_INCLUDE_VAT", "maybe"), ("CURRENCY_RATES", '{"usd": "1"}'),
           ("CURRENCY_RATES", '{"USD": "-1"}'), ("CURRENCY_RATES", '{"USD": "abc"}')]  # fmt: skip
    for name, value in bad:
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


def test_report_margin_accepts_a_share_or_a_percentage() -> None:
    from decimal import Decimal

    assert load_settings({"REPORT_MARGIN": "0.3"}).report_margin == Decimal("0.3")
    assert load_settings({"REPORT_MARGIN": "25%"}).report_margin == Decimal("0.25")
    assert load_settings({}).report_margin is None
    with pytest.raises(ConfigError, match="REPORT_MARGIN"):
        load_settings({"REPORT_MARGIN": "140%"})


def test_flood_limits_and_captcha_settings_have_documented_defaults_and_refuse_bad_values():
    settings = load_settings({})
    assert (settings.rate_limit_per_ip, settings.rate_limit_per_contact) == (30, 5)
    assert settings.rate_limit_window_seconds == 3600
    assert settings.smartcaptcha_server_key is None and settings.turnstile_secret_key is None
    assert settings.smartcaptcha_validate_url == "https://smartcaptcha.yandexcloud.net/validate"
    assert settings.turnstile_verify_url == "https://challenges.cloudflare.com/turnstile/v0/siteverify"
    off = load_settings({"RATE_LIMIT_PER_IP": "0", "RATE_LIMIT_PER_CONTACT": "0", "RATE_LIMIT_WINDOW_SECONDS": "60"})
    assert (off.rate_limit_per_ip, off.rate_limit_per_contact, off.rate_limit_window_seconds) == (0, 0, 60)
    local = load_settings({"TURNSTILE_VERIFY_URL": "http://127.0.0.1:8123/turnstile/v0/siteverify"})
    assert local.turnstile_verify_url.startswith("http://127.0.0.1")
    bad = [("RATE_LIMIT_PER_IP", "-1"), ("RATE_LIMIT_PER_CONTACT", "five"), ("RATE_LIMIT_WINDOW_SECONDS", "59"),
           ("RATE_LIMIT_WINDOW_SECONDS", "86401"), ("SMARTCAPTCHA_VALIDATE_URL", "http://captcha.example.com/v"),
           ("TURNSTILE_VERIFY_URL", "ftp://challenges.cloudflare.com/")]  # fmt: skip
    for name, value in bad:
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})


def test_the_template_passes_the_flood_limits_to_capture_form_with_the_same_defaults():
    from local.template import load_template

    template = load_template()
    variables = template["Resources"]["CaptureFormFunction"]["Properties"]["Environment"]["Variables"]
    defaults = Settings()
    for variable, parameter in (
        ("RATE_LIMIT_PER_IP", "RateLimitPerIp"),
        ("RATE_LIMIT_PER_CONTACT", "RateLimitPerContact"),
        ("RATE_LIMIT_WINDOW_SECONDS", "RateLimitWindowSeconds"),
    ):
        assert variables[variable] == {"Ref": parameter}
        assert template["Parameters"][parameter]["Default"] == getattr(defaults, variable.lower())
    api = template["Resources"]["HttpApi"]["Properties"]
    # Bitrix24 never retries an outbound webhook: its route is not held to the forms' low stage limit.
    assert api["RouteSettings"]["POST /v1/bitrix/events"] == {"ThrottlingBurstLimit": 200, "ThrottlingRateLimit": 100}
    stage = api["DefaultRouteSettings"]
    assert stage == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurst"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRate"},
    }
    assert (
        template["Parameters"]["ApiThrottlingRate"]["Default"],
        template["Parameters"]["ApiThrottlingBurst"]["Default"],
    ) == (5, 20)


def test_google_conversion_actions_are_resource_names():
    settings = load_settings({"GOOGLE_ADS_CONVERSION_ACTION": "customers/123-456-7890/conversionActions/555"})
    assert settings.google_ads_conversion_action == ("customers/1234567890/conversionActions/555",)
    with pytest.raises(ConfigError, match="GOOGLE_ADS_CONVERSION_ACTION"):
        load_settings({"GOOGLE_ADS_CONVERSION_ACTION": "555"})


class _Secrets:
    def __init__(self, answer: dict):
        self.answer, self.asked = answer, []

    def get_secret_value(self, SecretId: str) -> dict:
        self.asked.append(SecretId)
        return self.answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"SecretString": '{"PERSON_KEY_SECRET": "k"}'}, {"PERSON_KEY_SECRET": "k"}),
        ({"SecretBinary": b'{"PERSON_KEY_SECRET": "b"}'}, {"PERSON_KEY_SECRET": "b"}),
        ({"SecretString": "not json"}, None),
        ({"SecretString": '["a list"]'}, None),
    ],
)
def test_the_secret_is_one_get_secret_value_call_and_must_be_a_json_object(monkeypatch, answer, expected):
    from throughline.adapters import aws

    secrets = _Secrets(answer)
    monkeypatch.setattr(aws, "client", lambda service: {"secretsmanager": secrets}[service])
    arn = "arn:aws:secretsmanager:eu-central-1:123456789012:secret:x"
    if expected is None:
        with pytest.raises(ConfigError, match="must be a JSON object"):
            config._fetch_secret(arn)
    else:
        assert config._fetch_secret(arn) == expected
    assert secrets.asked == [arn]


def test_settings_are_built_by_name_and_refuse_what_they_do_not_know():
    """Settings' written-out ``__init__`` (issue 15 #9) does what the generated one did: names only, defaults for the
    rest (a fresh map each), an unknown name refused by name, ``dataclasses.replace`` working."""
    settings = Settings(timezone="Asia/Omsk", rate_limit_per_ip=7)
    assert (settings.timezone, settings.rate_limit_per_ip, settings.journey_max_chars) == ("Asia/Omsk", 7, 4000)
    with pytest.raises(TypeError, match="rate_limit_per_ipp"):
        Settings(rate_limit_per_ipp=7)
    with pytest.raises(TypeError):
        Settings("https://portal.bitrix24.ru/rest/1/x/")  # type: ignore[misc]
    moved = dataclasses.replace(settings, timezone="UTC")
    assert (moved.timezone, moved.rate_limit_per_ip, str(moved.zone)) == ("UTC", 7, "UTC")
    assert [spec.name for spec in dataclasses.fields(moved)] == [spec.name for spec in dataclasses.fields(Settings)]
