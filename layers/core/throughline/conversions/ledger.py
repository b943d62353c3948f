"""The ledger of conversions sent: one DynamoDB item per conversion × platform × goal (table ``CONVERSIONS_TABLE``).

``id`` = ``<platform>#<goal>#<kind>#<entity>``. A conversion is claimed with a conditional write before it is sent, so
a deal won, reopened and won again — or two runs at once — sends it once. States:

- ``no_identifier``: the person carried no id this platform joins on (looked at again by later runs: an id may arrive);
- ``sending``: claimed by a run (a claim older than ``STALE_CLAIM`` belongs to a run that died and may be taken over);
- ``sent``: delivered, the platform's processing not finished yet (Metrica: the upload's id, followed by later runs);
- ``accepted`` / ``rejected`` (with the platform's ``reason``): final;
- ``refused``: never sent, with the reason (older than the platform's join window);
- ``failed``: the platform was unreachable or answered an error worth retrying; the next run sends it again;
- ``dead``: failed ``MAX_ATTEMPTS`` times; counted, alarmed, never retried by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from throughline.adapters import aws

NO_IDENTIFIER = "no_identifier"
SENDING = "sending"
SENT = "sent"
ACCEPTED = "accepted"
REJECTED = "rejected"
REFUSED = "refused"
FAILED = "failed"
DEAD = "dead"
FINAL = frozenset({ACCEPTED, REJECTED, REFUSED, DEAD})
RECLAIMABLE = (NO_IDENTIFIER, FAILED)
STALE_CLAIM = timedelta(minutes=20)  # longer than the function's timeout
MAX_ATTEMPTS = 24  # a day of hourly runs


def ledger_id(platform: str, goal: str, kind: str, entity: str) -> str:
    return f"{platform}#{goal}#{kind}#{entity}"


class Ledger:
    def __init__(self, table: str, client: Any = None, clock: Callable[[], datetime] | None = None):
        self.table = table
        self._client = client
        self.clock = clock or (lambda: datetime.now(UTC))

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def claim(self, item_id: str, attributes: dict[str, Any]) -> int | None:
        """Take a conversion for sending: only when it was never seen, is waiting for an id, failed before, or its
        claim is stale. ``attributes`` (platform, goal, entity, amount, …) are written with the claim. Returns the
        claim's attempt number, or None when the conversion is not to be sent again."""
        found = self._claim(item_id, attributes)
        return None if found is None else found[0]

    def claim_with_transaction(
        self, item_id: str, attributes: dict[str, Any], transaction_id: str, legacy_id: str
    ) -> tuple[int, str] | None:
        """:meth:`claim`, and the id the platform deduplicates on (``transaction_id`` attribute): ``transaction_id``
        for a conversion never sent, the one stored for a conversion tried before; a conversion tried before ids were
        stored (it was sent, or may have been, as ``legacy_id``) keeps ``legacy_id``, so a retry is a duplicate the
        platform drops, never a second conversion."""
        found = self._claim(item_id, {**attributes, "transaction_id": transaction_id}, keep=("transaction_id",))
        if found is None:
            return None
        attempt, old = found
        if old and old.get("transaction_id"):
            return attempt, str(old["transaction_id"])
        if old and int(old.get("attempts") or 0) > 0:  # tried (sent, or perhaps sent) before ids were stored
            self.settle_attributes(item_id, transaction_id=legacy_id)
            return attempt, legacy_id
        return attempt, transaction_id

    def settle_attributes(self, item_id: str, **attributes: Any) -> None:
        """Set these attributes of the item (no condition)."""
        serializer = TypeSerializer()
        names = {f"#a{i}": key for i, key in enumerate(attributes)}
        self.client.update_item(
            TableName=self.table,
            Key={"id": {"S": item_id}},
            UpdateExpression="SET " + ", ".join(f"{name} = :v{i}" for i, name in enumerate(names)),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                f":v{i}": serializer.serialize(_plain(v)) for i, v in enumerate(attributes.values())
            },
        )

    def _claim(
        self, item_id: str, attributes: dict[str, Any], keep: tuple[str, ...] = ()
    ) -> tuple[int, dict[str, Any] | None] | None:
        """The claim's attempt number and the item as it was before (``None`` when new). Attributes named in
        ``keep`` are written only when absent."""
        now = self.clock()
        values = {**attributes, "state": SENDING, "claimed_at": now.isoformat()}
        serializer = TypeSerializer()
        names = {f"#a{i}": key for i, key in enumerate(values)}
        expression = "SET " + ", ".join(
            f"{name} = if_not_exists({name}, :v{i})" if values[key] is not None and key in keep else f"{name} = :v{i}"
            for i, (name, key) in enumerate(names.items())
        )
        expression += ", #attempts = if_not_exists(#attempts, :zero) + :one"
        try:
            answer = self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": item_id}},
                UpdateExpression=expression,
                ReturnValues="ALL_OLD",
                ConditionExpression=(
                    "attribute_not_exists(id) OR #state IN (:r0, :r1) OR (#state = :sending AND #claimed < :stale)"
                ),
                ExpressionAttributeNames={
                    **names,
                    "#attempts": "attempts",
                    "#state": "state",
                    "#claimed": "claimed_at",
                },
                ExpressionAttributeValues={
                    **{f":v{i}": serializer.serialize(_plain(v)) for i, v in enumerate(values.values())},
                    ":zero": {"N": "0"},
                    ":one": {"N": "1"},
                    ":r0": {"S": RECLAIMABLE[0]},
                    ":r1": {"S": RECLAIMABLE[1]},
                    ":sending": {"S": SENDING},
                    ":stale": {"S": (now - STALE_CLAIM).isoformat()},
                },
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        old = _decode(answer["Attributes"]) if answer.get("Attributes") else None
        return int((old or {}).get("attempts") or 0) + 1, old

    def settle(self, item_id: str, state: str, **attributes: Any) -> None:
        """Record what became of a claimed conversion (``reason`` for a refusal, rejection or failure)."""
        self.settle_attributes(item_id, **attributes, state=state, settled_at=self.clock().isoformat())

    def get(self, item_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table, Key={"id": {"S": item_id}}, ConsistentRead=True).get("Item")
        return _decode(item) if item else None

    def items(self) -> Iterator[dict[str, Any]]:
        """Every item (the ledger holds one per conversion × platform × goal: small enough to scan)."""
        kwargs: dict[str, Any] = {"TableName": self.table}
        while True:
            response = self.client.scan(**kwargs)
            for item in response.get("Items", []):
                yield _decode(item)
            if not response.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _decode(item: dict[str, Any]) -> dict[str, Any]:
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}
