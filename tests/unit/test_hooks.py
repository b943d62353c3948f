"""Unit tests of capture.hooks: form builders' webhook formats read into our fields."""

from __future__ import annotations

import pytest

from throughline.capture.hooks import resolve, tilda_cookies, translate
from throughline.config import ConfigError, load_settings


def test_tilda_check_is_only_test_equals_test():
    assert translate("tilda", {"test": "test"}, "f").check
    assert translate("tilda", {"test": "test", "COOKIES": "_ym_uid=1"}, "f").check
    assert not translate("tilda", {"test": "test", "Phone": "+79160000000"}, "f").check
    assert not translate("tilda", {"test": "yes"}, "f").check


def test_tilda_check_with_an_api_key_in_the_post_is_the_check():
    # Tilda's webhook settings can add an API key as a POST parameter of any name; its check carries it too.
    assert translate("tilda", {"test": "test", "apikey": "s3cr3t"}, "f").check
    assert translate("tilda", {"test": "test", "X-Api-Key": "s3cr3t", "COOKIES": "_ym_uid=1"}, "f").check
    # A real submission always has its tranid, and a form's own contact fields are never a check.
    assert not translate("tilda", {"test": "test", "apikey": "k", "tranid": "1:2", "Phone": "+79160000000"}, "f").check
    assert not translate("tilda", {"test": "test", "Email": "a@b.ru"}, "f").check


def test_tilda_fields_tranid_formid_and_cookies():
    cookies = "_ym_uid=1701; TILDAUTM=utm_source%3Dvk%7C%7C%7Cutm_campaign%3D%D0%B7%D0%B8%D0%BC%D0%B0; sid=secret"
    translated = translate(
        "tilda",
        {
            "Name": "A",
            "Phone": "1",
            "Comments": "c",
            "Size": "XL",
            "tranid": "1:2",
            "formid": "form9",
            "COOKIES": cookies,
        },
        "f",
    )
    assert translated.delivery_id == "1:2"
    assert translated.fields == {
        "name": "A",
        "phone": "1",
        "comment": "c",
        "Size": "XL",
        "tilda_formid": "form9",
        "tilda_tranid": "1:2",
        "utm_source": "vk",
        "utm_campaign": "зима",
        "ym_client_id": "1701",
    }
    assert translated.name_in_post("phone") == "Phone"


def test_tilda_hidden_utm_fields_win_over_the_cookie_whole():
    fields = {"Phone": "1", "utm_source": "google", "COOKIES": "TILDAUTM=utm_source%3Dvk%7C%7C%7Cutm_medium%3Dcpc"}
    assert translate("tilda", fields, "f").fields == {"phone": "1", "utm_source": "google"}  # no cpc from the cookie


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("TILDAUTM=utm_source%253Dya%257C%257C%257Cutm_medium%253Dcpc", {"utm_source": "ya", "utm_medium": "cpc"}),
        ("TILDAUTM=utm_source=ya|||utm_bogus=1|||nonsense", {"utm_source": "ya"}),
        ("_ym_uid=not-a-number; _ga=GA1.1.1.2", {"ga_client_id": "GA1.1.1.2"}),
        ("TILDAUTM; =; ;;", {}),
    ],
)
def test_tilda_cookie_string(header, expected):
    assert tilda_cookies(header) == expected


def test_elementor_simple_format_maps_russian_labels():
    fields = {
        "Имя*": "Пётр",
        "Телефон:": "8 903",
        "Ваш E-mail": "a@b.ru",
        "Город": "Казань",
        "form_id": "x",
        "form_name": "F",
    }
    translated = translate("elementor", fields, "f")
    assert translated.fields == {
        "name": "Пётр",
        "phone": "8 903",
        "email": "a@b.ru",
        "Город": "Казань",
        "elementor_form": "F",
    }


