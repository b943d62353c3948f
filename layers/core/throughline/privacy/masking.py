"""Phones and e-mail addresses inside free text, masked before the text is stored or exported.

Real portals put contacts into what becomes a touch's ``detail``: an activity's subject («Звонок +7 916 123-45-67»),
a lead's title or source description. The journey store and its exports need the kind of touch, not the contact, so
``mask_contacts`` replaces every phone-like run of digits (10 to 15 digits, with the separators people type) by
``contacts.mask_phone`` of it and every address by ``contacts.mask_email``. Dates and ISO times inside such a run
are left alone; a 10-digit order number is masked too (better one number too many than one phone too few).
"""

from __future__ import annotations

import re

from throughline.contacts import mask_email, mask_phone

# Starts only where a run of address characters starts: otherwise a long run without "@" is scanned again from each
# of its characters (quadratic: 20 000 letters took 2.7 s).
_EMAIL = re.compile(r"(?<![\w.+%-])[\w.+%-]{1,64}@[\w-]+(?:\.[\w-]+)+")
# A run starting with an optional + and a digit, made of digits and the separators of typed numbers, ending in a digit.
_PHONE = re.compile(r"(?<![\w+*])\+?\d[\d \t().\-\u00a0\u2010-\u2015]{8,24}\d(?![\w*])")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{2}\.\d{2}\.\d{4}|\d{2}:\d{2}")


def mask_contacts(text: str | None) -> str | None:
    """``text`` with phones and e-mail addresses masked (``+7*******67``, ``i***@example.ru``)."""
    if not text:
        return text
    text = _EMAIL.sub(lambda match: mask_email(match.group()) or "", text)
    return _PHONE.sub(_mask_phone, text)


def _mask_phone(match: re.Match[str]) -> str:
    found = match.group()
    digits = re.sub(r"\D", "", found)
    if not 10 <= len(digits) <= 15 or _DATE.search(found):
        return found
    if not found.startswith("+"):
        # Russian habits: 8 916 … and 7 916 … are +7 916 …, a bare 916 … is a mobile without its prefix.
        if len(digits) == 11 and digits[0] in "78":
            digits = "7" + digits[1:]
        elif len(digits) == 10 and digits[0] == "9":
            digits = "7" + digits
        else:
            return mask_phone(digits) or ""
    return mask_phone("+" + digits) or ""
