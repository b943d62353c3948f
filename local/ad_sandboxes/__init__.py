"""Sandboxes of the ad platforms' reporting APIs (Yandex Direct Reports v5, Google Ads REST, VK Ads v2), offline
conversions (Metrica, Data Manager, the VK tracker) and ad audiences (Yandex Audiences, VK Ads remarketing lists).

Each is a standard-library HTTP server on a free port that follows the documented protocol — request shapes,
headers, status codes, error bodies, limits — and is never more forgiving than the real service. Statistics are
generated deterministically from (account, campaign, date), so tests can compare what was imported with what the
sandbox holds. See each module's docstring for its sources and the simplifications it makes.
"""

from local.ad_sandboxes.data_manager import DataManagerSandbox
from local.ad_sandboxes.google_ads import GoogleAdsSandbox
from local.ad_sandboxes.metrica import MetricaSandbox
from local.ad_sandboxes.vk_ads import VkAdsSandbox
from local.ad_sandboxes.vk_tracker import VkTrackerSandbox
from local.ad_sandboxes.yandex_audience import YandexAudienceSandbox
from local.ad_sandboxes.yandex_direct import YandexDirectSandbox

__all__ = ["DataManagerSandbox", "GoogleAdsSandbox", "MetricaSandbox", "VkAdsSandbox", "VkTrackerSandbox",
           "YandexAudienceSandbox", "YandexDirectSandbox"]  # fmt: skip


def start_all(campaigns: int = 12, names: dict[str, list[str]] | None = None) -> tuple[list, dict[str, str]]:
    """Start the three sandboxes (an agency with two Yandex clients, two Google customers under a manager, one VK
    account) and return them with the environment that points the spend import at them. ``names``: platform → the
    names of its first campaigns (the demo names them after the ``utm_campaign`` tags its traffic carries)."""
    direct = YandexDirectSandbox({"demo-client": ("RUB", campaigns), "demo-client-kz": ("KZT", campaigns // 2)})
    google = GoogleAdsSandbox({"1234567890": ("RUB", "Europe/Moscow", campaigns),
                               "2345678901": ("USD", "Europe/Berlin", campaigns // 2)},
                              managed_by={"2345678901": "9876543210"})  # fmt: skip
    vk = VkAdsSandbox(campaigns=campaigns)
    first_accounts = {"yandex_direct": direct.campaigns("demo-client"), "google_ads": google.campaigns("1234567890"),
                      "vk_ads": vk.campaigns()}  # fmt: skip
    for platform, sandbox in (("yandex_direct", direct), ("google_ads", google), ("vk_ads", vk)):
        sandbox.campaign_names = dict(zip(first_accounts[platform], (names or {}).get(platform, []), strict=False))
    audience = YandexAudienceSandbox()  # ad audiences (build_segments); VK's remarketing lists are served by ``vk``
    servers = [direct.start(), google.start(), vk.start(), audience.start()]
    environment = {
        "YANDEX_DIRECT_TOKEN": direct.agency_token, "YANDEX_DIRECT_API_URL": direct.api_url,
        "YANDEX_DIRECT_CLIENT_LOGINS": "demo-client,demo-client-kz",
        "GOOGLE_ADS_CLIENT_ID": google.client[0], "GOOGLE_ADS_CLIENT_SECRET": google.client[1],
        "GOOGLE_ADS_REFRESH_TOKEN": next(iter(google.refresh_tokens)), "GOOGLE_ADS_API_URL": google.api_url(),
        "GOOGLE_OAUTH_TOKEN_URL": google.token_url, "GOOGLE_ADS_CUSTOMER_IDS": "123-456-7890,234-567-8901",
        "GOOGLE_ADS_LOGIN_CUSTOMER_ID": "987-654-3210",
        "VK_ADS_CLIENT_ID": vk.client[0], "VK_ADS_CLIENT_SECRET": vk.client[1], "VK_ADS_API_URL": vk.api_url,
        "YANDEX_AUDIENCE_TOKEN": audience.token, "YANDEX_AUDIENCE_API_URL": audience.api_url,
    }  # fmt: skip
    return servers, environment


def start_conversion_sandboxes(google: GoogleAdsSandbox) -> tuple[list, dict[str, str]]:
    """Start the offline-conversion sandboxes (Metrica, Google Data Manager with ``google``'s OAuth, the VK tracker)
    and return them with the environment that points the conversions run at them (a goal per platform for won
    deals; the Google customer 123-456-7890's conversion action 555)."""
    metrica = MetricaSandbox(goals={"deal_won": "action"}).start()
    data_manager = DataManagerSandbox(google, actions={"1234567890": {"555"}}).start()
    tracker = VkTrackerSandbox(goals={"deal_won"}).start()
    environment = {
        "METRICA_TOKEN": metrica.token, "METRICA_COUNTER_ID": metrica.counter_id, "METRICA_GOAL": "deal_won",
        "METRICA_API_URL": metrica.api_url, "GOOGLE_DATA_MANAGER_API_URL": data_manager.api_url,
        "GOOGLE_ADS_CONVERSION_ACTION": "customers/1234567890/conversionActions/555",
        "VK_ADS_PIXEL_ID": tracker.pixel_id, "VK_ADS_GOAL": "deal_won", "VK_ADS_TRACKER_URL": tracker.tracker_url,
    }  # fmt: skip
    return [metrica, data_manager, tracker], environment
