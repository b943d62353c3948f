"""Athena views over the Glue tables: the report's main table for portals that outgrow one Lambda.

The SQL lives in ``report/sql/`` and is written in the dialect both Trino (Athena engine v3) and DuckDB run, so the
views are tested on DuckDB over the very objects a report run reads (tests/integration/test_athena_views.py):

- ``taxonomy.sql`` — generated from ``throughline.sources`` and ``report.channels`` (``python -m throughline
  athena-views --print-taxonomy``): the source aliases, referrer host rules, medium families, kinds of source and
  the CRM ``SOURCE_ID`` map as small ``tl_*`` views, so SQL and Python classify a tag the same way;
- ``roi_facts.sql`` — one row per report row (campaign) and day: spend, impressions, clicks, leads, deals, won
  deals, revenue, new customers;
- ``roi_by_campaign.sql`` and ``roi_by_channel.sql`` — the main table by calendar month, DESIGN.md's metric
  definitions and paid rule;
- ``attribution_paths.sql`` — a query (``python -m throughline athena-paths``): the attribution path table (path,
  conversions, value, nulls) of a period from the journeys export, for ``python -m throughline attribute``.

``{{currency}}`` and ``{{timezone}}`` in the files are the report's ``REPORT_CURRENCY`` and ``TIMEZONE``; the
taxonomy carries ``BITRIX24_SOURCE_MAP``. ``python -m throughline athena-views`` renders them with the stack's
configuration and runs ``CREATE OR REPLACE VIEW`` through Athena.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from throughline import sources
from throughline.report.channels import PLATFORM_CHANNELS, PLATFORM_SOURCES, SourceIds

VIEW_FILES = ("taxonomy.sql", "roi_facts.sql", "roi_by_campaign.sql", "roi_by_channel.sql")
PATHS_FILE = "attribution_paths.sql"
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def sql_text(name: str) -> str:
    return (resources.files("throughline.report") / "sql" / name).read_text(encoding="utf-8")


def statements(
    *,
    currency: str = "RUB",
    timezone: str = "Europe/Moscow",
    source_map: Mapping[str, str] | None = None,
    spend_with_vat: bool = False,
    vat_rate: Decimal = Decimal("0.22"),
) -> list[str]:
    """Every ``CREATE OR REPLACE VIEW`` in dependency order, rendered for one stack's settings (``REPORT_CURRENCY``,
    ``TIMEZONE``, ``BITRIX24_SOURCE_MAP``, ``REPORT_SPEND_WITH_VAT``, ``VAT_RATE``)."""
    currency = currency.upper()
    if not _CURRENCY.match(currency):
        raise ValueError(f"not a currency code: {currency!r}")
    _zone(timezone)
    factor = Decimal(1) + Decimal(vat_rate)
    if not factor.is_finite() or not Decimal(1) <= factor < Decimal(10):
        raise ValueError(f"not a VAT rate: {vat_rate!r}")
    # The taxonomy's statements come one by one (its literals carry BITRIX24_SOURCE_MAP, whatever text that holds);
    # the files are split at a ";" that ends a line.
    result = [text.strip().removesuffix(";") for text in _taxonomy_views(source_map)]
    for name in VIEW_FILES[1:]:
        text = render(sql_text(name), currency=currency, timezone=timezone, spend_with_vat=spend_with_vat,
                      vat_factor=f"CAST('{factor:f}' AS decimal(12, 10))")  # fmt: skip
        result.extend(part.strip() for part in _split(text) if part.strip())
    return result


_TAG_KEY = re.compile(r"\{\{tag_key\((.+?)\)\}\}")
# Python's str.split() whitespace (report.channels.tag_key collapses it): one space each, then runs of spaces as one.
_WHITESPACE = (9, 10, 11, 12, 13, 28, 29, 30, 31, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
               0x205F, 0x3000)  # fmt: skip
# Percent escapes that decode to valid UTF-8 (DuckDB's url_decode refuses others; report.channels.tag_key replaces
# them, so a name with one is compared undecoded: a documented gap).
_ESCAPES = (
    r"^(?:[^%]|%[0-7][0-9A-Fa-f]|%[Cc][2-9A-Fa-f]%[89ABab][0-9A-Fa-f]|%[Dd][0-9A-Fa-f]%[89ABab][0-9A-Fa-f]"
    r"|%[Ee][0-9A-Fa-f](?:%[89ABab][0-9A-Fa-f]){2}|%[Ff][0-4](?:%[89ABab][0-9A-Fa-f]){3})*$"
)


def tag_key_sql(column: str) -> str:
    """``report.channels.tag_key`` in SQL both engines run: URL-decoding (``+`` a space), lower case, ``ё`` → ``е``,
    whitespace runs as one space, ends trimmed. NFKC and full case folding have no DuckDB function (README)."""
    plus = f"replace({column}, '+', ' ')"
    decoded = (f"CASE WHEN strpos({column}, '%') = 0 THEN {plus} WHEN regexp_extract({column}, '{_ESCAPES}') = {column}"
               f" THEN url_decode({plus}) ELSE {plus} END")  # fmt: skip
    spaces = " || ".join(f"chr({code})" for code in _WHITESPACE)
    text = f"translate(replace(lower({decoded}), 'ё', 'е'), {spaces}, '{' ' * len(_WHITESPACE)}')"
    # A run of spaces of any length becomes one: each space gets a marker (chr(28), whitespace to Python, so the
    # translation above left none in the text), a marker before a space goes, then the markers.
    text = f"replace(replace(replace({text}, ' ', ' ' || chr(28)), chr(28) || ' ', ''), chr(28), '')"
    return f"trim({text})"


def render(text: str, **values: Any) -> str:
    """The ``{{name}}`` placeholders of a SQL file and its ``{{tag_key(column)}}`` expressions."""
    text = _TAG_KEY.sub(lambda match: tag_key_sql(match.group(1)), text)
    for name, value in values.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        text = text.replace("{{" + name + "}}", str(value))
    return text


def paths_query(
    *, snapshot: str, date_from: date, date_to: date, currency: str = "RUB", timezone: str = "Europe/Moscow"
) -> str:
    """``attribution_paths.sql`` for one journey snapshot (YYYY-MM-DD) and period."""
    date.fromisoformat(snapshot)  # a date, nothing else, goes into the query
    if date_to < date_from:
        raise ValueError(f"the period ends ({date_to}) before it starts ({date_from})")
    _zone(timezone)
    if not _CURRENCY.match(currency.upper()):
        raise ValueError(f"not a currency code: {currency!r}")
    text = sql_text(PATHS_FILE)
    for name, value in (("snapshot", snapshot), ("date_from", date_from.isoformat()), ("date_to", date_to.isoformat()),
                        ("currency", currency.upper()), ("timezone", timezone)):  # fmt: skip
        text = text.replace("{{" + name + "}}", value)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()


def _zone(name: str) -> None:
    """An IANA zone name (both engines know the same ones); nothing else goes into the SQL."""
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        raise ValueError(f"not a time zone: {name!r}") from None


def _split(text: str) -> list[str]:
    """Statements end with a ``;`` at a line's end (none appears inside the files' string literals)."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [part for part in re.split(r";\s*(?:\n|$)", body)]


