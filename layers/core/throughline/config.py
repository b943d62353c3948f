"""Configuration: one validated, immutable model behind a cached getter.

Values come from the environment (names in DESIGN.md). Every secret may instead live as a key of a JSON secret
named by ``SECRETS_ARN`` — one ARN, or several separated by commas (the stack gives each function only the secrets
it uses: the person key, the CRM webhook, the events' application tokens, the ad platforms). An environment variable
of the same name wins; among the secrets, the first listed that holds a key wins. The secrets are fetched only when
a secret value is actually missing from the environment, so functions that need no secret never call Secrets
Manager.

The model is a frozen dataclass with explicit parsers rather than a pydantic model: importing pydantic costs about
as much as importing boto3, and this module sits on the HTTP path, where cold start is the budget.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

SECRET_NAMES = (
    "BITRIX24_WEBHOOK_URL",
    "BITRIX24_APP_TOKENS",
    "YANDEX_DIRECT_TOKEN",
    "GOOGLE_ADS_CLIENT_ID",
    "GOOGLE_ADS_CLIENT_SECRET",
    "GOOGLE_ADS_REFRESH_TOKEN",
    "GOOGLE_ADS_DEVELOPER_TOKEN",
    "VK_ADS_CLIENT_ID",
    "VK_ADS_CLIENT_SECRET",
    "PERSON_KEY_SECRET",
    "SMARTCAPTCHA_SERVER_KEY",
    "TURNSTILE_SECRET_KEY",
    "METRICA_TOKEN",
    "YANDEX_AUDIENCE_TOKEN",
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_CHAT_ID",
    "ALERT_EMAIL_FROM",
    "ALERT_EMAILS",
)
SETTINGS_MAX_AGE_SECONDS = 300  # re-read after this long, so a rotated secret reaches warm functions


class ConfigError(ValueError):
    """The configuration is invalid; the message names every bad setting (never a secret value)."""


def _text(value: str) -> str:
    return value.strip()


def _optional_text(value: str) -> str | None:
    return value.strip() or None


def _consent_status(value: str) -> str | None:
    text = value.strip().lower() or None
    if text not in (None, "granted", "denied"):
        raise ValueError("must be granted, denied or empty (not sent)")
    return text


def _comma_list(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _host_list(value: str) -> tuple[str, ...]:
    hosts = tuple(host.lower().strip(".") for host in _comma_list(value))
    bad = [host for host in hosts if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", host)]
    if bad:
        raise ValueError(f"not host names: {', '.join(bad)}")
    return hosts


def _flat_json_map(value: str) -> dict[str, str]:
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object")
    for key, item in parsed.items():
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError(f"value for {key!r} must be a string or a whole number")
    return {str(key): str(item) for key, item in parsed.items()}


def _field_maps(value: str) -> dict[str, dict[str, str]]:
    """FORM_FIELD_MAPS: form id → {our field: dotted path in the sender's JSON}, e.g.
    ``{"quiz1": {"phone": "contacts.phone", "comment": "answers.0.text"}}``."""
    try:
        parsed = json.loads(value) if value.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"not valid JSON ({error.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError("must be a JSON object of form id → {field: path}")
    maps: dict[str, dict[str, str]] = {}
    for form_id, mapping in parsed.items():
        if not isinstance(mapping, dict):
            raise ValueError(f"the map of form {form_id!r} must be an object of field → dotted path")
        for ours, path in mapping.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", str(ours)):
                raise ValueError(f"form {form_id!r}: {ours!r} is not a field name (lower-case letters, digits, _)")
            if not isinstance(path, str) or not path.strip() or any(not part for part in path.strip().split(".")):
                raise ValueError(f"form {form_id!r}: the path of {ours!r} must be a dotted path like contacts.phone")
        maps[str(form_id)] = {str(ours): path.strip() for ours, path in mapping.items()}
    return maps


def _integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise ValueError("must be an integer") from None
        if (low is not None and number < low) or (high is not None and number > high):
            raise ValueError(f"must be between {low} and {high}" if high is not None else f"must be at least {low}")
        return number

    return parse


def _optional_integer(value: str) -> int | None:
    return _integer(1)(value) if value.strip() else None


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _decimal_map(value: str) -> dict[str, str]:
    """A JSON object of currency code → rate as a decimal string (never a float: rates are money)."""
    from decimal import Decimal, InvalidOperation

    parsed = _flat_json_map(value)
    rates: dict[str, str] = {}
    for code, rate in parsed.items():
        if not re.fullmatch(r"[A-Z]{3}", code):
            raise ValueError(f"{code!r} is not a three-letter currency code")
        try:
            number = Decimal(rate)
        except InvalidOperation:
            raise ValueError(f"rate for {code} must be a decimal number") from None
        if not number.is_finite() or number <= 0:
            raise ValueError(f"rate for {code} must be greater than 0")
        rates[code] = rate
    return rates


# throughline.attribution.ALL_MODELS, repeated here so that numpy stays off the HTTP path
ATTRIBUTION_MODELS = ("first_click", "last_click", "last_non_direct", "linear", "time_decay", "position_based",
                      "markov", "shapley")  # fmt: skip


def _attribution_model(value: str) -> str:
    model = value.strip()
    if model not in ATTRIBUTION_MODELS:
        raise ValueError(f"one of {', '.join(ATTRIBUTION_MODELS)}")
    return model


def _positive_number(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a finite number greater than 0")
    return number


def _vat_rate(value: str) -> Decimal:
    """A VAT rate: ``0.22`` or ``22%``, between 0 and 1."""
    rate = _margin(value)
    if rate is None:
        raise ValueError("must be a rate like 0.22 or 22%")
    return rate


def _margin(value: str) -> Decimal | None:
    """Gross margin as a share of revenue: ``0.3`` or ``30%``; empty means none (ROI then equals ROMI)."""
    text = value.strip().replace(",", ".")
    if not text:
        return None
    try:
        margin = Decimal(text.rstrip("%").strip()) / (100 if text.endswith("%") else 1)
    except InvalidOperation:
        raise ValueError("must be a share like 0.3 or a percentage like 30%") from None
    if not Decimal(0) <= margin <= Decimal(1):
        raise ValueError("must be between 0 and 1 (0 % and 100 %)")
    return margin


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value.strip()!r}") from None
    return value.strip()


def _webhook_url(value: str) -> str | None:
    """An inbound webhook URL. Never echo the value in an error: it carries the webhook secret.

    Bitrix24 answers ``http://`` with 400 ``INVALID_REQUEST`` "Https required" (system-errors.md), so a plain-HTTP
    URL would only fill the DLQ. It is accepted for a loopback host alone (127.0.0.0/8, ::1, localhost): the local
    stack serves its sandbox portal over HTTP there.
    """
    value = value.strip()
    if not value:
        return None
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or parts.scheme.lower() not in ("https", "http") or not host or "/rest/" not in parts.path:
        raise ValueError("must look like https://<portal>/rest/<user>/<secret>/")
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise ValueError(
            "must start with https:// (Bitrix24 refuses http:// with 400 INVALID_REQUEST 'Https required'); "
            "http:// is accepted only for a loopback host such as the local sandbox"
        )
    return value if value.endswith("/") else value + "/"


def _service_url(value: str) -> str:
    """A service's API URL: https, or http on a loopback host (the local sandboxes)."""
    value = value.strip()
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
    except ValueError:
        parts, host = None, ""
    if parts is None or not host or parts.scheme.lower() not in ("https", "http"):
        raise ValueError("must be an https:// URL")
    if parts.scheme.lower() == "http" and not is_loopback(host):
        raise ValueError("must start with https:// (http:// only for a loopback host such as a local sandbox)")
    return value


def _key_material(value: str) -> str | None:
    value = value.strip()
    if value and len(value) < 32:
        raise ValueError("must be at least 32 characters (template.yaml generates 64)")
    return value or None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost`` or a loopback address): the only place plain http is allowed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _user_field_name(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"UF_CRM_[A-Z0-9_]+", value):
        raise ValueError("must be an upper-case Bitrix24 user field name starting with UF_CRM_")
    if len(value) > 50:
        raise ValueError("must be at most 50 characters (a Bitrix24 limit)")
    return value


