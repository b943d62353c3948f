"""Form builders' own webhooks: Tilda, Elementor Pro and any JSON sender, read into the fields the form route takes.

Each builder posts its own shape; ``translate`` turns it into the flat field map ``forms.parse_submission`` reads
(``name``, ``phone``, ``utm_source``, …, anything else kept in the lead's comments by the name the site shows), so a
builder's lead is validated, stored and written exactly like a lead from our own snippet. Pure and I/O-free, like
``forms``: whatever escapes it was caused by the input and becomes a 400.

- Tilda (help-ru.tilda.cc/formsscript): ``application/x-www-form-urlencoded`` with the fields as named in the form
  (``Name``, ``Phone``, ``Email``, ``Comments``, …), ``tranid`` (the submission's id: Tilda sends the same post again
  when it got no 200 within 5 s), ``formid`` (the form block) and, with «Отправлять Cookies», ``COOKIES`` holding the
  page's cookie string: ``TILDAUTM`` (URL-encoded ``utm_source=…|||utm_medium=…``) and ``_ym_uid`` among them. The
  connection check is a post of ``test=test`` (with the API key when the settings put it in the post): answered with
  success, nothing stored.
- Elementor Pro (action «Webhook»): fields keyed by their labels plus ``form_id`` and ``form_name``; or, with
  «Advanced Data», PHP-style keys ``form[id]``, ``form[name]``, ``fields[<id>][title|value|…]`` and
  ``meta[page_url][value]``, ``meta[remote_ip][value]``, … Labels become our fields through aliases (Russian
  defaults in ``DEFAULT_LABEL_ALIASES``, more in ``FORM_LABEL_ALIASES``).
- JSON (``/v1/hooks/json/{form_id}``): ``FORM_FIELD_MAPS[form_id]`` maps our field names to dotted paths in the
  sender's JSON (``contacts.phone``, ``answers.0.text``); every value not mapped is kept in the comments under its
  path. A form without a map is read like the form route reads JSON (top-level names), labels aliased.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

BUILDERS = ("tilda", "elementor", "json")
UTM_TAGS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
MAX_LEAVES = 200  # values read out of one JSON body; the rest stays in the raw copy
# Fields holding a builder's id of one post (kept on the lead for the manager): no part of what the visitor sent, so
# no part of the content that makes two posts one double submission.
DELIVERY_ID_FIELDS = frozenset({"tilda_tranid"})

# Labels forms show, lower-case, without a trailing '*' or ':', mapped onto our field names.
DEFAULT_LABEL_ALIASES = {
    "имя": "name",
    "ваше имя": "name",
    "как вас зовут": "name",
    "как к вам обращаться": "name",
    "фио": "name",
    "имя и фамилия": "name",
    "name": "name",
    "your name": "name",
    "first name": "name",
    "your-name": "name",
    "фамилия": "last_name",
    "last name": "last_name",
    "отчество": "second_name",
    "телефон": "phone",
    "ваш телефон": "phone",
    "номер телефона": "phone",
    "мобильный телефон": "phone",
    "phone": "phone",
    "tel": "phone",
    "your-phone": "phone",
    "your-tel": "phone",
    "почта": "email",
    "эл. почта": "email",
    "электронная почта": "email",
    "ваша почта": "email",
    "ваш e-mail": "email",
    "ваш email": "email",
    "e-mail": "email",
    "email": "email",
    "your email": "email",
    "your-email": "email",
    "сообщение": "comment",
    "ваше сообщение": "comment",
    "комментарий": "comment",
    "комментарии": "comment",
    "вопрос": "comment",
    "ваш вопрос": "comment",
    "message": "comment",
    "comments": "comment",
    "your-message": "comment",
}


@dataclass(frozen=True)
class Translated:
    """A builder's post as our fields. ``check``: a connection check (answer success, store nothing).
    ``delivery_id``: the builder's own id of this submission, sent again with every retry of it."""

    fields: dict[str, Any] = field(default_factory=dict)
    check: bool = False
    delivery_id: str | None = None
    posted_as: dict[str, str] = field(default_factory=dict)  # our field → the builder's name of it, for errors

    def name_in_post(self, ours: str) -> str:
        return self.posted_as.get(ours, ours)


