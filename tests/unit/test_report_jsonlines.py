"""jsonlines.iter_decode: the rows of a gzip JSON Lines object a chunk at a time, exactly as decode reads them whole."""

from __future__ import annotations

import gzip
import json

from throughline.report import jsonlines


def test_chunks_give_every_row_in_order_whatever_the_chunk_size() -> None:
    rows = [{"ID": str(n), "NAME": "Ёлка " * (n % 3), "KEYS": [f"k{n}"]} for n in range(1, 26)]
    text = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows[:10]) + "\n\n  \n"
    text += "\n".join(json.dumps(row, ensure_ascii=False) for row in rows[10:])  # no newline at the end
    data = gzip.compress(text.encode())
    for size in (1, 3, 10, 11, 10_000):
        assert list(jsonlines.iter_decode(data, chunk_lines=size)) == rows, size
    assert jsonlines.decode(data) == rows
    assert list(jsonlines.iter_decode(b"")) == [] and list(jsonlines.iter_decode(gzip.compress(b"\n\n"))) == []


def test_rows_are_decoded_lazily() -> None:
    data = gzip.compress(b"".join(json.dumps({"ID": n}).encode() + b"\n" for n in range(100)) + b"{broken\n")
    rows = jsonlines.iter_decode(data, chunk_lines=10)
    assert [next(rows)["ID"] for _ in range(100)] == list(range(100))  # the broken last line is not read yet


def test_blocks_split_anywhere_give_the_same_rows(monkeypatch) -> None:
    """The object is decompressed in blocks split into lines: a block may end inside a line, inside a multi-byte
    letter, or right after a newline; two gzip members one after the other are one object, as GzipFile reads them."""
    rows = [{"ID": str(n), "NAME": "Ёлка\u00a0" * (n % 4), "KEYS": [f"k{n}"]} for n in range(1, 40)]
    text = "\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows[:20]) + "\n \n"
    tail = "\n".join(json.dumps(row, ensure_ascii=False) for row in rows[20:])  # no newline at the end
    data = gzip.compress(text.encode()) + gzip.compress(tail.encode())
    for block in (1, 2, 3, 7, 64, 1 << 20):
        monkeypatch.setattr(jsonlines, "BLOCK_BYTES", block)
        for size in (1, 5, 10_000):
            assert list(jsonlines.iter_decode(data, chunk_lines=size)) == rows, (block, size)
