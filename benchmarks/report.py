"""The ROI report at portal scale: 1 000 000 leads, 200 000 deals, 365 × 1 000 spend rows, built in one process.

The data is written first as the report reads it in production — the CRM snapshot as gzip JSON Lines buckets with
the report's columnar copy of leads, deals and the stage history (by the snapshot refresh's own writer,
``report.crm.write_snapshot``), spend rows as gzip JSON Lines partitions — then a fresh child process reads it all
and builds the report and its three files. The child prints its CPU and wall time and its own peak memory (VmHWM),
the figures to compare with the targets: under 30 s of CPU and under 1 000 MB.

    PYTHONPATH=layers/core:. python benchmarks/report.py            # full size
    PYTHONPATH=layers/core:. python benchmarks/report.py --quick    # a CI smoke run (a hundredth of the size)
    PYTHONPATH=layers/core:. python benchmarks/report.py --scale 5 --data /tmp/roi-5 --only year  # kept data, one run
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 30.0
TARGET_MB = 1000.0  # a Lambda of 1 GB, with room for the runtime
LAST_DAY = date(2026, 11, 30)
SOURCES = (  # (utm_source, utm_medium, platform, share of leads)
    ("yandex", "cpc", "yandex_direct", 0.40),
    ("google", "cpc", "google_ads", 0.20),
    ("vk", "cpc", "vk_ads", 0.12),
    ("yandex", "organic", None, 0.08),
    ("telegram", "social", None, 0.05),
    ("email", "newsletter", None, 0.04),
    ("partner-xyz", "referral", None, 0.03),
    ("", "", None, 0.08),  # no tags: SOURCE_ID decides, or nothing does
)
# The channel of each of SOURCES, and the channels of touches before the one that brought the lead.
CHANNELS = ("paid_search", "paid_search", "social", "organic_search", "social", "email", "referral", "direct")
ASSISTS = ("organic_search", "social", "email", "direct", "referral", "display", "messenger", "paid_search")
PLATFORM_CAMPAIGNS = {"yandex_direct": 500, "google_ads": 300, "vk_ads": 200}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a hundredth of the size: a smoke run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--scale", type=int, help="a 1/SCALE-size run (20 and 5 are what outputs are compared at)")
    parser.add_argument("--data", type=Path, help="generate into (or reuse) this folder and keep it")
    parser.add_argument("--only", choices=("nightly-bare", "nightly", "year"), help="build this run only")
    parser.add_argument("--out", type=Path, help="the child: also write roi.json, roi.csv, index.html here")
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)  # the child: build from this folder
    parser.add_argument("--year", action="store_true", help=argparse.SUPPRESS)  # the child: a 365-day period
    parser.add_argument("--no-journeys", action="store_true", help=argparse.SUPPRESS)  # the child: no attribution
    args = parser.parse_args(argv)
    if args.run:
        return _build(args.run, args.year, not args.no_journeys, args.out)
    scale = args.scale or (100 if args.quick else 1)
    leads, deals, days, campaigns = 1_000_000 // scale, 200_000 // scale, 365, 1_000 // scale
    with contextlib.ExitStack() as stack:
        folder = str(args.data) if args.data else stack.enter_context(tempfile.TemporaryDirectory(prefix="roi-bench-"))
        started = time.perf_counter()
        if args.data and (args.data / "journeys/latest.json").exists():
            print(f"data: reusing {args.data}")
        else:
            sizes = _generate(Path(folder), leads, deals, days, campaigns)
            print(
                f"data: {leads} leads, {deals} deals, {days} × {campaigns} spend rows "
                f"({sizes / 1e6:.0f} MB gzip) written in {time.perf_counter() - started:.1f} s"
            )
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT}"}
        runs = []
        chosen = {"nightly-bare": (False, False), "nightly": (False, True), "year": (True, True)}
        for year, journeys in [chosen[args.only]] if args.only else chosen.values():
            command = [sys.executable, __file__, "--run", folder, *(["--year"] if year else []),
                       *([] if journeys else ["--no-journeys"])]  # fmt: skip
            child = subprocess.run(command, env=env, capture_output=True, text=True)
            if child.returncode != 0:
                print(child.stdout, child.stderr, file=sys.stderr)
                return child.returncode
            runs.append((year, json.loads(child.stdout.strip().splitlines()[-1])))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall time here includes waiting for a CPU;")
    print("CPU time is what an unshared Lambda vCPU (1769 MB) would take, and the figure held against the target")
    for year, figures in runs:
        ok = figures["cpu_seconds"] < TARGET_SECONDS and figures["peak_mb"] < TARGET_MB
        what = "a 365-day period (every spend row)" if year else "the nightly period (month to date + previous month)"
        attribution = (
            f"attribution: {figures['touches']} touches, {figures['conversions']:.0f} won deals, eight models"
            if figures["touches"] is not None
            else "without the journey export (no attribution)"
        )
        print(f"{what}, {figures['period']}: {figures['leads']} leads in the period; {attribution}")
        print(
            f"  CPU {figures['cpu_seconds']:.1f} s, wall {figures['seconds']:.1f} s (target < {TARGET_SECONDS:.0f} s);"
            f" peak memory {figures['peak_mb']:.0f} MB (target < {TARGET_MB:.0f} MB): {'OK' if ok else 'MISSED'}"
        )
        print(
            f"  wall: read + build {figures['build_seconds']:.1f} s, render {figures['render_seconds']:.1f} s; "
            f"{figures['rows']} rows; roi.json {figures['json_kb']} kB, index.html {figures['html_kb']} kB"
        )
    if args.json:
        labelled = [{"run": "year" if year else ("nightly" if f["touches"] is not None else "nightly, no journeys"),
                     "leads_generated": leads, **f} for year, f in runs]  # fmt: skip
        args.json.write_text(json.dumps(labelled, indent=2))
    return 0


# ---- the data ------------------------------------------------------------------------------------------------------


def _generate(folder: Path, leads: int, deals: int, days: int, campaigns: int) -> int:
    from throughline.journey.packed import ENTITIES_NAME, pack_entities, pack_lines, packed_folder, packed_name, pointer

    rng = random.Random(42)
    first_day = LAST_DAY - timedelta(days=days - 1)
    weights = [share for *_, share in SOURCES]
    per_platform = {platform: max(1, count * campaigns // 1000) for platform, count in PLATFORM_CAMPAIGNS.items()}
    written = 0

    def write(path: Path, rows: Iterator[dict]) -> None:
        nonlocal written
        path.parent.mkdir(parents=True, exist_ok=True)
        data = gzip.compress(
            "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in rows).encode(),
            compresslevel=1,
        )
        path.write_bytes(data)
        written += len(data)

    lead_days: list[str] = []
    lead_channels: list[int] = []  # index into SOURCES, for the journey export

    def lead_rows(start: int, stop: int) -> Iterator[dict]:
        for lead_id in range(start, stop):
            index = rng.choices(range(len(SOURCES)), weights)[0]
            source, medium, platform, _ = SOURCES[index]
            day = (first_day + timedelta(days=rng.randrange(days))).isoformat()
            lead_days.append(day)
            lead_channels.append(index)
            row = {
                "ID": str(lead_id),
                "DATE_CREATE": f"{day}T12:00:00+03:00",
                "DATE_MODIFY": f"{day}T13:00:00+03:00",
                "STATUS_ID": rng.choice(("NEW", "IN_PROCESS", "CONVERTED", "JUNK")),
                "STATUS_SEMANTIC_ID": "P",
                "SOURCE_ID": rng.choice(("WEB", "CALL", "OTHER", "ADVERTISING")),
                "PERSON_KEYS": [f"{rng.getrandbits(72):018x}"],
            }
            if source:
                row.update(
                    {
                        "UTM_SOURCE": source,
                        "UTM_MEDIUM": medium,
                        "UTM_CONTENT": f"ad{rng.randrange(20)}",
                        "UTM_TERM": f"kw{rng.randrange(50)}",
                    }
                )
                if platform:
                    number = rng.randrange(per_platform[platform])
                    # Yandex advertisers tag {campaign_id}; the others tag the campaign's name.
                    row["UTM_CAMPAIGN"] = (
                        f"{platform[:2]}{number}" if platform == "yandex_direct" else f"Кампания {platform} {number}"
                    )
                else:
                    row["UTM_CAMPAIGN"] = f"post{rng.randrange(30)}"
            yield row

    # The CRM snapshot as the refresh writes it (report.crm's writer): JSON buckets and the report's columnar copy.
    from throughline.report.crm import write_snapshot

    objects = FolderObjects(folder)
    bucket_size = 100_000

    def lead_batches() -> Iterator[list[dict]]:
        for bucket in range(leads // bucket_size + 1):
            ids = range(max(1, bucket * bucket_size), min((bucket + 1) * bucket_size, leads + 1))
            if ids:
                yield list(lead_rows(ids.start, ids.stop))

    write_snapshot(objects, "lead", lead_batches())

    def deal_rows() -> Iterator[dict]:
        for deal_id in range(1, deals + 1):
            lead_id = rng.randrange(1, leads + 1)
            created = date.fromisoformat(lead_days[lead_id - 1]) + timedelta(days=rng.randrange(0, 5))
            won = rng.random() < 0.4
            closed = created + timedelta(days=rng.randrange(1, 40))
            yield {
                "ID": str(deal_id),
                "DATE_CREATE": f"{created}T12:00:00+03:00",
                "CATEGORY_ID": "0",
                "STAGE_ID": "WON" if won else rng.choice(("NEW", "EXECUTING", "LOSE")),
                "STAGE_SEMANTIC_ID": "S" if won else "P",
                "OPPORTUNITY": f"{rng.randrange(5_000, 200_000)}.00",
                "CURRENCY_ID": "RUB" if rng.random() < 0.97 else "USD",
                "CLOSEDATE": f"{closed}T00:00:00+03:00",
                "LEAD_ID": str(lead_id),
                "CONTACT_ID": str(rng.randrange(1, leads // 2)),
            }

    history: list[dict] = []  # crm.stagehistory.list of deals: creation, then each move

    def moves(deal: dict) -> None:
        created = datetime.fromisoformat(deal["DATE_CREATE"])
        closed = datetime.fromisoformat(deal["CLOSEDATE"])
        steps = [("NEW", created)]
        if deal["STAGE_ID"] != "NEW":
            steps.append(("EXECUTING", created + (closed - created) / 3))
        if deal["STAGE_ID"] in ("WON", "LOSE"):
            steps.append((deal["STAGE_ID"], closed))
        for stage, at in steps:
            history.append(
                {
                    "ID": len(history) + 1,
                    "TYPE_ID": 1 if stage == "NEW" else 2,
                    "OWNER_ID": int(deal["ID"]),
                    "CREATED_TIME": at.isoformat(),
                    "CATEGORY_ID": 0,
                    "STAGE_ID": stage,
                }
            )

    all_deals = deal_rows()
    deal_leads: list[tuple[int, int, str | None]] = []  # (deal, lead, won at) for the journey export

    def deal_batches() -> Iterator[list[dict]]:
        for bucket in range(deals // bucket_size + 1):
            ids = range(max(1, bucket * bucket_size), min((bucket + 1) * bucket_size, deals + 1))
            if ids:
                chunk = [next(all_deals) for _ in ids]
                for deal in chunk:
                    moves(deal)
                    won_at = deal["CLOSEDATE"].replace("T00:00:00", "T15:00:00") if deal["STAGE_ID"] == "WON" else None
                    deal_leads.append((int(deal["ID"]), int(deal["LEAD_ID"]), won_at))
                yield chunk

    write_snapshot(objects, "deal", deal_batches())
    # The stage history as the snapshot's writer keeps it: its JSON buckets and their columnar copies.
    write_snapshot(objects, "deal_history", (history[start : start + bucket_size]
                                             for start in range(0, len(history), bucket_size)))  # fmt: skip
    written += sum(path.stat().st_size for path in (folder / "crm/snapshot").rglob("*.gz"))

    # The journey export (journey/export.py): each lead's own touch, 0–2 earlier ones (about one on average), each
    # won deal's sales-side `won` touch; entities link deals to their leads' people.
    folder_name = "journeys/snapshot=2026-12-01"
    parts: list[str] = []

    def touch_rows(start: int, stop: int) -> Iterator[dict]:
        for lead_id in range(start, stop):
            person, day = f"p{lead_id}", date.fromisoformat(lead_days[lead_id - 1])
            for back in range(rng.choice((0, 1, 1, 2)), 0, -1):
                at = f"{day - timedelta(days=back * rng.randrange(1, 6))}T09:00:00Z"
                yield {"person_key": person, "entity_type": "lead", "entity_id": lead_id, "at": at,
                       "kind": "first_visit", "channel": rng.choice(ASSISTS), "source": "", "campaign": ""}  # fmt: skip
            yield {"person_key": person, "entity_type": "lead", "entity_id": lead_id, "at": f"{day}T09:00:00Z",
                   "kind": "form", "channel": CHANNELS[lead_channels[lead_id - 1]],
                   "source": SOURCES[lead_channels[lead_id - 1]][0], "campaign": ""}  # fmt: skip

    # Each part's packed copy, as the export writes it (journey/packed.py), named by latest.json's "packed".
    packed_at = packed_folder("2026-12-01", "run=bench")
    packed: list[str] = []

    def write_part(name: str, rows: list[dict]) -> None:
        nonlocal written
        write(folder / name, iter(rows))
        parts.append(name)
        packed.append(packed_name(packed_at, name))
        body = pack_lines("2026-12-01", name, rows)
        (folder / packed[-1]).parent.mkdir(parents=True, exist_ok=True)
        (folder / packed[-1]).write_bytes(body)
        written += len(body)

    for number, start in enumerate(range(1, leads + 1, bucket_size)):
        rows = list(touch_rows(start, min(start + bucket_size, leads + 1)))
        write_part(f"{folder_name}/part-{number:05d}.json.gz", rows)
    write_part(f"{folder_name}/part-{len(parts):05d}.json.gz",
               [{"person_key": f"p{lead_id}", "entity_type": "deal", "entity_id": deal_id, "at": won_at,
                 "kind": "won", "channel": "crm", "source": "", "campaign": ""}
                for deal_id, lead_id, won_at in deal_leads if won_at])  # fmt: skip
    entities = [
        *({"entity_type": "lead", "entity_id": lead_id, "person_key": f"p{lead_id}", "deleted": False, "lead_id": None}
          for lead_id in range(1, leads + 1)),
        *({"entity_type": "deal", "entity_id": deal_id, "person_key": f"p{lead_id}", "deleted": False,
           "lead_id": lead_id} for deal_id, lead_id, _ in deal_leads)]  # fmt: skip
    write(folder / f"{folder_name}/entities.json.gz", iter(entities))
    (folder / packed_at / ENTITIES_NAME).write_bytes(pack_entities("2026-12-01", entities))
    latest = {"snapshot": "2026-12-01", "parts": parts, "packed": pointer(packed, f"{packed_at}/{ENTITIES_NAME}")}
    (folder / "journeys/latest.json").write_text(json.dumps(latest))

    for offset in range(days):
        day = (first_day + timedelta(days=offset)).isoformat()
        for platform, count in per_platform.items():
            write(
                folder / f"spend/platform={platform}/date={day}/acc.json.gz",
                (
                    {
                        "date": day,
                        "platform": platform,
                        "account_id": "acc",
                        "campaign_id": f"{platform[:2]}{number}",
                        "campaign_name": f"Кампания {platform} {number}",
                        "impressions": rng.randrange(100, 20_000),
                        "clicks": rng.randrange(1, 400),
                        "cost": float(f"{rng.randrange(100, 50_000)}.{rng.randrange(100):02d}"),
                        "currency": "RUB",
                        "include_vat": False,
                        "account_timezone": "Europe/Moscow",
                        "ingested_at": f"{day}T02:00:00Z",
                    }
                    for number in range(count)
                ),
            )
    return written


# ---- the child: read and build -------------------------------------------------------------------------------------


class FolderObjects:
    """The S3 side of the report on a local folder: the same keys, the same readers as in production."""

    def __init__(self, root: Path):
        self.root = root

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.exists() else None

    def put(self, key: str, body: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def keys(self, prefix: str, start_after: str = "") -> Iterator[str]:
        # As S3 lists a prefix: only the folder the prefix names is walked (the whole tree per call, seven calls,
        # was some of the CPU time the benchmark reported).
        folder = self.root / prefix.rpartition("/")[0]
        paths = folder.rglob("*") if folder.is_dir() else ()
        found = sorted(str(path.relative_to(self.root)) for path in paths if path.is_file())
        return iter([key for key in found if key.startswith(prefix) and key > start_after])

    def prefixes(self, prefix: str) -> list[str]:
        return sorted(f"{prefix}{path.name}/" for path in (self.root / prefix).iterdir() if path.is_dir())


def _own_peak_kb() -> float:
    """This process's own peak resident memory, in kilobytes.

    Not ``ru_maxrss``: on Linux a child started by ``subprocess`` inherits its parent's high-water mark through fork
    and exec, so every child reported at least the peak of the parent that had just generated the data (981 MB for a
    nightly run whose own peak was about 320 MB). ``VmHWM`` is the high-water mark of the memory the process itself
    mapped after exec; ``ru_maxrss`` only where there is no /proc (macOS, in bytes there)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform == "darwin" else float(peak)


