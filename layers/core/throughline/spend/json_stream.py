"""The elements of a JSON array as its text arrives, one at a time (stdlib only).

Google Ads' searchStream answers one JSON array of result batches (up to 10,000 rows each); read whole, a month of
a large account is hundreds of megabytes of text and parsed objects at once. Here each element is parsed as soon as
its closing brace arrives and its text is let go: what is held is one element's text and the chunk it ends in.

Only what the element boundaries need is scanned: brackets and braces outside strings, found by regular expressions
that step over whole strings and whole small objects; each element is then parsed by ``json.loads``, which checks it
in full. Anything else — no array, an element that is no object (or nested too deep for the parser), text after the
array, an array cut short — is a ``ValueError``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

# Outside a string: everything up to the next brace or bracket, whole strings included (one C-level match, not a
# Python step per quote); it stops before a string that does not end in this chunk.
_STRING_TEXT = r'"(?:[^"\\]++|\\.)*+"'
_SPAN = re.compile(rf"(?:[^\"{{}}\[\]]++|{_STRING_TEXT})*+", re.DOTALL)
# A whole object or array up to four levels deep that ends in this chunk (a searchStream result is three): stepped
# over in one match. Possessive (``++``, ``*+``): a value that does not end here fails at once, without backtracking.
_VALUE = r"[^\"{}\[\]]++|" + _STRING_TEXT
_NESTED = ""
for _ in range(4):
    _NESTED = rf"\{{(?:{_VALUE}{_NESTED})*+\}}|\[(?:{_VALUE}{_NESTED})*+\]"
    _NESTED = "|" + _NESTED
_WHOLE = re.compile(_NESTED[1:], re.DOTALL)
_STRING = re.compile(r'["\\]')  # inside a string: its end, or an escape
_NOT_SPACE = re.compile(r"[^ \t\n\r]")  # JSON's whitespace


def array_items(chunks: Iterable[str]) -> Iterator[Any]:
    """Each element (an object) of the JSON array that ``chunks`` spell, parsed as soon as it is complete."""
    state = "start"  # start (before "["), first (before an element or "]"), after (before "," or "]"), item, done
    parts: list[str] = []  # the current element's text from earlier chunks
    depth, in_string, escaped = 0, False, False
    for chunk in chunks:
        at, end, begin = 0, len(chunk), 0
        while at < end:
            if depth == 0:  # between elements
                found = _NOT_SPACE.search(chunk, at)
                if found is None:
                    break
                at, char = found.start(), found.group()
                if state == "done":
                    raise ValueError("text after the JSON array")
                if state == "start":
                    if char != "[":
                        raise ValueError("not a JSON array")
                    state, at = "first", at + 1
                elif char == "]" and state in ("first", "after"):
                    state, at = "done", at + 1
                elif state == "after":
                    if char != ",":
                        raise ValueError(f"{char!r} where a comma or the array's end belongs")
                    state, at = "item", at + 1
                elif char != "{":
                    raise ValueError("an element of the array is no object")
                else:
                    depth, begin, at, parts = 1, at, at + 1, []
                continue
            if escaped:  # the character after a backslash, whatever it is
                escaped, at = False, at + 1
                continue
            if in_string:
                found = _STRING.search(chunk, at)
                if found is None:
                    at = end
                elif found.group() == "\\":
                    escaped, at = True, found.end()
                else:
                    in_string, at = False, found.end()
                continue
            at = _SPAN.match(chunk, at).end()
            if at == end:
                continue
            char = chunk[at]
            if depth > 0 and char in "{[":
                whole = _WHOLE.match(chunk, at)
                if whole is not None:
                    at = whole.end()
                    continue
            at += 1
            if char == '"':
                in_string = True
            elif char in "{[":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    parts.append(chunk[begin:at])
                    try:
                        item = json.loads("".join(parts))  # the text goes before the element is handed on
                    except RecursionError:
                        raise ValueError("an element of the array is nested too deep") from None
                    parts, state = [], "after"
                    yield item
                    del item
        if depth > 0:
            parts.append(chunk[begin:])
    if state != "done":
        raise ValueError("the JSON array was cut short")
