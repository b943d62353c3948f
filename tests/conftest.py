"""Shared fixtures: the local stack (moto server + Bitrix24 sandbox + functions) and a bare sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.bitrix24_sandbox import Sandbox
from local.stack import LocalStack


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A Bitrix24 sandbox on a free port, with the default (non-Enterprise) limits."""
    with Sandbox(app_token="test-token", seed=1) as portal:
        yield portal


@pytest.fixture
def make_stack() -> Iterator[Callable[..., LocalStack]]:
    """Start local stacks with given options; every one is stopped (and the environment restored) afterwards."""
    stacks: list[LocalStack] = []

    def start(**options: Any) -> LocalStack:
        stack = LocalStack(**options).start()
        stacks.append(stack)
        return stack

    yield start
    for stack in reversed(stacks):
        stack.stop()


@pytest.fixture
def stack(make_stack: Callable[..., LocalStack]) -> LocalStack:
    """A local stack whose queue is not consumed: tests invoke the writer themselves."""
    return make_stack(poll_queues=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end runs (marked ``slow``) start first, so that parallel workers (``make test`` runs
    pytest-xdist) finish together instead of one worker starting a three-minute run at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
