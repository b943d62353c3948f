"""Spend import at scale: campaigns per platform from the three sandboxes, a range and four times that range.

Each size runs in its own interpreter. The figure to watch is the memory the import takes above a warm process, at
the small range and at four times the rows: flat means the importer holds one chunk per platform, never the range
(a leak — rows or buffers kept per chunk — grows with the rows). Warm: the interpreter, the modules, the sandboxes,
the HTTP connections and one day's import (which loads what a first request loads lazily) are the baseline; then
the high-water mark of the resident memory is reset (``/proc/self/clear_refs``, Linux) and the import's peak is
read from ``VmHWM``. Without /proc (macOS) the peak is ``ru_maxrss``, never reset: it counts the warm-up too.

S3 is a counting stand-in that keeps only the byte count of each partition object, so the figures are the
importer's (moto would keep every object in this process). The sandboxes run in the same process and stream their
answers; their cost is included. Yandex's offline queue answers at once here (retryIn 0): the wall time is our
work, not a platform's report building. ``--tracemalloc`` also traces Python allocations (slower).

    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.spend            # 3 and 12 months × 500 campaigns
    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.spend --quick    # the CI smoke run: 2 and 8 months × 100
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAST_DAY = date(2026, 10, 31)
QUICK_CAMPAIGNS, QUICK_DAYS = 100, (62, 248)
FULL_DAYS = (92, 365)
PLATFORMS = ("yandex_direct", "google_ads", "vk_ads")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 campaigns, 2 and 8 months: a smoke run")
    parser.add_argument("--campaigns", type=int, default=500)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocations (about 4× slower)")
    parser.add_argument("--platform", action="append", choices=PLATFORMS, help="only this platform (repeatable)")
    parser.add_argument("--days", type=int, nargs=2, help="the two ranges to compare, in days")
    parser.add_argument("--worker-days", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_days:
        print(json.dumps(_work(args.worker_days, args.campaigns, args.tracemalloc, tuple(args.platform or PLATFORMS))))
        return 0
    # Sizes whose import holds megabytes above the warm process: the allocator's noise (a megabyte or two of RSS)
    # must not be the figure. Several chunks per platform against four times as many (2 and 8 in the smoke run): the
    # first chunks settle the allocator (freed memory it keeps, threads' arenas); what grows after that is held.
    campaigns = QUICK_CAMPAIGNS if args.quick else args.campaigns
    sizes = tuple(args.days) if args.days else QUICK_DAYS if args.quick else FULL_DAYS
    platforms = tuple(args.platform or PLATFORMS)
    print(f"spend import benchmark: {campaigns} campaigns per platform, {', '.join(platforms)} in parallel")
    header = ["days", "rows", "objects", "MB gz", "wall s", "rows/s", "warm RSS MB", "peak RSS MB", "import MB"]
    header += ["peak traced MB"] if args.tracemalloc else []
    print(" ".join(f"{name:>12}" for name in header))
    figures = []
    for days in sizes:
        command = [sys.executable, "-m", "benchmarks.spend", "--worker-days", str(days), "--campaigns", str(campaigns)]
        command += ["--tracemalloc"] if args.tracemalloc else []
        command += [option for platform in platforms for option in ("--platform", platform)]
        environment = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT}"}
        output = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, check=True).stdout
        figure = json.loads(output.strip().splitlines()[-1])
        figures.append(figure)
        values = [days, figure["rows"], figure["objects"], f"{figure['bytes'] / 1e6:.1f}",
                  f"{figure['wall_seconds']:.1f}", f"{figure['rows'] / figure['wall_seconds']:.0f}",
                  f"{figure['baseline_rss_mb']:.1f}", f"{figure['peak_rss_mb']:.1f}",
                  f"{figure['peak_rss_mb'] - figure['baseline_rss_mb']:.1f}"]  # fmt: skip
        values += [f"{figure['traced_peak_mb']:.1f}"] if args.tracemalloc else []
        print(" ".join(f"{value:>12}" for value in values))
    small, large = figures
    above = [figure["peak_rss_mb"] - figure["baseline_rss_mb"] for figure in figures]
    summary = f"rows × {large['rows'] / small['rows']:.1f} → the import's memory above the warm process × "
    summary += f"{above[1] / above[0]:.2f}"
    summary += "" if figures[0]["peak_reset"] else " (peak not reset: the warm-up is included)"
    if args.tracemalloc:
        summary += f", peak Python allocations × {large['traced_peak_mb'] / small['traced_peak_mb']:.2f}"
    print(summary)
    if args.json:
        args.json.write_text(json.dumps({"campaigns": campaigns, "runs": figures}, indent=2), encoding="utf-8")
    return 0


def _work(days: int, campaigns: int, traced: bool, platforms: tuple[str, ...] = ()) -> dict[str, Any]:
    from local.ad_sandboxes import GoogleAdsSandbox, VkAdsSandbox, YandexDirectSandbox
    from throughline.adapters.spend_store import SpendStore
    from throughline.spend.google_ads import GoogleAdsSource
    from throughline.spend.importer import import_spend
    from throughline.spend.vk_ads import VkAdsSource
    from throughline.spend.yandex_direct import YandexDirectSource

    class Unbounded:
        def seconds_left(self) -> float:
            return float("inf")

    s3 = CountingS3()
    store = SpendStore("benchmark", client=s3)
    now = datetime.now(UTC)
    first = LAST_DAY - timedelta(days=days - 1)
    with (
        YandexDirectSandbox({"client-one": ("RUB", campaigns)}, offline_polls=1, retry_in=0) as direct,
        GoogleAdsSandbox({"1112223334": ("RUB", "Europe/Moscow", campaigns)}) as google,
        VkAdsSandbox(campaigns=campaigns) as vk,
    ):
        sources = [
            YandexDirectSource("agency-token", direct.api_url, ("client-one",), run_date=now.date(), ingested_at=now),
            GoogleAdsSource(client_id="sandbox-client-id", client_secret="sandbox-client-secret",
                            refresh_token="sandbox-refresh-token", customer_ids=("1112223334",),
                            api_url=google.api_url(), token_url=google.token_url, ingested_at=now),
            VkAdsSource(client_id="vk-sandbox-client", client_secret="vk-sandbox-secret", api_url=vk.api_url,
                        token_store=store, ingested_at=now),
        ]  # fmt: skip
        sources = [source for source in sources if source.platform in (platforms or PLATFORMS)]
        # Warm-up: a day before the range, every platform (lazy imports, connections, caches, the VK token).
        warm_day = first - timedelta(days=1)
        warm = import_spend(sources, store, warm_day, warm_day, deadline=Unbounded(), ingested_at=now)
        if warm.failures:
            raise SystemExit(f"benchmark warm-up failed: {warm.failures}")
        stored_before = (s3.objects, s3.bytes)
        gc.collect()
        baseline = _rss_mb()
        peak_reset = _reset_peak()
        if traced:
            tracemalloc.start()
        started = time.perf_counter()
        result = import_spend(sources, store, first, LAST_DAY, deadline=Unbounded(), ingested_at=now)
        wall = time.perf_counter() - started
        peak = _peak_mb()
        traced_peak = tracemalloc.get_traced_memory()[1] / 1e6 if traced else None
        tracemalloc.stop()
    if result.failures:
        raise SystemExit(f"benchmark run failed: {result.failures}")
    rows = sum(platform.rows for platform in result.platforms.values())
    objects, stored = s3.objects - stored_before[0], s3.bytes - stored_before[1]
    return {"days": days, "rows": rows, "objects": objects, "bytes": stored, "wall_seconds": wall,
            "baseline_rss_mb": baseline, "peak_rss_mb": max(peak, baseline), "peak_reset": peak_reset,
            "traced_peak_mb": traced_peak}  # fmt: skip


class CountingS3:
    """Enough of an S3 client for the spend store: partition bodies are counted, not kept; small objects are kept."""

    class exceptions:
        class NoSuchKey(Exception):
            pass

    def __init__(self) -> None:
        self.objects = 0
        self.bytes = 0
        self.small: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, **_: Any) -> None:
        if Key.startswith("spend/platform="):
            self.objects += 1
            self.bytes += len(Body)
        else:
            self.small[Key] = Body

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, Any]:
        if Key not in self.small:
            raise self.exceptions.NoSuchKey(Key)
        import io

        return {"Body": io.BytesIO(self.small[Key])}


def _status_mb(field: str) -> float | None:
    """``VmRSS`` or ``VmHWM`` of this process from /proc (Linux), in MB of 2^20 bytes; None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _rss_mb() -> float:
    """The resident memory now (Linux); elsewhere the high-water mark so far, the best the platform tells."""
    now = _status_mb("VmRSS")
    return now if now is not None else _maxrss_mb()


def _reset_peak() -> bool:
    """Reset the high-water mark of the resident memory to what is resident now (Linux 4.0+: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        return False
    return True


def _peak_mb() -> float:
    peak = _status_mb("VmHWM")
    return peak if peak is not None else _maxrss_mb()


def _maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kB on Linux


if __name__ == "__main__":
    sys.exit(main())
