"""The journey store: every touch of every CRM entity, structured, in DynamoDB.

Key: ``entity`` = ``LEAD#<id>`` (or ``DEAL#…``), ``touch`` = ``<UTC time>#<touch id>`` so a query returns an entity's
journey in order. ``state`` is ``pending`` while the matching line is being written to Bitrix24 and ``applied`` once
it is there: a retried write checks it instead of adding the line twice. A pending touch also keeps ``before``, how
many equal lines the field held just before the write, so a retry proves that *its own* line arrived (the count
grew), not merely that an equal line from an earlier request exists. ``comment`` = ``sent`` once the manager's
timeline notice for the touch was sent (at most once).

Beside the touches, sort keys starting with ``#`` (which sort before any time) hold per-entity bookkeeping:
``#meta`` (the last seen CRM state: stage, person key, links, deleted), ``#version`` (``v`` counts touch writes,
``applied`` is the version last rendered into the field) and ``#links`` (a lead's deals, re-rendered with it).
The person index lives under ``PERSON#<hmac>`` partitions (one item per lead/deal/contact of that phone or e-mail),
the raw copies of a person's form posts under ``RAW#<hmac>`` (sort key = the S3 key, ``expires_at`` = when the
bucket's lifecycle deletes the copy, DynamoDB's TTL), ``forget``'s erasure marks under ``FORGOTTEN#<hmac>`` /
``#erased`` (``erased_at``, ``expires_at``: ``FORGET_MARK_DAYS`` later; ``privacy.erasure``), and the sweep's cursor
under ``#SWEEP``.

The change log: every write into an entity's partition (touches, ``#meta``, ``#version``, ``#links``) first puts
``#CHANGED#<UTC day>#<shard>`` / ``<entity>`` (at most once per entity, day and store object; expiring after
``CHANGE_LOG_DAYS`` by the table's TTL attribute ``expires_at``), so the nightly export queries the day's changed
entities instead of scanning the table. The mark goes before the data: a crash between the two costs a needless
re-export, never a missed change.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from throughline.adapters import aws
from throughline.journey.lines import Touch
from throughline.privacy.masking import mask_contacts

PENDING = "pending"
APPLIED = "applied"
META = "#meta"
VERSION = "#version"
ACCESS_DENIED = "#ACCESS_DENIED"  # the count of «Access denied» answers (not an entity: the export skips it)
LINKS = "#links"  # entities whose rendered journey includes this entity's touches (a lead → its deals)
TOUCHES_AFTER = "#~"  # every touch sort key (a UTC time) sorts after this; bookkeeping keys sort before it
PERSON_PREFIX = "PERSON#"
RAW_PREFIX = "RAW#"
FORGOTTEN_PREFIX = "FORGOTTEN#"  # erasure marks (privacy.erasure): FORGOTTEN#<hmac> / #erased, erased_at, expires_at
ERASED = "#erased"
# How long an erasure mark outlives the erasure: every message that could predate it is gone by then. A form post
# waits at most 14 days in the writes queue (MessageRetentionPeriod, template.yaml) and, dead-lettered, 14 days in
# the DLQ (a FIFO DLQ restarts the clock on arrival); `python -m throughline dlq` sends it anew (14 + 14 days more).
# Two rounds of queue and DLQ: 56 days. Held posts (raw/held/) are deleted by forget itself.
FORGET_MARK_DAYS = 2 * (14 + 14)
CHANGED_PREFIX = "#CHANGED#"  # the change log's partitions: #CHANGED#<UTC day>#<shard>, sort key = the entity
CHANGE_SHARDS = 8  # a day's marks spread over this many partitions (no hot key when a sweep touches thousands)
CHANGE_LOG_DAYS = 35  # marks expire (TTL attribute `expires_at`) after this; the export rebuilds in full weekly


def changed_partition(day: date, entity: str) -> str:
    return f"{CHANGED_PREFIX}{day.isoformat()}#{zlib.crc32(entity.encode()) % CHANGE_SHARDS}"


def touch_key(entity: str, touch: Touch) -> tuple[str, str]:
    return entity, f"{touch.at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{touch.touch_id}"


def encode_item(entity: str, touch: Touch, state: str, **attributes: Any) -> dict[str, Any]:
    """The DynamoDB item of one touch (raises for a touch DynamoDB cannot hold: a writer checks this early).
    Phones and e-mails in its free text (``detail``, the rendered ``line``) are masked: the store keeps what kind of
    touch it was, never a contact (``throughline.privacy.masking``)."""
    serializer = TypeSerializer()
    entity_key, sort_key = touch_key(entity, touch)
    item = {**touch.to_item(), **attributes, "entity": entity_key, "touch": sort_key, "state": state}
    for name in ("detail", "line"):
        if isinstance(item.get(name), str):
            item[name] = mask_contacts(item[name])
    return {key: serializer.serialize(value) for key, value in item.items() if value is not None}


class JourneyStore:
    def __init__(self, table: str, client: Any = None, clock: Callable[[], datetime] | None = None):
        self.table = table
        self._client = client
        self.clock = clock or (lambda: datetime.now(UTC))  # the change log's day
        self._marked: tuple[date | None, set[str]] = (None, set())  # entities marked changed today by this object

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
        touches = list(touches)
        if touches:
            self.mark_changed(entity)
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
                    # A retry decides by what its own attempt stored moments ago (pending/before, comment sent):
                    # an eventually consistent read may not see it yet, and the line or notice would go twice.
                    "ConsistentRead": True,
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
                "KeyConditionExpression": "#e = :e AND #t > :after",
                "ExpressionAttributeNames": {"#e": "entity", "#t": "touch"},
                "ExpressionAttributeValues": {":e": {"S": entity}, ":after": {"S": TOUCHES_AFTER}},
                "ConsistentRead": True,
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

    # -- bookkeeping: last seen state, versions, person index, scans (see the module docstring) -----------------------

    def new_touches(self, entity: str, touches: Iterable[Touch], *, lines: dict[str, str] | None = None) -> list[Touch]:
        """Store the touches not stored yet (as applied); return those. Stored touches are left as they are."""
        touches = list({touch.touch_id: touch for touch in touches}.values())
        known = self.states([touch_key(entity, touch) for touch in touches])
        fresh = [touch for touch in touches if touch_key(entity, touch) not in known]
        if fresh:
            self.put(entity, fresh, state=APPLIED, lines=lines)
        return fresh

    def metas(self, entities: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The ``#meta`` item of each entity that has one."""
        found = self._get_items([(entity, META) for entity in entities])
        return {entity: item for (entity, _), item in found.items()}

    def put_meta(self, entity: str, meta: dict[str, Any]) -> None:
        """Set these attributes of the entity's ``#meta`` (others are kept)."""
        values = {key: value for key, value in meta.items() if key not in ("entity", "touch")}
        if not values:
            return
        self.mark_changed(entity)
        serializer = TypeSerializer()
        names = {f"#a{index}": key for index, key in enumerate(values)}
        self.client.update_item(
            TableName=self.table,
            Key={"entity": {"S": entity}, "touch": {"S": META}},
            UpdateExpression="SET " + ", ".join(f"{name} = :v{index}" for index, name in enumerate(names)),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":v{i}": serializer.serialize(v) for i, v in enumerate(values.values())},
        )

    def count_access_denied(self, answers: int) -> None:
        """Add «Access denied» answers (records the webhook's user may not read or write) to the running count that
        the journey export hands to the report's data quality."""
        if answers <= 0:
            return
        self.client.update_item(
            TableName=self.table,
            Key={"entity": {"S": ACCESS_DENIED}, "touch": {"S": META}},
            UpdateExpression="ADD answers :n",
            ExpressionAttributeValues={":n": {"N": str(int(answers))}},
        )

    def access_denied(self) -> int:
        """The running count of «Access denied» answers (0 when none was ever seen)."""
        item = self._get_items([(ACCESS_DENIED, META)]).get((ACCESS_DENIED, META)) or {}
        return int(item.get("answers", 0))

    def bump_version(self, entity: str) -> int:
        """Count a change of the entity's touches; returns the new version."""
        self.mark_changed(entity)  # every write into an entity's partition is marked: the export lists the entity
        response = self.client.update_item(
            TableName=self.table,
            Key={"entity": {"S": entity}, "touch": {"S": VERSION}},
            UpdateExpression="ADD v :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
            ReturnValues="UPDATED_NEW",
        )
        return int(response["Attributes"]["v"]["N"])

    def versions(self, entities: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``(version, applied)`` per entity; ``(0, 0)`` for one never written."""
        entities = list(entities)
        found = self._get_items([(entity, VERSION) for entity in entities])
        result = {}
        for entity in entities:
            item = found.get((entity, VERSION)) or {}
            result[entity] = (int(item.get("v", 0)), int(item.get("applied", 0)))
        return result

    def mark_applied(self, entity: str, version: int) -> bool:
        """Record that the field now shows ``version``; False when a newer version was recorded first."""
        self.mark_changed(entity)
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"entity": {"S": entity}, "touch": {"S": VERSION}},
                UpdateExpression="SET applied = :v",
                ConditionExpression="attribute_not_exists(applied) OR applied < :v",
                ExpressionAttributeValues={":v": {"N": str(version)}},
            )
            return True
        except self.client.exceptions.ConditionalCheckFailedException:
            return False

    def add_links(self, entity: str, linked: Iterable[str]) -> None:
        """Remember entities whose journey includes this one's touches (a lead's deals), under ``#links``."""
        linked = sorted(set(linked))
        if linked:
            self.mark_changed(entity)
            self.client.update_item(
                TableName=self.table,
                Key={"entity": {"S": entity}, "touch": {"S": LINKS}},
                UpdateExpression="ADD linked :l",
                ExpressionAttributeValues={":l": {"SS": linked}},
            )

    def links(self, entities: Iterable[str]) -> dict[str, set[str]]:
        """The linked entities of each entity that has some."""
        found = self._get_items([(entity, LINKS) for entity in entities])
        return {entity: set(item.get("linked") or ()) for (entity, _), item in found.items()}

    def index_put(self, person_keys: Iterable[str], entity: str) -> None:
        requests = [
            {"PutRequest": {"Item": {"entity": {"S": PERSON_PREFIX + key}, "touch": {"S": entity}}}}
            for key in dict.fromkeys(person_keys)
        ]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def index_drop(self, person_keys: Iterable[str], entity: str) -> None:
        requests = [
            {"DeleteRequest": {"Key": {"entity": {"S": PERSON_PREFIX + key}, "touch": {"S": entity}}}}
            for key in dict.fromkeys(person_keys)
        ]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def index_lookup(self, person_keys: Iterable[str]) -> set[str]:
        """Entities (``LEAD#5``, ``CONTACT#7``…) indexed under any of these keys."""
        found: set[str] = set()
        for key in dict.fromkeys(person_keys):
            kwargs: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "#e = :e",
                "ExpressionAttributeNames": {"#e": "entity"},
                "ExpressionAttributeValues": {":e": {"S": PERSON_PREFIX + key}},
            }
            while True:
                response = self.client.query(**kwargs)
                found |= {item["touch"]["S"] for item in response.get("Items", [])}
                if not response.get("LastEvaluatedKey"):
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return found

    def raw_keys_put(self, entries: Iterable[tuple[str, str, int]]) -> None:
        """File raw copies under person keys: ``(person key, S3 key, expires_at in epoch seconds)`` each, written
        25 to a call (a writer's batch of ten posts is one call)."""
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "entity": {"S": RAW_PREFIX + key},
                        "touch": {"S": raw_key},
                        "expires_at": {"N": str(int(expires_at))},
                    }
                }
            }
            for key, raw_key, expires_at in dict.fromkeys(entries)
        ]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def mark_forgotten(self, person_keys: Iterable[str], at: datetime, *, emails_named: bool = False) -> None:
        """Record that the people behind these keys were erased at ``at`` (a later mark replaces an earlier one);
        the marks expire ``FORGET_MARK_DAYS`` later (the table's TTL attribute ``expires_at``). ``emails_named``:
        the erasure named the person's e-mail(s), so a post of a marked phone with another e-mail is someone else's
        (a shared office phone; ``privacy.erasure``)."""
        at = at.astimezone(UTC)
        expires_at = int((at + timedelta(days=FORGET_MARK_DAYS)).timestamp())
        requests = [
            {
                "PutRequest": {
                    "Item": {
                        "entity": {"S": FORGOTTEN_PREFIX + key},
                        "touch": {"S": ERASED},
                        "erased_at": {"S": at.isoformat(timespec="microseconds")},
                        "expires_at": {"N": str(expires_at)},
                        "emails_named": {"BOOL": emails_named},
                    }
                }
            }
            for key in dict.fromkeys(person_keys)
        ]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def server_now(self) -> datetime | None:
        """DynamoDB's clock (its answer's ``Date`` header: whole seconds), or None when it gives none: an erasure time
        read from the operator's machine alone could lag the capture function's clock, and a post received before the
        erasure would seem to follow it."""
        response = self.client.query(
            TableName=self.table,
            KeyConditionExpression="#e = :e",
            ExpressionAttributeNames={"#e": "entity"},
            ExpressionAttributeValues={":e": {"S": FORGOTTEN_PREFIX}},
            Limit=1,
        )
        header = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
        try:
            return parsedate_to_datetime(header).astimezone(UTC) if header else None
        except (TypeError, ValueError):
            return None

    def forgotten(self, person_keys: Iterable[str]) -> dict[str, tuple[datetime, bool]]:
        """Person key → (erasure time, whether that erasure named e-mails), for the keys with a mark not yet expired
        (DynamoDB's TTL deletes expired items within days, so ``expires_at`` is checked here too). One BatchGetItem
        per hundred keys."""
        now = self.clock().timestamp()
        found = self._get_items([(FORGOTTEN_PREFIX + key, ERASED) for key in person_keys])
        marks: dict[str, tuple[datetime, bool]] = {}
        for (entity, _), item in found.items():
            if int(item.get("expires_at", 0)) <= now:
                continue
            at = datetime.fromisoformat(str(item["erased_at"]))
            marks[entity.removeprefix(FORGOTTEN_PREFIX)] = (at, bool(item.get("emails_named", False)))
        return marks

    def raw_keys(self, person_keys: Iterable[str]) -> set[str]:
        """The S3 keys of raw copies filed under any of these person keys."""
        return {sort_key for key in dict.fromkeys(person_keys) for sort_key in self._sort_keys(RAW_PREFIX + key)}

    def delete_partition(self, entity: str) -> list[str]:
        """Delete every item of one partition (an entity's touches and bookkeeping, or an index partition);
        returns the sort keys deleted."""
        sort_keys = self._sort_keys(entity)
        requests = [{"DeleteRequest": {"Key": {"entity": {"S": entity}, "touch": {"S": key}}}} for key in sort_keys]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])
        return sort_keys

    def delete_items(self, keys: Iterable[tuple[str, str]]) -> None:
        """Delete these ``(entity, touch)`` items (absent ones are no error)."""
        requests = [
            {"DeleteRequest": {"Key": {"entity": {"S": entity}, "touch": {"S": touch}}}}
            for entity, touch in dict.fromkeys(keys)
        ]
        for start in range(0, len(requests), 25):
            self._write(requests[start : start + 25])

    def _sort_keys(self, entity: str) -> list[str]:
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#e = :e",
            "ProjectionExpression": "#t",
            "ExpressionAttributeNames": {"#e": "entity", "#t": "touch"},
            "ExpressionAttributeValues": {":e": {"S": entity}},
            "ConsistentRead": True,
        }
        found: list[str] = []
        while True:
            response = self.client.query(**kwargs)
            found += [item["touch"]["S"] for item in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                return found
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def scan(self, segment: int = 0, total_segments: int = 1) -> Iterable[dict[str, Any]]:
        """Every item of one parallel-scan segment, deserialized, page by page (streaming)."""
        deserializer = TypeDeserializer()
        kwargs: dict[str, Any] = {"TableName": self.table, "Segment": segment, "TotalSegments": total_segments}
        while True:
            response = self.client.scan(**kwargs)
            for item in response.get("Items", []):
                yield {key: deserializer.deserialize(value) for key, value in item.items()}
            if not response.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    # -- the change log (see the module docstring) ---------------------------------------------------------------

    def mark_changed(self, entity: str) -> None:
        """Record that the entity's exported lines may have changed today (bookkeeping keys are not entities)."""
        if entity.startswith(("#", PERSON_PREFIX)):
            return
        now = self.clock()
        day = now.astimezone(UTC).date()
        if self._marked[0] != day:
            self._marked = (day, set())
        if entity in self._marked[1]:
            return
        expires = int((now + timedelta(days=CHANGE_LOG_DAYS)).timestamp())
        self.client.put_item(
            TableName=self.table,
            Item={
                "entity": {"S": changed_partition(day, entity)},
                "touch": {"S": entity},
                "expires_at": {"N": str(expires)},
            },
        )
        self._marked[1].add(entity)

    def changed(self, days: Iterable[date]) -> set[str]:
        """Entities marked changed on any of these UTC days (a Query per day and shard, never a Scan)."""
        found: set[str] = set()
        for day in days:
            for shard in range(CHANGE_SHARDS):
                found |= {item["touch"] for item in self._query(f"{CHANGED_PREFIX}{day.isoformat()}#{shard}")}
        return found

    def entity_items(self, entity: str) -> list[dict[str, Any]]:
        """Every item of one entity: bookkeeping (``#meta``, ``#version``, ``#links``) and touches."""
        return self._query(entity)

    def _query(self, partition: str) -> list[dict[str, Any]]:
        deserializer = TypeDeserializer()
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#e = :e",
            "ExpressionAttributeNames": {"#e": "entity"},
            "ExpressionAttributeValues": {":e": {"S": partition}},
        }
        items: list[dict[str, Any]] = []
        while True:
            response = self.client.query(**kwargs)
            items += [{k: deserializer.deserialize(v) for k, v in item.items()} for item in response.get("Items", [])]
            if not response.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def item_count(self) -> int:
        """DynamoDB's estimate of the table's item count (refreshed about every six hours)."""
        return int(self.client.describe_table(TableName=self.table)["Table"].get("ItemCount") or 0)

    def _get_items(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        deserializer = TypeDeserializer()
        keys = list(dict.fromkeys(keys))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            request = {
                self.table: {
                    "Keys": [{"entity": {"S": e}, "touch": {"S": t}} for e, t in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self.table, []):
                    plain = {key: deserializer.deserialize(value) for key, value in item.items()}
                    found[(plain["entity"], plain["touch"])] = plain
                request = response.get("UnprocessedKeys") or None
        return found
