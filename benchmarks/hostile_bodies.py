"""CPU time to read hostile 64 KiB bodies (``decode_body`` + ``parse_submission``). Prints figures; asserts nothing.

Every body here must be read (or refused) in milliseconds: the function's timeout is 10 s at 512 MB, about a third of a
CPU, and a body that costs seconds is both a 5xx for bad input and a cheap way to starve real posts. The email
package's multipart parser took 90 s for the ``;`` header below.

    PYTHONPATH=layers/core:. .venv/bin/python -m benchmarks.hostile_bodies [--quick]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from throughline.capture.forms import FormRejected, decode_body, parse_submission

LIMIT = 65536
MULTIPART = "multipart/form-data; boundary=x"


def _part_header(unit: bytes) -> bytes:
    return b"--x\r\ncontent-disposition:form-data" + unit * (60000 // len(unit)) + b";name=phone\r\n\r\n1\r\n--x--"


def bodies() -> dict[str, tuple[bytes, str]]:
    return {
        "multipart: part header of ';'": (_part_header(b";"), MULTIPART),
        "multipart: part header of ';a=\"b\"'": (_part_header(b';a="b"'), MULTIPART),
        "multipart: RFC 2231 continuations": (_part_header(b";name*0=a"), MULTIPART),
        "multipart: 1800 parts": (
            (b"".join(b"--x\r\ncontent-disposition:form-data;name=a%d\r\n\r\n1\r\n" % i for i in range(1800)))[:65530]
            + b"--x--",
            MULTIPART,
        ),
        "multipart: near-miss delimiters": (
            (b"--" + b"b" * 70 + b"\r\ncontent-disposition:form-data;name=c\r\n\r\n")
            + (b"\r\n--" + b"b" * 69 + b"c") * 850,
            "multipart/form-data; boundary=" + "b" * 70,
        ),
        "multipart: 8000 header lines": (b"--x\r\n" + b"x-a: b\r\n" * 8000 + b"\r\n1\r\n--x--", MULTIPART),
        "urlencoded: 10 000 fields": (
            b"&".join(b"a%d=1" % i for i in range(10000))[:LIMIT],
            "application/x-www-form-urlencoded",
        ),
        "urlencoded: 64 KiB of '%'": (b"a=" + b"%" * (LIMIT - 2), "application/x-www-form-urlencoded"),
        "json: 6000 keys": (b"{" + b",".join(b'"k%d":1' % i for i in range(6000)) + b"}", "application/json"),
        "json: 10 000 huge floats": (b'{"a":[' + b",".join([b"1e999"] * 10000) + b"]}", "application/json"),
        "json: 32 000 '['": (b"[" * 32000, "application/json"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run each: a smoke run")
    args = parser.parse_args(argv)
    runs = 1 if args.quick else 5
    print(f"CPU per body, best of {runs} (decode_body + parse_submission):")
    for name, (body, content_type) in bodies().items():
        best, outcome = float("inf"), ""
        for _ in range(runs):
            started = time.thread_time()
            try:
                fields = decode_body(body, content_type, LIMIT)
                parse_submission(
                    "bench",
                    fields,
                    submission_id="bench",
                    received_at=datetime.now(UTC),
                    origin=None,
                    default_region="RU",
                    zone=ZoneInfo("Europe/Moscow"),
                )
                outcome = "accepted"
            except FormRejected as rejected:
                outcome = f"{rejected.status} {rejected.message}"
            best = min(best, time.thread_time() - started)
        print(f"  {name:<40} {len(body):6} B  {best * 1000:8.1f} ms  {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