def test_elementor_simple_format_reads_unlabelled_fields_by_id_and_the_page_url():
    # Elementor's get_formatted_data(true): a field without a label is keyed «No Label <id>» (the hidden utm_* fields
    # the setup page asks for), and the form's metadata follows under its titles.
    fields = {
        "Телефон": "+7 903 111-22-33",
        "No Label utm_source": "yandex",
        "No Label utm_medium": "cpc",
        "No Label field_5": "x",
        "Date": "06.12.2026",
        "Page URL": "https://wp.example.ru/okna/?utm_campaign=brand",
        "User Agent": "Mozilla/5.0",
        "Remote IP": "203.0.113.7",
        "form_id": "x",
        "form_name": "F",
    }
    assert translate("elementor", fields, "f").fields == {
        "phone": "+7 903 111-22-33",
        "utm_source": "yandex",
        "utm_medium": "cpc",
        "No Label field_5": "x",
        "Date": "06.12.2026",
        "landing_url": "https://wp.example.ru/okna/?utm_campaign=brand",
        "elementor_form": "F",
    }  # the visitor's IP and browser stay in the raw copy, never on the lead


def test_elementor_advanced_data():
    fields = {
        "form[id]": "x",
        "form[name]": "Звонок",
        "fields[field_1][title]": "Телефон",
        "fields[field_1][value]": "+7 903",
        "fields[name][title]": "Как вас зовут",
        "fields[name][value]": "Пётр",
        "fields[field_2][title]": "Город",
        "fields[field_2][value]": "Казань",
        "fields[_gotcha][title]": "Не заполняйте",
        "fields[_gotcha][value]": "",
        "meta[page_url][value]": "https://wp.example.ru/?utm_source=vk",
        "meta[remote_ip][value]": "203.0.113.7",
    }
    translated = translate("elementor", fields, "f")
    assert translated.fields == {
        "phone": "+7 903",
        "name": "Пётр",
        "Город": "Казань",
        "_gotcha": "",
        "landing_url": "https://wp.example.ru/?utm_source=vk",
        "elementor_form": "Звонок",
    }
    assert translated.name_in_post("phone") == "fields[field_1][value]"


def test_elementor_advanced_data_reads_the_label_and_type_before_the_field_id():
    # Elementor's default form has the fields name, email and message; a site owner retitles and retypes them and the
    # ids stay. What the visitor saw (the label, the input type) says what the value is, not the id.
    fields = {
        "fields[email][type]": "tel",
        "fields[email][title]": "Телефон для связи",
        "fields[email][value]": "+7 916 111-22-33",
        "fields[name][type]": "text",
        "fields[name][title]": "Город",
        "fields[name][value]": "Казань",
        "fields[message][type]": "email",
        "fields[message][title]": "Куда прислать расчёт",
        "fields[message][value]": "olga@example.ru",
        "fields[field_9][type]": "text",
        "fields[field_9][title]": "Ваше имя",
        "fields[field_9][value]": "Ольга",
    }
    translated = translate("elementor", fields, "f")
    assert translated.fields == {
        "phone": "+7 916 111-22-33",
        "Город": "Казань",
        "email": "olga@example.ru",
        "name": "Ольга",
    }


def test_configured_aliases_extend_the_defaults():
    translated = translate("elementor", {"Ваш номер": "1", "Имя": "A"}, "f", label_aliases={"ВАШ НОМЕР": "phone"})
    assert translated.fields == {"phone": "1", "name": "A"}


def test_json_map_with_list_indexes_and_unmapped_values_in_paths():
    body = {"contacts": {"phone": "1", "name": "A"}, "answers": [{"q": "Q1", "a": "A1"}], "tags": ["x", "y"], "n": None}
    maps = {"q": {"phone": "contacts.phone", "comment": "answers.0.a", "missing": "nope.0"}}
    translated = translate("json", body, "q", field_maps=maps)
    assert translated.fields == {
        "phone": "1",
        "comment": "A1",
        "contacts.name": "A",
        "answers.0.q": "Q1",
        "tags": ["x", "y"],
    }


def test_json_without_a_map_reads_top_level_names_like_the_form_route():
    translated = translate("json", {"your-name": "A", "your-email": "a@b.ru", "utm_source": "vk"}, "cf7")
    assert translated.fields == {"name": "A", "email": "a@b.ru", "utm_source": "vk"}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b", (True, 1)),
        ("l.1", (True, "y")),
        ("l.5", (False, None)),
        ("l.x", (False, None)),
        ("a.b.c", (False, None)),
    ],
)
def test_resolve(path, expected):
    assert resolve({"a": {"b": 1}, "l": ["x", "y"]}, path) == expected


