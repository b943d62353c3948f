"""Text every store can carry: lone surrogates (JSON's "\\ud83d", a value cut in the middle of an emoji, decodes to one;
it has no UTF-8 form) and the noncharacters U+FFFE/FFFF that SQS refuses become U+FFFD. Used where outside text is
kept: form posts (capture) and ad platforms' names and tags (spend rows)."""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\ud800-\udfff\ufffe\uffff]")


def storable(value: str) -> str:
    return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
