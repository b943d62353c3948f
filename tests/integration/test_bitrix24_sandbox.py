"""Integration tests of the Bitrix24 REST sandbox, spoken to over real HTTP as a client would."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests

from local.bitrix24_sandbox import Sandbox
from local.bitrix24_sandbox.limits import OperatingTime
from local.bitrix24_sandbox.php import build_query, parse_query

ISO_WITH_MOSCOW_OFFSET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+03:00$")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(app_token="tok", seed=7) as running:
        yield running


def call(sandbox: Sandbox, method: str, payload: dict[str, Any] | None = None) -> requests.Response:
    # The client waits as long as the portal's own 60 s cut-off: a batch of forty adds on a loaded CI machine took
    # over 5 s once (a read timeout, not the sandbox's answer), and no test here is about the client's patience.
    return requests.post(sandbox.webhook_url + method, json=payload or {}, timeout=60)


def ok(sandbox: Sandbox, method: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    response = call(sandbox, method, payload)
    assert response.status_code == 200, response.text
    return response.json()


# ---- envelope, auth, parameter encodings ----------------------------------------------------------------------------


def test_success_envelope_carries_result_and_full_time_block(sandbox: Sandbox) -> None:
    body = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Envelope"}})

    assert body["result"] == 1 and isinstance(body["result"], int)
    assert set(body["time"]) == {
        "start", "finish", "duration", "processing", "date_start", "date_finish", "operating_reset_at", "operating",
    }  # fmt: skip
    assert ISO_WITH_MOSCOW_OFFSET.match(body["time"]["date_start"])
    assert body["time"]["operating"] == pytest.approx(0.1)  # DEFAULT_METHOD_SECONDS["crm.lead.add"]
    assert body["time"]["operating_reset_at"] > time.time()
    assert "total" not in body and "next" not in body


def test_wrong_credentials_missing_credentials_and_unknown_method(sandbox: Sandbox) -> None:
    wrong = requests.post(f"{sandbox.base_url}/rest/1/not-the-secret/crm.lead.list", json={}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}

    other_user = requests.post(f"{sandbox.base_url}/rest/2/{sandbox.secret}/crm.lead.list", json={}, timeout=5)
    assert other_user.status_code == 401

    anonymous = requests.post(f"{sandbox.base_url}/rest/crm.lead.list", json={}, timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}

    unknown = call(sandbox, "crm.lead.frobnicate")
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}


def test_json_form_encoded_and_query_string_parameters_are_equivalent(sandbox: Sandbox) -> None:
    by_json = ok(sandbox, "crm.lead.add.json", {"fields": {"TITLE": "json", "PHONE": [{"VALUE": "+7001"}]}})
    by_form = requests.post(
        sandbox.webhook_url + "crm.lead.add",
        data="fields[TITLE]=form&fields[PHONE][0][VALUE]=%2B7002&fields[PHONE][0][VALUE_TYPE]=MOBILE",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    ).json()
    by_query = requests.get(
        sandbox.webhook_url + "crm.lead.add", params={"fields[TITLE]": "query", "fields[PHONE][0][VALUE]": "+7003"}
    ).json()

    leads = {lead["TITLE"]: lead for lead in sandbox.entities("lead")}
    assert [by_json["result"], by_form["result"], by_query["result"]] == [1, 2, 3]
    assert leads["json"]["PHONE"][0]["VALUE"] == "+7001"
    assert leads["form"]["PHONE"][0] == {"ID": "2", "VALUE_TYPE": "MOBILE", "VALUE": "+7002", "TYPE_ID": "PHONE"}
    assert leads["query"]["PHONE"][0]["VALUE"] == "+7003"

    # Query and body parameters are merged; upper-case parameter names work like lower-case ones.
    merged = requests.post(sandbox.webhook_url + "crm.lead.get?ID=2", json={}, timeout=5).json()
    assert merged["result"]["TITLE"] == "form"
    listed = requests.post(
        sandbox.webhook_url + "crm.lead.list",
        data="filter[@ID][]=1&filter[@ID][]=3&select[]=TITLE",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    ).json()
    assert [row["TITLE"] for row in listed["result"]] == ["json", "query"]


# ---- CRUD and record shape ------------------------------------------------------------------------------------------


def test_lead_add_get_update_list_delete(sandbox: Sandbox) -> None:
    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Deal me", "OPPORTUNITY": 12500, "UNKNOWN": "x"}})[
        "result"
    ]
    lead = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]
    assert lead["ID"] == str(lead_id)
    assert lead["ASSIGNED_BY_ID"] == "1" and lead["CREATED_BY_ID"] == "1"
    assert lead["STATUS_ID"] == "NEW" and lead["STATUS_SEMANTIC_ID"] == "P"
    assert lead["OPPORTUNITY"] == "12500.00"
    assert lead["IS_RETURN_CUSTOMER"] == "N"
    assert ISO_WITH_MOSCOW_OFFSET.match(lead["DATE_CREATE"])
    assert "UNKNOWN" not in lead and "PHONE" not in lead

    update = {"id": lead_id, "fields": {"STATUS_ID": "CONVERTED", "CONTACT_ID": 5, "IS_RETURN_CUSTOMER": "N"}}
    assert ok(sandbox, "crm.lead.update", update)["result"] is True
    lead = ok(sandbox, "crm.lead.get", {"ID": lead_id})["result"]
    assert lead["STATUS_SEMANTIC_ID"] == "S"
    assert lead["IS_RETURN_CUSTOMER"] == "Y"  # derived from CONTACT_ID, cannot be set directly
    assert ISO_WITH_MOSCOW_OFFSET.match(lead["DATE_CLOSED"])

    listed = ok(sandbox, "crm.lead.list", {"filter": {"STATUS_ID": "CONVERTED"}})
    assert listed["total"] == 1 and listed["result"][0]["ID"] == str(lead_id) and "next" not in listed

    assert ok(sandbox, "crm.lead.delete", {"id": lead_id})["result"] is True
    gone = call(sandbox, "crm.lead.get", {"id": lead_id})
    assert gone.status_code == 400
    assert gone.json() == {"error": "", "error_description": "Not found"}
    invalid = call(sandbox, "crm.lead.get", {"id": "abc"})
    assert invalid.status_code == 400 and invalid.json()["error_description"] == "ID is not defined or invalid."


def test_multifield_update_changes_deletes_and_adds_entries(sandbox: Sandbox) -> None:
    phones = [{"VALUE": "+7 111", "VALUE_TYPE": "WORK"}, {"VALUE": "+7 222", "VALUE_TYPE": "HOME"}]
    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"PHONE": phones, "EMAIL": [{"VALUE": "a@x.ru"}]}})["result"]
    first, second = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]["PHONE"]

    changes = [
        {"ID": first["ID"], "VALUE": "+7 999"},
        {"ID": second["ID"], "VALUE": ""},
        {"VALUE": "+7 333", "VALUE_TYPE": "MOBILE"},
    ]
    ok(sandbox, "crm.lead.update", {"id": lead_id, "fields": {"PHONE": changes}})
    lead = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]

    assert [(phone["VALUE"], phone["VALUE_TYPE"]) for phone in lead["PHONE"]] == [
        ("+7 999", "WORK"),
        ("+7 333", "MOBILE"),
    ]
    assert lead["PHONE"][0]["ID"] == first["ID"]
    assert lead["EMAIL"][0]["VALUE"] == "a@x.ru"  # untouched multi-fields stay

    ok(
        sandbox,
        "crm.lead.update",
        {"id": lead_id, "fields": {"EMAIL": [{"ID": lead["EMAIL"][0]["ID"], "DELETE": "Y"}]}},
    )
    lead = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]
    assert "EMAIL" not in lead and lead["HAS_EMAIL"] == "N" and lead["HAS_PHONE"] == "Y"


def test_select_rules_for_standard_user_and_multi_fields(sandbox: Sandbox) -> None:
    ok(sandbox, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "GCLID", "USER_TYPE_ID": "string"}})
    ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "T", "UF_CRM_GCLID": "g-1", "PHONE": [{"VALUE": "+7 1"}]}})

    def first_row(select: Any) -> dict[str, Any]:
        return ok(sandbox, "crm.lead.list", {"select": select} if select is not None else {})["result"][0]

    default = first_row(None)
    assert "TITLE" in default and "UF_CRM_GCLID" not in default and "PHONE" not in default
    star = first_row(["*"])
    assert star.keys() == default.keys()
    with_uf = first_row(["*", "UF_*"])
    assert with_uf["UF_CRM_GCLID"] == "g-1" and "PHONE" not in with_uf
    assert first_row(["TITLE"]) == {"ID": "1", "TITLE": "T"}
    phone_only = first_row(["PHONE"])
    assert set(phone_only) == {"ID", "PHONE"} and phone_only["PHONE"][0]["VALUE"] == "+7 1"


def test_filters_by_list_comparison_and_substring(sandbox: Sandbox) -> None:
    for title, amount, status in (("Alpha", 100, "NEW"), ("Beta", 200, "JUNK"), ("alphabet", 300, "NEW")):
        ok(sandbox, "crm.lead.add", {"fields": {"TITLE": title, "OPPORTUNITY": amount, "STATUS_ID": status}})

    def titles(filter_: dict[str, Any], order: dict[str, str] | None = None) -> list[str]:
        payload: dict[str, Any] = {"filter": filter_, "select": ["TITLE"]}
        if order:
            payload["order"] = order
        return [row["TITLE"] for row in ok(sandbox, "crm.lead.list", payload)["result"]]

    assert titles({"@ID": [1, 3]}) == ["Alpha", "alphabet"]
    assert titles({"!@ID": ["1", "3"]}) == ["Beta"]
    assert titles({"ID": [2]}) == ["Beta"]
    assert titles({">OPPORTUNITY": 150}) == ["Beta", "alphabet"]
    assert titles({">=ID": "2", "<ID": 3}) == ["Beta"]
    assert titles({"%TITLE": "ALPHA"}) == ["Alpha", "alphabet"]
    assert titles({"!STATUS_ID": "NEW"}) == ["Beta"]
    assert titles({"=%TITLE": "alpha%"}) == ["Alpha", "alphabet"]
    assert titles({"<DATE_CREATE": "2000-01-01T00:00:00+03:00"}) == []
    assert titles({">=DATE_CREATE": "2000-01-01"}) == ["Alpha", "Beta", "alphabet"]
    assert titles({}, order={"OPPORTUNITY": "DESC"}) == ["alphabet", "Beta", "Alpha"]


def test_deal_stage_semantics_and_immutable_category(sandbox: Sandbox) -> None:
    deal_id = ok(sandbox, "crm.deal.add", {"fields": {"TITLE": "D", "OPPORTUNITY": "99.5", "CATEGORY_ID": 1}})["result"]
    deal = ok(sandbox, "crm.deal.get", {"id": deal_id})["result"]
    assert (deal["STAGE_ID"], deal["CATEGORY_ID"], deal["STAGE_SEMANTIC_ID"]) == ("C1:NEW", "1", "P")
    assert deal["OPPORTUNITY"] == "99.50" and deal["CLOSED"] == "N"

    ok(sandbox, "crm.deal.update", {"id": deal_id, "fields": {"STAGE_ID": "C1:WON", "CATEGORY_ID": 0}})
    deal = ok(sandbox, "crm.deal.get", {"id": deal_id})["result"]
    assert (deal["CATEGORY_ID"], deal["STAGE_SEMANTIC_ID"], deal["CLOSED"]) == ("1", "S", "Y")

    other = ok(sandbox, "crm.deal.add", {"fields": {"STAGE_ID": "APOLOGY"}})["result"]
    assert ok(sandbox, "crm.deal.get", {"id": other})["result"]["STAGE_SEMANTIC_ID"] == "F"


# ---- paging ---------------------------------------------------------------------------------------------------------


def test_pages_of_fifty_with_total_next_and_the_fast_id_scan(sandbox: Sandbox) -> None:
    for chunk in range(3):
        commands = {f"c{index}": f"crm.lead.add?fields[TITLE]=Lead {chunk * 40 + index}" for index in range(40)}
        assert ok(sandbox, "batch", {"halt": 1, "cmd": commands})["result"]["result_error"] == []

    pages = [ok(sandbox, "crm.lead.list", {"start": start, "select": ["ID"]}) for start in (0, 50, 100)]
    assert [len(page["result"]) for page in pages] == [50, 50, 20]
    assert [page["total"] for page in pages] == [120, 120, 120]
    assert [page.get("next") for page in pages] == [50, 100, None]

    seen: list[int] = []
    last_id = 0
    while True:
        page = ok(
            sandbox,
            "crm.lead.list",
            {"order": {"ID": "ASC"}, "filter": {">ID": last_id}, "select": ["ID"], "start": -1},
        )
        assert page["total"] == 0 and "next" not in page
        seen += [int(row["ID"]) for row in page["result"]]
        if len(page["result"]) < 50:
            break
        last_id = seen[-1]
    assert seen == list(range(1, 121))


# ---- batch ----------------------------------------------------------------------------------------------------------


def test_batch_references_errors_and_php_empty_maps(sandbox: Sandbox) -> None:
    body = ok(
        sandbox,
        "batch",
        {
            "halt": 0,
            "cmd": {
                "new": "crm.lead.add?fields[TITLE]=Ref&fields[PHONE][0][VALUE]=%2B7%20555",
                "find": "crm.duplicate.findbycomm?type=PHONE&values[]=%2B7%20555",
                "get": "crm.lead.get?id=$result[find][LEAD][0]",
                "list": "crm.lead.list?filter[ID]=$result[new]&select[]=TITLE",
                "title": "crm.lead.update?id=$result[list][0][ID]&fields[COMMENTS]=copy of $result[get][TITLE]",
                "broken": "crm.lead.get?id=999",
                "missing": "crm.lead.get?id=$result[nothing][0]",
            },
        },
    )
    assert set(body) == {"result", "time"}
    batch = body["result"]
    assert batch["result"]["new"] == 1
    assert batch["result"]["find"] == {"LEAD": [1]}
    assert batch["result"]["get"]["TITLE"] == "Ref"
    assert batch["result"]["title"] is True
    assert batch["result_total"] == {"list": 1}
    assert batch["result_next"] == []
    assert set(batch["result_time"]) == {"new", "find", "get", "list", "title"}
    assert batch["result_error"] == {
        "broken": {"error": "", "error_description": "Not found"},
        "missing": {"error": "", "error_description": "ID is not defined or invalid."},
    }
    assert sandbox.entities("lead")[0]["COMMENTS"] == "copy of Ref"
    stats = sandbox.stats()
    assert stats["by_method"] == {"batch": 1}
    assert stats["batch_commands"]["crm.lead.get"] == 3

    clean = ok(sandbox, "batch", {"cmd": {"only": "crm.lead.list?select[]=ID"}})["result"]
    assert clean["result_error"] == [] and clean["result_next"] == []


def test_batch_halt_limits_and_nesting(sandbox: Sandbox) -> None:
    halted = ok(
        sandbox,
        "batch",
        {"halt": 1, "cmd": {"a": "crm.lead.add?fields[TITLE]=1", "b": "crm.lead.get?id=42", "c": "crm.lead.add"}},
    )["result"]
    assert halted["result"] == {"a": 1}
    assert list(halted["result_error"]) == ["b"]
    assert len(sandbox.entities("lead")) == 1  # "c" never ran

    numbered = ok(sandbox, "batch", {"cmd": ["crm.lead.get?id=1", "crm.lead.get?id=1"]})["result"]
    assert isinstance(numbered["result"], list) and len(numbered["result"]) == 2  # PHP prints keys 0..n-1 as a list

    too_many = call(sandbox, "batch", {"cmd": {f"k{index}": "profile" for index in range(51)}})
    assert too_many.status_code == 400
    assert too_many.json()["error"] == "ERROR_BATCH_LENGTH_EXCEEDED"

    nested = ok(sandbox, "batch", {"cmd": {"inner": "batch?cmd[x]=profile"}})["result"]
    assert nested["result_error"]["inner"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


# ---- duplicates and user fields -------------------------------------------------------------------------------------


def test_findbycomm_matches_whole_strings_and_limits_values(sandbox: Sandbox) -> None:
    ok(sandbox, "crm.lead.add", {"fields": {"PHONE": [{"VALUE": "+7 999 123-45-67"}], "EMAIL": [{"VALUE": "A@X.ru"}]}})
    ok(sandbox, "crm.contact.add", {"fields": {"NAME": "C", "PHONE": [{"VALUE": "+79991234567"}]}})

    def find(payload: dict[str, Any]) -> Any:
        return ok(sandbox, "crm.duplicate.findbycomm", payload)["result"]

    assert find({"type": "PHONE", "values": ["+7 999 123-45-67"]}) == {"LEAD": [1]}
    assert find({"type": "PHONE", "values": ["+79991234567"]}) == {"CONTACT": [1]}  # other formats do not match
    assert find({"type": "PHONE", "values": ["+7 999 123-45-67 доб. 12"]}) == {"LEAD": [1]}  # extension ignored
    assert find({"type": "PHONE", "values": ["89991234567"]}) == []
    assert find({"type": "EMAIL", "values": ["a@x.RU"]}) == {"LEAD": [1]}
    assert find({"type": "PHONE", "values": ["+79991234567"], "entity_type": "LEAD"}) == []

    too_many = call(sandbox, "crm.duplicate.findbycomm", {"type": "PHONE", "values": [str(n) for n in range(21)]})
    assert too_many.status_code == 400
    no_type = call(sandbox, "crm.duplicate.findbycomm", {"values": ["1"]})
    assert no_type.status_code == 400 and "Communication type" in no_type.json()["error_description"]

    # Twenty or more lead matches hide the other entity types (crm-duplicate-find-by-comm.md).
    commands = {f"l{n}": "crm.lead.add?fields[PHONE][0][VALUE]=%2B79991234567" for n in range(20)}
    ok(sandbox, "batch", {"cmd": commands})
    crowded = find({"type": "PHONE", "values": ["+79991234567"]})
    assert list(crowded) == ["LEAD"] and len(crowded["LEAD"]) == 20


def test_userfield_add_list_get_with_name_rules(sandbox: Sandbox) -> None:
    created = ok(sandbox, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "gclid", "USER_TYPE_ID": "string"}})
    field_id = created["result"]
    assert isinstance(field_id, int)
    ok(sandbox, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "UF_SCORE", "USER_TYPE_ID": "integer"}})

    listed = ok(sandbox, "crm.lead.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_GCLID"}})
    assert listed["total"] == 1
    record = listed["result"][0]
    assert (record["ID"], record["ENTITY_ID"], record["FIELD_NAME"]) == (str(field_id), "CRM_LEAD", "UF_CRM_GCLID")
    assert (record["USER_TYPE_ID"], record["MULTIPLE"], record["MANDATORY"]) == ("string", "N", "N")
    assert "EDIT_FORM_LABEL" not in record  # labels only with filter[LANG]
    with_lang = ok(sandbox, "crm.lead.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_GCLID", "LANG": "en"}})
    assert with_lang["result"][0]["EDIT_FORM_LABEL"] == ""
    names = [row["FIELD_NAME"] for row in ok(sandbox, "crm.lead.userfield.list")["result"]]
    assert names == ["UF_CRM_GCLID", "UF_CRM_SCORE"]
    got = ok(sandbox, "crm.lead.userfield.get", {"id": field_id})["result"]
    assert isinstance(got["EDIT_FORM_LABEL"], dict)

    for bad_name, message in (
        ("GCLID", "already exists"),
        ("bad-name", "invalid characters"),
        ("X" * 44, "too long"),
    ):
        response = call(
            sandbox, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": bad_name, "USER_TYPE_ID": "string"}}
        )
        assert response.status_code == 400, bad_name
        assert response.json()["error"] == "ERROR_CORE" and message in response.json()["error_description"]
    ok(sandbox, "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "Y" * 43, "USER_TYPE_ID": "string"}})

    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"UF_CRM_GCLID": "abc", "UF_CRM_SCORE": "7", "UF_CRM_NOPE": 1}})[
        "result"
    ]
    lead = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]
    assert (lead["UF_CRM_GCLID"], lead["UF_CRM_SCORE"]) == ("abc", "7")
    assert "UF_CRM_NOPE" not in lead
    assert ok(sandbox, "crm.deal.userfield.list")["result"] == []
    assert "UF_CRM_GCLID" in ok(sandbox, "crm.lead.fields")["result"]


def test_dictionaries_users_and_currencies(sandbox: Sandbox) -> None:
    sources = ok(sandbox, "crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}, "order": {"SORT": "ASC"}})
    assert [row["STATUS_ID"] for row in sources["result"]][:3] == ["CALL", "EMAIL", "WEB"]
    assert sources["result"][0]["NAME"] == "Звонок" and sources["total"] == 12
    stages = ok(sandbox, "crm.status.list", {"filter": {"ENTITY_ID": "DEAL_STAGE"}})["result"]
    won = next(stage for stage in stages if stage["STATUS_ID"] == "WON")
    assert won["SEMANTICS"] == "S" and won["EXTRA"]["SEMANTICS"] == "success"
    lead_statuses = ok(sandbox, "crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}})["result"]
    assert [row["STATUS_ID"] for row in lead_statuses] == ["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"]

    new_id = ok(sandbox, "crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "UC_X", "NAME": "X"}})
    assert isinstance(new_id["result"], int)
    duplicate = call(sandbox, "crm.status.add", {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "UC_X", "NAME": "X"}})
    assert duplicate.status_code == 400

    users = ok(sandbox, "user.get", {"filter": {"ACTIVE": True}})
    assert users["total"] >= 3 and users["result"][0]["ID"] == "1"
    assert ok(sandbox, "profile")["result"]["ID"] == "1"
    currencies = ok(sandbox, "crm.currency.list")["result"]
    assert [(row["CURRENCY"], row["BASE"]) for row in currencies] == [
        ("RUB", "Y"),
        ("USD", "N"),
        ("EUR", "N"),
        ("KZT", "N"),
    ]


# ---- limits ---------------------------------------------------------------------------------------------------------


def test_leaky_bucket_rejects_bursts_and_drains() -> None:
    with Sandbox(rate=2, burst=50) as sandbox, requests.Session() as session:
        started = time.monotonic()
        responses = [session.post(sandbox.webhook_url + "profile", json={}) for _ in range(60)]
        elapsed = time.monotonic() - started
        statuses = [response.status_code for response in responses]

        # 50 requests fill the bucket, one more is let in at exactly 50; the drain during the burst may add a few.
        assert 51 <= statuses.count(200) <= 51 + int(elapsed * 2) + 1
        assert statuses.count(503) == 60 - statuses.count(200) > 0
        rejected = next(response for response in responses if response.status_code == 503)
        assert rejected.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
        assert sandbox.stats()["rate_limited"] == statuses.count(503)

        time.sleep(1.1)  # at 2 per second the counter falls back under the threshold
        assert session.post(sandbox.webhook_url + "profile", json={}).status_code == 200


def test_operating_time_limit_blocks_only_the_busy_method() -> None:
    with Sandbox(operating_limit_seconds=0.05, operating_cost_seconds=0.01) as sandbox:
        operating = [ok(sandbox, "crm.lead.list")["time"]["operating"] for _ in range(6)]
        assert operating == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])

        blocked = call(sandbox, "crm.lead.list")
        assert blocked.status_code == 429
        assert blocked.json()["error"] == "OPERATION_TIME_LIMIT"
        assert ok(sandbox, "crm.lead.add")["result"] == 1  # other methods keep working

        inside_batch = ok(sandbox, "batch", {"cmd": {"l": "crm.lead.list", "p": "profile"}})["result"]
        assert inside_batch["result_error"]["l"]["error"] == "OPERATION_TIME_LIMIT"
        assert "p" in inside_batch["result"]
        assert sandbox.stats()["operation_time_limited"] == 2


def test_operating_baskets_open_with_the_first_call_not_on_the_calendar_minute() -> None:
    # limits.md: "The countdown for the basket starts from the first recorded method call in the corresponding minute
    # and lasts 10 minutes": a first call at 10:05:20 resets at 10:15:20, not at 10:15:00.
    now = [1_800_000_000.0 + 20]  # a whole minute + 20 s
    operating = OperatingTime(limit_seconds=480, clock=lambda: now[0])
    assert operating.reset_at("crm.lead.add") == now[0] + 600  # nothing used yet: a basket would open now
    operating.record("crm.lead.add", 2.0)
    now[0] += 50  # 10:06:10, past the calendar minute but inside the basket that opened at 10:05:20
    operating.record("crm.lead.add", 3.0)
    now[0] += 15  # 10:06:25: the first basket has closed, a second one opens
    operating.record("crm.lead.add", 4.0)
    assert operating.used("crm.lead.add") == pytest.approx(9.0)
    assert operating.reset_at("crm.lead.add") == 1_800_000_000 + 20 + 600
    now[0] = 1_800_000_000 + 20 + 600  # 10:15:20: the first basket (2 + 3 s) drops out, the second stays
    assert operating.used("crm.lead.add") == pytest.approx(4.0)
    assert operating.reset_at("crm.lead.add") == 1_800_000_000 + 20 + 65 + 600
    # A call is charged to the basket open when it began: a 5 s call ending now opened its basket 5 s ago.
    operating.record("crm.deal.add", 5.0, started_at=now[0] - 5)
    assert operating.reset_at("crm.deal.add") == now[0] - 5 + 600


def test_method_cost_is_configurable_slept_scaled_and_charged_in_full() -> None:
    with Sandbox(method_seconds={"crm.lead.add": 2.0}, time_scale=0.1) as sandbox, requests.Session() as session:
        assert sandbox.cost_of("crm.lead.add") == 2.0
        assert sandbox.cost_of("crm.lead.list") == 0.01  # operating_cost_seconds for methods not listed
        started = time.monotonic()
        body = session.post(sandbox.webhook_url + "crm.lead.add", json={"fields": {"TITLE": "Slow"}}).json()
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 1.5  # 2 s simulated, slept at a tenth
        assert body["time"]["operating"] == pytest.approx(2.0)  # operating time counts the full cost
        assert body["time"]["processing"] == pytest.approx(2.0)
        assert body["time"]["duration"] >= 2.0  # the portal's duration, not our scaled sleep
        assert 0 <= body["time"]["operating_reset_at"] - (body["time"]["start"] + 600) <= 1

        batch = session.post(
            sandbox.webhook_url + "batch",
            json={"cmd": {"a": "crm.lead.add?fields[TITLE]=A", "b": "crm.lead.add?fields[TITLE]=B"}},
        ).json()["result"]
        assert batch["result_time"]["a"]["operating"] == pytest.approx(4.0)
        assert batch["result_time"]["b"]["operating"] == pytest.approx(6.0)
        assert batch["result_time"]["b"]["duration"] >= 2.0


def test_a_request_over_sixty_seconds_is_cut_off_part_way_with_a_500() -> None:
    # limits.md: one request must finish within 60 s, batch sub-calls included; the userfield pages name the error.
    with Sandbox(method_seconds={"crm.lead.add": 25.0}, time_scale=0.01, outbound_url=None) as sandbox:
        started = time.monotonic()
        cmd = {f"c{index}": f"crm.lead.add?fields[TITLE]=L{index}" for index in range(4)}
        response = requests.post(sandbox.webhook_url + "batch", json={"cmd": cmd}, timeout=10)
        elapsed = time.monotonic() - started

        assert response.status_code == 500
        assert response.json() == {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
        # Two commands (50 s) finished and stay done; the third ran into the limit and the fourth never started.
        assert [lead["TITLE"] for lead in sandbox.entities("lead")] == ["L0", "L1"]
        assert 0.55 <= elapsed < 3  # cut at 60 simulated seconds, slept at a hundredth
        assert sandbox.stats()["cut_off"] == 1

        # A single call longer than the limit never takes effect.
        sandbox.method_seconds["crm.deal.add"] = 61.0
        single = requests.post(sandbox.webhook_url + "crm.deal.add", json={"fields": {"TITLE": "D"}}, timeout=10)
        assert single.status_code == 500 and sandbox.entities("deal") == []

        # The time a cut-off call ran is still charged to its method.
        assert ok(sandbox, "crm.lead.list")["time"]["operating"] == pytest.approx(0.01)
        listed = ok(sandbox, "batch", {"cmd": {"x": "crm.lead.add?fields[TITLE]=X"}})["result"]["result_time"]["x"]
        assert listed["operating"] == pytest.approx(25 + 25 + 10 + 25)


def test_timeline_comment_add_accepts_only_lower_case_fields(sandbox: Sandbox) -> None:
    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Owner"}})["result"]
    comment = {"ENTITY_ID": lead_id, "ENTITY_TYPE": "lead", "COMMENT": "Hello"}
    for spelling in ("FIELDS", "Fields"):
        refused = call(sandbox, "crm.timeline.comment.add", {spelling: comment})
        assert refused.status_code == 400
        assert refused.json() == {"error": "100", "error_description": "Could not find value for parameter {fields}"}
    assert ok(sandbox, "crm.timeline.comment.add", {"fields": comment})["result"] == 1
    # Other methods still read top-level names case-insensitively.
    assert ok(sandbox, "crm.lead.get", {"ID": lead_id})["result"]["TITLE"] == "Owner"
    assert len(sandbox.timeline_comments()) == 1


def test_crm_mode_is_reported_and_classic_keeps_leads(sandbox: Sandbox) -> None:
    assert ok(sandbox, "crm.settings.mode.get")["result"] == 1
    modes = ok(sandbox, "crm.enum.settings.mode")["result"]
    assert [(mode["ID"], mode["NAME"]) for mode in modes] == [(1, "Classic CRM"), (2, "Simple CRM")]
    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Stays", "NAME": "Ivan"}})["result"]
    assert ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]["STATUS_ID"] == "NEW"
    assert sandbox.entities("deal") == [] and sandbox.entities("contact") == []


def test_simple_mode_converts_a_new_lead_into_a_contact_and_a_deal(receiver: _Receiver) -> None:
    with Sandbox(crm_mode="simple", outbound_url=receiver.url, app_token="tok") as sandbox:
        assert ok(sandbox, "crm.settings.mode.get")["result"] == 2
        fields = {
            "TITLE": "Заявка с сайта",
            "NAME": "Иван",
            "LAST_NAME": "Петров",
            "PHONE": [{"VALUE": "+79990000001", "VALUE_TYPE": "WORK"}],
            "EMAIL": [{"VALUE": "ivan@example.ru", "VALUE_TYPE": "HOME"}],
            "SOURCE_ID": "WEB",
            "UTM_SOURCE": "yandex",
            "OPPORTUNITY": 1500,
            "ORIGINATOR_ID": "throughline",
            "ORIGIN_ID": "sub-1",
        }
        lead_id = ok(sandbox, "crm.lead.add", {"fields": fields})["result"]

        lead = ok(sandbox, "crm.lead.get", {"id": lead_id})["result"]
        assert lead["STATUS_ID"] == "CONVERTED" and lead["STATUS_SEMANTIC_ID"] == "S"
        [deal] = ok(sandbox, "crm.deal.list", {"filter": {"LEAD_ID": lead_id}, "select": ["*"]})["result"]
        contact_id = deal["CONTACT_ID"]
        assert lead["CONTACT_ID"] == contact_id and lead["IS_RETURN_CUSTOMER"] == "N"
        assert deal["LEAD_ID"] == str(lead_id) and deal["STAGE_ID"] == "NEW" and deal["STAGE_SEMANTIC_ID"] == "P"
        assert (deal["TITLE"], deal["OPPORTUNITY"], deal["SOURCE_ID"], deal["UTM_SOURCE"]) == (
            "Заявка с сайта", "1500.00", "WEB", "yandex",
        )  # fmt: skip
        assert deal["ORIGIN_ID"] is None  # not carried over: a client cannot find the deal by it
        contact = ok(sandbox, "crm.contact.get", {"id": contact_id})["result"]
        assert (contact["NAME"], contact["LAST_NAME"], contact["LEAD_ID"]) == ("Иван", "Петров", str(lead_id))
        assert [entry["VALUE"] for entry in contact["PHONE"]] == ["+79990000001"]

        # Duplicates are found as the contact; deals are found by contact and stage semantics.
        found = ok(sandbox, "crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+79990000001"]})["result"]
        assert found["CONTACT"] == [int(contact_id)]
        open_deals = {"CONTACT_ID": contact_id, "STAGE_SEMANTIC_ID": "P"}
        assert [row["ID"] for row in ok(sandbox, "crm.deal.list", {"filter": open_deals})["result"]] == [deal["ID"]]

        # A lead that names a known contact keeps it: no second contact, and it counts as a repeat lead.
        repeat = ok(sandbox, "crm.lead.add", {"fields": {"NAME": "Иван", "CONTACT_ID": contact_id}})["result"]
        repeat_lead = ok(sandbox, "crm.lead.get", {"id": repeat})["result"]
        assert (repeat_lead["STATUS_ID"], repeat_lead["IS_RETURN_CUSTOMER"]) == ("CONVERTED", "Y")
        [repeat_deal] = ok(sandbox, "crm.deal.list", {"filter": {"LEAD_ID": repeat}})["result"]
        assert ok(sandbox, "crm.deal.get", {"id": repeat_deal["ID"]})["result"]["CONTACT_ID"] == contact_id
        assert len(sandbox.entities("contact")) == 1

        # A lead added inside a batch is converted as well.
        batch = ok(sandbox, "batch", {"cmd": {"l": "crm.lead.add?fields[TITLE]=B&fields[NAME]=Олег"}})["result"]
        batched = batch["result"]["l"]
        assert ok(sandbox, "crm.lead.get", {"id": batched})["result"]["STATUS_ID"] == "CONVERTED"
        assert len(ok(sandbox, "crm.deal.list", {"filter": {"LEAD_ID": batched}})["result"]) == 1

        # A lead without a first name is not converted (how-to-add-objects-with-crm-mode.md, troubleshooting).
        nameless = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "No name"}})["result"]
        assert ok(sandbox, "crm.lead.get", {"id": nameless})["result"]["STATUS_ID"] == "NEW"
        assert len(sandbox.entities("deal")) == 3

        events = [parse_qs(body)["event"][0] for _, body in receiver.wait_for(9)]
        converted = ["ONCRMLEADADD", "ONCRMCONTACTADD", "ONCRMDEALADD"]
        assert events == [*converted, "ONCRMLEADADD", "ONCRMDEALADD", *converted, "ONCRMLEADADD"]


def test_deals_filter_by_links_money_and_dates_and_record_stage_history(sandbox: Sandbox) -> None:
    contact_id = ok(sandbox, "crm.contact.add", {"fields": {"NAME": "Anna"}})["result"]
    first = ok(
        sandbox,
        "crm.deal.add",
        {"fields": {"CONTACT_ID": contact_id, "OPPORTUNITY": 1000, "CURRENCY_ID": "RUB", "CLOSEDATE": "2026-01-10"}},
    )["result"]
    second = ok(sandbox, "crm.deal.add", {"fields": {"CATEGORY_ID": 1, "OPPORTUNITY": 50, "CLOSEDATE": "2026-02-01"}})[
        "result"
    ]
    ok(sandbox, "crm.deal.update", {"id": first, "fields": {"STAGE_ID": "EXECUTING"}})
    ok(sandbox, "crm.deal.update", {"id": first, "fields": {"STAGE_ID": "WON"}})

    def ids(filter_: dict[str, Any]) -> list[str]:
        return [row["ID"] for row in ok(sandbox, "crm.deal.list", {"filter": filter_})["result"]]

    assert ids({"CONTACT_ID": contact_id}) == [str(first)]
    assert ids({"CATEGORY_ID": 1}) == [str(second)] and ids({"STAGE_ID": "C1:NEW"}) == [str(second)]
    assert ids({"STAGE_SEMANTIC_ID": "S"}) == [str(first)]
    assert ids({">OPPORTUNITY": 100, "CURRENCY_ID": "RUB"}) == [str(first)]
    assert ids({">=CLOSEDATE": "2026-01-15"}) == [str(second)]
    won = ok(sandbox, "crm.deal.get", {"id": first})["result"]
    assert (won["OPPORTUNITY"], won["CLOSED"], won["CLOSEDATE"][:10]) == ("1000.00", "Y", "2026-01-10")

    history = ok(sandbox, "crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": first}})
    rows = history["result"]["items"]
    assert [(row["TYPE_ID"], row["STAGE_ID"], row["STAGE_SEMANTIC_ID"]) for row in rows] == [
        (1, "NEW", "P"), (2, "EXECUTING", "P"), (3, "WON", "S"),
    ]  # fmt: skip
    assert history["total"] == 3 and ISO_WITH_MOSCOW_OFFSET.match(rows[0]["CREATED_TIME"])
    assert set(rows[0]) == {"ID", "TYPE_ID", "OWNER_ID", "CREATED_TIME", "CATEGORY_ID", "STAGE_SEMANTIC_ID", "STAGE_ID"}
    assert ok(sandbox, "crm.stagehistory.list", {"entityTypeId": 1})["result"]["items"] == []
    lead_id = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "L"}})["result"]
    ok(sandbox, "crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "IN_PROCESS"}})
    ok(sandbox, "crm.lead.update", {"id": lead_id, "fields": {"COMMENTS": "no stage change"}})
    ok(sandbox, "crm.lead.update", {"id": lead_id, "fields": {"STATUS_ID": "JUNK"}})
    leads = ok(
        sandbox,
        "crm.stagehistory.list",
        {"entityTypeId": 1, "order": {"ID": "DESC"}, "select": ["TYPE_ID", "STATUS_ID", "STATUS_SEMANTIC_ID"]},
    )["result"]["items"]
    assert leads == [
        {"TYPE_ID": 3, "STATUS_ID": "JUNK", "STATUS_SEMANTIC_ID": "F"},
        {"TYPE_ID": 2, "STATUS_ID": "IN_PROCESS", "STATUS_SEMANTIC_ID": "P"},
        {"TYPE_ID": 1, "STATUS_ID": "NEW", "STATUS_SEMANTIC_ID": "P"},
    ]
    # A pipeline change is its own kind of row.
    ok(sandbox, "crm.deal.update", {"id": second, "fields": {"STAGE_ID": "C1:PREPARATION"}})
    moved = ok(sandbox, "crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": second, ">TYPE_ID": 1}})
    assert [row["STAGE_ID"] for row in moved["result"]["items"]] == ["C1:PREPARATION"]
    refused = call(sandbox, "crm.stagehistory.list", {"entityTypeId": 2, "filter": {"TITLE": "x"}})
    assert refused.status_code == 400 and refused.json()["error"] == "INVALID_ARG_VALUE"
    assert call(sandbox, "crm.stagehistory.list", {"entityTypeId": 7}).json()["error"] == "ENTITY_TYPE_NOT_SUPPORTED"


# ---- faults ---------------------------------------------------------------------------------------------------------


def test_error_fault_fails_before_executing(sandbox: Sandbox) -> None:
    sandbox.set_faults(error_rate=1.0)
    response = call(sandbox, "crm.lead.add", {"fields": {"TITLE": "lost"}})

    assert response.status_code == 500
    assert response.json() == {"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}
    assert sandbox.entities("lead") == []
    assert sandbox.stats()["faults"]["error"] == 1


def test_lost_response_fault_executes_but_answers_500(sandbox: Sandbox) -> None:
    sandbox.set_faults(lost_response_rate=1.0)
    response = call(sandbox, "crm.lead.add", {"fields": {"TITLE": "written"}})

    assert response.status_code == 500
    assert [lead["TITLE"] for lead in sandbox.entities("lead")] == ["written"]
    assert sandbox.stats()["faults"]["lost_response"] == 1


def test_faults_are_deterministic_with_a_seed() -> None:
    def outcomes() -> list[int]:
        with Sandbox(seed=42, error_rate=0.5) as sandbox, requests.Session() as session:
            return [session.post(sandbox.webhook_url + "profile", json={}).status_code for _ in range(20)]

    first = outcomes()
    assert first == outcomes()
    assert {200, 500} <= set(first)


def test_outage_drops_connections_and_recovers(sandbox: Sandbox) -> None:
    sandbox.start_outage(30)
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "profile")
    stats = requests.get(sandbox.base_url + "/_sandbox/stats", timeout=5)  # admin endpoints keep working
    assert stats.json()["faults"]["outage"] == 1
    sandbox.end_outage()
    assert call(sandbox, "profile").status_code == 200

    requests.post(sandbox.base_url + "/_sandbox/faults", json={"outage_seconds": 0.3}, timeout=5)
    with pytest.raises(requests.ConnectionError):
        call(sandbox, "profile")
    time.sleep(0.4)
    assert call(sandbox, "profile").status_code == 200


def test_latency_delays_rest_responses_only(sandbox: Sandbox) -> None:
    sandbox.set_faults(latency_ms=200)
    started = time.monotonic()
    call(sandbox, "profile")
    assert time.monotonic() - started >= 0.2
    started = time.monotonic()
    requests.get(sandbox.base_url + "/_sandbox/stats", timeout=5)
    assert time.monotonic() - started < 0.2


# ---- outbound webhooks ----------------------------------------------------------------------------------------------


class _Receiver:
    """A tiny HTTP endpoint that records every POST it gets."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.arrived:
                    receiver.requests.append((self.headers["Content-Type"], body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/b24/events"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[tuple[str, str]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    running = _Receiver()
    yield running
    running.close()


def test_outbound_webhooks_for_rest_and_batch_writes(receiver: _Receiver) -> None:
    with Sandbox(app_token="tok", outbound_url=receiver.url, portal_domain="demo.bitrix24.ru") as sandbox:
        lead_id = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Hook"}})["result"]
        ok(sandbox, "crm.lead.update", {"id": lead_id, "fields": {"TITLE": "Hook 2"}})
        ok(sandbox, "batch", {"cmd": {"d": "crm.deal.add?fields[TITLE]=D", "x": f"crm.lead.delete?id={lead_id}"}})
        delivered = receiver.wait_for(4)
        assert sandbox.wait_for_outbound()

    assert len(delivered) == 4
    content_type, body = delivered[0]
    assert content_type == "application/x-www-form-urlencoded"
    assert body.startswith("event=ONCRMLEADADD&event_handler_id=")
    assert "data%5BFIELDS%5D%5BID%5D=1&ts=" in body
    form = {key: values[0] for key, values in parse_qs(body).items()}
    assert form["data[FIELDS][ID]"] == str(lead_id)
    assert form["auth[application_token]"] == "tok"
    assert form["auth[domain]"] == "demo.bitrix24.ru"
    assert form["auth[client_endpoint]"] == "https://demo.bitrix24.ru/rest/"
    assert form["auth[server_endpoint]"] == "https://oauth.bitrix.info/rest/"
    assert form["auth[member_id]"] == sandbox.member_id
    assert abs(int(form["ts"]) - time.time()) < 10
    events = [parse_qs(body)["event"][0] for _, body in delivered]
    assert events == ["ONCRMLEADADD", "ONCRMLEADUPDATE", "ONCRMDEALADD", "ONCRMLEADDELETE"]
    assert sandbox.stats()["outbound"] == {"sent": 4, "failed": 0}


def test_outbound_event_filter_and_failed_delivery(receiver: _Receiver) -> None:
    with Sandbox(outbound_url=receiver.url, events=["ONCRMDEALADD"]) as sandbox:
        ok(sandbox, "crm.lead.add")
        ok(sandbox, "crm.deal.add")
        assert sandbox.wait_for_outbound()
        assert [parse_qs(body)["event"][0] for _, body in receiver.requests] == ["ONCRMDEALADD"]

        sandbox.outbound_url = "http://127.0.0.1:9/unreachable"  # discard port: nothing listens
        ok(sandbox, "crm.deal.add")
        assert sandbox.wait_for_outbound()
        assert sandbox.stats()["outbound"] == {"sent": 1, "failed": 1}


# ---- admin endpoints, CLI, PHP encoding -----------------------------------------------------------------------------


def test_admin_endpoints(sandbox: Sandbox) -> None:
    ok(sandbox, "crm.contact.add", {"fields": {"NAME": "Ann", "EMAIL": [{"VALUE": "ann@x.ru"}]}})
    state = requests.get(sandbox.base_url + "/_sandbox/state", params={"entity": "contact"}, timeout=5).json()
    assert state[0]["NAME"] == "Ann" and state[0]["EMAIL"][0]["VALUE"] == "ann@x.ru"
    assert requests.get(sandbox.base_url + "/_sandbox/state?entity=nope", timeout=5).status_code == 400

    stats = requests.get(sandbox.base_url + "/_sandbox/stats", timeout=5).json()
    assert stats["requests"] == 1 and stats["status_codes"] == {"200": 1}
    requests.post(sandbox.base_url + "/_sandbox/stats/reset", timeout=5)
    assert sandbox.stats()["requests"] == 0

    faults = requests.post(sandbox.base_url + "/_sandbox/faults", json={"error_rate": 1}, timeout=5).json()
    assert faults["error_rate"] == 1
    assert call(sandbox, "profile").status_code == 500
    requests.post(sandbox.base_url + "/_sandbox/faults", json={"error_rate": 0}, timeout=5)
    bad = requests.post(sandbox.base_url + "/_sandbox/faults", json={"typo": 1}, timeout=5)
    assert bad.status_code == 400

    requests.post(sandbox.base_url + "/_sandbox/reset", timeout=5)
    assert sandbox.entities("contact") == []
    assert ok(sandbox, "crm.contact.add")["result"] == 1  # ids start over after a reset


def test_admin_settings_change_speed_and_mode_at_run_time(sandbox: Sandbox) -> None:
    url = sandbox.base_url + "/_sandbox/settings"
    before = requests.get(url, timeout=5).json()
    assert before["crm_mode"] == "classic" and before["method_seconds"]["crm.lead.add"] == 0.1
    assert (before["time_scale"], before["request_time_limit"], before["operating_cost_seconds"]) == (1.0, 60.0, 0.01)

    changed = requests.post(
        url, json={"crm_mode": "simple", "method_seconds": {"CRM.LEAD.LIST": 0.5}, "time_scale": 0}, timeout=5
    ).json()
    assert changed["crm_mode"] == "simple" and changed["time_scale"] == 0
    assert changed["method_seconds"]["crm.lead.list"] == 0.5 and changed["method_seconds"]["crm.lead.add"] == 0.1
    assert ok(sandbox, "crm.settings.mode.get")["result"] == 2
    assert ok(sandbox, "crm.lead.list")["time"]["operating"] == pytest.approx(0.5)

    for bad in ({"crm_mode": "weird"}, {"time_scale": 2}, {"typo": 1}):
        assert requests.post(url, json=bad, timeout=5).status_code == 400
    assert sandbox.crm_mode == "simple"  # the mode survives a data reset, like a portal setting
    requests.post(sandbox.base_url + "/_sandbox/reset", timeout=5)
    assert sandbox.crm_mode == "simple"


def test_command_line_prints_the_webhook_url_and_stops_on_ctrl_c() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.bitrix24_sandbox", "--port", "0", "--secret", "abc", "--user-id", "3"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        webhook_url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/rest/3/abc/", webhook_url)
        assert requests.post(webhook_url + "profile", json={}, timeout=5).json()["result"]["ID"] == "3"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0


def test_php_query_codec_round_trips_nested_keys() -> None:
    parsed = parse_query("fields[TITLE]=a+b&fields[PHONE][0][VALUE]=%2B7&filter[@ID][]=1&filter[@ID][]=2&x.y=1")
    assert parsed == {"fields": {"TITLE": "a b", "PHONE": [{"VALUE": "+7"}]}, "filter": {"@ID": ["1", "2"]}, "x_y": "1"}
    encoded = build_query({"data": {"FIELDS": {"ID": 5}}, "flag": True, "skip": None})
    assert encoded == "data%5BFIELDS%5D%5BID%5D=5&flag=1"
    assert json.loads(json.dumps(parse_query(encoded))) == {"data": {"FIELDS": {"ID": "5"}}, "flag": "1"}


# ---- TLS mode -------------------------------------------------------------------------------------------------------


def test_tls_mode_serves_https_with_a_self_signed_certificate_for_localhost() -> None:
    from cryptography import x509

    with Sandbox(tls=True, secret="s3cret") as sandbox:
        assert sandbox.ca_file is not None
        assert sandbox.base_url == f"https://127.0.0.1:{sandbox.port}"
        assert sandbox.webhook_url == f"https://127.0.0.1:{sandbox.port}/rest/1/s3cret/"

        certificate = x509.load_pem_x509_certificate(Path(sandbox.ca_file).read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]

        response = requests.post(sandbox.webhook_url + "profile", json={}, verify=sandbox.ca_file, timeout=5)
        assert response.status_code == 200 and response.json()["result"]["ID"] == "1"
        by_name = f"https://localhost:{sandbox.port}/rest/1/s3cret/crm.lead.add"
        added = requests.post(by_name, json={"fields": {"TITLE": "TLS"}}, verify=sandbox.ca_file, timeout=5)
        assert added.json()["result"] == 1
        # Admin endpoints are served over HTTPS too.
        state = requests.get(sandbox.base_url + "/_sandbox/state?entity=lead", verify=sandbox.ca_file, timeout=5)
        assert [lead["TITLE"] for lead in state.json()] == ["TLS"]
        assert sandbox.stats()["status_codes"] == {"200": 2}

    with Sandbox() as plain:  # plain HTTP stays the default
        assert plain.ca_file is None and plain.webhook_url.startswith("http://")


def test_failed_tls_handshakes_neither_stop_nor_block_the_server(capsys: pytest.CaptureFixture[str]) -> None:
    with Sandbox(tls=True) as sandbox:
        assert sandbox.ca_file is not None
        # A client that stays silent after connecting holds only its own thread, not the accept loop.
        with socket.create_connection(("127.0.0.1", sandbox.port)):
            with pytest.raises(requests.exceptions.SSLError):
                requests.post(sandbox.webhook_url + "profile", json={}, timeout=5)  # the default trust store
            with pytest.raises(requests.ConnectionError):
                requests.post(sandbox.base_url.replace("https:", "http:") + "/rest/1/x/profile", json={}, timeout=5)
            with socket.create_connection(("127.0.0.1", sandbox.port)) as garbage:
                garbage.sendall(b"\x16\x03\x01\x00\x05hello")  # a TLS record header followed by nonsense
                garbage.settimeout(5)  # a hang would end in TimeoutError and fail the test
                with contextlib.suppress(ConnectionResetError):
                    while garbage.recv(1024):
                        pass  # at most a TLS alert, then the server closes the connection

            started = time.monotonic()
            response = requests.post(sandbox.webhook_url + "profile", json={}, verify=sandbox.ca_file, timeout=5)
            assert response.status_code == 200
            assert time.monotonic() - started < 1

        # The failed handshakes never reached HTTP: only the one good call is counted, and nothing was logged.
        assert sandbox.stats()["requests"] == 1
    assert capsys.readouterr().err == ""


def test_plain_mode_does_not_import_cryptography() -> None:
    code = (
        "import sys; from local.bitrix24_sandbox import Sandbox; Sandbox().start().stop(); "
        "print(sorted(name for name in sys.modules if name.startswith(('cryptography', 'local.bitrix24_sandbox.tls'))))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"


def test_command_line_tls_prints_the_https_url_and_the_ca_bundle() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "local.bitrix24_sandbox", "--port", "0", "--secret", "abc", "--tls"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        webhook_url = process.stdout.readline().strip()
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+/rest/1/abc/", webhook_url)
        variable, _, ca_bundle = process.stdout.readline().strip().partition("=")
        assert variable == "REQUESTS_CA_BUNDLE" and Path(ca_bundle).is_file()
        assert requests.post(webhook_url + "profile", json={}, verify=ca_bundle, timeout=5).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 0
    assert not Path(ca_bundle).exists()  # the temporary certificate directory goes with the process


# -- address change (settings/how-to-call-rest-api/change-domen.md) -------------------------------------------------


def test_a_renamed_portal_answers_302_at_the_old_address_and_events_carry_the_new_domain() -> None:
    received: list[bytes] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    outbound = f"http://127.0.0.1:{receiver.server_address[1]}/events"
    with Sandbox(app_token="tok", outbound_url=outbound, member_id="m-1", portal_domain="old.bitrix24.ru") as sb:
        old = sb.webhook_url
        lead = requests.post(old + "crm.lead.add.json", json={"fields": {"TITLE": "До"}}, timeout=5).json()["result"]
        new = sb.rename("new.bitrix24.ru")
        assert new != old and new.endswith(f"/rest/1/{sb.secret}/") and sb.webhook_url == new
        # The old address: 302 with the same path and query at the new one, nothing executed.
        moved = requests.post(old + "crm.lead.get.json?x=1", json={"id": lead}, allow_redirects=False, timeout=5)
        assert moved.status_code == 302 and moved.headers["Location"] == new + "crm.lead.get.json?x=1"
        # What curl and requests do with a followed 302: the POST becomes a GET and loses its body, so a batch runs
        # no command and answers 200 with empty maps; a get reports its missing id (the docs' example).
        batch = requests.post(old + "batch.json", json={"cmd": {"a": f"crm.lead.get?id={lead}"}}, timeout=5)
        assert batch.status_code == 200 and batch.history[0].status_code == 302
        assert batch.json()["result"] == {"result": [], "result_error": [], "result_total": [], "result_next": [],
                                          "result_time": []}  # fmt: skip
        lost = requests.post(old + "crm.lead.get.json", json={"id": lead}, timeout=5)
        assert lost.status_code == 400
        assert lost.json() == {"error": "", "error_description": "ID is not defined or invalid."}
        # Re-posting to the Location works, and the record is the same portal's.
        again = requests.post(moved.headers["Location"], json={"id": lead}, timeout=5)
        assert again.status_code == 200 and again.json()["result"]["TITLE"] == "До"
        assert sb.stats()["redirected"] == 3
        sb.call("crm.lead.update", {"id": lead, "fields": {"TITLE": "После"}})
        assert sb.wait_for_outbound(5)
    receiver.shutdown()
    events = [parse_query(body.decode()) for body in received]
    assert [e["auth"]["domain"] for e in events] == ["old.bitrix24.ru", "new.bitrix24.ru"]
    assert {e["auth"]["member_id"] for e in events} == {"m-1"}  # member_id never changes
    assert events[1]["auth"]["client_endpoint"] == "https://new.bitrix24.ru/rest/"


# -- the webhook user's rights ----------------------------------------------------------------------------------------


def test_user_admin_answers_as_the_docs_show(sandbox: Sandbox) -> None:
    body = ok(sandbox, "user.admin")
    assert body["result"] is True and "operating" in body["time"]
    sandbox.set_access(admin=False)
    assert ok(sandbox, "user.admin")["result"] is False
    assert ok(sandbox, "profile")["result"]["ADMIN"] is False


def test_records_the_webhook_user_may_not_see_answer_access_denied_per_command(sandbox: Sandbox) -> None:
    seen = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Видно"}})
    secret = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Скрыто"}})
    activity = sandbox.call("crm.activity.add", {"fields": {
        "OWNER_TYPE_ID": 1, "OWNER_ID": secret, "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
        "COMMUNICATIONS": [{"VALUE": "+79161234567", "ENTITY_TYPE_ID": 1, "ENTITY_ID": secret}]}})  # fmt: skip
    sandbox.set_access(hidden={"lead": [secret]})
    denied = call(sandbox, "crm.lead.get", {"id": secret})
    assert denied.status_code == 403 and denied.json() == {"error": "", "error_description": "Access denied"}
    # crm-lead-add.md's example (and the update page's style): a write's refusal ends with a period.
    refused = call(sandbox, "crm.lead.update", {"id": secret, "fields": {"TITLE": "x"}})
    assert refused.status_code == 403 and refused.json() == {"error": "", "error_description": "Access denied."}
    assert call(sandbox, "crm.lead.get", {"id": 999}).json()["error_description"] == "Not found"  # still not found
    batch = ok(sandbox, "batch", {"cmd": {"a": f"crm.lead.get?id={seen}", "b": f"crm.lead.get?id={secret}",
                                          "c": f"crm.activity.get?id={activity}"}})["result"]  # fmt: skip
    assert batch["result"]["a"]["TITLE"] == "Видно"
    assert batch["result_error"] == {"b": {"error": "", "error_description": "Access denied"},
                                     "c": {"error": "", "error_description": "Access denied"}}  # fmt: skip
    listed = ok(sandbox, "crm.lead.list", {"select": ["ID"]})
    assert [row["ID"] for row in listed["result"]] == [str(seen)] and listed["total"] == 1
    assert ok(sandbox, "crm.activity.list", {"select": ["ID"]})["result"] == []
    # What a manager does in the UI is not restricted; and hidden={} shows everything again.
    assert sandbox.call("crm.lead.get", {"id": secret})["TITLE"] == "Скрыто"
    sandbox.set_access(hidden={})
    assert ok(sandbox, "crm.lead.get", {"id": secret})["result"]["TITLE"] == "Скрыто"


# ---- links between records: companies, activity bindings, deal contacts, merges, to-dos, call statistics ---------


def _record_events(sandbox: Sandbox) -> list[tuple[str, int]]:
    events: list[tuple[str, int]] = []
    sandbox._emit = lambda event, record_id: events.append((event, record_id))  # type: ignore[method-assign]
    return events


def test_activity_bindings_list_every_linked_record_as_the_docs_example(sandbox: Sandbox) -> None:
    lead = ok(sandbox, "crm.lead.add", {"fields": {"TITLE": "Звонок"}})["result"]
    deal = ok(sandbox, "crm.deal.add", {"fields": {"TITLE": "Сделка"}})["result"]
    company = ok(sandbox, "crm.company.add", {"fields": {"TITLE": "ООО Ромашка"}})["result"]
    assert ok(sandbox, "crm.company.get", {"id": company})["result"]["TITLE"] == "ООО Ромашка"
    fields = {"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
              "COMMUNICATIONS": [{"VALUE": "+79161234567"}], "DIRECTION": 1, "COMPLETED": "Y"}  # fmt: skip
    activity = ok(sandbox, "crm.activity.add", {"fields": fields})["result"]
    assert ok(sandbox, "crm.activity.binding.list", {"activityId": activity})["result"] == [
        {"entityTypeId": 1, "entityId": lead}
    ]
    for type_id, entity_id in ((2, deal), (4, company), (2, deal)):
        link = {"activityId": activity, "entityTypeId": type_id, "entityId": entity_id}
        assert ok(sandbox, "crm.activity.binding.add", link)["result"] is True
    assert ok(sandbox, "crm.activity.binding.list", {"activityId": activity})["result"] == [
        {"entityTypeId": 1, "entityId": lead}, {"entityTypeId": 2, "entityId": deal},
        {"entityTypeId": 4, "entityId": company},
    ]  # fmt: skip
    assert (
        call(sandbox, "crm.activity.binding.add", {"activityId": activity, "entityTypeId": 2, "entityId": 99}).json()[
            "error_description"
        ]
        == "Not found."
    )
    # A company owns activities too; in a batch the bindings come beside the activity.
    fields.update(OWNER_TYPE_ID=4, OWNER_ID=company)
    second = ok(sandbox, "crm.activity.add", {"fields": fields})["result"]
    commands = {"a": f"crm.activity.get?id={second}", "b": f"crm.activity.binding.list?activityId={second}"}
    body = ok(sandbox, "batch", {"halt": 0, "cmd": commands})
    assert body["result"]["result"]["b"] == [{"entityTypeId": 4, "entityId": company}]
    assert body["result"]["result"]["a"]["OWNER_TYPE_ID"] == "4"


def test_activity_bindings_list_only_what_the_webhooks_user_may_read(sandbox: Sandbox) -> None:
    """crm-activity-binding-list.md: «The result will only include elements that the current user has read access
    to» — a hidden record is left out, with no error."""
    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Звонок"}})
    deal = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Чужая сделка"}})
    fields = {"OWNER_TYPE_ID": 1, "OWNER_ID": lead, "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
              "COMMUNICATIONS": [{"VALUE": "+79161234567"}]}  # fmt: skip
    activity = sandbox.call("crm.activity.add", {"fields": fields})
    sandbox.call("crm.activity.binding.add", {"activityId": activity, "entityTypeId": 2, "entityId": deal})
    sandbox.set_access(hidden={"deal": [deal]})
    assert ok(sandbox, "crm.activity.binding.list", {"activityId": activity})["result"] == [
        {"entityTypeId": 1, "entityId": lead}
    ]


def test_an_activity_takes_at_most_a_hundred_bindings(sandbox: Sandbox) -> None:
    leads = [sandbox.call("crm.lead.add", {"fields": {"TITLE": f"L{index}"}}) for index in range(101)]
    fields = {"OWNER_TYPE_ID": 1, "OWNER_ID": leads[0], "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
              "COMMUNICATIONS": [{"VALUE": "+79161234567"}]}  # fmt: skip
    activity = sandbox.call("crm.activity.add", {"fields": fields})
    for lead in leads[1:100]:
        sandbox.call("crm.activity.binding.add", {"activityId": activity, "entityTypeId": 1, "entityId": lead})
    with pytest.raises(Exception, match="100"):
        sandbox.call("crm.activity.binding.add", {"activityId": activity, "entityTypeId": 1, "entityId": leads[100]})
    assert len(sandbox.call("crm.activity.binding.list", {"activityId": activity})) == 100


def test_deal_contacts_come_from_contact_items_get_with_the_primary_first(sandbox: Sandbox) -> None:
    first, second = (sandbox.call("crm.contact.add", {"fields": {"NAME": name}}) for name in ("Анна", "Иван"))
    deal = sandbox.call("crm.deal.add", {"fields": {"TITLE": "Сделка", "CONTACT_IDS": [second, first]}})
    assert ok(sandbox, "crm.deal.contact.items.get", {"id": deal})["result"] == [
        {"CONTACT_ID": second, "SORT": 100, "ROLE_ID": 0, "IS_PRIMARY": "Y"},
        {"CONTACT_ID": first, "SORT": 200, "ROLE_ID": 0, "IS_PRIMARY": "N"},
    ]
    assert ok(sandbox, "crm.deal.get", {"id": deal})["result"]["CONTACT_ID"] == str(second)  # only the first
    assert call(sandbox, "crm.deal.contact.items.get", {"id": 999}).json()["error_description"] == "Not found."


def test_stage_history_ids_are_kept_per_entity_type(sandbox: Sandbox) -> None:
    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    deal = sandbox.call("crm.deal.add", {"fields": {"TITLE": "y"}})
    sandbox.call("crm.deal.update", {"id": deal, "fields": {"STAGE_ID": "PREPARATION"}})
    leads = sandbox.call("crm.stagehistory.list", {"entityTypeId": 1, "filter": {"OWNER_ID": lead}})["items"]
    deals = sandbox.call("crm.stagehistory.list", {"entityTypeId": 2, "filter": {"OWNER_ID": deal}})["items"]
    assert [row["ID"] for row in leads] == [1] and [row["ID"] for row in deals] == [1, 2]


def test_merge_moves_data_and_activities_to_the_first_record_and_sends_only_delete_events(sandbox: Sandbox) -> None:
    main = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Основной", "PHONE": [{"VALUE": "+79161234567"}]}})
    seed = sandbox.call("crm.lead.add", {"fields": {"TITLE": "Дубль", "SOURCE_DESCRIPTION": "Выставка",
                                                    "PHONE": [{"VALUE": "+79161234567"}],
                                                    "EMAIL": [{"VALUE": "ivan@example.ru"}]}})  # fmt: skip
    fields = {"OWNER_TYPE_ID": 1, "OWNER_ID": seed, "TYPE_ID": 2, "SUBJECT": "Звонок", "RESPONSIBLE_ID": 1,
              "COMMUNICATIONS": [{"VALUE": "+79161234567"}]}  # fmt: skip
    activity = sandbox.call("crm.activity.add", {"fields": fields})
    events = _record_events(sandbox)
    body = ok(sandbox, "crm.entity.mergeBatch", {"params": {"entityTypeId": 1, "entityIds": [main, seed]}})
    assert body["result"] == {"STATUS": "SUCCESS", "ENTITY_IDS": [str(seed)]}
    assert events == [("ONCRMLEADDELETE", seed)]
    assert call(sandbox, "crm.lead.get", {"id": seed}).status_code == 400
    merged = ok(sandbox, "crm.lead.get", {"id": main})["result"]
    assert merged["TITLE"] == "Основной" and merged["SOURCE_DESCRIPTION"] == "Выставка"
    assert [entry["VALUE"] for entry in merged["EMAIL"]] == ["ivan@example.ru"] and len(merged["PHONE"]) == 1
    assert ok(sandbox, "crm.activity.get", {"id": activity})["result"]["OWNER_ID"] == str(main)
    assert ok(sandbox, "crm.activity.binding.list", {"activityId": activity})["result"] == [
        {"entityTypeId": 1, "entityId": main}
    ]
    missing = ok(sandbox, "crm.entity.mergeBatch", {"params": {"entityTypeId": 1, "entityIds": [main, 999]}})
    assert missing["result"]["STATUS"] == "ERROR"


def test_todos_are_planned_and_calls_have_statistics_by_their_origin_id(sandbox: Sandbox) -> None:
    from local.bitrix24_sandbox.links import telephony_call

    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    events = _record_events(sandbox)
    todo = ok(sandbox, "crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": lead, "deadline": "2026-12-20T15:00:00",
                                                 "title": "Перезвонить"})["result"]  # fmt: skip
    assert set(todo) == {"id"}
    record = ok(sandbox, "crm.activity.get", {"id": todo["id"]})["result"]
    assert (record["PROVIDER_ID"], record["COMPLETED"], record["DEADLINE"]) == (
        "CRM_TODO",
        "N",
        "2026-12-20T15:00:00+03:00",
    )
    missing = call(sandbox, "crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": lead})
    assert missing.status_code == 400 and missing.json()["error"] == "100"
    answered = telephony_call(sandbox, (1, lead), incoming=True, start="2026-11-20T10:00:00+03:00", duration=95)
    missed = telephony_call(sandbox, (1, lead), incoming=True, start="2026-11-20T11:00:00+03:00", duration=0,
                            failed_code="304")  # fmt: skip
    # Telephony adds the activity when the call starts and updates it when the call ends.
    assert events == [("ONCRMACTIVITYADD", todo["id"]), ("ONCRMACTIVITYADD", answered),
                      ("ONCRMACTIVITYUPDATE", answered), ("ONCRMACTIVITYADD", missed),
                      ("ONCRMACTIVITYUPDATE", missed)]  # fmt: skip
    call_record = ok(sandbox, "crm.activity.get", {"id": missed})["result"]
    assert call_record["PROVIDER_ID"] == "VOXIMPLANT_CALL" and call_record["COMPLETED"] == "N"
    assert ok(sandbox, "crm.activity.get", {"id": answered})["result"]["COMPLETED"] == "Y"
    call_id = call_record["ORIGIN_ID"].removeprefix("VI_")
    body = ok(sandbox, "voximplant.statistic.get", {"FILTER": {"CALL_ID": call_id}})
    [row] = body["result"]
    assert body["total"] == 1
    assert (row["CALL_FAILED_CODE"], row["CALL_DURATION"], row["CRM_ACTIVITY_ID"], row["CALL_TYPE"]) == (
        "304",
        "0",
        str(missed),
        "2",
    )
    assert ISO_WITH_MOSCOW_OFFSET.match(row["CALL_START_DATE"])
    both = ok(sandbox, "voximplant.statistic.get", {"FILTER": {"CRM_ACTIVITY_ID": [answered, missed]},
                                                    "SORT": "ID", "ORDER": "DESC"})["result"]  # fmt: skip
    assert [int(row["CRM_ACTIVITY_ID"]) for row in both] == [missed, answered]
    assert call(sandbox, "voximplant.statistic.get", {"FILTER": {"NOPE": 1}}).status_code == 400


