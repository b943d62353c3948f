"""End-to-end fixtures shared by the modules that speak to `make serve` over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.serving import Served, serve


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One `make serve` process per module (starting one takes seconds): its tests tell their leads apart by phone."""
    with serve() as running:
        yield running
