"""``python -m throughline alerts --check FILE``: validate a rules file before it goes to the data bucket."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(commands: Any, stack_outputs: Any) -> None:
    alerts = commands.add_parser("alerts", help="check an alert rules file (config/alerts.yaml)")
    group = alerts.add_mutually_exclusive_group(required=True)
    group.add_argument("--check", metavar="FILE", help="validate FILE; every bad key is named")
    group.add_argument("--default", action="store_true", help="print the documented default rules file")
    alerts.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from throughline.alerts.rules import DEFAULT_YAML, AlertsConfigError, parse_rules

    if args.default:
        print(DEFAULT_YAML, end="")
        return 0
    path = Path(args.check)
    try:
        config = parse_rules(path.read_bytes(), name=str(path))
    except AlertsConfigError as error:
        print(f"invalid: {error}", file=sys.stderr)
        return 1
    enabled = [rule_id for rule_id, rule in config.rules.items() if rule.enabled]
    print(f"{path}: valid; {len(enabled)} rules on: {', '.join(enabled)}")
    return 0