# ---- the taxonomy, generated ---------------------------------------------------------------------------------------

# utm_medium families in the order sources._from_tags checks them; a medium belongs to one family only.
MEDIUM_FAMILIES = (
    ("direct", sources._DIRECT_MEDIUMS),
    ("display", sources._DISPLAY_MEDIUMS),
    ("paid_social", sources._PAID_SOCIAL_MEDIUMS),
    ("paid", sources._PAID_MEDIUMS),
    ("email", sources._EMAIL_MEDIUMS),
    ("messenger", sources._MESSENGER_MEDIUMS),
    ("social", sources._SOCIAL_MEDIUMS),
    ("organic", sources._ORGANIC_MEDIUMS),
    ("referral", sources._REFERRAL_MEDIUMS),
    ("offline", sources._OFFLINE_MEDIUMS),
)
SOURCE_KINDS = (("search", sources.SEARCH_ENGINES), ("social", sources.SOCIAL_NETWORKS),
                ("messenger", sources.MESSENGERS))  # fmt: skip


def taxonomy_sql(source_map: Mapping[str, str] | None = None) -> str:
    """``taxonomy.sql``: the classification tables of ``throughline.sources`` as views (generated, committed)."""
    header = (
        "-- Generated by throughline.report.athena.taxonomy_sql from throughline.sources: do not edit.\n"
        "-- Regenerate: PYTHONPATH=layers/core python -m throughline athena-views --print-taxonomy "
        "> layers/core/throughline/report/sql/taxonomy.sql\n"
    )
    return "\n".join([header, *_taxonomy_views(source_map)])


