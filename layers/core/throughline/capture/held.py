"""Form posts held by a rate limit or the captcha (``raw/held/``), and releasing the ones a real customer sent.

A held object is the raw copy capture would have stored (``forms.raw_record``: the body as received, the parsed
message) plus ``held: {reason, detail, captcha}`` (``captcha``: ``not checked``, ``passed``, ``unavailable`` or
absent without a captcha). Releasing one does what capture does for an accepted post, in the same
order: the raw copy under ``raw/forms/`` (where the writer and ``forget`` look), the message in the writes queue
(group: the person key; deduplication id: the submission id), and only then the held object is deleted. A release
that dies half-way is simply run again: the same submission id is the same lead (the writer finds it by ORIGIN_ID).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from throughline.adapters.journey_store import JourneyStore
from throughline.adapters.submission_claims import Claim, SubmissionClaims
from throughline.capture import forms, receive
from throughline.capture.receive import HELD_PREFIX
from throughline.capture.submissions import Submission
from throughline.contacts import mask_email, mask_phone
from throughline.observability import logger
from throughline.person_keys import person_key
from throughline.privacy.erasure import delete_every_version, erased

REASONS = ("ip", "contact", "captcha")
# How long after a held post the same content sent again is the customer's resend of it (the snippet's retry after the
# 429's Retry-After, at most the longest rate-limit window, a day; «solve the captcha again»; a builder's customer
# answered 200 who calls again the same evening), on top of the double-submit window. Later, the same text is a
# request of its own (a repeat order on the same short form): the held post is released, one more request on the lead,
# not dropped. A missed resend costs a repeat-request notice; a dropped request is lost.
RESEND_HORIZON = timedelta(days=1)


@dataclass(frozen=True)
class HeldPost:
    key: str
    record: dict[str, Any]

    @property
    def submission(self) -> Submission:
        return Submission.from_message(self.record["message"])

    @property
    def reason(self) -> str:
        return str((self.record.get("held") or {}).get("reason", ""))

    def line(self) -> str:
        submission = self.submission
        contact = mask_phone(submission.phone) or mask_email(submission.email) or "-"
        arrived = f"{submission.received_at:%Y-%m-%d %H:%M}"
        # An ``ip``-held post with a captcha on was never checked: its token may be a bot's junk.
        captcha = str((self.record.get("held") or {}).get("captcha") or "-")
        return f"{arrived} {self.reason:<8} {submission.form_id:<20} {contact:<18} captcha:{captcha:<12} {self.key}"


@dataclass
class Selection:
    """Which held posts: all of them, or those matching every filter given."""

    days: tuple[str, ...] = ()  # YYYY-MM-DD (UTC, the key's partition)
    reasons: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()  # normalized (E.164)
    emails: tuple[str, ...] = ()  # normalized
    submission_ids: tuple[str, ...] = ()
    forms: tuple[str, ...] = field(default_factory=tuple)

    def prefixes(self) -> list[str]:
        return [f"{HELD_PREFIX}date={day}/" for day in self.days] or [HELD_PREFIX]

    def matches(self, post: HeldPost) -> bool:
        submission = post.submission
        checks = [
            (self.reasons, post.reason),
            (self.phones, submission.phone),
            (self.emails, submission.email),
            (self.submission_ids, submission.submission_id),
            (self.forms, submission.form_id),
        ]
        return all(not wanted or value in wanted for wanted, value in checks)


def held_posts(s3: Any, bucket: str, selection: Selection) -> Iterator[HeldPost]:
    for prefix in selection.prefixes():
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if not item["Key"].endswith(".json"):
                    continue
                try:
                    record = json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
                except s3.exceptions.NoSuchKey:
                    continue  # released (or dropped as a copy) by another run since this one listed it
                post = HeldPost(item["Key"], record)
                if selection.matches(post):
                    yield post


@dataclass(frozen=True)
class Released:
    submission_id: str  # the submission the content is a lead under
    queued: bool  # False: its content was already accepted under ``submission_id``, nothing was queued
    erased: bool = False  # its person was erased (forget) after it was held: deleted, nothing queued


def content_fingerprint(post: HeldPost) -> str:
    """The key capture claims the post's content under (``receive.content_fingerprint``)."""
    return receive.content_fingerprint(post.submission, post.record.get("builder"))


def accepted_since(s3: Any, bucket: str, index: JourneyStore, secret: str, post: HeldPost, window: int) -> str | None:
    """The submission id the held post's content was accepted under after it was held (from the double-submit window
    before it on: an earlier one would have been answered, not held; up to ``RESEND_HORIZON`` and the window after
    it), found among the raw copies the writer filed under the post's phone and e-mail
    (``journey_wiring.index_raw_copies``, what ``forget`` reads); None if none. The claim knows only the last window;
    this knows every copy the bucket keeps."""
    submission = post.submission
    contacts = [value for value in (submission.phone, submission.email) if value]
    if not contacts:
        return None
    fingerprint = content_fingerprint(post)
    # Keys are partitioned by the UTC day (``forms.raw_key``), whatever offset the held time was written with.
    earliest = (submission.received_at - timedelta(seconds=window)).astimezone(UTC)
    latest = (submission.received_at + RESEND_HORIZON + timedelta(seconds=window)).astimezone(UTC)
    # A released held copy is a copy of this one within a day either way (the run that released it would have dropped
    # this one as its copy), as the release-held command's own copies are.
    earliest_released = (submission.received_at - RESEND_HORIZON - timedelta(seconds=window)).astimezone(UTC)
    own = f"/{submission.submission_id}.json"
    for key in sorted(index.raw_keys(person_key(contact, secret) for contact in contacts)):
        day = key.partition("date=")[2][:10]
        if f"/form={submission.form_id}/" not in key or key.endswith(own):
            continue
        if not f"{earliest_released:%Y-%m-%d}" <= day <= f"{latest:%Y-%m-%d}":
            continue
        try:
            record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            other = Submission.from_message(record["message"])
        except s3.exceptions.NoSuchKey:
            continue  # deleted (forget, the lifecycle) since the writer filed it
        except (ValueError, KeyError, TypeError):
            logger.warning("an unreadable raw copy skipped", extra={"key": key})
            continue
        if not (earliest_released if "released" in record else earliest) <= other.received_at <= latest:
            continue  # an earlier request, or a later one of its own
        if receive.content_fingerprint(other, record.get("builder")) == fingerprint:
            return other.submission_id
    return None


