"""The journey store: every touch of every CRM entity, structured, in DynamoDB.

Key: ``entity`` = ``LEAD#<id>`` (or ``DEAL#…``), ``touch`` = ``<UTC time>#<touch id>`` so a query returns an entity's
journey in order. ``state`` is ``pending`` while the matching line is being written to Bitrix24 and ``applied`` once
it is there: a retried write checks it instead of adding the line twice. A pending touch also keeps ``before``, how
many equal lines the field held just before the write, so a retry proves that *its own* line arrived (the count
grew), not merely that an equal line from an earlier request exists. ``comment`` = ``sent`` once the manager's
timeline notice for the touch was sent (at most once).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from throughline.adapters import aws
from throughline.journey.lines import Touch

PENDING = "pending"
APPLIED = "applied"


def touch_key(entity: str, touch: Touch) -> tuple[str, str]:
    return entity, f"{touch.at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{touch.touch_id}"


def encode_item(entity: str, touch: Touch, state: str, **attributes: Any) -> dict[str, Any]:
    """The DynamoDB item of one touch (raises for a touch DynamoDB cannot hold: a writer checks this early)."""
    serializer = TypeSerializer()
    entity_key, sort_key = touch_key(entity, touch)
    item = {**touch.to_item(), **attributes, "entity": entity_key, "touch": sort_key, "state": state}
    return {key: serializer.serialize(value) for key, value in item.items() if value is not None}


class JourneyStore:
    def __init__(self, table: str, client: Any = None):
        self.table = table
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def put(
        self,
        entity: str,
        touches: Iterable[Touch],
        *,
        state: str,
        lines: dict[str, str] | None = None,
        **attributes: Any,
    ) -> None:
        """Write touches of one entity (overwriting: the same touch written twice is one touch)."""
        requests = []
        for touch in touches:
            line = (lines or {}).get(touch.touch_id)
            item = encode_item(entity, touch, state, line=line, **attributes)
            requests.append({"PutRequest": {"Item": item}})
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def states(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """``state`` (with ``before`` and ``comment`` where kept) of each stored touch among ``keys``; touches
        never written are absent."""
        keys = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        deserializer = TypeDeserializer()
        for start in range(0, len(keys), 100):
            request = {
                self.table: {
                    "Keys": [
                        {"entity": {"S": entity}, "touch": {"S": touch}} for entity, touch in keys[start : start + 100]
                    ],
                    # "touch" and "state" are DynamoDB reserved words.
                    "ProjectionExpression": "#e, #t, #s, #b, #c",
                    "ExpressionAttributeNames": {
                        "#e": "entity",
                        "#t": "touch",
                        "#s": "state",
                        "#b": "before",
                        "#c": "comment",
                    },
                }
            }
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    values = {key: deserializer.deserialize(value) for key, value in item.items()}
                    found[(values.pop("entity"), values.pop("touch"))] = values
                request = response.get("UnprocessedKeys") or None
        return found

    def journey(self, entity: str) -> list[Touch]:
        """All touches of one entity, oldest first."""
        deserializer = TypeDeserializer()
        touches, start_key = [], None
        while True:
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "#e = :e",
                "ExpressionAttributeNames": {"#e": "entity"},
                "ExpressionAttributeValues": {":e": {"S": entity}},
            }
            if start_key:
                kwargs["ExclusiveStartKey"] = start_key
            response = self.client.query(**kwargs)
            for item in response.get("Items", []):
                touches.append(Touch.from_item({key: deserializer.deserialize(value) for key, value in item.items()}))
            start_key = response.get("LastEvaluatedKey")
            if not start_key:
                return touches

    def _write(self, requests: list[dict[str, Any]]) -> None:
        pending = {self.table: requests}
        for attempt in range(8):
            response = self.client.batch_write_item(RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB asks callers to back off
        raise RuntimeError(f"DynamoDB left {len(pending.get(self.table, []))} journey items unprocessed")
