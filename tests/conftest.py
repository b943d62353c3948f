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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long end-to-end runs (marked ``slow``) start first, so that parallel workers (``make test`` runs
    pytest-xdist) finish together instead of one worker starting a three-minute run at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
