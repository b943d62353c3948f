"""One place for logging, metrics and tracing, configured the same way in every function.

The tracer is created on first use: Powertools' Tracer imports the X-Ray SDK when it is built, which costs more than
importing boto3. The HTTP-path functions never touch it (Lambda's own active tracing still records their segments);
the queue and scheduled functions use it for subsegments.

Only botocore (and so boto3) is patched for tracing. Patching ``requests`` would record every Bitrix24 call's URL
in the trace, and a webhook URL carries its secret (``/rest/<user>/<secret>/``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE = "Throughline"
TRACED_MODULES = ("botocore",)

# The service name comes from POWERTOOLS_SERVICE_NAME, which template.yaml sets per function.
logger = Logger()
metrics = Metrics(namespace=NAMESPACE)
_tracer: Tracer | None = None


def __getattr__(name: str) -> Any:
    # PEP 562: `from throughline.observability import tracer` builds the tracer only where it is imported.
    if name == "tracer":
        global _tracer
        if _tracer is None:
            from aws_lambda_powertools import Tracer

            _tracer = Tracer(patch_modules=TRACED_MODULES)
        return _tracer
    raise AttributeError(name)