def resend(held: Submission, claim: Any, window: int) -> bool:
    """Whether the submission that claimed the held post's content is one with it: arrived within ``RESEND_HORIZON``
    and the window of it (what ``accepted_since`` looks through). A capture's claim lives a window from its arrival,
    so one that arrived earlier than the window before the held post was put by the release of an earlier held copy:
    a copy within a day, as the command's own copies."""
    apart = datetime.fromisoformat(claim.received_at) - held.received_at
    return abs(apart) <= RESEND_HORIZON + timedelta(seconds=window)


def release(
    s3: Any,
    sqs: Any,
    bucket: str,
    queue_url: str,
    secret: str,
    post: HeldPost,
    now: datetime | None = None,
    claims: SubmissionClaims | None = None,
    index: JourneyStore | None = None,
) -> Released:
    """Queue one held post as capture queues an accepted one, claiming its content first as capture does.

    Content accepted under another submission id since the post was held (the customer, held, sent the form again
    and got through) is not queued again: the held copy is deleted and the accepted id returned. ``index`` finds it
    among the person's raw copies once the writer has filed them; the claim finds it within the double-submit window
    (a copy still in the queue included). Content claimed by a post being stored right now (a twin racing this
    release) is queued under that post's id and arrival time, as capture's own retry would: the FIFO queue drops the
    repeat, and the writer finds the lead by ORIGIN_ID. Content accepted (or claimed) more than ``RESEND_HORIZON``
    and the window after the held post is a request of its own: the held post is queued under its own id.
    A post whose person ``forget`` erased after it arrived (``index``'s erasure marks) is deleted, not queued.
    Without ``claims`` and ``index`` every post is queued."""
    submission = post.submission
    fingerprint = content_fingerprint(post)
    message = post.record["message"]
    record = {key: value for key, value in post.record.items() if key != "held"}
    if index is not None and erased(index, secret, [submission]):
        # Its person was erased after it was held (forget deletes held posts; this one was listed before that, or
        # held in a run racing it): never queued, so never written again (the writer checks the same marks).
        delete_every_version(s3, bucket, post.key)
        return Released(submission.submission_id, queued=False, erased=True)
    if index is not None and claims is not None:
        # Before the claim: a claim put for a post then dropped would make the next post of the content (within the
        # window) store this held one's submission id.
        accepted = accepted_since(s3, bucket, index, secret, post, claims.window_seconds)
        if accepted is not None:
            s3.delete_object(Bucket=bucket, Key=post.key)
            return Released(accepted, queued=False)
    moment = now or datetime.now(UTC)
    claimed = False
    if claims is not None:
        # Claimed only if a post of the content now could be this one's resend (held within a day): a claim of a post
        # held days ago would answer the customer's new request of the same text, sent now, as a double submission of
        # it, and queue nothing for it. An older one only reads the claim (a copy another run is releasing).
        horizon = RESEND_HORIZON + timedelta(seconds=claims.window_seconds)
        claimed = moment - submission.received_at <= horizon
        claim: Claim | None
        if claimed:
            claim = claims.claim(fingerprint, submission.submission_id, submission.received_at.isoformat())
        else:
            claim = claims.current(fingerprint)
        if claim is None or claim.submission_id == submission.submission_id:
            pass
        elif not resend(submission, claim, claims.window_seconds):
            # The content claimed now by a post a day or more after the held one (a new order on the same short form,
            # sent while this one waited), or by the release of a held post from days before: a request of its own.
            # The held one is queued under its own id, and the claim stays the other's.
            claimed = False
        elif claim.completed:
            s3.delete_object(Bucket=bucket, Key=post.key)
            return Released(claim.submission_id, queued=False)
        else:
            submission, message = receive.as_claimed(submission, claim, record)
            claimed = True  # that post's claim: marked queued once this is (a crashed attempt's is never marked)
    record["released"] = {**(post.record.get("held") or {}), "at": moment.isoformat()}
    s3.put_object(
        Bucket=bucket,
        Key=submission.raw_key or forms.raw_key(submission),
        Body=json.dumps(record, ensure_ascii=False).encode(),
        ContentType="application/json",
    )
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(message, ensure_ascii=False),
        MessageGroupId=person_key(submission.identity(), secret),
        MessageDeduplicationId=submission.submission_id,
    )
    if claims is not None and claimed:
        # A capture of the same content from now on, within the window, is answered with this submission. Not marked
        # (a failure here): the content stays claimed, and a later post of it is queued under this id again.
        try:
            claims.complete(fingerprint, submission.submission_id)
        except Exception:
            logger.warning("the claim not marked completed after the release was queued", exc_info=True)
    s3.delete_object(Bucket=bucket, Key=post.key)
    return Released(submission.submission_id, queued=True)
