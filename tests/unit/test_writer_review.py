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
