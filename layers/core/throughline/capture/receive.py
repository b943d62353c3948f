"""Receive a web-form post: decode, drop spam, validate, count the rate limits, ask the captcha, then make it durable:
one SQS message that carries the raw copy (the writer puts it in S3 first; a copy too large to travel is put here).

A double-submitted form (same content from the same form within the window) is accepted once: a claim of the
content (``adapters.submission_claims``), put before anything is stored, answers the second post with the first
post's submission id once the first is queued, and makes any retry of an attempt that did not finish store the same
submission again rather than a second one. When the claim fails to be marked completed after the submission was
stored, the sender still gets 202.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from throughline.adapters.raw_store import RawStore
from throughline.adapters.submission_claims import Claim, SubmissionClaims
from throughline.adapters.writes_queue import WritesQueue, message_body
from throughline.capture import forms, hooks
from throughline.capture.captcha import TOKEN_FIELDS, CaptchaVerifier
from throughline.capture.limits import RateLimiter
from throughline.capture.submissions import RAW_COPY, Submission
from throughline.config import Settings
from throughline.contacts import mask_email, mask_phone
from throughline.observability import logger
from throughline.person_keys import person_key

# A builder's server posts urlencoded text where our snippet posts JSON: a Cyrillic letter is 6 bytes there (2 in
# UTF-8 JSON), and Elementor's «Advanced Data» sends every value twice (value, raw_value). The same text may take
# this many times MAX_BODY_BYTES on a hook.
HOOK_BODY_FACTOR = 8
# Submission ids of builders' posts that carry their own delivery id (Tilda's tranid) are derived from it and the
# content, so a retry is the same submission however late it comes (the writer finds its lead by ORIGIN_ID).
DELIVERY_NAMESPACE = uuid.UUID("6b1f3c1e-2f4d-5a7e-9c2b-7e0d4f1a8b35")
_translate = forms.rejecting_unreadable_input(hooks.translate)
# The largest message that carries its raw copy (``submissions.RAW_COPY``): SQS takes 256 KiB (262 144 bytes) per
# message; the rest is headroom.
MESSAGE_MAX_BYTES = 240_000


@dataclass(frozen=True)
class Accepted:
    submission_id: str
    spam: bool = False
    duplicate: bool = False
    redelivered: bool = False  # a builder's retry of one delivery (the same tranid), answered from its claim
    redirect_to: str | None = None
    check: bool = False  # a form builder's connection check: answered, nothing stored
    held: str | None = None  # "ip", "contact" or "captcha": kept under raw/held/, not queued
    retry_after: int = 0  # held by a rate limit: seconds until its window ends
    captcha_unavailable: bool = False  # the captcha could not be verified and the post passed (see capture.captcha)
    limits_unavailable: bool = False  # the rate limits could not be counted and the post passed


class Capture:
    """The capture step with its dependencies, so tests can give it other stores."""

    def __init__(
        self,
        settings: Settings,
        raw_store: RawStore,
        queue: WritesQueue,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        claims: SubmissionClaims | None = None,
        limiter: RateLimiter | None = None,
        captcha: CaptchaVerifier | None = None,
    ):
        self.settings = settings
        self.limiter = limiter
        self.captcha = captcha
        self.raw_store = raw_store
        self.queue = queue
        self.claims = claims
        self._clock = clock

    def receive(
        self,
        form_id: str,
        body: bytes,
        content_type: str | None,
        headers: Mapping[str, str],
        builder: str | None = None,
        source_ip: str | None = None,
    ) -> Accepted:
        """Raises ``forms.FormRejected`` for bad input; AWS errors propagate (the caller answers 503).

        ``builder`` (``tilda``, ``elementor``, ``json``): the body is that form builder's webhook, read by
        ``hooks.translate`` into our fields first; everything after that is the form route's path.
        ``source_ip``: the client's address (API Gateway's ``sourceIp``) for the per-IP limit and the captcha; a
        builder's post comes from the builder's servers, so neither applies to it (the per-contact limit does)."""
        settings = self.settings
        received_at = self._clock()
        submission_id = str(uuid.uuid4())
        try:
            limit = settings.max_body_bytes * (HOOK_BODY_FACTOR if builder else 1)
            fields = forms.decode_body(body, content_type, limit)
        except forms.FormRejected as rejected:
            # Unreadable as sent (a charset it does not declare, a content type we do not read) is still somebody's
            # lead, and a builder's server cannot fix it: keep the bytes. Not a body over the limit.
            if rejected.status != 413:
                self._keep_rejected(submission_id, received_at, body, content_type, rejected)
            raise
        delivery_id, translated = None, None
        spam = forms.is_spam(fields, settings.honeypot_field)
        if builder:
            try:
                translated = _translate(
                    builder,
                    fields,
                    form_id,
                    label_aliases=settings.form_label_aliases,
                    field_maps=settings.form_field_maps,
                )
            except forms.FormRejected as rejected:
                self._keep_rejected(submission_id, received_at, body, content_type, rejected)
                raise
            if translated.check:
                logger.info("form builder's connection check answered", extra={"form_id": form_id, "builder": builder})
                return Accepted("", check=True)
            fields, delivery_id = translated.fields, translated.delivery_id
            spam = spam or forms.is_spam(fields, settings.honeypot_field)
        if spam:
            day = received_at.strftime("%Y-%m-%d")
            spam_key = f"raw/spam/date={day}/{submission_id}.bin"
            self.raw_store.put(spam_key, body, content_type or "application/octet-stream")
            logger.info("honeypot filled: dropped", extra={"form_id": form_id, "builder": builder})
            return Accepted(submission_id, spam=True)
        # A captcha token is for us, not the manager: never stored in the lead, never part of the fingerprint.
        tokens = {name: str(fields.pop(name)) for name in TOKEN_FIELDS if name in fields}
        try:
            submission = forms.parse_submission(
                form_id,
                fields,
                submission_id=submission_id,
                received_at=received_at,
                origin=headers.get("origin"),
                default_region=settings.default_phone_region,
                zone=settings.zone,
            )
        except forms.FormRejected as rejected:
            self._keep_rejected(submission_id, received_at, body, content_type, rejected)
            if translated is not None:  # name each field as the builder posted it: that is what its user sees
                rejected.fields = {translated.name_in_post(name): reason for name, reason in rejected.fields.items()}
            raise
        fingerprint = content_fingerprint(submission, builder)
        if delivery_id:
            derived = uuid.uuid5(DELIVERY_NAMESPACE, f"{builder}|{form_id}|{delivery_id}|{fingerprint}")
            submission = replace(submission, submission_id=str(derived))
        submission = replace(submission, raw_key=forms.raw_key(submission))
        record = forms.raw_record(submission, body, content_type, headers, builder=builder).decode()
        # Decided before anything is stored, and it never raises: a bad _next cannot turn a stored lead into an error.
        redirect_to = None
        if not builder:  # a builder's server posts, not a browser: nobody to send to a thank-you page
            redirect_to = forms.redirect_target(fields.get("_next"), headers.get("origin"), settings.allowed_origins)
        # The address's limit before the captcha: a post held by it costs one DynamoDB update, never a (billed) call
        # to the captcha provider, so a bot's junk tokens stop costing money once its address is over the limit. The
        # contact's limit only after the captcha passed: a contact is whatever the post claims (anyone can type a
        # customer's phone), so a post that fails the captcha must not count against it, or a bot with junk tokens
        # from many addresses would hold that customer's own post with 429. A post held by the address's limit keeps
        # its token in the held copy, unverified (a token lives minutes: release-held queues what the operator judges
        # real, without asking the provider).
        contact = submission.phone or submission.email
        asks_captcha = self.captcha is not None and self.captcha.enabled and not builder
        unchecked = "not checked" if asks_captcha else None
        address = None if builder else source_ip
        held, repeat, limits_unavailable = self._limit("ip", address, submission, record, fingerprint, unchecked)
        if held is not None:
            return held
        captcha_unavailable = False
        checked = None
        if asks_captcha and not repeat and self.captcha is not None:
            verdict = self.captcha.verify(tokens, source_ip)
            checked = "unavailable" if verdict.unavailable else "passed" if verdict.passed else "refused"
            if not verdict.passed and not self._accepted_before(fingerprint):
                return self._hold(submission, record, "captcha", verdict.reason)
            if verdict.unavailable:
                captcha_unavailable = True
                logger.error("captcha not verified; the post passes", extra={"reason": verdict.reason})
        if not repeat:
            held, repeat, unavailable = self._limit("contact", contact, submission, record, fingerprint, checked)
            if held is not None:
                return held
            limits_unavailable = limits_unavailable or unavailable
        result = self._accept_once({"fingerprint": fingerprint, "message": submission.to_message(), "raw": record})
        accepted_id = result["submission_id"]
        duplicate = accepted_id != submission.submission_id
        redelivered = bool(result.get("redelivered"))
        if redelivered:
            outcome = "redelivery: answered from its claim"
        else:
            outcome = "double submission: answered with the first one" if duplicate else "submission accepted"
        logger.info(
            outcome,
            extra={
                "submission_id": accepted_id,
                "form_id": form_id,
                "builder": builder,
                "phone": mask_phone(submission.phone),
                "email": mask_email(submission.email),
            },
        )
        return Accepted(
            accepted_id,
            duplicate=duplicate,
            redelivered=redelivered,
            redirect_to=redirect_to,
            captcha_unavailable=captcha_unavailable,
            limits_unavailable=limits_unavailable,
        )

    def _limit(
        self, kind: str, value: str | None, submission: Submission, record: str, fingerprint: str, captcha: str | None
    ) -> tuple[Accepted | None, bool, bool]:
        """Count the post against one limit: (the held answer or None, a repeat of accepted content over the limit,
        the counter could not be read). A repeat is answered with the accepted post (its token was spent on that).
        ``captcha``: what the held copy says of its token (``not checked``, ``passed``, ``unavailable``; None: no
        captcha applies), so that whoever releases it knows whether a bot's junk token may be in it."""
        if self.limiter is None or not value:
            return None, False, False
        try:
            over = self.limiter.over_limit({kind: value})
        except (ClientError, BotoCoreError) as error:
            # A defence must not turn real leads away: a counter that cannot be read lets the post pass (the claim
            # still answers 503 when DynamoDB is down for it too), logged and counted.
            logger.error("rate limits not counted; the post passes", extra={"error": type(error).__name__})
            return None, False, True
        if not over:
            return None, False, False
        if self._accepted_before(fingerprint):
            return None, True, False
        held = self._hold(submission, record, over, f"more than the {over} limit in the window", captcha)
        return replace(held, retry_after=self.limiter.seconds_left()), False, False

    def _accepted_before(self, fingerprint: str) -> bool:
        """This content was accepted within the double-submit window: the post is a retry of it (its answer was
        lost, a 503 after the captcha passed, a double click), not a new lead. Its one-time captcha token is spent
        and it counts against the limits again, but holding it would answer «solve the captcha again» or 429 for a
        lead already stored, and leave a copy that ``release-held`` would turn into a second lead; accepting it
        answers with the first submission and queues nothing new. Asked only when a post would be held."""
        if self.claims is None:
            return False
        first = self.claims.claimed(fingerprint)
        if first:
            logger.info("a held post repeats an accepted one: answered as a double submission", extra={"first": first})
        return first is not None

    def _hold(
        self, submission: Submission, record: str, reason: str, detail: str, captcha: str | None = None
    ) -> Accepted:
        """Keep a post that a limit or the captcha stopped, with the reason, where ``release-held`` finds it; it is
        not queued, so it costs the portal nothing. Storage errors propagate (503: the sender retries)."""
        kept = json.loads(record)
        kept["held"] = {"reason": reason, "detail": detail}
        if captcha:
            kept["held"]["captcha"] = captcha
        self.raw_store.put(held_key(submission), json.dumps(kept, ensure_ascii=False).encode())
        logger.warning(
            "submission held",
            extra={
                "submission_id": submission.submission_id,
                "form_id": submission.form_id,
                "reason": reason,
                "detail": detail,
                "phone": mask_phone(submission.phone),
                "email": mask_email(submission.email),
            },
        )
        return Accepted(submission.submission_id, held=reason)

    def _accept_once(self, request: dict[str, Any]) -> dict[str, Any]:
        """Store and queue the submission once per content within the window; a repeat is answered with the
        submission id its content was first accepted under. Without claims (tests' stores) every post is stored."""
        submission = Submission.from_message(request["message"])
        message, raw, fingerprint = request["message"], request["raw"], request["fingerprint"]
        if self.claims is None:
            return self._store_and_enqueue(submission, message, raw)
        claim = self.claims.claim(fingerprint, submission.submission_id, submission.received_at.isoformat())
        if claim.completed:  # a double submission: the first one is queued
            # The same submission id: the builder delivers the post it delivered before (Tilda's retry of a tranid),
            # not a second send of the form; counted apart, so that accepted counts distinct submissions.
            redelivered = claim.submission_id == submission.submission_id
            return {"submission_id": claim.submission_id, "redelivered": redelivered}
        if claim.submission_id != submission.submission_id:
            # Claimed by an earlier attempt that did not finish (or by a twin storing it right now), which may have
            # queued it: store that submission again, under its id and arrival time (the queue drops the repeat).
            record = json.loads(raw)
            submission, message = as_claimed(submission, claim, record)
            raw = json.dumps(record, ensure_ascii=False)
        result = self._store_and_enqueue(submission, message, raw)
        try:
            self.claims.complete(fingerprint, submission.submission_id)
        except Exception:
            # The raw copy and the message are stored; only the mark failed. The submission is durable: say so (a
            # 503 would make the site post again), and a retry still finds the claim and stores the same one.
            logger.warning("the claim not marked completed after the submission was stored", exc_info=True)
        return result

    def _store_and_enqueue(self, submission: Submission, message: dict[str, Any], raw: str) -> dict[str, Any]:
        # The raw copy travels inside the message, and the writer puts it under raw/forms/ before anything else: the
        # message is as durable as an S3 object (and ends in the DLQ, copy included, if the writer never manages),
        # and the HTTP path builds no S3 client. A copy too large to travel (a builder's long post) is put first.
        with_copy = {**message, RAW_COPY: raw}
        if len(message_body(with_copy).encode()) <= MESSAGE_MAX_BYTES:
            message = with_copy
        else:
            self.raw_store.put(submission.raw_key or forms.raw_key(submission), raw.encode())
        # The group id shows in consoles and the DLQ: a keyed hash, never one anyone can reverse from a phone book.
        group_id = person_key(submission.identity(), self.settings.person_key_secret)
        try:
            self.queue.send(message, group_id=group_id, deduplication_id=submission.submission_id)
        except Exception:
            if RAW_COPY in message:  # the sender is told to retry; the copy is kept for a human all the same
                self._keep_unqueued(submission.raw_key or forms.raw_key(submission), raw)
            raise
        return {"submission_id": submission.submission_id}

    def _keep_unqueued(self, key: str, raw: str) -> None:
        """The raw copy of a post the queue refused (the answer is 503), where it would have been put first."""
        try:
            self.raw_store.put(key, raw.encode())
        except Exception:
            logger.warning("could not keep the raw copy of an unqueued submission", exc_info=True)

    def _keep_rejected(
        self, submission_id: str, received_at: datetime, body: bytes, content_type: str | None, rejected: Exception
    ) -> None:
        """Keep what we refused for a while: if our validation is ever wrong, the lead can still be recovered."""
        day = received_at.strftime("%Y-%m-%d")
        try:
            self.raw_store.put(f"raw/rejected/date={day}/{submission_id}.bin", body, content_type or "text/plain")
        except Exception:  # the sender still gets the 4xx that explains what to fix
            logger.warning("could not keep a rejected submission", exc_info=True)
        logger.info("submission rejected", extra={"reason": str(rejected)})


