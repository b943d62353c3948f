"""The streaming JSON array reader the Google Ads import reads searchStream with: any chunking, any hostile text."""

from __future__ import annotations

import itertools
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from throughline.spend.json_stream import array_items

BATCHES = [
    {"results": [{"campaign": {"name": 'a "quoted" } { ] [ name \\ with \\" escapes', "id": "1"}}], "fieldMask": "x"},
    {"results": [{"campaign": {"name": "Весна \u2028 😀 \\u0041", "id": "2"}, "metrics": {"clicks": "3"}}]},
    {"results": []},
    {"fieldMask": "x", "requestId": "r", "nested": [[{}], [], {"k": [1, 2.5, None, True, "]"]}]},
    {"deeper than the reader steps over whole": [[[[[[{"x": "]}", "y": [{"z": {}}]}]]]]]]},
]


def _chunks(text: str, rng: random.Random, largest: int):
    at = 0
    while at < len(text):
        size = rng.randint(1, largest)
        yield text[at : at + size]
        at += size


@pytest.mark.parametrize("seed", range(40))
def test_every_batch_comes_back_whatever_the_chunks_and_the_layout(seed):
    rng = random.Random(seed)
    batches = rng.sample(BATCHES, k=rng.randint(0, len(BATCHES)))
    text = json.dumps(batches, indent=rng.choice([None, 2]), ensure_ascii=rng.choice([True, False]))
    assert list(array_items(_chunks(text, rng, rng.choice([1, 2, 7, 64, 10_000])))) == batches


def test_batches_are_handed_on_as_they_complete():
    seen: list[str] = []

    def chunks():
        for part in ['[{"a": 1}', ', {"b"', ": 2}", "]"]:
            seen.append(part)
            yield part

    items = array_items(chunks())
    assert next(items) == {"a": 1} and seen == ['[{"a": 1}']  # the first batch before the rest was read
    assert next(items) == {"b": 2} and len(seen) == 3
    assert list(items) == []


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "cut short"),
        ('{"error": {}}', "not a JSON array"),
        ("[1]", "no object"),
        ('[{"a": 1}', "cut short"),
        ('[{"a": "}]', "cut short"),  # a brace inside a string closes nothing
        ("[{} {}]", "comma"),
        ("[{}] []", "after the JSON array"),
        ("[{},]", "no object"),
        ('[{"a": 1,}]', "line 1 column"),  # json.loads checks each element in full
    ],
)
def test_anything_but_an_array_of_objects_is_refused(text, reason):
    with pytest.raises(ValueError, match=reason):
        list(array_items([text]))


def test_an_element_nested_deeper_than_the_parser_goes_is_a_value_error():
    # Before: json.loads' RecursionError escaped — no ValueError, so the Google source neither named the stream nor
    # closed the response; the contract is "anything else is a ValueError".
    text = '[{"a": ' + "[" * 100_000 + "]" * 100_000 + "}]"
    with pytest.raises(ValueError, match="nested too deep"):
        list(array_items([text[i : i + 4096] for i in range(0, len(text), 4096)]))


_TRICKY = st.text(alphabet='[]{},"\\:\u00e9\u20ac😀 \n\tab01\u2028', max_size=10)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TRICKY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY, inner, max_size=3),
    max_leaves=12,
)


def _reference(text: str):
    try:
        value = json.loads(text)
    except ValueError:
        return "refused"
    return value if isinstance(value, list) and all(isinstance(v, dict) for v in value) else "refused"


def _read(chunks):
    try:
        return list(array_items(chunks))
    except ValueError:
        return "refused"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(_TRICKY, _VALUES, max_size=3), max_size=3), st.booleans(), st.sampled_from([None, 1]))
def test_split_at_every_position_the_reader_agrees_with_json_loads(batches, ascii_only, indent):
    text = json.dumps(batches, ensure_ascii=ascii_only, indent=indent)
    for at in range(len(text) + 1):
        assert _read([text[:at], text[at:]]) == batches, (text, at)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='[]{},"\\:ab01 \n-.eE', max_size=30), st.lists(st.integers(0, 30), max_size=4))
def test_any_text_any_chunks_the_reader_agrees_with_json_loads(text, cuts):
    bounds = [0, *sorted(set(cuts)), len(text)]
    chunks = [text[a:b] for a, b in itertools.pairwise(bounds)]
    assert _read(chunks) == _reference(text), chunks
