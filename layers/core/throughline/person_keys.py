"""Person keys: a stable, non-reversible id for one person, derived from their first normalized contact.

An HMAC-SHA256 (hex, 40 characters) of the E.164 phone, else the lower-cased e-mail, keyed with ``PERSON_KEY_SECRET``
from the stack's secret: the same person gets the same key in every export, and nobody without the secret can tell
whose key it is (a plain hash of a phone number is reversed by trying every number).
"""

from __future__ import annotations

import hashlib
import hmac

KEY_LENGTH = 40


def person_key(contact: str, secret: str) -> str:
    """The key of one normalized contact (``+79161234567`` or ``ivan@example.ru``)."""
    if not secret:
        raise ValueError("PERSON_KEY_SECRET is not set")
    digest = hmac.new(secret.encode("utf-8"), contact.strip().lower().encode("utf-8"), hashlib.sha256)
    return digest.hexdigest()[:KEY_LENGTH]


def first_contact(phones: list[str], emails: list[str]) -> str | None:
    """The contact a person is keyed by: the first phone, else the first e-mail."""
    return (phones or emails or [None])[0]
