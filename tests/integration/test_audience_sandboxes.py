"""The audience sandboxes are as strict as the platforms' docs, and the adapters report each refusal clearly."""

from __future__ import annotations

import json

import pytest
import requests

from local.ad_sandboxes import VkAdsSandbox, YandexAudienceSandbox
from throughline.segments.audiences.files import md5, sha256
from throughline.segments.audiences.http import AudienceError, multipart
from throughline.segments.audiences.members import Member
from throughline.segments.audiences.vk import VkAudiences
from throughline.segments.audiences.yandex import YandexAudiences


def members(count: int, start: int = 0) -> list[Member]:
    return [Member(n, (f"+7 916 {n:07d}",), (f"User{n}@Example.ru",)) for n in range(start, start + count)]


def csv_file(lines: list[str]) -> bytes:
    return ("phone,email\n" + "".join(line + "\n" for line in lines)).encode()


def upload(sandbox: YandexAudienceSandbox, body: bytes, token: str | None = None) -> requests.Response:
    data, content_type = multipart({}, "a.csv", body)
    headers = {"Authorization": f"OAuth {token or sandbox.token}", "Content-Type": content_type}
    return requests.post(sandbox.api_url + "segments/upload_csv_file", data=data, timeout=10, headers=headers)


def test_yandex_sandbox_refuses_what_the_docs_refuse() -> None:
    with YandexAudienceSandbox() as sandbox:
        hashed = [f"{sha256(str(n))},{sha256(f'{n}@a.ru')}" for n in range(100)]
        assert upload(sandbox, csv_file(hashed), token="wrong").status_code == 401
        assert upload(sandbox, csv_file(hashed[:99])).json()["message"].startswith("There must be at least 100")
        headers = {"Authorization": f"OAuth {sandbox.token}", "Content-Type": "text/csv"}
        plain = requests.post(sandbox.api_url + "segments/upload_csv_file", data=csv_file(hashed), timeout=10,
                              headers=headers)  # fmt: skip
        assert plain.status_code == 400 and "multipart" in plain.json()["message"]
        assert upload(sandbox, b"name,city\n" + b"a,b\n" * 100).status_code == 400  # neither phone nor email
        assert upload(sandbox, csv_file([*hashed, "only-one-field"])).status_code == 400  # a malformed row
        segment = upload(sandbox, csv_file(hashed)).json()["segment"]["id"]

        def confirm(**fields) -> requests.Response:
            body = {"segment": {"id": segment, "name": "x", "hashed": True, "hashing_alg": "SHA256",
                                "content_type": "crm", **fields}}  # fmt: skip
            return requests.post(f"{sandbox.api_url}segment/{segment}/confirm", json=body, timeout=10,
                                 headers={"Authorization": f"OAuth {sandbox.token}"})  # fmt: skip

        assert "MD5" in confirm(hashing_alg="MD5").json()["message"]  # refused since January 2025
        assert confirm(content_type="mac").status_code == 400
        assert confirm().status_code == 200
        assert "already confirmed" in confirm().json()["message"]
        raw = upload(sandbox, csv_file([f"7916{n:07d},u{n}@a.ru" for n in range(100)])).json()["segment"]["id"]
        answer = requests.post(f"{sandbox.api_url}segment/{raw}/confirm", timeout=10,
                               json={"segment": {"id": raw, "name": "y", "hashed": True, "hashing_alg": "SHA256",
                                                 "content_type": "crm"}},
                               headers={"Authorization": f"OAuth {sandbox.token}"})  # fmt: skip
        assert answer.status_code == 400 and "not a SHA256 hash" in answer.json()["message"]


