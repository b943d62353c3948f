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
from datetime import UTC, datetime
from typing import Any

from throughline.capture import forms
from throughline.capture.receive import HELD_PREFIX
from throughline.capture.submissions import Submission
from throughline.contacts import mask_email, mask_phone
from throughline.person_keys import person_key

REASONS = ("ip", "contact", "captcha")


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


def release(
    s3: Any, sqs: Any, bucket: str, queue_url: str, secret: str, post: HeldPost, now: datetime | None = None
) -> str:
    """Queue one held post as capture queues an accepted one; returns its submission id."""
    submission = post.submission
    record = {key: value for key, value in post.record.items() if key != "held"}
    record["released"] = {**(post.record.get("held") or {}), "at": (now or datetime.now(UTC)).isoformat()}
    s3.put_object(
        Bucket=bucket,
        Key=submission.raw_key or forms.raw_key(submission),
        Body=json.dumps(record, ensure_ascii=False).encode(),
        ContentType="application/json",
    )
    sqs.send_message(
        QueueUrl=queue_url,
        MessageBody=json.dumps(post.record["message"], ensure_ascii=False),
        MessageGroupId=person_key(submission.identity(), secret),
        MessageDeduplicationId=submission.submission_id,
    )
    s3.delete_object(Bucket=bucket, Key=post.key)
    return submission.submission_id
