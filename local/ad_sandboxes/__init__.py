"""Sandboxes of the ad platforms' reporting APIs (Yandex Direct Reports v5, Google Ads REST, VK Ads v2).

Each is a standard-library HTTP server on a free port that follows the documented protocol — request shapes,
headers, status codes, error bodies, limits — and is never more forgiving than the real service. Statistics are
generated deterministically from (account, campaign, date), so tests can compare what was imported with what the
sandbox holds. See each module's docstring for its sources and the simplifications it makes.
"""

from local.ad_sandboxes.google_ads import GoogleAdsSandbox
from local.ad_sandboxes.vk_ads import VkAdsSandbox
from local.ad_sandboxes.yandex_direct import YandexDirectSandbox

__all__ = ["GoogleAdsSandbox", "VkAdsSandbox", "YandexDirectSandbox"]
