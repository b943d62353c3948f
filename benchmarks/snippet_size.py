"""Size of the capture snippet as a site downloads it: minified with the pinned terser (web/package.json), gzipped.

The limit is sourcebuster.js 1.1.0, the script it replaces: dist/sourcebuster.min.js is 14 125 B, 4 560 B as
`gzip -9` writes it (4 540 B without the file name in the header, which is how this script counts).

    make bench                                      # prints these figures among the others
    PYTHONPATH=. .venv/bin/python -m benchmarks.snippet_size
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNIPPET = ROOT / "web" / "throughline.js"
TERSER = ROOT / "web" / "node_modules" / ".bin" / "terser"
TERSER_OPTIONS = ("--compress", "passes=2", "--mangle")
SOURCEBUSTER_MINIFIED = 14_125
SOURCEBUSTER_GZIPPED = 4_540  # counted as measure() counts ours: gzip -9 without a file name in the header


@dataclass(frozen=True)
class Size:
    source: int
    minified: int
    gzipped: int


def minifier_missing() -> str | None:
    """Why the size cannot be measured here, or None."""
    if not shutil.which("node"):
        return "node is not installed"
    if not TERSER.exists():
        return f"terser is not installed: npm ci --prefix web ({TERSER} is missing)"
    return None


def measure(path: Path = SNIPPET) -> Size:
    minified = subprocess.run(
        [str(TERSER), str(path), *TERSER_OPTIONS], check=True, capture_output=True, timeout=120
    ).stdout
    return Size(path.stat().st_size, len(minified), len(gzip.compress(minified, compresslevel=9, mtime=0)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="accepted for `make bench`; the run is quick anyway")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    reason = minifier_missing()
    if reason:
        print(f"snippet size: not measured ({reason})")
        if args.json:
            args.json.write_text(json.dumps({"missing": reason}))
        return
    size = measure()
    if args.json:
        args.json.write_text(json.dumps({"source": size.source, "minified": size.minified, "gzipped": size.gzipped,
                                         "limit_minified": SOURCEBUSTER_MINIFIED,
                                         "limit_gzipped": SOURCEBUSTER_GZIPPED}))  # fmt: skip
    print(
        f"snippet size: {size.source} B source, {size.minified} B minified "
        f"(sourcebuster {SOURCEBUSTER_MINIFIED} B), {size.gzipped} B gzipped (sourcebuster {SOURCEBUSTER_GZIPPED} B)"
    )


if __name__ == "__main__":
    main()
