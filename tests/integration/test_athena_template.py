"""template.yaml's Glue table over the journey export: partition projection over journeys/snapshot=<d>/ and a column
for every field the export writes (touch lines and entity lines), so attribution_paths.sql reads it on Athena."""

from __future__ import annotations

from local.template import load_template
from throughline.journey.export import TOUCH_FIELDS

TABLE = load_template()["Resources"]["JourneysTable"]["Properties"]["TableInput"]


def test_the_journeys_table_projects_snapshots_and_has_every_export_field() -> None:
    parameters = TABLE["Parameters"]
    assert parameters["projection.enabled"] == "true" and parameters["projection.snapshot.type"] == "date"
    assert parameters["projection.snapshot.format"] == "yyyy-MM-dd"
    assert parameters["storage.location.template"]["Fn::Sub"] == "s3://${DataBucket}/journeys/snapshot=${!snapshot}/"
    assert [key["Name"] for key in TABLE["PartitionKeys"]] == ["snapshot"]
    columns = {column["Name"]: column["Type"] for column in TABLE["StorageDescriptor"]["Columns"]}
    touch = {"person_key", "entity_type", "entity_id", "touch_id", "at", *TOUCH_FIELDS}
    entity = {"entity_type", "entity_id", "person_key", "deleted", "lead_id"}
    assert set(columns) == touch | entity
    assert columns["entity_id"] == columns["lead_id"] == "bigint" and columns["deleted"] == "boolean"
    assert TABLE["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"
