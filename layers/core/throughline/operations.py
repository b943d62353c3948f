"""The portal, queue and secret operator commands: ``bitrix-setup`` (create our fields, check the webhook's rights,
print the sources and users), ``replay-dlq`` (move the writer's dead letters back to its queue) and
``split-secrets`` (move an older stack's keys out of the person-key secret, one secret per consumer)."""

from __future__ import annotations

import argparse
import os
from typing import Any


def register(commands: Any, stack_outputs: Any) -> None:
    setup = commands.add_parser("bitrix-setup", help="create the journey field; print sources and users")
    setup.add_argument("--stack-name", help="read SECRETS_ARN from this deployed stack's outputs")
    setup.set_defaults(run=lambda args: bitrix_setup(args, stack_outputs))

    replay = commands.add_parser("replay-dlq", help="move the writer's dead letters back to its queue")
    replay.add_argument("--stack-name", help="deployed stack whose queues to use")
    replay.add_argument("--queue-url", help="the writes queue (instead of --stack-name)")
    replay.add_argument("--dlq-url", help="its dead-letter queue (instead of --stack-name)")
    replay.add_argument("--limit", type=int, help="move at most this many messages")
    replay.set_defaults(run=lambda args: replay_dlq(args, stack_outputs))

    split = commands.add_parser("split-secrets", help="move the other keys out of the person-key secret")
    split.add_argument("--stack-name", required=True, help="the deployed (updated) stack")
    split.add_argument("--dry-run", action="store_true", help="say what would move; change nothing")
    split.set_defaults(run=lambda args: split_secrets(args, stack_outputs))


def bitrix_setup(args: argparse.Namespace, stack_outputs: Any) -> int:
    from throughline.bitrix24.portal import bitrix_client
    from throughline.config import load_settings
    from throughline.setup import report
    from throughline.writer.leads import LeadRules

    if args.stack_name:
        outputs = stack_outputs(args.stack_name)
        os.environ.setdefault("SECRETS_ARN", outputs["SecretsArn"])
        if outputs.get("DataBucketName"):
            os.environ.setdefault("DATA_BUCKET", str(outputs["DataBucketName"]))
    settings = load_settings()
    bitrix = bitrix_client(settings)
    print(report(bitrix, LeadRules.from_settings(settings)))
    from throughline.conversions.setup import setup_lines

    print("\n".join(setup_lines(settings)))
    objects = None
    if settings.data_bucket:
        from throughline.adapters.report_store import S3Objects
        from throughline.alerts.store import ensure_default_rules

        objects = S3Objects(settings.data_bucket)
        written = ensure_default_rules(objects)
        where = f"s3://{settings.data_bucket}/config/alerts.yaml"
        print(f"\nAlert rules: {'the documented default written to' if written else 'kept'} {where}")
    # Segments (throughline.segments): their fields, and config/segments.yaml with the documented defaults.
    from throughline.segments.fields import setup_report

    print(setup_report(bitrix, objects))
    return 0


def replay_dlq(args: argparse.Namespace, stack_outputs: Any) -> int:
    import boto3

    from throughline.dlq import replay_dead_letters

    queue_url, dlq_url = args.queue_url, args.dlq_url
    if args.stack_name and not (queue_url and dlq_url):
        outputs = stack_outputs(args.stack_name)
        queue_url, dlq_url = outputs["WritesQueueUrl"], outputs["WritesDeadLetterQueueUrl"]
    if not (queue_url and dlq_url):
        raise SystemExit("give --stack-name, or both --queue-url and --dlq-url")
    result = replay_dead_letters(
        boto3.client("sqs"), dead_letter_queue_url=dlq_url, queue_url=queue_url, limit=args.limit, progress=print
    )
    print(f"done: {result.moved} moved, {result.failed} failed")
    return 0 if result.failed == 0 else 1


def split_secrets(args: argparse.Namespace, stack_outputs: Any) -> int:
    import boto3

    from throughline.secret_split import split_secrets as split

    result = split(boto3.client("secretsmanager"), stack_outputs(args.stack_name), dry_run=args.dry_run)
    for line in result.lines():
        print(line)
    return 0
