"""PHP-compatible encoding helpers.

Bitrix24 is written in PHP, so its wire formats follow PHP rules:

* request parameters may arrive form-encoded with nested keys (``fields[PHONE][0][VALUE]=…``), which PHP turns
  into nested arrays with ``parse_str``;
* outbound event bodies are built with ``http_build_query``;
* ``json_encode`` writes an array with keys ``0..n-1`` as a JSON list and an empty array as ``[]``, even where the
  API documents an object (``"result_error": []``).

The functions here reproduce exactly those rules and nothing more.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, unquote_plus

__all__ = ["build_query", "parse_query", "php_assign", "to_php_json"]

# PHP turns only canonical decimal integers into integer array keys ("01" and "1.0" stay strings).
_INTEGER_KEY = re.compile(r"^(0|-?[1-9][0-9]*)$")


def parse_query(query: str) -> dict[str, Any]:
    """Parse a query string or form body like PHP's ``parse_str``.

    Nested keys become nested dicts; a dict whose keys are exactly ``"0".."n-1"`` in insertion order becomes a list,
    which is how such a PHP array is seen after ``json_encode``.
    """
    root: dict[str, Any] = {}
    for pair in query.split("&"):
        if not pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        php_assign(root, unquote_plus(raw_key), unquote_plus(raw_value))
    # The top level is always a parameter map, even for a body such as "0=a&1=b".
    return {name: normalize_php_arrays(value) for name, value in root.items()}


def php_assign(root: dict[str, Any], key: str, value: Any) -> None:
    """Store ``value`` under a PHP-style key such as ``filter[@ID][]`` into ``root`` (in place).

    Follows ``php_register_variable_ex``: leading spaces are dropped, dots and spaces in the top-level name become
    underscores, ``[]`` appends, and anything after a malformed bracket is ignored.
    """
    key = key.lstrip(" ")
    bracket = key.find("[")
    if bracket == -1 or key.find("]", bracket) == -1:
        # No complete bracket pair: PHP treats the whole key as a plain name.
        name, segments = _plain_name(key), []
    else:
        name, segments = _plain_name(key[:bracket]), _bracket_segments(key[bracket:])
    if not name:
        return
    path = [name, *segments]
    container = root
    for index, segment in enumerate(path):
        is_last = index == len(path) - 1
        slot = _next_index(container) if segment == "" else segment
        if is_last:
            container[slot] = value
            return
        child = container.get(slot)
        if not isinstance(child, dict):
            child = {}
            container[slot] = child
        container = child


def normalize_php_arrays(value: Any) -> Any:
    """Turn every dict with keys ``"0".."n-1"`` (in order) into a list, recursively."""
    if isinstance(value, dict):
        converted = {key: normalize_php_arrays(item) for key, item in value.items()}
        if converted and list(converted) == [str(position) for position in range(len(converted))]:
            return list(converted.values())
        return converted
    if isinstance(value, list):
        return [normalize_php_arrays(item) for item in value]
    return value


def to_php_json(value: Any) -> Any:
    """Prepare a value for JSON the way PHP would print it: empty mappings become ``[]``."""
    if isinstance(value, Mapping):
        if not value:
            return []
        return {key: to_php_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_php_json(item) for item in value]
    return value


def build_query(data: Mapping[str, Any]) -> str:
    """Encode a nested mapping like PHP's ``http_build_query`` (brackets percent-encoded, ``None`` skipped)."""
    pairs: list[str] = []
    for key, value in data.items():
        _encode_pairs(quote_plus(str(key)), value, pairs)
    return "&".join(pairs)


def _encode_pairs(encoded_key: str, value: Any, pairs: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        if isinstance(value, bool):
            value = int(value)  # PHP writes true/false as 1/0
        pairs.append(f"{encoded_key}={quote_plus(str(value))}")
        return
    for inner_key, inner_value in items:
        _encode_pairs(f"{encoded_key}%5B{quote_plus(str(inner_key))}%5D", inner_value, pairs)


def _plain_name(name: str) -> str:
    # PHP cannot have dots or spaces in variable names, so it rewrites them in the top-level name only.
    return name.replace(".", "_").replace(" ", "_").replace("[", "_")


def _bracket_segments(rest: str) -> list[str]:
    segments: list[str] = []
    position = 0
    while position < len(rest) and rest[position] == "[":
        close = rest.find("]", position + 1)
        if close == -1:
            break
        segments.append(rest[position + 1 : close])
        position = close + 1
    return segments


def _next_index(container: dict[str, Any]) -> str:
    integer_keys = [int(key) for key in container if _INTEGER_KEY.match(key)]
    return str(max(integer_keys) + 1) if integer_keys and max(integer_keys) >= 0 else "0"
