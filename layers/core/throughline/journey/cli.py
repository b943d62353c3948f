"""Operator commands for journeys: ``journey-index`` (seed the person index), ``journey-sweep``, ``journey-export``."""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from typing import Any

from throughline.adapters.stack import use_stack


def register(commands: Any, stack_outputs: Any) -> None:
    for name, help_text in (
        ("journey-index", "seed the person index from every lead and contact (a full scan, with progress)"),
        ("journey-sweep", "add the touches that lost outbound webhooks would have added"),
        ("journey-export", "export the journey store to S3 (journeys/snapshot=<date>/)"),
    ):
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--stack-name", help="read SECRETS_ARN and resources from this deployed stack")
        parser.set_defaults(run=lambda args, name=name: run(name, args, stack_outputs))
    commands.choices["journey-export"].add_argument("--date", help="snapshot date, YYYY-MM-DD (default: today)")
    commands.choices["journey-export"].add_argument(
        "--full", action="store_true", help="rebuild from a scan of the whole table instead of the day's changes"
    )


def run(name: str, args: argparse.Namespace, stack_outputs: Any) -> int:
    from throughline.adapters.journey_store import JourneyStore
    from throughline.bitrix24.portal import bitrix_client
    from throughline.config import load_settings
    from throughline.journey.export import export_journeys
    from throughline.journey.sweep import seed_index, sweep
    from throughline.writer.journey_wiring import crm_event_writer

    if args.stack_name:
        outputs = stack_outputs(args.stack_name)
        use_stack(outputs, "SecretsArn", "JourneyTableName", "DataBucketName")
    settings = load_settings()
    settings.require("journey_table")
    store = JourneyStore(settings.journey_table or "")
    if name == "journey-export":
        settings.require("data_bucket")
        day = date.fromisoformat(args.date) if args.date else datetime.now(UTC).date()
        print(export_journeys(store, settings.data_bucket or "", day, full=bool(getattr(args, "full", False))))
        return 0
    writer = crm_event_writer(settings, bitrix_client(settings), store)
    if name == "journey-index":
        counts = seed_index(writer)
        print(f"done: {counts['lead']} leads and {counts['contact']} contacts indexed")
        return 0
    result = sweep(writer)
    print(f"done: scanned {result.scanned}, {result.touches_added} touches added, {result.rest_calls} REST calls")
    return 0