def translate(
    builder: str,
    fields: Mapping[str, Any],
    form_id: str,
    *,
    label_aliases: Mapping[str, str] | None = None,
    field_maps: Mapping[str, Mapping[str, str]] | None = None,
) -> Translated:
    aliases = {**DEFAULT_LABEL_ALIASES, **{_label(key): value for key, value in (label_aliases or {}).items()}}
    if builder == "tilda":
        return _tilda(fields, aliases)
    if builder == "elementor":
        return _elementor(fields, aliases)
    if builder == "json":
        return _json(fields, (field_maps or {}).get(form_id), aliases)
    raise ValueError(f"unknown form builder {builder!r}")


# -- Tilda ----------------------------------------------------------------------------------------------------------


def _tilda(fields: Mapping[str, Any], aliases: Mapping[str, str]) -> Translated:
    if _tilda_check(fields, aliases):
        return Translated(check=True)
    out: dict[str, Any] = {}
    posted_as: dict[str, str] = {}
    tranid = _first_text(fields.get("tranid"))
    for name, value in fields.items():
        if name in ("tranid", "formid", "COOKIES"):
            continue
        _put(out, posted_as, aliases.get(_label(name), name), value, name)
    formid = _first_text(fields.get("formid"))
    if formid:
        out["tilda_formid"] = formid
    if tranid:
        out["tilda_tranid"] = tranid  # one of DELIVERY_ID_FIELDS
    cookies = tilda_cookies(_first_text(fields.get("COOKIES")) or "")
    # Tags are one unit: the form's own hidden utm_* fields, when it has any, win whole over the cookie's (one visit's
    # campaign never mixes with another's source).
    tagged = any(_first_text(out.get(tag)) for tag in UTM_TAGS)
    for name, value in cookies.items():
        if value and not _first_text(out.get(name)) and not (tagged and name in UTM_TAGS):
            out[name] = value
    return Translated(out, delivery_id=tranid, posted_as=posted_as)


def _tilda_check(fields: Mapping[str, Any], aliases: Mapping[str, str]) -> bool:
    """Tilda's connection check: ``test=test``, with ``COOKIES`` when cookies are on and the API key as a parameter of
    the name set in the webhook's settings when it goes in the post. Never a post with a ``tranid`` (every submission
    has one) or with a contact field."""
    if fields.get("test") != "test" or "tranid" in fields:
        return False
    return not any(aliases.get(_label(name)) in _CONTACT_FIELDS for name in fields)


_CONTACT_FIELDS = frozenset({"name", "last_name", "second_name", "phone", "email", "comment"})


def tilda_cookies(header: str) -> dict[str, str]:
    """What we read from Tilda's ``COOKIES`` (the page's ``document.cookie``): the tags of ``TILDAUTM`` and the
    Metrica and GA client ids. Nothing else of it is kept on the lead (a cookie string may hold session tokens)."""
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, equals, value = part.strip().partition("=")
        if not equals:
            continue
        if name == "TILDAUTM":
            found |= _tilda_utm(value)
        elif name == "_ym_uid" and value.strip().isdigit():
            found["ym_client_id"] = value.strip()
        elif name == "_ga" and value.strip():
            found["ga_client_id"] = value.strip()
    return found


def _tilda_utm(value: str) -> dict[str, str]:
    # URL-encoded once by Tilda, sometimes once more on the way: decode until it holds the separators.
    for _ in range(3):
        if "=" in value:
            break
        value = unquote(value)
    tags: dict[str, str] = {}
    for part in value.split("|||"):
        name, equals, tag = part.partition("=")
        name = unquote(name).strip().lower()
        if equals and name in UTM_TAGS and name not in tags:
            tags[name] = unquote(tag).strip()
    return tags


# -- Elementor Pro --------------------------------------------------------------------------------------------------

