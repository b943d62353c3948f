"""Unit tests of throughline.contacts: E.164 phones, lower-case e-mail, masks."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throughline import contacts
from throughline.contacts import InvalidContact, mask_email, mask_phone, normalize_email, normalize_phone


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Russian habits, all one mobile number.
        ("8 916 123-45-67", "+79161234567"),
        ("+7 (916) 123-45-67", "+79161234567"),
        ("+7 916 123 45 67", "+79161234567"),
        ("9161234567", "+79161234567"),
        ("916 123 45 67", "+79161234567"),
        ("79161234567", "+79161234567"),
        ("89161234567", "+79161234567"),
        ("+79161234567", "+79161234567"),
        ("  8(916)1234567  ", "+79161234567"),
        ("8.916.123.45.67", "+79161234567"),
        # Toll-free and landlines.
        ("8-800-555-35-35", "+78005553535"),
        ("8 800 555 3535", "+78005553535"),
        ("+7 (495) 123-45-67", "+74951234567"),
        ("8 (812) 123-45-67", "+78121234567"),
        # Extensions are dropped: Bitrix24 compares the number itself.
        ("8 (495) 123-45-67 доб. 123", "+74951234567"),
        ("+7 916 123-45-67 ext. 12", "+79161234567"),
        ("+7 495 123-45-67 #12", "+74951234567"),
        # Foreign numbers.
        ("+1 650 253 0000", "+16502530000"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+49 30 123456", "+4930123456"),
        ("+375 29 123-45-67", "+375291234567"),
        ("+380 44 123 4567", "+380441234567"),
        ("+7 701 123 45 67", "+77011234567"),  # Kazakhstan shares +7
    ],
)
def test_normalize_phone(raw, expected):
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("030 123456", "DE", "+4930123456"),
        ("(650) 253-0000", "US", "+16502530000"),
        ("+79161234567", "DE", "+79161234567"),
    ],
)
def test_normalize_phone_in_another_region(raw, region, expected):
    assert normalize_phone(raw, region) == expected


def test_ten_digits_starting_with_9_are_only_special_in_russia():
    # In the US a ten-digit number starting with 9 is a national number of its own.
    assert normalize_phone("6502530000", "US") == "+16502530000"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "not a phone number"),
        ("   ", "not a phone number"),
        ("abc", "not a phone number"),
        ("позвоните мне", "not a phone number"),
        ("1234", "not a phone number"),
        ("+7 91", "not a phone number"),
        ("12345", "not a valid phone number (check the digits)"),
        ("916-123-45", "not a valid phone number (check the digits)"),
        ("8 916 123-45-678", "not a valid phone number (check the digits)"),
        ("+7 916 123 45 67 89 01 23", "not a valid phone number (check the digits)"),
        ("+7 916 123 45 6", "not a valid phone number (check the digits)"),
        ("+44 20 7946 0958 1234", "not a valid phone number (check the digits)"),
        ("+44 20 7946 0958 1234 5678", "not a phone number"),  # too long even to parse
    ],
)
def test_bad_phones_rejected(raw, message):
    with pytest.raises(InvalidContact) as error:
        normalize_phone(raw)
    assert str(error.value) == message


def test_russian_mobile_one_digit_short_with_trunk_prefix_rejected():
    with pytest.raises(InvalidContact):
        normalize_phone("8 916 123-45-6")


def test_invalid_contact_is_a_value_error():
    assert issubclass(InvalidContact, ValueError)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ivan.Petrov@Example.RU", "ivan.petrov@example.ru"),
        ("  info@firma.ru  ", "info@firma.ru"),
        ("USER+tag@Mail.Ru", "user+tag@mail.ru"),
        ("a@b.co", "a@b.co"),
        ("ИВАН@ПОЧТА.РФ", "иван@почта.рф"),
        ("o'brien@example.com", "o'brien@example.com"),
    ],
)
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "ivan",
        "ivan@",
        "@example.ru",
        "ivan@example",
        "ivan@example.r",
        "ivan@@example.ru",
        "iv an@example.ru",
        "ivan@exa mple.ru",
        "<ivan@example.ru>",
        "ivan@example.ru, petr@example.ru",
        "ivan@example.ru;",
        "Ivan Petrov <ivan@example.ru>",
        "a" * 250 + "@x.ru",
    ],
)
def test_bad_emails_rejected(raw):
    with pytest.raises(InvalidContact) as error:
        normalize_email(raw)
    assert str(error.value) == "not an e-mail address"


def test_email_length_limit_is_254():
    assert normalize_email("a" * 248 + "@x.ru") == "a" * 248 + "@x.ru"  # 254 characters


def test_email_with_consecutive_dots_in_domain_rejected():
    with pytest.raises(InvalidContact):
        normalize_email("ivan@mail..ru")


@pytest.mark.parametrize(
    ("phone", "expected"),
    [
        ("+79161234567", "+7*******67"),
        ("+442079460958", "+44*******58"),
        ("+375291234567", "+375*******67"),
        ("+16502530000", "+1*******00"),
        ("89161234567", "*******67"),
        ("+7916", "*****"),
        ("+79", "***"),
        (None, None),
        ("", ""),
    ],
)
def test_mask_phone(phone, expected):
    assert mask_phone(phone) == expected


@pytest.mark.parametrize("phone", ["+79161234567", "+16502530000", "+4930123456", "+375291234567", "+7916123"])
def test_mask_phone_shows_at_most_the_country_code_and_the_last_two_digits(phone):
    masked = mask_phone(phone)
    country = {"+7": "7", "+1": "1", "+4": "49", "+3": "375"}[phone[:2]]
    assert masked == f"+{country}*******{phone[-2:]}"
    shown = [char for char in masked if char.isdigit()]
    assert len(shown) == len(country) + 2  # +7950*****99 showed 6 of 11 digits; now 3


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("ivan.petrov@example.ru", "i***@example.ru"),
        ("a@b.ru", "a***@b.ru"),
        ("no-at-sign", "***"),
        (None, None),
        ("", ""),
    ],
)
def test_mask_email(email, expected):
    assert mask_email(email) == expected


@pytest.mark.parametrize("email", ["ivan.petrov@example.ru", "ab@example.ru", "no-at-sign"])
def test_mask_email_never_reveals_the_address(email):
    masked = mask_email(email)
    assert masked != email
    assert "***" in masked
    assert email.partition("@")[0] not in masked


# -- one person, one e-mail address (issue 5, item 10) --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "ivan@example.ru",
        "IVAN@EXAMPLE.RU",
        "ｉｖａｎ@example.ru",  # full-width letters (a Japanese or Chinese keyboard layout)
        "ivan@ｅxample.ru",
        "ivan＠example.ru",  # a full-width @
        "ivan@example．ru",  # a full-width dot
        "ivan@ＥＸＡＭＰＬＥ.ＲＵ",
        "ⅰvan@example.ru",  # a compatibility character (ROMAN NUMERAL ONE)
    ],
)
def test_compatibility_spellings_are_one_address(raw):
    assert normalize_email(raw) == "ivan@example.ru"


@pytest.mark.parametrize(
    "raw",
    [
        "ivan@пример.рф",
        "IVAN@ПРИМЕР.РФ",
        "ivan@xn--e1afmkfd.xn--p1ai",  # the same domain in punycode
        "ivan@XN--E1AFMKFD.XN--P1AI",
    ],
)
def test_an_international_domain_is_stored_in_unicode_whatever_the_spelling(raw):
    assert normalize_email(raw) == "ivan@пример.рф"


@pytest.mark.parametrize(
    "invisible",
    [
        "\u200b",  # zero-width space
        "\u200c",  # zero-width non-joiner
        "\u200d",  # zero-width joiner
        "\u2060",  # word joiner
        "\ufeff",  # byte order mark
        "\u00ad",  # soft hyphen
        "\u200e",  # left-to-right mark
        "\u202e",  # right-to-left override
        "\u2066",  # left-to-right isolate
        "\x00",  # NUL
        "\x1b",  # ESC
        "\x7f",  # DEL
        "\x85",  # a C1 control (NEL)
        "\ud83d",  # a lone surrogate
        "\ue000",  # private use
        "\U000e0001",  # a language tag
    ],
)
@pytest.mark.parametrize("where", ["start", "local", "domain", "end"])
def test_invisible_and_control_characters_are_refused_with_a_clear_reason(invisible, where):
    local, domain = "ivan", "example.ru"
    raw = {
        "start": invisible + f"{local}@{domain}",
        "local": f"iv{invisible}an@{domain}",
        "domain": f"{local}@exa{invisible}mple.ru",
        "end": f"{local}@{domain}" + invisible,
    }[where]
    if where in ("start", "end") and invisible.isspace():
        assert normalize_email(raw) == "ivan@example.ru"  # whitespace around a value is trimmed: the same person
        return
    with pytest.raises(InvalidContact) as error:
        normalize_email(raw)
    assert str(error.value) == "contains invisible or control characters"


@pytest.mark.parametrize("raw", ["ivan@xn--.ru", "ivan@" + "a" * 64 + ".ru", "ivan@xn--zz-.ru"])
def test_a_domain_idna_refuses_is_not_an_address(raw):
    with pytest.raises(InvalidContact, match="not an e-mail address"):
        normalize_email(raw)


# A plain Russian mobile number is read without phonenumbers (issue 15 #9): the reader's two claims against the
# installed numbering plan, then the two readers compared.
FAST_CODES = [f"9{second}" for second in "01245678 9".replace(" ", "")]  # 90-92, 94-99: the fast reader's


def _slow(raw: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """What phonenumbers answers for ``raw`` (the fast reader switched off), or the error's message."""
    with monkeypatch.context() as patched:
        patched.setattr(contacts, "_RU_MOBILE", re.compile(r"(?!)"))
        try:
            return normalize_phone(raw, "RU")
        except InvalidContact as error:
            return f"refused: {error}"


