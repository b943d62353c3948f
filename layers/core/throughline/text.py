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
    """Decoded JSON (a CRM record) with every text in it storable, keys too (a copy); other values as they are. Walked
    with a stack of its own, not by recursion: a value nested as deep as a JSON decoder takes (the portal's answer is
    decoded by the standard one, far past Python's recursion limit) must not stop the record's events."""
    if isinstance(value, str):
        return storable(value)
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]  # (a value, the copy it goes into, its key or index there)
    while stack:
        item, into, slot = stack.pop()
        if isinstance(item, str):
            into[slot] = storable(item)
        elif isinstance(item, dict):
            copy: dict[Any, Any] = {}
            into[slot] = copy
            pending = []
            for key, inner in item.items():
                key = storable(key) if isinstance(key, str) else key
                copy[key] = None  # the keys' order as given; of two keys cleaned alike the last one's value wins
                pending.append((inner, copy, key))
            stack.extend(reversed(pending))
        elif isinstance(item, list):
            into[slot] = listed = [None] * len(item)
            stack.extend((inner, listed, index) for index, inner in reversed(list(enumerate(item))))
        else:
            into[slot] = item
    return root[0]