_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def _elementor(fields: Mapping[str, Any], aliases: Mapping[str, str]) -> Translated:
    nested = _php_nested(fields)
    out: dict[str, Any] = {}
    posted_as: dict[str, str] = {}
    if isinstance(nested.get("fields"), dict):  # «Advanced Data»
        form = nested.get("form") if isinstance(nested.get("form"), dict) else {}
        for field_id, item in nested["fields"].items():
            if not isinstance(item, dict):
                continue
            title = _first_text(item.get("title")) or field_id
            value = item.get("value", item.get("raw_value"))
            name = _elementor_name(field_id, item, aliases)
            _put(out, posted_as, name, value, title, posted=f"fields[{field_id}][value]")
        meta = nested.get("meta") if isinstance(nested.get("meta"), dict) else {}
        page_url = _meta_value(meta, "page_url")
        if page_url:
            out.setdefault("landing_url", page_url)
        referrer = _meta_value(meta, "referrer")
        if referrer:
            out.setdefault("referrer", referrer)
        form_name = _first_text(form.get("name"))
    else:  # the simple format: fields keyed by their labels («No Label <id>» without one), then the form's metadata
        for label, value in fields.items():
            if label in ("form_id", "form_name") or label in _SIMPLE_META_DROPPED:
                continue
            unlabelled = label.removeprefix(_NO_LABEL) if label.startswith(_NO_LABEL) else None
            name = _our_name(label, aliases) or (unlabelled and _our_name(unlabelled, aliases))
            if label == _SIMPLE_PAGE_URL:
                name = "landing_url"
            _put(out, posted_as, name or label, value, label)
        form_name = _first_text(fields.get("form_name"))
    if form_name:
        out["elementor_form"] = form_name
    return Translated(out, posted_as=posted_as)


_INPUT_TYPES = {"tel": "phone", "email": "email"}
# Elementor's get_formatted_data(): «No Label <id>» for a field without a label; the metadata by its (English) titles.
_NO_LABEL = "No Label "
_SIMPLE_PAGE_URL = "Page URL"
_SIMPLE_META_DROPPED = frozenset({"User Agent", "Remote IP"})  # the visitor's browser and IP: raw copy only


def _elementor_name(field_id: str, item: Mapping[str, Any], aliases: Mapping[str, str]) -> str:
    """Our name of an «Advanced Data» field: by what the visitor saw (its label, then its input type) before its id.
    Elementor's default form has the ids ``name``, ``email`` and ``message``, and they stay when the owner retitles and
    retypes the fields («Телефон для связи», type ``tel``, id ``email``). The id still names a field without a label,
    and a tracking field (a hidden ``utm_source`` labelled «Источник»)."""
    if field_id.startswith("_"):  # a meta field (a honeypot ``_gotcha``) keeps its id: an instruction, not data
        return field_id
    title = _first_text(item.get("title"))
    by_title = _our_name(title, aliases) if title else None
    if by_title:
        return by_title
    by_type = _INPUT_TYPES.get((_first_text(item.get("type")) or "").lower())
    if by_type:
        return by_type
    by_id = _our_name(field_id, aliases)
    if by_id and (not title or by_id not in _CONTACT_FIELDS):
        return by_id
    return title or field_id


