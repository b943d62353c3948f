"""How the report's data engine was chosen: the same core job on the same data with plain Python, polars and DuckDB.

The job is the report's heavy part: read every lead and deal of the CRM snapshot (gzip JSON Lines), count leads per
tag combination and day, join deals to their leads and add up won revenue in roubles per lead tags. Plain Python
does the report's real work here (its builder also classifies, matches spend and converts currencies). Each engine
runs in a fresh process; the figures are wall time, CPU time (what an unshared Lambda vCPU would take) and peak
memory. polars and DuckDB are not project dependencies: install them to rerun (``pip install polars duckdb``); an
engine that is not installed is skipped.

    PYTHONPATH=layers/core:. python benchmarks/report_engines.py [--leads 1000000] [--deals 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("python", "polars", "duckdb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--deals", type=int, default=200_000)
    parser.add_argument("--engine", choices=ENGINES, help=argparse.SUPPRESS)  # the child
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.engine:
        return _run(args.engine, args.data)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import _generate  # the report benchmark's data

    with tempfile.TemporaryDirectory(prefix="roi-engines-") as folder:
        _generate(Path(folder), args.leads, args.deals, 1, 1)
        print(f"{args.leads} leads, {args.deals} deals; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for engine in ENGINES:
            env = {**os.environ, "PYTHONPATH": f"{ROOT / 'layers/core'}:{ROOT}"}
            child = subprocess.run(
                [sys.executable, __file__, "--engine", engine, "--data", folder],
                env=env,
                capture_output=True,
                text=True,
            )
            if child.returncode != 0:
                print(f"  {engine:7} skipped: {(child.stderr.strip().splitlines() or ['?'])[-1]}")
                continue
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"  {engine:7} wall {figures['wall']:6.1f} s  cpu {figures['cpu']:6.1f} s"
                f"  peak {figures['peak_mb']:5.0f} MB"
                f"  groups {figures['groups']}  revenue {figures['revenue']:.0f}"
            )
    return 0


def _run(engine: str, folder: Path) -> int:
    wall, cpu = time.perf_counter(), time.process_time()
    groups, revenue = {"python": _python, "polars": _polars, "duckdb": _duckdb}[engine](folder)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
                "peak_mb": peak,
                "groups": groups,
                "revenue": revenue,
            }
        )
    )
    return 0


def _python(folder: Path) -> tuple[int, float]:
    from datetime import date

    from report import FolderObjects

    from throughline.report.build import ReportOptions, _Builder, previous_period
    from throughline.report.crm import read_snapshot
    from throughline.report.models import Period
    from throughline.report.rates import RateBook

    period = Period(date_from=date(2025, 1, 1), date_to=date(2027, 12, 31))
    builder = _Builder(period, previous_period(period), RateBook("RUB"), ReportOptions())
    objects = FolderObjects(folder)
    builder.add_leads(read_snapshot(objects, "lead"))
    builder.add_deals(read_snapshot(objects, "deal"))
    revenue = sum(float(c.totals[0].revenue) for c in builder.campaigns.values())
    return len(builder._slot_index), revenue


def _polars(folder: Path) -> tuple[int, float]:
    import gzip

    import polars as pl

    def frame(entity: str, columns: list[str]) -> pl.DataFrame:
        parts = [
            pl.read_ndjson(gzip.decompress(path.read_bytes())).select(columns)
            for path in sorted(folder.glob(f"crm/snapshot/entity={entity}/*/*.json.gz"))
        ]
        return pl.concat(parts, how="diagonal_relaxed")

    tags = ["UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "SOURCE_ID"]
    leads = frame("lead", ["ID", "DATE_CREATE", *tags]).with_columns(pl.col("DATE_CREATE").str.slice(0, 10))
    deals = frame("deal", ["LEAD_ID", "STAGE_SEMANTIC_ID", "OPPORTUNITY", "CURRENCY_ID"])
    counts = leads.group_by([*tags, "DATE_CREATE"]).len()
    won = deals.filter((pl.col("STAGE_SEMANTIC_ID") == "S") & (pl.col("CURRENCY_ID") == "RUB")).join(
        leads, left_on="LEAD_ID", right_on="ID"
    )
    revenue = won.group_by(tags).agg(pl.col("OPPORTUNITY").cast(pl.Decimal(18, 2)).sum())
    return counts.select(tags).unique().height, float(revenue["OPPORTUNITY"].sum())


def _duckdb(folder: Path) -> tuple[int, float]:
    import duckdb

    connection = duckdb.connect()
    lead_files = str(folder / "crm/snapshot/entity=lead/*/*.json.gz")
    deal_files = str(folder / "crm/snapshot/entity=deal/*/*.json.gz")
    connection.execute(f"""
        create table leads as select ID, cast(DATE_CREATE as date) as day, UTM_SOURCE, UTM_MEDIUM, UTM_CAMPAIGN,
               SOURCE_ID from read_json('{lead_files}', format='newline_delimited', union_by_name=true)""")
    groups = connection.execute("""select count(*) from (select distinct UTM_SOURCE, UTM_MEDIUM, UTM_CAMPAIGN,
        SOURCE_ID from leads)""").fetchone()[0]
    revenue = connection.execute(f"""
        select sum(cast(d.OPPORTUNITY as decimal(18, 2))) from read_json('{deal_files}', format='newline_delimited')
        d join leads l on l.ID = d.LEAD_ID where d.STAGE_SEMANTIC_ID = 'S' and d.CURRENCY_ID = 'RUB'""").fetchone()[0]
    return groups, float(revenue)


if __name__ == "__main__":
    sys.exit(main())
