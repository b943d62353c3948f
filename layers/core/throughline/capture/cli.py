"""``python -m throughline release-held``: list the form posts a rate limit or the captcha held, and queue the ones a
real customer sent (``--release``), so they become leads like any other post."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from throughline.adapters.stack import use_stack


def register(commands: Any, stack_outputs: Any) -> None:
    parser = commands.add_parser(
        "release-held",
        help="list form posts held by the flood limits or the captcha (raw/held/); --release queues them as leads",
    )
    parser.add_argument("--date", action="append", default=[], help="day they arrived, YYYY-MM-DD UTC (repeatable)")
    parser.add_argument("--reason", action="append", default=[], choices=("ip", "contact", "captcha"))
    parser.add_argument("--phone", action="append", default=[], help="the customer's phone, any format (repeatable)")
    parser.add_argument("--email", action="append", default=[], help="the customer's e-mail (repeatable)")
    parser.add_argument("--form", action="append", default=[], help="a form id (repeatable)")
    parser.add_argument("--submission-id", action="append", default=[], help="as the 429 answer named it")
    parser.add_argument("--release", action="store_true", help="queue what matches (without it: only list)")
    parser.add_argument("--stack-name", help="read SECRETS_ARN and resources from this deployed stack")
    parser.set_defaults(run=lambda args: run(args, stack_outputs))


def run(args: argparse.Namespace, stack_outputs: Any) -> int:
    from throughline.adapters import aws
    from throughline.adapters.journey_store import JourneyStore
    from throughline.adapters.submission_claims import SubmissionClaims
    from throughline.capture.held import RESEND_HORIZON, Selection, content_fingerprint, held_posts, release
    from throughline.config import load_settings
    from throughline.contacts import normalize_email, normalize_phone

    if args.stack_name:
        outputs = ("SecretsArn", "DataBucketName", "WritesQueueUrl", "IdempotencyTableName", "JourneyTableName")
        use_stack(stack_outputs(args.stack_name), *outputs)
    settings = load_settings()
    releasing = ("writes_queue_url", "person_key_secret", "idempotency_table", "journey_table") if args.release else ()
    settings.require("data_bucket", *releasing)
    if args.release and not (args.date or args.reason or args.phone or args.email or args.form or args.submission_id):
        raise SystemExit("--release needs a filter (--phone, --email, --submission-id, --date, --reason, --form)")
    selection = Selection(
        days=tuple(args.date),
        reasons=tuple(args.reason),
        phones=tuple(normalize_phone(phone, settings.default_phone_region) for phone in args.phone),
        emails=tuple(normalize_email(email) for email in args.email),
        submission_ids=tuple(args.submission_id),
        forms=tuple(args.form),
    )
    s3, bucket, queue = aws.client("s3"), settings.data_bucket or "", settings.writes_queue_url or ""
    secret = settings.person_key_secret or ""
    # Content accepted since the post was held (the customer sent the form again and got through: among the person's
    # raw copies, or in the claim within the window) is not queued a second time; each release claims its content as
    # capture does, so a post racing a capture of the same content is not queued twice either.
    claims = SubmissionClaims(settings.idempotency_table or "", secret, settings.double_submit_window_seconds)
    index = JourneyStore(settings.journey_table or "")
    reasons: Counter[str] = Counter()
    accepted = 0
    erased = 0
    # The same form sent again while held (the snippet retries a 429, a visitor clicks twice) is one post: released
    # once, its copies dropped, as capture answers a double submission once. Sent again days later (a new order on the
    # same short form, held again), it is a request of its own: released too (a repeat request on the lead).
    seen: dict[str, list[tuple[datetime, str]]] = {}
    horizon = RESEND_HORIZON + timedelta(seconds=settings.double_submit_window_seconds)
    copies = 0
    for post in held_posts(s3, bucket, selection):
        fingerprint, arrived = content_fingerprint(post), post.submission.received_at
        first = next((held for at, held in seen.get(fingerprint, []) if abs(arrived - at) <= horizon), None)
        if first is not None:
            copies += 1
            if args.release:
                s3.delete_object(Bucket=bucket, Key=post.key)
            print(f"{'dropped' if args.release else 'copy'} (the same form as {first})", post.line())
            continue
        seen.setdefault(fingerprint, []).append((arrived, post.submission.submission_id))
        if not args.release:
            reasons[post.reason] += 1
            print(post.line())
            continue
        released = release(s3, aws.client("sqs"), bucket, queue, secret, post, claims=claims, index=index)
        if released.erased:
            erased += 1
            print("dropped (its person was erased by forget after it was held)", post.line())
            continue
        if not released.queued:
            accepted += 1
            print(f"dropped (already accepted as {released.submission_id})", post.line())
            continue
        reasons[post.reason] += 1
        if released.submission_id != post.submission.submission_id:
            print(f"released (as {released.submission_id}, the same form accepted at this moment)", post.line())
        else:
            print("released", post.line())
    total = sum(reasons.values())
    summary = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items())) or "none"
    tail = f"; already accepted: {accepted}; erased: {erased}" if args.release else ""
    print(f"{'released' if args.release else 'held'}: {total} ({summary}); copies of the same form: {copies}{tail}")
    return 0