def _php_nested(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``a[b][c]=v`` keys (PHP's ``http_build_query``, what WordPress posts) as nested dicts; other keys as they are."""
    nested: dict[str, Any] = {}
    for key, value in fields.items():
        head, bracket, _ = key.partition("[")
        if not bracket or not key.endswith("]"):
            nested.setdefault(key, value)
            continue
        path = [head, *_BRACKETS.findall(key[len(head) :])]
        node = nested
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node.setdefault(path[-1], value)
    return nested


def _meta_value(meta: Mapping[str, Any], name: str) -> str | None:
    item = meta.get(name)
    return _first_text(item.get("value") if isinstance(item, dict) else item)


# -- JSON -----------------------------------------------------------------------------------------------------------


def _json(fields: Mapping[str, Any], field_map: Mapping[str, str] | None, aliases: Mapping[str, str]) -> Translated:
    out: dict[str, Any] = {}
    posted_as: dict[str, str] = {}
    used: list[str] = []
    for ours, path in (field_map or {}).items():
        found, value = resolve(fields, path)
        if found and value not in (None, ""):
            out[ours] = _as_lines(value) if _is_container(value) else value
            posted_as[ours] = path
            used.append(path)
    leaves = _leaves(fields)
    for path, value in leaves:
        if any(path == taken or path.startswith(taken + ".") for taken in used):
            continue
        name = (_our_name(path, aliases) or path) if "." not in path else path  # top level: as the form route
        _put(out, posted_as, name, value, path)
    return Translated(out, posted_as=posted_as)


def resolve(data: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (``contacts.phone``, ``answers.0.text``): dict keys, list items by index."""
    node = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _leaves(data: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The values in ``data`` by path: every top-level one, as the form route reads them (a phone after a long list of
    quiz answers is still read), then nested ones, ``MAX_LEAVES`` of them at most."""
    found = [(str(key), value) for key, value in data.items() if not _is_container(value) and _given(value)]
    limit = len(found) + MAX_LEAVES
    stack = [(str(key), value) for key, value in reversed(data.items()) if _is_container(value)]
    while stack and len(found) < limit:
        path, node = stack.pop()
        if isinstance(node, Mapping) and node:
            stack.extend((f"{path}.{key}", value) for key, value in reversed(node.items()))
        elif _is_container(node):
            stack.extend((f"{path}.{index}", value) for index, value in reversed(list(enumerate(node))))
        elif _given(node):
            found.append((path, node))
    return found


def _given(value: Any) -> bool:
    return value not in (None, "", [], {})


def _as_lines(value: Mapping[str, Any] | list[Any]) -> str:
    """An object or a list a map points at (``{"comment": "answers"}``) as ``path: value`` lines, one per value in it:
    text the lead can hold, where the object itself would be refused as no text."""
    data = value if isinstance(value, Mapping) else {str(index): item for index, item in enumerate(value)}
    return "\n".join(
        f"{path}: {', '.join(map(str, item)) if isinstance(item, list) else item}" for path, item in _leaves(data)
    )


def _is_container(value: Any) -> bool:
    """A value ``_leaves`` goes into: an object, or a list holding more than plain texts and numbers."""
    if isinstance(value, Mapping):
        return bool(value)
    return isinstance(value, list) and bool(value) and not all(isinstance(item, str | int | float) for item in value)


# -- helpers --------------------------------------------------------------------------------------------------------


def _put(
    out: dict[str, Any], posted_as: dict[str, str], name: str, value: Any, label: str, posted: str | None = None
) -> None:
    """``value`` under our field ``name``; when that field is taken already (two fields both called «Телефон», a
    top-level ``phone`` beside a mapped one), under its own label, so nothing the visitor typed is dropped."""
    key = name if name not in out else label
    if key in out:  # «label (2)», «label (3)», …: the first free number, found by galloping, not by trying each
        taken, free = 1, 2  # 1 stands for the bare label
        while f"{label} ({free})" in out:
            taken, free = free, free * 2
        while free - taken > 1:
            middle = (taken + free) // 2
            taken, free = (middle, free) if f"{label} ({middle})" in out else (taken, middle)
        key = f"{label} ({free})"
    out[key] = value
    posted_as[key] = posted or label


def _label(text: str) -> str:
    return " ".join(str(text).replace("\xa0", " ").split()).strip().rstrip("*:").strip().lower()


def _our_name(label: str, aliases: Mapping[str, str]) -> str | None:
    key = _label(label)
    if key in aliases:
        return aliases[key]
    if key in (*UTM_TAGS, "referrer", "landing_url", "gclid", "yclid", "ysclid", "fbclid", "rb_clickid"):
        return key
    return None


def _first_text(value: Any) -> str | None:
    if isinstance(value, list):
        value = next((item for item in value if isinstance(item, str) and item.strip()), None)
    return value.strip() if isinstance(value, str) and value.strip() else None
