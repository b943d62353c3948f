"""A hostile review of the writer after issue 5: what broke, one test per defect (each failed before its fix)."""

from __future__ import annotations

from local.template import load_template
from throughline.adapters.locks import LEASE_SECONDS, Busy
from throughline.config import load_settings
from throughline.writer.leads import Outcome
from throughline.writer.queued import QueuedWrite, _schedule_retry


class RecordingQueue:
    def __init__(self):
        self.delays: list[int] = []

    def retry_after(self, receipt_handle: str, seconds: int) -> None:
        self.delays.append(seconds)


def test_a_lease_held_for_its_whole_length_cannot_push_a_message_into_the_dlq():
    # A crashed invocation (or one stuck on a slow portal) keeps its person's lease until it expires. The person's
    # message in another FIFO group comes back "busy" each time: the receives it may spend before the DLQ must
    # outlast the lease, or a lead is lost to the DLQ only because another writer was slow.
    resources = load_template()["Resources"]
    max_receives = int(resources["WritesQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"])
    queue = RecordingQueue()
    settings = load_settings({})
    for receive in range(1, max_receives):  # the last receive ends in the DLQ whatever its delay
        item = QueuedWrite("m1", "{}", receive_count=receive, receipt_handle="r")
        _schedule_retry(queue, item, Outcome("s1", False, "busy", error=Busy()), settings)
    assert sum(queue.delays) > LEASE_SECONDS
    assert queue.delays[0] <= 5  # a writer that is merely busy for a moment is not waited out for long


class LaggingReplica:
    """A DynamoDB client whose eventually consistent reads come from a replica that has not seen the last writes yet
    (DynamoDB's default for GetItem, BatchGetItem and Query); only a strongly consistent read sees them."""

    def __init__(self, client):
        self._client = client
        self.exceptions = client.exceptions

    def __getattr__(self, name):
        return getattr(self._client, name)

    def batch_get_item(self, RequestItems):
        stale = {table: spec for table, spec in RequestItems.items() if not spec.get("ConsistentRead")}
        if stale:
            return {"Responses": {table: [] for table in stale}, "UnprocessedKeys": {}}
        return self._client.batch_get_item(RequestItems=RequestItems)


def test_a_retry_reads_the_state_its_own_attempt_stored_moments_ago(monkeypatch):
    # The count noted before a repeat line's write (``pending``, ``before``) and the comment's ``sent`` mark are what
    # a retry decides by. Read from a lagging replica, a retry a moment later sees no state: it appends the line a
    # second time, or sends the manager's notice twice.
    from datetime import UTC, datetime

    import boto3
    from moto import mock_aws

    from throughline.adapters.journey_store import PENDING, JourneyStore, touch_key
    from throughline.journey.lines import Touch

    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("dynamodb")
        client.create_table(
            TableName="journey",
            AttributeDefinitions=[
                {"AttributeName": "entity", "AttributeType": "S"},
                {"AttributeName": "touch", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "entity", "KeyType": "HASH"}, {"AttributeName": "touch", "KeyType": "RANGE"}],
            BillingMode="PAY_PER_REQUEST",
        )
        store = JourneyStore("journey", LaggingReplica(client))
        touch = Touch(
            touch_id="s1:form",
            at=datetime(2026, 11, 1, tzinfo=UTC),
            kind="form",
            channel="direct",
            source="direct",
            medium="none",
        )
        store.put("LEAD#1", [touch], state=PENDING, lines={"s1:form": "line"}, before=1)
        state = store.states([touch_key("LEAD#1", touch)]).get(touch_key("LEAD#1", touch))
        assert state is not None and (state["state"], int(state["before"])) == (PENDING, 1)
