"""Third-party Bitrix24 clients, unmodified, against the sandbox over the real protocol.

- b24pysdk (Bitrix24's official SDK) always builds ``https://{domain}/rest``, so it talks to the sandbox's TLS mode;
  it uses requests, which trusts the sandbox's self-signed certificate through ``REQUESTS_CA_BUNDLE``.
- fast_bitrix24 takes the webhook URL as given: plain HTTP in-process, and HTTPS in a child process, because aiohttp
  reads ``SSL_CERT_FILE`` once, when it is imported, to build its default TLS context.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from b24pysdk import BitrixWebhook, Client
from fast_bitrix24 import Bitrix

from local.bitrix24_sandbox import Sandbox

REPO_ROOT = Path(__file__).resolve().parents[2]

# fast_bitrix24 1.8.14 runs its sync API through asyncio.get_event_loop(), which Python 3.12+ deprecates outside a
# running loop; the library still works, so the warning is not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:There is no current event loop:DeprecationWarning")


def b24_token(sandbox: Sandbox) -> BitrixWebhook:
    # The SDK wants the portal "domain" without a scheme and the token as "user_id/secret"; a host:port works too.
    return BitrixWebhook(domain=f"127.0.0.1:{sandbox.port}", webhook_token=f"{sandbox.user_id}/{sandbox.secret}")


@pytest.fixture
def tls_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    # The portal's seconds per call are simulated, none slept (time_scale 0): these tests are about what the SDKs send
    # and read, not about pacing; the answers' ``time`` blocks still carry the simulated seconds.
    with Sandbox(app_token="tok", seed=3, tls=True, time_scale=0) as running:
        assert running.ca_file is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", running.ca_file)
        yield running


# ---- b24pysdk ------------------------------------------------------------------------------------------------------


def test_b24pysdk_add_get_batches_lists_and_findbycomm(tls_sandbox: Sandbox) -> None:
    token = b24_token(tls_sandbox)
    client = Client(token)

    added = client.crm.lead.add(
        fields={"TITLE": "SDK lead", "OPPORTUNITY": 1500, "PHONE": [{"VALUE": "+79990000001", "VALUE_TYPE": "WORK"}]}
    )
    assert added.result == 1
    assert added.time.operating == pytest.approx(0.1)

    lead = client.crm.lead.get(bitrix_id=1).result
    assert (lead["ID"], lead["TITLE"], lead["OPPORTUNITY"], lead["HAS_PHONE"]) == ("1", "SDK lead", "1500.00", "Y")
    assert [(phone["VALUE"], phone["VALUE_TYPE"]) for phone in lead["PHONE"]] == [("+79990000001", "WORK")]

    # One batch of 49 wrapped requests, then 70 more that the SDK splits into two batches itself: 120 leads in all.
    batch = client.call_batch([client.crm.lead.add(fields={"TITLE": f"Batch {n:03}"}) for n in range(2, 51)]).result
    assert batch.result == list(range(2, 51))
    assert not batch.result_error
    batches = client.call_batches([client.crm.lead.add(fields={"TITLE": f"Batch {n:03}"}) for n in range(51, 121)])
    assert list(batches.result.result.values()) == list(range(51, 121))
    assert tls_sandbox.stats()["by_method"]["batch"] == 3

    # A low-level batch with named commands: keys survive, list metadata comes back per command.
    raw = token.call_batch({"one": ("crm.lead.get", {"id": 7}), "page": ("crm.lead.list", {"select": ["ID"]})})
    assert raw["result"]["result"]["one"]["TITLE"] == "Batch 007"
    assert raw["result"]["result_total"] == {"page": 120}
    assert raw["result"]["result_next"] == {"page": 50}

    page = client.crm.lead.list(select=["ID", "TITLE"], order={"ID": "ASC"})
    assert len(page.result) == 50
    assert (page.response.total, page.response.next) == (120, 50)

    everything = client.crm.lead.list(select=["ID"], order={"ID": "ASC"}).as_list().result
    assert [int(row["ID"]) for row in everything] == list(range(1, 121))

    fast = client.crm.lead.list(select=["ID", "TITLE"]).as_list_fast()
    fast_rows = list(fast.result)
    assert [int(row["ID"]) for row in fast_rows] == list(range(1, 121))
    assert fast_rows[119]["TITLE"] == "Batch 120"
    # Descending, with a caller filter merged into the SDK's moving ID window.
    window = client.crm.lead.list(select=["ID"], filter={"%TITLE": "Batch 1"}).as_list_fast(descending=True)
    assert [int(row["ID"]) for row in window.result] == list(range(120, 99, -1))

    duplicates = client.crm.duplicate.findbycomm(type="PHONE", values=["+79990000001"], entity_type="LEAD")
    assert duplicates.result == {"LEAD": [1]}
    assert duplicates.value.lead_ids == [1]
    nothing = client.crm.duplicate.findbycomm(type="PHONE", values=["+70000000000"])
    assert nothing.result == []  # PHP prints an empty map as []
    assert nothing.value.lead_ids is None

    stats = tls_sandbox.stats()
    assert stats["status_codes"] == {"200": stats["requests"]}
    assert stats["rate_limited"] == 0


def test_b24pysdk_retries_query_limit_exceeded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bucket of 5 draining at 1/s, filled to 6: the SDK's first attempt is refused (it would take the bucket a
    # whole second to drain back to 5), and the SDK's own retry (3 attempts, the first after 1 s) then gets through.
    with Sandbox(tls=True, rate=1, burst=5) as sandbox, requests.Session() as session:
        assert sandbox.ca_file is not None
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", sandbox.ca_file)
        session.verify = sandbox.ca_file
        statuses = [session.post(sandbox.webhook_url + "profile", json={}).status_code for _ in range(7)]
        assert statuses == [200] * 6 + [503]
        sandbox.reset_stats()

        started = time.monotonic()
        lead_id = Client(b24_token(sandbox)).crm.lead.add(fields={"TITLE": "After the 503"}).result
        elapsed = time.monotonic() - started

        assert lead_id == 1
        assert [lead["TITLE"] for lead in sandbox.entities("lead")] == ["After the 503"]
        stats = sandbox.stats()
        assert stats["rate_limited"] == 1
        assert stats["status_codes"] == {"503": 1, "200": 1}
        assert 0.9 <= elapsed < 5


# ---- fast_bitrix24 -------------------------------------------------------------------------------------------------


def test_fast_bitrix24_call_get_all_and_get_by_id_over_http() -> None:
    with Sandbox(app_token="tok", seed=4, time_scale=0) as sandbox:  # seconds simulated, none slept (as above)
        # verbose=False turns the tqdm progress bar off. The default pool (50 requests, then 2/s) matches the
        # sandbox's default bucket, and this test sends 7 requests, so neither side ever has to wait.
        bitrix = Bitrix(sandbox.webhook_url, verbose=False)

        items = [{"fields": {"TITLE": f"FB {n:03}", "EMAIL": [{"VALUE": f"fb{n}@example.com"}]}} for n in range(120)]
        ids = bitrix.call("crm.lead.add", items)
        # The three batches run concurrently, so results come back in completion order, not in item order.
        assert sorted(ids) == list(range(1, 121))
        stats = sandbox.stats()
        assert stats["by_method"] == {"batch": 3}
        assert stats["batch_commands"] == {"crm.lead.add": 120}
        stored = {lead["ID"]: lead for lead in sandbox.entities("lead")}
        assert sorted(lead["TITLE"] for lead in stored.values()) == [f"FB {n:03}" for n in range(120)]

        rows = bitrix.get_all("crm.lead.list", {"select": ["ID", "TITLE"]})
        assert len(rows) == 120
        assert {row["ID"]: row["TITLE"] for row in rows} == {key: lead["TITLE"] for key, lead in stored.items()}
        # One plain request learns the total; the two remaining pages go out as one batch of start=50/100.
        assert sandbox.stats()["by_method"] == {"batch": 4, "crm.lead.list": 1}
        assert sandbox.stats()["batch_commands"]["crm.lead.list"] == 2

        tail = bitrix.get_all("crm.lead.list", {"select": ["ID"], "filter": {">ID": 100}})
        assert sorted(int(row["ID"]) for row in tail) == list(range(101, 121))

        by_id = bitrix.get_by_ID("crm.lead.get", [5, 77, 120])
        assert set(by_id) == {"5", "77", "120"}
        for key, lead in by_id.items():
            assert (lead["ID"], lead["TITLE"]) == (key, stored[key]["TITLE"])
            assert lead["EMAIL"][0]["VALUE"] == stored[key]["EMAIL"][0]["VALUE"]

        assert sandbox.stats()["status_codes"] == {"200": sandbox.stats()["requests"]}


def test_fast_bitrix24_backs_off_on_query_limit_exceeded() -> None:
    # fast_bitrix24 sends all 8 batches at once (its own pool allows 50); a bucket of 2 refuses most of them with
    # 503, which the library retries with a back-off until every batch has gone through. The adds take no time
    # (time_scale 0): the back-off is the point here, not the 40 s a portal would spend on 400 adds.
    with Sandbox(rate=5, burst=2, time_scale=0) as sandbox:
        ids = Bitrix(sandbox.webhook_url, verbose=False).call(
            "crm.lead.add", [{"fields": {"TITLE": f"Burst {n}"}} for n in range(400)]
        )

        assert sorted(ids) == list(range(1, 401))
        assert len(sandbox.entities("lead")) == 400  # a refused batch never ran, so nothing was written twice
        stats = sandbox.stats()
        assert stats["rate_limited"] > 0
        assert stats["status_codes"] == {"200": 8, "503": stats["rate_limited"]}


_FAST_BITRIX24_OVER_TLS = """
import json, sys
from fast_bitrix24 import Bitrix

