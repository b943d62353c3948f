"""Phones and e-mails inside free text (a touch's detail) are masked; dates, times and short numbers are not."""

from __future__ import annotations

import time

import pytest

from throughline.privacy.masking import mask_contacts


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Звонок +7 (916) 123-45-67", "Звонок +7*******67"),
        ("Исходящий звонок 8 916 123 45 67, перезвонить", "Исходящий звонок +7*******67, перезвонить"),
        ("тел. 89161234567 / ivan.petrov@mail.ru", "тел. +7*******67 / i***@mail.ru"),
        ("Лид с сайта: 9161234567", "Лид с сайта: +7*******67"),
        ("Письмо от Olga.K@пример.рф", "Письмо от O***@пример.рф"),
        ("UK +44 20 7946 0958", "UK +44*******58"),
        ("Встреча 2025-01-15 10:00", "Встреча 2025-01-15 10:00"),
        ("Акция 15.01.2025-16.01.2025", "Акция 15.01.2025-16.01.2025"),
        ("Заказ №1234567", "Заказ №1234567"),
        ("Звонок 06", "Звонок 06"),
        ("Заявка: форма «contact»", "Заявка: форма «contact»"),
        (None, None),
        ("", ""),
    ],
)
def test_mask_contacts(text, expected):
    assert mask_contacts(text) == expected


def test_masking_is_idempotent():
    once = mask_contacts("Звонок +7 916 123-45-67, ivan@example.ru")
    assert mask_contacts(once) == once


@pytest.mark.parametrize("text", ["a" * 65536, "a." * 32768, "+7" * 32768, "-" * 65536, "x@" + "a-" * 32768])
def test_masking_stays_linear_on_hostile_text(text):
    # A portal field is anyone's text: a quadratic scan of 20 000 letters took 2.7 s of the writer's time.
    started = time.perf_counter()
    assert mask_contacts(text) is not None
    assert time.perf_counter() - started < 0.5
