"""Text every store can carry: lone surrogates (JSON's "\\ud83d", a value cut in the middle of an emoji, decodes to one;
it has no UTF-8 form) and the noncharacters U+FFFE/FFFF that SQS refuses become U+FFFD. Used where outside text is
kept: form posts (capture), ad platforms' names and tags (spend rows), a journey's touches (``journey.lines.Touch``:
CRM titles, activity subjects, stage and source names) and the rows of the CRM snapshot (``report.crm``)."""

from __future__ import annotations

import re
from typing import Any

_UNSTORABLE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def storable(value: str) -> str:
    return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value


def storable_values(value: Any) -> Any:
    """Decoded JSON (a CRM record) with every text in it storable, keys too (a copy); other values as they are."""
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return {storable_values(key): storable_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [storable_values(item) for item in value]
    return value
