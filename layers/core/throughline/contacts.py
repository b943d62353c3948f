"""Phone numbers and e-mail addresses: one canonical form for matching, and masks for logs.

Bitrix24 compares phones as whole strings (``crm.duplicate.findbycomm``), so the same person typed two ways would be
two people. Everything we write is therefore E.164 (``8 916 123-45-67`` → ``+79161234567``) and one form of each
e-mail address: NFKC (full-width ``ｅxample`` is ``example``), lower case, and the domain in Unicode (``пример.рф``;
a punycode ``xn--e1afmkfd.xn--p1ai`` is decoded to it), because that is what people type and managers read.
"""

from __future__ import annotations

import re
import unicodedata
from types import ModuleType

_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[^@\s<>(),;:\"\[\]]+\.[^@\s<>(),;:\"\[\]]{2,}$")


# Unicode categories never part of an address: control, format (zero-width, soft hyphen, bidi), surrogate, private,
# unassigned.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


# A Russian mobile number spelled plainly: +7, 8 or nothing, then 9XX (in brackets or not) and seven digits in groups
# of 3-2-2, a single space or hyphen between the parts. The ones from 90, 91, 92 and 94-99 are all valid mobiles in
# libphonenumber's plan for Russia (its mobile pattern begins ``9(?:[0-24-9]\d{4}|3…``: only the 93X ranges have
# gaps) and no other Russian number type begins with 9, so these are read here: most phones a Russian site's forms
# receive, without importing phonenumbers (~14 ms of capture_form's cold start, issue 15 #9). Anything else is
# phonenumbers' to read. tests/unit/test_contacts.py checks both claims against the installed plan and compares the
# two readers on every spelling this admits and many it does not.
_RU_MOBILE = re.compile(
    r"(?:\+7|8)?[ -]?(?:\((9[0-24-9][0-9])\)|(9[0-24-9][0-9]))[ -]?([0-9]{3})[ -]?([0-9]{2})[ -]?([0-9]{2})", re.ASCII
)


class InvalidContact(ValueError):
    """A phone or e-mail that cannot be normalized; the message is safe to show to the sender."""


def normalize_phone(raw: str, default_region: str = "RU") -> str:
    """Return the number in E.164; national numbers are read in ``default_region``.

    Russian habits are handled: a leading 8 is the trunk prefix (8 916 … → +7 916 …), and a ten-digit number
    starting with 9 is a mobile number without its prefix.
    """
    text = raw.strip()
    plain = _RU_MOBILE.fullmatch(text) if default_region == "RU" else None
    if plain:
        return "+7" + "".join(group for group in plain.groups() if group)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 5:
        raise InvalidContact("not a phone number")
    if default_region == "RU" and not text.startswith("+") and len(digits) == 10 and digits[0] == "9":
        text = "+7" + digits
    phonenumbers = _phonenumbers()
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidContact("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        # Stricter than a length check: a Russian mobile typed one digit short is caught here, not in Bitrix24.
        raise InvalidContact("not a valid phone number (check the digits)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    """One canonical form per address (see the module's docstring); deliverability is not our business.

    Invisible (format) and control characters are refused, never silently dropped: ``ivan@example.ru`` with a
    zero-width space, a soft hyphen or a right-to-left override is a typo or a trick, and either way the sender
    should see it rather than become a second person.
    """
    email = unicodedata.normalize("NFKC", raw).strip()
    if any(unicodedata.category(char) in _INVISIBLE for char in email):
        raise InvalidContact("contains invisible or control characters")
    if "\ufffd" in email:
        # U+FFFD stands for text lost on the way (a lone surrogate made storable, ``throughline.text``): the address
        # is unknown, and keying it would make the journey (which cleans first) disagree with the CRM snapshot (which
        # keys the raw text) and make addresses cut differently one person.
        raise InvalidContact("contains a character lost in transmission (U+FFFD)")
    local, _, domain = email.lower().rpartition("@")
    try:
        # IDNA 2003 (the stdlib codec): a Unicode and a punycode spelling of one domain give one text.
        domain = domain.encode("idna").decode("idna") if domain else domain
    except UnicodeError:
        raise InvalidContact("not an e-mail address (the domain is not a valid name)") from None
    email = f"{local}@{domain}"
    if len(email) > 254 or not _EMAIL.match(email) or any(not label for label in domain.split(".")):
        raise InvalidContact("not an e-mail address")
    return email


MASK = "*******"  # always seven: a mask shows neither the digits nor how many there were


def mask_phone(phone: str | None) -> str | None:
    """``+79161234567`` → ``+7*******67``: the country code and the last two digits, enough to tell records apart in
    logs, not enough to call or to narrow a number down to a region or an operator. A number without ``+`` shows
    only its last two digits; anything shorter than five digits is all stars."""
    if not phone:
        return phone
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 5:
        return "*" * len(phone)
    country = ""
    if phone.lstrip().startswith("+") and len(digits) == 11 and digits[0] == "7":
        country = "+7"  # 7 is a country code of one digit: phonenumbers reads no other from "+7" and ten digits
    elif phone.lstrip().startswith("+"):
        phonenumbers = _phonenumbers()
        try:
            country = str(phonenumbers.parse("+" + digits, None).country_code)
        except phonenumbers.NumberParseException:
            country = ""
        country = "+" + (country if digits.startswith(country) else "")
    return country + MASK + digits[-2:]


def mask_email(email: str | None) -> str | None:
    """``ivan.petrov@example.ru`` → ``i***@example.ru``."""
    if not email:
        return email
    local, _, domain = email.partition("@")
    return (local[:1] + "***@" + domain) if domain else "***"


def _phonenumbers() -> ModuleType:
    """The phonenumbers package, imported on first use: ~15 ms of a cold start (its package imports every module
    and registers every region), which an e-mail-only form or a function that only masks never pays."""
    import phonenumbers

    return phonenumbers
