"""Keys derived from a person's phone or e-mail, for anything that leaves the function: FIFO message group ids,
lock or index keys, the person key of journey exports and the CRM snapshot.

A plain hash of a phone is no protection: the whole Russian mobile range (+79…, 10^9 numbers) hashes in minutes.
So every such key is an HMAC-SHA256 keyed with ``PERSON_KEY_SECRET`` from the stack's secret (template.yaml
generates it on deploy). Rotating that secret changes every key: FIFO groups simply start afresh, but any stored
index keyed this way must be rebuilt (``python -m throughline journey-index``).
"""

from __future__ import annotations

import hashlib
import hmac

from throughline.config import ConfigError


def person_key(contact: str, secret: str | None) -> str:
    """The key of the person behind ``contact`` (a normalized phone or e-mail; see ``throughline.contacts``):
    64 hex characters, the same for the same contact and secret, useless without the secret."""
    if not secret:
        raise ConfigError("missing configuration: PERSON_KEY_SECRET (in the person-key secret, PersonKeySecretArn)")
    return hmac.new(secret.encode(), contact.encode(), hashlib.sha256).hexdigest()


def first_contact(phones: list[str], emails: list[str]) -> str | None:
    """The contact a person is keyed by: the first phone, else the first e-mail."""
    return (phones or emails or [None])[0]