def _conversion_actions(value: str) -> tuple[str, ...]:
    """GOOGLE_ADS_CONVERSION_ACTION: ``customers/<id>/conversionActions/<id>`` (dashes in the customer id allowed),
    optionally a second one for qualified conversions."""
    actions = tuple(part.replace("-", "") for part in _comma_list(value))
    bad = [part for part in actions if not re.fullmatch(r"customers/\d{1,20}/conversionActions/\d{1,20}", part)]
    if bad or len(actions) > 2:
        raise ValueError("must be customers/<customer id>/conversionActions/<id>[,<the same for qualified>]")
    return actions


def _setting(default: Any, parse: Callable[[str], Any] = _text, *, secret: bool = False) -> Any:
    factory = (lambda: dict(default)) if isinstance(default, dict) else None
    metadata = {"parse": parse, "secret": secret}
    if factory:
        return field(default_factory=factory, metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


@dataclass(frozen=True, init=False, eq=False)
class Settings:
    """Every setting of the bundle. Field names are the environment names in lower case.

    Its ``__init__`` is written out, not generated, and settings compare by identity (nothing compares two): for 88
    fields ``dataclass`` compiles the source of an ``__init__``, an ``__eq__`` and a ``__hash__`` at every import,
    ~3 ms of capture_form's cold start (issue 15 #9), where a written ``__init__`` is byte code like the rest."""

    # Bitrix24
    bitrix24_webhook_url: str | None = _setting(None, _webhook_url, secret=True)
    bitrix24_app_tokens: tuple[str, ...] = _setting((), _comma_list, secret=True)
    bitrix24_journey_field: str = _setting("UF_CRM_CUSTOMER_JOURNEY", _user_field_name)
    bitrix24_source_map: dict[str, str] = _setting({}, _flat_json_map)
    bitrix24_responsible_map: dict[str, str] = _setting({}, _flat_json_map)
    bitrix24_default_responsible_id: int | None = _setting(None, _optional_integer)
    bitrix24_rate_per_second: float = _setting(2.0, _positive_number)
    bitrix24_burst: int = _setting(50, _integer(1))
    bitrix24_writer_concurrency: int = _setting(2, _integer(1))
    lead_title_template: str = _setting("Заявка с формы «{form}»")
    # Outbound webhooks: when set, an event from another portal (member_id / domain) is refused like a wrong token.
    bitrix24_member_id: str | None = _setting(None, _optional_text)
    bitrix24_domain: str | None = _setting(None, _optional_text)
    # Where POST /v1/app/report checks a placement's token (app.info): https://BITRIX24_DOMAIN unless set (the local
    # stack points it at the sandbox). Never the webhook: that public function reads no secret.
    bitrix24_portal_url: str | None = _setting(None, _optional_text)

    # Journeys
    journey_max_chars: int = _setting(4000, _integer(200, 1_000_000))

    # Ad platforms (used by the spend import)
    yandex_direct_token: str | None = _setting(None, _optional_text, secret=True)
    yandex_direct_client_logins: tuple[str, ...] = _setting((), _comma_list)
    yandex_direct_api_url: str = _setting("https://api.direct.yandex.com/json/v5/")
    google_ads_client_id: str | None = _setting(None, _optional_text, secret=True)
    google_ads_client_secret: str | None = _setting(None, _optional_text, secret=True)
    google_ads_refresh_token: str | None = _setting(None, _optional_text, secret=True)
    google_ads_developer_token: str | None = _setting(None, _optional_text, secret=True)
    google_ads_customer_ids: tuple[str, ...] = _setting((), _comma_list)
    google_ads_login_customer_id: str | None = _setting(None, _optional_text)
    google_ads_api_url: str = _setting("https://googleads.googleapis.com/v26/")
    google_oauth_token_url: str = _setting("https://oauth2.googleapis.com/token")
    yandex_direct_ad_groups: bool = _setting(False, _boolean)  # import at ad-group grain (AdGroupId, AdGroupName)
    vk_ads_client_id: str | None = _setting(None, _optional_text, secret=True)
    vk_ads_client_secret: str | None = _setting(None, _optional_text, secret=True)
    vk_ads_api_url: str = _setting("https://ads.vk.com/api/v2/")
    # Ad audiences (throughline.segments.audiences): Yandex Audiences' OAuth token (audience:use); VK reuses the above
    yandex_audience_token: str | None = _setting(None, _optional_text, secret=True)
    yandex_audience_api_url: str = _setting("https://api-audience.yandex.ru/v1/management/")

    # Offline conversions (throughline.conversions): each goal setting is "<won goal>[,<qualified goal>]"
    metrica_token: str | None = _setting(None, _optional_text, secret=True)
    metrica_counter_id: str | None = _setting(None, _optional_text)
    metrica_goal: tuple[str, ...] = _setting((), _comma_list)
    metrica_api_url: str = _setting("https://api-metrika.yandex.net/management/v1/")
    google_data_manager_api_url: str = _setting("https://datamanager.googleapis.com/v1/")
    google_ads_conversion_action: tuple[str, ...] = _setting((), _conversion_actions)
    # Customer Match (segments.audiences.google): the request-level DMA consent sent with each ingest, or none
    google_customer_match_consent: str | None = _setting(None, _consent_status)
    vk_ads_pixel_id: str | None = _setting(None, _optional_text)
    vk_ads_goal: tuple[str, ...] = _setting((), _comma_list)
    vk_ads_tracker_url: str = _setting("https://top-fwz1.mail.ru/tracker")
    conversion_qualified_stages: tuple[str, ...] = _setting((), _comma_list)
    conversions_table: str | None = _setting(None, _optional_text)

    # Spend import
    spend_lookback_days: int = _setting(7, _integer(1, 365))
    spend_include_vat: bool = _setting(False, _boolean)
    currency_rates: dict[str, str] = _setting({}, _decimal_map)

    # Web forms
    allowed_origins: tuple[str, ...] = _setting((), _comma_list)
    honeypot_field: str = _setting("_gotcha")
    max_body_bytes: int = _setting(65536, _integer(1024, 1_000_000))
    default_phone_region: str = _setting("RU")
    # At least a minute: an attempt (10 s function, 30 s API Gateway) never outlives its claim, or a slow first try
    # and its retry could become two submissions.
    double_submit_window_seconds: int = _setting(600, _integer(60, 86400))
    # Days a raw copy of a post (raw/forms/) is kept: the bucket's lifecycle rule (template RawRetentionDays) deletes
    # it, and the index that finds a person's copies (throughline.privacy) expires with it.
    raw_retention_days: int = _setting(30, _integer(1, 3650))
    # HMAC key for every key derived from a phone or e-mail that leaves a function (throughline.person_keys).
    person_key_secret: str | None = _setting(None, _key_material, secret=True)
    # Referrer hosts that are no source (matched with their subdomains), on top of the built-in payment, 3-D Secure
    # and login hosts (sources.IGNORED_REFERRERS); the snippet's data-ignore-referrers should list the same.
    ignore_referrers: tuple[str, ...] = _setting((), _host_list)
    # Form builders' webhooks (/v1/hooks/...): labels → our fields on top of the Russian defaults (capture.hooks), and
    # per JSON form, our fields → dotted paths in the sender's body.
    form_label_aliases: dict[str, str] = _setting({}, _flat_json_map)
    form_field_maps: dict[str, dict[str, str]] = _setting({}, _field_maps)
    # Floods (throughline.capture.limits): valid posts per client IP and per contact (phone, else e-mail) in a fixed
    # window; a post over a limit is held under raw/held/ and answered 429, not queued. 0 turns a limit off.
    rate_limit_per_ip: int = _setting(30, _integer(0, 1_000_000))
    rate_limit_per_contact: int = _setting(5, _integer(0, 1_000_000))
    rate_limit_window_seconds: int = _setting(3600, _integer(60, 86400))
    # Captcha (throughline.capture.captcha): off unless a server key is set (keys of the stack's secret).
    smartcaptcha_server_key: str | None = _setting(None, _optional_text, secret=True)
    smartcaptcha_validate_url: str = _setting("https://smartcaptcha.yandexcloud.net/validate", _service_url)
    turnstile_secret_key: str | None = _setting(None, _optional_text, secret=True)
    turnstile_verify_url: str = _setting("https://challenges.cloudflare.com/turnstile/v0/siteverify", _service_url)

    # Reports
    report_currency: str = _setting("RUB")
    timezone: str = _setting("Europe/Moscow", _timezone)
    report_margin: Decimal | None = _setting(None, _margin)
    report_profit_field: str | None = _setting(None, _optional_text)  # a deal field with gross profit
    report_full_rescan_days: int = _setting(7, _integer(1, 366))
    report_modify_margin_minutes: int = _setting(60, _integer(0, 1440))
    # Spend on one VAT basis: net by default; rows imported on the other basis are converted with VAT_RATE
    report_spend_with_vat: bool = _setting(False, _boolean)
    vat_rate: Decimal = _setting(Decimal("0.22"), _vat_rate)  # 22 % for Russian accounts since 2026
    # Attribution in the report (throughline.attribution): the model roi.csv uses, time decay's half-life, Markov order
    attribution_default_model: str = _setting("last_click", _attribution_model)
    attribution_half_life_days: float = _setting(7.0, _positive_number)
    attribution_markov_order: int = _setting(1, _integer(1, 4))

    # Resources (set by template.yaml)
    data_bucket: str | None = _setting(None, _optional_text)
    writes_queue_url: str | None = _setting(None, _optional_text)
    idempotency_table: str | None = _setting(None, _optional_text)
    journey_table: str | None = _setting(None, _optional_text)
    locks_table: str | None = _setting(None, _optional_text)

    # Alerts and digests (throughline.alerts): the ledger table, and the optional Telegram and e-mail channels
    alerts_table: str | None = _setting(None, _optional_text)
    telegram_bot_token: str | None = _setting(None, _optional_text, secret=True)
    telegram_chat_id: str | None = _setting(None, _optional_text, secret=True)
    telegram_api_url: str = _setting("https://api.telegram.org/")
    alert_email_from: str | None = _setting(None, _optional_text, secret=True)
    alert_emails: tuple[str, ...] = _setting((), _comma_list, secret=True)  # people's addresses: kept out of logs

    # Writer retry pacing (seconds): a failed message returns after base × 2^(attempt−1), capped (SQS allows 12 h).
    writer_retry_base_seconds: int = _setting(30, _integer(0, 43200))
    writer_retry_max_seconds: int = _setting(900, _integer(0, 43200))
    # A write whose outcome is unknown is looked at again only after the portal surely ended the request (60 s).
    writer_settle_seconds: int = _setting(65, _integer(0, 3600))

    def __init__(self, **values: Any) -> None:
        """Settings by name (keyword arguments only); each one not given takes its default."""
        specs = dataclasses.fields(self)
        unknown = values.keys() - {spec.name for spec in specs}
        if unknown:
            raise TypeError(f"Settings() got unexpected settings: {', '.join(sorted(unknown))}")
        for spec in specs:
            if spec.name in values:
                value = values[spec.name]
            elif spec.default_factory is not dataclasses.MISSING:
                value = spec.default_factory()
            else:
                value = spec.default
            object.__setattr__(self, spec.name, value)

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def require(self, *names: str) -> None:
        """Fail with one clear message when settings a job needs are absent."""
        missing = [name.upper() for name in names if not getattr(self, name)]
        if missing:
            raise ConfigError(f"missing configuration: {', '.join(missing)}")


def load_settings(
    environ: Mapping[str, str] | None = None,
    fetch_secret: Callable[[str], Mapping[str, Any]] | None = None,
) -> Settings:
    """Build the settings from an environment mapping, filling absent secrets from ``SECRETS_ARN``."""
    environ = os.environ if environ is None else environ
    names = [spec.name for spec in dataclasses.fields(Settings)]
    raw = {name: environ[name.upper()] for name in names if name.upper() in environ}
    raw = {name: value for name, value in raw.items() if value != ""}
    secret_arns = secret_arns_of(environ.get("SECRETS_ARN", ""))
    if secret_arns and any(name.lower() not in raw for name in SECRET_NAMES):
        for arn in secret_arns:
            secret = (fetch_secret or _fetch_secret)(arn)
            for name in SECRET_NAMES:
                value = secret.get(name)
                if name.lower() not in raw and value not in (None, ""):
                    raw[name.lower()] = ",".join(str(i) for i in value) if isinstance(value, list) else str(value)

    values: dict[str, Any] = {}
    problems: list[str] = []
    for spec in dataclasses.fields(Settings):
        if spec.name in raw:
            try:
                values[spec.name] = spec.metadata["parse"](raw[spec.name])
            except ValueError as error:
                problems.append(f"{spec.name.upper()}: {error}")
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return Settings(**values)


def secret_arns_of(value: str) -> list[str]:
    """The secret ARNs of ``SECRETS_ARN``: comma-separated, in order, each once (an ARN holds no comma)."""
    return list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))


