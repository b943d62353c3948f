"""Shared fixtures: the local stack (moto server + Bitrix24 sandbox + functions) and a bare sandbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import botocore.loaders
import botocore.session
import pytest

from local.bitrix24_sandbox import Sandbox
from local.stack import LocalStack
from throughline.adapters.aws import ModelLoader


class _SearchPaths(list):
    """boto3 appends its own data folder to its session's loader each time: once is enough for a shared loader."""

    def append(self, path: str) -> None:
        if path not in self:
            super().append(path)


def _share_botocore_loader() -> None:
    """One botocore data loader for every session of the test process. The functions (``adapters.aws``), the local
    stack and moto create a new session per client, as a Lambda does once per cold start; each new session read and
    parsed the services' JSON models again (about 0.4 s per client on a busy 2-core machine), and every local stack a
    test starts resets the clients. The models are files of the installed botocore: parsing them once changes
    nothing a test sees."""
    shared = ModelLoader()  # the loader adapters.aws gives its session (else it makes its own)
    shared._search_paths = _SearchPaths(shared.search_paths)

    def register(self: botocore.session.Session) -> None:
        def loader() -> botocore.loaders.Loader:
            data_path = self.get_config_variable("data_path")  # a session with data of its own keeps its own loader
            return botocore.loaders.create_loader(data_path) if data_path else shared

        self._components.lazy_register_component("data_loader", loader)

    botocore.session.Session._register_data_loader = register


_share_botocore_loader()


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


SLOW_DEFAULT_SECONDS = 30  # a ``slow`` test that does not say how long it takes


def expected_seconds(item: pytest.Item) -> float:
    """How long a ``slow`` test takes in CI (``@pytest.mark.slow(seconds=190)``); 0 for the others."""
    marker = item.get_closest_marker("slow")
    return float(marker.kwargs.get("seconds", SLOW_DEFAULT_SECONDS)) if marker else 0.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long runs (marked ``slow``) start first, longest first, each next to a quick test: ``make test`` runs
    pytest-xdist with ``--maxschedchunk 1``, which gives each worker the first two pending tests and then one test
    whenever it finishes one. Listed back to back, the long runs went to the same worker one after the other (xdist
    hands out the list in order); interleaved, each worker starts one of them and the rest go to whichever is free."""
    slow = sorted((item for item in items if expected_seconds(item)), key=expected_seconds, reverse=True)
    quick = [item for item in items if not expected_seconds(item)]
    # The partners come from the end of the list (unit tests, whose fixtures are cheap), so that no end-to-end module
    # with a costly module-scoped fixture (`make serve`, Chromium) is split and set up twice.
    partners = quick[len(quick) - len(slow) :] if len(quick) > len(slow) else quick
    rest = quick[: len(quick) - len(partners)]
    ordered: list[pytest.Item] = []
    for index, item in enumerate(slow):
        ordered += [item, *partners[index : index + 1]]
    items[:] = ordered + partners[len(slow) :] + rest