HELD_PREFIX = "raw/held/"


def as_claimed(submission: Submission, claim: Claim, record: dict[str, Any]) -> tuple[Submission, dict[str, Any]]:
    """The submission under the id and arrival time of the attempt whose claim it found (and that attempt's raw key),
    with its message; ``record``, the raw copy to store, is updated to match. Storing it again is harmless: the queue
    drops the repeat, and the writer finds the lead by its id."""
    submission = replace(
        submission,
        submission_id=claim.submission_id,
        received_at=datetime.fromisoformat(claim.received_at),
        raw_key=None,
    )
    submission = replace(submission, raw_key=forms.raw_key(submission))
    message = submission.to_message()
    record.update(submission_id=claim.submission_id, received_at=claim.received_at, message=message)
    return submission, message


def content_fingerprint(submission: Submission, builder: str | None) -> str:
    """What makes two posts one submission (the claim's key): the content alone, without the builder's id of this
    post: Tilda gives a form sent twice two tranids, and that is a double submission all the same. ``release-held``
    keys a held copy's claim with it too (the copy's ``builder``)."""
    delivery_fields = hooks.DELIVERY_ID_FIELDS if builder else frozenset()
    content = {name: value for name, value in submission.extra.items() if name not in delivery_fields}
    return replace(submission, extra=content).fingerprint()


