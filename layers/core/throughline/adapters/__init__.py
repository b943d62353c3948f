"""Adapters: the only modules that talk to AWS or HTTP. Clients are created lazily and can be injected for tests.

botocore is imported here, once, at init: every function calls AWS on every invocation, so deferring the import
would only move its cost into the first request. Not boto3: its clients are botocore's (see ``adapters.aws``).
"""

import botocore.session  # noqa: F401
