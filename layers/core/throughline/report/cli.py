"""``python -m throughline report [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--out DIR]``: the report on demand.

The same job as the nightly function, with progress on the terminal: it reads the configuration like the functions
(environment, or the deployed stack's secret and bucket with ``--stack-name``), refreshes the CRM snapshot, writes
``reports/roi/<date>/`` and ``latest/`` in the bucket and, with ``--out``, the three files into a local folder.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from throughline.adapters.stack import use_stack


def register(commands: Any, stack_outputs: Any) -> None:
    report = commands.add_parser("report", help="build the ROI report for a period (default: month to date)")
    report.add_argument("--from", dest="date_from", type=date.fromisoformat, help="first day, YYYY-MM-DD")
    report.add_argument("--to", dest="date_to", type=date.fromisoformat, help="last day, YYYY-MM-DD")
    report.add_argument("--out", type=Path, help="also write roi.json, roi.csv and index.html here")
    report.add_argument("--stack-name", help="read SECRETS_ARN and DATA_BUCKET from this deployed stack's outputs")
    report.set_defaults(run=lambda args: run(args, stack_outputs))


def run(args: argparse.Namespace, stack_outputs: Any = None) -> int:

    if args.stack_name:
        outputs = stack_outputs(args.stack_name)
        use_stack(outputs, "SecretsArn", "DataBucketName")

    from throughline.adapters.report_store import S3Objects
    from throughline.bitrix24.portal import bitrix_client
    from throughline.config import load_settings
    from throughline.report.job import run_report
    from throughline.report.render import format_number

    settings = load_settings()
    settings.require("data_bucket")
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    result = run_report(
        settings,
        bitrix_client(settings),
        S3Objects(settings.data_bucket or ""),
        date_from=args.date_from,
        date_to=args.date_to,
        progress=progress,
    )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        for name, body in result.files.items():
            (args.out / name).write_bytes(body)
        progress(f"written {args.out / 'index.html'}")
    report = result.report
    print(f"{'Канал':24} {'Расход':>14} {'Лиды':>8} {'Выручка':>14} {'ROMI':>10}")
    lines = [(row.channel_label, row.metrics) for row in report.rows if row.level == "channel"]
    for label, values in [*lines, ("Итого", report.headline)]:
        spend, revenue = format_number(values.spend, "money"), format_number(values.revenue, "money")
        print(f"{label:24} {spend:>14} {values.leads:>8} {revenue:>14} {format_number(values.romi, 'pct'):>10}")
    print(result.locations["latest"] + "index.html")
    return 0
