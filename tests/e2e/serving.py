"""`make serve` as a user runs it, a separate process spoken to over HTTP only: started once per test module (the
``served`` fixture in conftest.py), with its banner and addresses."""

from __future__ import annotations

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Served:
    def __init__(self, url: str, site: str, banner: str):
        self.url, self.site, self.banner = url, site, banner
        self.sandbox = re.search(r"sandbox state: (http://127\.0\.0\.1:\d+)/_sandbox/state", banner).group(1)
        self.aws = re.search(r"AWS \(moto\): (http://127\.0\.0\.1:\d+)", banner).group(1)
        self.form_url = f"{url}/v1/forms/landing/submissions"

    def leads(self) -> list[dict]:
        return requests.get(f"{self.sandbox}/_sandbox/state", params={"entity": "lead"}, timeout=10).json()

    def wait_for_leads(self, phones: set[str], timeout: float = 40) -> dict[str, dict]:
        """The leads with these phones, by phone, once all of them are written (or the timeout passes)."""
        deadline = time.monotonic() + timeout
        while True:
            by_phone = {lead["PHONE"][0]["VALUE"]: lead for lead in self.leads() if lead.get("PHONE")}
            if phones <= set(by_phone) or time.monotonic() > deadline:
                return by_phone
            time.sleep(0.3)


@contextmanager
def serve() -> Iterator[Served]:
    """``python -m local.serve`` on free ports, with a fresh stack of its own as on a developer's machine."""
    port, site_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT}"}
    for key in ("AWS_ENDPOINT_URL", "BITRIX24_WEBHOOK_URL"):
        env.pop(key, None)
    process = subprocess.Popen(
        [sys.executable, "-m", "local.serve", "--port", str(port), "--site-port", str(site_port), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    banner = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        banner.append(line)
        if "Ctrl-C to stop" in line:
            break
    else:
        process.kill()
        pytest.fail("local.serve did not start:\n" + "".join(banner))
    # Keep reading what it prints (tracebacks included): a full pipe would block the stack mid-request.
    threading.Thread(target=lambda: collections.deque(process.stdout, maxlen=0), daemon=True).start()
    try:
        yield Served(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{site_port}", "".join(banner))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)  # the stack's threads get 10 s together, then its servers stop
