"""``python -m throughline forget --phone … | --email …``: erase one person from this stack (not from Bitrix24)."""

from __future__ import annotations

import argparse
from typing import Any

from throughline.adapters.stack import use_stack


def register(commands: Any, stack_outputs: Any) -> None:
    parser = commands.add_parser(
        "forget", help="erase one person's touches, index entries, raw copies and exported rows (not in Bitrix24)"
    )
    parser.add_argument("--phone", action="append", default=[], help="the person's phone (any format; repeatable)")
    parser.add_argument("--email", action="append", default=[], help="the person's e-mail (repeatable)")
    parser.add_argument("--stack-name", help="read SECRETS_ARN and resources from this deployed stack")
    parser.set_defaults(run=lambda args: run(args, stack_outputs))


def run(args: argparse.Namespace, stack_outputs: Any) -> int:
    from throughline.adapters import aws
    from throughline.adapters.journey_store import JourneyStore
    from throughline.config import load_settings
    from throughline.privacy.forget import forget_person

    if not (args.phone or args.email):
        raise SystemExit("give --phone or --email")
    if args.stack_name:
        outputs = stack_outputs(args.stack_name)
        use_stack(outputs, "SecretsArn", "JourneyTableName", "DataBucketName")
    settings = load_settings()
    settings.require("journey_table", "data_bucket", "person_key_secret")
    result = forget_person(
        JourneyStore(settings.journey_table or ""),
        aws.client("s3"),
        settings.data_bucket or "",
        settings.person_key_secret or "",
        phones=args.phone,
        emails=args.email,
        region=settings.default_phone_region,
    )
    print("\n".join(result.lines()))
    return 0