def test_yandex_adapter_reports_refusals_without_values() -> None:
    with YandexAudienceSandbox() as sandbox:
        with pytest.raises(AudienceError, match="token was refused"):
            YandexAudiences(token="wrong", api_url=sandbox.api_url).sync("A", None, members(120))
        adapter = YandexAudiences(token=sandbox.token, api_url=sandbox.api_url)
        with pytest.raises(AudienceError, match="at least 100 records; «A» has 99"):
            adapter.sync("A", None, members(99))
        assert sandbox.uploads == []
        sandbox.faults = [429]
        with pytest.raises(AudienceError, match="HTTP 429") as error:
            adapter.sync("A", None, members(120))
        assert "7916" not in str(error.value) and "@" not in str(error.value)
        created = adapter.sync("A", None, members(120))
        assert (created.members, created.identifiers, created.calls) == (120, 240, 2)
        # A replacement is the segment's whole data: under 100 records nothing is sent, and the error says why.
        with pytest.raises(AudienceError, match=r"«A» has 10 \(the segment keeps its previous data\)"):
            adapter.sync("A", created.list_id, members(10, start=500))
        assert len(sandbox.segments[int(created.list_id)]["rows"]) == 120
        small = csv_file([f"{sha256(str(n))},{sha256(f'{n}@a.ru')}" for n in range(99)])
        data, content_type = multipart({}, "a.csv", small)
        refused = requests.post(f"{sandbox.api_url}segment/{created.list_id}/modify_data?modification_type=replace",
                                data=data, timeout=10, headers={"Authorization": f"OAuth {sandbox.token}",
                                                                "Content-Type": content_type})  # fmt: skip
        assert refused.status_code == 400 and refused.json()["message"].startswith("There must be at least 100")
        replaced = adapter.sync("A", created.list_id, members(100, start=500))
        assert replaced.calls == 1 and len(sandbox.segments[int(created.list_id)]["rows"]) == 100
        recreated = adapter.sync("A", "424242", members(120))  # gone (deleted in the cabinet): created anew
        assert recreated.calls == 3 and recreated.list_id not in ("424242", created.list_id)
        assert len(sandbox.segments) == 2


def test_vk_sandbox_and_adapter() -> None:
    with VkAdsSandbox(campaigns=1) as sandbox:
        token = {"value": ""}

        def grant() -> str:
            answer = requests.post(sandbox.api_url + "oauth2/token.json", timeout=10, data={
                "grant_type": "client_credentials", "client_id": sandbox.client[0],
                "client_secret": sandbox.client[1]}).json()  # fmt: skip
            token["value"] = answer["access_token"]
            return token["value"]

        adapter = VkAudiences(token=grant, api_url=sandbox.api_url)
        with pytest.raises(AudienceError, match="at least 2000 unique items; «A» has 1999 phones, 1999 emails"):
            adapter.sync("A", None, members(1999))
        synced, _ = adapter.sync("A", None, members(2000))
        assert synced.calls == 2 and synced.identifiers == 4000
        lists = list(sandbox.users_lists.values())
        assert [item["type"] for item in lists] == ["phone", "email"]
        assert lists[0]["items"][0] == md5("79160000000") and lists[1]["items"][0] == md5("user0@example.ru")

        def post(fields: dict[str, str], body: bytes, auth: str | None = None) -> requests.Response:
            data, content_type = multipart(fields, "l.txt", body)
            return requests.post(f"{sandbox.url}/api/v3/remarketing/users_lists.json", data=data, timeout=10,
                                 headers={"Authorization": f"Bearer {auth or token['value']}",
                                          "Content-Type": content_type})  # fmt: skip

        emails = b"".join(f"u{n}@a.ru\n".encode() for n in range(2000))
        assert post({"name": "x", "type": "email"}, emails, auth="expired").status_code == 401
        assert (
            post({"name": "x", "type": "vk"}, emails).json()["error"]["fields"]["type"][0]["code"] == "invalid_choice"
        )
        assert post({"name": "x"}, emails).status_code == 400  # no type
        upper = emails.replace(b"u1@a.ru", b"U1@A.RU")
        assert (
            post({"name": "x", "type": "email"}, upper).json()["error"]["fields"]["file"][0]["code"] == "invalid_item"
        )
        twice = post({"name": "x", "type": "email"}, emails + emails)  # "The line with this user id is already in …"
        assert twice.json()["error"]["fields"]["file"][0]["code"] == "duplicated_user_id"
        assert post({"name": "x", "type": "phone"}, emails).status_code == 400  # e-mails in a phone list
        phones_id, emails_id = list(sandbox.users_lists)

        # Differential lists (RemarketingUsersLists: "base"): 25 lines at least, the base must exist, be no
        # differential list itself and have the same type.
        def diff(base: int, count: int, kind: str = "email") -> requests.Response:
            return post({"name": "d", "type": kind, "base": str(base)},
                        b"".join(f"d{n}@a.ru\n".encode() for n in range(count)))  # fmt: skip

        assert diff(emails_id, 24).json()["error"]["fields"]["file"][0]["code"] == "not_enough_ids"
        assert diff(424242, 25).json()["error"]["fields"]["base"][0]["code"] == "not_found"
        assert diff(phones_id, 25).json()["error"]["fields"]["base"][0]["code"] == "type_mismatch"
        added = diff(emails_id, 25).json()
        assert added["base"] == emails_id and len(sandbox.users_lists[emails_id]["items"]) == 2025
        assert diff(added["id"], 25).json()["error"]["fields"]["base"][0]["code"] == "unallowed_value"
        assert diff(-emails_id, 25).status_code == 200 and len(sandbox.users_lists[emails_id]["items"]) == 2000

        # DELETE: 409 while used in an audience, 204, then 404.
        def delete(list_id: int) -> int:
            return requests.delete(f"{sandbox.url}/api/v3/remarketing/users_lists/{list_id}.json", timeout=10,
                                   headers={"Authorization": f"Bearer {token['value']}"}).status_code  # fmt: skip

        sandbox.in_use.add(phones_id)
        assert (delete(phones_id), delete(emails_id), delete(emails_id)) == (409, 204, 404)


