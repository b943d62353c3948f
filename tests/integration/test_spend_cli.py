"""``python -m throughline import-spend``: a back-fill from a terminal, with progress and an honest exit code."""

from __future__ import annotations

import io

from local.ad_sandboxes import VkAdsSandbox, YandexDirectSandbox
from tests.integration.spend_helpers import BUCKET, store, stored_rows
from throughline.adapters import aws
from throughline.config import reset_settings_cache
from throughline.spend import cli

__all__ = ["store"]


def _args(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    cli.register(commands)
    return parser.parse_args(["import-spend", *argv])


def test_backfill_from_the_terminal_reports_progress_and_failures(store, monkeypatch):
    with YandexDirectSandbox({"client-one": ("RUB", 3)}, retry_in=0) as direct, VkAdsSandbox(campaigns=3) as vk:
        for name, value in {"DATA_BUCKET": BUCKET, "AWS_DEFAULT_REGION": "eu-central-1",
                            "YANDEX_DIRECT_TOKEN": "agency-token", "YANDEX_DIRECT_API_URL": direct.api_url,
                            "YANDEX_DIRECT_CLIENT_LOGINS": "client-one", "VK_ADS_CLIENT_ID": "vk-sandbox-client",
                            "VK_ADS_CLIENT_SECRET": "wrong-secret", "VK_ADS_API_URL": vk.api_url}.items():  # fmt: skip
            monkeypatch.setenv(name, value)
        for name in ("SECRETS_ARN", "BITRIX24_WEBHOOK_URL", "CURRENCY_RATES", "GOOGLE_ADS_REFRESH_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        reset_settings_cache()
        aws.reset_clients()
        out = io.StringIO()
        code = cli.run(_args("--from", "2026-08-01", "--to", "2026-09-30", "--platform", "yandex_direct",
                             "--platform", "vk_ads"), out=out)  # fmt: skip
        aws.reset_clients()
    text = out.getvalue()
    assert code == 1
    assert "importing 2026-08-01…2026-09-30 from yandex_direct, vk_ads" in text
    assert "yandex_direct     1/2    client-one 2026-08-01…2026-08-31" in text
    assert "yandex_direct: " in text and "rows in 61 partitions" in text
    assert "FAILED vk_ads: VK Ads refused the client_credentials grant: invalid_client" in text
    assert "wrong-secret" not in text
    assert {row["account_id"] for row in stored_rows(store, "yandex_direct")} == {"client-one"}