def test_json_bodies_with_many_values_keep_a_bounded_number():
    body = {f"k{index}": {"v": index} for index in range(5000)}
    assert len(translate("json", body, "f").fields) == 200


def test_json_top_level_fields_are_read_whatever_comes_before_them():
    # A quiz's long list of answers first, the contacts after it: the cap on values read must not eat the phone.
    body = {"answers": [{"q": f"Вопрос {index}", "a": "да"} for index in range(150)], "phone": "+79161112233"}
    body |= {"name": "Ольга", "utm_source": "yandex"}
    fields = translate("json", body, "f").fields
    assert (fields["phone"], fields["name"], fields["utm_source"]) == ("+79161112233", "Ольга", "yandex")


@pytest.mark.parametrize(
    "value",
    ["[1]", '{"f": []}', '{"f": {"Phone": "x"}}', '{"f": {"phone": ""}}', '{"f": {"phone": "a..b"}}', "{"],
)
def test_bad_form_field_maps_are_refused_by_name(value):
    with pytest.raises(ConfigError, match="FORM_FIELD_MAPS"):
        load_settings({"FORM_FIELD_MAPS": value})


def test_form_field_maps_are_read():
    settings = load_settings({"FORM_FIELD_MAPS": '{"q": {"phone": " contacts.phone "}}'})
    assert settings.form_field_maps == {"q": {"phone": "contacts.phone"}}


def test_two_fields_for_one_contact_field_keep_both_values():
    tilda = translate("tilda", {"Phone": "+79160000001", "phone": "+79160000002", "Телефон": "3"}, "f").fields
    assert tilda == {"phone": "+79160000001", "phone (2)": "+79160000002", "Телефон": "3"}
    simple = translate("elementor", {"Телефон": "1", "Ваш телефон": "2"}, "f").fields
    assert simple == {"phone": "1", "Ваш телефон": "2"}
    body = {"phone": "top", "contacts": {"phone": "mapped"}}
    mapped = translate("json", body, "q", field_maps={"q": {"phone": "contacts.phone"}})
    assert mapped.fields == {"phone": "mapped", "phone (2)": "top"}
    assert mapped.name_in_post("phone") == "contacts.phone"


def test_the_http_path_with_the_hooks_imports_nothing_heavy():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys; sys.path[:0] = ['functions/capture_form', 'layers/core']; import app; "
        "print(sorted(m for m in ('pydantic', 'numpy', 'orjson', 'duckdb') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


def test_a_map_onto_a_list_or_an_object_gives_its_text_not_a_refusal():
    # {"comment": "answers"}: the quiz's answers in the comment is a natural map; a 422 would refuse every lead.
    body = {
        "contacts": {"phone": "+79161112233"},
        "answers": [{"q": "Какие окна?", "a": "Пластиковые"}, {"q": "Сколько?", "a": "3"}],
        "tags": ["опт", "срочно"],
    }
    maps = {"q": {"phone": "contacts.phone", "comment": "answers", "utm_content": "tags"}}
    fields = translate("json", body, "q", field_maps=maps).fields
    assert fields["comment"] == "0.q: Какие окна?\n0.a: Пластиковые\n1.q: Сколько?\n1.a: 3"
    assert fields["utm_content"] == ["опт", "срочно"]  # a list of texts: the form route's rules (a tag: the first)
    assert fields["phone"] == "+79161112233"


def test_many_fields_with_one_label_are_read_in_linear_time():
    # Half a megabyte of Elementor fields all titled «x» took 37 s to name one by one («x (2)», «x (3)», … tried from
    # the start each time): past the function's timeout, a 5xx for bad input.
    import time

    fields = {f"fields[a{index}][title]": "x" for index in range(11000)}
    fields |= {f"fields[a{index}][value]": "1" for index in range(11000)}
    started = time.monotonic()
    translated = translate("elementor", fields, "f")
    assert time.monotonic() - started < 3
    assert len(translated.fields) == 11000
    assert {"x", "x (2)", "x (11000)"} <= set(translated.fields)
