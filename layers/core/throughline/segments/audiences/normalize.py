"""Normalizing a contact's phones and e-mails before hashing, as the ad platforms document it.

Both Yandex Audiences (yandex.com/support/audience/file) and VK Ads / myTarget (target.my.com/help/advertisers/
sourceuserlists) take a phone as the digits of the full international number — country code first, no ``+``, no
spaces or other characters (``79995551111``) — and an e-mail in lower case (``mail@yandex.ru``, never
``Mail@yandex.ru``). Portals in Russia mostly hold Russian numbers typed as people type them: ``8 (912) …`` with the
trunk prefix 8, or ten digits without any prefix; both become ``7…``. A number that cannot be a full international
number (fewer than 11 or more than 15 digits — E.164's maximum —, a leading 0, a Russian number of the wrong length)
is dropped, never guessed.
"""

from __future__ import annotations

import re

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def phone_digits(raw: str) -> str | None:
    """The E.164 digits of ``raw`` (no ``+``), or None when it is no usable number."""
    text = str(raw or "").strip()
    digits = "".join(char for char in text if char.isdigit())
    international = text.startswith("+") or text.startswith("00")
    if text.startswith("00"):
        digits = digits[2:]
    if not international:
        if len(digits) == 11 and digits.startswith("8"):
            digits = "7" + digits[1:]  # the Russian trunk prefix
        elif len(digits) == 10 and digits.startswith("9"):
            digits = "7" + digits  # a Russian mobile number written without a prefix
        elif digits.startswith("8"):
            return None  # the trunk prefix with a wrong length: no country code to read
    if not 11 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    if digits.startswith("7") and len(digits) != 11:
        return None
    return digits


def email_address(raw: str) -> str | None:
    """``raw`` trimmed and lower-cased, or None when it is no address."""
    text = str(raw or "").strip().lower()
    return text if _EMAIL.match(text) else None


def mask(value: str) -> str:
    """For logs: a phone or e-mail with everything but its last two characters hidden."""
    return "*" * max(0, len(value) - 2) + value[-2:]
