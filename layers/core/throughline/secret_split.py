"""``split-secrets``: move the keys of a stack from before «one secret per consumer» out of the person-key secret.

Stacks deployed before the split kept every secret in one JSON object (template.yaml's ``Secrets``). The update
keeps that resource — its generated PERSON_KEY_SECRET must never change — and adds one secret per consumer: the
CRM webhook, the events' application tokens, the ad platforms. Until the other keys are moved out, the public
capture function still loads them with the person key. This moves each key to its secret, then rewrites the
person-key secret with PERSON_KEY_SECRET alone (the same value: it is checked before and after). It prints key
names, never values, and is safe to run again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

PERSON_KEY = "PERSON_KEY_SECRET"
# Each key of the old all-in-one secret -> the stack output naming the secret it now lives in.
SECRET_HOMES = {
    "BITRIX24_WEBHOOK_URL": "CrmSecretArn",
    "BITRIX24_APP_TOKENS": "EventsSecretArn",
    "YANDEX_DIRECT_TOKEN": "AdsSecretArn",
    "GOOGLE_ADS_CLIENT_ID": "AdsSecretArn",
    "GOOGLE_ADS_CLIENT_SECRET": "AdsSecretArn",
    "GOOGLE_ADS_REFRESH_TOKEN": "AdsSecretArn",
    "GOOGLE_ADS_DEVELOPER_TOKEN": "AdsSecretArn",
    "VK_ADS_CLIENT_ID": "AdsSecretArn",
    "VK_ADS_CLIENT_SECRET": "AdsSecretArn",
    "METRICA_TOKEN": "AdsSecretArn",  # offline conversions (upload_conversions reads the ads secret)
    "YANDEX_AUDIENCE_TOKEN": "AdsSecretArn",  # ad audiences (build_segments reads the ads secret)
    "TELEGRAM_BOT_TOKEN": "AlertsSecretArn",
    "TELEGRAM_CHAT_ID": "AlertsSecretArn",
    "ALERT_EMAIL_FROM": "AlertsSecretArn",
    "ALERT_EMAILS": "AlertsSecretArn",
}


class SplitRefused(RuntimeError):
    """Nothing was changed in the person-key secret (the message says why)."""


@dataclass
class SplitResult:
    moved: dict[str, str] = field(default_factory=dict)  # key -> output name of its new secret
    already_there: list[str] = field(default_factory=list)  # the same value was in the target already
    kept: list[str] = field(default_factory=list)  # unknown keys, left in the person-key secret
    dry_run: bool = False

    def lines(self) -> list[str]:
        verb = "would move" if self.dry_run else "moved"
        out = [f"{verb} {key} -> {home}" for key, home in self.moved.items()]
        out += [f"{key}: already in its secret, removed from the person-key secret" for key in self.already_there]
        out += [f"{key}: unknown, left in the person-key secret" for key in self.kept]
        return out or ["nothing to move: the person-key secret holds PERSON_KEY_SECRET only"]


def _read(client: Any, arn: str) -> dict[str, Any]:
    text = client.get_secret_value(SecretId=arn).get("SecretString") or "{}"
    value = json.loads(text)
    if not isinstance(value, dict):
        raise SplitRefused(f"{arn} is not a JSON object")
    return value


def split_secrets(client: Any, outputs: dict[str, str], *, dry_run: bool = False) -> SplitResult:
    """Move every known key of the person-key secret (``outputs["PersonKeySecretArn"]``) into its own secret."""
    missing = sorted({"PersonKeySecretArn", *SECRET_HOMES.values()} - set(outputs))
    if missing:
        raise SplitRefused(f"the stack has no output {', '.join(missing)}: deploy the updated template first")
    person_arn = outputs["PersonKeySecretArn"]
    person = _read(client, person_arn)
    key = person.get(PERSON_KEY)
    if not key:
        raise SplitRefused("the person-key secret holds no PERSON_KEY_SECRET: refusing to touch it")

    result = SplitResult(dry_run=dry_run)
    targets: dict[str, dict[str, Any]] = {}
    for name, value in person.items():
        if name == PERSON_KEY:
            continue
        home = SECRET_HOMES.get(name)
        if home is None:
            result.kept.append(name)
            continue
        target = targets.setdefault(home, _read(client, outputs[home]))
        if target.get(name) in (None, ""):
            target[name] = value
            result.moved[name] = home
        elif target[name] == value:
            result.already_there.append(name)
        else:
            raise SplitRefused(f"{name} differs between the person-key secret and {home}: settle it by hand")
    if dry_run or not (result.moved or result.already_there):
        return result
    for home in sorted({result.moved[name] for name in result.moved}):
        client.put_secret_value(SecretId=outputs[home], SecretString=json.dumps(targets[home]))
    # Re-read before the rewrite: the key written back must be the one that is there.
    if _read(client, person_arn).get(PERSON_KEY) != key:
        raise SplitRefused("PERSON_KEY_SECRET changed while splitting: nothing removed, run it again")
    remaining = {PERSON_KEY: key, **{name: person[name] for name in result.kept}}
    client.put_secret_value(SecretId=person_arn, SecretString=json.dumps(remaining))
    if _read(client, person_arn).get(PERSON_KEY) != key:  # never expected; said loudly if it happens
        raise SplitRefused("PERSON_KEY_SECRET reads back different: restore the previous version (AWSPREVIOUS)")
    return result
