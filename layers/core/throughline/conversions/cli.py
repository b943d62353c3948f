"""``python -m throughline conversions --from … --to … [--dry-run]``: send (or show) a range's offline conversions.

Reads the same configuration as the function (environment, or with ``--stack-name`` the deployed stack's outputs,
secret and the parameters upload_conversions reads: the Metrica counter and goals, Google's conversion action, VK's
pixel and goal, the qualified stages, the time zone and currency; the environment still wins). ``--dry-run`` sends
nothing and records nothing: it prints, per platform, each conversion with its goal, time, amount and the kind of
identifier it would be joined on (never the identifier itself); ``--validate`` also sends Google's events with
``validateOnly`` (checked by Google, not ingested).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any, TextIO

from throughline.adapters.stack import use_stack


def register(commands: argparse._SubParsersAction, stack_outputs: Any = None) -> None:
    parser = commands.add_parser("conversions", help="send won deals to the ad platforms as offline conversions")
    parser.add_argument("--from", dest="date_from", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--to", dest="date_to", required=True, type=date.fromisoformat, help="YYYY-MM-DD")
    parser.add_argument("--dry-run", action="store_true", help="print what would be sent; send and record nothing")
    parser.add_argument(
        "--validate", action="store_true", help="a dry run in which Google checks the events (validateOnly)"
    )
    parser.add_argument("--stack-name", help="use this deployed stack's tables and secret")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    from throughline.config import load_settings
    from throughline.conversions.run import execute

    if args.stack_name:
        from throughline.adapters.stack import CONVERSIONS_PARAMETERS, describe_stack, stack_parameters, use_parameters

        stack = describe_stack(args.stack_name)
        outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
        use_stack(outputs, "SecretsArn", "DataBucketName", "JourneyTableName", "ConversionsTableName")
        # The counter, goals and conversion action are the stack's parameters, not its outputs.
        use_parameters(stack_parameters(stack), CONVERSIONS_PARAMETERS)
    settings = load_settings()
    validate = bool(getattr(args, "validate", False))
    result = execute(settings, date_from=args.date_from, date_to=args.date_to, dry_run=args.dry_run or validate,
                     validate_only=validate)  # fmt: skip
    mode = "would send (dry run)" if args.dry_run or validate else "sent"
    out.write(f"conversions {args.date_from}…{args.date_to}: {len(result.conversions)} found; {mode}:\n")
    for name, platform in result.platforms.items():
        if platform.skipped:
            out.write(f"{name}: skipped ({platform.skipped})\n")
            continue
        states = ", ".join(f"{state} {count}" for state, count in sorted(platform.states.items())) or "nothing"
        out.write(f"{name}: {states}" + (f"; {platform.already_done} sent before" if platform.already_done else ""))
        out.write("\n")
        for row in platform.planned:
            how = f"by {row['identifier']}" if row.get("would_send") else "no identifier"
            out.write(f"  {row['entity']:<12} {row['kind']:<9} {row['goal']} {row['at']} "
                      f"{row['amount']} {row['currency']} {how}\n")  # fmt: skip
        for reason, count in platform.reasons.most_common():
            out.write(f"  {count} × {reason}\n")
    return 1 if result.failures else 0