def test_every_number_from_90_to_92_and_94_to_99_is_a_valid_russian_mobile_in_the_installed_plan():
    from phonenumbers.data.region_RU import PHONE_METADATA_RU as plan

    assert plan.mobile.national_number_pattern.startswith(r"9(?:[0-24-9]\d{4}|3")  # the gaps are all in 93X
    others = [plan.fixed_line, plan.toll_free, plan.premium_rate, plan.shared_cost, plan.personal_number, plan.voip]
    others += [plan.pager, plan.uan, plan.voicemail]
    rnd = random.Random(7)
    for code in FAST_CODES:
        for third in range(10):
            for _ in range(20):
                national = f"{code}{third}{rnd.randrange(10**7):07d}"
                number = phonenumbers.parse("+7" + national, None)
                assert phonenumbers.is_valid_number(number), national
                assert phonenumbers.region_code_for_number(number) == "RU"
                assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
                assert not any(desc and re.fullmatch(desc.national_number_pattern, national) for desc in others)


def _spellings(rnd: random.Random, count: int) -> list[str]:
    """Ways people type a Russian number: the fast reader's shapes and near misses (other separators, 93X, a bare 7,
    unbalanced brackets, a digit too many or too few, other digits than ASCII ones)."""
    prefixes = ["", "+7", "8", "+7 ", "8 ", "+7-", "8-", "7", "7 ", "+8", "+ 7", "+7  ", "-", "+", "++7", "8(", "+7("]
    codes = [*FAST_CODES, "93", "80", "49", "81", "70"]
    separators = ["", " ", "-", "  ", ".", "--", " - ", "\t", "\u00a0", "/"]
    spellings = []
    for index in range(count):
        if index % 2:  # every other one typed plainly: the fast reader's shapes (its 93X excepted)
            code = rnd.choice([*FAST_CODES, "93"]) + str(rnd.randrange(10))
            parts = [rnd.choice(["", "+7", "8"]), rnd.choice(["({})", "{}"]).format(code), f"{rnd.randrange(1000):03d}"]
            parts += [f"{rnd.randrange(100):02d}", f"{rnd.randrange(100):02d}"]
            spellings.append("".join(part + rnd.choice(["", " ", "-"]) for part in parts).rstrip(" -"))
            continue
        code = rnd.choice(codes) + str(rnd.randrange(10))
        brackets = rnd.choice(["({})", "{}", "{}", "({}", "{})", "(({}))"]).format(code)
        groups = [f"{rnd.randrange(1000):03d}", f"{rnd.randrange(100):02d}", f"{rnd.randrange(100):02d}"]
        if rnd.random() < 0.1:
            groups[rnd.randrange(3)] += str(rnd.randrange(10))
        if rnd.random() < 0.1:
            groups[rnd.randrange(3)] = groups[0][:-1] or "1"
        parts = [rnd.choice(prefixes), brackets, *groups]
        text = "".join(part + rnd.choice(separators[:3] if rnd.random() < 0.6 else separators) for part in parts)
        if rnd.random() < 0.05:
            text = text.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))  # Arabic-Indic digits
        spellings.append(rnd.choice(["", " ", "  "]) + text.rstrip("-/ "))
    return spellings