def _taxonomy_views(source_map: Mapping[str, str] | None) -> list[str]:
    seen: dict[str, str] = {}
    for family, mediums in MEDIUM_FAMILIES:
        for medium in mediums:
            if medium in seen:
                raise ValueError(f"utm_medium {medium!r} is in two families: {seen[medium]}, {family}")
            seen[medium] = family
    aliases = sorted(sources._ALIAS_KEYS.items())
    hosts = [(position, pattern.pattern, source, channel)
             for position, (pattern, source, channel) in enumerate(sources.HOST_RULES)]  # fmt: skip
    kinds = sorted((source, kind) for kind, names in SOURCE_KINDS for source in names)
    crm = sorted(SourceIds(source_map)._map.items())
    return [
        _values_view("tl_source_alias", ("alias_key", "source"), aliases),
        _values_view("tl_host_rule", ("rule_order", "pattern", "source", "channel"), hosts),
        _values_view("tl_medium_family", ("medium", "family"), sorted(seen.items())),
        _values_view("tl_source_kind", ("source", "kind"), kinds),
        _values_view(
            "tl_platform",
            ("platform", "source", "channel"),
            [(name, source, PLATFORM_CHANNELS[name]) for name, source in sorted(PLATFORM_SOURCES.items())],
        ),
        _values_view(
            "tl_crm_source",
            ("source_id", "channel", "source"),
            [(source_id, channel, source) for source_id, (channel, source) in crm],
        ),
    ]


def _values_view(name: str, columns: Iterable[str], rows: Iterable[tuple[Any, ...]]) -> str:
    body = ",\n".join("  (" + ", ".join(_literal(value) for value in row) + ")" for row in rows)
    names = ", ".join(columns)
    return f"CREATE OR REPLACE VIEW {name} AS\nSELECT * FROM (VALUES\n{body}\n) AS t ({names});\n"


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# ---- Athena ---------------------------------------------------------------------------------------------------------


def create_views(
    athena: Any,
    *,
    database: str,
    output: str | None,
    workgroup: str | None,
    texts: list[str],
    poll: float = 1.0,
    timeout: float = 300.0,
    sleep: Any = time.sleep,
) -> list[str]:
    """Run each statement in order, waiting for each (a view needs the ones it reads); the query ids."""
    return [
        run_query(athena, text, database=database, output=output, workgroup=workgroup, poll=poll, timeout=timeout,
                  sleep=sleep)["QueryExecutionId"]
        for text in texts
    ]  # fmt: skip


def run_query(
    athena: Any,
    text: str,
    *,
    database: str,
    output: str | None,
    workgroup: str | None,
    poll: float = 1.0,
    timeout: float = 300.0,
    sleep: Any = time.sleep,
) -> dict[str, Any]:
    """Start one query and wait for it; its ``QueryExecution`` (the result file is ``ResultConfiguration``'s)."""
    request: dict[str, Any] = {"QueryString": text, "QueryExecutionContext": {"Database": database}}
    if output:
        request["ResultConfiguration"] = {"OutputLocation": output}
    if workgroup:
        request["WorkGroup"] = workgroup
    query_id = athena.start_query_execution(**request)["QueryExecutionId"]
    waited = 0.0
    while True:
        execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
        status = execution["Status"]
        if status["State"] == "SUCCEEDED":
            return {**execution, "QueryExecutionId": query_id}
        if status["State"] in ("FAILED", "CANCELLED"):
            first = text.splitlines()[0]
            raise RuntimeError(f"{first}: {status['State']} {status.get('StateChangeReason', '')}".strip())
        if waited >= timeout:
            raise TimeoutError(f"{text.splitlines()[0]}: still {status['State']} after {timeout:.0f} s")
        sleep(poll)
        waited += poll


# ---- python -m throughline athena-views -----------------------------------------------------------------------------


