"""What ``bitrix-setup`` says about offline conversions: each platform skipped (and why) or its goals, and for
Metrica whether each goal exists and is a JavaScript-event goal matching its identifier, as the docs require."""

from __future__ import annotations

from throughline.bitrix24 import Deadline
from throughline.config import Settings
from throughline.conversions import metrica
from throughline.conversions.platforms import PlatformError, RetryableError
from throughline.conversions.run import Clients, default_clients, goals


def setup_lines(settings: Settings, clients: Clients | None = None, deadline: Deadline | None = None) -> list[str]:
    clients = clients or default_clients(settings)
    deadline = deadline or Deadline()
    lines = []
    for platform, (platform_goals, skipped) in goals(settings).items():
        if skipped:
            lines.append(f"offline conversions → {platform}: skipped ({skipped})")
            continue
        named = ", ".join(f"{kind}: {goal}" for kind, goal in platform_goals.items())
        if platform != metrica.PLATFORM or clients.metrica is None:
            lines.append(f"offline conversions → {platform}: {named}")
            continue
        for kind, goal in platform_goals.items():
            try:
                problem = clients.metrica.check_goal(goal, deadline)
            except (PlatformError, RetryableError) as error:
                problem = f"could not be checked ({error})"
            verdict = f"PROBLEM — {problem}" if problem else "a JavaScript event goal, ready"
            lines.append(f"offline conversions → {platform}: {kind} goal {goal}: {verdict}")
    return lines