def test_the_fast_reader_answers_what_phonenumbers_answers(monkeypatch):
    fast = 0
    for raw in _spellings(random.Random(11), 4000):
        fast += bool(contacts._RU_MOBILE.fullmatch(raw.strip()))
        try:
            ours = normalize_phone(raw, "RU")
        except InvalidContact as error:
            ours = f"refused: {error}"
        assert ours == _slow(raw, monkeypatch), raw
    assert 1500 < fast < 2000  # the plain half (less its 93X) and a few near misses that are plain after all


@given(st.from_regex(contacts._RU_MOBILE, fullmatch=True))
@settings(max_examples=300, deadline=None)
def test_every_spelling_the_fast_reader_takes_is_the_number_phonenumbers_reads(raw):
    expected = phonenumbers.format_number(phonenumbers.parse(raw, "RU"), phonenumbers.PhoneNumberFormat.E164)
    assert normalize_phone(raw, "RU") == normalize_phone(" " + raw + " ") == expected


def test_the_fast_reader_is_for_russia_only():
    assert normalize_phone("916 123 45 67", "RU") == "+79161234567"
    with pytest.raises(InvalidContact):  # read in Kazakhstan's plan, as before
        normalize_phone("8 916 123 45 67 89", "KZ")


def test_the_mask_of_a_plus_seven_number_is_the_one_phonenumbers_gives():
    rnd = random.Random(3)
    for _ in range(500):
        digits = "7" + "".join(str(rnd.randrange(10)) for _ in range(10))
        spelled = "+" + " ".join([digits[:1], digits[1:4], digits[4:7], digits[7:9], digits[9:]])
        country = phonenumbers.parse("+" + digits, None).country_code
        assert mask_phone(spelled) == mask_phone("+" + digits) == f"+{country}*******{digits[-2:]}"


