"""The audience sandboxes are as strict as the platforms' docs, and the adapters report each refusal clearly."""

from __future__ import annotations

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
        replaced = adapter.sync("A", created.list_id, members(10, start=500))  # a replace takes any size
        assert replaced.calls == 1 and len(sandbox.segments[int(created.list_id)]["rows"]) == 10
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
        synced = adapter.sync("A", None, members(2000))
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
        assert post({"name": "x", "type": "email"}, emails + emails).status_code == 200  # 2000 unique items
        assert post({"name": "x", "type": "phone"}, emails).status_code == 400  # e-mails in a phone list