def test_an_activity_update_moves_its_last_updated_time(sandbox: Sandbox) -> None:
    lead = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    todo = sandbox.call("crm.activity.todo.add", {"ownerTypeId": 1, "ownerId": lead, "deadline": "2026-12-20T15:00:00"})
    before = sandbox.call("crm.activity.get", {"id": todo["id"]})
    sandbox.set_clock_offset(86400)
    sandbox.call("crm.activity.update", {"id": todo["id"], "fields": {"COMPLETED": "Y"}})
    after = sandbox.call("crm.activity.get", {"id": todo["id"]})
    assert after["COMPLETED"] == "Y" and after["CREATED"] == before["CREATED"]
    assert after["LAST_UPDATED"] > before["LAST_UPDATED"]


def test_an_enumeration_field_takes_the_item_id_never_its_xml_id(sandbox: Sandbox) -> None:
    """Bitrix24's EnumType stores a value in an int(18) column and checks nothing (checkFields returns []): an item's
    ID is kept; an XML_ID (``VIP``) is no number and leaves the field empty. A writer mixing them up must fail here."""
    items = [{"VALUE": "VIP", "XML_ID": "VIP"}, {"VALUE": "Спящий", "XML_ID": "SLEEPING"}]
    fields = {"FIELD_NAME": "TL_SEGMENT", "USER_TYPE_ID": "enumeration", "LIST": items}
    ok(sandbox, "crm.contact.userfield.add", {"fields": fields})
    listed = ok(sandbox, "crm.contact.userfield.list", {"filter": {"FIELD_NAME": "UF_CRM_TL_SEGMENT"}})["result"][0]
    ids = {item["XML_ID"]: item["ID"] for item in listed["LIST"]}
    contact = ok(sandbox, "crm.contact.add", {"fields": {"NAME": "Ира"}})["result"]
    ok(sandbox, "crm.contact.update", {"id": contact, "fields": {"UF_CRM_TL_SEGMENT": ids["SLEEPING"]}})
    got = ok(sandbox, "crm.contact.get", {"id": contact})["result"]
    assert got["UF_CRM_TL_SEGMENT"] == ids["SLEEPING"]
    ok(sandbox, "crm.contact.update", {"id": contact, "fields": {"UF_CRM_TL_SEGMENT": "VIP"}})
    assert ok(sandbox, "crm.contact.get", {"id": contact})["result"]["UF_CRM_TL_SEGMENT"] in (None, "", False)