def register(commands: Any, stack_outputs: Any) -> None:
    views = commands.add_parser(
        "athena-views",
        help="create the Athena views roi_by_campaign and roi_by_channel in the Glue database",
    )
    views.add_argument("--stack-name", help="read the database, bucket and secret from this deployed stack")
    views.add_argument("--database", help="the Glue database (default: the stack's AnalyticsDatabaseName)")
    views.add_argument("--output", help="s3:// folder for Athena's results (default: s3://<data bucket>/athena/)")
    views.add_argument("--workgroup", help="an Athena workgroup (its own output location is used when it has one)")
    views.add_argument("--print", dest="print_only", action="store_true", help="print the SQL, run nothing")
    views.add_argument("--print-taxonomy", action="store_true", help="print taxonomy.sql with the default source map")
    views.set_defaults(run=lambda args: run(args, stack_outputs))

    paths = commands.add_parser(
        "athena-paths", help="the attribution path table of a period, built by Athena from the journeys export"
    )
    paths.add_argument("--from", dest="date_from", type=date.fromisoformat, required=True, help="first day")
    paths.add_argument("--to", dest="date_to", type=date.fromisoformat, required=True, help="last day")
    paths.add_argument("--snapshot", help="journeys/snapshot=<date> to read (default: journeys/latest.json's)")
    paths.add_argument("--out", required=True, help="write the path table here (CSV for `throughline attribute`)")
    paths.add_argument("--stack-name", help="read the database, bucket and secret from this deployed stack")
    paths.add_argument("--database", help="the Glue database (default: the stack's AnalyticsDatabaseName)")
    paths.add_argument("--output", help="s3:// folder for Athena's results (default: s3://<data bucket>/athena/)")
    paths.add_argument("--workgroup", help="an Athena workgroup")
    paths.set_defaults(run=lambda args: run_paths(args, stack_outputs))


def _target(args: Any, stack_outputs: Any) -> tuple[Any, str, str | None]:
    """The settings, database and output location of an Athena command."""
    import os

    outputs = stack_outputs(args.stack_name) if args.stack_name else {}
    if outputs:
        os.environ.setdefault("SECRETS_ARN", outputs.get("SecretsArn", ""))
        os.environ.setdefault("DATA_BUCKET", outputs.get("DataBucketName", ""))
    from throughline.config import load_settings

    settings = load_settings()
    database = args.database or outputs.get("AnalyticsDatabaseName")
    if not database:
        raise ValueError("name the Glue database: --database <the stack name with _ for ->, or --stack-name")
    output = args.output or (f"s3://{settings.data_bucket}/athena/" if settings.data_bucket and not args.workgroup
                             else None)  # fmt: skip
    if not output and not args.workgroup:
        raise ValueError("say where Athena writes results: --output s3://…/ or --workgroup")
    return settings, database, output


def run_paths(args: Any, stack_outputs: Any) -> int:
    import json

    import boto3

    settings, database, output = _target(args, stack_outputs)
    s3 = boto3.client("s3")
    snapshot = args.snapshot
    if not snapshot:
        latest = s3.get_object(Bucket=settings.data_bucket, Key="journeys/latest.json")["Body"].read()
        snapshot = str(json.loads(latest)["snapshot"])
    text = paths_query(snapshot=snapshot, date_from=args.date_from, date_to=args.date_to,
                       currency=settings.report_currency, timezone=settings.timezone)  # fmt: skip
    execution = run_query(boto3.client("athena"), text, database=database, output=output, workgroup=args.workgroup)
    location = execution["ResultConfiguration"]["OutputLocation"]
    bucket, _, key = location.removeprefix("s3://").partition("/")
    with open(args.out, "wb") as file:
        file.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    print(f"{args.out}: the path table of {args.date_from} … {args.date_to} (journeys snapshot {snapshot})")
    return 0


def run(args: Any, stack_outputs: Any) -> int:
    import sys

    if args.print_taxonomy:
        sys.stdout.write(taxonomy_sql())
        return 0
    if args.print_only:
        from throughline.config import load_settings

        settings = load_settings()
    else:
        settings, database, output = _target(args, stack_outputs)
    texts = statements(currency=settings.report_currency, timezone=settings.timezone,
                       source_map=settings.bitrix24_source_map, spend_with_vat=settings.report_spend_with_vat,
                       vat_rate=settings.vat_rate)  # fmt: skip
    if args.print_only:
        sys.stdout.write(";\n\n".join(texts) + ";\n")
        return 0
    import boto3

    ids = create_views(boto3.client("athena"), database=database, output=output, workgroup=args.workgroup,
                       texts=texts)  # fmt: skip
    print(f"{len(ids)} views created in {database}: roi_by_campaign, roi_by_channel (and the helpers they read)")
    return 0


__all__ = ["VIEW_FILES", "create_views", "paths_query", "run_query", "sql_text", "statements", "taxonomy_sql"]