def test_vk_keeps_one_list_and_sends_the_nights_changes() -> None:
    """The base list keeps its id: later nights send differential lists (who joined, who left); a change under 25
    waits; a deleted base is uploaded anew; a run cut short after an upload resumes without losing a removal."""
    with VkAdsSandbox(campaigns=1) as sandbox:
        token = requests.post(sandbox.api_url + "oauth2/token.json", timeout=10, data={
            "grant_type": "client_credentials", "client_id": sandbox.client[0],
            "client_secret": sandbox.client[1]}).json()["access_token"]  # fmt: skip
        adapter = VkAudiences(token=lambda: token, api_url=sandbox.api_url)
        saved: list[dict] = []
        first, state = adapter.sync("A", None, members(2000), save=lambda s: saved.append(json.loads(json.dumps(s))))
        phones_id, emails_id = list(sandbox.users_lists)
        assert first.list_id == f"phone:{phones_id},email:{emails_id}" and len(saved) == 2
        assert b"79160000001" not in json.dumps(state).encode() and b"@example" not in json.dumps(state).encode()

        # Night 2: 30 leave (0…29), 40 join (2000…2039): one addition and one removal per type, same ids.
        second, state = adapter.sync("A", first.list_id, members(2010, start=30), previous=state)
        assert second.list_id == first.list_id and second.calls == 4 and second.removed == 60
        assert [item["base"] for item in list(sandbox.users_lists.values())[2:]] == [
            phones_id, -phones_id, emails_id, -emails_id]  # fmt: skip
        held = sandbox.users_lists[emails_id]["items"]
        assert sorted(held) == sorted(md5(f"user{n}@example.ru") for n in range(30, 2040))

        # Night 3: 10 leave — under 25: nothing sent, the change waits; it goes out once 25 have gathered.
        third, state = adapter.sync("A", first.list_id, members(2000, start=40), previous=state)
        assert (third.calls, third.removed, third.pending) == (0, 0, 20)
        assert md5("user30@example.ru") in sandbox.users_lists[emails_id]["items"]
        fourth, state = adapter.sync("A", first.list_id, members(1985, start=55), previous=state)
        assert (fourth.calls, fourth.removed) == (2, 50)
        assert md5("user30@example.ru") not in sandbox.users_lists[emails_id]["items"]
        assert len(sandbox.users_lists[emails_id]["items"]) == 1985

        # A run cut short after the phone removal: the state saved after that upload is what the next run starts from.
        cut: list[dict] = []

        def crash(saved_state: dict) -> None:
            cut.append(json.loads(json.dumps(saved_state)))
            raise TimeoutError("the invocation ran out of time")

        with pytest.raises(TimeoutError):
            adapter.sync("A", first.list_id, members(1950, start=90), previous=state, save=crash)
        resumed, state = adapter.sync("A", first.list_id, members(1950, start=90), previous=cut[-1])
        assert resumed.calls == 1 and resumed.removed == 35  # only the e-mails' removal was left
        assert len(sandbox.users_lists[phones_id]["items"]) == len(sandbox.users_lists[emails_id]["items"]) == 1950

        # Too little time left in the invocation: no upload starts; what was sent before is saved (found by the review).
        class Deadline:
            def seconds_left(self) -> float:
                return 100.0

        with pytest.raises(AudienceError, match="too little time left"):
            adapter.sync("A", first.list_id, members(1900, start=140), previous=state, deadline=Deadline())
        assert len(sandbox.users_lists[emails_id]["items"]) == 1950

        # The base list deleted in the cabinet: uploaded anew (a new id, reported); the configured id is not retried.
        del sandbox.users_lists[emails_id]
        again, state = adapter.sync("A", f"phone:{phones_id},email:{emails_id}", members(2000, start=90),
                                    previous=state)  # fmt: skip
        new_id = int(again.list_id.split("email:")[1])
        assert new_id != emails_id and len(sandbox.users_lists[new_id]["items"]) == 2000
        calls = len(sandbox.requests)
        later, state = adapter.sync("A", f"phone:{phones_id},email:{emails_id}", members(2000, start=90),
                                    previous=state)  # fmt: skip
        assert later.list_id == again.list_id and later.calls == 0 and len(sandbox.requests) == calls