def test_a_plain_russian_mobile_is_read_and_masked_without_importing_phonenumbers():
    probe = (
        "import sys; from throughline.contacts import normalize_phone, mask_phone; "
        "assert normalize_phone('+7 (916) 123-45-67') == '+79161234567'; "
        "assert mask_phone('+79161234567') == '+7*******67'; print('phonenumbers' in sys.modules); "
        "normalize_phone('+44 20 7946 0958'); print('phonenumbers' in sys.modules)"
    )
    layer = {**os.environ, "PYTHONPATH": str(Path(contacts.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=layer)
    assert out.stdout.split() == ["False", "True"]


def _answer(raw: str, region: str, *, fast: bool) -> str:
    """normalize_phone's answer (or refusal) with the fast reader on or off (no fixture: hypothesis reruns this)."""
    kept = contacts._RU_MOBILE
    contacts._RU_MOBILE = kept if fast else re.compile(r"(?!)")
    try:
        return normalize_phone(raw, region)
    except InvalidContact as error:
        return f"refused: {error}"
    finally:
        contacts._RU_MOBILE = kept


def _mask_by_phonenumbers(phone: str) -> str:
    """mask_phone as it was before the +7 shortcut: the country code is whatever phonenumbers reads."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) < 5:
        return "*" * len(phone)
    country = ""
    if phone.lstrip().startswith("+"):
        try:
            country = str(phonenumbers.parse("+" + digits, None).country_code)
        except phonenumbers.NumberParseException:
            country = ""
        country = "+" + (country if digits.startswith(country) else "")
    return country + "*******" + digits[-2:]


# Near misses of the fast reader's shapes, one or two at a time.
_ODD_PREFIXES = ["7", "+8", "+78", "8+7", "+ 7", "+77", "\uff0b7", "+\uff17", "\uff18", "-", "(", "+7+7", "88"]
_ODD_SEPARATORS = ["\u00a0", "\u2009", "\u3000", "\n", "\t", "  ", "--", ".", "/", "(", ")", " -", "\r"]
_ODD_BRACKETS = ["({}", "{})", "(({}))", "[{}]", "({})\n"]
_ODD_TAILS = ["\n", "x", " \u0434\u043e\u0431. 12", "#", "\n5", ";", "0", "\uff10", " 8", "\x00", "\u200b"]
_OTHER_DIGITS = ["".join(chr(zero + digit) for digit in range(10)) for zero in (0xFF10, 0x0660, 0x1D7CE)]


@given(st.data())
@settings(max_examples=1500, deadline=None)
def test_odd_spaces_digits_tails_and_regions_get_the_answers_phonenumbers_gives(data):
    """The fast reader's shapes with one or two things off: another space, a full-width digit, a line break, a tail,
    a region other than Russia. Whatever it takes, phonenumbers must read the same; the mask is the one phonenumbers
    gives."""
    draw = data.draw
    code, body = draw(st.integers(900, 999)), draw(st.integers(0, 10**7 - 1).map("{:07d}".format))
    prefix = draw(st.sampled_from(["", "+7", "8"]))
    brackets = draw(st.sampled_from(["{}", "({})"]))
    separators = draw(st.lists(st.sampled_from(["", " ", "-"]), min_size=4, max_size=4))
    tail, region = "", "RU"
    for twist in draw(st.lists(st.integers(0, 5), max_size=2)):
        if twist == 0:
            prefix = draw(st.sampled_from(_ODD_PREFIXES))
        elif twist == 1:
            separators[draw(st.integers(0, 3))] = draw(st.sampled_from(_ODD_SEPARATORS))
        elif twist == 2:
            brackets = draw(st.sampled_from(_ODD_BRACKETS))
        elif twist == 3:
            tail = draw(st.sampled_from(_ODD_TAILS))
        elif twist == 4:
            region = draw(st.sampled_from(["KZ", "BY", "US", "UA", "ru"]))
        else:  # one digit of the body in another script
            at, script = draw(st.integers(0, 6)), draw(st.sampled_from(_OTHER_DIGITS))
            body = body[:at] + script[int(body[at])] + body[at + 1 :]
    groups = [brackets.format(code), body[:3], body[3:5], body[5:]]
    raw = prefix + "".join(sep + group for sep, group in zip(separators, groups, strict=True)) + tail
    assert _answer(raw, region, fast=True) == _answer(raw, region, fast=False), (raw, region)
    assert mask_phone(raw) == _mask_by_phonenumbers(raw), raw


def test_an_e_mail_cut_in_the_middle_of_an_emoji_keys_no_person_in_the_journey_nor_the_snapshot() -> None:
    """An address whose JSON held a lone surrogate ("ivan\\ud83d@…", an emoji cut in half) is made storable (U+FFFD)
    by the events writer before it keys people, while the CRM snapshot keys the record as sent: both must find no
    person (the address is unknown), else the journey and the report disagree on who the lead is, and two addresses
    cut differently ("\\ud83d", "\\ud83c") become one person."""
    from throughline.report.crm import SnapshotOptions, _compact
    from throughline.text import storable_values
    from throughline.writer.crm_events import CrmEventWriter

    with pytest.raises(InvalidContact):
        normalize_email("ivan\ufffd@example.ru")
    for cut in ("\ud83d", "\ud83c"):
        record = {"ID": "7", "EMAIL": [{"VALUE": f"ivan{cut}@example.ru"}], "PHONE": [{"VALUE": "+7 916 123-45-67"}]}
        snapshot = _compact(record, SnapshotOptions(person_key_secret="s"))
        writer = CrmEventWriter.__new__(CrmEventWriter)
        writer.person_secret = "s"
        assert writer._contact_keys(storable_values(record)) == snapshot["PERSON_KEYS"]  # the phone's key only
        assert len(snapshot["PERSON_KEYS"]) == 1
    assert normalize_email("ivan🔥@example.ru") == "ivan🔥@example.ru"  # a whole emoji is the sender's business
