"""Offline conversions: won (and qualified) deals sent back to Yandex Metrica, Google Ads and VK Ads."""