def held_key(submission: Submission) -> str:
    """Where a held post is kept: ``raw/held/date=<day>/form=<form>/<submission id>.json`` (the raw copy's layout)."""
    return HELD_PREFIX + forms.raw_key(submission).removeprefix("raw/forms/")


def capture_from_settings(settings: Settings) -> Capture:
    settings.require("data_bucket", "writes_queue_url", "idempotency_table", "person_key_secret")
    claims = SubmissionClaims(
        settings.idempotency_table or "", settings.person_key_secret or "", settings.double_submit_window_seconds
    )
    limiter = RateLimiter(
        settings.idempotency_table or "",
        settings.person_key_secret or "",
        settings.rate_limit_window_seconds,
        {"ip": settings.rate_limit_per_ip, "contact": settings.rate_limit_per_contact},
    )
    captcha = CaptchaVerifier(
        smartcaptcha_key=settings.smartcaptcha_server_key,
        smartcaptcha_url=settings.smartcaptcha_validate_url,
        turnstile_key=settings.turnstile_secret_key,
        turnstile_url=settings.turnstile_verify_url,
    )
    return Capture(
        settings,
        RawStore(settings.data_bucket),
        WritesQueue(settings.writes_queue_url),
        claims=claims,
        limiter=limiter,
        captcha=captcha,
    )
