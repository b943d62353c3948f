"""``python -m throughline segments [--no-write-back] [--no-audiences] [--audiences] [--stack-name NAME]``: the
segments run on demand, with progress on the terminal; prints the customers per segment and the ad audiences sent.
Run it again to continue an unfinished write-back. ``--audiences`` only prints the ad audiences' state (list ids,
last night's outcome) and runs nothing."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from throughline.adapters.stack import use_stack


def register(commands: Any, stack_outputs: Any) -> None:
    segments = commands.add_parser("segments", help="compute customer segments and write them back to Bitrix24")
    segments.add_argument("--no-write-back", action="store_true", help="compute and store only; write nothing back")
    audiences = segments.add_mutually_exclusive_group()  # "print only" and "export none" contradict each other
    audiences.add_argument("--no-audiences", action="store_true", help="export no ad audience on this run")
    audiences.add_argument("--audiences", action="store_true",
                           help="print the ad audiences' export state (list ids, last outcome) and exit")  # fmt: skip
    segments.add_argument("--stack-name", help="read SECRETS_ARN and DATA_BUCKET from this deployed stack's outputs")
    segments.set_defaults(run=lambda args: run(args, stack_outputs))


def run(args: argparse.Namespace, stack_outputs: Any = None) -> int:
    if args.stack_name:
        use_stack(stack_outputs(args.stack_name), "SecretsArn", "DataBucketName")

    from throughline.adapters.report_store import S3Objects
    from throughline.bitrix24.portal import bitrix_client
    from throughline.config import load_settings
    from throughline.segments.job import run_segments
    from throughline.segments.rules import load_rules

    settings = load_settings()
    settings.require("data_bucket")
    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    objects = S3Objects(settings.data_bucket or "")
    if args.audiences:
        return print_audiences(objects)
    summary = run_segments(settings, bitrix_client(settings), objects, progress=progress,
                           write_back=not args.no_write_back, export_audiences=not args.no_audiences)  # fmt: skip
    labels = {rule.code: rule.label for rule in load_rules(objects).segments}
    for code, count in sorted((summary.get("segments") or {}).items(), key=lambda item: -item[1]):
        print(f"{labels.get(code, 'Без сегмента'):16} {count:>8}")
    writeback = summary.get("writeback") or {}
    if writeback:
        print(f"written back {writeback.get('written', 0)} of {writeback.get('total', 0)}"
              f" ({summary.get('status')}); REST calls {summary.get('rest_calls')}")  # fmt: skip
    else:
        print(f"status {summary.get('status')}; REST calls {summary.get('rest_calls')}")
    for name, sync in ((summary.get("audiences") or {}).get("sent") or {}).items():
        changes = "".join(
            [
                f", {sync['removed']} removed" if sync.get("removed") else "",
                f", {sync['pending']} changes wait for a later night" if sync.get("pending") else "",
            ]
        )
        print(f"audience «{name}» → {sync['platform']} list {sync['list_id']}: {sync['members']} customers{changes}")
    for name, failure in ((summary.get("audiences") or {}).get("failed") or {}).items():
        print(f"audience «{name}» → {failure['platform']} failed: {failure['error']}")
    return 0 if summary.get("status") in ("done", "busy", "unfinished") else 1


def print_audiences(objects: Any) -> int:
    """The ad audiences' state: each audience's platform list id and the last night's outcome (ids only)."""
    import json

    from throughline.segments.audiences.export import STATE_KEY

    state = json.loads(objects.get(STATE_KEY) or b"{}")
    if not state:
        print("no ad audience exported yet (config/segments.yaml: audiences)")
        return 0
    print(f"night {state.get('day')}")
    for name, remembered in sorted((state.get("lists") or {}).items()):
        sent = (state.get("sent") or {}).get(name)
        failed = (state.get("failed") or {}).get(name)
        if sent:
            outcome = f"sent {sent['members']} customers"
        else:
            outcome = f"failed ({failed['attempts']}×): {failed['error']}" if failed else "not sent this night"
        print(f"«{name}» {remembered['platform']} list {remembered['list_id']}: {outcome}")
    for name, failed in sorted((state.get("failed") or {}).items()):
        if name not in (state.get("lists") or {}):
            print(f"«{name}» {failed['platform']} (no list yet): failed ({failed['attempts']}×): {failed['error']}")
    return 0
