"""The alerts ledger in DynamoDB: each alert is sent once per (rule, object, period), and a rule keeps quiet on an
object for its cooldown — across retried invocations and two runs at the same time.

Two items per alert, written together in one transaction (all or none):

- ``sent|<rule>|<object>|<period>``: written only when absent, or when it is a claim whose lease ran out (the run that
  claimed it died before it could send). ``mark_sent`` turns the claim into ``sent`` for good;
- ``cool|<rule>|<object>``: written only when absent, past its ``until``, or held by this very period (a retry of the
  same alert). With a cooldown of 0 it is not written.

Two runs racing for one alert: DynamoDB lets one transaction through; the other is cancelled (its condition failed, or
the two conflicted) and does not send. A run that fails to deliver ``release``s both items, so the next run tries
again. A run killed between the claim and ``mark_sent`` leaves a claim that a run after ``lease_seconds`` retakes: the
alert may then go out twice (a Bitrix24 notification carries a TAG, so the second replaces the first), never zero
times. Every item expires (``expires_at``, the table's TTL) a while after its period and cooldown are over.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from throughline.adapters import aws

LEASE_SECONDS = 300  # longer than the delivery of one alert, even through a slow portal
KEEP_SECONDS = 400 * 86400  # a sent item outlives any period it stands for (a month, a week) and restated spend


@dataclass(frozen=True)
class Claim:
    key: str
    cool_key: str | None
    token: str


def alert_key(rule: str, obj: str, period: str) -> str:
    for part, name in ((rule, "rule"), (obj, "object"), (period, "period")):
        if not part or "|" in part:
            raise ValueError(f"the alert's {name} must be a non-empty string without '|', got {part!r}")
    return f"sent|{rule}|{obj}|{period}"


class AlertLedger:
    def __init__(
        self,
        table: str,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        lease_seconds: int = LEASE_SECONDS,
    ):
        self.table = table
        self._client = client
        self._clock = clock
        self.lease_seconds = lease_seconds

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def claim(self, rule: str, obj: str, period: str, cooldown_seconds: int = 0) -> Claim | None:
        """Take the right to send this alert now, or ``None``: already sent (or being sent), or cooling down."""
        key = alert_key(rule, obj, period)
        now = int(self._clock())
        token = uuid.uuid4().hex
        keep = now + KEEP_SECONDS + cooldown_seconds
        items: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "id": {"S": key},
                        "state": {"S": "claimed"},
                        "token": {"S": token},
                        "lease_until": {"N": str(now + self.lease_seconds)},
                        "claimed_at": {"N": str(now)},
                        "expires_at": {"N": str(keep)},
                    },
                    "ConditionExpression": "attribute_not_exists(id) OR (#s = :claimed AND lease_until < :now)",
                    "ExpressionAttributeNames": {"#s": "state"},
                    "ExpressionAttributeValues": {":claimed": {"S": "claimed"}, ":now": {"N": str(now)}},
                }
            }
        ]
        cool_key = None
        if cooldown_seconds > 0:
            cool_key = f"cool|{rule}|{obj}"
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": {
                            "id": {"S": cool_key},
                            "until": {"N": str(now + cooldown_seconds)},
                            "holder": {"S": key},
                            "expires_at": {"N": str(now + cooldown_seconds + 86400)},
                        },
                        "ConditionExpression": "attribute_not_exists(id) OR #u <= :now OR holder = :key",
                        "ExpressionAttributeNames": {"#u": "until"},
                        "ExpressionAttributeValues": {":now": {"N": str(now)}, ":key": {"S": key}},
                    }
                }
            )
        try:
            self.client.transact_write_items(TransactItems=items, ClientRequestToken=token[:36])
        except self.client.exceptions.TransactionCanceledException:
            return None  # sent, being sent, cooling down — or another run's transaction won the race
        return Claim(key, cool_key, token)

    def mark_sent(self, claim: Claim, detail: str = "") -> None:
        """The alert went out: the claim becomes permanent (only if it is still ours)."""
        with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
            # Failing the condition: our lease ran out and another run retook the alert; its record stands.
            self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": claim.key}},
                UpdateExpression="SET #s = :sent, sent_at = :now, detail = :detail REMOVE lease_until",
                ConditionExpression="#t = :token",
                ExpressionAttributeNames={"#s": "state", "#t": "token"},
                ExpressionAttributeValues={
                    ":sent": {"S": "sent"},
                    ":now": {"N": str(int(self._clock()))},
                    ":detail": {"S": detail[:500]},
                    ":token": {"S": claim.token},
                },
            )

    def release(self, claim: Claim) -> None:
        """Delivery failed: forget the claim (and its cooldown) so the next run sends the alert."""
        for key, condition, names, values in (
            (claim.key, "#t = :token", {"#t": "token"}, {":token": {"S": claim.token}}),
            (claim.cool_key, "holder = :key", None, {":key": {"S": claim.key}}),
        ):
            if key is None:
                continue
            options: dict[str, Any] = {"ConditionExpression": condition, "ExpressionAttributeValues": values}
            if names:
                options["ExpressionAttributeNames"] = names
            with contextlib.suppress(self.client.exceptions.ConditionalCheckFailedException):
                self.client.delete_item(TableName=self.table, Key={"id": {"S": key}}, **options)

    def state(self, rule: str, obj: str, period: str) -> str | None:
        """``claimed``, ``sent`` or ``None`` (tests, the demo)."""
        return self.record(rule, obj, period)[0]

    def record(self, rule: str, obj: str, period: str) -> tuple[str | None, str]:
        """The alert's state and the detail ``mark_sent`` stored (the channel that delivered it, or ``quiet``)."""
        item = self.client.get_item(
            TableName=self.table, Key={"id": {"S": alert_key(rule, obj, period)}}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None, ""
        return item["state"]["S"], (item.get("detail") or {}).get("S", "")

    # -- pending hot leads: the writer records them, check_alerts looks at them after their deadline ----------------

    def add_pending(self, kind: str, obj: str, due_at: int, payload: dict[str, str]) -> None:
        """Remember a follow-up (``hot_lead``: look for a call or e-mail at ``due_at``); idempotent. Its object also
        joins the kind's index item (``pending-index|<kind>``, a string set), so finding what is due reads that item
        and the follow-ups it names — never a scan of the table, which keeps a year of sent alerts."""
        item = {
            "id": {"S": f"pending|{kind}|{obj}"},
            "kind": {"S": kind},
            "obj": {"S": obj},
            "due_at": {"N": str(int(due_at))},
            "expires_at": {"N": str(int(due_at) + 7 * 86400)},
        }
        item |= {f"p_{name}": {"S": str(value)} for name, value in payload.items()}
        with contextlib.suppress(self.client.exceptions.TransactionCanceledException):  # pending already: kept
            self.client.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(id)"}},
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": {"id": {"S": f"pending-index|{kind}"}},
                            "UpdateExpression": "ADD objs :obj",
                            "ExpressionAttributeValues": {":obj": {"SS": [obj]}},
                        }
                    },
                ]
            )

    def due_pending(self, kind: str, now: int) -> list[dict[str, Any]]:
        """Follow-ups of ``kind`` whose time has come: the index item, then the follow-ups it names; names whose
        follow-up is gone (done, or expired by the TTL) leave the index."""
        index = self.client.get_item(
            TableName=self.table, Key={"id": {"S": f"pending-index|{kind}"}}, ConsistentRead=True
        ).get("Item")
        objs = sorted((index or {}).get("objs", {}).get("SS", []))
        rows: list[dict[str, Any]] = []
        found: set[str] = set()
        for obj in objs:  # a few (the leads of the last minutes): GetItem each, the only reads the roles allow
            item = self.client.get_item(
                TableName=self.table, Key={"id": {"S": f"pending|{kind}|{obj}"}}, ConsistentRead=True
            ).get("Item")
            if item is None:
                continue
            found.add(obj)
            if int(item["due_at"]["N"]) <= int(now):
                payload = {name[2:]: value["S"] for name, value in item.items() if name.startswith("p_")}
                rows.append({"obj": obj, "due_at": int(item["due_at"]["N"]), **payload})
        gone = [obj for obj in objs if obj not in found]
        if gone:
            self._unindex(kind, gone)
        return sorted(rows, key=lambda row: (row["due_at"], row["obj"]))

    def done_pending(self, kind: str, obj: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"id": {"S": f"pending|{kind}|{obj}"}})
        self._unindex(kind, [obj])

    def _unindex(self, kind: str, objs: list[str]) -> None:
        self.client.update_item(
            TableName=self.table,
            Key={"id": {"S": f"pending-index|{kind}"}},
            UpdateExpression="DELETE objs :objs",
            ExpressionAttributeValues={":objs": {"SS": objs}},
        )
