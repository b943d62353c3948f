"""``python -m throughline attribute PATHS.csv``: every model over a ChannelAttribution path table.

The file is CSV with a header: ``path`` (channels joined by ``>``, e.g. ``a > b > c``), ``total_conversions``, and
optionally ``total_conversion_value`` (revenue, kept to kopecks), ``total_null`` (journeys on that path that did not
convert) and ``days_to_conversion`` (one number per touch, joined the same way: days from the touch to the
conversion, e.g. ``9 > 2.5 > 0``). ``time_decay`` runs only when every row with conversions has
``days_to_conversion``. Rows with the same path are merged.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

from throughline.attribution.models import ALL_MODELS, DEFAULT_HALF_LIFE_DAYS, TIMED_MODELS, attribute
from throughline.attribution.paths import DIRECT, PathTable, path_table

REQUIRED = ("path", "total_conversions")
# No count, amount or age in a path table comes near this; past it, floats lose whole units and then overflow.
MAX_NUMBER = Decimal(10) ** 15


def register(commands: argparse._SubParsersAction, stack_outputs: Any = None) -> None:
    parser = commands.add_parser(
        "attribute", help="every attribution model over a path table (ChannelAttribution's format)"
    )
    parser.add_argument("paths", help="CSV: path, total_conversions[, total_conversion_value, total_null, ...]")
    parser.add_argument(
        "--model", action="append", choices=ALL_MODELS, help="a model to run (repeat for more; default: all)"
    )
    parser.add_argument("--order", type=int, default=1, help="Markov order (default 1)")
    parser.add_argument("--half-life-days", type=float, default=DEFAULT_HALF_LIFE_DAYS, help="time decay half-life")
    parser.add_argument("--sep", default=">", help="channel separator in path (default >)")
    parser.add_argument("--direct", default=DIRECT, help="the direct channel's name, for last_non_direct")
    parser.add_argument("--format", choices=("csv", "json"), default="csv")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    with open(args.paths, newline="", encoding="utf-8-sig") as file:
        table = read_path_table(file, sep=args.sep, direct=args.direct, name=args.paths)
    models = args.model or [model for model in ALL_MODELS if table.has_times or model not in TIMED_MODELS]
    if not args.model and not table.has_times:
        print("note: time_decay skipped: the file has no days_to_conversion", file=err)
    results = attribute(table, models, half_life_days=args.half_life_days, markov_order=args.order)
    if args.format == "json":
        document = {
            model: [
                {"channel": row.channel, "conversions": float(row.conversions), "revenue": float(row.revenue)}
                for row in rows
            ]
            for model, rows in results.items()
        }
        json.dump(document, out, ensure_ascii=False, indent=2)
        out.write("\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("model", "channel", "conversions", "revenue"))
        for model, rows in results.items():
            for row in rows:
                writer.writerow((model, row.channel, row.conversions, row.revenue))
    return 0


def read_path_table(file: TextIO, *, sep: str = ">", direct: str = DIRECT, name: str = "paths") -> PathTable:
    """The path table in ``file``; a ValueError names the file and line of the first bad row."""
    return path_table(_rows(file, sep, name), direct_label=direct)


def _rows(file: TextIO, sep: str, name: str) -> Iterator[tuple]:
    reader = csv.DictReader(file)
    try:
        yield from _records(reader, sep, name)
    except csv.Error as error:  # a field past the csv module's limit (128 KiB), a stray carriage return…
        raise ValueError(f"{name}: unreadable CSV after line {reader.line_num} ({error})") from None


def _records(reader: csv.DictReader, sep: str, name: str) -> Iterator[tuple]:
    header = [column.strip() for column in reader.fieldnames or ()]
    missing = [column for column in REQUIRED if column not in header]
    if missing:
        raise ValueError(f"{name}: the header lacks {', '.join(missing)} (has: {', '.join(header) or 'nothing'})")
    reader.fieldnames = header
    for record in reader:
        line = reader.line_num
        try:
            path = tuple(channel.strip() for channel in (record["path"] or "").split(sep))
            if not all(path):
                raise ValueError(f"empty channel in path {record['path']!r}")
            conversions = _number(record, "total_conversions")
            revenue = _number(record, "total_conversion_value")
            nulls = _number(record, "total_null")
            if revenue and not conversions:
                raise ValueError("total_conversion_value without total_conversions")
            ages = None
            if (record.get("days_to_conversion") or "").strip():
                ages = tuple(float(_number({"age": age}, "age")) for age in record["days_to_conversion"].split(sep))
                if len(ages) != len(path):
                    raise ValueError(f"{len(ages)} days_to_conversion for a path of {len(path)} touches")
            yield path, conversions, revenue, nulls, ages
        except ValueError as error:
            raise ValueError(f"{name} line {line}: {error}") from None


def _number(record: dict[str, str | None], column: str) -> Decimal:
    text = (record.get(column) or "").strip()
    if not text:
        return Decimal(0)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{column} is not a number: {text!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"{column} must be a non-negative number, not {text!r}")
    if number >= MAX_NUMBER:  # 1e400 conversions overflowed a float64 (OverflowError), 1e400 nulls became inf
        raise ValueError(f"{column} is too large: {text[:40]!r} (at most {MAX_NUMBER:,.0f})")
    return number
