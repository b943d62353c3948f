"""Operator commands: ``python -m throughline <command>`` — ``bitrix-setup``, ``replay-dlq``, ``import-spend``,
``split-secrets``, ``report``, ``attribute``, ``athena-views``, ``athena-paths``, ``journey-index``,
``journey-sweep``, ``journey-export``, ``forget``, ``release-held``, ``alerts``, ``conversions`` and ``segments``.

Each capability plugs its commands in through one registry: a module whose ``register(commands, stack_outputs)``
adds its subcommands, each with a ``run(args)`` default. Commands that touch the stack read the same configuration
as the functions (environment, or a deployed stack's outputs and secret with ``--stack-name``); ``attribute`` only
reads the path table it is given. No capability imports this module.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from throughline.adapters.stack import stack_outputs

# The modules whose ``register(commands, stack_outputs)`` add the commands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "throughline.operations",
    "throughline.attribution.cli",
    "throughline.spend.cli",
    "throughline.report.cli",
    "throughline.report.athena",
    "throughline.journey.cli",
    "throughline.privacy.cli",
    "throughline.capture.cli",
    "throughline.alerts.cli",
    "throughline.conversions.cli",
    "throughline.segments.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m throughline", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands, stack_outputs)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except Exception as error:  # an operator tool: one clear line, not a traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