def test_vk_adopts_configured_lists_and_refuses_a_malformed_list_id() -> None:
    with VkAdsSandbox(campaigns=1) as sandbox:
        token = requests.post(sandbox.api_url + "oauth2/token.json", timeout=10, data={
            "grant_type": "client_credentials", "client_id": sandbox.client[0],
            "client_secret": sandbox.client[1]}).json()["access_token"]  # fmt: skip
        adapter = VkAudiences(token=lambda: token, api_url=sandbox.api_url)
        made, _ = adapter.sync("A", None, members(2000))
        phones_id = int(made.list_id.split(",")[0].removeprefix("phone:"))
        with pytest.raises(AudienceError, match="phone:<list id>,email:<list id>"):
            adapter.sync("A", "12345", members(2000))
        # A configured list of unknown content: everyone is added (the present stay), nobody removed.
        adopted, state = adapter.sync("A", f"phone:{phones_id}", members(2000, start=100))
        assert adopted.list_id.startswith(f"phone:{phones_id},email:") and adopted.removed == 0
        assert len(sandbox.users_lists[phones_id]["items"]) == 2100
        assert state["lists"]["phone"]["known"] is True


def test_yandex_finishes_a_segment_left_by_a_run_cut_short_instead_of_orphaning_it() -> None:
    """Found by the hostile review: a failure between the upload and the confirm (or before the id was stored) left
    an unconfirmed segment in the cabinet and the next run uploaded another; a list_id deleted in the cabinet made a
    new segment every night."""
    with YandexAudienceSandbox() as sandbox:
        adapter = YandexAudiences(token=sandbox.token, api_url=sandbox.api_url)
        remembered: list[str] = []
        sandbox.faults = [0, 503]  # the upload passes, the confirm fails
        with pytest.raises(AudienceError, match="confirm the segment: HTTP 503"):
            adapter.sync("A", None, members(120), remember=remembered.append)
        ((orphan, segment),) = sandbox.segments.items()
        assert segment["status"] == "uploaded" and remembered == [str(orphan)]
        # The next run: that segment confirmed and filled with tonight's data; no second upload.
        finished = adapter.sync("A", None, members(130), created=remembered[-1], remember=remembered.append)
        assert finished.list_id == str(orphan) and list(sandbox.segments) == [orphan]
        assert segment["status"] == "is_processed" and len(segment["rows"]) == 130 and segment["name"] == "A"
        assert len(sandbox.uploads) == 2  # the first file and tonight's replacement
        # A configured list_id deleted in the cabinet: one new segment, then the same one every night.
        made = adapter.sync("A", "424242", members(120), created=remembered[-1], remember=remembered.append)
        assert made.list_id == str(orphan)  # the audience's own segment still exists: filled, nothing new
        del sandbox.segments[orphan]
        fresh = adapter.sync("A", "424242", members(120), created=remembered[-1], remember=remembered.append)
        again = adapter.sync("A", "424242", members(120), created=remembered[-1], remember=remembered.append)
        assert fresh.list_id == again.list_id == remembered[-1] and len(sandbox.segments) == 1
