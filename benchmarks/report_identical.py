"""Prove a report speed-up changes nothing: the benchmark's three runs built by two versions of the code from the same
generated data, and their roi.json, roi.csv and index.html compared byte for byte.

    PYTHONPATH=layers/core:. python benchmarks/report_identical.py --base main --scale 20 --scale 5

``--base`` is a git revision of this repository; its ``layers/core`` is exported with ``git archive`` to a temporary
folder (no worktree, no checkout). Each run prints both versions' CPU seconds side by side (the same data, one after
the other: on a shared host compare these, not figures from different hours). Exit status 1 when any file differs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks/report.py"
RUNS = {"nightly-bare": ["--no-journeys"], "nightly": [], "year": ["--year"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="the git revision to compare with (default: main)")
    parser.add_argument("--scale", type=int, action="append", help="1/SCALE size; repeatable (default: 20 and 5)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()), help="where generated data is kept")
    parser.add_argument("--run", action="append", choices=tuple(RUNS), help="only these runs (default: all three)")
    args = parser.parse_args(argv)
    different = 0
    with tempfile.TemporaryDirectory(prefix="roi-identical-") as work:
        base = Path(work) / "base"
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base, "layers/core"], capture_output=True,
                                 check=True).stdout  # fmt: skip
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(base, filter="data")
        for scale in args.scale or [20, 5]:
            data = args.data / f"roi-bench-data-1of{scale}"
            if not (data / "journeys/latest.json").exists():
                subprocess.run([sys.executable, str(BENCH), "--scale", str(scale), "--data", str(data), "--only",
                                "nightly-bare"], check=True, capture_output=True)  # fmt: skip
            for run in args.run or list(RUNS):
                figures = {}
                for name, core in (("base", base / "layers/core"), ("this", ROOT / "layers/core")):
                    out = Path(work) / f"{scale}-{run}-{name}"
                    child = subprocess.run(
                        [sys.executable, str(BENCH), "--run", str(data), "--out", str(out), *RUNS[run]],
                        env={"PYTHONPATH": f"{core}:{ROOT}", "PATH": "/usr/bin:/bin"},
                        capture_output=True,
                        text=True,
                    )
                    if child.returncode:
                        print(child.stderr, file=sys.stderr)
                        return 2
                    figures[name] = json.loads(child.stdout.strip().splitlines()[-1])
                files = []
                for file in ("roi.json", "roi.csv", "index.html"):
                    a = (Path(work) / f"{scale}-{run}-base" / file).read_bytes()
                    b = (Path(work) / f"{scale}-{run}-this" / file).read_bytes()
                    files.append(f"{file} {'identical' if a == b else 'DIFFERENT'} ({len(b)} bytes)")
                    different += a != b
                print(
                    f"1/{scale} {run}: CPU {figures['base']['cpu_seconds']:.2f} -> {figures['this']['cpu_seconds']:.2f}"
                    f" s, peak {figures['base']['peak_mb']:.0f} -> {figures['this']['peak_mb']:.0f} MB; "
                    + ", ".join(files),
                    flush=True,
                )
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
