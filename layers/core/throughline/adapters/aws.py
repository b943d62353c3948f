"""Cached AWS clients. botocore honours AWS_ENDPOINT_URL, so the local stack's moto server stands in unchanged.

The clients are botocore's, built from one botocore session: ``boto3.client`` is that same call behind a boto3
session, whose only additions are resources and S3's managed transfers (``upload_file``, ``copy``…), which nothing
here uses. Importing boto3 also imports s3transfer: about 17 ms of every cold start on the HTTP path (issue 15 #9).
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import DataNotFoundError
from botocore.loaders import Loader, instance_cache

_lock = threading.Lock()


@cache
def _session() -> Any:
    # One session for every client of the process: its loader caches what each client reads (the list of services,
    # endpoints.json, the partitions, the retry and defaults files). A session per client read them once per client:
    # capture_form's first call builds four (secrets, DynamoDB, S3, SQS), and that was most of its cold start.
    core = botocore.session.Session()
    if not isinstance(core.get_component("data_loader"), ModelLoader):  # tests share one between sessions
        core.register_component("data_loader", ModelLoader(extra_search_paths=_data_paths(core)))
    return core


class ModelLoader(Loader):
    """botocore's loader without the scan of every service's folder that its first model of each kind costs.

    ``Loader.load_service_model`` first lists every service that has the kind of model asked for (``service-2``,
    ``endpoint-rule-set-1``): a stat of each of ~400 folders per file suffix, twice per process (about 20 ms of CPU,
    a third of a cold start's first client), only to check that the service is one of them. This one looks in the
    service's own folder; a service with no such model falls back to botocore's own path (the scan, and its
    ``UnknownServiceError``). The model loaded, its version and its extras are botocore's."""

    @instance_cache
    def load_service_model(self, service_name: str, type_name: str, api_version: str | None = None) -> Any:
        try:
            versions = self.list_api_versions(service_name, type_name)
        except DataNotFoundError:
            versions = []
        if not versions or (api_version is not None and api_version not in versions):
            return super().load_service_model(service_name, type_name, api_version)
        api_version = api_version or max(versions)
        model = self.load_data(os.path.join(service_name, api_version, type_name))
        self._extras_processor.process(model, self._find_extras(service_name, type_name, api_version))
        return model


def _data_paths(core: Any) -> list[str]:
    """``AWS_DATA_PATH`` (``data_path`` in the config) as botocore's own loader reads it."""
    value = core.get_config_variable("data_path")
    return [os.path.expanduser(os.path.expandvars(path)) for path in value.split(os.pathsep)] if value else []


@cache
def _client(service: str) -> Any:
    # Short connect timeouts and standard retries: an HTTP request waits on these calls.
    config = Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
    return _session().create_client(service, config=config)


def client(service: str) -> Any:
    """One client per service per process (clients are thread-safe; building one is not cheap, nor is a session
    thread-safe: both are built under the lock)."""
    with _lock:
        return _client(service)


def reset_clients() -> None:
    """Forget cached clients and their session (the local stack and tests switch endpoints and credentials)."""
    with _lock:
        _client.cache_clear()
        _session.cache_clear()
