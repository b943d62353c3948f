"""Tracing must never record a Bitrix24 webhook URL: its path carries the secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, requests, botocore.client
from aws_xray_sdk.core import patcher
from throughline.observability import tracer
print(json.dumps({
    "patched": sorted(patcher._PATCHED_MODULES),
    "requests_wrapped": hasattr(requests.Session.request, "__wrapped__"),
    "botocore_wrapped": hasattr(botocore.client.BaseClient._make_api_call, "__wrapped__"),
}))
"""


def test_the_tracer_patches_botocore_but_not_requests():
    # As in Lambda: the tracer is enabled there (LAMBDA_TASK_ROOT set), so run it in a process that looks like one.
    env = {
        **os.environ,
        "LAMBDA_TASK_ROOT": str(ROOT),
        "AWS_LAMBDA_FUNCTION_NAME": "bitrix_writer",
        "PYTHONPATH": str(ROOT / "layers/core"),
    }
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    env.pop("AWS_SAM_LOCAL", None)
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["botocore_wrapped"] and "botocore" in found["patched"]
    assert not found["requests_wrapped"] and "requests" not in found["patched"]
    assert "httplib" not in found["patched"]  # would record the same URL one layer down
