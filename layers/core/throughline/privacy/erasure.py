"""Erasure marks: what ``forget`` leaves behind so that a form post it could not reach (still in the writes queue,
dead-lettered and redriven later, or held and released) is dropped instead of writing the person again.

``forget`` puts one item per person key it searched by (``FORGOTTEN#<hmac>`` / ``#erased`` in the journey table:
the erasure time, whether it named e-mails, nothing else; ``JourneyStore.mark_forgotten``). The form writer and
``release-held`` look the keys of a submission's phone and e-mail up (one BatchGetItem per receive batch) and drop a
submission received at or before the latest mark of its keys: no lead, no comment, no raw copy, no index entry. A
submission received after the erasure (the person came back and posted again) is written: a new consent. A marked
phone does not make a post carrying another e-mail the person's when the erasure named their e-mail: that is a
colleague on a shared office phone, and their lead is written (erased by the phone alone, it cannot be told apart).

Not covered: a submission the writer had already checked when the mark was written (an invocation in flight, at most
the writer's timeout) is written; ``forget`` run again a few minutes later erases it. A message redriven from the DLQ
after the mark expired (``FORGET_MARK_DAYS``: two rounds of the queue's and the DLQ's retention) is not recognised.

CRM events (``writer.crm_events``) are not checked: the portal owner erases the person in Bitrix24 first (the
``forget`` output says so), after which the portal sends no event about them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.capture.submissions import Submission
from throughline.person_keys import person_key


def submission_keys(submission: Submission, secret: str) -> list[str]:
    """The person keys of the submission's phone and e-mail (as ``forget`` derives them from the same contacts)."""
    return [person_key(value, secret) for value in (submission.phone, submission.email) if value]


def erased(store: JourneyStore, secret: str, submissions: Iterable[Submission]) -> dict[str, datetime]:
    """Submission id → the erasure time, for the submissions received at or before a mark of one of their keys.
    One read for all of them (``JourneyStore.forgotten``: BatchGetItem, a hundred keys a call)."""
    submissions = list(submissions)
    keys = {submission.submission_id: submission_keys(submission, secret) for submission in submissions}
    wanted = {key for values in keys.values() for key in values}
    if not wanted:
        return {}
    marks = store.forgotten(wanted)
    found: dict[str, datetime] = {}
    for submission in submissions:
        times = _mark_times(submission, secret, marks)
        if times and submission.received_at <= max(times):
            found[submission.submission_id] = max(times)
    return found


def _mark_times(submission: Submission, secret: str, marks: dict[str, tuple[datetime, bool]]) -> list[datetime]:
    """The erasure times that make the submission the erased person's: a marked e-mail's always; a marked phone's
    unless that erasure named the person's e-mail(s) and the post carries another one (a colleague's post from a
    shared office phone: forget's own rule, a shared phone must not widen one person's erasure)."""
    times = []
    if submission.email and (mark := marks.get(person_key(submission.email, secret))):
        times.append(mark[0])
    if submission.phone and (mark := marks.get(person_key(submission.phone, secret))):
        at, emails_named = mark
        if not (submission.email and emails_named):
            times.append(at)
    return times


def delete_every_version(s3: Any, bucket: str, key: str, *, keep_current: bool = False) -> bool:
    """Delete the object's versions and delete markers (all, or all but the current version); True if any."""
    doomed: list[dict[str, str]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            if version["Key"] != key or (keep_current and version.get("IsLatest") and "Size" in version):
                continue
            doomed.append({"Key": key, "VersionId": version["VersionId"]})
    for start in range(0, len(doomed), 1000):
        response = s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed[start : start + 1000], "Quiet": True})
        if response.get("Errors"):
            raise RuntimeError(f"could not delete {len(response['Errors'])} versions of {key}")
    return bool(doomed)
