"""The capture snippet stays smaller than sourcebuster.js, minified and gzipped (benchmarks/snippet_size.py)."""

from __future__ import annotations

import os

import pytest

from benchmarks.snippet_size import SOURCEBUSTER_GZIPPED, SOURCEBUSTER_MINIFIED, measure, minifier_missing


def test_the_snippet_is_smaller_than_sourcebuster():
    reason = minifier_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must measure the snippet: {reason} (make venv installs it)")
        pytest.skip(f"cannot measure the snippet: {reason}; make venv installs the pinned minifier")
    size = measure()
    print(f"throughline.js: {size.minified} B minified, {size.gzipped} B gzipped")
    assert size.minified < SOURCEBUSTER_MINIFIED
    assert size.gzipped < SOURCEBUSTER_GZIPPED
