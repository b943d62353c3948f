"""VK Ads import against the sandbox: cached and refreshed tokens under VK's token limit, split statistics."""

from __future__ import annotations

from datetime import date

import pytest

from local.ad_sandboxes import VkAdsSandbox
from tests.integration.spend_helpers import NOW, Clock, days, store, stored_rows, total
from throughline.spend.importer import import_spend
from throughline.spend.plan import Chunk
from throughline.spend.vk_ads import TOKEN_KEY, VkAdsError, VkAdsSource

__all__ = ["store"]


@pytest.fixture
def vk():
    with VkAdsSandbox(campaigns=120) as sandbox:
        yield sandbox


def _source(sandbox, store, **options):
    return VkAdsSource(client_id="vk-sandbox-client", client_secret="vk-sandbox-secret", api_url=sandbox.api_url,
                       token_store=store, sleep=lambda s: None, ingested_at=NOW, **options)  # fmt: skip


def test_statistics_are_split_within_the_limits_and_deleted_campaigns_count(vk, store):
    first, last = days("2026-03-01", "2026-10-31")  # 245 days, 120 campaigns
    result = import_spend([_source(vk, store, chunk_days=200)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == []
    rows = stored_rows(store, "vk_ads")
    assert total(rows) == vk.expected_cost(first, last)
    assert any(vk.is_deleted(r["campaign_id"]) for r in rows)
    for query in vk.stat_requests:
        span = (date.fromisoformat(query["date_to"]) - date.fromisoformat(query["date_from"])).days + 1
        assert span <= 92 and len(query["id"].split(",")) <= 50
    assert {r["account_id"] for r in rows} == {str(vk.account_id)}
    assert all(r["cost"] > 0 or r["impressions"] > 0 or r["clicks"] > 0 for r in rows)  # zero days not stored


def test_the_token_is_cached_across_nights_and_refreshed_never_reissued(vk, store):
    for night in range(8):  # more nights than VK's token limit
        source = _source(vk, store)  # a fresh function instance each night: only the bucket remembers
        if night == 3:
            vk.expire_access_tokens()  # a day passed: the access token expired
        result = import_spend([source], store, *days("2026-11-01", "2026-11-02"), deadline=Clock(), ingested_at=NOW)
        assert result.failures == []
    assert vk.tokens_issued == 1 and vk.refused_grants == 0
    assert vk.tokens_refreshed >= 1 and vk.active_tokens() == 1
    assert "access_token" in (store.get_json(TOKEN_KEY) or {})


def test_the_sandbox_refuses_tokens_beyond_the_limit_as_vk_does(vk, store):
    for _ in range(5):
        store.delete(TOKEN_KEY)
        _source(vk, store).access_token()
    store.delete(TOKEN_KEY)
    with pytest.raises(VkAdsError, match=r"token_limit_exceeded.*delete old ones"):
        _source(vk, store).access_token()
    assert vk.refused_grants == 1


def test_a_revoked_refresh_token_falls_back_to_one_new_token(vk, store):
    source = _source(vk, store)
    source.access_token()
    vk.refresh_tokens.clear()
    vk.expire_access_tokens()
    assert list(_source(vk, store).fetch(Chunk("vk_ads", str(vk.account_id), date(2026, 11, 1), date(2026, 11, 1)),
                                          Clock()))  # fmt: skip
    assert vk.tokens_issued == 2


def test_rate_limited_calls_are_retried(vk, store):
    vk.faults = [429, 503]
    result = import_spend([_source(vk, store)], store, *days("2026-11-01", "2026-11-01"), deadline=Clock(),
                          ingested_at=NOW)  # fmt: skip
    assert result.failures == [] and vk.faults == []


def test_an_outage_of_the_token_endpoint_never_costs_a_new_token(vk, store):
    # Before: a 5xx on the refresh grant counted as a refusal, so the client issued a brand-new token — one more of
    # the few VK allows; a few flaky nights and the client is blocked.
    _source(vk, store).access_token()
    vk.expire_access_tokens()
    vk.token_faults = [503, 502]
    first, last = days("2026-11-01", "2026-11-02")
    result = import_spend([_source(vk, store)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == [] and vk.token_faults == []
    assert vk.tokens_issued == 1 and vk.tokens_refreshed == 1 and vk.active_tokens() == 1
    assert total(stored_rows(store, "vk_ads")) == vk.expected_cost(first, last)
    # An outage that outlasts the retries fails the night, and still issues nothing.
    vk.expire_access_tokens()
    vk.token_faults = [503] * 10
    result = import_spend([_source(vk, store)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert len(result.failures) == 1 and "HTTP 503" in result.failures[0]
    assert vk.tokens_issued == 1


def test_campaign_names_an_advertiser_gave_reach_the_spend_rows(vk, store):
    # The demo names its first VK campaigns after the utm_campaign its ads carry; the campaign list (where the
    # import reads names) must say so, or the report never meets those leads.
    first_id = vk.campaigns()[0]
    vk.campaign_names = {first_id: "lookalike"}
    first, last = days("2026-10-01", "2026-10-07")
    result = import_spend([_source(vk, store)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == []
    names = {r["campaign_id"]: r["campaign_name"] for r in stored_rows(store, "vk_ads")}
    assert names[first_id] == "lookalike"
    assert all(name == f"VK кампания {key}" for key, name in names.items() if key != first_id)


def test_a_name_cut_in_the_middle_of_an_emoji_keeps_its_spend(vk, store):
    # VK's JSON may carry half a surrogate pair ("\ud83d") in a name cut at a length: before, no UTF-8 line could
    # hold that row, so the account's chunk failed every night and its spend was never imported.
    first_id = vk.campaigns()[0]
    vk.campaign_names = {first_id: "Осень \ud83d"}
    first, last = days("2026-10-01", "2026-10-07")
    result = import_spend([_source(vk, store)], store, first, last, deadline=Clock(), ingested_at=NOW)
    assert result.failures == []
    rows = stored_rows(store, "vk_ads")
    assert total(rows) == vk.expected_cost(first, last)
    assert {r["campaign_name"] for r in rows if r["campaign_id"] == first_id} == {"Осень \ufffd"}
