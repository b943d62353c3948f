"""``python -m throughline import-spend --from … --to … [--platform …]``: a back-fill from a terminal.

Reads the same configuration as the function (environment, or the deployed stack's secret with ``--stack-name``),
writes to DATA_BUCKET, shows a progress line per chunk on a terminal, and exits 1 naming what failed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from throughline.adapters.stack import use_stack
from throughline.spend.plan import Chunk
from throughline.spend.rows import PLATFORMS


def register(commands: argparse._SubParsersAction, stack_outputs: Any = None) -> None:
    spend = commands.add_parser("import-spend", help="import ad spend for a date range (a back-fill)")
    spend.add_argument("--from", dest="date_from", help="first date, YYYY-MM-DD (default: the lookback window)")
    spend.add_argument("--to", dest="date_to", help="last date, YYYY-MM-DD")
    spend.add_argument("--platform", action="append", choices=PLATFORMS, help="only this platform (repeatable)")
    spend.add_argument("--stack-name", help="use this deployed stack's bucket and secret")
    spend.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:

    from throughline.bitrix24 import Deadline
    from throughline.config import load_settings
    from throughline.spend.run import RunRequest, run_spend_import

    if args.stack_name:
        from throughline.adapters.stack import stack_outputs

        outputs = stack_outputs(args.stack_name)
        use_stack(outputs, "SecretsArn", "DataBucketName")
    settings = load_settings()
    event = {"date_from": args.date_from, "date_to": args.date_to, "platforms": args.platform or []}
    request = RunRequest.parse(event, settings)
    out.write(f"importing {request.date_from}…{request.date_to} from {', '.join(request.platforms)}\n")
    terminal = out.isatty()

    def progress(platform: str, chunk: Chunk, done: int, planned: int, rows: int) -> None:
        line = f"{platform:<14} {done:>4}/{planned:<4} {chunk.account_id} {chunk.date_from}…{chunk.date_to} {rows} rows"
        out.write(("\r\033[K" + line) if terminal else line + "\n")
        out.flush()

    result = run_spend_import(settings, request, deadline=Deadline(), progress=progress)
    if terminal:
        out.write("\n")
    for name, platform in sorted(result.platforms.items()):
        if name.startswith("_"):
            continue
        out.write(
            f"{name}: {platform.status}, {platform.rows} rows in {platform.partitions} partitions"
            + (
                f", {platform.rows_not_written} of {platform.rows_fetched} fetched rows not written"
                if platform.rows_not_written
                else ""
            )
            + (f", {len(platform.pending)} chunks left for the next run" if platform.pending else "")
            + "\n"
        )
    for failure in result.failures:
        out.write(f"FAILED {failure}\n")
    return 1 if result.failures else 0