def _history(objects: FolderObjects, read_rows, read_snapshot):
    """The stage history as the job reads it: its columnar copy; an older layers/core without one, the JSON."""
    try:
        return read_rows(objects, "deal_history")
    except ValueError:
        return read_snapshot(objects, "deal_history")


def _build(folder: Path, whole_year: bool, with_journeys: bool = True, out: Path | None = None) -> int:
    from throughline.adapters.report_store import read_spend
    from throughline.report.attribution import read_journeys
    from throughline.report.build import ReportOptions, build_report, default_periods, previous_period
    from throughline.report.crm import read_snapshot

    try:
        from throughline.report.crm import read_rows
    except ImportError:  # an older layers/core (report_identical.py's base): the JSON buckets, as it read them
        read_rows = read_snapshot  # type: ignore[assignment]
    from throughline.report.funnel import StageBook
    from throughline.report.models import Period
    from throughline.report.rates import RateBook
    from throughline.report.render import render_csv, render_html, render_json

    started, cpu_started = time.perf_counter(), time.process_time()
    period, previous = default_periods(LAST_DAY + timedelta(days=1))
    if whole_year:
        period = Period(date_from=LAST_DAY - timedelta(days=364), date_to=LAST_DAY)
        previous = previous_period(period)
    objects = FolderObjects(folder)
    stages = [
        {"ENTITY_ID": "DEAL_STAGE", "STATUS_ID": stage, "NAME": stage, "SORT": str(sort), "SEMANTICS": semantics}
        for sort, (stage, semantics) in enumerate((("NEW", None), ("EXECUTING", None), ("WON", "S"), ("LOSE", "F")))
    ]
    report = build_report(
        period=period,
        previous=previous,
        leads=read_rows(objects, "lead"),  # the columnar copy (report.columns), as the job reads it
        deals=read_rows(objects, "deal"),
        stage_history=lambda: _history(objects, read_rows, read_snapshot),  # read once, as the job does
        spend=read_spend(objects, previous.date_from, period.date_to),  # type: ignore[arg-type]
        rates=RateBook("RUB", [{"date": "2025-01-01", "base": "RUB", "rates": {"USD": "92.12"}, "source": "bench"}]),
        stages=StageBook(stages),
        options=ReportOptions(),
        journeys=read_journeys(objects) if with_journeys else None,
        now=lambda: datetime(2026, 12, 1, 5),
    )
    built = time.perf_counter()
    files = {"json": render_json(report), "csv": render_csv(report), "html": render_html(report)}
    finished = time.perf_counter()
    peak_kb = _own_peak_kb()
    if out is not None:  # outside the figures: the files as the job writes them, to compare byte for byte
        out.mkdir(parents=True, exist_ok=True)
        for name, kind in (("roi.json", "json"), ("roi.csv", "csv"), ("index.html", "html")):
            text = files[kind]
            (out / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    print(
        json.dumps(
            {
                "seconds": finished - started,
                "cpu_seconds": time.process_time() - cpu_started,
                "build_seconds": built - started,
                "render_seconds": finished - built,
                "peak_mb": peak_kb / 1024,
                "rows": len(report.rows),
                "json_kb": len(files["json"]) // 1024,
                "html_kb": len(files["html"]) // 1024,
                "spend": float(report.headline.spend),
                "leads": report.headline.leads,
                "period": f"{period.date_from} … {period.date_to}",
                "touches": report.attribution.touches if report.attribution else None,
                "conversions": float(report.attribution.conversions) if report.attribution else None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
