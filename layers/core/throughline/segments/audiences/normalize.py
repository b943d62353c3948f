"""Normalizing a contact's phones and e-mails before hashing, as the ad platforms document it.

Both Yandex Audiences (yandex.com/support/audience/file) and VK Ads / myTarget (target.my.com/help/advertisers/
sourceuserlists) take a phone as the digits of the full international number — country code first, no ``+``, no
spaces or other characters (``79995551111``) — and an e-mail in lower case (``mail@yandex.ru``, never
``Mail@yandex.ru``). Portals in Russia mostly hold Russian numbers typed as people type them: ``8 (912) …`` with the
trunk prefix 8, or ten digits without any prefix; both become ``7…``. A number that is not valid in its country's
numbering plan (a digit short, an unassigned country code) is dropped, never guessed.
"""

from __future__ import annotations

import re

from throughline.contacts import InvalidContact, normalize_phone

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def phone_digits(raw: str, region: str = "RU") -> str | None:
    """The E.164 digits of ``raw`` (no ``+``), or None when it is no valid number.

    The project's one phone reader (``throughline.contacts.normalize_phone``: libphonenumber's numbering plans and
    validity, the Russian habits, an extension such as ``доб. 123`` or ``ext. 5`` left out, any script's digits read
    as digits), so an audience matches what the forms and Google Customer Match read. ``00`` before the country code
    is read as ``+`` (the international prefix of most of the world; Russia's own is 810).
    """
    text = str(raw or "").strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = normalize_phone(text, region)
    except InvalidContact:
        return None
    return number.removeprefix("+")


def email_address(raw: str) -> str | None:
    """``raw`` trimmed and lower-cased, or None when it is no address."""
    text = str(raw or "").strip().lower()
    return text if _EMAIL.match(text) else None


def mask(value: str) -> str:
    """For logs: a phone or e-mail with everything but its last two characters hidden."""
    return "*" * max(0, len(value) - 2) + value[-2:]
