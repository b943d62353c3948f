"""The streaming JSON array reader the Google Ads import reads searchStream with: any chunking, any hostile text."""

from __future__ import annotations

import json
import random

import pytest

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
