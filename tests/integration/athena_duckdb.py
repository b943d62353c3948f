"""The Glue tables of template.yaml as DuckDB views over local copies of the bucket's objects, and the Athena views
(throughline.report.athena) created over them: the views' SQL runs unchanged on both engines."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import boto3
import duckdb

from throughline.report import athena

LEAD_COLUMNS = ("ID", "DATE_CREATE", "DATE_MODIFY", "DATE_CLOSED", "STATUS_ID", "STATUS_SEMANTIC_ID", "SOURCE_ID",
                "CONTACT_ID", "UTM_SOURCE", "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")  # fmt: skip
DEAL_COLUMNS = ("ID", "DATE_CREATE", "DATE_MODIFY", "CATEGORY_ID", "STAGE_ID", "STAGE_SEMANTIC_ID", "OPPORTUNITY",
                "CURRENCY_ID", "CLOSEDATE", "LEAD_ID", "CONTACT_ID", "COMPANY_ID", "SOURCE_ID", "UTM_SOURCE",
                "UTM_MEDIUM", "UTM_CAMPAIGN", "UTM_CONTENT", "UTM_TERM")  # fmt: skip
HISTORY_COLUMNS = {"ID": "BIGINT", "TYPE_ID": "INTEGER", "OWNER_ID": "BIGINT", "CREATED_TIME": "VARCHAR",
                   "CATEGORY_ID": "INTEGER", "STAGE_ID": "VARCHAR", "STAGE_SEMANTIC_ID": "VARCHAR"}  # fmt: skip
SPEND_COLUMNS = {"account_id": "VARCHAR", "campaign_id": "VARCHAR", "campaign_name": "VARCHAR",
                 "ad_group_id": "VARCHAR", "ad_group_name": "VARCHAR", "impressions": "BIGINT", "clicks": "BIGINT",
                 "cost": "DECIMAL(18,6)", "currency": "VARCHAR", "include_vat": "BOOLEAN",
                 "account_timezone": "VARCHAR", "ingested_at": "VARCHAR", "utm_source": "VARCHAR",
                 "utm_medium": "VARCHAR", "utm_campaign": "VARCHAR"}  # fmt: skip


def download(bucket: str, prefixes: tuple[str, ...], root: Path) -> None:
    s3 = boto3.session.Session().client("s3")
    for prefix in prefixes:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = root / item["Key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())


def _struct(columns: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"'{name}': '{kind}'" for name, kind in columns.items()) + "}"


def glue_tables(root: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB views named and typed like template.yaml's Glue tables (lower-case columns, partitions from paths)."""
    db = duckdb.connect()
    spend_files = sorted(str(path) for path in root.glob("spend/platform=*/date=*/*.json.gz"))
    if spend_files:
        db.execute(
            "CREATE VIEW spend AS SELECT " + ", ".join(SPEND_COLUMNS) + ', platform, CAST("date" AS DATE) AS "date"'
            f" FROM read_json({spend_files!r}, format = 'newline_delimited', hive_partitioning = true,"
            f" columns = {_struct(SPEND_COLUMNS)})"
        )
    else:
        db.execute("CREATE VIEW spend AS SELECT " + ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in
                   SPEND_COLUMNS.items()) + ", '' AS platform, DATE '2000-01-01' AS \"date\" WHERE false")  # fmt: skip
    rate_files = sorted(str(path) for path in root.glob("rates/date=*/rates.json"))
    columns = {"base": "VARCHAR", "rates": "MAP(VARCHAR, VARCHAR)", "source": "VARCHAR", "fetched_at": "VARCHAR"}
    if rate_files:
        db.execute(
            'CREATE VIEW spend_rates AS SELECT base, rates, source, fetched_at, CAST("date" AS DATE) AS "date"'
            f" FROM read_json({rate_files!r}, format = 'auto', hive_partitioning = true, columns = {_struct(columns)})"
        )
    else:
        db.execute("CREATE VIEW spend_rates AS SELECT '' AS base, MAP(['x'], ['1']) AS rates, '' AS source,"
                   " '' AS fetched_at, DATE '2000-01-01' AS \"date\" WHERE false")  # fmt: skip
    for table, entity, names in (("crm_leads", "lead", LEAD_COLUMNS), ("crm_deals", "deal", DEAL_COLUMNS)):
        files = sorted(str(path) for path in root.glob(f"crm/snapshot/entity={entity}/bucket=*/*.json.gz"))
        select = ", ".join(f'CAST("{name}" AS VARCHAR) AS {name.lower()}' for name in names)
        spec = _struct(dict.fromkeys(names, "VARCHAR"))
        db.execute(f"CREATE VIEW {table} AS SELECT {select} FROM read_json({files!r}, format = 'newline_delimited',"
                   f" columns = {spec})")  # fmt: skip
    files = sorted(str(path) for path in root.glob("crm/snapshot/entity=deal_history/bucket=*/*.json.gz"))
    select = ", ".join(f'"{name}" AS {name.lower()}' for name in HISTORY_COLUMNS)
    if files:
        db.execute(f"CREATE VIEW crm_deal_stage_history AS SELECT {select} FROM read_json({files!r},"
                   f" format = 'newline_delimited', columns = {_struct(HISTORY_COLUMNS)})")  # fmt: skip
    else:
        db.execute(
            "CREATE VIEW crm_deal_stage_history AS SELECT "
            + ", ".join(f"CAST(NULL AS {kind}) AS {name.lower()}" for name, kind in HISTORY_COLUMNS.items())
            + " WHERE false"
        )
    return db


def with_views(root: Path, **settings) -> duckdb.DuckDBPyConnection:
    db = glue_tables(root)
    for text in athena.statements(**settings):
        db.execute(text)
    return db
