"""Operator commands: ``python -m throughline bitrix-setup``, ``replay-dlq``, ``import-spend``, ``report``,
``attribute``, ``athena-views``, ``athena-paths``, the journey commands and ``forget``.

The first four read the same configuration as the functions (environment, or the stack's secret with
``--stack-name``); ``attribute`` only reads the path table it is given.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from throughline.attribution import cli as attribution_cli
from throughline.report import cli as report_cli
from throughline.spend import cli as spend_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m throughline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    setup = commands.add_parser("bitrix-setup", help="create the journey field; print sources and users")
    setup.add_argument("--stack-name", help="read SECRETS_ARN from this deployed stack's outputs")

    replay = commands.add_parser("replay-dlq", help="move the writer's dead letters back to its queue")
    replay.add_argument("--stack-name", help="deployed stack whose queues to use")
    replay.add_argument("--queue-url", help="the writes queue (instead of --stack-name)")
    replay.add_argument("--dlq-url", help="its dead-letter queue (instead of --stack-name)")
    replay.add_argument("--limit", type=int, help="move at most this many messages")
    attribution_cli.add_parser(commands)
    spend_cli.register(commands)
    report_cli.add_parser(commands)

    from throughline.journey.cli import register as register_journey_commands

    register_journey_commands(commands, _stack_outputs)
    from throughline.privacy.cli import register as register_privacy_commands

    register_privacy_commands(commands, _stack_outputs)
    from throughline.report.athena import register as register_athena_views

    register_athena_views(commands, _stack_outputs)

    args = parser.parse_args(argv)
    try:
        if hasattr(args, "run"):
            return args.run(args)
        if args.command == "import-spend":
            return spend_cli.run(args)
        if args.command == "bitrix-setup":
            return _bitrix_setup(args)
        if args.command == "attribute":
            return attribution_cli.run(args)
        if args.command == "report":
            return report_cli.run(args, _stack_outputs)
        return _replay(args)
    except Exception as error:  # an operator tool: one clear line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


def _bitrix_setup(args: argparse.Namespace) -> int:
    from throughline.bitrix24.portal import bitrix_client
    from throughline.config import load_settings
    from throughline.setup import report
    from throughline.writer.leads import LeadRules

    if args.stack_name:
        os.environ.setdefault("SECRETS_ARN", _stack_outputs(args.stack_name)["SecretsArn"])
    settings = load_settings()
    print(report(bitrix_client(settings), LeadRules.from_settings(settings)))
    return 0


def _replay(args: argparse.Namespace) -> int:
    import boto3

    from throughline.dlq import replay_dead_letters

    queue_url, dlq_url = args.queue_url, args.dlq_url
    if args.stack_name and not (queue_url and dlq_url):
        outputs = _stack_outputs(args.stack_name)
        queue_url, dlq_url = outputs["WritesQueueUrl"], outputs["WritesDeadLetterQueueUrl"]
    if not (queue_url and dlq_url):
        raise SystemExit("give --stack-name, or both --queue-url and --dlq-url")
    result = replay_dead_letters(
        boto3.client("sqs"), dead_letter_queue_url=dlq_url, queue_url=queue_url, limit=args.limit, progress=print
    )
    print(f"done: {result.moved} moved, {result.failed} failed")
    return 0 if result.failed == 0 else 1


def _stack_outputs(stack_name: str) -> dict[str, Any]:
    import boto3

    stacks = boto3.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


if __name__ == "__main__":
    sys.exit(main())
