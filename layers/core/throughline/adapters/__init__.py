"""Adapters: the only modules that talk to AWS or HTTP. Clients are created lazily and can be injected for tests.

boto3 is imported here, once, at init: every function calls AWS on every invocation, so deferring the import would
only move its cost into the first request.
"""

import boto3  # noqa: F401
