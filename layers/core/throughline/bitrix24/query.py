"""PHP-style query strings (``http_build_query``), the format of ``batch`` commands."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode


def build_query(params: Mapping[str, Any]) -> str:
    """``{"fields": {"PHONE": [{"VALUE": "+7…"}]}}`` → ``fields%5BPHONE%5D%5B0%5D%5BVALUE%5D=%2B7…``.

    As in PHP, ``None`` is left out and booleans become ``1``/``0``; Bitrix24 flags are passed as "Y"/"N" strings.
    """
    if not isinstance(params, Mapping):
        raise TypeError("the top level of a query must be a mapping")
    return urlencode(list(_pairs(params, None)))


def _pairs(value: Any, prefix: str | None):
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _pairs(item, f"{prefix}[{key}]" if prefix else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _pairs(item, f"{prefix}[{index}]")
    elif value is None:
        return
    elif prefix is None:
        raise TypeError("the top level of a query must be a mapping")
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)