bitrix = Bitrix(sys.argv[1], verbose=False)
ids = bitrix.call("crm.lead.add", [{"fields": {"TITLE": f"TLS {n}"}} for n in range(60)])
rows = bitrix.get_all("crm.lead.list", {"select": ["ID", "TITLE"]})
print(json.dumps({"ids": sorted(ids), "rows": sorted((int(r["ID"]), r["TITLE"]) for r in rows)}))
"""


def test_fast_bitrix24_over_tls_with_ssl_cert_file() -> None:
    with Sandbox(tls=True, time_scale=0) as sandbox:  # seconds simulated, none slept (as above)
        assert sandbox.ca_file is not None
        completed = subprocess.run(
            [sys.executable, "-W", "ignore::DeprecationWarning", "-c", _FAST_BITRIX24_OVER_TLS, sandbox.webhook_url],
            cwd=REPO_ROOT,
            env={**os.environ, "SSL_CERT_FILE": sandbox.ca_file},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert completed.returncode == 0, completed.stderr
        output = json.loads(completed.stdout)
        assert output["ids"] == list(range(1, 61))
        titles = {lead["ID"]: lead["TITLE"] for lead in sandbox.entities("lead")}
        assert output["rows"] == [[int(key), title] for key, title in sorted(titles.items(), key=lambda i: int(i[0]))]
        assert sorted(titles.values()) == sorted(f"TLS {n}" for n in range(60))