def _fetch_secret(arn: str) -> Mapping[str, Any]:
    """The secret's JSON object. One ``GetSecretValue`` through our cached client (one place decides endpoints and
    retries); ``get_settings`` keeps it for ``SETTINGS_MAX_AGE_SECONDS``. Not Powertools' SecretsProvider: its import
    cost more of capture_form's cold start than the call, and its cache (per provider) added nothing to ours."""
    from throughline.adapters import aws

    answer = aws.client("secretsmanager").get_secret_value(SecretId=arn)
    text = answer.get("SecretString")
    if text is None:
        text = bytes(answer.get("SecretBinary") or b"").decode("utf-8", errors="replace")
    try:
        secret = json.loads(text)
    except ValueError:
        raise ConfigError("the secret named by SECRETS_ARN must be a JSON object") from None
    if not isinstance(secret, dict):
        raise ConfigError("the secret named by SECRETS_ARN must be a JSON object")
    return secret


_lock = threading.Lock()
_cached: tuple[float, Settings] | None = None


def get_settings() -> Settings:
    """The process-wide settings, re-read every few minutes."""
    global _cached
    with _lock:
        now = time.monotonic()
        if _cached is None or now - _cached[0] > SETTINGS_MAX_AGE_SECONDS:
            _cached = (now, load_settings())
        return _cached[1]


def reset_settings_cache() -> None:
    """Forget the cached settings (tests and the local stack change the environment)."""
    global _cached
    with _lock:
        _cached = None
