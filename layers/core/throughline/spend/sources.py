"""Build each platform's source from the settings (credentials from the environment or the stack's secret)."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from throughline.adapters.spend_store import SpendStore
from throughline.config import Settings
from throughline.spend.http import new_session
from throughline.spend.importer import SpendSource


@cache
def _session(platform: str) -> Any:
    return new_session()  # one per platform per process: warm invocations reuse connections


def build(platform: str, settings: Settings, *, store: SpendStore, now: datetime) -> SpendSource:
    """The source for ``platform``; ConfigError naming the missing settings when it is not configured."""
    run_date = now.astimezone(settings.zone).date()
    if platform == "yandex_direct":
        from throughline.spend.yandex_direct import YandexDirectSource

        settings.require("yandex_direct_token")
        return YandexDirectSource(
            settings.yandex_direct_token or "",
            settings.yandex_direct_api_url,
            settings.yandex_direct_client_logins,
            include_vat=settings.spend_include_vat,
            ad_groups=settings.yandex_direct_ad_groups,
            run_date=run_date,
            session=_session(platform),
            ingested_at=now,
        )
    if platform == "google_ads":
        from throughline.spend.google_ads import GoogleAdsSource

        settings.require(
            "google_ads_client_id", "google_ads_client_secret", "google_ads_refresh_token", "google_ads_customer_ids"
        )
        return GoogleAdsSource(
            client_id=settings.google_ads_client_id or "",
            client_secret=settings.google_ads_client_secret or "",
            refresh_token=settings.google_ads_refresh_token or "",
            customer_ids=settings.google_ads_customer_ids,
            login_customer_id=settings.google_ads_login_customer_id,
            developer_token=settings.google_ads_developer_token,
            api_url=settings.google_ads_api_url,
            token_url=settings.google_oauth_token_url,
            session=_session(platform),
            ingested_at=now,
        )
    if platform == "vk_ads":
        from throughline.spend.vk_ads import VkAdsSource

        settings.require("vk_ads_client_id", "vk_ads_client_secret")
        return VkAdsSource(
            client_id=settings.vk_ads_client_id or "",
            client_secret=settings.vk_ads_client_secret or "",
            api_url=settings.vk_ads_api_url,
            token_store=store,
            session=_session(platform),
            ingested_at=now,
        )
    raise ValueError(f"no importer for {platform}")
